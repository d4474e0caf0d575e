"""Generated datasets of the embedded default: the training shards and the evaluation sets,
written from the scenes of :mod:`synthetic.scenes`.

File formats written here:

* Training set: webdataset shards ``00000.tar, 00001.tar, ...`` in img2dataset's layout, each
  sample a key ``%09d`` with ``.jpg``, ``.txt`` (the caption) and ``.json`` (key, caption,
  width, height, status, and the scene: ``background`` and ``objects``, each object with
  ``shape``, ``color``, ``size``, ``position``, ``center`` and ``radius`` in pixels).
* Evaluation sets, in clip_benchmark's ``wds/`` layout (``build_dataset("wds/NAME", root=DIR)``):
  ``DIR/test/nshards.txt``, ``DIR/test/0.tar ...``, ``DIR/dataset_type.txt`` and, for
  classification, ``DIR/classnames.txt`` and ``DIR/zeroshot_classification_templates.txt``.
  Classification samples carry ``.jpg`` and ``.cls`` (class index); retrieval samples carry
  ``.jpg`` and ``.txt`` (one caption per line).

Every folder is built in a temporary sibling, gets a ``_SUCCESS`` marker holding the
arguments, and is then renamed into place, so a folder either is complete or does not exist;
a folder whose marker matches the request is reused as is. Every sample is drawn from its own
random stream, keyed by (purpose, seed, index), so the bytes depend only on the arguments and
the training and evaluation streams never coincide.
"""

from __future__ import annotations

import io
import json
import math
import re
import tarfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from core.atomic import atomic_write_text, build_folder
from synthetic.scenes import (
    CLASSNAMES,
    GENERATOR_VERSION,
    POSITION_CLASSNAMES,
    POSITION_TEMPLATES,
    POSITIONS,
    STREAM_OUTLINE,
    STREAM_POSITIONS,
    STREAM_SCENES,
    STREAM_SHAPES,
    STREAM_TRAIN,
    TEMPLATES,
    _rng,
    caption,
    class_scene,
    position_scene,
    render,
    sample_scene,
    scene_json,
)

SHARD_SIZE = 1024
"""Pairs per training shard as ensure_datasets writes them (generate_train's default)."""
EVAL_SETS = ("synth_shapes", "synth_shapes_outline", "synth_positions", "synth_scenes")


# ---------------------------------------------------------------------------------------------
# Tar files


def _write_tar(path: Path, members: Iterable[tuple[str, bytes]]) -> None:
    """A tar whose bytes depend only on ``members`` (fixed mtime, owner and mode)."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))


# ---------------------------------------------------------------------------------------------
# Training set


def train_sample(seed: int, index: int, image_size: int) -> list[tuple[str, bytes]]:
    """Tar members of training sample ``index``: ``.jpg``, ``.txt``, ``.json``."""
    rng = _rng(STREAM_TRAIN, seed, index)
    scene = sample_scene(rng)
    text = caption(rng, scene)
    key = f"{index:09d}"
    meta = {
        "key": key,
        "caption": text,
        "width": image_size,
        "height": image_size,
        "status": "success",
        **scene_json(scene, image_size),
    }
    return [
        (f"{key}.jpg", render(scene, image_size, rng)),
        (f"{key}.txt", text.encode()),
        (f"{key}.json", json.dumps(meta, sort_keys=True).encode()),
    ]


def generate_train(
    out_dir: str | Path, num_samples: int, seed: int, image_size: int = 32, shard_size: int = 1024
) -> list[Path]:
    """Write ``num_samples`` image-text pairs as webdataset shards ``out_dir/00000.tar, ...``.

    img2dataset's layout: sample keys ``%09d`` with ``.jpg``, ``.txt`` (caption) and ``.json``
    (key, caption, width, height, status and the scene attributes, see the module docstring).
    ``ceil(num_samples / shard_size)`` shards, named with 5 digits. The bytes depend only on
    the arguments, and sample ``i`` does not depend on ``shard_size``. Atomic and idempotent:
    a folder whose ``_SUCCESS`` records the same arguments is returned as is. Returns the
    shard paths.
    """
    if num_samples < 1 or shard_size < 1:
        raise ValueError(
            f"num_samples and shard_size must be positive, got {num_samples}, {shard_size}"
        )
    out_dir = Path(out_dir)
    n_shards = math.ceil(num_samples / shard_size)
    args = {
        "kind": "train",
        "num_samples": num_samples,
        "seed": seed,
        "image_size": image_size,
        "shard_size": shard_size,
        "version": GENERATOR_VERSION,
    }

    def fill(folder: Path) -> None:
        for s in range(n_shards):
            idx = range(s * shard_size, min((s + 1) * shard_size, num_samples))
            _write_tar(
                folder / f"{s:05d}.tar", (m for i in idx for m in train_sample(seed, i, image_size))
            )

    build_folder(out_dir, args, fill)
    return [out_dir / f"{s:05d}.tar" for s in range(n_shards)]


# ---------------------------------------------------------------------------------------------
# Evaluation sets


def _classification_members(
    stream: str, seed: int, n: int, image_size: int, style: str
) -> Iterator[tuple[str, bytes]]:
    for i in range(n):
        rng = _rng(stream, seed, i)
        label = i % len(CLASSNAMES)  # balanced classes
        scene = class_scene(rng, label)
        yield f"s{i:07d}.jpg", render(scene, image_size, rng, style)
        yield f"s{i:07d}.cls", str(label).encode()


def _position_members(
    stream: str, seed: int, n: int, image_size: int
) -> Iterator[tuple[str, bytes]]:
    for i in range(n):
        rng = _rng(stream, seed, i)
        label = i % len(POSITIONS)
        yield f"s{i:07d}.jpg", render(position_scene(rng, label), image_size, rng)
        yield f"s{i:07d}.cls", str(label).encode()


def _retrieval_members(
    seed: int, n: int, image_size: int, captions_per_image: int
) -> Iterator[tuple[str, bytes]]:
    for i in range(n):
        rng = _rng(STREAM_SCENES, seed, i)
        scene = sample_scene(rng)
        # Full detail, so a caption singles out its image among the whole set as far as the
        # token budget allows.
        texts = [caption(rng, scene, full=True) for _ in range(captions_per_image)]
        yield f"s{i:07d}.jpg", render(scene, image_size, rng)
        yield f"s{i:07d}.txt", "\n".join(texts).encode()


def _wds_fill(
    splits: Mapping[str, Iterable[tuple[str, bytes]]], meta: dict[str, str]
) -> Callable[[Path], None]:
    """A ``fill`` writing clip_benchmark's wds layout: one shard per split plus metadata files."""

    def fill(folder: Path) -> None:
        for split, members in splits.items():
            (folder / split).mkdir()
            _write_tar(folder / split / "0.tar", members)
            atomic_write_text(folder / split / "nshards.txt", "1\n")
        for name, text in meta.items():
            atomic_write_text(folder / name, text)

    return fill


def generate_eval(
    out_dir: str | Path,
    seed: int = 1234,
    image_size: int = 32,
    n_classification: int = 1000,
    n_retrieval: int = 1000,
) -> dict[str, Path]:
    """Write the four held-out sets under ``out_dir/<name>/`` in clip_benchmark's wds layout.

    synth_shapes: zero-shot classification into ``CLASSNAMES`` (one large object per picture,
    in the training style). synth_shapes_outline: the same classes drawn as outlines on a
    textured background (a distribution shift). synth_positions: where the one object is
    (``POSITION_CLASSNAMES``, 9 places), with a ``train`` split as large as its ``test`` split
    for linear probes. synth_scenes: image-text retrieval, training-style scenes with two
    captions each. Each set is built atomically with its own
    ``_SUCCESS``. The random streams differ from the training set's, whatever the seeds.
    Returns ``{name: folder}``.
    """
    out_dir = Path(out_dir)
    base = {"seed": seed, "image_size": image_size, "version": GENERATOR_VERSION}
    cls_meta = {
        "classnames.txt": "\n".join(CLASSNAMES) + "\n",
        "zeroshot_classification_templates.txt": "\n".join(TEMPLATES) + "\n",
        "dataset_type.txt": "classification\n",
    }
    # Generators are lazy: a set whose marker already matches never draws a picture.
    pos_meta = {
        "classnames.txt": "\n".join(POSITION_CLASSNAMES) + "\n",
        "zeroshot_classification_templates.txt": "\n".join(POSITION_TEMPLATES) + "\n",
        "dataset_type.txt": "classification\n",
    }
    n = n_classification
    sets = {
        "synth_shapes": (
            n,
            cls_meta,
            {"test": _classification_members(STREAM_SHAPES, seed, n, image_size, "filled")},
        ),
        "synth_shapes_outline": (
            n,
            cls_meta,
            {"test": _classification_members(STREAM_OUTLINE, seed, n, image_size, "outline")},
        ),
        "synth_positions": (
            n,
            pos_meta,
            {
                "test": _position_members(f"{STREAM_POSITIONS}/test", seed, n, image_size),
                "train": _position_members(f"{STREAM_POSITIONS}/train", seed, n, image_size),
            },
        ),
        "synth_scenes": (
            n_retrieval,
            {"dataset_type.txt": "retrieval\n"},
            {"test": _retrieval_members(seed, n_retrieval, image_size, 2)},
        ),
    }
    for name, (size, meta, splits) in sets.items():
        build_folder(out_dir / name, {"kind": name, "n": size, **base}, _wds_fill(splits, meta))
    return {name: out_dir / name for name in EVAL_SETS}


# ---------------------------------------------------------------------------------------------
# Config entry point


_BRACE = re.compile(r"^\{(\d+)\.\.(\d+)\}\.tar$")


def _check_shard_pattern(shards: str, n_shards: int) -> None:
    """``shards`` must read ``<folder>/{00000..<n_shards-1>}.tar``, as generate_train names them."""
    m = _BRACE.match(Path(shards).name)
    want = f"{{00000..{n_shards - 1:05d}}}.tar"
    if not m or int(m.group(1)) != 0 or int(m.group(2)) != n_shards - 1 or len(m.group(2)) != 5:
        raise ValueError(
            f"data.shards={shards!r} does not match the generated shards: data.num_samples needs "
            f"{n_shards} shards of {SHARD_SIZE}, i.e. a file name of {want!r}"
        )


def _synthetic_eval_parents(cfg: Any) -> list[Path]:
    eval_root = Path(f"{cfg.data_root}/synthetic/eval").resolve()
    parents: list[Path] = []
    for entry in cfg.eval.datasets:
        root = Path(entry.root).resolve()
        if not root.is_relative_to(eval_root):
            continue  # real data: never touched
        if root.name not in EVAL_SETS:
            raise ValueError(
                f"eval dataset {entry.name!r}: {entry.root} is under the synthetic "
                f"eval folder but is none of {EVAL_SETS}"
            )
        if root.parent not in parents:
            parents.append(root.parent)
    return parents


def ensure_datasets(cfg: Any, eval_only: bool = False) -> None:
    """Generate the embedded data a composed clipscale config needs and that is missing.

    If ``cfg.data.synthetic``: the training shards in ``Path(cfg.data.shards).parent``, after
    checking the brace range of ``cfg.data.shards`` names exactly the generated shards
    (ValueError naming ``data.shards`` otherwise). For every ``cfg.eval.datasets`` entry whose
    root lies under ``{cfg.data_root}/synthetic/eval/``: the evaluation sets in its parent
    folder. Real data is never touched. Cheap when everything exists (markers only).
    ``eval_only``: the evaluation sets alone (evaluating a checkpoint needs no training data).
    """
    data = cfg.data
    eval_parents = _synthetic_eval_parents(cfg)  # every check before the first write
    if data.synthetic and not eval_only:
        _check_shard_pattern(str(data.shards), math.ceil(data.num_samples / SHARD_SIZE))
        generate_train(Path(str(data.shards)).parent, data.num_samples, data.seed, data.image_size)
    for parent in eval_parents:
        generate_eval(parent, image_size=data.image_size)
