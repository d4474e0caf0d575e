"""Training data loader per worker core at 224 px: ours against open_clip_train's, side by side.

Shards: img2dataset's layout (``.jpg``/``.txt``/``.json`` per sample, ``webdataset.TarWriter``)
written to a temporary folder: photo-like pictures (smooth gradients, low-frequency texture,
filled shapes, a slight blur and sensor-like noise; JPEG quality 90-95) drawn at 512 px and
stored once at 512 px and once reduced to 256 px (img2dataset's default ``--image_size``; a box
filter, as its ``INTER_AREA`` resize), so both sizes hold the same pictures. Typical sizes:
about 20 KB at 256 px and 70 KB at 512 px.

Loaders, each with ViT-B-32's training transform from ``open_clip.create_model_and_transforms``
(RandomResizedCrop to 224, scale 0.9-1, bicubic; normalize) and its tokenizer:

- ``ours``: ``training.data.make_loader`` (what training builds through ``data.step_batches``);
- ``ours_exact``: the same with ``draft=False``, open_clip_train's pixels at every size (at 512 px
  only: at 256 px no crop is large enough for draft decoding, so it is ``ours``);
- ``open_clip_train``: ``open_clip_train.data.get_data`` with the namespace its ``main`` builds
  for ``--dataset-resampled --train-data SHARDS --batch-size B --workers 1 --train-num-samples N
  --model ViT-B-32 --device cpu`` (``parse_args`` then ``init_distributed_device``).

**Per core** means: one loader worker process (``workers=1``), pinned to one core with
``os.sched_setaffinity`` once it has started (the main process, which only receives batches, is
pinned to another core). After ``--warmup`` batches (worker start-up, shuffle-buffer fill),
``--batches`` batches are timed; the figure is samples / CPU seconds the worker process spent
meanwhile (``/proc/<pid>/task/*/schedstat``, all its threads). A worker that is never starved
spends its CPU time on exactly the batches it hands over (the consumer is faster, so nothing
piles up), and CPU time does not count the time a neighbour's job held the core, which wall time
on this shared 2-core machine would. The wall-clock rate of the same window is recorded beside
it. Each round measures every loader at both sizes, the loaders' order alternating between
rounds; the median round is reported (every round is in the JSON, with the best round and the
median of the per-round ratios), with the load average.

Cores per GPU = the H200 step rate (``gpu_throughput_compile.json``: ViT-B/32 and ViT-L/14,
compiled) / the per-core loader rate.

    python benchmarks/loader_per_core.py            # writes benchmarks/results/loader_per_core.json
    python benchmarks/loader_per_core.py --quick    # seconds: a check that it runs
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import logging
import multiprocessing
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from training import data  # noqa: E402

SIZES = (256, 512)
ARCH = "ViT-B-32"
WORDS = ["a", "photo", "of", "red", "blue", "green", "circle", "square", "on", "the", "left",
         "right", "big", "small", "dog", "cat", "tree", "house", "near", "with"]  # fmt: skip
GPU_RESULTS = ROOT / "benchmarks/results/gpu_throughput_compile.json"
LOADERS = ("ours", "open_clip_train", "ours_exact")
"""``ours_exact``: ours with ``draft=False`` (open_clip_train's pixels at every size); measured
at the sizes where draft decoding applies (:data:`DRAFT_SIZES`), elsewhere it is ``ours``."""
DRAFT_SIZES = (512,)


def photo(rng: np.random.Generator, size: int) -> Image.Image:
    """A picture that compresses and decodes like a photo: gradients, texture, shapes, noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    a, b, c = rng.uniform(-1, 1, (3, 3, 1, 1)).astype(np.float32)
    base = 128 + 90 * (a * xx + b * yy + c * xx * yy)  # (3, size, size)
    coarse = np.clip(rng.normal(128, 40, (8, 8, 3)), 0, 255).astype(np.uint8)
    texture = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC))
    pixels = np.clip(base.transpose(1, 2, 0) + texture.astype(np.float32) - 128, 0, 255)
    img = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 10))):
        x0, y0 = (int(v) for v in rng.integers(0, size, 2))
        w, h = (int(v) for v in rng.integers(size // 10, size // 2, 2))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x0, y0, x0 + w, y0 + h], fill=fill)
    img = img.filter(ImageFilter.GaussianBlur(size / 256))
    noise = rng.integers(-10, 11, (size, size, 3), dtype=np.int16)
    return Image.fromarray(np.clip(np.asarray(img, np.int16) + noise, 0, 255).astype(np.uint8))


def _jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def write_shards(folder: Path, samples: int, per_shard: int) -> dict[int, str]:
    """The same ``samples`` pictures at each of :data:`SIZES`; returns {size: brace pattern}."""
    import webdataset as wds

    rng, words = np.random.default_rng(0), random.Random(0)
    n_shards = max(1, -(-samples // per_shard))
    sinks: dict[int, Any] = {}
    for s in range(n_shards):
        for size in SIZES:
            (folder / str(size)).mkdir(exist_ok=True)
            sinks[size] = wds.TarWriter(str(folder / str(size) / f"{s:05d}.tar"))
        for i in range(s * per_shard, min(samples, (s + 1) * per_shard)):
            key, text = f"{i:09d}", " ".join(words.choices(WORDS, k=words.randint(5, 14)))
            meta = {"key": key, "caption": text, "status": "success", "url": f"http://x/{key}"}
            source, quality = photo(rng, max(SIZES)), int(rng.integers(90, 96))
            for size in SIZES:
                img = source.reduce(max(SIZES) // size) if size < max(SIZES) else source
                sample = {"__key__": key, "jpg": _jpeg(img, quality), "txt": text}
                sinks[size].write({**sample, "json": json.dumps({**meta, "width": size})})
        for sink in sinks.values():
            sink.close()
    return {size: str(folder / str(size) / f"{{00000..{n_shards - 1:05d}}}.tar") for size in SIZES}


def ours(shards: str, preprocess, tokenizer, batch: int, samples: int) -> Iterable:
    return data.make_loader(shards, preprocess, tokenizer, batch, workers=1, seed=0)


def ours_exact(shards: str, preprocess, tokenizer, batch: int, samples: int) -> Iterable:
    return data.make_loader(shards, preprocess, tokenizer, batch, workers=1, seed=0, draft=False)


def open_clip_train(shards: str, preprocess, tokenizer, batch: int, samples: int) -> Iterable:
    from open_clip_train.data import get_data
    from open_clip_train.distributed import init_distributed_device
    from open_clip_train.params import parse_args

    args = parse_args(
        ["--dataset-resampled", "--train-data", shards, "--batch-size", str(batch)]
        + ["--workers", "1", "--train-num-samples", str(samples), "--model", ARCH]
        + ["--device", "cpu"]
    )
    init_distributed_device(args)  # as main() does: world size, rank, device
    return get_data(args, (preprocess, None), epoch=0, tokenizer=tokenizer)["train"].dataloader


def _cpu_seconds(pid: int) -> float:
    """CPU time of every thread of ``pid`` (ns resolution, unlike /proc/<pid>/stat's ticks)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def measure(
    make: Callable[[], Iterable], batch: int, warmup: int, batches: int, cores: tuple[int, int]
) -> dict[str, float]:
    """samples per worker CPU second, and per wall second, of ``batches`` batches of ``make()``."""
    before = {p.pid for p in multiprocessing.active_children()}
    loader = make()
    it: Iterator = iter(loader)
    next(it)  # starts the worker
    (worker,) = [p for p in multiprocessing.active_children() if p.pid not in before]
    os.sched_setaffinity(worker.pid, {cores[1]})
    for _ in range(warmup - 1):
        next(it)
    cpu0, wall0 = _cpu_seconds(worker.pid), time.perf_counter()
    for _ in range(batches):
        images, texts = next(it)
    cpu, wall = _cpu_seconds(worker.pid) - cpu0, time.perf_counter() - wall0
    assert tuple(images.shape) == (batch, 3, 224, 224) and texts.shape[0] == batch
    close = getattr(it, "close", None)
    if close is not None:
        close()
    del it, loader  # the last references: the worker shuts down (also a persistent one)
    worker.join(timeout=30)
    n = batches * batch
    return {
        "per_core": round(n / cpu, 1),
        "wall": round(n / wall, 1),
        "worker_cpu_s": round(cpu, 3),
    }


def _gpu_rates() -> dict[str, float]:
    if not GPU_RESULTS.exists():
        return {}
    models = json.loads(GPU_RESULTS.read_text())["models"]
    return {m["model"]: float(m["ours_samples_per_s"]) for m in models}


def summarize(rounds: dict[int, dict[str, list[dict[str, float]]]]) -> dict[str, Any]:
    """Median per-core rate of each loader at each size, their ratio and cores per GPU."""
    gpu = _gpu_rates()
    out: dict[str, Any] = {}
    for size, by_loader in rounds.items():
        med = {k: statistics.median(r["per_core"] for r in v) for k, v in by_loader.items()}
        wall = {k: statistics.median(r["wall"] for r in v) for k, v in by_loader.items()}
        paired = [
            a["per_core"] / b["per_core"]
            for a, b in zip(by_loader["ours"], by_loader["open_clip_train"], strict=True)
        ]
        exact = (
            {
                "ours_exact": round(med["ours_exact"], 1),
                "ratio_exact": round(med["ours_exact"] / med["open_clip_train"], 3),
            }
            if "ours_exact" in med
            else {}
        )
        out[str(size)] = {
            "ours": round(med["ours"], 1),
            "open_clip_train": round(med["open_clip_train"], 1),
            "ratio": round(med["ours"] / med["open_clip_train"], 3),
            **exact,
            "ratio_per_round": [round(r, 3) for r in paired],
            "ratio_paired_median": round(statistics.median(paired), 3),
            "best_of": {k: max(r["per_core"] for r in v) for k, v in by_loader.items()},
            "wall_samples_per_s": {k: round(v, 1) for k, v in wall.items()},
            "cores_per_gpu": {
                model: {k: round(rate / v, 1) for k, v in med.items()}
                for model, rate in gpu.items()
            },
            "rounds": by_loader,
        }
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=1024, help="distinct pictures per size")
    p.add_argument("--per-shard", type=int, default=256)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--batches", type=int, default=12, help="timed batches per measurement")
    p.add_argument("--warmup", type=int, default=2, help="untimed batches (>= 1) per measurement")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--quick", action="store_true", help="tiny settings: a check that it runs")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/loader_per_core.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.samples, args.per_shard, args.batch, args.batches = 16, 8, 8, 2
        args.warmup, args.rounds = 1, 1
    import open_clip

    logging.getLogger().setLevel(logging.ERROR)  # open_clip: "no pretrained weights loaded"
    torch.set_num_threads(1)
    preprocess = _train_transform(quick=args.quick)
    tokenizer = open_clip.get_tokenizer(ARCH)
    available = sorted(os.sched_getaffinity(0))
    cores = (available[0], available[-1])  # main process, worker (the same on a 1-core box)
    os.sched_setaffinity(0, {cores[0]})
    factories: dict[str, Callable[..., Iterable]] = {
        "ours": ours,
        "open_clip_train": open_clip_train,
        "ours_exact": ours_exact,
    }
    rounds: dict[int, dict[str, list[dict[str, float]]]] = {
        s: {k: [] for k in LOADERS if k != "ours_exact" or s in DRAFT_SIZES} for s in SIZES
    }
    load_before = os.getloadavg()
    started = time.time()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            shards = write_shards(Path(tmp), args.samples, args.per_shard)
            for r in range(args.rounds):
                for size in SIZES:
                    names = list(rounds[size])
                    for name in names if r % 2 == 0 else names[::-1]:
                        make = functools.partial(
                            factories[name], shards[size], preprocess, tokenizer, args.batch, 10**9
                        )
                        m = measure(make, args.batch, args.warmup, args.batches, cores)
                        m["load_1m"] = round(os.getloadavg()[0], 2)
                        rounds[size][name].append(m)
                        print(f"round {r} {size} px {name}: {m}", flush=True)
    finally:
        os.sched_setaffinity(0, available)
    result = {
        **summarize(rounds),
        "definition": "samples per CPU second of one loader worker process pinned to one core",
        "model_input": 224,
        "arch": ARCH,
        "batch": args.batch,
        "timed_samples_per_measurement": args.batch * args.batches,
        "distinct_samples_per_size": args.samples,
        "gpu_step_rates": _gpu_rates(),
        "machine": {
            "cpu_count": os.cpu_count(),
            "processor": _cpu_model(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "pillow": Image.__version__,
        },
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": round(time.time() - started, 1),
        "load_average": {
            "before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in os.getloadavg()],
        },  # fmt: skip
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(f".{out.name}.tmp")
    tmp_out.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp_out, out)
    print(json.dumps({k: result[str(k)] for k in SIZES} | {"load": result["load_average"]}))
    return result


def _train_transform(quick: bool) -> Callable:
    """``create_model_and_transforms(ARCH)``'s train transform; in quick mode the same transform
    from the model's config alone (building the model takes seconds)."""
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    size = open_clip.get_model_config(ARCH)["vision_cfg"]["image_size"]
    direct = image_transform_v2(PreprocessCfg(size=size), is_train=True)
    if quick:
        return direct
    _, preprocess, _ = open_clip.create_model_and_transforms(ARCH)
    assert repr(preprocess) == repr(direct), (preprocess, direct)
    return preprocess


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


if __name__ == "__main__":
    main()
