"""The SLURM path on a real cluster: the local one of ``scripts/slurm_up.sh`` (two slurmd nodes,
slurmdbd accounting). No fake executor: every test submits with sbatch through submitit.
Skipped, with the reason, when no cluster answers (``sinfo`` fails)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher import rundir, slurm

ROOT = Path(__file__).resolve().parent.parent


def _cluster_up() -> str | None:
    try:
        out = subprocess.run(["sinfo", "-h", "-p", "debug", "-o", "%D %t"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"sinfo unavailable ({e})"
    if out.returncode != 0 or not out.stdout.strip():
        return f"sinfo failed: {(out.stderr or out.stdout).strip() or 'no partition debug'}"
    return None


_why = _cluster_up()
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(
    _why is not None, reason=f"no local SLURM cluster (start it: sudo bash scripts/slurm_up.sh): {_why}")]

POINTS = ["model=tiny_s,tiny_m", "data=syn4k", "samples=s6k", "samples.seen=256", "eval=none"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("slurm_data")


def launch(root: Path, data_root: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "launch.py", "-m", *overrides, "cluster=slurm",
           f"root={root}", f"data_root={data_root}"]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HYDRA_FULL_ERROR": "1"})


def manifest(root: Path) -> dict:
    return json.loads((root / "_slurm" / "cli.json").read_text())["points"]


def wait_gone(job_ids: list[str], timeout: float = 240) -> None:
    """Wait until SLURM no longer holds any of ``job_ids``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not set(job_ids) & set(slurm.queue()):
            return
        time.sleep(1)
    raise AssertionError(f"jobs {job_ids} still queued after {timeout:.0f} s: {slurm.queue()}")


def status(root: Path, data_root: Path, sweep: Path) -> str:
    out = subprocess.run([sys.executable, "-m", "launcher.status", "--sweep", str(sweep),
                          "--root", str(root), f"data_root={data_root}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def sweep_file(tmp_path: Path, models: str = "[tiny_s, tiny_m]", extra: str = "") -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(f"points:\n  - {{model: {models}, data: syn4k, samples: s6k, samples.seen: 256, "
                    f"eval: none{extra}}}\n")
    return path


def test_submit_returns_runs_and_relaunch_submits_nothing(tmp_path: Path, data_root: Path) -> None:
    root = tmp_path / "runs"
    tic = time.time()
    first = launch(root, data_root, *POINTS)
    took = time.time() - tic
    assert first.returncode == 0, first.stderr[-3000:]
    assert "submitted 2 point(s) in 1 array job(s)" in first.stdout
    assert took < 30, f"submitting took {took:.1f} s: it must not wait for the jobs"
    points = manifest(root)
    assert len(points) == 2
    jobs = [p["job_id"] for p in points.values()]
    for run_id, entry in points.items():
        assert [e["job_id"] for e in rundir.events(root / run_id) if e["event"] == "submitted"] == [entry["job_id"]]

    # a relaunch while SLURM holds them (or after they finished) submits no second job
    again = launch(root, data_root, *POINTS)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "submitted 2" not in again.stdout and manifest(root) == points, again.stdout

    wait_gone(jobs)
    for run_id in points:
        assert rundir.state(root / run_id) == "done", rundir.events(root / run_id)[-3:]
    assert set(slurm.accounting(jobs).values()) == {"COMPLETED"}
    table = status(root, data_root, sweep_file(tmp_path))
    assert "2 points: 2 done" in table, table

    last = launch(root, data_root, *POINTS)
    assert last.returncode == 0, last.stderr[-3000:]
    assert "0 point(s) to run, 2 skipped" in last.stdout, last.stdout
    assert manifest(root) == points
    for run_id in points:
        assert sum(e["event"] == "submitted" for e in rundir.events(root / run_id)) == 1


def test_pending_point_shows_in_status_and_cancel(tmp_path: Path, data_root: Path) -> None:
    root = tmp_path / "runs"
    held = launch(root, data_root, "model=tiny_s", *POINTS[1:],
                  "+hydra.launcher.additional_parameters.begin=now+3600")
    assert held.returncode == 0, held.stderr[-3000:]
    (run_id, entry), = manifest(root).items()
    sweep = sweep_file(tmp_path, "tiny_s")
    assert f"{run_id}  pending" in status(root, data_root, sweep)

    out = subprocess.run([sys.executable, "-m", "launcher.slurm", "cancel", "--root", str(root)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "cancelled 1 point(s)" in out.stdout and run_id in out.stdout
    wait_gone([entry["job_id"]], timeout=60)
    assert rundir.state(root / run_id) == "cancelled"
    assert "1 points: 1 cancelled" in status(root, data_root, sweep)


def test_sbatch_refusal_names_the_message_and_points(tmp_path: Path, data_root: Path) -> None:
    root = tmp_path / "runs"
    out = launch(root, data_root, *POINTS, "hydra.launcher.partition=no_such_partition")
    assert out.returncode == 1
    assert "invalid partition" in out.stderr.lower(), out.stderr[-3000:]
    assert "tiny_s-syn4k-s6k-" in out.stderr and "tiny_m-syn4k-s6k-" in out.stderr
    assert not (root / "_slurm" / "cli.json").exists()


def test_unreachable_slurmctld_is_a_clear_error_and_leaves_nothing(tmp_path: Path, data_root: Path) -> None:
    conf = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")).read_text()
    bad = tmp_path / "slurm.conf"  # the same cluster, with a controller port nobody listens on
    bad.write_text("\n".join("SlurmctldPort=6899" if line.startswith("SlurmctldPort=") else line
                             for line in conf.splitlines()) + "\n")
    root = tmp_path / "runs"
    out = subprocess.run([sys.executable, "launch.py", "-m", "model=tiny_s", *POINTS[1:], "cluster=slurm",
                          f"root={root}", f"data_root={data_root}"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "SLURM_CONF": str(bad)})
    assert out.returncode == 2
    assert "SLURM does not answer" in out.stderr and "Unable to contact slurm controller" in out.stderr
    assert not root.exists()


@pytest.mark.slow
def test_time_limit_requeues_and_resumes_to_the_uninterrupted_weights(tmp_path: Path, data_root: Path) -> None:
    """A point needing several time limits (1 min each; SLURM signals USR2 up to 60 s early, so
    every segment trains a few steps): the trainer checkpoints on the signal, submitit requeues
    the job, each segment resumes from the newest checkpoint, and the final weights equal those
    of the same point trained in one go (cluster=local, in parallel)."""
    import torch

    point = ["model=tiny_s", "data=syn4k", "samples=s18k", "eval=none", "train.checkpoint_every=4"]
    ref_root = tmp_path / "ref"
    ref = subprocess.Popen([sys.executable, "launch.py", "-m", *point, f"root={ref_root}",
                            f"data_root={data_root}"], cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    root = tmp_path / "runs"
    out = launch(root, data_root, *point, "hydra.launcher.timeout_min=1",
                 "hydra.launcher.signal_delay_s=35", "hydra.launcher.max_num_timeout=10")
    assert out.returncode == 0, out.stderr[-3000:]
    (run_id, entry), = manifest(root).items()
    jid, seen = entry["job_id"], set()
    deadline = time.time() + 420
    while jid in (q := slurm.queue()):
        assert time.time() < deadline, f"job {jid} still queued: {rundir.events(root / run_id)[-3:]}"
        if q[jid] == "PENDING":  # a requeued job waits for BeginTime = now + 120 s: start it now
            subprocess.run(["scontrol", "update", f"jobid={jid}", "starttime=now"], capture_output=True)
        seen.add(q[jid])
        time.sleep(1)
    events = [e["event"] for e in rundir.events(root / run_id)]
    assert rundir.state(root / run_id) == "done", events
    # How many limits the run needs depends on this machine's speed (two to four here): what
    # must hold is that it was cut at least once and resumed to the very same weights.
    assert events.count("preempted") + events.count("requeued") >= 1, events
    assert events.count("start") >= 2, events

    assert ref.wait(timeout=300) == 0, ref.stdout.read()[-3000:] if ref.stdout else ""
    a = torch.load(root / run_id / "checkpoints" / "final.pt", map_location="cpu", weights_only=False)
    b = torch.load(ref_root / run_id / "checkpoints" / "final.pt", map_location="cpu", weights_only=False)
    assert a["step"] == b["step"] == 144
    for k, v in b["state_dict"].items():
        torch.testing.assert_close(a["state_dict"][k], v, rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")


@pytest.mark.slow
def test_killed_job_shows_failed_and_relaunch_resumes_from_its_checkpoint(tmp_path: Path, data_root: Path) -> None:
    """A job's process dies (SIGKILL: nothing is logged): status shows SLURM's verdict, and the
    next relaunch resubmits the point, which resumes from its newest checkpoint."""
    import signal

    root = tmp_path / "runs"
    point = ["model=tiny_s", "data=syn4k", "samples=s18k", "eval=none", "train.checkpoint_every=4"]
    assert launch(root, data_root, *point).returncode == 0
    (run_id, entry), = manifest(root).items()
    run = root / run_id
    deadline = time.time() + 180
    while not list((run / "checkpoints").glob("step_*.pt.done")):
        assert time.time() < deadline, rundir.events(run)[-3:]
        time.sleep(0.5)
    pid = next(e["pid"] for e in reversed(rundir.events(run)) if e["event"] == "start")
    os.kill(pid, signal.SIGKILL)
    wait_gone([entry["job_id"]], timeout=60)
    assert rundir.state(run) == "partial"  # the run folder never learnt it died
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("points:\n  - {model: tiny_s, data: syn4k, samples: s18k, eval: none, "
                     "train.checkpoint_every: 4}\n")
    assert f"{run_id}  failed" in status(root, data_root, sweep)

    again = launch(root, data_root, *point)
    assert again.returncode == 0 and "submitted 1 point(s)" in again.stdout, again.stdout + again.stderr
    job2 = manifest(root)[run_id]["job_id"]
    assert job2 != entry["job_id"]
    wait_gone([job2])
    assert rundir.state(run) == "done", rundir.events(run)[-3:]
    import torch

    final = torch.load(run / "checkpoints" / "final.pt", map_location="cpu", weights_only=False)
    assert final["step"] == 144 and final["resumed_from"], "the second job did not resume from a checkpoint"
