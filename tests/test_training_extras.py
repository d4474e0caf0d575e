"""Training extras: zero-shot evaluation during training, skipped-data counts, weighted shard
lists (real tiny runs and real pipelines on CPU over shards written here); the cached tokenizer
gives open_clip's tokens."""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import open_clip
import pytest
import torch
import webdataset as wds
from omegaconf import OmegaConf

import training.step as S
from core.errors import Preempted
from core.models import register_model_configs
from evaluation.evaluate import evaluate
from tests.helpers.data import jpeg, write_classification_set, write_shards
from tests.helpers.training import ARCH, make_cfg
from training import checkpoint, data
from training.metrics import LOG_FILE
from training.tokens import CachedTokenizer, get_tokenizer
from training.train import train


def _records(run_dir: Path) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for f in sorted((run_dir / "eval").glob("step_*/*.json")):
        record = json.loads(f.read_text())
        out.setdefault(int(f.parent.name.split("_")[1]), []).append(record)
    return out


def test_zeroshot_every_writes_learning_curve_and_changes_nothing(shards: str, tmp_path: Path):
    classes = ["circle", "square", "triangle", "star", "cross"]
    root = write_classification_set(tmp_path / "eval" / "shapes", classes, seed=0)
    cfg = make_cfg(shards, samples__seen=80, train__zeroshot_every=2, train__keep_checkpoints=1)
    cfg.eval = OmegaConf.merge(
        cfg.eval,
        {
            "datasets": [{"name": "shapes", "task": "zeroshot_classification", "root": str(root)}],
            "batch_size": 32,
        },
    )
    run_dir = tmp_path / "run"
    out = train(
        cfg,
        run_dir,
        evaluate_checkpoint=lambda path, step: evaluate(cfg, run_dir, path, step, final=False),
    )
    assert out["step"] == 5
    records = _records(tmp_path / "run")
    assert sorted(records) == [2, 4]  # the final step's records are the launcher's job
    for step, recs in records.items():
        assert [r["final"] for r in recs] == [False]
        assert recs[0]["step"] == step and 0 <= recs[0]["metrics"]["acc1"] <= 1
    # Evaluating draws from no RNG of the run: the weights are those of a run without it.
    plain = train(make_cfg(shards, samples__seen=80), tmp_path / "plain")
    a = checkpoint.load(out["checkpoint"])["state_dict"]
    b = checkpoint.load(plain["checkpoint"])["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_zeroshot_every_without_a_callback_is_refused_at_start(shards: str, tmp_path: Path):
    cfg = make_cfg(shards, train__zeroshot_every=2)
    with pytest.raises(ValueError, match="train.zeroshot_every"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before anything was written


def _write_bad_shards(folder: Path) -> str:
    """Two good shards, one with 8 corrupt images among its samples, one truncated tar."""
    pattern = write_shards(folder, n_shards=2, per_shard=64)
    with wds.TarWriter(str(folder / "00002.tar")) as sink:
        for i in range(32):
            jpg = b"not a jpeg" if i % 4 == 0 else jpeg(random.Random(i))
            sink.write({"__key__": f"bad{i:06d}", "jpg": jpg, "txt": "red circle"})
    whole = (folder / "00000.tar").read_bytes()
    (folder / "00003.tar").write_bytes(whole[: len(whole) // 3])
    return pattern.replace("00001}", "00003}")


@pytest.mark.parametrize("workers", [0, 1])
def test_skipped_samples_and_shards_are_counted_across_workers(tmp_path: Path, workers: int):
    register_model_configs()
    _, _, preprocess = open_clip.create_model_and_transforms("clipscale-tiny-s")
    tokenizer = open_clip.get_tokenizer("clipscale-tiny-s")
    counts = data.SkipCounts()
    loader = data.make_loader(
        _write_bad_shards(tmp_path / "shards"),
        preprocess,
        tokenizer,
        16,
        workers,
        seed=0,
        shuffle_size=64,
        shuffle_initial=64,
        counts=counts,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        it = iter(loader)
        batches = [next(it) for _ in range(30)]  # 480 samples: every shard drawn many times
        del it
    assert all(images.shape[0] == 16 for images, _ in batches)
    assert counts.samples > 0 and counts.shards > 0


def test_run_logs_and_checkpoints_skipped_samples(tmp_path: Path):
    shards = _write_bad_shards(tmp_path / "shards")
    cfg = make_cfg(shards, samples__seen=48, train__log_every=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = train(cfg, tmp_path / "run")
    lines = [json.loads(x) for x in (tmp_path / "run" / LOG_FILE).read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3]
    counts = [r["skipped_samples"] for r in lines]
    assert counts[-1] > 0 and counts == sorted(counts)
    assert lines[-1]["skipped_shards"] > 0
    marker = checkpoint.read_marker(out["checkpoint"])
    assert marker["skipped_samples"] >= counts[-1] and marker["skipped_shards"] > 0


def test_shard_weights_are_honoured_statistically():
    urls, weights = data.shard_urls("/a/{0..1}.tar::/b/{0..3}.tar", [3.0, 0.5])
    assert urls == ["/a/0.tar", "/a/1.tar", "/b/0.tar", "/b/1.tar", "/b/2.tar", "/b/3.tar"]
    draws = data._WeightedShards(urls, weights, seed=0).run()
    n = 20000
    picked = [next(draws)["url"] for _ in range(n)]
    # list a: 2 shards x 3 against list b: 4 shards x 0.5, so P(a) = 6 / 8; sd = 0.003
    assert abs(sum(u.startswith("/a/") for u in picked) / n - 0.75) < 0.02
    for url in urls:  # and every shard of a list alike
        expected = 0.375 if url.startswith("/a/") else 0.0625
        assert abs(picked.count(url) / n - expected) < 0.015, url
    again = data._WeightedShards(urls, weights, seed=0).run()
    assert [next(again)["url"] for _ in range(100)] == picked[:100]  # seeded


def test_weighted_lists_feed_the_loader_and_bad_weights_fail(tmp_path: Path):
    a = write_shards(tmp_path / "a", n_shards=1, per_shard=32)
    b = write_shards(tmp_path / "b", n_shards=1, per_shard=32)
    b = b.replace("{00000..00000}", "00000").replace(".tar", "") + ".tar"
    a = a.replace("{00000..00000}", "00000")
    with pytest.raises(ValueError, match="2 shard lists"):
        data.check_shards(f"{a}::{b}", [1.0])
    with pytest.raises(ValueError, match="not all 0"):
        data.check_shards(f"{a}::{b}", [0.0, 0.0])
    pipeline = data.make_pipeline(
        f"{a}::{b}",
        lambda img: torch.zeros(1),
        lambda texts: torch.zeros(len(texts), 1),
        8,
        seed=0,
        shuffle_size=1,
        shuffle_initial=1,
        weights=[0.0, 1.0],
    )
    urls = []
    for stage in pipeline.pipeline[:1]:
        it = pipeline.invoke(stage)
        urls = [next(it)["url"] for _ in range(50)]
    assert set(urls) == {b}
    batch = next(iter(pipeline))
    assert batch[0].shape == (8, 1)


def test_shard_weights_change_the_run_id(shards: str):
    from core.identity import config_hash

    one = make_cfg(shards)
    two = make_cfg(f"{shards}::{shards}", data__shard_weights=[1.0, 2.0])
    assert config_hash(make_cfg(shards, data__shard_weights=[2.0])) != config_hash(one)
    assert config_hash(two) != config_hash(make_cfg(f"{shards}::{shards}"))
    assert list(two.data.shard_weights) == [1.0, 2.0]


def test_skipped_counts_survive_a_resume_at_a_segment_boundary(tmp_path: Path, monkeypatch):
    """Preempted at step 2 (the end of a 2-step data segment), resumed: the same counts as a run
    that went straight through (workers=0 reads deterministically, nothing counted twice)."""
    import signal

    monkeypatch.setattr(data, "SEGMENT_STEPS", 2)
    shards = _write_bad_shards(tmp_path / "shards")
    cfg = make_cfg(shards, samples__seen=48, train__checkpoint_every=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        straight = checkpoint.read_marker(train(cfg, tmp_path / "straight")["checkpoint"])
        real_step, calls = S.train_step, []

        def step_then_signal(*a, **kw):
            calls.append(1)
            if len(calls) == 2:
                signal.raise_signal(signal.SIGTERM)  # caught by the trainer's handler
            return real_step(*a, **kw)

        monkeypatch.setattr(S, "train_step", step_then_signal)
        with pytest.raises(Preempted) as stopped:
            train(cfg, tmp_path / "resumed")
        assert stopped.value.step == 2
        monkeypatch.setattr(S, "train_step", real_step)
        out = train(cfg, tmp_path / "resumed")
    assert out["resumed_from"] == 2
    resumed = checkpoint.read_marker(out["checkpoint"])
    assert straight["skipped_samples"] > 0
    for key in ("skipped_samples", "skipped_shards"):
        assert resumed[key] == straight[key], key


def test_compiled_model_trains_and_saves_like_the_plain_one(shards: str, tmp_path: Path,
                                                                    monkeypatch):
    """``train.compile=true`` wraps the model in torch.compile (here its ``eager`` backend: the
    same graph capture and wrapper, no C compiler needed): checkpoints hold the plain model's
    keys (so resuming and evaluation read them as before), and the weights equal a run
    without compile."""
    compiled = []
    real = torch.compile

    def eager_compile(model, **kw):
        compiled.append(model)
        return real(model, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    cfg = make_cfg(shards, samples__seen=64, train__compile=True)
    out = train(cfg, tmp_path / "run")
    assert compiled and out["step"] == 4
    state = checkpoint.load(out["checkpoint"])["state_dict"]
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in state)
    plain = train(make_cfg(shards, samples__seen=64), tmp_path / "plain")
    ref = checkpoint.load(plain["checkpoint"])["state_dict"]
    assert all(torch.equal(state[k], ref[k]) for k in ref)


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
