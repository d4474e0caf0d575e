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
