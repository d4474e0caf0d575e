"""The result store: round trip, bad files reported not raised, concurrent writers."""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
from pathlib import Path

import pytest

import store


def make_record(**overrides):
    """A valid record of a classification set (values as evaluate() writes them)."""
    record = {
        "dataset": "wds/synth_shapes",
        "model": "clipscale-tiny-s",
        "pretrained": "/runs/r0/checkpoints/epoch_1.pt",
        "task": "zeroshot_classification",
        "metrics": {"acc1": 0.25, "acc5": 0.5, "mean_per_class_recall": 0.24},
        "language": "en",
        "schema_version": store.SCHEMA_VERSION,
        "run_id": "r0",
        "model_name": "tiny_s",
        "model_label": "Tiny-S",
        "arch": "clipscale-tiny-s",
        "data": "syn4k",
        "data_label": "Syn-4k",
        "samples": "s6k",
        "samples_seen": 6144,
        "gmacs": 0.01,
        "compute": 61.44,
        "step": 48,
        "final": True,
        "family": "adhoc",
        "config_hash": "abc123",
        "git_commit": "deadbeef",
        "eval_seconds": 1.5,
        "created": "2025-01-01T00:00:00+00:00",
    }
    record.update(overrides)
    return record


def retrieval_record(**overrides):
    metrics = {
        "image_retrieval_recall@5": 0.1,
        "text_retrieval_recall@5": 0.2,
    }
    return make_record(
        dataset="wds/synth_scenes", task="zeroshot_retrieval", metrics=metrics, **overrides
    )


def test_record_path_layout(tmp_path):
    path = store.record_path(tmp_path / "r0", 48, "wds/synth_shapes", "zeroshot_classification")
    assert path == tmp_path / "r0/eval/step_00000048/wds_synth_shapes__zeroshot_classification.json"


def test_round_trip(tmp_path):
    a = make_record()
    b = retrieval_record(step=96, final=False)
    pa = store.write_record(tmp_path / "r0", a)
    pb = store.write_record(tmp_path / "r0", b)
    assert pa == store.record_path(tmp_path / "r0", 48, a["dataset"], a["task"])
    assert pb.parent.name == "step_00000096"
    json.loads(pa.read_text())  # plain JSON
    records, problems = store.read_records(tmp_path)
    assert problems == []
    assert sorted(records, key=lambda r: r["step"]) == [a, b]


def test_nan_metric_is_stored_as_null(tmp_path):
    path = store.write_record(tmp_path / "r0", make_record(metrics={"acc1": 0.5, "acc5": math.nan}))
    assert json.loads(path.read_text())["metrics"]["acc5"] is None  # strict JSON has no NaN
    frame = store.records_frame(tmp_path)
    assert math.isnan(frame.loc[0, "acc5"])


def test_write_rejects_missing_key(tmp_path):
    record = make_record()
    del record["samples_seen"]
    with pytest.raises(ValueError, match="samples_seen"):
        store.write_record(tmp_path / "r0", record)
    assert not (tmp_path / "r0").exists()  # nothing written


def test_bad_files_are_reported_and_skipped(tmp_path, caplog):
    good = store.write_record(tmp_path / "r0", make_record())
    step_dir = good.parent
    truncated = step_dir / "truncated__zeroshot_classification.json"
    truncated.write_text(good.read_text()[:40])
    not_json = step_dir / "garbage__zeroshot_classification.json"
    not_json.write_bytes(b"\x00\xffnot json at all")
    missing = step_dir / "missing__zeroshot_classification.json"
    record = make_record()
    del record["gmacs"]
    missing.write_text(json.dumps(record))
    future = step_dir / "future__zeroshot_classification.json"
    future.write_text(json.dumps(make_record(schema_version=store.SCHEMA_VERSION + 1)))
    not_object = step_dir / "list__zeroshot_classification.json"
    not_object.write_text("[1, 2]")

    records, problems = store.read_records(tmp_path)

    assert records == [make_record()]
    reasons = dict(problems)
    assert set(reasons) == {truncated, not_json, missing, future, not_object}
    assert "JSON" in reasons[truncated]
    assert "gmacs" in reasons[missing]
    assert "schema_version" in reasons[future]
    assert "not a JSON object" in reasons[not_object]
    with caplog.at_level(logging.WARNING, logger="store"):
        frame = store.records_frame(tmp_path)
    assert len(frame) == 1
    for path in (truncated, not_json, missing, future, not_object):
        assert str(path) in caplog.text


def _write_many(args):
    root, writer, n = args
    for i in range(n):
        run_dir = Path(root) / f"run{writer}"
        store.write_record(run_dir, make_record(run_id=f"run{writer}", step=i))


def _overwrite_same(args):
    root, writer, n = args
    for i in range(n):
        store.write_record(Path(root) / "shared", make_record(run_id=f"w{writer}", eval_seconds=i))


def _pool_map(func, args):
    # separate processes, not threads: writers on different nodes share nothing but the disk
    with multiprocessing.get_context("fork").Pool(len(args)) as pool:
        pool.map(func, args)


def test_concurrent_writers_lose_nothing(tmp_path):
    _pool_map(_write_many, [(str(tmp_path), w, 25) for w in range(8)])
    _pool_map(_overwrite_same, [(str(tmp_path), w, 25) for w in range(8)])

    records, problems = store.read_records(tmp_path)

    assert problems == []
    assert len(records) == 8 * 25 + 1  # the shared path ends with one whole record
    assert {(r["run_id"], r["step"]) for r in records if r["run_id"].startswith("run")} == {
        (f"run{w}", i) for w in range(8) for i in range(25)
    }
    assert [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".json"] == []


def test_records_frame_columns(tmp_path):
    store.write_record(tmp_path / "r0", make_record())
    store.write_record(tmp_path / "r0", retrieval_record())
    frame = store.records_frame(tmp_path).set_index("task")

    for column in ("run_id", "model_name", "data", "samples_seen", "compute", "step", "family"):
        assert column in frame.columns
    assert "metrics" not in frame.columns
    assert frame.loc["zeroshot_classification", "acc1"] == 0.25
    assert frame.loc["zeroshot_retrieval", "text_retrieval_recall@5"] == 0.2
    assert math.isnan(frame.loc["zeroshot_retrieval", "acc1"])
    assert frame["acc1"].dtype == float


def test_records_frame_empty(tmp_path):
    frame = store.records_frame(tmp_path)
    assert frame.empty and "run_id" in frame.columns
