"""Data-loader throughput at 224 px: samples/s of ``training.data``'s pipeline per worker.

Writes ``--samples`` synthetic image-text pairs (224x224 JPEGs, img2dataset layout) to a
temporary folder with ``webdataset.TarWriter``, then runs our training pipeline
(``training.data.make_loader``: resampled shards, shuffle, decode, ViT-B-32's training
preprocess from ``open_clip.create_model_and_transforms``, batched tokenization) with each of
``--workers`` loader processes (0: in the main process). After ``--warmup`` batches (worker
start-up, shuffle buffer fill), ``--batches`` batches are timed; samples/s per worker divides by
max(workers, 1). The settings run ``--rounds`` times, alternating (so that a neighbour's load
on shared cores hits each alike), and the best round of each is reported, with the machine's
load average. Nothing else runs in this process while it is timed.

    python benchmarks/loader_throughput.py   # writes benchmarks/results/loader_throughput_cpu.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from training import data  # noqa: E402

WORDS = ["red", "blue", "green", "circle", "square", "left", "right", "big", "small", "photo"]


def _jpeg(rng: np.random.Generator, size: int) -> bytes:
    # A smooth picture (bicubic upscale of a coarse random grid) plus mild noise: it compresses
    # and decodes like a photo rather than like white noise.
    coarse = Image.fromarray(rng.integers(0, 256, (14, 14, 3), dtype=np.uint8))
    img = np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC), dtype=np.int16)
    img = np.clip(img + rng.integers(-8, 9, img.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_shards(folder: Path, samples: int, size: int, per_shard: int = 250) -> str:
    """img2dataset-style shards of ``samples`` pairs; returns their brace pattern."""
    import webdataset as wds

    rng, words = np.random.default_rng(0), random.Random(0)
    n_shards = max(1, -(-samples // per_shard))
    for s in range(n_shards):
        with wds.TarWriter(str(folder / f"{s:05d}.tar")) as sink:
            for i in range(s * per_shard, min(samples, (s + 1) * per_shard)):
                text = " ".join(words.choices(WORDS, k=6))
                meta = {"key": f"{i:09d}", "caption": text, "status": "success"}
                sink.write(
                    {
                        "__key__": f"{i:09d}",
                        "jpg": _jpeg(rng, size),
                        "txt": text,
                        "json": json.dumps(meta),
                    }
                )
    return str(folder / f"{{00000..{n_shards - 1:05d}}}.tar")


def measure(
    shards: str, preprocess, tokenizer, workers: int, batch: int, batches: int, warmup: int
) -> float:
    """Steady-state samples/s of the loader with ``workers`` processes."""
    loader = data.make_loader(
        shards, preprocess, tokenizer, batch, workers, seed=0, shuffle_initial=batch * 4
    )
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        images, _ = next(it)
        assert images.shape[-1] == images.shape[-2]
    seconds = time.perf_counter() - start
    del it  # shuts the workers down
    return batches * batch / seconds


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=2000, help="synthetic pairs written")
    p.add_argument("--image-size", type=int, default=224, help="side of the stored JPEGs")
    p.add_argument("--arch", default="ViT-B-32", help="open_clip model whose preprocess is used")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--batches", type=int, default=20, help="timed batches per setting")
    p.add_argument("--warmup", type=int, default=3, help="untimed batches per setting")
    p.add_argument("--rounds", type=int, default=3, help="best of this many rounds is kept")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/loader_throughput_cpu.json"))
    args = p.parse_args(argv)
    import open_clip

    torch.set_num_threads(1)  # as a loader worker runs; the main process only consumes
    _, preprocess, _ = open_clip.create_model_and_transforms(args.arch)  # train transform
    tokenizer = open_clip.get_tokenizer(args.arch)
    rounds: list[list[float]] = [[] for _ in args.workers]
    with tempfile.TemporaryDirectory() as tmp:
        shards = write_shards(Path(tmp), args.samples, args.image_size)
        for r in range(args.rounds):
            for i, w in enumerate(args.workers):
                rate = measure(
                    shards, preprocess, tokenizer, w, args.batch, args.batches, args.warmup
                )
                rounds[i].append(round(rate, 1))
                print(
                    f"round {r} workers {w}: {rate:.1f} samples/s ({rate / max(w, 1):.1f}/worker)"
                )
    rates = [max(x) for x in rounds]
    crop = getattr(preprocess.transforms[0], "size", None)
    result = {
        "image_size": args.image_size,
        "model_input_size": list(crop) if isinstance(crop, (tuple, list)) else crop,
        "arch": args.arch,
        "batch": args.batch,
        "timed_samples": args.batch * args.batches,
        "workers": args.workers,
        "samples_per_s": rates,
        "samples_per_s_per_worker": [
            round(r / max(w, 1), 1) for r, w in zip(rates, args.workers, strict=True)
        ],
        "rounds_samples_per_s": rounds,
        "cpu_count": os.cpu_count(),
        "load_average_1m_after": round(os.getloadavg()[0], 2),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(f".{out.name}.tmp")
    tmp_out.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp_out, out)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
