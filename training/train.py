"""Training stage: one grid point, trained with open_clip_train's recipe to ``samples.seen`` pairs.

The components, one module each: :mod:`training.step` (optimizer, loss, one optimizer step),
:mod:`training.data` (the webdataset stream, cut into seeded segments),
:mod:`training.distributed` (device, process group, rank checks), :mod:`training.stop`
(SIGTERM/SIGUSR2), :mod:`training.state` (the run's state, checkpoint contents, resume),
:mod:`training.metrics` (the training log), :mod:`training.report` (TensorBoard and W&B) and
:mod:`training.loop` (the steps and what follows each). This module puts them together.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from core.steps import Steps
from training import data, distributed, models, report, state, step
from training.distributed import Dist, weights_digest  # noqa: F401  # tests/test_slurm.py
from training.loop import EvaluateCheckpoint, run_loop
from training.report import Reporter
from training.schedule import Branch, Trunk
from training.state import Run
from training.stop import ShouldStop, StopFlag


def make_plan(cfg: DictConfig, world: int = 1, trunk: Trunk | None = None) -> Steps:
    """Optimizer steps and gradient accumulation of ``cfg`` on ``world`` processes (a trunk
    segment: up to ``trunk.until``); ValueError on an impossible batch (see
    :class:`core.steps.Steps`)."""
    seen, batch = int(cfg.samples.seen), int(cfg.model.global_batch)
    if trunk is not None:
        seen = trunk.until * batch
    return Steps(seen, batch, int(cfg.model.local_batch), world).check()


def train(
    cfg: DictConfig,
    run_dir: str | Path,
    evaluate_checkpoint: EvaluateCheckpoint | None = None,
    reporter: Reporter | None = None,
    *,
    trunk: Trunk | None = None,
    branch: Branch | None = None,
    should_stop: ShouldStop | None = None,
) -> dict[str, Any]:
    """Train one grid point to ``cfg.samples.seen`` pairs in ``run_dir``; resumable.

    Steps = ceil(samples.seen / model.global_batch), each over ``global_batch // (processes x
    local_batch)`` micro-batches of ``model.local_batch`` per process (DDP when torch.distributed's
    variables are set, :mod:`training.distributed`). A relaunch resumes from the newest
    complete checkpoint (model, optimizer, step, RNG; the data stream continues exactly where
    the checkpoint was taken). When ``checkpoints/final.pt`` is already complete, nothing is
    trained and its record is returned.

    With ``train.zeroshot_every`` = M > 0, rank 0 calls ``evaluate_checkpoint(path, step)``
    every M steps but the last, on a complete checkpoint of that step (the learning curve); the
    run's weights do not depend on it. Required then: ValueError without it. The records it
    returns are reported with the training scalars.

    ``reporter`` (:mod:`training.report`) gets every training log line and those records;
    default: one built from ``train.report_to`` on rank 0, closed when training stops. A given
    one is told where the run resumed (:meth:`~training.report.Reporter.start`) and left open.

    Returns ``{"checkpoint": path of final.pt, "step", "samples_seen" (= step x global batch),
    "loss": loss of the last finite step, "seconds": training wall-clock summed over attempts,
    "resumed_from": step of the last resume or None, "skipped": True when it had finished}``,
    plus ``"ranks"`` (:func:`training.distributed.rank_report`) with several processes.

    Raises :class:`core.errors.Preempted` after checkpointing when SIGTERM or SIGUSR2 arrived,
    and :class:`core.errors.NonFiniteLoss` after ``train.max_nonfinite`` non-finite losses in
    a row (a non-finite loss skips its step's update).

    ``should_stop`` (:class:`training.stop.ShouldStop`; rank 0's, the others pass None) is asked
    after every step and before every save: once it gives a reason (the run's lease was taken
    over, another process owns the folder), training stops at once and raises
    :class:`training.stop.Abandoned`, writing no checkpoint and no final weights.

    ``train.schedule=const_cooldown`` (:mod:`training.schedule`): with ``trunk``, ``run_dir`` is
    the points' shared trunk, trained at constant LR up to ``trunk.until`` from its newest
    checkpoint (none later: nothing is trained), pinning a checkpoint at every ``trunk.keep``
    step and at the end, never writing ``final.pt`` (a later launch extends it); no
    learning-curve evaluation. With ``branch``, a run without a checkpoint of its own starts
    from the trunk's checkpoint at ``branch.fork`` (or the newest one before it) and cools down;
    the result then names it (``forked_from``).
    """
    if trunk is not None:
        return _train_trunk(cfg, Path(run_dir), trunk, should_stop)
    if cfg.train.zeroshot_every > 0 and evaluate_checkpoint is None:
        raise ValueError(
            f"train.zeroshot_every={cfg.train.zeroshot_every} needs an evaluate_checkpoint "
            "callback: pass train(..., evaluate_checkpoint=...) or set train.zeroshot_every=0"
        )
    run_dir = Path(run_dir)
    done = state.finished(run_dir)
    if done is not None:
        return done
    dist_ = distributed.init_distributed("cuda" if torch.cuda.is_available() else "cpu")
    reporting: contextlib.AbstractContextManager[Reporter] = (
        contextlib.nullcontext(reporter)
        if reporter is not None
        else report.for_run(cfg, run_dir, main=dist_.main)
    )
    with StopFlag() as stop, reporting as reporter_:
        run, preprocess, tokenizer = _build(cfg, run_dir, dist_, branch=branch)
        run.should_stop = should_stop
        reporter_.start(run.samples_seen)
        if run.step < run.plan.total_steps:
            run_loop(run, preprocess, tokenizer, stop, evaluate_checkpoint, reporter_)
        out = run.result(run.save(final=True))
        if dist_.world > 1:
            out["ranks"] = distributed.rank_report(step.unwrap(run.model).state_dict())
        return out


def _train_trunk(cfg: DictConfig, run_dir: Path, trunk: Trunk,
                 should_stop: ShouldStop | None) -> dict[str, Any]:
    """A trunk segment (see :func:`train`): returns the result of its newest checkpoint."""
    dist_ = distributed.init_distributed("cuda" if torch.cuda.is_available() else "cpu")
    with StopFlag() as stop, report.for_run(cfg, run_dir, main=dist_.main) as reporter_:
        run, preprocess, tokenizer = _build(cfg, run_dir, dist_, trunk=trunk)
        run.should_stop = should_stop
        reporter_.start(run.samples_seen)
        if run.step >= trunk.until:  # trained that far already
            out = run.result(state.newest(run_dir))
            return {**out, "skipped": True}
        run_loop(run, preprocess, tokenizer, stop, None, reporter_)
        return run.result(run.save(final=False, pin=True))


def _build(cfg: DictConfig, run_dir: Path, dist_: Dist, trunk: Trunk | None = None,
           branch: Branch | None = None) -> tuple[Run, Any, Any]:
    """Model, optimizer and the run's state, resumed from its newest checkpoint if any (a
    branch's first attempt: from its trunk's)."""
    plan = make_plan(cfg, dist_.world, trunk)
    # Fail in a second, before building the model.
    data.check_shards(cfg.data.shards, cfg.data.shard_weights)
    device = distributed.pick_device()
    models.seed_everything(int(cfg.train.seed))  # the same initial weights on every rank
    model, preprocess, _, tokenizer = models.create_model(
        cfg.model.arch, cfg.model.precision, device
    )
    if cfg.model.grad_checkpointing:
        model.set_grad_checkpointing(True)
    optimizer = step.make_optimizer(model, cfg.train)
    scaler = step.make_scaler(cfg.model.precision, device)
    run = Run(cfg, run_dir, plan, device, model, optimizer, scaler, dist_, trunk=trunk, branch=branch)
    state.resume(run)
    run.model = distributed.wrap(model, dist_, device)
    if cfg.train.compile:
        run.model = torch.compile(run.model)
    return run, preprocess, tokenizer
