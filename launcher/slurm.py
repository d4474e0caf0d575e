"""SLURM side of a sweep: the submission manifest, the queue, accounting, and cancelling.

A point submitted to SLURM is recorded twice, both atomically: a ``submitted`` event with its
job id in the run's ``status.jsonl`` (so the run folder alone says which job owns it), and a
line in the sweep manifest ``<root>/_slurm/<sweep>.json`` (point -> run id -> job id, the view
an operator wants). The queue is read with one ``squeue`` call and, for jobs that left it, one
``sacct`` call, so status over a large sweep stays fast.

    python -m launcher.slurm cancel --root runs [RUN_ID ...]   # cancel a sweep's jobs (all or some)

A trunk's segments share its run folder: each ``submitted`` event there names the segment's
``trunk_until`` (:func:`segment_jobs`), and a branch's names its ``trunk`` (:func:`trunk_of`), so
cancelling a trunk finds its queued segments and every branch that waits for it.
"""

from __future__ import annotations

import argparse
import getpass
import json
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from core.atomic import atomic_write_json
from core.states import TERMINAL, Event, LiveState, RunState
from launcher import rundir

_P, _Q, _R = LiveState.PENDING, LiveState.REQUEUED, LiveState.RUNNING
ACTIVE = {"PENDING": _P, "CONFIGURING": _P, "REQUEUED": _Q, "REQUEUE_HOLD": _Q, "REQUEUE_FED": _Q,
          "RESV_DEL_HOLD": _P, "RUNNING": _R, "COMPLETING": _R, "SUSPENDED": _R, "STAGE_OUT": _R,
          "SIGNALING": _R, "RESIZING": _R}
"""SLURM states of a job it still holds (squeue's long names) -> what status shows."""
ENDED = {"COMPLETED": LiveState.DONE, "CANCELLED": LiveState.CANCELLED, "FAILED": LiveState.FAILED,
         "TIMEOUT": LiveState.FAILED, "NODE_FAIL": LiveState.FAILED,
         "OUT_OF_MEMORY": LiveState.FAILED, "BOOT_FAIL": LiveState.FAILED,
         "DEADLINE": LiveState.FAILED, "PREEMPTED": LiveState.REQUEUED}
"""SLURM states of a job that ended (sacct) -> what status shows."""


class SlurmError(RuntimeError):
    """SLURM cannot be reached or refused a request; the message is SLURM's own."""


def _run(cmd: list[str], timeout: float = 30) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as e:
        raise SlurmError(f"{cmd[0]} not found: is this a SLURM login node?") from e
    except subprocess.TimeoutExpired as e:
        raise SlurmError(f"{' '.join(cmd)}: no answer in {timeout:.0f} s (slurmctld down?)") from e
    if out.returncode != 0:
        raise SlurmError(f"{' '.join(cmd)}: {(out.stderr or out.stdout).strip()}")
    return out.stdout


def queue() -> dict[str, str]:
    """Job id -> SLURM state of this user's queued and running jobs, array tasks expanded
    (``123_4``). Raises :class:`SlurmError` when slurmctld does not answer."""
    return {j: st for j, (st, _) in queue_detail().items()}


def queue_detail() -> dict[str, tuple[str, str]]:
    """Job id -> (state, squeue's reason: ``Dependency``, ``BeginTime``, ``Resources``,
    ``ReqNodeNotAvail, ...``; ``None`` when it runs), one ``squeue`` call."""
    out = _run(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T|%r"])
    jobs = {}
    for line in out.splitlines():
        jid, st, reason = (line.strip().split("|", 2) + ["", ""])[:3]
        if jid:
            jobs[jid] = (st, reason)
    return jobs


def accounting(job_ids: Iterable[str]) -> dict[str, str]:
    """Job id -> final SLURM state from ``sacct`` (empty when accounting is unavailable)."""
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    try:
        out = _run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(ids)])
    except SlurmError:
        return {}
    jobs = {}
    for line in out.splitlines():
        jid, _, st = line.strip().partition("|")
        if jid:
            jobs[jid] = st.split()[0] if st else st  # "CANCELLED by 0" -> "CANCELLED"
    return jobs


DEFAULT_MAX_ARRAY_SIZE = 1001
"""SLURM's default ``MaxArraySize``: array indices 0..1000."""


def max_array_size() -> int:
    """The most tasks one job array may have: the cluster's ``MaxArraySize`` (array indices run
    from 0 to MaxArraySize - 1), from one ``scontrol show config`` call; 1001, SLURM's default,
    when scontrol does not say or cannot be asked. At least 1 (MaxArraySize=0 disables arrays:
    each point then goes alone, as a plain job)."""
    try:
        out = _run(["scontrol", "show", "config"])
    except SlurmError:
        return DEFAULT_MAX_ARRAY_SIZE
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "MaxArraySize":
            try:
                return max(1, int(value.strip()))
            except ValueError:
                break
    return DEFAULT_MAX_ARRAY_SIZE


def point_jobs(path: Path, evs: list[dict[str, Any]] | None = None) -> dict[str, str]:
    """The jobs of the point's latest submission: ``{"train": id, "eval": id}`` (either may be
    absent), as its status log records them (``submitted``, then each job's own events);
    ``evs``: the log's events, when already read."""
    jobs: dict[str, str] = {}
    for ev in rundir.events(path) if evs is None else evs:
        name, stage = ev.get("event"), ev.get("stage") or "train"
        if name == Event.SUBMITTED:
            jobs = {}
            if ev.get("job_id"):
                jobs["eval" if stage == "eval" else "train"] = str(ev["job_id"])
            if ev.get("eval_job_id"):
                jobs["eval"] = str(ev["eval_job_id"])
        elif name in (Event.START, Event.REQUEUED, Event.PREEMPTED) and ev.get("job_id"):
            jobs["eval" if stage == "eval" else "train"] = str(ev["job_id"])
    return jobs


def segment_jobs(evs: list[dict[str, Any]]) -> dict[int, str]:
    """A trunk's segments' jobs, from its status log: the step a segment trains the trunk to
    -> the job of its latest submission (every segment of a trunk shares its folder, so each
    ``submitted`` event names its ``trunk_until``)."""
    return {int(e["trunk_until"]): str(e["job_id"]) for e in evs
            if e.get("event") == Event.SUBMITTED and e.get("trunk_until") and e.get("job_id")}


def job_info(path: Path, evs: list[dict[str, Any]] | None = None) -> tuple[str | None, str | None, str | None]:
    """(job id that owns the run folder now, its stage ``train``/``eval``, the status log's last
    event). The training job owns it until training has finished, then the evaluation job."""
    evs = rundir.events(path) if evs is None else evs
    last = evs[-1].get("event") if evs else None
    jobs = point_jobs(path, evs)
    if "eval" in jobs and (rundir.training_finished(path, evs) or "train" not in jobs):
        return jobs["eval"], "eval", last
    if "train" in jobs:
        return jobs["train"], "train", last
    return None, None, last


def live_state(run_state: RunState, jid: str | None, squeue: dict[str, str],
               sacct: dict[str, str], last_event: str | None = None) -> LiveState:
    """A point's state from its run folder's state and SLURM's view of its job.

    While SLURM holds the job (squeue shows it, not completing), SLURM wins unless the run
    folder says done or cancelled: the point shows as pending, running or requeued (requeued
    when pending after a failed attempt, a node failure say, or a logged requeue/preemption),
    even if its last attempt logged ``failed``. Otherwise a terminal run folder
    (done/failed/cancelled) wins; a job that ended without the run folder knowing (killed, node
    lost, cancelled before it started) shows as SLURM's verdict (sacct)."""
    if (jid is not None and jid in squeue and squeue[jid] != "COMPLETING"
            and run_state not in (RunState.DONE, RunState.CANCELLED)):
        # SLURM holds the job: believe it, whatever the attempt logged (a failed attempt whose
        # job SLURM requeued, after a node failure say, runs again); a job that is completing
        # ends as its run folder says
        st = ACTIVE.get(squeue[jid], _R)
        requeued = run_state == RunState.FAILED or last_event in (Event.REQUEUED, Event.PREEMPTED)
        return _Q if st == _P and requeued else st
    if run_state in TERMINAL or jid is None:
        return LiveState(run_state)
    ended = ENDED.get(sacct.get(jid, ""))
    if ended and ended != LiveState.DONE:
        return ended
    return LiveState(run_state)


def manifest_path(root: str | Path, sweep: str | None) -> Path:
    return Path(root).expanduser().resolve() / "_slurm" / f"{sweep or 'cli'}.json"


def update_manifest(path: Path, entries: dict[str, dict[str, Any]]) -> None:
    """Merge ``entries`` (run id -> {overrides, job_id, ...}) into the manifest, atomically."""
    try:
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict) or not isinstance(doc.get("points"), dict):
            raise ValueError("not a manifest: no mapping under 'points'")
    except FileNotFoundError:
        doc = {"points": {}}
    except (OSError, ValueError) as e:  # keep the unreadable one for the operator; start anew
        kept = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%dT%H%M%S')}")
        path.rename(kept)
        print(f"warning: manifest {path} is unreadable ({e}); moved to {kept}, a new one is "
              "written (the run folders' status logs still name every job)", file=sys.stderr)
        doc = {"points": {}}
    doc["points"].update(entries)
    doc["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    atomic_write_json(path, doc)


def trunk_of(evs: list[dict[str, Any]]) -> str | None:
    """The trunk a branch forks from, as its latest submission or start names it (None: not a
    branch)."""
    for ev in reversed(evs):
        if ev.get("event") in (Event.SUBMITTED, Event.START) and ev.get("trunk"):
            return str(ev["trunk"])
    return None


def all_jobs(path: Path, evs: list[dict[str, Any]]) -> set[str]:
    """Every job the run folder names for its latest submission: training and evaluation, and,
    for a trunk, each segment's."""
    return set(point_jobs(path, evs).values()) | set(segment_jobs(evs).values())


def cancel(root: Path, run_ids: list[str] | None = None) -> list[str]:
    """Cancel the jobs of the runs under ``root`` (all, or ``run_ids``) that SLURM still holds,
    training and evaluation jobs alike; returns one line per run cancelled (its run id, and for
    a trunk its segments' jobs, for a branch the trunk it depends on).

    A trunk's run id (or a segment's key, ``<trunk id>@<step>``) cancels the trunk's queued
    segments and every branch of it (and their evaluation jobs): they wait for the trunk. ``cancelled`` is logged in each run folder *before*
    ``scancel``: a running job that gets scancel's SIGTERM checkpoints, reads that, and stops
    instead of requeueing itself."""
    squeue = queue()
    runs = sorted(p for p in root.iterdir() if (p / "status.jsonl").exists()) if root.is_dir() else []
    # a segment's key (``<trunk id>@<step>``, as status shows it) names its trunk
    named = dict.fromkeys(root / r.partition("@")[0] for r in run_ids or [])
    logs = {p: rundir.events(p) for p in (named if run_ids else runs)}
    trunks = {p.name for p, evs in logs.items() if segment_jobs(evs)}
    if run_ids and trunks:  # a trunk's branches depend on it
        for path in runs:
            if path not in logs:
                evs = rundir.events(path)
                if trunk_of(evs) in trunks:
                    logs[path] = evs
    hits: dict[Path, list[str]] = {}
    for path, evs in logs.items():
        queued = sorted(j for j in all_jobs(path, evs) if j in squeue)
        if queued and rundir.state(path, evs) not in TERMINAL:
            hits[path] = queued
    for path, jobs in hits.items():
        rundir.log_event(path, Event.CANCELLED, job_id=jobs[0], jobs=jobs, by="launcher.slurm cancel")
    if hits:
        try:
            _run(["scancel", *sorted({j for jobs in hits.values() for j in jobs})])
        except SlurmError as e:
            for path in hits:  # withdraws the ``cancelled`` above (see rundir.state)
                rundir.log_event(path, Event.CANCEL_FAILED, error=str(e)[:500])
            raise
    return [_cancel_line(path, logs[path], jobs) for path, jobs in hits.items()]


def _cancel_line(path: Path, evs: list[dict[str, Any]], jobs: list[str]) -> str:
    """What the cancel command says about one run: its id, and what a trunk or branch is."""
    segments = {j: until for until, j in segment_jobs(evs).items()}
    if segments:
        cut = sorted(segments[j] for j in jobs if j in segments)
        return (f"{path.name} (trunk: segment(s) to step {', '.join(map(str, cut)) or '-'}, "
                f"job(s) {', '.join(jobs)})")
    trunk = trunk_of(evs)
    return f"{path.name} (branch of trunk {trunk})" if trunk else path.name


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m launcher.slurm", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cancel", help="cancel the queued/running jobs of a root's runs (all, or those named)")
    c.add_argument("--root", default="runs")
    c.add_argument("run_ids", nargs="*")
    args = ap.parse_args(argv)
    try:
        done = cancel(Path(args.root).expanduser().resolve(), args.run_ids or None)
    except SlurmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"cancelled {len(done)} point(s)" + "".join(f"\n  {r}" for r in done))
    if any("(trunk:" in r for r in done):
        print("a trunk's branches and their evaluations wait for it: cancelled with it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
