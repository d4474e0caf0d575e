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
    """Train and evaluate the point ``cfg`` describes; returns a summary dict."""
    point = make_point(overrides or [], cfg)
    check(point)
    path = rundir.prepare(cfg)
    if point.state == "done":
        log.info("%s: done already, skipped", point.run_id)
        return {"run_id": point.run_id, "state": "done", "skipped": True}
    rundir.log_event(path, "start", previous_state=point.state, **_slurm_job())
    tic = time.time()
    try:
        from evaluation.evaluate import evaluate
        from training import synthetic
        from training.train import train

        synthetic.ensure_datasets(cfg)
        result = train(cfg, path)
        rundir.log_event(path, "trained", step=result["step"], samples_seen=result["samples_seen"],
                         loss=result["loss"], seconds=round(result["seconds"], 1))
        records = evaluate(cfg, path, result["checkpoint"], step=result["step"], final=True)
        rundir.log_event(path, "evaluated", records=len(records))
    except BaseException as e:  # KeyboardInterrupt and SIGTERM too: the log must say why it stopped
        if isinstance(e, SystemExit) and _requeueing:
            rundir.log_event(path, "requeued", **_slurm_job())
            log.warning("%s: requeued; resumes from its newest checkpoint", point.run_id)
            raise
        if type(e).__name__ == "Preempted":  # the trainer saved a checkpoint on SIGTERM/SIGUSR2
            rundir.log_event(path, "preempted", step=getattr(e, "step", None), **_slurm_job())
            log.warning("%s: preempted: %s", point.run_id, e)
            raise
        line = f"{type(e).__name__}: {e}".splitlines()[0][:500]
        rundir.log_event(path, "failed", error=line)
        log.error("%s: failed: %s", point.run_id, line)
        raise
    rundir.log_event(path, "done", seconds=round(time.time() - tic, 1))
    log.info("%s: done in %.0f s", point.run_id, time.time() - tic)
    return {"run_id": point.run_id, "state": "done", "skipped": False, **result}
