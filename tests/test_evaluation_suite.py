"""The suite around the evaluation stage: the paper's config, aggregates, the CPU linear
probe, checkpoint loading errors, the CLI, and the store's export / paper import."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import open_clip
import pandas as pd
import pytest
import torch
from clip_benchmark.datasets.builder import dataset_collection
from omegaconf import OmegaConf

import store
from core.models import register_model_configs
from core.reference import PAPER_CSV
from evaluation import __main__ as cli
from evaluation.checkpoint import CheckpointError, load_model, load_state_dict
from evaluation.evaluate import _aggregates, missing_roots, plan_jobs
from evaluation.probe import fewshot_indices, linear_probe, probe_task
from store.export import REFERENCE_COLUMNS, export_csv, import_paper
from tests.helpers.data import write_classification_set, write_retrieval_set
from tests.helpers.evaluation import ARCH, tiny_cfg, tiny_state_dict
from training import checkpoint as ckpts

torch.set_num_threads(1)


# --- the paper's suite as configuration ---------------------------------------------------


def test_paper_suite_matches_clip_benchmark_and_the_reference(make_cfg, tmp_path):
    cfg = make_cfg("eval=paper", f"eval.data_dir={tmp_path}/cb")
    zs = [d.name for d in cfg.eval.datasets if d.task == "zeroshot_classification"]
    assert zs == dataset_collection["vtab+"] and len(zs) == 36
    assert sum(n.startswith("vtab/") for n in zs) == 19
    assert [d.name for d in cfg.eval.datasets if d.task == "zeroshot_retrieval"] == [
        "mscoco_captions", "flickr30k"]
    probes = [d.name for d in cfg.eval.datasets if d.task == "linear_probe"]
    assert probes == ["imagenet1k", "vtab/cifar100"] and list(cfg.eval.probe.fewshot_k) == [-1, 10, 25]
    aggs = cfg.eval.aggregates
    assert list(aggs["vtab+"]) == zs and list(aggs["vtab"]) == [n for n in zs if n.startswith("vtab/")]
    assert list(aggs["imagenet_robustness"]) == dataset_collection["imagenet_robustness"]
    # every set and aggregate is one the paper reports
    reference = set(pd.read_csv(PAPER_CSV)["downstream_dataset"])
    assert {d.name for d in cfg.eval.datasets} | set(aggs) <= reference
    assert cfg.eval.datasets[0].root == f"{tmp_path}/cb/wds_imagenet1k"
    # with no data at all, every dataset is named, nothing raises
    missing = missing_roots([j.ds for j in plan_jobs(cfg.eval)])
    assert {name for name, _ in missing} == {d.name for d in cfg.eval.datasets}
    assert len(plan_jobs(cfg.eval)) == 36 + 2 + 2 * 3


# --- aggregates ---------------------------------------------------------------------------


def _record(dataset, metrics, **extra):
    base = {k: "x" for k in store.REQUIRED_KEYS}
    return {**base, "schema_version": store.SCHEMA_VERSION, "step": 5, "final": True,
            "eval_seconds": 1.0, "dataset": f"wds/{dataset}", "task": "zeroshot_classification",
            "metrics": metrics, **extra}


def test_aggregates_are_means_of_members_once_all_exist(tmp_path):
    eval_cfg = OmegaConf.create({"aggregates": {"rob": ["a", "b"], "all": ["a", "b", "c"]}})
    base = {k: v for k, v in _record("a", {}).items()
            if k not in ("dataset", "task", "metrics", "eval_seconds", "created")}
    records = [
        _record("a", {"acc1": 0.2, "acc5": None}),
        _record("b", {"acc1": 0.6, "acc5": 0.8, "mean_average_precision": 0.5}),
    ]
    out = _aggregates(eval_cfg, tmp_path, base, 5, records)
    assert [r["dataset"] for r in out] == ["rob"]  # "all" lacks c: not written
    rob = out[0]
    assert rob["members"] == ["a", "b"] and rob["task"] == "zeroshot_classification"
    assert rob["metrics"] == {"acc1": pytest.approx(0.4), "acc5": 0.8,
                              "mean_average_precision": 0.5}  # nulls skipped
    assert store.read_record(store.record_path(tmp_path, 5, "rob", "zeroshot_classification")) == rob
    # once c exists, "all" appears; "rob" is read back, not rewritten
    records.append(_record("c", {"acc1": 1.0}))
    again = _aggregates(eval_cfg, tmp_path, base, 5, records)
    assert again[0] == rob and again[1]["metrics"]["acc1"] == pytest.approx(0.6)


# --- linear probe on CPU ------------------------------------------------------------------


def test_linear_probe_separates_a_toy_set():
    g = torch.Generator().manual_seed(0)
    n_classes, dim = 6, 16
    centers = torch.randn(n_classes, dim, generator=g) * 3

    def blobs(n):
        y = torch.arange(n) % n_classes
        x = centers[y] + torch.randn(n, dim, generator=g)
        return torch.nn.functional.normalize(x, dim=-1), y

    (tx, ty), (vx, vy) = blobs(300), blobs(120)
    cfg = OmegaConf.create({"lrs": [0.1, 0.01], "epochs": [5, 30], "weight_decay": 0.0,
                            "batch_size": 64, "val_proportion": 0.2, "seed": 0})
    metrics, info = linear_probe(tx, ty, vx, vy, n_classes, -1, cfg)
    assert metrics["lp_acc1"] > 0.9 and metrics["lp_mean_per_class_recall"] > 0.9  # chance: 1/6
    assert info["probe_lr"] in (0.1, 0.01) and info["probe_epochs"] in (5, 30)
    few, info = linear_probe(tx, ty, vx, vy, n_classes, 10, cfg)
    assert info["probe_train_samples"] == 60 and few["lp_acc1"] > 0.7
    assert linear_probe(tx, ty, vx, vy, n_classes, 10, cfg)[0] == few  # deterministic


def test_fewshot_indices_take_k_per_class():
    y = torch.tensor([0] * 20 + [1] * 3 + [2] * 30)
    idx = fewshot_indices(y, 5, seed=1)
    counts = torch.bincount(y[idx]).tolist()
    assert counts == [5, 3, 5] and len(set(idx.tolist())) == 13
    assert fewshot_indices(y, -1, 0).tolist() == list(range(len(y)))
    assert (probe_task(-1), probe_task(10)) == ("linear_probe", "linear_probe_10shot")


# --- checkpoints --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_state():
    return tiny_state_dict()


def test_random_bytes_are_not_a_checkpoint(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(CheckpointError, match=r"junk\.pt: not a torch checkpoint"):
        load_model(ARCH, path, "cpu")


def test_a_torch_file_without_weights_is_named(tmp_path):
    path = tmp_path / "optim.pt"
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, path)
    with pytest.raises(CheckpointError, match=r"optim\.pt: holds no model state dict.*epoch"):
        load_state_dict(path)


def test_code_in_a_checkpoint_is_never_executed(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "payload": _Evil()}, path)  # pickles a reduce call
    with pytest.raises(CheckpointError, match="weights_only"):
        load_state_dict(path)
    assert not (tmp_path / "pwned").exists()


class _Evil:
    def __reduce__(self):
        return (Path.touch, (Path(__file__).parent / "pwned",))


def test_checkpoint_of_another_arch_is_refused(tmp_path):
    register_model_configs()
    other = open_clip.create_model("clipscale-tiny-m").state_dict()
    path = tmp_path / "tiny_m.pt"
    torch.save({"epoch": 1, "state_dict": other}, path)
    with pytest.raises(CheckpointError, match=rf"tiny_m\.pt does not fit architecture {ARCH}"):
        load_model(ARCH, path, "cpu")


def test_ddp_prefixed_and_bare_state_dicts_load(tmp_path, tiny_state):
    ddp = tmp_path / "ddp.pt"
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in tiny_state.items()}}, ddp)
    bare = tmp_path / "bare.pt"
    torch.save(tiny_state, bare)
    for path in (ddp, bare):
        model, _, _ = load_model(ARCH, path, "cpu")
        key = "logit_scale"
        assert torch.equal(model.state_dict()[key], tiny_state[key])


# --- the CLI: a checkpoint on a suite with a missing root ---------------------------------


def test_cli_checkpoint_reports_missing_root_and_runs_the_rest(tmp_path, tiny_state, monkeypatch, capsys):
    sets = tmp_path / "sets"
    write_classification_set(sets / "shapes", ["circle", "square", "star", "cross", "moon"], 0)
    write_retrieval_set(sets / "scenes", seed=1)
    conf = tmp_path / "conf_eval"
    conf.mkdir()
    (conf / "mini.yaml").write_text(json.dumps({
        "data_dir": str(sets),
        "datasets": [
            {"name": "shapes", "task": "zeroshot_classification", "root": "${eval.data_dir}/shapes"},
            {"name": "gone", "task": "zeroshot_classification", "root": "${eval.data_dir}/gone"},
            {"name": "scenes", "task": "zeroshot_retrieval", "root": "${eval.data_dir}/scenes"},
        ],
        "aggregates": {"mean": ["shapes"], "broken": ["shapes", "gone"]},
        "batch_size": 32, "recall_k": [1, 5],
    }))
    monkeypatch.setattr(cli, "CONF_EVAL", conf)
    ckpt = tmp_path / "epoch_1.pt"
    torch.save({"epoch": 1, "state_dict": tiny_state}, ckpt)
    argv = ["checkpoint", "--path", str(ckpt), "--arch", ARCH, "--eval", "mini",
            "--root", str(tmp_path / "runs"), "--run-id", "ext", "--step", "10",
            "--global-batch", "4", "--gmacs", "0.5"]

    assert cli.main(argv) == 0

    err = capsys.readouterr().err
    assert f"MISSING gone: root {sets / 'gone'} does not exist" in err
    records, problems = store.read_records(tmp_path / "runs")
    assert problems == []
    assert sorted(r["dataset"] for r in records) == ["mean", "wds/scenes", "wds/shapes"]
    assert all(r["run_id"] == "ext" and r["samples_seen"] == 40 for r in records)
    assert all(r["compute"] == pytest.approx(20.0) for r in records)


# --- export and paper import --------------------------------------------------------------


def test_export_columns_equal_the_reference_csv(tmp_path):
    with open(PAPER_CSV, newline="") as f:
        assert tuple(next(csv.reader(f))) == REFERENCE_COLUMNS
    run_dir = tmp_path / "runs" / "r1"
    rec = _record("synth_shapes", {"acc1": 0.5, "acc5": None, "mean_per_class_recall": 0.4},
                  arch=ARCH, samples_seen=640, compute=64.0, gmacs=0.1, data="syn4k",
                  data_label="Synth-4k", samples="s6k", run_id="r1")
    store.write_record(run_dir, rec)
    probe = {**rec, "task": "linear_probe", "metrics": {"lp_acc1": 0.9}}
    store.write_record(run_dir, probe)
    store.write_record(run_dir, {**rec, "step": 1, "final": False})  # intermediate: not exported
    n, problems = export_csv(tmp_path / "runs", tmp_path / "out.csv")
    assert n == 2 and problems == []
    out = pd.read_csv(tmp_path / "out.csv")
    assert tuple(out.columns) == REFERENCE_COLUMNS
    row = out[out["task"] == "zeroshot_classification"].iloc[0]
    assert row["downstream_dataset"] == "synth_shapes" and row["acc1"] == 0.5
    assert math.isnan(row["acc5"]) and row["gmacs_total"] == 64.0 and row["name"] == "r1"
    assert out[out["task"] == "linear_probe"]["acc1"].tolist() == [0.9]
    # the paper's frame and ours concatenate column for column
    both = pd.concat([pd.read_csv(PAPER_CSV), out], ignore_index=True)
    assert tuple(both.columns) == REFERENCE_COLUMNS


def test_import_paper_is_idempotent_and_round_trips(tmp_path):
    root = tmp_path / "runs"
    paper = pd.read_csv(PAPER_CSV)
    assert import_paper(root) == (len(paper), 0)
    files = sorted(root.rglob("*.json"))
    stamps = [p.stat().st_mtime_ns for p in files]
    assert import_paper(root) == (0, len(paper))  # nothing rewritten
    assert [p.stat().st_mtime_ns for p in sorted(root.rglob("*.json"))] == stamps

    records, problems = store.read_records(root)
    assert problems == [] and len(records) == len(paper)
    assert {r["family"] for r in records} == {"openclip", "openai"}
    assert len({r["run_id"] for r in records}) == paper[["name", "arch"]].drop_duplicates().shape[0]

    assert export_csv(root, tmp_path / "paper.csv")[0] == len(paper)
    key = ["name", "arch", "downstream_dataset", "task"]
    ours = pd.read_csv(tmp_path / "paper.csv").rename(columns={"name": "run_id"})
    back = {r["run_id"]: r["pretrained"] for r in records}  # the paper's name is kept there
    ours["name"] = ours["run_id"].map(back)
    ours = ours[list(REFERENCE_COLUMNS)].sort_values(key).reset_index(drop=True)
    ref = paper.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(ours, ref, check_dtype=False)


def test_cli_run_evaluates_intermediate_then_final_checkpoints(tmp_path, tiny_state, make_cfg):
    sets = tmp_path / "sets"
    write_classification_set(sets / "shapes", ["circle", "square", "star", "cross", "moon"], 0)
    cfg = tiny_cfg(make_cfg, sets, [{"name": "shapes", "task": "zeroshot_classification",
                                     "root": str(sets / "shapes")}])
    run_dir = tmp_path / "runs" / "r"
    run_dir.mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / "config.yaml")
    ckpts.save(run_dir, 2, {"state_dict": tiny_state, "final": False}, keep=3)
    ckpts.save(run_dir, 3, {"state_dict": tiny_state, "final": False}, keep=3)

    assert cli.main(["run", "--run-dir", str(run_dir), "--all-steps"]) == 0  # the learning curve
    ckpts.save(run_dir, 4, {"state_dict": tiny_state, "final": True}, keep=3)
    assert cli.main(["run", "--run-dir", str(run_dir)]) == 0  # the newest: final.pt

    records, problems = store.read_records(tmp_path / "runs")
    assert problems == []
    assert [(r["step"], r["final"]) for r in records] == [(2, False), (3, False), (4, True)]
    assert [r["samples_seen"] for r in records] == [256, 384, 512]
