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
from tests.helpers.slurm import release, sacct

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


LONG = ["model=tiny_s", "data=syn4k", "samples=s18k", "train.checkpoint_every=4"]
"""A point of 144 steps that checkpoints every 4: long enough to interrupt mid-training."""


def launch_until_checkpoint(root: Path, data_root: Path, *extra: str) -> tuple[str, dict, Path]:
    """Submit :data:`LONG` (plus ``extra``) and wait for its first complete step checkpoint;
    returns (run id, its manifest entry, its run folder)."""
    assert launch(root, data_root, *LONG, *extra).returncode == 0
    (run_id, entry), = manifest(root).items()
    run = root / run_id
    deadline = time.time() + 180
    while not list((run / "checkpoints").glob("step_*.pt.done")):
        assert time.time() < deadline, rundir.events(run)[-3:]
        time.sleep(0.5)
    return run_id, entry, run


def long_sweep(tmp_path: Path, eval_: str = "none") -> Path:
    """:data:`LONG` as a sweep file, for ``launcher.status``."""
    path = tmp_path / "sweep.yaml"
    path.write_text("points:\n  - {model: tiny_s, data: syn4k, samples: s18k, train.checkpoint_every: 4, "
                    f"eval: {eval_}}}\n")
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
    table = status(root, data_root, sweep)
    assert f"{run_id}  pending" in table and "waiting: BeginTime" in table, table

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


def test_one_refused_point_does_not_stop_the_others(tmp_path: Path, data_root: Path) -> None:
    """A point asking for more nodes than the cluster has: sbatch's own message and that point
    are reported (exit 1); the other point is submitted and runs."""
    root = tmp_path / "runs"
    sweep = tmp_path / "mixed.yaml"
    sweep.write_text("points:\n"
                     "  - {model: tiny_s, data: syn4k, samples: s6k, samples.seen: 256, eval: none}\n"
                     "  - {model: tiny_m, data: syn4k, samples: s6k, samples.seen: 384, eval: none,"
                     " cluster.nodes: 3, model.global_batch: 384, model.local_batch: 128}\n")
    out = launch(root, data_root, f"sweep={sweep}")
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert "node count specification invalid" in out.stderr.lower(), out.stderr[-3000:]
    refused = [line for line in out.stderr.splitlines() if line.strip().startswith("point ")]
    assert len(refused) == 1 and "tiny_m-syn4k-s6k-" in refused[0] and "cluster.nodes=3" in refused[0]
    points = json.loads((root / "_slurm" / "mixed.json").read_text())["points"]
    (run_id, entry), = points.items()
    assert run_id.startswith("tiny_s-syn4k-s6k-")
    assert "submitted 1 point(s)" in out.stdout
    wait_gone([entry["job_id"]])
    assert rundir.state(root / run_id) == "done", rundir.events(root / run_id)[-3:]


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

    # twice LONG's steps (288): since the pooled last blocks (training/pooled.py) 144 steps
    # were once trained before the first limit's signal, 25 s into the job
    point = [*LONG, "samples.seen=36864", "eval=none"]
    ref_root = tmp_path / "ref"
    ref = subprocess.Popen([sys.executable, "launch.py", "-m", *point, f"root={ref_root}",
                            f"data_root={data_root}"], cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    root = tmp_path / "runs"
    out = launch(root, data_root, *point, "hydra.launcher.timeout_min=1",
                 "hydra.launcher.signal_delay_s=35", "hydra.launcher.max_num_timeout=30")
    assert out.returncode == 0, out.stderr[-3000:]
    (run_id, entry), = manifest(root).items()
    jid, seen = entry["job_id"], set()
    # On a loaded machine a 1-minute segment spends most of its time starting up (CI once used
    # up 10 requeues at load 10): allow many limits, and time, for a point needing only a few.
    deadline = time.time() + 900
    while jid in (q := slurm.queue()):
        assert time.time() < deadline, f"job {jid} still queued: {rundir.events(root / run_id)[-3:]}"
        if q[jid] == "PENDING":  # a requeued job waits for BeginTime = now + 120 s: start it
            release([jid])  # soon (not at once: see RELEASE_SETTLE_S)
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
    assert a["step"] == b["step"] == 288
    for k, v in b["state_dict"].items():
        torch.testing.assert_close(a["state_dict"][k], v, rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")


@pytest.mark.slow
def test_killed_job_shows_failed_and_relaunch_resumes_from_its_checkpoint(tmp_path: Path, data_root: Path) -> None:
    """A job's process dies (SIGKILL: nothing is logged): status shows SLURM's verdict, and the
    next relaunch resubmits the point, which resumes from its newest checkpoint."""
    import signal

    root = tmp_path / "runs"
    run_id, entry, run = launch_until_checkpoint(root, data_root, "eval=none")
    pid = next(e["pid"] for e in reversed(rundir.events(run)) if e["event"] == "start")
    os.kill(pid, signal.SIGKILL)
    wait_gone([entry["job_id"]], timeout=60)
    assert rundir.state(run) == "partial"  # the run folder never learnt it died
    assert f"{run_id}  failed" in status(root, data_root, long_sweep(tmp_path))

    again = launch(root, data_root, *LONG, "eval=none")
    assert again.returncode == 0 and "submitted 1 point(s)" in again.stdout, again.stdout + again.stderr
    job2 = manifest(root)[run_id]["job_id"]
    assert job2 != entry["job_id"]
    wait_gone([job2])
    assert rundir.state(run) == "done", rundir.events(run)[-3:]
    import torch

    final = torch.load(run / "checkpoints" / "final.pt", map_location="cpu", weights_only=False)
    assert final["step"] == 144 and final["resumed_from"], "the second job did not resume from a checkpoint"


@pytest.mark.slow
def test_two_node_ddp_job_and_evaluation_jobs_that_wait_for_their_own_training(
        tmp_path: Path, data_root: Path) -> None:
    """Two points in one training array of 2-node jobs (2 nodes x 1 task, gloo on CPU): A
    trains, B's training fails (lr = 1e30: non-finite losses). Their evaluation jobs (1 node
    each) form a second array that depends on the first task by task: A's runs after A's
    training, on the weights both ranks ended with; B's never runs (SLURM cancels it)."""
    from store import read_records
    from training import checkpoint
    from training.train import weights_digest

    root = tmp_path / "runs"
    sweep = tmp_path / "ddp.yaml"
    sweep.write_text(
        "points:\n"
        "  - {model: tiny_s, data: syn4k, samples: s6k, samples.seen: 512, eval: embedded,"
        " cluster.nodes: 2, model.local_batch: 64, train.workers: 1}\n"
        "  - {model: tiny_m, data: syn4k, samples: s6k, samples.seen: 1024, eval: embedded,"
        " cluster.nodes: 2, model.local_batch: 64, train.lr: 1.0e+30, train.max_nonfinite: 2}\n")
    out = launch(root, data_root, f"sweep={sweep}")
    assert out.returncode == 0, out.stderr[-3000:]
    points = json.loads((root / "_slurm" / "ddp.json").read_text())["points"]
    ok, = (p for r, p in points.items() if r.startswith("tiny_s"))
    bad, = (p for r, p in points.items() if r.startswith("tiny_m"))
    assert ok["nodes"] == bad["nodes"] == 2
    assert ok["job_id"].split("_")[0] == bad["job_id"].split("_")[0]  # one array of two tasks
    assert ok["eval_job_id"].split("_")[0] == bad["eval_job_id"].split("_")[0]
    jobs = [ok["job_id"], ok["eval_job_id"], bad["job_id"], bad["eval_job_id"]]
    wait_gone(jobs, timeout=300)

    run = Path(ok["run_dir"])
    assert rundir.state(run) == "done", rundir.events(run)[-3:]
    trained, = (e for e in rundir.events(run) if e["event"] == "trained")
    ranks = trained["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and {r["node"] for r in ranks} == {"n1", "n2"}
    final = checkpoint.load(checkpoint.final(run))
    assert {r["weights_sha256"] for r in ranks} == {weights_digest(final["state_dict"])}
    assert final["step"] == 4
    records, problems = read_records(root)
    assert records and not problems and {r["run_id"] for r in records} == {run.name}
    assert {r["step"] for r in records} == {4}

    acct = sacct(jobs, "State,NNodes,Start,End")
    assert acct[ok["job_id"]]["NNodes"] == "2" and acct[ok["eval_job_id"]]["NNodes"] == "1"
    assert acct[ok["job_id"]]["State"] == acct[ok["eval_job_id"]]["State"] == "COMPLETED"
    assert acct[ok["eval_job_id"]]["Start"] >= acct[ok["job_id"]]["End"]

    bad_run = Path(bad["run_dir"])
    assert rundir.state(bad_run) == "failed" and "NonFiniteLoss" in (rundir.last_error(bad_run) or "")
    assert acct[bad["job_id"]]["State"] == "FAILED"
    assert acct[bad["eval_job_id"]]["State"] == "CANCELLED", acct  # never started
    assert not any(e.get("stage") == "eval" for e in rundir.events(bad_run))
    table = status(root, data_root, sweep)
    assert "2 points: 1 done, 1 failed" in table and "NonFiniteLoss" in table, table


@pytest.mark.slow
def test_cancel_a_running_point_stops_it_for_good(tmp_path: Path, data_root: Path) -> None:
    """``launcher.slurm cancel`` on a point whose training runs: its training and evaluation
    jobs are cancelled, the job does not requeue itself on scancel's SIGTERM, the point shows
    ``cancelled``."""
    root = tmp_path / "runs"
    run_id, entry, run = launch_until_checkpoint(root, data_root, "eval=embedded")
    assert slurm.queue()[entry["job_id"]] == "RUNNING"
    out = subprocess.run([sys.executable, "-m", "launcher.slurm", "cancel", "--root", str(root), run_id],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and f"cancelled 1 point(s)\n  {run_id}" in out.stdout, out.stderr
    wait_gone([entry["job_id"], entry["eval_job_id"]], timeout=60)
    time.sleep(3)  # a requeue would put the job back in the queue now
    assert entry["job_id"] not in slurm.queue()
    acct = sacct([entry["job_id"], entry["eval_job_id"]], "State")
    assert {a["State"].split()[0] for a in acct.values()} == {"CANCELLED"}, acct
    events = [e["event"] for e in rundir.events(run)]
    assert rundir.state(run) == "cancelled" and "requeued" not in events, events
    assert f"{run_id}  cancelled" in status(root, data_root, long_sweep(tmp_path, "embedded"))


@pytest.mark.slow
def test_scontrol_requeue_preempts_checkpoints_and_resumes(tmp_path: Path, data_root: Path) -> None:
    """An operator (or a preempting job) requeues a running job: SLURM sends SIGTERM to all its
    processes; the trainer (not its loader workers) checkpoints at the next step, the point shows
    ``requeued`` (waiting for BeginTime), and once released the job resumes from that step."""
    import torch

    root = tmp_path / "runs"
    run_id, entry, run = launch_until_checkpoint(root, data_root, "eval=none")
    jid = entry["job_id"]
    subprocess.run(["scontrol", "requeue", jid], check=True, capture_output=True)
    deadline = time.time() + 60
    while not any(e["event"] == "preempted" for e in rundir.events(run)):
        assert time.time() < deadline, rundir.events(run)[-3:]
        time.sleep(0.5)
    preempted = next(e for e in rundir.events(run) if e["event"] == "preempted")
    while slurm.queue().get(jid) != "PENDING":
        assert time.time() < deadline, slurm.queue()
        time.sleep(0.5)
    table = status(root, data_root, long_sweep(tmp_path))
    assert f"{run_id}  requeued" in table and "waiting: BeginTime" in table, table
    release([jid])
    wait_gone([jid])
    assert rundir.state(run) == "done", rundir.events(run)[-3:]
    final = torch.load(run / "checkpoints" / "final.pt", map_location="cpu", weights_only=False)
    assert final["step"] == 144 and final["resumed_from"] == preempted["step"]
    # SLURM requeued the job itself: no second requeue request through submitit, whose
    # failure used to leave a traceback in the job's log
    folder = root / "_slurm" / "submitit"
    for suffix in ("err", "out"):
        logs = list(folder.glob(f"{jid.split('_')[0]}*/*_log.{suffix}"))
        assert logs and not any("Traceback" in f.read_text() for f in logs), [str(f) for f in logs]


HELD = "+hydra.launcher.additional_parameters.begin=now+3600"
"""Submitted jobs wait an hour for their begin time: a test looks at the queue, then cancels."""

COUNTING_LAUNCH = """
import json, runpy, sys
from launcher import slurm
log, sys.argv = sys.argv[1], ["launch.py", *sys.argv[2:]]
calls, real = [], slurm._run
def counting(cmd, timeout=30):
    calls.append(cmd)
    return real(cmd, timeout)
slurm._run = counting
try:
    runpy.run_path("launch.py", run_name="__main__")
finally:
    open(log, "w").write(json.dumps(calls))
"""
"""``launch.py`` with ``launcher.slurm._run`` wrapped: every SLURM command it runs (the real
binaries) is recorded, as JSON, in the file named by the first argument."""


def counting_launch(log: Path, root: Path, data_root: Path,
                    *overrides: str) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    out = subprocess.run([sys.executable, "-c", COUNTING_LAUNCH, str(log), "-m", *overrides,
                          "cluster=slurm", f"root={root}", f"data_root={data_root}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    return out, json.loads(log.read_text())


def cancel(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "launcher.slurm", "cancel", "--root", str(root)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def counting_status(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], root: Path,
                    data_root: Path, sweep: Path) -> tuple[str, list[list[str]]]:
    """``python -m launcher.status`` in this process, with ``launcher.slurm._run`` wrapped: the
    real squeue/sacct run, and every command is recorded."""
    from launcher import status as status_cmd

    calls: list[list[str]] = []
    real = slurm._run

    def counting(cmd: list[str], timeout: float = 30) -> str:
        calls.append(cmd)
        return real(cmd, timeout)

    monkeypatch.setattr(slurm, "_run", counting)
    capsys.readouterr()
    assert status_cmd.main(["--sweep", str(sweep), "--root", str(root), f"data_root={data_root}"]) == 0
    return capsys.readouterr().out, calls


def test_a_sweep_larger_than_max_array_size_goes_in_several_arrays(tmp_path: Path, data_root: Path) -> None:
    """The test cluster's MaxArraySize is 4 (scripts/slurm_up.sh): five points make two arrays,
    of 4 and 1 tasks; each point has its own job in the manifest and its run folder. The
    submission asks squeue once and scontrol once (MaxArraySize), never sacct; a relaunch while
    they are queued asks squeue once and submits nothing."""
    assert slurm.max_array_size() == 4, "the test cluster runs with another MaxArraySize: sudo bash scripts/slurm_up.sh"
    root = tmp_path / "runs"
    five = ["model=tiny_s", "data=syn4k", "samples=s6k", "samples.seen=256,384,512,640,768", "eval=none"]
    jobs: list[str] = []
    out, calls = counting_launch(tmp_path / "calls.json", root, data_root, *five, HELD)
    try:
        assert out.returncode == 0, out.stderr[-3000:]
        assert "submitted 5 point(s) in 2 array job(s)" in out.stdout, out.stdout
        assert [c[0] for c in calls] == ["squeue", "scontrol"], calls
        points = manifest(root)
        assert len(points) == 5
        jobs = [p["job_id"] for p in points.values()]
        assert len(set(jobs)) == 5
        for run_id, entry in points.items():
            assert [e["job_id"] for e in rundir.events(root / run_id) if e["event"] == "submitted"] == [entry["job_id"]]
        # SLURM's own view: the array job id of each task (squeue's %F), two arrays of 4 and 1
        shown = subprocess.run(["squeue", "-h", "-r", "-o", "%i %F", "-j",
                                ",".join(sorted({j.split("_")[0] for j in jobs}))],
                               capture_output=True, text=True, timeout=30, check=True).stdout
        array_of = dict(line.split() for line in shown.splitlines())
        assert set(jobs) <= set(array_of), (jobs, shown)
        sizes = sorted(list(array_of.values()).count(a) for a in set(array_of.values()))
        assert sizes == [1, 4], shown

        again, calls = counting_launch(tmp_path / "calls2.json", root, data_root, *five, HELD)
        assert again.returncode == 0, again.stderr[-3000:]
        assert "submitted 0 point(s)" in again.stdout and "5 already queued" in again.stdout, again.stdout
        assert [c[0] for c in calls] == ["squeue"], calls
        assert manifest(root) == points
    finally:
        cancelled = cancel(root)
    assert cancelled.returncode == 0 and "cancelled 5 point(s)" in cancelled.stdout, cancelled.stderr
    wait_gone(jobs, timeout=60)


def test_array_parallelism_reaches_sbatch(tmp_path: Path, data_root: Path) -> None:
    """``hydra.launcher.array_parallelism=1``: the array runs one task at a time (squeue shows
    the array's spec with ``%1``)."""
    root = tmp_path / "runs"
    jobs: list[str] = []
    out = launch(root, data_root, *POINTS, HELD, "hydra.launcher.array_parallelism=1")
    try:
        assert out.returncode == 0, out.stderr[-3000:]
        jobs = [p["job_id"] for p in manifest(root).values()]
        array, = {j.split("_")[0] for j in jobs}
        shown = subprocess.run(["squeue", "-h", "-o", "%i", "-j", array], capture_output=True,
                               text=True, timeout=30, check=True).stdout.split()
        assert shown == [f"{array}_[0-1%1]"], shown
    finally:
        cancelled = cancel(root)
    assert cancelled.returncode == 0, cancelled.stderr
    wait_gone(jobs, timeout=60)


def test_status_asks_squeue_once_and_sacct_once_for_the_jobs_squeue_no_longer_shows(
        tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Status of a submitted sweep (five points: an array of 4 tasks and a job of 1), with the
    real squeue and sacct: one squeue call; one sacct call, only once a job has left the queue,
    and for that job alone. (A job, not an array task: SLURM's accounting does not record a
    pending array task cancelled on its own.)"""
    root = tmp_path / "runs"
    points: dict[str, dict] = {}
    out = launch(root, data_root, "model=tiny_s", "data=syn4k", "samples=s6k",
                 "samples.seen=256,384,512,640,768", "eval=none", HELD)
    try:
        assert out.returncode == 0, out.stderr[-3000:]
        points = manifest(root)
        sweep = tmp_path / "five.yaml"
        sweep.write_text("points:\n  - {model: tiny_s, data: syn4k, samples: s6k, "
                         "samples.seen: [256, 384, 512, 640, 768], eval: none}\n")
        table, calls = counting_status(monkeypatch, capsys, root, data_root, sweep)
        assert "5 points: 5 pending" in table, table
        assert [c[0] for c in calls] == ["squeue"], calls  # every job is still queued: no sacct

        # the job of one task cancelled behind the launcher's back: only SLURM's accounting knows
        (gone_run, gone), = ((r, p) for r, p in points.items() if "_" not in p["job_id"])
        subprocess.run(["scancel", gone["job_id"]], check=True, timeout=30)
        wait_gone([gone["job_id"]], timeout=60)
        deadline = time.time() + 60
        while sacct([gone["job_id"]], "State").get(gone["job_id"], {}).get("State", "").split()[:1] != ["CANCELLED"]:
            assert time.time() < deadline, sacct([gone["job_id"]], "State")
            time.sleep(0.5)
        table, calls = counting_status(monkeypatch, capsys, root, data_root, sweep)
        assert f"{gone_run}  cancelled" in table and "5 points: 4 pending, 1 cancelled" in table, table
        assert [c[0] for c in calls] == ["squeue", "sacct"], calls
        assert calls[1][calls[1].index("-j") + 1] == gone["job_id"], calls[1]
    finally:
        cancelled = cancel(root)
    assert cancelled.returncode == 0, cancelled.stderr
    wait_gone([p["job_id"] for p in points.values()], timeout=60)
