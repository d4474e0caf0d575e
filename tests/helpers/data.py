"""Small datasets the tests write: img2dataset-style training shards and clip_benchmark
``wds/`` evaluation sets, with random pixels (nothing to learn: the tests check mechanics)."""

from __future__ import annotations

import io
import json
import random
import tarfile
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image

WORDS = ["red", "blue", "green", "circle", "square", "left", "right", "big", "small"]
N_IMAGES = 64
"""Images per generated evaluation set."""


def jpeg(rng: random.Random) -> bytes:
    colour = tuple(rng.randrange(256) for _ in range(3))
    img = Image.new("RGB", (32, 32), colour)
    img.putpixel((rng.randrange(32), rng.randrange(32)), (255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    return buf.getvalue()


def write_shards(folder: Path, n_shards: int = 2, per_shard: int = 128) -> str:
    """img2dataset-style shards (``.jpg``/``.txt``/``.json``); returns their brace pattern."""
    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(n_shards):
        with wds.TarWriter(str(folder / f"{s:05d}.tar")) as sink:
            for i in range(per_shard):
                key = f"{s * per_shard + i:09d}"
                text = " ".join(rng.choices(WORDS, k=4))
                meta = {"key": key, "caption": text, "status": "success"}
                sink.write(
                    {"__key__": key, "jpg": jpeg(rng), "txt": text, "json": json.dumps(meta)}
                )
    return str(folder / f"{{00000..{n_shards - 1:05d}}}.tar")


def png(rng: np.random.Generator) -> bytes:
    pixels = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _write_shard(path: Path, samples: list[dict[str, bytes]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for i, sample in enumerate(samples):
            for ext, data in sample.items():
                info = tarfile.TarInfo(f"{i:06d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    (path.parent / "nshards.txt").write_text("1\n")


def write_classification_set(root: Path, classes: list[str], seed: int) -> Path:
    """clip_benchmark wds layout: classnames, templates, test/{nshards.txt,0.tar} (.png + .cls)."""
    rng = np.random.default_rng(seed)
    (root).mkdir(parents=True)
    (root / "classnames.txt").write_text("\n".join(classes) + "\n")
    (root / "zeroshot_classification_templates.txt").write_text(
        "a photo of a {c}.\na drawing of a {c}.\n"
    )
    samples = [{"png": png(rng), "cls": str(i % len(classes)).encode()} for i in range(N_IMAGES)]
    _write_shard(root / "test" / "0.tar", samples)
    return root


def write_retrieval_set(root: Path, seed: int) -> Path:
    """clip_benchmark wds layout: dataset_type.txt = retrieval, .png + .txt (a caption a line)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    (root / "dataset_type.txt").write_text("retrieval\n")
    samples = [
        {"png": png(rng), "txt": f"a red square number {i}\na picture of item {i}".encode()}
        for i in range(N_IMAGES)
    ]
    _write_shard(root / "test" / "0.tar", samples)
    return root
