"""One grid point, end to end: run folder -> data -> training -> evaluation -> done.

``run_point`` is the task function every launcher calls (in this process for ``cluster=local``,
on a compute node under SLURM). It is safe to call again at any time: a done point returns at
once, a partial one resumes from its newest checkpoint, and evaluation skips records it has.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from core.atomic import atomic_write_json, atomic_write_text
from core.errors import Cancelled, Preempted
from core.identity import trunk_id, trunk_identity
from core.schema import Stage
from core.states import Event, PointResult, RunState
from launcher import rundir, slurm
from launcher.lease import RUN_LEASE, Lease, LeaseHeld, LeaseLost, Takeover
from launcher.plan import Point, branch_fork, check, is_branch, make_point, trunk_progress

log = logging.getLogger(__name__)


def slurm_job() -> dict[str, str]:
    """``{"job_id": ...}`` under SLURM (``123_4`` for an array task, as squeue shows it)."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID"):
        return {"job_id": f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"}
    return {"job_id": env["SLURM_JOB_ID"]} if env.get("SLURM_JOB_ID") else {}


def run_point(cfg: DictConfig, overrides: list[str] | None = None) -> dict[str, Any]:
    """Train and evaluate the point ``cfg`` describes (``cfg.stage``: both, or one of them);
    returns a summary dict.

    The process holds the run's lease (``launcher.lease``) while it works: a point held by a
    live process elsewhere is skipped (``"state": PointResult.HELD``), or waited for
    (``lease.wait_s``); a stale lease is taken over and the takeover logged. A lease of a SLURM
    job that squeue no longer shows is stale at once, whoever asks (a local launch too). A
    holder whose lease is taken over (it stalled past ``lease.stale_after_s``) stops without
    writing anything more, logs ``lease_lost`` and exits with status 1 (:class:`LeaseLost`,
    one line naming the new holder). In a job of several processes
    (``RANK`` set: a multi-node SLURM job, torchrun) every rank trains; rank 0 alone holds the
    lease, writes the run folder's log and evaluates.
    """
    point = make_point(overrides or [], cfg)
    check(point)
    stage = Stage(cfg.stage)
    if int(os.environ.get("RANK", 0)) != 0:
        return _follower(cfg, point.run_dir, stage)
    if point.state == RunState.DONE:
        log.info("%s: done already, skipped", point.run_id)
        return {"run_id": point.run_id, "state": PointResult.DONE, "skipped": True}
    job = slurm_job()
    lease = Lease(point.run_dir / RUN_LEASE, f"stage={stage}", job_id=job.get("job_id"),
                  heartbeat_s=cfg.lease.heartbeat_s, stale_after_s=cfg.lease.stale_after_s,
                  queue=_queue)  # asked only about a lease that names a job on another host
    try:
        with lease.hold(wait_s=cfg.lease.wait_s) as takeover:
            return _run_held(cfg, point, stage, lease, takeover)
    except LeaseHeld as e:
        log.warning("%s: skipped: %s", point.run_id, e)
        return {"run_id": point.run_id, "state": PointResult.HELD, "skipped": True,
                "held_by": str(e)}


def _queue() -> set[str]:
    return set(slurm.queue())


def _guard(lease: Lease) -> None:
    """Raise :class:`LeaseLost` once another process took the lease over: from then on nothing
    more is written into the run folder (it looks at the lease file now: a write follows)."""
    reason = lease.lost_reason(fresh=True)
    if reason is not None:
        raise LeaseLost(f"{reason}; stopped without saving")


def _run_held(cfg: DictConfig, point: Point, stage: Stage, lease: Lease,
              takeover: Takeover | None) -> dict[str, Any]:
    """The point's work, under its lease."""
    path = _prepare_trunk(cfg, point.run_dir) if point.trunk_until else rundir.prepare(cfg)
    if takeover is not None:
        previous = asdict(takeover.previous) if takeover.previous else None
        rundir.log_event(path, Event.LEASE_TAKEN_OVER, previous=previous, reason=takeover.reason)
        log.warning("%s: took over a stale lease: %s", point.run_id, takeover.reason)
    if point.trunk_until:
        return _run_segment(cfg, point, path, lease)
    state = rundir.state(path)  # again, under the lease: the previous holder may have finished
    if state == RunState.DONE:
        log.info("%s: done already, skipped", point.run_id)
        return {"run_id": point.run_id, "state": PointResult.DONE, "skipped": True}
    if stage == Stage.eval and not rundir.training_finished(path):
        raise RuntimeError(f"{point.run_id}: stage=eval, but its training has not finished "
                           f"(state {state}); relaunch the point to train it first")
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", 0) or 0)
    if restarts and _last_event(path) not in (Event.REQUEUED, Event.PREEMPTED):
        # SLURM requeued the job itself (a node failed under it, say): the log says so
        rundir.log_event(path, Event.REQUEUED, by="slurm", restart_count=restarts, stage=stage,
                         **slurm_job())
    rundir.log_event(path, Event.START, previous_state=state, stage=stage, **_trunk_of(cfg, path),
                     **slurm_job())
    tic = time.time()
    result: dict[str, Any] = {}
    spent: dict[str, float] = {}  # wall seconds of each part, in the done event
    try:
        with _timed(spent, "seconds_data"):
            import synthetic  # the stages import torch: kept off the plan's and status's path

            synthetic.ensure_datasets(cfg, eval_only=stage == Stage.eval)
        if stage != Stage.eval:
            with _timed(spent, "seconds_train"):
                result = _train(cfg, path, lease)
            if stage == Stage.train and len(cfg.eval.datasets):
                log.info("%s: trained; evaluation follows in its own job", point.run_id)
                return {"run_id": point.run_id, "state": PointResult.TRAINED, "skipped": False,
                        **result}
        with _timed(spent, "seconds_eval"):
            _evaluate_final(cfg, point, path, lease)
        _guard(lease)
    except BaseException as e:  # KeyboardInterrupt and SIGTERM too: the log must say why it stopped
        _log_stop(point, path, stage, e)
        raise
    rundir.log_event(path, Event.DONE, seconds=round(time.time() - tic, 1), **spent)
    log.info("%s: done in %.0f s", point.run_id, time.time() - tic)
    return {"run_id": point.run_id, "state": PointResult.DONE, "skipped": False, **result}


@contextlib.contextmanager
def _timed(spent: dict[str, float], key: str) -> Iterator[None]:
    """Add the block's wall seconds to ``spent[key]`` (the first point's imports included)."""
    began = time.perf_counter()
    try:
        yield
    finally:
        spent[key] = round(spent.get(key, 0.0) + time.perf_counter() - began, 2)


def _prepare_trunk(cfg: DictConfig, path: Path) -> Path:
    """The trunk's folder with the latest segment's config and, once, its meta.json."""
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    if not (path / "meta.json").exists():
        atomic_write_json(path / "meta.json", {
            "run_id": path.name, "trunk": True, "identity": trunk_identity(cfg),
            "git_commit": rundir.git_commit(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })
    return path


def _trunk_of(cfg: DictConfig, path: Path) -> dict[str, Any]:
    """``{"trunk", "fork_step"}`` of a branch ({} otherwise), also written into its meta.json."""
    if not is_branch(cfg):
        return {}
    out = {"trunk": trunk_id(cfg), "fork_step": branch_fork(cfg)}
    meta = json.loads((path / "meta.json").read_text())
    if meta.get("trunk") != out["trunk"]:
        atomic_write_json(path / "meta.json", {**meta, **out})
    return out


def _role(cfg: DictConfig) -> dict[str, Any]:
    """``train``'s ``trunk=`` (a trunk segment) or ``branch=`` (a const_cooldown point)."""
    from training.schedule import Branch, Trunk, keep_steps  # torch: kept off the plan's path

    until = int(cfg.train.trunk_until)
    if until:
        every, batch = int(cfg.train.fork_every), int(cfg.model.global_batch)
        keep = keep_steps([until], until, max(every // batch, 1) if every > 0 else 0)
        return {"trunk": Trunk(until, keep)}
    if is_branch(cfg):
        return {"branch": Branch(rundir.root_dir(str(cfg.root)) / trunk_id(cfg), branch_fork(cfg))}
    return {}


def _run_segment(cfg: DictConfig, point: Point, path: Path, lease: Lease) -> dict[str, Any]:
    """Train the trunk to ``train.trunk_until`` (nothing when it is there already), pinning a
    checkpoint there and every ``train.fork_every`` samples; ``start`` and ``trained`` go to
    the trunk's status log."""
    until = point.trunk_until
    if trunk_progress(path) >= until:
        log.info("%s: trained to step %d already, skipped", point.run_id, until)
        return {"run_id": point.run_id, "state": PointResult.DONE, "skipped": True}
    rundir.log_event(path, Event.START, stage=Stage.train, trunk_until=until, **slurm_job())
    spent: dict[str, float] = {}
    try:
        with _timed(spent, "seconds_data"):
            import synthetic  # torch: kept off the plan's path

            synthetic.ensure_datasets(cfg)
        with _timed(spent, "seconds_train"):
            result = _train_guarded(cfg, path, lease, **_role(cfg))
        _guard(lease)
    except BaseException as e:
        _log_stop(point, path, Stage.train, e)
        raise
    rundir.log_event(path, Event.TRAINED, step=result["step"], samples_seen=result["samples_seen"],
                     loss=result["loss"], seconds=round(result["seconds"] or 0, 1),
                     resumed_from=result["resumed_from"], **spent)
    return {"run_id": point.run_id, "state": PointResult.DONE, "skipped": False, **result}


def _train_guarded(cfg: DictConfig, path: Path, lease: Lease, **kwargs: Any) -> dict[str, Any]:
    """``training.train.train`` under ``lease``: it stops, saving nothing, once the lease is
    lost (:class:`LeaseLost`)."""
    # torch: kept off the plan's path
    from training.stop import Abandoned
    from training.train import train

    try:
        return train(cfg, path, should_stop=lease.lost_reason, **kwargs)
    except Abandoned as e:
        raise LeaseLost(f"{e.reason}; stopped at step {e.step} without saving") from None


def _train(cfg: DictConfig, path: Path, lease: Lease) -> dict[str, Any]:
    """Train (or find trained) and log ``trained`` once; with ``train.zeroshot_every`` the
    trainer calls back into evaluation at those steps (records with ``final: false``) and
    reports the records to ``train.report_to`` with its own scalars."""
    from evaluation.evaluate import evaluate  # torch: kept off the plan's path

    def learning_curve(ckpt: Path, step: int) -> list[dict[str, Any]]:
        _guard(lease)
        return evaluate(cfg, path, ckpt, step=step, final=False)

    result = _train_guarded(cfg, path, lease, evaluate_checkpoint=learning_curve, **_role(cfg))
    _guard(lease)
    if not result.get("skipped") or not rundir.training_finished(path):
        forked = {"forked_from": result["forked_from"]} if result.get("forked_from") else {}
        rundir.log_event(path, Event.TRAINED, step=result["step"],
                         samples_seen=result["samples_seen"], loss=result["loss"],
                         seconds=round(result["seconds"] or 0, 1), ranks=result.get("ranks"),
                         **forked)
    return result


def _evaluate_final(cfg: DictConfig, point: Point, path: Path, lease: Lease) -> None:
    """Evaluate the complete final checkpoint, report its records (``train.report_to``: the
    same TensorBoard folder and W&B run as the training's) and log ``evaluated``."""
    # torch: kept off the plan's path
    from evaluation.evaluate import evaluate
    from training import checkpoint, report

    final = checkpoint.final(path)
    if final is None:
        raise RuntimeError(f"{point.run_id}: no complete final checkpoint in "
                           f"{path / 'checkpoints'} to evaluate")
    step = int(checkpoint.read_marker(final)["step"])
    _guard(lease)  # evaluate writes records: not once another process owns the folder
    records = evaluate(cfg, path, str(final), step=step, final=True)
    with report.for_run(cfg, path) as reporter:
        reporter.records(records)
    _guard(lease)
    rundir.log_event(path, Event.EVALUATED, records=len(records))


def _log_stop(point: Point, path: Path, stage: Stage, e: BaseException) -> None:
    """Log why the attempt stopped; raise :class:`Cancelled` for a cancelled point's stop."""
    if isinstance(e, LeaseLost):  # another process owns the folder: one line in its log, no more
        rundir.log_event(path, Event.LEASE_LOST, reason=e.message, stage=stage, **slurm_job())
        log.error("%s: %s", point.run_id, e.message)
        return
    if isinstance(e, SystemExit) and _last_event(path) == Event.REQUEUED:
        # submitit requeues the job and exits; the SLURM launcher's checkpoint() logged it
        log.warning("%s: requeued; resumes from its newest checkpoint", point.run_id)
        return
    if isinstance(e, Preempted):  # the trainer saved a checkpoint on SIGTERM/SIGUSR2
        if rundir.state(path) == RunState.CANCELLED:  # scancel's SIGTERM: stop, do not requeue
            log.warning("%s: cancelled; stopped at a checkpoint: %s", point.run_id, e)
            raise Cancelled(str(e)) from None
        rundir.log_event(path, Event.PREEMPTED, step=e.step, stage=stage, **slurm_job())
        log.warning("%s: preempted: %s", point.run_id, e)
        return
    line = f"{type(e).__name__}: {e}".splitlines()[0][:500]
    extra = {"cause": "lost a peer rank (a node failed?)"} if _peer_lost(e) else {}
    rundir.log_event(path, Event.FAILED, error=line, stage=stage, **extra, **slurm_job())
    log.error("%s: failed: %s", point.run_id, line)


PEER_LOST = ("Connection reset by peer", "Connection closed by peer", "Broken pipe",
             "NCCL communicator was aborted", "Socket Timeout")
"""What gloo and NCCL say on a rank when another rank's node died under a multi-node job."""


def _peer_lost(e: BaseException) -> bool:
    """True for a collective that failed because another rank vanished (SLURM then usually
    requeues the job itself: status shows what SLURM says, see ``launcher.slurm.live_state``)."""
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return False
    return any(text in str(e) for text in PEER_LOST)


def _last_event(path: Path) -> str | None:
    evs = rundir.events(path)
    return evs[-1].get("event") if evs else None


def _rank0_only(checkpoint: Path, step: int) -> None:
    raise AssertionError("the trainer evaluates on rank 0 only")


def _follower(cfg: DictConfig, path: Path, stage: Stage) -> dict[str, Any]:
    """Rank > 0 of a multi-process job: train alongside rank 0, write nothing of the run's own."""
    if stage == Stage.eval:
        raise RuntimeError("stage=eval runs as one process; this job has several (RANK > 0)")
    # torch: kept off the plan's path
    import synthetic
    from training.train import train

    synthetic.ensure_datasets(cfg)
    result = train(cfg, path, evaluate_checkpoint=_rank0_only, **_role(cfg))
    return {"run_id": path.name, "state": PointResult.TRAINED, "rank": int(os.environ["RANK"]), **result}
