"""One-GPU training throughput, ours against open_clip_train, on synthetic in-memory batches.

For each model (default ViT-B/32 and ViT-L/14, bf16 autocast, the paper's per-GPU batch from
``conf/model/*.yaml``, halved until it fits), it times our ``training.train.train_step`` and
open_clip_train's own ``train_one_epoch`` over the same batches already on the device (the
data pipeline is left out on purpose: this measures the step), after ``--warmup`` steps, and
reports samples/s, MFU (forward GMACs x 2 x 3 per sample over ``--peak-tflops``) and peak
memory of each, with ``ratio`` = ours over theirs. Budget: well under 6 minutes on an H100.

    python benchmarks/gpu_throughput.py                      # on the GPU machine
    python benchmarks/gpu_throughput.py --compile            # ours under torch.compile
    python benchmarks/gpu_throughput.py --dry-run            # CPU, tiny model: checks the script

Writes ``benchmarks/results/gpu_throughput.json`` (``--out``); ``--dry-run`` writes to a
temporary file unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from open_clip import ClipLoss  # noqa: E402
from open_clip_train.precision import get_autocast  # noqa: E402
from open_clip_train.scheduler import cosine_lr  # noqa: E402
from open_clip_train.train import train_one_epoch  # noqa: E402

from training import models  # noqa: E402
from training.train import make_optimizer, train_step  # noqa: E402

RECIPE = OmegaConf.create(
    {"lr": 5e-4, "weight_decay": 0.2, "beta1": 0.9, "beta2": 0.98, "eps": 1e-6}
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batches(arch_model: Any, batch: int, n: int, device: torch.device, dtype: torch.dtype | None):
    """``n`` distinct synthetic (images, tokens) batches, on the device."""
    size = arch_model.visual.image_size
    size = size if isinstance(size, tuple) else (size, size)
    ctx = arch_model.context_length
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        images = torch.randn(batch, 3, *size, generator=g).to(device, dtype=dtype)
        tokens = torch.randint(1, 49407, (batch, ctx), generator=g).to(device)
        out.append((images, tokens))
    return out


def _fresh(arch: str, precision: str, device: torch.device, grad_ckpt: bool):
    torch.manual_seed(0)
    model, _, _, _ = models.create_model(arch, precision, device)
    if grad_ckpt:
        model.set_grad_checkpointing(True)
    return model


def _measure(run_steps, n_warm: int, n_timed: int, batch: int, device: torch.device) -> dict:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    run_steps(n_warm)
    _sync(device)
    tic = time.perf_counter()
    run_steps(n_timed)
    _sync(device)
    seconds = time.perf_counter() - tic
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"samples_per_s": n_timed * batch / seconds, "peak_memory_gib": peak}


def bench_ours(arch, precision, batch, a, device, input_dtype) -> dict:
    model = _fresh(arch, precision, device, a.grad_checkpointing)
    optimizer = make_optimizer(model, RECIPE)
    step_model = torch.compile(model) if a.compile else model
    autocast = get_autocast(precision, device_type=device.type)
    loss_fn = ClipLoss()
    data = _batches(model, batch, 4, device, input_dtype)
    model.train()

    def run(n: int) -> None:
        for i in range(n):
            train_step(step_model, optimizer, None, loss_fn, [data[i % len(data)]], autocast)

    return _measure(run, a.warmup, a.steps, batch, device)


def bench_open_clip_train(arch, precision, batch, a, device, input_dtype) -> dict:
    model = _fresh(arch, precision, device, a.grad_checkpointing)
    # open_clip_train/main.py's optimizer: the same groups (make_optimizer), not fused.
    optimizer = make_optimizer(model, RECIPE, fused=False)
    data = _batches(model, batch, 4, device, input_dtype)
    args = SimpleNamespace(
        device=str(device),
        precision=precision,
        distill=False,
        accum_freq=1,
        skip_scheduler=False,
        horovod=False,
        grad_clip_norm=None,
        log_every_n_steps=10**9,
        world_size=1,
        rank=0,
        local_rank=0,
        batch_size=batch,
        wandb=False,
    )

    def run(n: int) -> None:
        dl = _Loader([data[i % len(data)] for i in range(n)])
        scheduler = cosine_lr(optimizer, RECIPE.lr, 10, 10**6)
        train_one_epoch(model, {"train": dl}, ClipLoss(), 0, optimizer, None, scheduler, None, args)

    logging.disable(logging.INFO)
    try:
        return _measure(run, a.warmup, a.steps, batch, device)
    finally:
        logging.disable(logging.NOTSET)


class _Loader:
    """``data["train"]`` as train_one_epoch reads it."""

    def __init__(self, batches: list) -> None:
        self.dataloader = _List(batches)

    def set_epoch(self, epoch: int) -> None:
        pass


class _List(list):
    @property
    def num_batches(self) -> int:
        return len(self)

    @property
    def num_samples(self) -> int:
        return len(self) * len(self[0][0])


def bench_model(name: str, a: argparse.Namespace, device: torch.device) -> dict:
    if a.dry_run:
        arch, gmacs, batch, precision = "clipscale-tiny-s", 0.00424, 16, "fp32"
    else:
        conf = OmegaConf.load(ROOT / "conf" / "model" / f"{name}.yaml")
        arch, gmacs, batch, precision = (
            conf.arch,
            float(conf.gmacs),
            int(conf.local_batch),
            a.precision,
        )
    from open_clip import get_input_dtype

    input_dtype = get_input_dtype(precision)
    result: dict = {"model": arch, "precision": precision}
    while True:
        try:
            ours = bench_ours(arch, precision, batch, a, device, input_dtype)
            theirs = bench_open_clip_train(arch, precision, batch, a, device, input_dtype)
            break
        except torch.cuda.OutOfMemoryError:
            if batch <= 8:
                raise
            batch //= 2
            torch.cuda.empty_cache()
    flops = gmacs * 1e9 * 2 * 3
    peak = a.peak_tflops * 1e12
    for key, r in (("ours", ours), ("open_clip_train", theirs)):
        result[f"{key}_samples_per_s"] = round(r["samples_per_s"], 1)
        result[f"{key}_mfu"] = round(r["samples_per_s"] * flops / peak, 4)
        result[f"{key}_peak_memory_gib"] = (
            round(r["peak_memory_gib"], 2) if r["peak_memory_gib"] is not None else None
        )
    result["batch"] = batch
    result["ratio"] = round(ours["samples_per_s"] / theirs["samples_per_s"], 3)
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="vit_b32,vit_l14", help="conf/model names")
    p.add_argument("--precision", default="amp_bf16")
    p.add_argument("--steps", type=int, default=20, help="timed steps per trainer")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="torch.compile our model")
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="device peak (default: 989 on a GPU, bf16 dense H100/H200; 0.1 on CPU)",
    )
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny model, 3 steps")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not a.dry_run else "cpu")
    if a.dry_run:
        a.steps, a.warmup, a.compile = min(a.steps, 3), min(a.warmup, 1), False
    if a.peak_tflops is None:
        a.peak_tflops = 989.0 if device.type == "cuda" else 0.1
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    names = ["tiny_s"] if a.dry_run else a.models.split(",")
    results = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "peak_tflops": a.peak_tflops,
        "compile": a.compile,
        "steps": a.steps,
        "warmup_steps": a.warmup,
        "models": [bench_model(n, a, device) for n in names],
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if a.out is None:
        a.out = (
            tempfile.mkdtemp() + "/gpu_throughput_dry.json"
            if a.dry_run
            else str(ROOT / "benchmarks/results/gpu_throughput.json")
        )
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(f"wrote {a.out}")
    assert all(math.isfinite(m["ratio"]) for m in results["models"])
    return results


if __name__ == "__main__":
    main()
