"""Leases: a run folder is worked on by one process at a time; a dead holder's lease is taken
over. Real processes, a real filesystem; SLURM's side is in tests/test_slurm.py."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pytest

from launcher import rundir
from launcher.lease import RUN_LEASE, Holder, Lease, LeaseHeld
from tests.helpers.procs import ROOT
from tests.helpers.slurm import needs_cluster


def test_a_second_holder_is_refused_with_the_first_named(tmp_path: Path):
    first = Lease(tmp_path / "lease.json", "stage=all", job_id="7_1")
    with first.hold():
        with pytest.raises(LeaseHeld) as e:
            Lease(tmp_path / "lease.json", "stage=all").acquire()
        assert f"pid {os.getpid()}" in str(e.value) and "SLURM job 7_1" in str(e.value)
    assert not (tmp_path / "lease.json").exists()  # released
    Lease(tmp_path / "lease.json", "stage=all").acquire()  # free again


def test_a_dead_pid_on_this_host_is_taken_over(tmp_path: Path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    path = tmp_path / "lease.json"
    record = {"host": os.uname().nodename, "pid": child.pid, "job_id": None,
              "purpose": "stage=all", "started": "then", "token": "old"}
    path.write_text(json.dumps(record))
    lease = Lease(path, "stage=all")
    takeover = lease.acquire()
    assert takeover is not None and f"pid {child.pid} no longer runs" in takeover.reason
    assert takeover.previous is not None and takeover.previous.token == "old"
    lease.release()


def test_a_stale_heartbeat_is_taken_over_and_a_live_one_is_not(tmp_path: Path):
    holder = Lease(tmp_path / "lease.json", "stage=all", heartbeat_s=0.2)
    holder.acquire()
    time.sleep(0.5)  # a few beats: the file's mtime stays fresh
    assert time.time() - (tmp_path / "lease.json").stat().st_mtime < 0.5
    with pytest.raises(LeaseHeld):
        Lease(tmp_path / "lease.json", "stage=all", stale_after_s=2).acquire()
    holder._stop.set()  # the holder hangs: no more heartbeats
    old = time.time() - 10
    os.utime(tmp_path / "lease.json", (old, old))
    other = Lease(tmp_path / "lease.json", "stage=all", stale_after_s=5)
    takeover = other.acquire()
    assert takeover is not None and "no heartbeat for" in takeover.reason
    time.sleep(0.4)
    assert holder.lost or not holder._mine()  # the stalled holder knows it lost it
    other.release()


def test_a_takeover_is_seen_at_once_before_a_write_though_steps_ask_the_cached_answer(
        tmp_path: Path):
    # Steps ask lost_reason() after each step and it answers from a look at most recheck_s old;
    # a save asks lost_reason(fresh=True), which must look now: a checkpoint written in the
    # second after a takeover would land in a folder another process owns (seen in CI).
    holder = Lease(tmp_path / "lease.json", "stage=all", heartbeat_s=60)
    holder.acquire()
    assert holder.lost_reason() is None  # a look: the next second answers from it
    holder._stop.set()
    old = time.time() - 10
    os.utime(tmp_path / "lease.json", (old, old))
    taker = Lease(tmp_path / "lease.json", "stage=all (the new holder)", stale_after_s=5)
    assert taker.acquire() is not None
    assert holder.lost_reason(recheck_s=60) is None  # cached: a step goes on
    reason = holder.lost_reason(fresh=True, recheck_s=60)
    assert reason is not None and "now held for stage=all (the new holder)" in reason
    assert holder.lost and holder.lost_reason(recheck_s=60) == reason  # and every step stops
    taker.release()


def test_a_lease_of_a_job_no_longer_in_the_queue_is_taken_over(tmp_path: Path):
    path = tmp_path / "lease.json"
    gone = Holder("another-node", 4242, "999", "stage=all", "then", "old")
    path.write_text(json.dumps(asdict(gone)))  # fresh heartbeat: only the queue can tell
    queued = Lease(path, "stage=all", queue=lambda: {"999", "5"})
    with pytest.raises(LeaseHeld):  # still queued: held
        queued.acquire()
    lease = Lease(path, "stage=all", job_id="5", queue=lambda: {"5"})
    takeover = lease.acquire()
    assert takeover is not None and takeover.previous == gone
    assert takeover.reason == "SLURM job 999 is no longer in the queue"
    lease.release()


def _race(path: str, barrier: multiprocessing.synchronize.Barrier, out: multiprocessing.Queue) -> None:
    lease = Lease(Path(path), "race")
    barrier.wait()
    try:
        lease.acquire()
        out.put("won")
        time.sleep(1.0)
        lease.release()
    except LeaseHeld:
        out.put("held")


def test_of_many_concurrent_takers_exactly_one_wins(tmp_path: Path):
    n = 6
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(tmp_path / "lease.json"), barrier, out))
             for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    results = sorted(out.get(timeout=5) for _ in range(n))
    assert results == ["held"] * (n - 1) + ["won"]


def _launch(root: Path, *extra: str, samples: str = "s18k") -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "launch.py", "-m", "model=tiny_s", "data=syn4k", f"samples={samples}",
         "eval=none", f"root={root}", f"data_root={root.parent / 'data'}", "train.workers=0",
         *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)


def _events(root: Path) -> list[dict]:
    (run,) = [p for p in root.iterdir() if (p / "status.jsonl").exists()]
    return rundir.events(run)


def _wait_for(what: str, found: Callable[[], bool], proc: subprocess.Popen,
              timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not found():
        if proc.poll() is not None:
            pytest.fail(f"the launch ended before {what}: {proc.communicate()[0]}")
        if time.time() > deadline:
            pytest.fail(f"no {what} in {timeout:.0f} s")
        time.sleep(0.2)


def _train_lines(root: Path) -> int:
    logs = list(root.glob("*/train_log.jsonl"))
    return logs[0].read_text().count("\n") if logs else 0


@pytest.mark.slow
def test_two_concurrent_launches_of_one_point_train_it_once(tmp_path: Path):
    root = tmp_path / "runs"
    a = _launch(root, samples="s54k")
    _wait_for("lease file", lambda: any(root.glob(f"*/{RUN_LEASE}")), a)
    b = _launch(root, samples="s54k")  # while the first holds the point
    out_b = b.communicate(timeout=600)[0]
    out_a = a.communicate(timeout=600)[0]
    assert [a.returncode, b.returncode] == [0, 0], (out_a, out_b)
    assert "1 point(s) to run" in out_b, out_b  # it was not done yet: the lease alone stopped it
    assert "0 point(s) finished, 1 held by another process (skipped), 0 failed" in out_b, out_b
    assert "1 point(s) finished, 0 held" in out_a, out_a
    names = [e["event"] for e in _events(root)]
    assert names.count("start") == 1 and names.count("trained") == 1, names
    assert names.count("done") == 1


@pytest.mark.slow
def test_a_holder_that_lost_its_lease_stops_without_saving(tmp_path: Path):
    root = tmp_path / "runs"
    first = _launch(root, "train.log_every=1", "train.checkpoint_every=5", "lease.heartbeat_s=0.5",
                    samples="s54k")
    _wait_for("training steps", lambda: _train_lines(root) >= 6, first)
    (path,) = root.glob(f"*/{RUN_LEASE}")
    run = path.parent
    # a takeover after a stall: another process finds the heartbeat stale and takes the lease
    taker = Lease(path, "stage=all (the new holder)", stale_after_s=0, heartbeat_s=0.5)
    takeover = taker.acquire()
    assert takeover is not None and takeover.previous is not None
    assert takeover.previous.pid != os.getpid()
    ckpts_then = {p.name: p.stat().st_mtime_ns for p in (run / "checkpoints").glob("*")}
    try:
        out = first.communicate(timeout=120)[0]
        assert first.returncode == 1, out
        (line,) = [ln for ln in out.splitlines() if ln.startswith("error:")]
        assert f"lost the lease of {run.name}: now held for stage=all (the new holder) " \
               f"by pid {os.getpid()}" in line and "without saving" in line, out
        ckpts_now = {p.name: p.stat().st_mtime_ns for p in (run / "checkpoints").glob("*")}
        assert ckpts_now == ckpts_then, "the old holder wrote checkpoints after the takeover"
        assert "final.pt" not in ckpts_now
        events = rundir.events(run)
        lost = [e for e in events if e["event"] == "lease_lost"]
        assert len(lost) == 1 and f"by pid {os.getpid()}" in lost[0]["reason"], events
        assert [e["event"] for e in events].count("trained") == 0, events
        assert rundir.state(run) == "partial"  # lease_lost does not change the run's state
        assert taker._mine()  # the old holder left the new holder's lease alone
    finally:
        taker.release()


@pytest.mark.slow
def test_a_holder_killed_with_sigkill_leaves_a_lease_the_next_launch_takes_over(tmp_path: Path):
    root = tmp_path / "runs"
    first = _launch(root, "train.checkpoint_every=4")
    _wait_for("training log", lambda: _train_lines(root) >= 2, first)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    (lease,) = root.glob("*/lease.json")
    assert json.loads(lease.read_text())["pid"] > 0  # the dead holder's lease stays
    second = _launch(root)
    out = second.communicate(timeout=600)[0]
    assert second.returncode == 0, out
    events = _events(root)
    taken = [e for e in events if e["event"] == "lease_taken_over"]
    assert len(taken) == 1 and "no longer runs" in taken[0]["reason"], events
    assert events[-1]["event"] == "done" and not lease.exists()


def _with_cluster(test: Callable) -> Callable:
    for mark in needs_cluster():  # marked slurm; skipped, saying why, without a cluster
        test = mark(test)
    return test


@pytest.mark.slow
@_with_cluster
def test_a_local_launch_takes_over_at_once_the_lease_of_a_job_gone_from_squeue(make_cfg,
                                                                               tmp_path: Path):
    from launcher.plan import make_point

    root = tmp_path / "runs"
    point = ["model=tiny_s", "data=syn4k", "samples=s6k", "eval=none", "train.workers=0"]
    run = make_point(point, make_cfg(*point, root=root)).run_dir
    run.mkdir(parents=True)
    gone = Holder("another-node", 4242, "999999", "stage=all", "then", "old")
    (run / RUN_LEASE).write_text(json.dumps(asdict(gone)))  # a fresh heartbeat
    proc = _launch(root, samples="s6k")  # no SLURM job of its own: it asks squeue all the same
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out
    events = rundir.events(run)
    taken = [e for e in events if e["event"] == "lease_taken_over"]
    assert len(taken) == 1, events
    assert taken[0]["reason"] == "SLURM job 999999 is no longer in the queue", taken
    assert events[-1]["event"] == "done"
