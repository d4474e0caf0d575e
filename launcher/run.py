"""One grid point, end to end: run folder -> data -> training -> evaluation -> done.

``run_point`` is the task function every launcher calls (in this process for ``cluster=local``,
on a compute node under SLURM). It is safe to call again at any time: a done point returns at
once, a partial one resumes from its newest checkpoint, and evaluation skips records it has.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from omegaconf import DictConfig

from launcher import rundir
from launcher.plan import check, make_point

log = logging.getLogger(__name__)


_requeueing = False  # set by the SLURM launcher's checkpoint(): submitit then exits to requeue


def mark_requeueing() -> None:
    """Called when SLURM signalled the time limit or preemption and submitit requeues the job:
    the ``SystemExit`` that follows is logged as ``requeued``, not ``failed``."""
    global _requeueing
    _requeueing = True


def _slurm_job() -> dict[str, str]:
    """``{"job_id": ...}`` under SLURM (``123_4`` for an array task, as squeue shows it)."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID"):
        return {"job_id": f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"}
    return {"job_id": env["SLURM_JOB_ID"]} if env.get("SLURM_JOB_ID") else {}


def run_point(cfg: DictConfig, overrides: list[str] | None = None) -> dict[str, Any]:
    """Train and evaluate the point ``cfg`` describes (``cfg.stage``: both, or one of them);
    returns a summary dict.

    In a job of several processes (``RANK`` set: a multi-node SLURM job, torchrun) every rank
    trains; rank 0 alone writes the run folder's log and evaluates.
    """
    point = make_point(overrides or [], cfg)
    check(point)  # stage among them
    stage = str(cfg.get("stage", "all"))
    if int(os.environ.get("RANK", 0)) != 0:
        return _follower(cfg, point.run_dir, stage)
    path = rundir.prepare(cfg)
    if point.state == "done":
        log.info("%s: done already, skipped", point.run_id)
        return {"run_id": point.run_id, "state": "done", "skipped": True}
    if stage == "eval" and not rundir.training_finished(path):
        raise RuntimeError(f"{point.run_id}: stage=eval, but its training has not finished "
                           f"(state {point.state}); relaunch the point to train it first")
    rundir.log_event(path, "start", previous_state=point.state, stage=stage, **_slurm_job())
    tic = time.time()
    result: dict[str, Any] = {}
    try:
        import synthetic
        from evaluation.evaluate import evaluate
        from training import checkpoint
        from training.train import train

        synthetic.ensure_datasets(cfg, eval_only=stage == "eval")
        if stage != "eval":
            result = train(cfg, path)
            if not result.get("skipped") or not rundir.training_finished(path):
                rundir.log_event(path, "trained", step=result["step"],
                                 samples_seen=result["samples_seen"], loss=result["loss"],
                                 seconds=round(result["seconds"] or 0, 1),
                                 ranks=result.get("ranks"))
            if stage == "train" and len(cfg.eval.datasets):
                log.info("%s: trained; evaluation follows in its own job", point.run_id)
                return {"run_id": point.run_id, "state": "trained", "skipped": False, **result}
            final, step = result["checkpoint"], int(result["step"])
        else:
            final = checkpoint.final(path)
            if final is None:
                raise RuntimeError(f"{point.run_id}: stage=eval: no complete final checkpoint in "
                                   f"{path / 'checkpoints'}")
            step = int(checkpoint.read_marker(final)["step"])
        records = evaluate(cfg, path, str(final), step=step, final=True)
        rundir.log_event(path, "evaluated", records=len(records))
    except BaseException as e:  # KeyboardInterrupt and SIGTERM too: the log must say why it stopped
        if isinstance(e, SystemExit) and _requeueing:
            rundir.log_event(path, "requeued", stage=stage, **_slurm_job())
            log.warning("%s: requeued; resumes from its newest checkpoint", point.run_id)
            raise
        if type(e).__name__ == "Preempted":  # the trainer saved a checkpoint on SIGTERM/SIGUSR2
            if rundir.state(path) == "cancelled":  # scancel's SIGTERM: stop, do not requeue
                log.warning("%s: cancelled; stopped at a checkpoint: %s", point.run_id, e)
                raise Cancelled(str(e)) from None
            rundir.log_event(path, "preempted", step=getattr(e, "step", None), stage=stage,
                             **_slurm_job())
            log.warning("%s: preempted: %s", point.run_id, e)
            raise
        line = f"{type(e).__name__}: {e}".splitlines()[0][:500]
        rundir.log_event(path, "failed", error=line, stage=stage)
        log.error("%s: failed: %s", point.run_id, line)
        raise
    rundir.log_event(path, "done", seconds=round(time.time() - tic, 1))
    log.info("%s: done in %.0f s", point.run_id, time.time() - tic)
    return {"run_id": point.run_id, "state": "done", "skipped": False, **result}


class Cancelled(RuntimeError):
    """The point was cancelled (``python -m launcher.slurm cancel``) while its job ran."""


def _follower(cfg: DictConfig, path: Any, stage: str) -> dict[str, Any]:
    """Rank > 0 of a multi-process job: train alongside rank 0, write nothing of the run's own."""
    if stage == "eval":
        raise RuntimeError("stage=eval runs as one process; this job has several (RANK > 0)")
    import synthetic
    from training.train import train

    synthetic.ensure_datasets(cfg)
    result = train(cfg, path)
    return {"run_id": path.name, "state": "trained", "rank": int(os.environ["RANK"]), **result}
