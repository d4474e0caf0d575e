"""The state of one training attempt (:class:`Run`): what its checkpoints store, how they are
saved, and how a relaunch resumes from the newest complete one (:func:`resume`).

The file format (atomic files, completion markers, keep-latest-k) is :mod:`training.checkpoint`'s.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from core.steps import Steps
from training import checkpoint, data
from training.distributed import Dist, barrier
from training.schedule import Branch, Trunk
from training.step import unwrap
from training.stop import ShouldStop, check_abandoned

log = logging.getLogger(__name__)

RESULT_KEYS = ("step", "samples_seen", "loss", "seconds", "resumed_from")
"""What :func:`training.train.train` returns besides ``checkpoint`` and ``skipped``."""


@dataclass
class Run:
    """Everything one training attempt holds; :meth:`state` is what a checkpoint stores."""

    cfg: DictConfig
    run_dir: Path
    plan: Steps
    device: torch.device
    model: Any
    optimizer: torch.optim.Optimizer
    scaler: Any
    dist: Dist = field(default_factory=Dist)
    step: int = 0
    loss: float = math.nan
    """Loss of the last finite step."""
    nonfinite: int = 0
    """Steps skipped for a non-finite loss, over all attempts."""
    seconds_before: float = 0.0
    """Training wall-clock of the earlier attempts."""
    resumed_from: int | None = None
    started: float = field(default_factory=time.perf_counter)
    skips: data.SkipTally = field(default_factory=data.SkipTally)
    """What the loader skipped, over all attempts."""
    trunk: Trunk | None = None
    """Set when this attempt trains a const_cooldown trunk segment."""
    branch: Branch | None = None
    """Set when this run is a branch: with no checkpoint of its own it starts from the trunk."""
    forked_from: Path | None = None
    """The trunk checkpoint this attempt started from, if any."""
    should_stop: ShouldStop | None = None
    """Asked before every save (:func:`training.stop.check_abandoned`): a lost lease saves nothing."""

    @property
    def samples_seen(self) -> int:
        return self.step * self.plan.global_batch

    def seconds(self) -> float:
        """Training wall-clock over all attempts of this run."""
        return self.seconds_before + time.perf_counter() - self.started

    def state(self, final: bool) -> dict[str, Any]:
        """Checkpoint contents (the keys are listed in :mod:`training.checkpoint`)."""
        t = self.cfg.train
        skipped = self.skips.total()
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
                "kind": str(t.schedule) if self.trunk is None else "trunk",
                "base_lr": float(t.lr),
                "warmup": int(t.warmup),
                "total_steps": self.plan.total_steps,
                "lr": float(self.optimizer.param_groups[0]["lr"]),
                "fork_step": self.branch.fork if self.branch is not None else None,
            },
            "skipped_samples": skipped[0],
            "skipped_shards": skipped[1],
            "data": {
                "segment_steps": data.SEGMENT_STEPS,
                "world": self.plan.world,
                # A resume replays the current segment, which counts its skips again.
                "skipped_before_segment": self.skips.total(self.step // data.SEGMENT_STEPS),
            },
            "rng": checkpoint.rng_state(),
        }

    def save(self, final: bool, pin: bool = False) -> Path:
        """Checkpoint (rank 0 writes; every rank waits for it, so none runs ahead of a save);
        ``pin``: never pruned (a trunk's fork points). Raises :class:`training.stop.Abandoned`,
        saving nothing, when ``should_stop`` says so."""
        check_abandoned(self.should_stop, self.step, self.dist, self.device)
        path = checkpoint.checkpoint_dir(self.run_dir) / (
            checkpoint.FINAL if final else f"step_{self.step:08d}.pt"
        )
        if self.dist.main:
            keep = int(self.cfg.train.keep_checkpoints)
            path = checkpoint.save(self.run_dir, self.step, {**self.state(final), "pinned": pin}, keep)
        barrier(self.dist)
        return path

    def result(self, path: Path) -> dict[str, Any]:
        """What :func:`training.train.train` returns once ``path`` (``final.pt``) is saved."""
        return {
            "skipped": False,
            "checkpoint": str(path),
            "step": self.step,
            "samples_seen": self.samples_seen,
            "loss": self.loss,
            "seconds": self.seconds(),
            "resumed_from": self.resumed_from,
            "forked_from": str(self.forked_from) if self.forked_from is not None else None,
        }


def finished(run_dir: Path) -> dict[str, Any] | None:
    """The result of a run whose ``final.pt`` is complete (from its marker), else None."""
    done = checkpoint.final(run_dir)
    if done is None:
        return None
    record = checkpoint.read_marker(done)
    return {"checkpoint": str(done), **{k: record.get(k) for k in RESULT_KEYS}, "skipped": True}


def newest(run_dir: Path) -> Path:
    """The run's newest complete checkpoint; FileNotFoundError when it has none."""
    path = checkpoint.latest(run_dir)
    if path is None:
        raise FileNotFoundError(f"no complete checkpoint in {checkpoint.checkpoint_dir(run_dir)}")
    return path


def resume(run: Run) -> None:
    """Load the newest complete checkpoint of the run, if any, into ``run``.

    A branch without a checkpoint of its own starts from its trunk's newest complete checkpoint
    at or before its fork step (model, optimizer, scaler, RNG, step: the data stream continues
    as in a straight run), and trains from there. Raises ValueError when it is of another
    architecture or global batch. The RNG states are restored in a one-process run only (the
    saved ones are rank 0's).
    """
    path = checkpoint.latest(run.run_dir)
    if path is None and run.branch is not None:
        path = checkpoint.latest(run.branch.trunk_dir, at_most=run.branch.fork)
        run.forked_from = path
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
    if run.dist.world == 1:
        checkpoint.set_rng_state(state["rng"])
    run.step, run.loss = int(state["step"]), float(state["loss"])
    # Checkpoints of older versions may lack these keys.
    run.nonfinite = int(state.get("nonfinite_skipped", 0))
    run.skips.closed = [int(x) for x in state["data"].get("skipped_before_segment", [0, 0])]
    run.seconds_before, run.resumed_from = float(state["seconds"]), run.step
    log.info("resuming %s from step %d (%s)", run.run_dir.name, run.step, path.name)
