"""Run states and their SLURM view, without a cluster: the status log alone (rundir.state)
and the rules that combine it with squeue/sacct (slurm.live_state, slurm.job_info)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launcher import rundir, slurm


def log(path: Path, *events: tuple[str, dict]) -> None:
    for name, fields in events:
        rundir.log_event(path, name, **fields)


@pytest.mark.parametrize(("events", "state"), [
    ([], "new"),
    ([("submitted", {"job_id": "7"})], "submitted"),
    ([("submitted", {"job_id": "7"}), ("start", {"job_id": "7"})], "partial"),
    ([("start", {}), ("trained", {"step": 4})], "trained"),
    ([("start", {}), ("trained", {}), ("evaluated", {}), ("done", {})], "done"),
    ([("start", {}), ("failed", {"error": "x"})], "failed"),
    # a job that logs on its way out after scancel does not undo the cancel ...
    ([("start", {"job_id": "7"}), ("cancelled", {}), ("preempted", {"step": 3})], "cancelled"),
    # ... until the point is submitted again
    ([("start", {}), ("cancelled", {}), ("submitted", {"job_id": "8"})], "submitted"),
    # scancel failed: the cancel did not happen
    ([("start", {"job_id": "7"}), ("cancelled", {}), ("cancel_failed", {})], "partial"),
])
def test_state_from_the_status_log(tmp_path: Path, events, state) -> None:
    log(tmp_path, *events)
    assert rundir.state(tmp_path) == state


def test_the_last_error_names_its_cause_first(tmp_path: Path) -> None:
    # the status table keeps 80 characters of it: the cause must come before gloo's file path
    log(tmp_path, ("start", {}), ("failed", {"error": "ValueError: x"}))
    assert rundir.last_error(tmp_path) == "ValueError: x"
    gloo = "RuntimeError: [/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:534]"
    log(tmp_path, ("start", {}), ("failed", {"error": gloo, "cause": "lost a peer rank (a node failed?)"}))
    assert rundir.last_error(tmp_path) == f"lost a peer rank (a node failed?): {gloo}"


def test_the_training_job_owns_a_point_until_trained_then_its_evaluation_job(tmp_path: Path) -> None:
    log(tmp_path, ("submitted", {"job_id": "5_0", "eval_job_id": "6_0", "stage": "train"}))
    assert slurm.job_info(tmp_path)[:2] == ("5_0", "train")
    log(tmp_path, ("start", {"job_id": "5_0", "stage": "train"}), ("trained", {"step": 4}))
    assert slurm.job_info(tmp_path)[:2] == ("6_0", "eval")
    assert slurm.point_jobs(tmp_path) == {"train": "5_0", "eval": "6_0"}
    # a relaunch of the trained point submits the evaluation alone
    log(tmp_path, ("submitted", {"job_id": "9_0", "stage": "eval"}))
    assert slurm.point_jobs(tmp_path) == {"eval": "9_0"}
    assert slurm.job_info(tmp_path)[:2] == ("9_0", "eval")


@pytest.mark.parametrize(("run_state", "squeue", "sacct", "last", "live"), [
    ("submitted", {"5": "PENDING"}, {}, "submitted", "pending"),
    ("partial", {"5": "RUNNING"}, {}, "start", "running"),
    ("partial", {"5": "PENDING"}, {}, "preempted", "requeued"),
    ("failed", {"5": "PENDING"}, {}, "failed", "requeued"),  # the attempt failed; SLURM requeued it
    ("failed", {"5": "COMPLETING"}, {}, "failed", "failed"),
    ("failed", {"5": "RUNNING"}, {}, "failed", "running"),  # requeued, running, not logged yet
    ("failed", {"5": "REQUEUED"}, {}, "failed", "requeued"),
    ("cancelled", {"5": "RUNNING"}, {}, "cancelled", "cancelled"),  # scancel'd, still stopping
    ("partial", {}, {"5": "FAILED"}, "start", "failed"),  # killed: the folder never learnt it
    ("partial", {}, {"5": "CANCELLED"}, "start", "cancelled"),
    ("partial", {}, {}, "start", "partial"),  # no accounting: the folder's word
    ("done", {}, {"5": "COMPLETED"}, "done", "done"),
])
def test_live_state(run_state, squeue, sacct, last, live) -> None:
    assert slurm.live_state(run_state, "5", squeue, sacct, last) == live


def test_an_unreadable_manifest_is_kept_aside_not_overwritten(tmp_path: Path, capsys) -> None:
    path = tmp_path / "_slurm" / "cli.json"
    path.parent.mkdir()
    path.write_text('{"points": {"a-1": {"job_id": "5"}')  # torn
    slurm.update_manifest(path, {"b-2": {"job_id": "6"}})
    kept, = path.parent.glob("cli.json.unreadable-*")
    assert kept.read_text() == '{"points": {"a-1": {"job_id": "5"}'
    assert list(json.loads(path.read_text())["points"]) == ["b-2"]
    assert "unreadable" in capsys.readouterr().err
    slurm.update_manifest(path, {"c-3": {"job_id": "7"}})  # a good one is merged into
    assert list(json.loads(path.read_text())["points"]) == ["b-2", "c-3"]


def test_a_misspelt_stage_is_refused_before_anything_runs(make_cfg) -> None:
    """``stage`` is typed (core.schema.Stage): a wrong value fails at composition, naming the
    key and the valid values, before any point is planned."""
    from hydra.errors import ConfigCompositionException

    from launcher.sweep import composition_error

    with pytest.raises(ConfigCompositionException) as e:
        make_cfg("stage=trian")
    assert composition_error(e.value) == ("Error merging override stage=trian: Invalid value "
                                          "'trian', expected one of [all, train, eval]")


@pytest.mark.parametrize(("answer", "size"), [
    ("MaxArraySize            = 4\nMaxBatchRequeue         = 5\n", 4),
    ("MaxArraySize = 200001\n", 200001),
    ("MaxArraySize            = 0\n", 1),  # arrays disabled: one point per job
    ("MaxBatchRequeue         = 5\n", 1001),  # not said: SLURM's default
    ("MaxArraySize            = (null)\n", 1001),
    (slurm.SlurmError("scontrol show config: Unable to contact slurm controller"), 1001),
])
def test_max_array_size_from_scontrol(monkeypatch: pytest.MonkeyPatch, answer, size) -> None:
    calls = []

    def run(cmd: list[str], timeout: float = 30) -> str:
        calls.append(cmd)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(slurm, "_run", run)
    assert slurm.max_array_size() == size
    assert calls == [["scontrol", "show", "config"]]


def test_status_table_reads_each_status_log_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The table of a few points, without SLURM: progress from the training log's last line,
    the newest checkpoint's age, the error of a failed point; each status log read once, the
    training log only of points whose training is not finished."""
    import os
    import time

    from launcher import status

    def point(name: str, seen: int, *events: tuple[str, dict], log_lines: int = 0,
              ckpt_age_s: float | None = None) -> status.Entry:
        path = tmp_path / name
        log(path, *events)
        if log_lines:
            path.mkdir(exist_ok=True)
            (path / "train_log.jsonl").write_text("".join(
                json.dumps({"step": s, "samples_seen": 128 * s}) + "\n" for s in range(1, log_lines + 1)))
        if ckpt_age_s is not None:
            (path / "checkpoints").mkdir(parents=True)
            for name_, age in (("step_00000004.pt", ckpt_age_s + 600), ("step_00000008.pt", ckpt_age_s)):
                (path / "checkpoints" / name_).write_bytes(b"x")
                t = time.time() - age
                os.utime(path / "checkpoints" / name_, (t, t))
            (path / "checkpoints" / "step_00000008.pt.done").write_bytes(b"")
        return status.Entry(name, path, seen)

    points = [
        point("a-done", 1024, ("start", {}), ("trained", {}), ("done", {}), log_lines=3, ckpt_age_s=7200),
        point("b-failed", 2048, ("start", {}), ("failed", {"error": "NonFiniteLoss: loss is nan"}),
              log_lines=5, ckpt_age_s=120),
        point("c-partial", 4096, ("start", {}), log_lines=7, ckpt_age_s=30),
        point("d-new", 8192),
    ]
    reads: list[Path] = []
    events, progress = rundir.events, status._progress
    monkeypatch.setattr(rundir, "events", lambda p: reads.append(p) or events(p))
    monkeypatch.setattr(status, "_progress", lambda p: reads.append(p / "train_log") or progress(p))
    table = status.status_table(points).splitlines()
    assert sorted(map(str, reads)) == sorted(
        [str(p.run_dir) for p in points] + [str(p.run_dir / "train_log") for p in points[1:]])
    cells = [line.split(None, 6) for line in table[2:-1]]  # run id, state, seen / total, age, rest
    rows = {c[0]: [*c[1:6], *c[6].split(None, 1)] for c in cells}
    assert rows["a-done"] == ["done", "1.02k", "/", "1.02k", "2.0h", "-"]
    assert rows["b-failed"] == ["failed", "640", "/", "2.05k", "2m", "-", "NonFiniteLoss: loss is nan"]
    assert rows["c-partial"] == ["partial", "896", "/", "4.1k", "30s", "-"]
    assert rows["d-new"] == ["new", "0", "/", "8.19k", "-", "-"]
    assert table[-1] == "4 points: 1 new, 1 partial, 1 done, 1 failed"
