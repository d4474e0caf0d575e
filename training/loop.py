"""The training loop: steps from ``run.step`` to the last, and what follows each step (a log
line, a stop on SIGTERM/SIGUSR2, a periodic checkpoint, a learning-curve evaluation).

The learning rate (:mod:`training.schedule`) is open_clip_train's ``cosine_lr`` (linear
warm-up over ``train.warmup`` steps, then cosine decay) or, with
``train.schedule=const_cooldown``, constant after the warm-up with a cooldown at the end (none
in a trunk), stepped per optimizer step. A trunk also keeps a checkpoint at each of its fork
steps (never pruned).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from open_clip_train.precision import get_autocast

from core.errors import NonFiniteLoss, Preempted
from training import checkpoint, data, metrics, schedule, step
from training.distributed import barrier
from training.report import Reporter
from training.state import Run
from training.stop import StopFlag

log = logging.getLogger(__name__)

EvaluateCheckpoint = Callable[[Path, int], Sequence[Mapping[str, Any]] | None]
"""``evaluate_checkpoint(checkpoint_path, step)``: the caller's evaluation of a checkpoint; the
evaluation records it returns (if any) go to the run's reporter."""


def run_loop(
    run: Run,
    preprocess: Any,
    tokenizer: Any,
    stop: StopFlag,
    evaluate_checkpoint: EvaluateCheckpoint | None,
    reporter: Reporter | None = None,
) -> None:
    """Train from ``run.step`` to the plan's last step, logging (to ``reporter`` too) and
    checkpointing on the way."""
    cfg, t = run.cfg, run.cfg.train
    scheduler = schedule.make_lr(run.optimizer, t, run.plan.total_steps, trunk=run.trunk is not None)
    autocast = get_autocast(cfg.model.precision, device_type=run.device.type)
    loss_fn = step.make_loss(run.dist)
    meter = metrics.Meter(
        run.step, metrics.flops_per_sample(cfg), metrics.peak_flops(cfg, run.device)
    )
    batches = data.step_batches(
        cfg, run.plan, run.step, run.dist.rank, run.device, preprocess, tokenizer, run.skips
    )
    bar = metrics.progress(run)
    in_a_row = 0
    run.model.train()
    try:
        while run.step < run.plan.total_steps:
            lr = scheduler(run.step)
            loss = float(
                step.train_step(
                    run.model, run.optimizer, run.scaler, loss_fn, next(batches), autocast
                )
            )
            run.step += 1
            in_a_row = _count_nonfinite(run, loss, in_a_row)
            _observe(run, meter, bar, loss, lr)
            _after_step(run, meter, lr, in_a_row, stop, evaluate_checkpoint, reporter)
    finally:
        batches.close()  # shuts the loader's worker processes down
        if bar is not None:
            bar.close()


def _count_nonfinite(run: Run, loss: float, in_a_row: int) -> int:
    """Non-finite losses in a row up to this step; raise NonFiniteLoss at ``train.max_nonfinite``.

    A finite loss becomes the run's loss; a non-finite one (its update was skipped) is counted.
    """
    if math.isfinite(loss):
        run.loss = loss
        return 0
    in_a_row += 1
    run.nonfinite += 1
    log.warning(
        "%s step %d: loss %s, update skipped (%d in a row)",
        run.run_dir.name,
        run.step,
        loss,
        in_a_row,
    )
    limit = int(run.cfg.train.max_nonfinite)
    if in_a_row >= limit:
        raise NonFiniteLoss(
            f"{in_a_row} non-finite losses in a row up to step {run.step} "
            f"(train.max_nonfinite={limit}); last good checkpoint: "
            f"{checkpoint.latest(run.run_dir)}"
        )
    return in_a_row


def _observe(run: Run, meter: metrics.Meter, bar: Any, loss: float, lr: float) -> None:
    """Feed the step's loss to the meter (warning on a spike) and to the progress bar."""
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


def _every(step_: int, n: int) -> bool:
    return n > 0 and step_ % n == 0


def _after_step(
    run: Run,
    meter: metrics.Meter,
    lr: float,
    in_a_row: int,
    stop: StopFlag,
    evaluate_checkpoint: EvaluateCheckpoint | None,
    reporter: Reporter | None,
) -> None:
    """Stop at once, saving nothing, when ``run.should_stop`` says so (raise Abandoned); log;
    then, unless it was the last step: stop (checkpoint, raise Preempted) when asked,
    checkpoint every ``train.checkpoint_every`` steps (not after a non-finite loss), evaluate
    every ``train.zeroshot_every`` steps."""
    t = run.cfg.train
    signalled = stop.requested(run.dist, run.device, run.should_stop, run.step)  # may abandon
    last = run.step == run.plan.total_steps
    if run.dist.main and (last or run.step % max(int(t.log_every), 1) == 0):
        metrics.write(run, meter.line(run, lr), reporter)
    if last:
        return
    if signalled:
        path = run.save(final=False)
        raise Preempted(run.step, path, stop.signum or 0)
    saved = None
    if run.trunk is not None and run.step in run.trunk.keep:
        saved = run.save(final=False, pin=True)  # a fork point: kept for its branches
    elif in_a_row == 0 and _every(run.step, int(t.checkpoint_every)):
        saved = run.save(final=False)
    if evaluate_checkpoint is not None and _every(run.step, int(t.zeroshot_every)):
        began = time.perf_counter()
        _evaluate(run, saved, in_a_row, evaluate_checkpoint, reporter)
        meter.pause(time.perf_counter() - began)  # not training throughput


def _evaluate(
    run: Run,
    saved: Path | None,
    in_a_row: int,
    evaluate_checkpoint: EvaluateCheckpoint,
    reporter: Reporter | None,
) -> None:
    """``evaluate_checkpoint(path, step)`` on this step's checkpoint (the learning curve); the
    records it returns go to ``reporter``.

    The step is checkpointed first when it is not a checkpoint step (``keep_checkpoints`` may
    prune it later). Rank 0 evaluates while the others wait. An evaluation may draw from the
    RNGs (building a model does), so every RNG state is restored afterwards and the model put
    back in train mode: the run's batches and weights do not depend on ``train.zeroshot_every``.
    Skipped after a non-finite loss (the weights are those of an earlier step).
    """
    if in_a_row:
        log.warning(
            "%s step %d: zero-shot evaluation skipped (non-finite loss)", run.run_dir.name, run.step
        )
        return
    path = saved if saved is not None else run.save(final=False)
    if run.dist.main:
        rng = checkpoint.rng_state()
        try:
            records = evaluate_checkpoint(path, run.step)
            if records and reporter is not None:
                reporter.records(records)
        finally:
            checkpoint.set_rng_state(rng)
            run.model.train()
    barrier(run.dist)
