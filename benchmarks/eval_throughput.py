"""Evaluation throughput: images/s of the whole evaluation stage for the tiny models.

Runs ``evaluation.evaluate.evaluate`` with the embedded suite (``conf/eval/embedded.yaml``:
zero-shot classification, linear probes, retrieval, aggregates) on freshly generated sets in
a temporary folder, for each tiny model (random weights: speed does not depend on them).
Every image read is counted once (features are shared by zero-shot and probes, a probe also
reads its train split). Prints the figures and writes
``benchmarks/results/eval_throughput_<device>.json`` (key ``images_per_s``; ``--out``)::

    .venv/bin/python benchmarks/eval_throughput.py [--models tiny_s tiny_m] [--threads N]
    python benchmarks/eval_throughput.py --device cuda    # on a GPU: bf16 autocast

The stage picks its device itself (cuda when there is one); ``--device cpu`` hides the GPUs
from this process so that a GPU machine can measure the CPU path too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import core  # noqa: E402, F401  # first: sets OMP_WAIT_POLICY before torch starts OpenMP

# isort: split
import numpy as np  # noqa: E402
import open_clip  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from core import schema  # noqa: E402
from core.models import register_model_configs  # noqa: E402
from evaluation.evaluate import evaluate  # noqa: E402
from synthetic import ensure_datasets  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


def _cfg(model: str, tmp: Path):
    schema.register()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(
            "config",
            overrides=[
                f"model={model}",
                "eval=embedded",
                f"root={tmp}/runs",
                f"data_root={tmp}/data",
            ],
        )


def _images(cfg) -> int:
    """Images the suite reads: each dataset's test split once, plus probes' train splits."""
    seen, n = set(), 0
    for ds in cfg.eval.datasets:
        splits = [ds.split] + ([ds.train_split] if ds.task == "linear_probe" else [])
        for split in splits:
            if (ds.root, split) not in seen:
                seen.add((ds.root, split))
                n += _count(Path(ds.root, split))
    return n


def _count(folder: Path) -> int:
    with tarfile.open(folder / "0.tar") as tar:
        return sum(m.name.endswith(".jpg") for m in tar.getmembers())


def measure(model: str, tmp: Path) -> dict:
    cfg = _cfg(model, tmp)
    ensure_datasets(cfg, eval_only=True)
    register_model_configs()
    torch.manual_seed(0)
    ckpt = tmp / f"{model}.pt"
    torch.save(
        {"epoch": 0, "state_dict": open_clip.create_model(cfg.model.arch).state_dict()}, ckpt
    )
    images = _images(cfg)
    start = time.perf_counter()
    records = evaluate(cfg, tmp / "runs" / model, ckpt, step=0)
    seconds = time.perf_counter() - start
    return {
        "images": images,
        "seconds": round(seconds, 2),
        "images_per_s": round(images / seconds, 1),
        "record_seconds": {
            f"{r['dataset']} {r['task']}": round(r["eval_seconds"], 2)
            for r in records
            if "members" not in r
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["tiny_s", "tiny_m"])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--out", type=Path, default=None,
                   help="default: benchmarks/results/eval_throughput_<device>.json")
    args = p.parse_args()
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before CUDA is first touched: evaluate() asks
    elif not torch.cuda.is_available():
        p.error("--device cuda: no GPU visible to torch")
    out = args.out or RESULTS / f"eval_throughput_{args.device}.json"
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda":  # CUDA context and cuBLAS start-up are not the stage's cost
        torch.ones(64, 64, device="cuda").matmul(torch.ones(64, 64, device="cuda")).sum().item()
    with tempfile.TemporaryDirectory() as tmp:
        per_model = {m: measure(m, Path(tmp)) for m in args.models}
    images = sum(r["images"] for r in per_model.values())
    seconds = sum(r["seconds"] for r in per_model.values())
    result = {
        "images_per_s": round(images / seconds, 1),
        "per_model": per_model,
        "suite": "eval=embedded (zero-shot x3, linear probe full + 10-shot, retrieval, aggregates)",
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "precision": "amp_bf16 (autocast)" if args.device == "cuda" else "fp32",
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "measured": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"images/s: {result['images_per_s']} (written to {out})")


if __name__ == "__main__":
    main()
