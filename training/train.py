"""Training stage: one grid point, trained with open_clip_train's recipe to ``samples.seen`` pairs.

The recipe follows open_clip_train step for step (``tests/test_training_parity.py`` checks it
against its own ``train_one_epoch``): ``ClipLoss`` over the whole global batch (micro-batches
accumulate with its feature cache, so the contrastive negatives are the global batch, not the
micro-batch), AdamW without weight decay on gains and biases, linear warm-up then cosine decay
stepped per optimizer step, and ``logit_scale`` clamped to [0, ln 100] after every step.

With torch.distributed's variables set (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``, as torchrun and SLURM launchers set them) the model runs in
DDP with ``ClipLoss(local_loss=True, gather_with_grad=True)``; each rank reads its own stream.

A SIGTERM or SIGUSR2 makes the run checkpoint at the next step boundary and raise
:class:`Preempted`; a non-finite loss skips its step, and ``train.max_nonfinite`` of them in a
row raise :class:`NonFiniteLoss`, keeping the last good checkpoint. With
``train.zeroshot_every`` > 0 the run is evaluated on ``cfg.eval`` every that many steps
(records with ``final: false``: the learning curve). Unreadable shards and samples the loader
skips are counted (``skipped_samples``, ``skipped_shards`` in the log and the checkpoints).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import DictConfig
from open_clip import ClipLoss, get_input_dtype
from open_clip_train.precision import get_autocast
from open_clip_train.scheduler import cosine_lr

from core.atomic import append_jsonl
from training import checkpoint, data, models

log = logging.getLogger(__name__)

LOG_FILE = "train_log.jsonl"
"""One JSON line per ``train.log_every`` steps (and the last) in the run folder: step,
samples_seen, loss, loss_avg, lr, logit_scale, samples_per_s(_per_gpu), mfu, eta_s,
nonfinite_skipped, loss_spikes, skipped_samples, skipped_shards (the last two count what the
loader read, which may run a few batches ahead of the step)."""

PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)
"""What SLURM sends before a time limit or a preemption."""
PREEMPTED_EXIT_CODE = 3
"""Exit status a CLI wrapper should use for :class:`Preempted` (requeue, do not mark failed)."""
DEFAULT_MAX_NONFINITE = 5
"""``train.max_nonfinite`` when the config has no such field."""
SPIKE_FACTOR = 3.0
"""A loss above this many times its running mean is logged as a spike."""
DEFAULT_CPU_PEAK_TFLOPS = 0.1
"""Peak fp32 TFLOP/s of a CPU for the MFU estimate when ``cluster.cpu_peak_tflops`` is unset."""


class Preempted(Exception):
    """The run was asked to stop (SIGTERM/SIGUSR2) and saved a checkpoint: requeue it, it resumes.

    ``step``: the step checkpointed; ``checkpoint``: its path; ``signum``: the signal received.
    """

    def __init__(self, step: int, path: Path, signum: int):
        super().__init__(f"stopped by signal {signum} at step {step}; checkpoint {path}")
        self.step, self.checkpoint, self.signum = step, path, signum


class NonFiniteLoss(RuntimeError):
    """``train.max_nonfinite`` losses in a row were NaN/inf; the newest complete checkpoint is
    the last good state (nothing was saved after the first bad step)."""


@dataclass(frozen=True)
class Plan:
    """Step arithmetic of a run, fixed by the config and the number of processes."""

    total_steps: int
    global_batch: int
    local_batch: int
    accum: int
    world: int = 1


def make_plan(cfg: DictConfig, world: int = 1) -> Plan:
    """Optimizer steps and gradient accumulation; raise ValueError on an impossible batch.

    ``global_batch = world x local_batch x accum``: every process runs ``accum`` micro-batches
    of ``local_batch`` per optimizer step.
    """
    global_batch, local_batch = int(cfg.model.global_batch), int(cfg.model.local_batch)
    if local_batch < 1 or global_batch < 1 or global_batch % (local_batch * world):
        raise ValueError(
            f"model.global_batch ({global_batch}) must be a positive multiple of "
            f"model.local_batch ({local_batch}) x processes ({world}) to accumulate gradients"
        )
    seen = int(cfg.samples.seen)
    if seen < 1:
        raise ValueError(f"samples.seen must be positive, got {seen}")
    accum = global_batch // (local_batch * world)
    return Plan(math.ceil(seen / global_batch), global_batch, local_batch, accum, world)


def pick_device() -> torch.device:
    """The process's GPU (``LOCAL_RANK``) when there is one, else the CPU."""
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed torch, Python and numpy (model init draws from them)."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def _no_weight_decay(name: str, p: torch.Tensor) -> bool:
    # open_clip_train/main.py's `exclude`: gains, biases and the temperature are not decayed.
    return p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name


def make_optimizer(
    model: torch.nn.Module, t: DictConfig, fused: bool | None = None
) -> torch.optim.AdamW:
    """AdamW over open_clip_train's two parameter groups (weight decay only on matrices).

    ``fused`` (default: when the parameters are on a GPU) runs the update as one kernel; it
    is the same AdamW arithmetic as open_clip_train's, up to float rounding.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if fused is None:
        fused = bool(named) and named[0][1].is_cuda
    return torch.optim.AdamW(
        [
            {"params": [p for n, p in named if _no_weight_decay(n, p)], "weight_decay": 0.0},
            {
                "params": [p for n, p in named if not _no_weight_decay(n, p)],
                "weight_decay": t.weight_decay,
            },
        ],
        lr=t.lr,
        betas=(t.beta1, t.beta2),
        eps=t.eps,
        fused=fused or None,
    )


def unwrap(model: Any) -> Any:
    """The model inside torch.compile's and DDP's wrappers (or the model itself)."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


# --------------------------------------------------------------------------------------------
# One optimizer step


def _backward(loss: torch.Tensor, scaler: Any) -> None:
    (scaler.scale(loss) if scaler is not None else loss).backward()


def _split_scale(out: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """Per-sample features apart from the scalars (logit scale and bias) of a model output."""
    scalars = {k: out.pop(k) for k in ("logit_scale", "logit_bias") if k in out}
    return out, scalars


def _accumulated_backward(
    model: Any,
    loss_fn: ClipLoss,
    batches: list,
    autocast: Callable[[], AbstractContextManager],
    scaler: Any,
) -> torch.Tensor:
    """Backward of the loss over all micro-batches together (open_clip_train's ``accum_freq``).

    Features of every micro-batch are cached without gradients; then each micro-batch is run
    again with gradients and its features replace its cached ones in the full-batch loss. The
    summed gradients are the gradient of the global-batch contrastive loss, except for the
    logit scale (and bias): as in open_clip_train, every pass sends it the full-batch gradient,
    so it receives ``accum`` times that. We keep this on purpose: it is the recipe the paper's
    runs were trained with, and AdamW is nearly invariant to the factor (up to ``eps``).
    """
    cached: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad(), autocast():
        for images, texts in batches:
            features, _ = _split_scale(model(images, texts))
            for k, v in features.items():
                cached.setdefault(k, []).append(v)
    for j, (images, texts) in enumerate(batches):
        with autocast():
            features, scalars = _split_scale(model(images, texts))
            inputs = {k: torch.cat(v[:j] + [features[k]] + v[j + 1 :]) for k, v in cached.items()}
            loss = loss_fn(**inputs, **scalars)
        _backward(loss, scaler)
    return loss.detach()


def train_step(
    model: Any,
    optimizer: torch.optim.Optimizer,
    scaler: Any,
    loss_fn: ClipLoss,
    batches: list,
    autocast: Callable[[], AbstractContextManager],
) -> torch.Tensor:
    """One optimizer step over ``batches`` (this process's micro-batches of one global batch).

    Returns the (detached) loss. A non-finite loss skips the update: gradients are dropped and
    the weights, optimizer state and logit scale stay as they were.
    """
    optimizer.zero_grad(set_to_none=True)
    if len(batches) == 1:
        with autocast():
            loss = loss_fn(**model(*batches[0]))
        _backward(loss, scaler)
        loss = loss.detach()
    else:
        loss = _accumulated_backward(model, loss_fn, batches, autocast, scaler)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        # Every rank must take the same decision on a non-finite loss, and log the mean.
        loss = loss.clone()
        dist.all_reduce(loss)
        loss /= dist.get_world_size()
    if not torch.isfinite(loss):  # one host sync per step; GradScaler does as much anyway
        optimizer.zero_grad(set_to_none=True)
        return loss
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    with torch.no_grad():
        # As in the paper (and open_clip_train): the temperature never exceeds 100.
        unwrap(model).logit_scale.clamp_(0, math.log(100))
    return loss


# --------------------------------------------------------------------------------------------
# Processes


@dataclass(frozen=True)
class Dist:
    """This process's place among the run's processes."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> Dist:
    """Join the process group when torch.distributed's variables are set; else one process."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return Dist()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return Dist(rank, world, int(os.environ.get("LOCAL_RANK", 0)))


class _StopFlag:
    """Records SIGTERM/SIGUSR2 so that the loop stops at the next step boundary."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for s in PREEMPT_SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def requested(self, dist_: Dist, device: torch.device) -> bool:
        """True on every rank when any rank got a signal (all must save the same step)."""
        if dist_.world == 1:
            return self.signum is not None
        flag = torch.tensor([float(self.signum is not None)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


# --------------------------------------------------------------------------------------------
# The run


@dataclass
class _Run:
    """Everything one training attempt holds; ``state()`` is what a checkpoint stores."""

    cfg: DictConfig
    run_dir: Path
    plan: Plan
    device: torch.device
    model: Any
    optimizer: torch.optim.Optimizer
    scaler: Any
    dist: Dist = field(default_factory=Dist)
    step: int = 0
    loss: float = math.nan
    nonfinite: int = 0
    seconds_before: float = 0.0
    resumed_from: int | None = None
    started: float = field(default_factory=time.perf_counter)
    skipped_closed: list[int] = field(default_factory=lambda: [0, 0])
    """Samples and shards skipped in data segments whose loaders are closed."""
    skip_counts: dict[int, data.SkipCounts] = field(default_factory=dict)
    """Skip counters of the open data segments, by segment."""

    def skipped(self, before_segment: int | None = None) -> list[int]:
        """``[samples, shards]`` skipped so far (only in segments before ``before_segment``)."""
        total = list(self.skipped_closed)
        for segment, counts in self.skip_counts.items():
            if before_segment is None or segment < before_segment:
                total[0] += counts.samples
                total[1] += counts.shards
        return total

    @property
    def samples_seen(self) -> int:
        return self.step * self.plan.global_batch

    def seconds(self) -> float:
        """Training wall-clock over all attempts of this run."""
        return self.seconds_before + time.perf_counter() - self.started

    def state(self, final: bool) -> dict[str, Any]:
        """Checkpoint contents (see :mod:`training.checkpoint` for the format)."""
        t = self.cfg.train
        return {
            "epoch": int(final),  # the whole run is one open_clip "epoch" of samples.seen pairs
            "name": self.run_dir.name,
            "state_dict": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "step": self.step,
            "samples_seen": self.samples_seen,
            "total_steps": self.plan.total_steps,
            "global_batch": self.plan.global_batch,
            "arch": str(self.cfg.model.arch),
            "final": final,
            "loss": self.loss,
            "nonfinite_skipped": self.nonfinite,
            "seconds": self.seconds(),
            "resumed_from": self.resumed_from,
            "schedule": {
                "kind": "cosine",
                "base_lr": float(t.lr),
                "warmup": int(t.warmup),
                "total_steps": self.plan.total_steps,
                "lr": float(self.optimizer.param_groups[0]["lr"]),
            },
            "skipped_samples": self.skipped()[0],
            "skipped_shards": self.skipped()[1],
            "data": {
                "segment_steps": data.SEGMENT_STEPS,
                "world": self.plan.world,
                # A resume replays the current segment, which counts its skips again.
                "skipped_before_segment": self.skipped(self.step // data.SEGMENT_STEPS),
            },
            "rng": checkpoint.rng_state(),
        }

    def save(self, final: bool) -> Path:
        """Checkpoint (rank 0 writes; every rank waits for it, so none runs ahead of a save)."""
        path = checkpoint.checkpoint_dir(self.run_dir) / (
            checkpoint.FINAL if final else f"step_{self.step:08d}.pt"
        )
        if self.dist.main:
            keep = int(self.cfg.train.keep_checkpoints)
            path = checkpoint.save(self.run_dir, self.step, self.state(final), keep)
        if self.dist.world > 1:
            dist.barrier()
        return path

    def result(self, path: Path) -> dict[str, Any]:
        return {
            "skipped": False,
            "checkpoint": str(path),
            "step": self.step,
            "samples_seen": self.samples_seen,
            "loss": self.loss,
            "seconds": self.seconds(),
            "resumed_from": self.resumed_from,
        }


def _resume(run: _Run) -> None:
    """Load the newest complete checkpoint of the run, if any, into ``run``."""
    path = checkpoint.latest(run.run_dir)
    if path is None:
        return
    state = checkpoint.load(path)
    if state["arch"] != run.cfg.model.arch or state["global_batch"] != run.plan.global_batch:
        raise ValueError(
            f"{path} is a {state['arch']} checkpoint at global batch {state['global_batch']}; "
            f"this run is {run.cfg.model.arch} at {run.plan.global_batch}"
        )
    unwrap(run.model).load_state_dict(state["state_dict"])
    run.optimizer.load_state_dict(state["optimizer"])
    if run.scaler is not None and state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    if run.dist.world == 1:  # the saved RNG states are rank 0's
        checkpoint.set_rng_state(state["rng"])
    run.step, run.loss = int(state["step"]), float(state["loss"])
    run.nonfinite = int(state.get("nonfinite_skipped", 0))
    run.skipped_closed = [int(x) for x in state["data"].get("skipped_before_segment", [0, 0])]
    run.seconds_before, run.resumed_from = float(state["seconds"]), run.step
    log.info("resuming %s from step %d (%s)", run.run_dir.name, run.step, path.name)


def _batches(run: _Run, preprocess: Any, tokenizer: Any) -> Generator[list, None, None]:
    """Endless iterator, from ``run.step`` on, of lists of ``accum`` micro-batches on the device.

    The stream is cut into segments of ``data.SEGMENT_STEPS`` steps, each with its own seed
    (per rank); a start mid-segment restarts the segment and skips the steps already taken, so
    the batches of step ``s`` do not depend on where the run was interrupted. The next
    segment's loader starts (its workers spawn and prefetch) while the last step of the
    current one trains, so a segment boundary does not stall the model.
    """
    cfg, plan = run.cfg, run.plan
    input_dtype = get_input_dtype(cfg.model.precision)

    def start(segment: int) -> Iterator[Any]:
        run.skip_counts[segment] = data.SkipCounts()
        loader = data.make_loader(
            cfg.data.shards,
            preprocess,
            tokenizer,
            plan.local_batch,
            int(cfg.train.workers),
            seed=data.stream_seed(int(cfg.train.seed), segment, run.dist.rank),
            counts=run.skip_counts[segment],
            weights=cfg.data.get("shard_weights"),
        )
        return iter(loader)

    segment, offset = divmod(run.step, data.SEGMENT_STEPS)
    it = start(segment)
    for _ in range(offset * plan.accum):
        next(it)
    while True:
        for k in range(offset, data.SEGMENT_STEPS):
            group = []
            for images, texts in (next(it) for _ in range(plan.accum)):
                images = images.to(run.device, dtype=input_dtype, non_blocking=True)
                group.append((images, texts.to(run.device, non_blocking=True)))
            if k == data.SEGMENT_STEPS - 1:
                following = start(segment + 1)
            yield group
        # Dropping the last reference shuts the finished segment's loader workers down.
        it, segment, offset = following, segment + 1, 0
        done = run.skip_counts.pop(segment - 1)
        run.skipped_closed = [
            run.skipped_closed[0] + done.samples,
            run.skipped_closed[1] + done.shards,
        ]


def peak_flops(cfg: DictConfig, device: torch.device) -> float:
    """Peak FLOP/s of one device: ``cluster.gpu_peak_tflops`` on a GPU, else the CPU's."""
    if device.type == "cuda":
        return float(cfg.cluster.get("gpu_peak_tflops", 312.0)) * 1e12
    return float(cfg.cluster.get("cpu_peak_tflops", DEFAULT_CPU_PEAK_TFLOPS)) * 1e12


@dataclass
class _Meter:
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

    def line(self, run: _Run, lr: float) -> dict[str, Any]:
        now = time.perf_counter()
        steps = max(run.step - self.last_step, 1)
        per_step = max((now - self.last_time) / steps, 1e-12)
        per_gpu = run.plan.global_batch / run.plan.world / per_step
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
            "skipped_samples": run.skipped()[0],
            "skipped_shards": run.skipped()[1],
        }
        self.last_step, self.last_time = run.step, now
        self.loss_sum, self.finite_steps = 0.0, 0
        return record


def _log(run: _Run, record: dict[str, Any]) -> None:
    append_jsonl(run.run_dir / LOG_FILE, record)
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


def _progress(run: _Run) -> Any:
    """A tqdm bar on an interactive terminal (rank 0), else None."""
    if not (run.dist.main and sys.stdout.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(total=run.plan.total_steps, initial=run.step, unit="step", dynamic_ncols=True)


def _loop(run: _Run, preprocess: Any, tokenizer: Any, stop: _StopFlag) -> None:
    """Train from ``run.step`` to the plan's last step, logging and checkpointing on the way."""
    cfg, t = run.cfg, run.cfg.train
    scheduler = cosine_lr(run.optimizer, t.lr, t.warmup, run.plan.total_steps)
    autocast = get_autocast(cfg.model.precision, device_type=run.device.type)
    if run.plan.world > 1:
        loss_fn = ClipLoss(
            local_loss=True, gather_with_grad=True, rank=run.dist.rank, world_size=run.plan.world
        )
    else:
        loss_fn = ClipLoss()
    max_nonfinite = int(t.get("max_nonfinite", DEFAULT_MAX_NONFINITE))
    # Forward GMACs per pair x 2 FLOPs per MAC x 3 (forward + backward).
    meter = _Meter(run.step, float(cfg.model.gmacs) * 1e9 * 2 * 3, peak_flops(cfg, run.device))
    batches = _batches(run, preprocess, tokenizer)
    bar = _progress(run)
    in_a_row = 0
    run.model.train()
    try:
        while run.step < run.plan.total_steps:
            lr = scheduler(run.step)
            loss = float(
                train_step(run.model, run.optimizer, run.scaler, loss_fn, next(batches), autocast)
            )
            run.step += 1
            if math.isfinite(loss):
                in_a_row, run.loss = 0, loss
            else:
                in_a_row += 1
                run.nonfinite += 1
                log.warning(
                    "%s step %d: loss %s, update skipped (%d in a row)",
                    run.run_dir.name,
                    run.step,
                    loss,
                    in_a_row,
                )
                if in_a_row >= max_nonfinite:
                    raise NonFiniteLoss(
                        f"{in_a_row} non-finite losses in a row up to step {run.step} "
                        f"(train.max_nonfinite={max_nonfinite}); last good checkpoint: "
                        f"{checkpoint.latest(run.run_dir)}"
                    )
            if meter.add(loss):
                log.warning(
                    "%s step %d: loss spike %.4f (running mean %.4f)",
                    run.run_dir.name,
                    run.step,
                    loss,
                    meter.running,
                )
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
            last = run.step == run.plan.total_steps
            if run.dist.main and (last or run.step % max(int(t.log_every), 1) == 0):
                _log(run, meter.line(run, lr))
            if not last and stop.requested(run.dist, run.device):
                path = run.save(final=False)
                raise Preempted(run.step, path, stop.signum or 0)
            saved = None
            if (
                not last
                and in_a_row == 0
                and t.checkpoint_every > 0
                and run.step % t.checkpoint_every == 0
            ):
                saved = run.save(final=False)
            zeroshot_every = int(t.get("zeroshot_every", 0))
            if not last and zeroshot_every > 0 and run.step % zeroshot_every == 0:
                began = time.perf_counter()
                _zeroshot(run, saved, in_a_row)
                meter.last_time += time.perf_counter() - began  # not training throughput
    finally:
        batches.close()  # shuts the loader's worker processes down
        if bar is not None:
            bar.close()


def _zeroshot(run: _Run, saved: Path | None, in_a_row: int) -> None:
    """Evaluate this step's checkpoint on ``cfg.eval`` (records with ``final: false``).

    The step is checkpointed first when it is not a checkpoint step (``keep_checkpoints`` may
    prune it later; its records stay). Rank 0 evaluates while the others wait. Evaluation
    builds a model (drawing from torch's RNG), so every RNG state is restored afterwards: the
    run's batches and weights do not depend on ``train.zeroshot_every``.
    """
    if in_a_row:  # the weights are those of an earlier step, already evaluated or not
        log.warning(
            "%s step %d: zero-shot evaluation skipped (non-finite loss)", run.run_dir.name, run.step
        )
        return
    path = saved if saved is not None else run.save(final=False)
    if run.dist.main:
        from evaluation.evaluate import evaluate

        rng = checkpoint.rng_state()
        try:
            evaluate(run.cfg, run.run_dir, path, run.step, final=False)
        finally:
            checkpoint.set_rng_state(rng)
            run.model.train()
    if run.dist.world > 1:
        dist.barrier()


def _build(cfg: DictConfig, run_dir: Path, dist_: Dist) -> tuple[_Run, Any, Any]:
    """Model, optimizer and the run's state, resumed from its newest checkpoint if any."""
    plan = make_plan(cfg, dist_.world)
    # Fail in a second, before building the model.
    data.check_shards(cfg.data.shards, cfg.data.get("shard_weights"))
    device = pick_device()
    seed_everything(int(cfg.train.seed))  # the same initial weights on every rank
    model, preprocess, _, tokenizer = models.create_model(
        cfg.model.arch, cfg.model.precision, device
    )
    if cfg.model.get("grad_checkpointing", False):
        model.set_grad_checkpointing(True)
    optimizer = make_optimizer(model, cfg.train)
    scaler = torch.amp.GradScaler(device.type) if cfg.model.precision == "amp" else None
    run = _Run(cfg, run_dir, plan, device, model, optimizer, scaler, dist_)
    _resume(run)
    if dist_.world > 1:
        ids = [device.index] if device.type == "cuda" else None
        run.model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if cfg.train.get("compile", False):
        run.model = torch.compile(run.model)
    return run, preprocess, tokenizer


def train(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train one grid point to ``cfg.samples.seen`` pairs in ``run_dir``; resumable.

    Steps = ceil(samples.seen / model.global_batch), each over ``global_batch // (processes x
    local_batch)`` micro-batches of ``model.local_batch`` per process. A relaunch resumes from
    the newest complete checkpoint (model, optimizer, step, RNG; the data stream continues
    exactly where the checkpoint was taken). When ``checkpoints/final.pt`` is already complete,
    nothing is trained and its record is returned.

    Returns ``{"checkpoint": path of final.pt, "step", "samples_seen" (= step x global batch),
    "loss": loss of the last finite step, "seconds": training wall-clock summed over attempts,
    "resumed_from": step of the last resume or None, "skipped": True when it had finished}``.

    Raises :class:`Preempted` after checkpointing when SIGTERM or SIGUSR2 arrived, and
    :class:`NonFiniteLoss` after ``train.max_nonfinite`` non-finite losses in a row.
    """
    run_dir = Path(run_dir)
    done = checkpoint.final(run_dir)
    if done is not None:
        record = checkpoint.read_marker(done)
        keys = ("step", "samples_seen", "loss", "seconds", "resumed_from")
        return {"checkpoint": str(done), **{k: record.get(k) for k in keys}, "skipped": True}
    dist_ = init_distributed("cuda" if torch.cuda.is_available() else "cpu")
    with _StopFlag() as stop:
        run, preprocess, tokenizer = _build(cfg, run_dir, dist_)
        if run.step < run.plan.total_steps:
            _loop(run, preprocess, tokenizer, stop)
        out = run.result(run.save(final=True))
        if dist_.world > 1:
            out["ranks"] = rank_report(run.model)
        return out


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a model's state dict, bit for bit (names and bytes, in name order); the
    ``state_dict`` of a checkpoint gives the same digest as the model it was saved from."""
    h = hashlib.sha256()
    for name, t in sorted(state_dict.items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def rank_report(model: Any) -> list[dict[str, Any]]:
    """Every rank's node and final-weights digest, gathered on every rank. DDP keeps the
    replicas identical; a difference means the ranks diverged (raises RuntimeError)."""
    mine = {"rank": dist.get_rank(), "node": os.environ.get("SLURMD_NODENAME") or socket.gethostname(),
            "weights_sha256": weights_digest(unwrap(model).state_dict())}
    ranks: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(ranks, mine)
    if len({r["weights_sha256"] for r in ranks}) > 1:
        raise RuntimeError(f"the ranks' final weights differ: {ranks}")
    return ranks
