"""Status of a sweep at a glance: ``python -m launcher.status --sweep demo [--root runs]``.

One row per point (state, samples seen / total, age of the newest checkpoint, SLURM job id, last
error) and totals; a const_cooldown sweep adds a row per trunk segment (``<trunk id>@<end
step>``, its step range), and each branch's row names its fork step and trunk. It reads the run folders, plus, for points submitted to SLURM, the queue
(one ``squeue`` call) and accounting for jobs that left it (one ``sacct`` call): a submitted point
shows ``pending``, ``running`` or ``requeued`` while SLURM holds it, and SLURM's verdict
(``failed``, ``cancelled``) when its job ended without the run folder knowing. Nothing is
launched; without SLURM it shows the run folders' states alone.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.atomic import atomic_write_json
from core.errors import SweepError
from core.identity import run_id, trunk_id
from core.states import TERMINAL, Event, LiveState, RunState
from core.tables import fmt_count, render
from launcher import rundir, slurm
from launcher.compose import app_composer
from launcher.graph import point_key
from launcher.plan import Point, is_branch, segment_state, with_trunks
from launcher.sweep import load_sweep, sweep_file

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"
PLAN_CODE = [REPO / "core" / "identity.py", REPO / "core" / "schema.py", REPO / "core" / "steps.py",
             REPO / "launcher" / "plan.py", REPO / "launcher" / "status.py"]
"""The code a point's run id and size follow from (with the config files: the plan cache key)."""


@dataclass
class Entry:
    """What status needs of a point: its run folder and the samples it will have seen."""

    run_id: str
    """The row's name: the run id, or ``<trunk id>@<until>`` for a trunk segment."""
    run_dir: Path
    samples_seen: int
    until: int = 0
    """A trunk segment's end step (0: not a segment)."""
    start: int = 0
    """A segment's first step; a branch's fork step."""
    trunk: str = ""
    """A branch's trunk."""


def _plan_key(name: str, overrides: list[str]) -> str:
    """Hash of everything a point's run id and size follow from: the sweep file, the overrides,
    every config file and the identity code. A change to any of them recomposes the sweep."""
    h = hashlib.sha256(json.dumps([name, overrides]).encode())
    files = [sweep_file(name), *PLAN_CODE, *sorted(CONF.rglob("*.yaml"))]
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def sweep_points(name: str, overrides: list[str], root: Path) -> list[Entry]:
    """Every point of sweep ``name`` (plus ``overrides``), without running anything.

    Points are composed by :mod:`launcher.compose` (Hydra once per distinct set of group
    choices, about a millisecond a point after that); the (run id, samples) list is also cached
    under ``<root>/_status/`` keyed by :func:`_plan_key`, and recomposed only when the sweep or
    the configuration changed."""
    key = _plan_key(name, overrides)
    cache = root / "_status" / f"plan-{key}.json"
    try:
        rows = json.loads(cache.read_text())
    except (OSError, ValueError):
        rows = _compose_points(name, overrides)
        try:
            atomic_write_json(cache, rows)
        except OSError:
            pass  # a read-only root: status still works, just slower
    return [_entry(root, *row) for row in rows]


def _entry(root: Path, key: str, samples: int, until: int = 0, start: int = 0, trunk: str = "") -> Entry:
    """A cached plan row as an :class:`Entry` (a segment's folder is its trunk's)."""
    folder = key.rpartition("@")[0] if until else key
    return Entry(key, root / folder, int(samples), int(until), int(start), trunk)


def _compose_points(name: str, overrides: list[str]) -> list[tuple[str, int, int, int, str]]:
    """(key, samples seen, segment end step, start step, trunk) of every point and trunk
    segment (``launcher.plan.with_trunks``), in plan order."""
    points: dict[str, Point] = {}
    with app_composer(CONF) as compose:
        for ov in load_sweep(name):
            cfg = compose([*ov, *overrides])
            rid = run_id(cfg)
            if rid not in points:  # a Point for its size only: no run folder is read here
                points[rid] = Point(ov, cfg, rid, Path(rid), RunState.NEW)
    return [(point_key(p), p.samples_seen, p.trunk_until, p.start,
             trunk_id(p.cfg) if is_branch(p.cfg) else "") for p in with_trunks(list(points.values()))]


def _progress(path: Path) -> int:
    """Samples seen so far, from the last line of the training log (0 if none)."""
    try:
        fd = os.open(os.path.join(path, "train_log.jsonl"), os.O_RDONLY)
        try:
            tail = os.pread(fd, 4096, max(0, os.lseek(fd, 0, os.SEEK_END) - 4096))
        finally:
            os.close(fd)
        return int(json.loads(tail.splitlines()[-1]).get("samples_seen", 0))
    except (OSError, IndexError, ValueError):
        return 0


def _checkpoint_age(path: Path, now: float | None = None) -> str:
    """Age of the newest ``checkpoints/*.pt`` ("-" without one): one directory listing."""
    newest = None
    try:
        with os.scandir(os.path.join(path, "checkpoints")) as it:
            for entry in it:
                if entry.name.endswith(".pt"):
                    try:
                        mtime = entry.stat().st_mtime
                    except OSError:  # vanished (a checkpoint being rotated) or a dangling link
                        continue
                    newest = mtime if newest is None else max(newest, mtime)
    except OSError:  # no run folder, or no checkpoints in it
        return "-"
    if newest is None:
        return "-"
    age = (time.time() if now is None else now) - newest
    return f"{age / 3600:.1f}h" if age >= 3600 else f"{age / 60:.0f}m" if age >= 60 else f"{age:.0f}s"


def _read_logs(points: list[Entry]) -> list[list[dict[str, Any]]]:
    """Each point's status log events, each log read once (a trunk's segments share one)."""
    by_dir: dict[Path, list[dict[str, Any]]] = {}
    return [by_dir[p.run_dir] if p.run_dir in by_dir else by_dir.setdefault(p.run_dir, rundir.events(p.run_dir))
            for p in points]


def _run_state(p: Entry, evs: list[dict[str, Any]]) -> RunState:
    """The run folder's state of the point; a trunk segment's (``launcher.plan.segment_state``)."""
    return segment_state(p.run_dir, p.until, evs) if p.until else rundir.state(p.run_dir, evs)


def _job_info(p: Entry, evs: list[dict[str, Any]]) -> tuple[str | None, str | None, str | None]:
    """(job, stage, last event) as :func:`launcher.slurm.job_info`; a trunk segment's own job,
    and the trunk's last event only while that segment is the one the trunk last started."""
    if not p.until:
        return slurm.job_info(p.run_dir, evs)
    starts = [e.get("trunk_until") for e in evs if e.get("event") == Event.START]
    last = evs[-1].get("event") if evs and starts and starts[-1] == p.until else None
    return slurm.segment_jobs(evs).get(p.until), "train", last


def _role(p: Entry) -> str:
    """A trunk segment's step range, a branch's fork step (the note of its row)."""
    if p.until:
        return f"steps {p.start:,}->{p.until:,}"
    return f"branch, fork at step {p.start:,}" if p.trunk else ""


def live_states(points: list[Entry], logs: list[list[dict[str, Any]]] | None = None,
                run_states: list[RunState] | None = None) -> list[tuple[LiveState, str | None, str]]:
    """(state, job, why) per point: the run folder's state refined by squeue/sacct; the job is
    the one that owns the point now (``123_4``, or ``123_4 eval`` for its evaluation job); why:
    squeue's reason for a job that waits (``Dependency``, ``BeginTime``, ``ReqNodeNotAvail``...).
    ``logs``/``run_states``: the points' status log events and run states, when already read."""
    if logs is None:
        logs = _read_logs(points)
    infos = [_job_info(p, evs) for p, evs in zip(points, logs, strict=True)]
    if run_states is None:
        run_states = [_run_state(p, evs) for p, evs in zip(points, logs, strict=True)]
    detail: dict[str, tuple[str, str]] = {}
    sacct: dict[str, str] = {}
    # SLURM may still hold (requeue, run again) a job whose attempt logged failed: squeue is
    # asked once whenever any point has a job that is not done; sacct once, only for the open
    # points' jobs squeue no longer shows
    jobs = [j for (j, _, _), st in zip(infos, run_states, strict=True) if j and st != RunState.DONE]
    if jobs:
        try:
            detail = slurm.queue_detail()
        except slurm.SlurmError as e:
            print(f"warning: {e}; states come from the run folders alone", file=sys.stderr)
        sacct = slurm.accounting(j for (j, _, _), st in zip(infos, run_states, strict=True)
                                 if j and st not in TERMINAL and j not in detail)
    squeue = {j: st for j, (st, _) in detail.items()}
    out = []
    for st, (j, stage, last) in zip(run_states, infos, strict=True):
        state = slurm.live_state(st, j, squeue, sacct, last)
        why = detail[j][1] if j in detail and state in (LiveState.PENDING, LiveState.REQUEUED) else ""
        out.append((state, None if j is None else f"{j} eval" if stage == "eval" else j,
                    f"waiting: {why}" if why and why not in ("None", "(null)") else ""))
    return out


def status_table(points: list[Entry]) -> str:
    """The table: every status log read once; a training log's tail only for a point whose
    training is not finished, one listing of its checkpoints folder."""
    cols = ("run id", "state", "samples seen", "ckpt age", "job", "last error / reason")
    logs = _read_logs(points)
    run_states = [_run_state(p, evs) for p, evs in zip(points, logs, strict=True)]
    states = live_states(points, logs, run_states)
    now = time.time()
    body = []
    for p, evs, run_st, (st, jid, why) in zip(points, logs, run_states, states, strict=True):
        seen = p.samples_seen if st in (LiveState.DONE, LiveState.TRAINED) else _progress(p.run_dir)
        seen = min(seen, p.samples_seen)  # a trunk's later segment: the trunk's progress so far
        note = rundir.last_error(p.run_dir, evs) if st == LiveState.FAILED else why
        if st == LiveState.REQUEUED and run_st == RunState.FAILED:
            note = "; ".join(filter(None, [why, f"last attempt: {rundir.last_error(p.run_dir, evs)}"]))
        if p.until or p.trunk:
            note = "; ".join(filter(None, [_role(p) if st != LiveState.FAILED else "", note]))
        body.append((p.run_id, st, f"{fmt_count(seen)} / {fmt_count(p.samples_seen)}",
                     _checkpoint_age(p.run_dir, now), jid or "-", (note or "")[:80]))
    tally = Counter(st for st, _, _ in states)
    counts = {s: tally[s] for s in LiveState}
    total = f"{len(points)} points: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    return "\n".join([*render(cols, body), total])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m launcher.status", description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", default="demo", help="named sweep (sweeps/<name>.yaml) or a YAML path")
    ap.add_argument("--root", default="runs", help="folder holding the run folders")
    ap.add_argument("overrides", nargs="*", help="extra config overrides applied to every point")
    args = ap.parse_args(argv)
    try:
        root = Path(args.root).expanduser().resolve()
        points = sweep_points(args.sweep, [f"root={root}", *args.overrides], root)
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(status_table(points))
    return 0


if __name__ == "__main__":
    sys.exit(main())
