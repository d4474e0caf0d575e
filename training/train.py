"""Training stage: one grid point, trained with open_clip_train's recipe to ``samples.seen`` pairs.

The recipe follows open_clip_train: ``ClipLoss`` over the whole global batch (micro-batches
accumulate with its feature cache, so the contrastive negatives are the global batch, not the
micro-batch), AdamW without weight decay on gains and biases, linear warm-up then cosine decay
stepped per optimizer step, and ``logit_scale`` clamped to [0, ln 100] after every step.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from open_clip import ClipLoss, get_input_dtype
from open_clip_train.precision import get_autocast
from open_clip_train.scheduler import cosine_lr

from training import checkpoint, data, models
from training.io import append_jsonl

log = logging.getLogger(__name__)

LOG_FILE = "train_log.jsonl"
"""One JSON line per ``train.log_every`` steps (and the last) in the run folder."""


@dataclass(frozen=True)
class Plan:
    """Step arithmetic of a run, fixed by the config."""

    total_steps: int
    global_batch: int
    local_batch: int
    accum: int


def make_plan(cfg: DictConfig) -> Plan:
    """Optimizer steps and gradient accumulation; raise ValueError on an impossible batch."""
    global_batch, local_batch = int(cfg.model.global_batch), int(cfg.model.local_batch)
    if local_batch < 1 or global_batch < 1 or global_batch % local_batch:
        raise ValueError(
            f"model.global_batch ({global_batch}) must be a positive multiple of "
            f"model.local_batch ({local_batch}) to accumulate gradients on one process"
        )
    seen = int(cfg.samples.seen)
    if seen < 1:
        raise ValueError(f"samples.seen must be positive, got {seen}")
    return Plan(
        math.ceil(seen / global_batch), global_batch, local_batch, global_batch // local_batch
    )


def pick_device() -> torch.device:
    """The one GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    """Seed torch, Python and numpy (model init and augmentations draw from them)."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def _no_weight_decay(name: str, p: torch.Tensor) -> bool:
    # open_clip_train/main.py's `exclude`: gains, biases and the temperature are not decayed.
    return p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name


def make_optimizer(model: torch.nn.Module, t: DictConfig) -> torch.optim.AdamW:
    """AdamW over open_clip_train's two parameter groups (weight decay only on matrices)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
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
    )


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
    step: int = 0
    loss: float = math.nan
    seconds_before: float = 0.0
    resumed_from: int | None = None
    started: float = field(default_factory=time.perf_counter)

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
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "step": self.step,
            "samples_seen": self.samples_seen,
            "total_steps": self.plan.total_steps,
            "global_batch": self.plan.global_batch,
            "arch": str(self.cfg.model.arch),
            "final": final,
            "loss": self.loss,
            "seconds": self.seconds(),
            "resumed_from": self.resumed_from,
            "schedule": {
                "kind": "cosine",
                "base_lr": float(t.lr),
                "warmup": int(t.warmup),
                "total_steps": self.plan.total_steps,
                "lr": float(self.optimizer.param_groups[0]["lr"]),
            },
            "rng": checkpoint.rng_state(),
        }

    def save(self, final: bool) -> Path:
        keep = int(self.cfg.train.keep_checkpoints)
        return checkpoint.save(self.run_dir, self.step, self.state(final), keep)

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
    run.model.load_state_dict(state["state_dict"])
    run.optimizer.load_state_dict(state["optimizer"])
    if run.scaler is not None and state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    checkpoint.set_rng_state(state["rng"])
    run.step, run.loss = int(state["step"]), float(state["loss"])
    run.seconds_before, run.resumed_from = float(state["seconds"]), run.step
    log.info("resuming %s from step %d (%s)", run.run_dir.name, run.step, path.name)


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
    summed gradients are the exact gradient of the global-batch contrastive loss.

    One deliberate difference: open_clip_train lets every pass send gradient to
    ``logit_scale``, which counts its gradient ``accum`` times (AdamW mostly cancels a constant
    factor, but not entirely, through ``eps``). Here only the first pass does, so it is exact.
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
            if j > 0:
                scalars = {k: v.detach() for k, v in scalars.items()}
            inputs = {k: torch.cat(v[:j] + [features[k]] + v[j + 1 :]) for k, v in cached.items()}
            loss = loss_fn(**inputs, **scalars)
        _backward(loss, scaler)
    return loss.detach()


def _train_step(run: _Run, loss_fn: ClipLoss, batches: list, autocast: Callable) -> torch.Tensor:
    """One optimizer step over ``batches`` (the micro-batches of one global batch)."""
    run.optimizer.zero_grad(set_to_none=True)
    if len(batches) == 1:
        with autocast():
            loss = loss_fn(**run.model(*batches[0]))
        _backward(loss, run.scaler)
        loss = loss.detach()
    else:
        loss = _accumulated_backward(run.model, loss_fn, batches, autocast, run.scaler)
    if run.scaler is not None:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    with torch.no_grad():
        # As in the paper (and open_clip_train): the temperature never exceeds 100.
        run.model.logit_scale.clamp_(0, math.log(100))
    return loss


@dataclass
class _Meter:
    """Loss and throughput since the previous log line."""

    last_step: int
    last_time: float = field(default_factory=time.perf_counter)
    loss_sum: torch.Tensor | float = 0.0

    def add(self, loss: torch.Tensor) -> None:
        # Summing tensors avoids a host sync (.item()) on every step.
        self.loss_sum = self.loss_sum + loss

    def line(self, run: _Run, lr: float) -> dict[str, Any]:
        now = time.perf_counter()
        steps = max(run.step - self.last_step, 1)
        per_step = (now - self.last_time) / steps
        record = {
            "step": run.step,
            "samples_seen": run.samples_seen,
            "loss": run.loss,
            "loss_avg": float(self.loss_sum) / steps,
            "lr": lr,
            "logit_scale": float(run.model.logit_scale.detach().exp()),
            "samples_per_s": run.plan.global_batch / per_step,
            "eta_s": (run.plan.total_steps - run.step) * per_step,
        }
        self.last_step, self.last_time, self.loss_sum = run.step, now, 0.0
        return record


def _log(run: _Run, record: dict[str, Any]) -> None:
    append_jsonl(run.run_dir / LOG_FILE, record)
    log.info(
        "%s step %d/%d loss %.4f lr %.2e %.0f samples/s eta %.0fs",
        run.run_dir.name,
        record["step"],
        run.plan.total_steps,
        record["loss"],
        record["lr"],
        record["samples_per_s"],
        record["eta_s"],
    )


def _batches(loader: Any, run: _Run, input_dtype: torch.dtype | None):
    """Endless iterator of lists of ``accum`` micro-batches, already on the device."""
    for i, (images, texts) in enumerate(loader):
        if i % run.plan.accum == 0:
            group = []
        images = images.to(run.device, dtype=input_dtype, non_blocking=True)
        group.append((images, texts.to(run.device, non_blocking=True)))
        if len(group) == run.plan.accum:
            yield group


def _loop(run: _Run, preprocess: Any, tokenizer: Any) -> None:
    """Train from ``run.step`` to the plan's last step, logging and checkpointing on the way."""
    cfg, t = run.cfg, run.cfg.train
    scheduler = cosine_lr(run.optimizer, t.lr, t.warmup, run.plan.total_steps)
    autocast = get_autocast(cfg.model.precision, device_type=run.device.type)
    loss_fn = ClipLoss()
    loader = data.make_loader(
        cfg.data.shards,
        preprocess,
        tokenizer,
        run.plan.local_batch,
        int(t.workers),
        seed=data.stream_seed(int(t.seed), run.step),
    )
    batches = _batches(loader, run, get_input_dtype(cfg.model.precision))
    meter = _Meter(run.step)
    run.model.train()
    try:
        while run.step < run.plan.total_steps:
            lr = scheduler(run.step)
            loss = _train_step(run, loss_fn, next(batches), autocast)
            run.step += 1
            meter.add(loss)
            last = run.step == run.plan.total_steps
            log_now = last or run.step % max(int(t.log_every), 1) == 0
            save_now = not last and t.checkpoint_every > 0 and run.step % t.checkpoint_every == 0
            if log_now or save_now:
                run.loss = float(loss)  # the only host sync of the step, and only on these steps
            if log_now:
                _log(run, meter.line(run, lr))
            if save_now:
                run.save(final=False)
    finally:
        batches.close()  # shuts the loader's worker processes down


def train(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train one grid point to ``cfg.samples.seen`` pairs in ``run_dir``; resumable.

    Steps = ceil(samples.seen / model.global_batch), each over ``global_batch // local_batch``
    micro-batches of ``model.local_batch``. A relaunch resumes from the newest complete
    checkpoint (model, optimizer, step, RNG; the data stream is re-seeded from the step). When
    ``checkpoints/final.pt`` is already complete, nothing is trained and its record is returned.

    Returns ``{"checkpoint": path of final.pt, "step", "samples_seen" (= step x global batch),
    "loss": loss of the last step, "seconds": training wall-clock summed over attempts,
    "resumed_from": step of the last resume or None, "skipped": True when it had finished}``.
    """
    run_dir = Path(run_dir)
    done = checkpoint.final(run_dir)
    if done is not None:
        record = checkpoint.read_marker(done)
        keys = ("step", "samples_seen", "loss", "seconds", "resumed_from")
        return {"checkpoint": str(done), **{k: record.get(k) for k in keys}, "skipped": True}
    plan = make_plan(cfg)
    data.check_shards(cfg.data.shards)  # fail in a second, before building the model
    device = pick_device()
    seed_everything(int(cfg.train.seed))
    model, preprocess, _, tokenizer = models.create_model(
        cfg.model.arch, cfg.model.precision, device
    )
    if cfg.model.get("grad_checkpointing", False):
        model.set_grad_checkpointing(True)
    optimizer = make_optimizer(model, cfg.train)
    scaler = torch.amp.GradScaler(device.type) if cfg.model.precision == "amp" else None
    run = _Run(cfg, run_dir, plan, device, model, optimizer, scaler)
    _resume(run)
    if run.step < plan.total_steps:
        _loop(run, preprocess, tokenizer)
    return run.result(run.save(final=True))
