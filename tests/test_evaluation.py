"""The evaluation stage end to end: a real (random) tiny model scored by clip_benchmark on
tiny sets written in clip_benchmark's wds/ layout, records in the store, resume, missing root;
a set decoded once per process gives the same records (and is not decoded again), a set too
large to keep is streamed."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import store
from evaluation import evaluate as evaluate_mod
from evaluation.evaluate import LoadedSets, evaluate
from tests.helpers.data import write_classification_set, write_retrieval_set
from tests.helpers.evaluation import ARCH, tiny_cfg, tiny_state_dict


@pytest.fixture(scope="module")
def eval_sets(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval_sets")
    shapes = ["circle", "square", "triangle", "star", "cross", "heart", "moon", "arrow"]
    write_classification_set(root / "shapes", shapes, seed=0)
    write_classification_set(root / "few", shapes[:3], seed=1)  # < 5 classes: acc5 is NaN
    write_retrieval_set(root / "scenes", seed=2)
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised tiny model saved as open_clip_train saves checkpoints."""
    path = tmp_path_factory.mktemp("ckpt") / "epoch_1.pt"
    torch.save({"epoch": 1, "state_dict": tiny_state_dict()}, path)
    return path


def test_evaluate_writes_records_then_resumes(eval_sets, checkpoint, tmp_path, make_cfg):
    run_dir = tmp_path / "run-a"
    run_dir.mkdir()
    meta = {"run_id": "tiny_s-syn4k-s6k-1a2b", "config_hash": "1a2b", "git_commit": "cafe"}
    (run_dir / "meta.json").write_text(json.dumps(meta))
    cfg = tiny_cfg(make_cfg, eval_sets)

    records = evaluate(cfg, run_dir, checkpoint, step=48)

    by_set = {r["dataset"]: r for r in records}
    assert set(by_set) == {"wds/shapes", "wds/few", "wds/scenes"}
    stored, problems = store.read_records(tmp_path)
    assert problems == [] and sorted(stored, key=str) == sorted(records, key=str)
    for r in records:
        assert r["run_id"] == meta["run_id"] and r["git_commit"] == "cafe"
        assert r["samples_seen"] == 48 * 128 and r["compute"] == pytest.approx(0.02 * 48 * 128)
        assert r["family"] == "adhoc" and r["final"] is True and r["eval_seconds"] > 0
        assert r["model"] == ARCH and r["pretrained"] == str(checkpoint)
        values = [v for v in r["metrics"].values() if v is not None]
        assert values and all(0.0 <= v <= 1.0 for v in values)
    assert set(by_set["wds/shapes"]["metrics"]) == {"acc1", "acc5", "mean_per_class_recall"}
    assert by_set["wds/few"]["metrics"]["acc5"] is None  # clip_benchmark's NaN, as JSON null
    assert set(by_set["wds/scenes"]["metrics"]) == {
        f"{d}_retrieval_recall@{k}" for d in ("image", "text") for k in (1, 5)
    }

    # resume: nothing is evaluated again (no model loaded: a missing checkpoint is not noticed)
    again = evaluate(cfg, run_dir, tmp_path / "no-such-checkpoint.pt", step=48)
    assert sorted(again, key=str) == sorted(records, key=str)  # same `created`, same metrics


def test_embedded_config_on_generated_sets(make_cfg, checkpoint):
    """The real composed config (eval=embedded) on synthetic/generate.py's held-out sets."""
    from synthetic import generate_eval

    cfg = make_cfg()
    generate_eval(Path(cfg.data_root) / "synthetic" / "eval", n_classification=48, n_retrieval=48)
    cfg.eval.batch_size = 32
    run_dir = Path(cfg.root) / "tiny_s-run"

    records = evaluate(cfg, run_dir, checkpoint, step=2)

    assert sorted((r["dataset"], r["task"]) for r in records) == [
        ("synth_robustness", "zeroshot_classification"),
        ("synth_vtab", "zeroshot_classification"),
        ("synth_vtab+", "zeroshot_classification"),
        ("wds/synth_positions", "linear_probe"),
        ("wds/synth_positions", "linear_probe_10shot"),
        ("wds/synth_positions", "zeroshot_classification"),
        ("wds/synth_scenes", "zeroshot_retrieval"),
        ("wds/synth_shapes", "zeroshot_classification"),
        ("wds/synth_shapes_outline", "zeroshot_classification"),
    ]
    by_key = {(r["dataset"], r["task"]): r for r in records}
    vtab = by_key["synth_vtab", "zeroshot_classification"]
    members = [by_key[f"wds/{m}", "zeroshot_classification"] for m in vtab["members"]]
    assert vtab["members"] == ["synth_shapes", "synth_positions"]
    assert vtab["metrics"]["acc1"] == pytest.approx(np.mean([m["metrics"]["acc1"] for m in members]))
    robust = by_key["synth_robustness", "zeroshot_classification"]
    assert robust["metrics"] == by_key["wds/synth_shapes_outline", "zeroshot_classification"]["metrics"]
    assert by_key["wds/synth_positions", "linear_probe_10shot"]["fewshot_k"] == 10
    assert store.read_records(cfg.root) == (sorted(records, key=_path_of(run_dir)), [])
    for r in records:
        assert r["model_name"] == cfg.model.name and r["data"] == cfg.data.name
        assert r["samples_seen"] == 2 * cfg.model.global_batch
        assert r["compute"] == pytest.approx(cfg.model.gmacs * r["samples_seen"])
        assert all(v is None or 0.0 <= v <= 1.0 for v in r["metrics"].values())


def _path_of(run_dir):
    return lambda r: store.record_path(run_dir, r["step"], r["dataset"], r["task"])


def test_missing_root_is_skipped_and_others_run(eval_sets, checkpoint, tmp_path, caplog, make_cfg):
    datasets = [
        {"name": "gone", "task": "zeroshot_classification", "root": str(tmp_path / "nowhere")},
        {"name": "scenes", "task": "zeroshot_retrieval", "root": str(eval_sets / "scenes")},
    ]
    run_dir = tmp_path / "run-b"  # no meta.json: run id falls back to the folder name
    with caplog.at_level(logging.ERROR, logger="evaluation.evaluate"):
        records = evaluate(tiny_cfg(make_cfg, eval_sets, datasets), run_dir, checkpoint, step=3,
                           final=False)

    assert [r["dataset"] for r in records] == ["wds/scenes"]
    assert records[0]["run_id"] == "run-b" and records[0]["config_hash"] == "unknown"
    assert records[0]["final"] is False
    assert "gone" in caplog.text and str(tmp_path / "nowhere") in caplog.text
    assert not store.record_path(run_dir, 3, "wds/gone", "zeroshot_classification").exists()


def test_unknown_task_fails_before_anything_runs(eval_sets, tmp_path, make_cfg):
    datasets = [{"name": "shapes", "task": "segmentation", "root": str(eval_sets / "shapes")}]
    with pytest.raises(ValueError, match="segmentation"):
        evaluate(tiny_cfg(make_cfg, eval_sets, datasets), tmp_path / "run", tmp_path / "x.pt", step=1)


def test_bad_stored_record_is_recomputed(eval_sets, checkpoint, tmp_path, make_cfg):
    datasets = [{"name": "few", "task": "zeroshot_classification", "root": str(eval_sets / "few")}]
    run_dir = tmp_path / "run-c"
    path = store.record_path(run_dir, 1, "wds/few", "zeroshot_classification")
    path.parent.mkdir(parents=True)
    path.write_text('{"dataset": "wds/few", "trunc')

    records = evaluate(tiny_cfg(make_cfg, eval_sets, datasets), run_dir, checkpoint, step=1)

    assert len(records) == 1 and store.read_record(path) == records[0]
    assert math.isclose(records[0]["compute"], 0.02 * 128)


# --- what makes the demo faster changes no result: a set decoded once per process ---


def test_loaded_sets_serve_a_set_again_and_stream_a_large_one():
    batches = [(torch.ones(4, 3, 2, 2), torch.arange(4)), (torch.zeros(2, 3, 2, 2), torch.arange(2))]
    sets = LoadedSets()
    assert list(sets.batches(("k",), iter(batches))) == batches
    again = sets.batches(("k",), iter(()))  # not read: served from memory
    assert all(torch.equal(a[0], b[0]) for a, b in zip(again, batches, strict=True))
    small = LoadedSets(max_bytes=100)
    assert len(list(small.batches(("k",), iter(batches)))) == 2 and small.sets == {}


@pytest.fixture
def small_sets(tmp_path: Path) -> Path:
    root = tmp_path / "sets"
    write_classification_set(root / "shapes", ["circle", "square", "triangle", "star", "cross",
                                               "heart"], seed=0)
    write_retrieval_set(root / "scenes", seed=2)
    return root


def test_second_evaluation_reads_no_set_and_scores_the_same(small_sets, tmp_path, make_cfg,
                                                            monkeypatch):
    ckpt = tmp_path / "epoch_1.pt"
    torch.save({"epoch": 1, "state_dict": tiny_state_dict()}, ckpt)
    datasets = [
        {"name": "shapes", "task": "zeroshot_classification", "root": str(small_sets / "shapes")},
        {"name": "scenes", "task": "zeroshot_retrieval", "root": str(small_sets / "scenes")},
    ]
    cfg = tiny_cfg(make_cfg, small_sets, datasets)
    monkeypatch.setattr(evaluate_mod, "LOADED", LoadedSets())
    first = evaluate(cfg, tmp_path / "a", ckpt, step=1)
    assert len(evaluate_mod.LOADED.sets) == 2  # both sets kept

    def no_loading(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(evaluate_mod.LoadedSets, "_load", no_loading)
    second = evaluate(cfg, tmp_path / "b", ckpt, step=1)
    metrics = [{(r["dataset"], r["task"]): r["metrics"] for r in rs} for rs in (first, second)]
    assert metrics[0] == metrics[1] and len(metrics[0]) == 2
