"""What makes the demo faster changes no result: the cached tokenizer gives open_clip's tokens,
a set decoded once per process gives the same evaluation records (and is not decoded again),
a set too large to keep is streamed; and ``benchmarks/demo_seconds.py`` reads the breakdown
and the fits it records from run folders and a fits.csv."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import open_clip
import pytest
import torch

from core.models import register_model_configs
from evaluation import evaluate as evaluate_mod
from evaluation.evaluate import LoadedSets, evaluate
from tests.helpers.data import write_classification_set, write_retrieval_set
from tests.helpers.evaluation import ARCH, tiny_cfg, tiny_state_dict
from training.tokens import CachedTokenizer, get_tokenizer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

TEXTS = ["a red circle", "a photo of a big blue square at the top left", "a red circle", "",
         "a tiny green star on a dark gray background"]


def test_cached_tokenizer_gives_open_clips_tokens():
    register_model_configs()
    plain = open_clip.get_tokenizer(ARCH)
    cached = CachedTokenizer(open_clip.get_tokenizer(ARCH))
    for _ in range(2):  # filling the cache, then from it
        got = cached(TEXTS)
        assert got.dtype == plain(TEXTS).dtype and torch.equal(got, plain(TEXTS))
    assert len(cached.cache) == 4  # the repeated caption once
    assert torch.equal(cached("a red circle"), plain("a red circle"))
    assert cached.context_length == plain.context_length
    full = CachedTokenizer(open_clip.get_tokenizer(ARCH), max_entries=2)
    assert torch.equal(full(TEXTS), plain(TEXTS)) and len(full.cache) == 0  # over the cap: as is
    assert get_tokenizer(ARCH) is get_tokenizer(ARCH)  # one cache per arch and process


def test_loaded_sets_serve_a_set_again_and_stream_a_large_one():
    batches = [(torch.ones(4, 3, 2, 2), torch.arange(4)), (torch.zeros(2, 3, 2, 2), torch.arange(2))]
    sets = LoadedSets()
    assert list(sets.batches(("k",), iter(batches))) == batches
    again = sets.batches(("k",), iter(()))  # not read: served from memory
    assert all(torch.equal(a[0], b[0]) for a, b in zip(again, batches, strict=True))
    small = LoadedSets(max_bytes=100)
    assert len(list(small.batches(("k",), iter(batches)))) == 2 and small.sets == {}


@pytest.fixture
def eval_sets(tmp_path: Path) -> Path:
    root = tmp_path / "sets"
    write_classification_set(root / "shapes", ["circle", "square", "triangle", "star", "cross",
                                               "heart"], seed=0)
    write_retrieval_set(root / "scenes", seed=2)
    return root


def test_second_evaluation_reads_no_set_and_scores_the_same(eval_sets, tmp_path, make_cfg,
                                                            monkeypatch):
    ckpt = tmp_path / "epoch_1.pt"
    torch.save({"epoch": 1, "state_dict": tiny_state_dict()}, ckpt)
    datasets = [
        {"name": "shapes", "task": "zeroshot_classification", "root": str(eval_sets / "shapes")},
        {"name": "scenes", "task": "zeroshot_retrieval", "root": str(eval_sets / "scenes")},
    ]
    cfg = tiny_cfg(make_cfg, eval_sets, datasets)
    monkeypatch.setattr(evaluate_mod, "LOADED", LoadedSets())
    first = evaluate(cfg, tmp_path / "a", ckpt, step=1)
    assert len(evaluate_mod.LOADED.sets) == 2  # both sets kept

    def no_loading(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(evaluate_mod.LoadedSets, "_load", no_loading)
    second = evaluate(cfg, tmp_path / "b", ckpt, step=1)
    metrics = [{(r["dataset"], r["task"]): r["metrics"] for r in rs} for rs in (first, second)]
    assert metrics[0] == metrics[1] and len(metrics[0]) == 2


def test_demo_seconds_reads_breakdown_and_fits(tmp_path: Path):
    import demo_seconds

    root = tmp_path / "runs"
    for name, done in (("tiny_s-syn4k-s6k-1", 10.0), ("tiny_m-syn32k-s6k-2", 20.0)):
        (root / name).mkdir(parents=True)
        evs = [{"event": "start"}, {"event": "trained", "seconds": done / 2},
               {"event": "done", "seconds": done, "seconds_data": 1.0,
                "seconds_train": done / 2 + 1, "seconds_eval": done / 2 - 2}]
        (root / name / "status.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evs))
    trunk = root / "tiny_m-syn32k-trunk-3"
    trunk.mkdir()
    (trunk / "status.jsonl").write_text(json.dumps(
        {"event": "trained", "seconds": 4.0, "seconds_data": 0.5, "seconds_train": 5.0}) + "\n")
    procs = {"syn32k": {"seconds": 40.0}, "syn4k": {"seconds": 15.0}}
    parts = demo_seconds.breakdown(root, procs)
    assert parts["training_loop"] == 19.0 and parts["evaluation"] == 11.0
    assert parts["data_generation"] == 2.5 and parts["training"] == 22.0
    assert parts["startup_per_process"] == {"syn32k": 14.5, "syn4k": 5.0}
    (tmp_path / "fits.csv").write_text(
        "family,task,metric,method,alpha,alpha_low,alpha_high,n_points\n"
        "demo,wds/synth_shapes,acc1,paper,-0.2,-0.3,-0.1,12\n"
        "demo,wds/synth_positions,acc1,paper,-0.01,-0.05,0.02,12\n")
    fits = demo_seconds.fitted_exponents(tmp_path)
    assert [f["excludes_zero"] for f in fits] == [True, False]
