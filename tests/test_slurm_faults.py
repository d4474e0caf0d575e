"""Faults on the real local cluster (scripts/slurm_up.sh): a node that dies under a multi-node
job, a local launch racing a SLURM job, two submissions of one sweep at once.
Skipped, with the reason, when no cluster answers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from launcher import rundir, slurm
from tests.helpers.procs import ROOT
from tests.helpers.slurm import (
    SLURM_DIR,
    command,
    launch,
    launch_cmd,
    manifest,
    needs_cluster,
    parent,
    processes_of_job,
    status,
    wait_for,
    wait_gone,
)

pytestmark = needs_cluster()

LONG = ["model=tiny_s", "data=syn4k", "samples=s18k", "train.checkpoint_every=4", "eval=none"]
"""144 steps, a checkpoint every 4: long enough to interrupt mid-training."""


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("slurm_faults_data")


def _sweep(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "long.yaml"
    path.write_text("points:\n  - {model: tiny_s, data: syn4k, samples: s18k, "
                    f"train.checkpoint_every: 4, eval: none{extra}}}\n")
    return path


def _checkpoint_steps(run: Path) -> list[int]:
    return sorted(int(p.name[5:13]) for p in (run / "checkpoints").glob("step_*.pt.done"))


def _cancel(root: Path) -> None:
    subprocess.run([sys.executable, "-m", "launcher.slurm", "cancel", "--root", str(root)],
                   cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_a_local_launch_skips_a_point_whose_slurm_job_runs(tmp_path: Path, data_root: Path):
    root = tmp_path / "runs"
    assert launch(root, data_root, *LONG).returncode == 0
    ((run_id, entry),) = manifest(root).items()
    run = root / run_id
    try:
        wait_for("the job's first checkpoint", lambda: _checkpoint_steps(run))
        local = subprocess.run(
            [sys.executable, "launch.py", "-m", *LONG, f"root={root}", f"data_root={data_root}"],
            cwd=ROOT, capture_output=True, text=True, timeout=180)
        assert local.returncode == 0, local.stderr[-2000:]
        assert "1 held by another process" in local.stdout, local.stdout
        assert f"SLURM job {entry['job_id']}" in local.stdout, local.stdout
        starts = [e for e in rundir.events(run) if e["event"] == "start"]
        assert len(starts) == 1 and starts[0]["job_id"] == entry["job_id"], starts
    finally:
        _cancel(root)
        wait_gone([entry["job_id"]], timeout=120)


@pytest.mark.slow
def test_two_concurrent_submissions_of_one_sweep_submit_each_point_once(tmp_path: Path,
                                                                        data_root: Path):
    root = tmp_path / "runs"
    points = ["model=tiny_s,tiny_m", "data=syn4k", "samples=s18k", "eval=none"]
    procs = [subprocess.Popen(launch_cmd(root, data_root, *points), cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    try:
        assert [p.returncode for p in procs] == [0, 0], outs
        entries = manifest(root)
        assert len(entries) == 2
        for run_id in entries:
            submitted = [e for e in rundir.events(root / run_id) if e["event"] == "submitted"]
            assert len(submitted) == 1, (run_id, submitted)
        said = " ".join(o for o, _ in outs)
        assert "submitted 2 point(s)" in said and "2 already queued or running" in said, said
    finally:
        _cancel(root)
        wait_gone([e["job_id"] for e in manifest(root).values()], timeout=120)


def _kill_node(job_id: str, node: str) -> None:
    """SIGKILL the node's slurmd, the job's slurmstepd there and its task processes."""
    tasks = processes_of_job(job_id, node)
    assert tasks, f"no task of job {job_id} on {node}"
    victims = set(tasks)
    for pid in tasks:
        p = parent(pid)
        while p > 1 and not command(p).startswith("slurmstepd"):
            p = parent(p)
        if p > 1:
            victims.add(p)
    victims.add(int((SLURM_DIR / "run" / f"slurmd-{node}.pid").read_text().split()[0]))
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.slow
def test_a_node_dying_under_a_two_node_job_shows_requeued_and_resumes(tmp_path: Path,
                                                                      data_root: Path):
    """Kill the second node of a 2-node DDP job (its slurmd, slurmstepd and task): rank 0 sees
    its peer vanish, SLURM requeues the job; status shows it requeued with SLURM's reason, not
    failed; once the node is back the job resumes from its newest checkpoint and finishes,
    losing at most one checkpoint interval."""
    root = tmp_path / "runs"
    extra = ["cluster.nodes=2", "model.local_batch=64", "train.workers=0"]
    sweep = _sweep(tmp_path, ", cluster.nodes: 2, model.local_batch: 64, train.workers: 0")
    assert launch(root, data_root, *LONG, *extra).returncode == 0
    ((run_id, entry),) = manifest(root).items()
    run, jid = root / run_id, entry["job_id"]
    try:
        wait_for("the job's first checkpoint", lambda: _checkpoint_steps(run), timeout=240)
        _kill_node(jid, "n2")
        newest = _checkpoint_steps(run)[-1]
        wait_for("SLURM to requeue the job", lambda: slurm.queue().get(jid) == "PENDING", 180)
        # the job's pending reason (BeginTime) may still read "None" the moment it is requeued
        # (CI: the table said requeued with no "waiting:"); the table shows it once SLURM sets it
        wait_for("status to show SLURM's reason", lambda: "waiting:" in status(root, sweep), 60)
        table = status(root, sweep)
        assert f"{run_id}  requeued" in table and "waiting:" in table, table
        assert "last attempt: lost a peer rank (a node failed?)" in table, table
        failed = [e for e in rundir.events(run) if e["event"] == "failed"]
        assert failed and failed[-1].get("cause", "").startswith("lost a peer rank"), failed
    finally:
        subprocess.run(["bash", "scripts/slurm_up.sh"], cwd=ROOT, capture_output=True, timeout=180)
    # SLURM releases the job itself after its BeginTime (120 s). Releasing it early with
    # `scontrol update starttime=now` while the node had just come back once left its srun
    # retrying "Requested nodes are busy" for good (CI, job 110): wait as production does.
    wait_gone([jid], timeout=900)  # a loaded machine trains the 2-node resume slowly
    assert rundir.state(run) == "done", rundir.events(run)[-4:]
    from training import checkpoint

    marker = checkpoint.read_marker(checkpoint.final(run))
    assert marker["step"] == 144
    assert marker["resumed_from"] is not None and marker["resumed_from"] >= newest, marker
    names = [e["event"] for e in rundir.events(run)]
    assert names.count("start") == 2 and "requeued" in names, names
