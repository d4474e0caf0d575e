"""Trunks and cooldown branches on the real local cluster (``scripts/slurm_up.sh``): the trunk as a
chain of segment jobs (``afterok``), each branch ``afterok`` on the segment that ends at its fork,
each branch's evaluation ``afterok`` on the branch, ``--kill-on-invalid-dep=yes`` throughout.

tiny_s (128 pairs a step) on syn4k, train.workers=0: a branch of T steps forks at round(0.8 T).
Skipped, with the reason, when no cluster answers."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from launcher import rundir, slurm
from tests.helpers.slurm import (
    cancel_cmd,
    launch,
    manifest,
    needs_cluster,
    release,
    row,
    sacct_settled,
    status,
    wait_for,
    wait_gone,
)

pytestmark = needs_cluster()

BATCH = 128
BASE = ["model=tiny_s", "data=syn4k", "samples=s6k", "train.schedule=const_cooldown", "train.workers=0"]
FORKS_ONLY = "train.fork_every=1000000"
"""Extra trunk checkpoints far past the trunks' ends: a trunk keeps checkpoints at its forks only
(the default, a tenth of a trunk of 8-30 steps, pins every step: 40 MB each, ~1 GB on the disk
of a test; tests/test_trunks.py covers the default's extra checkpoints)."""
HELD = "+hydra.launcher.additional_parameters.begin=now+3600"
"""Jobs wait an hour for their begin time: the test looks at the queue, then releases them."""


def seen(*steps: int) -> str:
    """``samples.seen=`` for branches of these many steps."""
    return "samples.seen=" + ",".join(str(BATCH * s) for s in steps)


def sweep(tmp_path: Path, steps: list[int], eval_: str, extra: str = "") -> Path:
    """The same points as a sweep file, for ``launcher.status``."""
    path = tmp_path / "trunk.yaml"
    path.write_text(f"points:\n  - {{model: tiny_s, data: syn4k, samples: s6k, samples.seen: "
                    f"{[BATCH * s for s in steps]}, eval: {eval_}, train.schedule: const_cooldown, "
                    f"train.workers: 0{extra}}}\n")
    return path


def split(points: dict[str, dict]) -> tuple[dict[int, dict], dict[int, dict]]:
    """Manifest entries: (segment end step -> entry, branch fork step -> entry)."""
    segments = {e["trunk_until"]: e for e in points.values() if e.get("trunk_until")}
    branches = {e["fork_step"]: e for e in points.values() if e.get("trunk")}
    return segments, branches


def jobs_of(points: dict[str, dict]) -> list[str]:
    return [j for e in points.values() for j in (e["job_id"], e.get("eval_job_id")) if j]


def test_cancel_cascades_and_a_dead_segment_takes_its_dependents_with_it(tmp_path: Path,
                                                                         data_root: Path) -> None:
    """Two branches with evaluation, held: every dependent job has its afterok and
    kill-on-invalid-dep; status shows each segment and why it waits. A segment cancelled
    behind the launcher's back takes the later segment, its branch and that branch's
    evaluation with it (SLURM does, kill-on-invalid-dep); cancelling the trunk's run id
    cancels what is left of it: its segment, the other branch and its evaluation."""
    root = tmp_path / "runs"
    out = launch(root, data_root, *BASE, FORKS_ONLY, seen(10, 20), "eval=embedded", HELD)
    points = manifest(root)
    try:
        assert out.returncode == 0, out.stderr[-3000:]
        assert "submitted 2 trunk segment(s) and 2 branch(es)" in out.stdout, out.stdout
        segments, branches = split(points)
        assert sorted(segments) == [8, 16] and sorted(branches) == [8, 16]
        trunk = branches[8]["trunk"]
        assert set(points) == {f"{trunk}@8", f"{trunk}@16", *(Path(b["run_dir"]).name for b in branches.values())}
        assert segments[8]["after"] is None and segments[16]["after"] == segments[8]["job_id"]
        assert branches[8]["after"] == segments[8]["job_id"]
        assert branches[16]["after"] == segments[16]["job_id"]
        for entry in [segments[16], *branches.values()]:
            shown = subprocess.run(["scontrol", "show", "job", entry["job_id"]], capture_output=True,
                                   text=True, timeout=30, check=True).stdout
            assert f"Dependency=afterok:{entry['after']}" in shown, shown
            assert "KillOInInvalidDependent=Yes" in shown, shown
        for entry in branches.values():  # each branch's evaluation waits for the branch
            shown = subprocess.run(["scontrol", "show", "job", entry["eval_job_id"]], capture_output=True,
                                   text=True, timeout=30, check=True).stdout
            assert f"Dependency=afterok:{entry['job_id']}" in shown, shown

        table = status(root, sweep(tmp_path, [10, 20], "embedded"), f"data_root={data_root}")
        first, second = row(table, f"{trunk}@8"), row(table, f"{trunk}@16")
        assert " pending " in first and "steps 0->8" in first and "waiting: BeginTime" in first, table
        assert " pending " in second and "steps 8->16" in second and "waiting: Dependency" in second, table
        assert "branch, fork at step 16" in row(table, Path(branches[16]["run_dir"]).name), table

        subprocess.run(["scancel", segments[16]["job_id"]], check=True, timeout=30)
        wait_gone([branches[16]["job_id"], branches[16]["eval_job_id"]], timeout=90)
        assert {segments[8]["job_id"], branches[8]["job_id"], branches[8]["eval_job_id"]} <= set(slurm.queue())

        out = cancel_cmd(root, trunk)
        assert out.returncode == 0, out.stderr
        b8 = Path(branches[8]["run_dir"]).name
        assert "cancelled 2 point(s)" in out.stdout, out.stdout
        assert f"{trunk} (trunk: segment(s) to step 8, job(s) {segments[8]['job_id']})" in out.stdout, out.stdout
        assert f"{b8} (branch of trunk {trunk})" in out.stdout, out.stdout
        assert "branches and their evaluations wait for it: cancelled with it" in out.stdout
        wait_gone(jobs_of(points), timeout=60)
        assert rundir.state(root / trunk) == rundir.state(root / b8) == "cancelled"
    finally:
        cancel_cmd(root)
        wait_gone(jobs_of(points), timeout=60)


@pytest.mark.slow
def test_trunk_with_three_branches_runs_in_dependency_order_and_extends(tmp_path: Path,
                                                                        data_root: Path) -> None:
    """A branch of 10 steps (fork 8), evaluated by a job of its own; a relaunch at once adds
    20 and 30 steps (forks 16, 24; without evaluation, which keeps the machine's two cores for
    the chain): it submits only the segments 8->16, after the queued job of 0->8, and 16->24,
    and the two new branches. Every job completes, and sacct's times show the order: segment k
    after k-1, each branch after its segment, the evaluation after its branch. A relaunch then
    runs nothing."""
    root = tmp_path / "runs"
    first = launch(root, data_root, *BASE, FORKS_ONLY, seen(10), "eval=embedded")
    points = manifest(root)
    try:
        assert first.returncode == 0, first.stderr[-3000:]
        assert len(points) == 2, points
        again = launch(root, data_root, *BASE, FORKS_ONLY, seen(10, 20, 30), "eval=none")
        assert again.returncode == 0, again.stderr[-3000:]
        assert "submitted 2 trunk segment(s) and 2 branch(es)" in again.stdout, again.stdout
        assert "2 already queued or running, not resubmitted" in again.stdout, again.stdout
        queued, points = points, manifest(root)
        assert len(points) == 6 and all(points[k] == e for k, e in queued.items())  # not resubmitted
        segments, branches = split(points)
        assert segments[16]["after"] == segments[8]["job_id"] and segments[16]["start"] == 8
        assert segments[24]["after"] == segments[16]["job_id"] and segments[24]["start"] == 16
        assert branches[16]["after"] == segments[16]["job_id"] and branches[24]["after"] == segments[24]["job_id"]
        # no second job for a queued segment or branch: one submitted event per segment
        trunk = root / branches[8]["trunk"]
        assert [e["trunk_until"] for e in rundir.events(trunk) if e["event"] == "submitted"] == [8, 16, 24]
        wait_gone(jobs_of(points), timeout=300)

        acct = sacct_settled(jobs_of(points), "Start")
        assert {a["State"] for a in acct.values()} == {"COMPLETED"}, acct
        for until, entry in segments.items():
            if entry["after"]:
                assert acct[entry["job_id"]]["Start"] >= acct[entry["after"]]["End"], (until, acct)
        assert branches[8]["eval_job_id"] and not branches[16]["eval_job_id"] and not branches[24]["eval_job_id"]
        for fork, entry in branches.items():
            assert acct[entry["job_id"]]["Start"] >= acct[segments[fork]["job_id"]]["End"], (fork, acct)
            if entry["eval_job_id"]:
                assert acct[entry["eval_job_id"]]["Start"] >= acct[entry["job_id"]]["End"], (fork, acct)
            run = Path(entry["run_dir"])
            assert rundir.state(run) == "done", rundir.events(run)[-3:]
            start = next(e for e in rundir.events(run) if e["event"] == "start")
            assert start["fork_step"] == fork and start["trunk"] == trunk.name
        trained = [e for e in rundir.events(trunk) if e["event"] == "trained"]
        assert [e["step"] for e in trained] == [8, 16, 24] and [e["resumed_from"] for e in trained] == [None, 8, 16]
        from store import read_records

        records, problems = read_records(root)
        assert not problems and {r["run_id"] for r in records} == {Path(branches[8]["run_dir"]).name}
        assert {r["trunk_id"] for r in records} == {trunk.name}

        table = status(root, sweep(tmp_path, [10, 20, 30], "none"), f"data_root={data_root}")
        assert "6 points: 6 done" in table, table
        last = launch(root, data_root, *BASE, FORKS_ONLY, seen(10, 20, 30), "eval=none")
        assert last.returncode == 0 and "0 point(s) to run, 6 skipped" in last.stdout, last.stdout
    finally:
        cancel_cmd(root)
        wait_gone(jobs_of(manifest(root)) if (root / "_slurm" / "cli.json").exists() else [], timeout=60)


@pytest.mark.slow
def test_segment_time_limit_requeues_and_a_killed_branch_resumes(tmp_path: Path, data_root: Path) -> None:
    """Branches of 375 and 425 steps (forks 300, 340), a 1-minute time limit for the first
    segment (the other jobs get 10): it is signalled, checkpoints, requeues and resumes, and both
    branches start only after the segment they fork from ended. The branch of 300 is killed
    (SIGKILL) once it wrote a checkpoint of its own mid-cooldown; the relaunch submits that
    branch alone, which resumes from its own checkpoint. The signal comes 20 s into the job,
    about 7 s into training here (step 14): the first segment's 300 steps, a checkpoint every 4,
    take about 35 s alone (forks at 60 and 68 were once trained before the signal)."""
    root = tmp_path / "runs"
    point = [*BASE, FORKS_ONLY, seen(375, 425), "eval=none", "train.checkpoint_every=4"]
    out = launch(root, data_root, *point, "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=40",
                 "hydra.launcher.max_num_timeout=5")
    points = manifest(root)
    try:
        assert out.returncode == 0, out.stderr[-3000:]
        segments, branches = split(points)
        assert sorted(segments) == [300, 340] and sorted(branches) == [300, 340]
        first = segments[300]["job_id"]
        for entry in [segments[340], *branches.values()]:
            subprocess.run(["scontrol", "update", f"jobid={entry['job_id']}", "timelimit=10"], check=True, timeout=30)
        trunk = root / branches[300]["trunk"]
        # the time limit's signal: the trunk checkpoints and submitit requeues the job; once
        # requeued it gets 10 minutes too, and is started at once (no 120 s BeginTime)
        wait_for("the first segment to be requeued", lambda: any(
            e["event"] in ("requeued", "preempted") for e in rundir.events(trunk)), timeout=150)
        wait_for("the requeued segment to be pending", lambda: slurm.queue().get(first) == "PENDING", timeout=60)
        subprocess.run(["scontrol", "update", f"jobid={first}", "timelimit=10"], check=True, timeout=30)
        release([first])

        branch = Path(branches[300]["run_dir"])
        own = branch / "checkpoints" / "step_00000304.pt.done"
        wait_for("the branch of 300 to checkpoint mid-cooldown", own.exists, timeout=240, every=0.1)
        pid = next(e["pid"] for e in reversed(rundir.events(branch)) if e["event"] == "start")
        os.kill(pid, signal.SIGKILL)
        wait_gone([branches[300]["job_id"]], timeout=60)
        assert rundir.state(branch) == "partial"

        again = launch(root, data_root, *point)
        assert again.returncode == 0, again.stderr[-3000:]
        resubmitted = {k: e for k, e in manifest(root).items() if e["job_id"] != points.get(k, {}).get("job_id")}
        assert list(resubmitted) == [branch.name], again.stdout
        assert resubmitted[branch.name]["after"] is None  # its segment is done
        everything = jobs_of(points) + jobs_of(resubmitted)
        wait_gone(everything, timeout=240)

        events = [e["event"] for e in rundir.events(trunk)]
        assert events.count("start") >= 3 and ("requeued" in events or "preempted" in events), events
        acct = sacct_settled([first, segments[340]["job_id"], branches[340]["job_id"], branches[300]["job_id"]], "Start")
        assert acct[first]["State"] == "COMPLETED", acct
        for fork, entry in branches.items():
            assert acct[entry["job_id"]]["Start"] >= acct[segments[fork]["job_id"]]["End"], (fork, acct)
        import torch

        for entry in branches.values():
            run = Path(entry["run_dir"])
            assert rundir.state(run) == "done", rundir.events(run)[-3:]
        final = torch.load(branch / "checkpoints" / "final.pt", map_location="cpu", weights_only=False)
        assert final["step"] == 375 and final["resumed_from"] >= 304, final["resumed_from"]
    finally:
        cancel_cmd(root)
        wait_gone(jobs_of(manifest(root)) if (root / "_slurm" / "cli.json").exists() else [], timeout=60)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("slurm_trunk_data")

