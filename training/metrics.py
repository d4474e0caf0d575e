"""The training log: loss, throughput, MFU and ETA since the previous line, loss spikes; and a
progress bar on an interactive terminal."""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig

from core.atomic import append_jsonl
from training.report import Reporter
from training.state import Run
from training.step import unwrap

log = logging.getLogger(__name__)

LOG_FILE = "train_log.jsonl"
"""One JSON line per ``train.log_every`` steps (and the last) in the run folder: step,
samples_seen, loss, loss_avg, lr, logit_scale, samples_per_s(_per_gpu), mfu, eta_s,
nonfinite_skipped, loss_spikes, skipped_samples, skipped_shards (the last two count what the
loader read, which may run a few batches ahead of the step)."""

SPIKE_FACTOR = 3.0
"""A loss above this many times its running mean is logged as a spike."""


def flops_per_sample(cfg: DictConfig) -> float:
    """Training FLOPs per pair: forward GMACs x 2 FLOPs per MAC x 3 (forward + backward)."""
    return float(cfg.model.gmacs) * 1e9 * 2 * 3


def peak_flops(cfg: DictConfig, device: torch.device) -> float:
    """Peak FLOP/s of one device: ``cluster.gpu_peak_tflops`` on a GPU, else
    ``cluster.cpu_peak_tflops``."""
    if device.type == "cuda":
        return float(cfg.cluster.gpu_peak_tflops) * 1e12
    return float(cfg.cluster.cpu_peak_tflops) * 1e12


@dataclass
class Meter:
    """Loss and throughput since the previous log line; loss spikes and non-finite steps."""

    last_step: int
    flops_per_sample: float
    peak: float
    last_time: float = field(default_factory=time.perf_counter)
    loss_sum: float = 0.0
    finite_steps: int = 0
    running: float | None = None  # running mean (EMA) of the loss, for spike detection
    spikes: int = 0

    def add(self, loss: float) -> bool:
        """Account one step's loss; True when it is a spike."""
        if not math.isfinite(loss):
            return False
        self.loss_sum += loss
        self.finite_steps += 1
        spike = self.running is not None and loss > SPIKE_FACTOR * self.running
        self.spikes += spike
        self.running = loss if self.running is None else 0.98 * self.running + 0.02 * loss
        return spike

    def pause(self, seconds: float) -> None:
        """Leave ``seconds`` (an evaluation, say) out of the throughput of the next line."""
        self.last_time += seconds

    def line(self, run: Run, lr: float) -> dict[str, Any]:
        """The log record of ``run``'s current step (see :data:`LOG_FILE`); starts a new span."""
        now = time.perf_counter()
        steps = max(run.step - self.last_step, 1)
        per_step = max((now - self.last_time) / steps, 1e-12)
        per_gpu = run.plan.global_batch / run.plan.world / per_step
        skipped = run.skips.total()
        record = {
            "step": run.step,
            "samples_seen": run.samples_seen,
            "loss": run.loss,
            "loss_avg": self.loss_sum / self.finite_steps if self.finite_steps else math.nan,
            "lr": lr,
            "logit_scale": float(unwrap(run.model).logit_scale.detach().exp()),
            "samples_per_s": run.plan.global_batch / per_step,
            "samples_per_s_per_gpu": per_gpu,
            "mfu": per_gpu * self.flops_per_sample / self.peak,
            "eta_s": (run.plan.total_steps - run.step) * per_step,
            "nonfinite_skipped": run.nonfinite,
            "loss_spikes": self.spikes,
            "skipped_samples": skipped[0],
            "skipped_shards": skipped[1],
        }
        self.last_step, self.last_time = run.step, now
        self.loss_sum, self.finite_steps = 0.0, 0
        return record


def write(run: Run, record: dict[str, Any], reporter: Reporter | None = None) -> None:
    """Append ``record`` to the run's :data:`LOG_FILE`, log it as one line, and hand it to
    ``reporter`` (TensorBoard, W&B: ``train.report_to``)."""
    append_jsonl(run.run_dir / LOG_FILE, record)
    if reporter is not None:
        reporter.scalars(record["samples_seen"], record)
    log.info(
        "%s step %d/%d loss %.4f lr %.2e %.0f samples/s (%.0f/gpu, MFU %.1f%%) eta %.0fs",
        run.run_dir.name,
        record["step"],
        run.plan.total_steps,
        record["loss"],
        record["lr"],
        record["samples_per_s"],
        record["samples_per_s_per_gpu"],
        100 * record["mfu"],
        record["eta_s"],
    )


def progress(run: Run) -> Any:
    """A tqdm bar on an interactive terminal (rank 0), else None."""
    if not (run.dist.main and sys.stdout.isatty()):
        return None
    from tqdm import tqdm  # only for a terminal: kept off the import of the trainer

    return tqdm(total=run.plan.total_steps, initial=run.step, unit="step", dynamic_ncols=True)
