"""Generated image-text data for the embedded default (no GPU, no internet).

Each picture is a small drawn scene: one to three coloured shapes (7 colours x 5 shapes:
circle, square, triangle, diamond, cross), each large or small, at one of nine places, on a
plain dark background, with jitter of place, size, angle and colour, pixel noise and JPEG
artefacts. Its caption names every object's colour and shape and, often, its size and place,
in varied wording and order, e.g. "a big red circle on the left and a small blue cross at the
bottom", so a model must read the text, not match a fixed string. Tiny CLIPs learn colour
within a few dozen steps and shape over hundreds, which is what makes the zero-shot error keep
falling with samples seen and model size instead of saturating.
"""

from __future__ import annotations

import io
import math
import random
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

GENERATOR_VERSION = 1
"""Bump when the drawing or the captions change: it is part of every marker, so old data is
regenerated rather than silently mixed with new."""


COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 175, 60),
    "blue": (50, 90, 235),
    "yellow": (240, 220, 40),
    "purple": (150, 60, 205),
    "orange": (250, 140, 30),
    "white": (240, 240, 240),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross")
CLASSNAMES = [f"{c} {s}" for c in COLORS for s in SHAPES]
"""Zero-shot classes of synth_shapes(_outline): "<color> <shape>" of the one drawn object."""

TEMPLATES = [
    "a photo of a {c}.",
    "a drawing of a {c}.",
    "a picture of a {c}.",
    "an image of a {c}.",
    "a {c}.",
    "there is a {c}.",
    "a large {c}.",
]

POSITION_TEMPLATES = [
    "a shape {c}.",
    "an object {c}.",
    "a picture of a shape {c}.",
    "a drawing of something {c}.",
    "there is a shape {c}.",
]
"""Zero-shot templates of synth_positions; its classes (``POSITION_CLASSNAMES``) are place
phrases as the training captions word them."""

BACKGROUNDS: dict[str, int] = {"black": 20, "dark gray": 60, "gray": 100}
"""Gray levels of the plain backgrounds; kept dark so that every object colour, white
included, stands out."""

# Nine places: name -> (x, y) centre as a fraction of the side. The margins keep a large
# object mostly inside the frame.
POSITIONS: dict[str, tuple[float, float]] = {
    "top left": (0.25, 0.25),
    "top": (0.5, 0.25),
    "top right": (0.75, 0.25),
    "left": (0.25, 0.5),
    "center": (0.5, 0.5),
    "right": (0.75, 0.5),
    "bottom left": (0.25, 0.75),
    "bottom": (0.5, 0.75),
    "bottom right": (0.75, 0.75),
}
# Radius as a fraction of the side; a gap between the two ranges keeps "small" and "large"
# well defined.
SIZES: dict[str, tuple[float, float]] = {"small": (0.10, 0.14), "large": (0.19, 0.25)}

SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
PLACE_WORDS = {
    "center": ("in the center", "in the middle"),
    "left": ("on the left", "at the left"),
    "right": ("on the right", "at the right"),
    "top": ("at the top", "on top"),
    "bottom": ("at the bottom", "on the bottom"),
}
POSITION_CLASSNAMES = [PLACE_WORDS[p][0] if p in PLACE_WORDS else f"at the {p}" for p in POSITIONS]
"""Classes of synth_positions, in ``POSITIONS`` order: where the one drawn object is."""
JOINERS = (" and ", ", ", " with ")
PREFIXES = ("", "", "", "a picture of ", "a drawing of ", "an image of ", "a photo of ")
# Like alt-texts, captions leave details out at random. (Mentioning places in only half of
# them, to make shape the deciding cue more often, did not help the tiny models learn shapes.)
P_SIZE, P_PLACE, P_BACKGROUND = 0.8, 0.85, 0.25
MAX_TOKENS = 20
"""Caption budget in (estimated) BPE tokens; open_clip's context of 24 keeps 22 after the
start and end tokens, so captions are never truncated."""

SUPERSAMPLE = 4  # draw at 4x and box-filter down: anti-aliased edges keep small shapes legible
JPEG_QUALITY = 90
NOISE_STD = 6.0

# Disjoint random streams: a sample's stream is keyed by its purpose as well as seed and index.
STREAM_TRAIN = "train"
STREAM_SHAPES = "eval/synth_shapes"
STREAM_OUTLINE = "eval/synth_shapes_outline"
STREAM_SCENES = "eval/synth_scenes"
STREAM_POSITIONS = "eval/synth_positions"


# ---------------------------------------------------------------------------------------------
# Scenes


@dataclass(frozen=True)
class Obj:
    """One drawn shape; ``cx``, ``cy``, ``r`` are fractions of the image side."""

    shape: str
    color: str
    size: str
    position: str
    cx: float
    cy: float
    r: float
    angle: float
    rgb: tuple[int, int, int]


@dataclass(frozen=True)
class Scene:
    """A picture's content: a named plain background (its gray level jittered) and objects."""

    background: str
    bg_level: int
    objects: tuple[Obj, ...]


def _rng(stream: str, seed: int, index: int) -> random.Random:
    # String seeds are hashed with SHA-512 by ``random``: stable across runs, platforms and
    # PYTHONHASHSEED, and independent between streams.
    return random.Random(f"clipscale/{stream}/{seed}/{index}")


def _make_obj(rng: random.Random, position: str, size: str, shape: str, color: str) -> Obj:
    fx, fy = POSITIONS[position]
    lo, hi = SIZES[size]
    r, g, b = (min(255, max(0, round(v + rng.uniform(-22, 22)))) for v in COLORS[color])
    return Obj(
        shape=shape,
        color=color,
        size=size,
        position=position,
        cx=fx + rng.uniform(-0.04, 0.04),
        cy=fy + rng.uniform(-0.04, 0.04),
        r=rng.uniform(lo, hi),
        angle=rng.uniform(-15, 15),
        rgb=(r, g, b),
    )


def _scene(rng: random.Random, objects: list[Obj]) -> Scene:
    background = rng.choice(list(BACKGROUNDS))
    level = BACKGROUNDS[background] + rng.randint(-10, 10)
    return Scene(background=background, bg_level=level, objects=tuple(objects))


def sample_scene(rng: random.Random, n_objects: int | None = None) -> Scene:
    """Draw a scene of 1-3 objects at distinct places; larger objects first so that small
    ones painted later stay visible."""
    n = n_objects or rng.choice((1, 1, 2, 2, 3))
    places = rng.sample(list(POSITIONS), n)
    # Often one colour for the whole scene: a batch then holds scenes that colour alone cannot
    # tell apart, so the tiny models cannot settle for colour and ignore the shape words.
    shared = rng.choice(list(COLORS)) if rng.random() < 0.4 else None
    objs = [
        _make_obj(
            rng, p, rng.choice(list(SIZES)), rng.choice(SHAPES), shared or rng.choice(list(COLORS))
        )
        for p in places
    ]
    objs.sort(key=lambda o: o.size != "large")
    return _scene(rng, objs)


def class_scene(rng: random.Random, label: int) -> Scene:
    """A classification scene: one large object of class ``CLASSNAMES[label]``, anywhere."""
    color, shape = list(COLORS)[label // len(SHAPES)], SHAPES[label % len(SHAPES)]
    return _scene(rng, [_make_obj(rng, rng.choice(list(POSITIONS)), "large", shape, color)])


def position_scene(rng: random.Random, label: int) -> Scene:
    """A synth_positions scene: one object of any shape, colour and size at place ``label``."""
    place = list(POSITIONS)[label]
    obj = _make_obj(
        rng, place, rng.choice(list(SIZES)), rng.choice(SHAPES), rng.choice(list(COLORS))
    )
    return _scene(rng, [obj])


# ---------------------------------------------------------------------------------------------
# Drawing


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a non-circle shape; radii are chosen so every shape covers a similar area."""
    if shape == "square":
        pts = [(0.88 * r * sx, 0.88 * r * sy) for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    elif shape == "triangle":
        pts = [(1.3 * r * math.sin(a), -1.3 * r * math.cos(a)) for a in (0, 2.094, 4.189)]
        pts = [(x, y + 0.2 * r) for x, y in pts]  # centre the bounding box, not the centroid
    elif shape == "diamond":
        # Taller than wide, so it is not merely a tilted square.
        pts = [(0.0, -1.3 * r), (0.8 * r, 0.0), (0.0, 1.3 * r), (-0.8 * r, 0.0)]
    elif shape == "cross":
        a, w = 1.1 * r, 0.38 * r
        pts = [
            (-w, -a),
            (w, -a),
            (w, -w),
            (a, -w),
            (a, w),
            (w, w),
            (w, a),
            (-w, a),
            (-w, w),
            (-a, w),
            (-a, -w),
            (-w, -w),
        ]
    else:
        raise ValueError(f"unknown shape {shape!r}")
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]


def _draw_obj(draw: ImageDraw.ImageDraw, o: Obj, side: int, outline: int) -> None:
    cx, cy, r = o.cx * side, o.cy * side, o.r * side
    fill, line = (None, o.rgb) if outline else (o.rgb, None)
    if o.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline=line, width=outline or 1)
    else:
        pts = _polygon(o.shape, cx, cy, r, o.angle)
        draw.polygon(pts, fill=fill, outline=line, width=outline or 1)


def _texture(rng: random.Random, size: int, level: int) -> Image.Image:
    """A smooth random gray texture around ``level`` (the shifted eval set's background)."""
    coarse = np.random.default_rng(rng.getrandbits(64)).uniform(-45, 45, (4, 4)) + level
    img = Image.fromarray(np.clip(coarse, 0, 255).astype(np.uint8), "L")
    return img.resize((size, size), Image.Resampling.BICUBIC).convert("RGB")


def render(scene: Scene, image_size: int, rng: random.Random, style: str = "filled") -> bytes:
    """JPEG bytes of ``scene``. ``style="outline"``: shapes drawn as outlines on a textured
    background, the distribution shift of synth_shapes_outline."""
    side = image_size * SUPERSAMPLE
    if style == "outline":
        canvas = _texture(rng, side, scene.bg_level + 20)
    else:
        canvas = Image.new("RGB", (side, side), (scene.bg_level,) * 3)
    draw = ImageDraw.Draw(canvas)
    width = round(1.6 * SUPERSAMPLE) if style == "outline" else 0
    for o in scene.objects:
        _draw_obj(draw, o, side, width)
    small = np.asarray(canvas.resize((image_size, image_size), Image.Resampling.BOX), np.float32)
    noise = np.random.default_rng(rng.getrandbits(64)).normal(0, NOISE_STD, small.shape)
    pixels = np.clip(small + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    # 4:4:4 chroma: the default 4:2:0 would smear the colour of a 6-pixel shape.
    Image.fromarray(pixels).save(buf, "JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Captions


def _tokens(text: str) -> int:
    """Estimated BPE tokens: every word and punctuation mark of this vocabulary is one token."""
    return len(re.findall(r"[a-z]+|[^\sa-z]", text))


def _place_phrase(rng: random.Random, position: str) -> str:
    if position in PLACE_WORDS:
        return rng.choice(PLACE_WORDS[position])
    return rng.choice(("in the ", "at the ")) + position


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


@dataclass
class _Wording:
    """The word choices of one object's phrase; ``size``/``place`` are None once dropped."""

    obj: Obj
    size: str | None
    place: str | None
    place_first: bool

    def text(self) -> str:
        words = ([self.size] if self.size else []) + [self.obj.color, self.obj.shape]
        noun = f"{_article(words[0])} {' '.join(words)}"
        if not self.place:
            return noun
        return f"{self.place} {noun}" if self.place_first else f"{noun} {self.place}"


def caption(rng: random.Random, scene: Scene, full: bool = False) -> str:
    """A caption naming every object's colour and shape, in random order and wording.

    Size, place and background are mentioned with probabilities ``P_SIZE``, ``P_PLACE`` and
    ``P_BACKGROUND`` (sizes and places always when ``full``); while the caption exceeds
    ``MAX_TOKENS``, the background, then the prefix, then places, then sizes are dropped, so
    the caption is never truncated by the tokenizer.
    """
    p_size, p_place = (1.0, 1.0) if full else (P_SIZE, P_PLACE)
    objs = list(scene.objects)
    rng.shuffle(objs)
    joiner, prefix = rng.choice(JOINERS), rng.choice(PREFIXES)
    parts = [
        _Wording(
            o,
            rng.choice(SIZE_WORDS[o.size]) if rng.random() < p_size else None,
            _place_phrase(rng, o.position) if rng.random() < p_place else None,
            rng.random() < 0.3,
        )
        for o in objs
    ]
    for i, p in enumerate(parts):
        # "on the left a red circle" reads well only at the start or after "and" / a comma.
        p.place_first &= joiner != " with " and (i > 0 or not prefix)
    background = f" on a {scene.background} background" if rng.random() < P_BACKGROUND else ""
    while True:
        text = prefix + joiner.join(p.text() for p in parts) + background
        if _tokens(text) <= MAX_TOKENS:
            return text
        if background or prefix:
            background, prefix = "", prefix if background else ""
            continue
        placed = [p for p in parts if p.place] or [p for p in parts if p.size]
        victim = rng.choice(placed)
        if victim.place:
            victim.place = None
        else:
            victim.size = None


def scene_json(scene: Scene, image_size: int) -> dict[str, Any]:
    """The scene attributes stored in a training sample's ``.json``."""
    return {
        "background": scene.background,
        "objects": [
            {
                "shape": o.shape,
                "color": o.color,
                "size": o.size,
                "position": o.position,
                "center": [round(o.cx * image_size, 2), round(o.cy * image_size, 2)],
                "radius": round(o.r * image_size, 2),
            }
            for o in scene.objects
        ],
    }


