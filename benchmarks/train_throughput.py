"""Training throughput, ours against ``open_clip_train.main``: same model, data, batch, machine.

Both trainers run in this one process, one after the other, ``--rounds`` times each
(alternating, so that a neighbour's load on shared cores hits both alike), on the same embedded
shards (``synthetic``) with the same model, batch, precision and loader workers.
Steady state: the per-step times after ``--warmup`` steps, from each trainer's own per-step log
(ours: ``train_log.jsonl`` with ``log_every=1``; open_clip_train: its ``--log-every-n-steps 1``
lines). samples/s = samples of the timed steps / their summed step times; the best round of
each trainer is reported.

    python benchmarks/train_throughput.py            # writes benchmarks/results/train_throughput_cpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import synthetic  # noqa: E402
from core import schema  # noqa: E402
from core.models import register_model_configs  # noqa: E402
from training.metrics import LOG_FILE  # noqa: E402
from training.train import train  # noqa: E402

ARCHES = {"tiny_s": ("clipscale-tiny-s", 0.00424), "tiny_m": ("clipscale-tiny-m", None)}
_OC_LINE = re.compile(r"Batch \(t\): [\d.]+, ([\d.eE+-]+)/s,")


class _Capture(logging.Handler):
    """Collects open_clip_train's per-step samples/s from its log lines."""

    def __init__(self) -> None:
        super().__init__()
        self.rates: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        m = _OC_LINE.search(record.getMessage())
        if m:
            self.rates.append(float(m.group(1)))


def _steady(rates: list[float], batch: int, warmup: int) -> float:
    """samples/s over the steps after warm-up, from per-step samples/s."""
    timed = rates[warmup:]
    if not timed:
        raise RuntimeError(f"only {len(rates)} steps logged, warm-up is {warmup}")
    return len(timed) * batch / sum(batch / r for r in timed)


def run_ours(shards: str, arch: str, gmacs: float, a: argparse.Namespace, work: Path) -> float:
    cfg = OmegaConf.merge(
        OmegaConf.structured(schema.Config),
        {
            "model": {
                "name": a.model,
                "arch": arch,
                "label": a.model,
                "gmacs": gmacs,
                "global_batch": a.batch,
                "local_batch": a.batch,
                "precision": "fp32",
            },
            "data": {"name": "bench", "label": "bench", "num_samples": a.samples, "shards": shards},
            "samples": {"name": "bench", "seen": a.batch * a.steps},
            "train": {
                "lr": 1e-3,
                "warmup": 10,
                "workers": a.workers,
                "log_every": 1,
                "checkpoint_every": 0,
            },
        },
    )
    run_dir = Path(tempfile.mkdtemp(dir=work, prefix="ours-"))
    train(cfg, run_dir)
    lines = [json.loads(x) for x in (run_dir / LOG_FILE).read_text().splitlines()]
    return _steady([r["samples_per_s"] for r in lines], a.batch, a.warmup)


@contextlib.contextmanager
def kept_logging() -> Iterator[None]:
    """Logging as it was before the block: every logger's level, handlers, ``propagate`` and
    ``disabled``, and ``logging.disable``'s level; handlers added inside are closed, and a
    logger that came into being inside (a parent such as ``torch._subclasses`` of a logger
    made earlier) is set back to NOTSET, a new logger's level.

    open_clip_train's ``main`` calls its ``setup_logging``, which sets every logger that
    exists to INFO and adds handlers to the root logger: run in-process, that would leak into
    the rest of the process (torch prints its dynamo and ``FakeTensor cache stats`` INFO lines
    at exit, after pytest's summary).
    """
    manager = logging.root.manager

    def loggers() -> list[logging.Logger]:
        found = [lg for lg in manager.loggerDict.values() if isinstance(lg, logging.Logger)]
        return [logging.root, *found]

    saved = [(lg, lg.level, list(lg.handlers), lg.propagate, lg.disabled) for lg in loggers()]
    disabled_below = manager.disable
    try:
        yield
    finally:
        before = {id(lg) for lg, *_ in saved}
        for lg in loggers():
            if id(lg) not in before:
                lg.setLevel(logging.NOTSET)
        for lg, level, handlers, propagate, disabled in saved:
            for h in lg.handlers:
                if h not in handlers:
                    h.close()
            lg.handlers[:] = handlers
            lg.setLevel(level)  # clears the loggers' cached levels, too
            lg.propagate, lg.disabled = propagate, disabled
        logging.disable(disabled_below)


def run_open_clip_train(shards: str, arch: str, a: argparse.Namespace, work: Path) -> float:
    from open_clip_train.main import main

    register_model_configs()
    capture = _Capture()
    logs = Path(tempfile.mkdtemp(dir=work, prefix="oct-"))
    with kept_logging():
        logging.getLogger().addHandler(capture)
        main(
            [
                "--train-data",
                shards,
                "--dataset-type",
                "webdataset",
                "--dataset-resampled",
                "--train-num-samples",
                str(a.batch * a.steps),
                "--batch-size",
                str(a.batch),
                "--epochs",
                "1",
                "--workers",
                str(a.workers),
                "--model",
                arch,
                "--precision",
                "fp32",
                "--lr",
                "1e-3",
                "--warmup",
                "10",
                "--wd",
                "0.2",
                "--beta1",
                "0.9",
                "--beta2",
                "0.98",
                "--eps",
                "1e-6",
                "--seed",
                "0",
                "--logs",
                str(logs),
                "--name",
                "bench",
                "--save-frequency",
                "0",
                "--log-every-n-steps",
                "1",
                "--report-to",
                "",
            ]
        )
    return _steady(capture.rates, a.batch, a.warmup)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny_s", choices=sorted(ARCHES))
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=10, help="steps left out of the timing")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--samples", type=int, default=4096, help="pairs in the generated shards")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/train_throughput_cpu.json"))
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    arch, gmacs = ARCHES[a.model]
    if gmacs is None:
        gmacs = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        synthetic.generate_train(work / "data", a.samples, seed=0, shard_size=1024)
        n = -(-a.samples // 1024)
        shards = str(work / "data" / f"{{00000..{n - 1:05d}}}.tar")
        ours, theirs = [], []
        for _ in range(a.rounds):
            ours.append(run_ours(shards, arch, gmacs, a, work))
            theirs.append(run_open_clip_train(shards, arch, a, work))
    result = {
        "model": arch,
        "batch": a.batch,
        "ours_samples_per_s": round(max(ours), 1),
        "open_clip_train_samples_per_s": round(max(theirs), 1),
        "ratio": round(max(ours) / max(theirs), 3),
        "rounds": {
            "ours": [round(x, 1) for x in ours],
            "open_clip_train": [round(x, 1) for x in theirs],
        },
        "steps": a.steps,
        "warmup_steps": a.warmup,
        "workers": a.workers,
        "threads": a.threads,
        "precision": "fp32",
        "device": "cpu",
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
