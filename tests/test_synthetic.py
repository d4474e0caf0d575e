"""The embedded data generator: determinism, layouts, idempotence, clip_benchmark readability."""

from __future__ import annotations

import io
import json
import math
import os
import re
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest
from omegaconf import DictConfig
from PIL import Image

from core import atomic
from core.atomic import SUCCESS
from core.models import register_model_configs
from synthetic import EVAL_SETS, ensure_datasets, generate, generate_eval, generate_train, scenes
from synthetic.scenes import CLASSNAMES, POSITION_CLASSNAMES
from tests.helpers.config import compose_cfg, hydra_value


def _members(tar_path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(tar_path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]


def _samples(shards: list[Path]) -> dict[str, dict[str, bytes]]:
    """{key: {ext: bytes}} over all shards, in file order."""
    out: dict[str, dict[str, bytes]] = {}
    for shard in shards:
        for name, data in _members(shard):
            key, ext = name.split(".", 1)
            out.setdefault(key, {})[ext] = data
    return out


@pytest.fixture(scope="module")
def train_set(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return generate_train(tmp_path_factory.mktemp("train") / "syn", 250, seed=3, shard_size=100)


@pytest.fixture(scope="module")
def eval_sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    # 4 pictures per class and 100 scenes: enough for the near-chance checks below.
    return generate_eval(tmp_path_factory.mktemp("eval"), n_classification=4 * len(CLASSNAMES),
                         n_retrieval=100)


# --- training set -----------------------------------------------------------------------------


def test_shard_count_names_and_img2dataset_layout(train_set: list[Path]) -> None:
    assert [p.name for p in train_set] == ["00000.tar", "00001.tar", "00002.tar"]
    assert all(p.is_file() for p in train_set)
    assert (train_set[0].parent / SUCCESS).is_file()
    names = [n for n, _ in _members(train_set[2])]
    assert names[:3] == ["000000200.jpg", "000000200.txt", "000000200.json"]
    samples = _samples(train_set)
    assert list(samples) == [f"{i:09d}" for i in range(250)]
    for key, files in list(samples.items())[:20]:
        assert set(files) == {"jpg", "txt", "json"}
        meta = json.loads(files["json"])
        assert meta["key"] == key and meta["caption"] == files["txt"].decode()
        assert (meta["width"], meta["height"]) == (32, 32)
        img = Image.open(io.BytesIO(files["jpg"]))
        assert img.format == "JPEG" and img.size == (32, 32) and img.mode == "RGB"


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path, train_set: list[Path]) -> None:
    again = generate_train(tmp_path / "a", 250, seed=3, shard_size=100)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in train_set]
    other = generate_train(tmp_path / "b", 250, seed=4, shard_size=100)
    assert all(o.read_bytes() != p.read_bytes() for o, p in zip(other, train_set, strict=True))


def test_same_bytes_in_another_process(tmp_path: Path, train_set: list[Path]) -> None:
    # Another interpreter with another hash seed: catches any dependence on set/dict-of-str
    # iteration order or on process state.
    code = f"from synthetic import generate_train; generate_train({str(tmp_path / 'p')!r}, 250, 3, shard_size=100)"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=Path(__file__).parents[1])
    assert [(tmp_path / "p" / p.name).read_bytes() for p in train_set] == [p.read_bytes() for p in train_set]


def test_samples_do_not_depend_on_shard_size(tmp_path: Path, train_set: list[Path]) -> None:
    one_shard = generate_train(tmp_path / "one", 250, seed=3, shard_size=1000)
    assert len(one_shard) == 1
    assert _samples(one_shard) == _samples(train_set)


def test_captions_mention_the_drawn_attributes(train_set: list[Path]) -> None:
    import open_clip

    tokenizer = open_clip.get_tokenizer("ViT-B-32")  # the same BPE and context as the tiny models
    counts = set()
    for files in _samples(train_set).values():
        meta = json.loads(files["json"])
        text, objects = meta["caption"], meta["objects"]
        counts.add(len(objects))
        for obj in objects:
            assert f"{obj['color']} {obj['shape']}" in text, (text, obj)
            assert obj["size"] in scenes.SIZES and obj["position"] in scenes.POSITIONS
        words = re.findall(r"[a-z]+", text)
        assert sum(words.count(s) for s in scenes.SHAPES) == len(objects), text
        tokens = tokenizer([text])[0]
        assert tokens[22:].eq(0).all(), f"caption truncated at 24 tokens: {text!r}"
    assert counts == {1, 2, 3}


def test_second_call_does_nothing(tmp_path: Path) -> None:
    shards = generate_train(tmp_path / "d", 30, seed=0, shard_size=10)
    stamps = [p.stat().st_mtime_ns for p in shards] + [(tmp_path / "d" / SUCCESS).stat().st_mtime_ns]
    assert generate_train(tmp_path / "d", 30, seed=0, shard_size=10) == shards
    assert [p.stat().st_mtime_ns for p in shards] + [(tmp_path / "d" / SUCCESS).stat().st_mtime_ns] == stamps


def test_other_arguments_replace_the_folder(tmp_path: Path) -> None:
    generate_train(tmp_path / "d", 30, seed=0, shard_size=10)
    shards = generate_train(tmp_path / "d", 15, seed=0, shard_size=10)
    assert sorted(p.name for p in (tmp_path / "d").glob("*.tar")) == [p.name for p in shards]
    assert json.loads((tmp_path / "d" / SUCCESS).read_text())["args"]["num_samples"] == 15
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # nothing left aside


def test_leftover_temporary_folder_of_a_killed_run_is_cleaned(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    prefix = atomic._tmp_prefix(tmp_path / "d")
    stale = tmp_path / f"{prefix}{dead.pid}-deadbeef"
    live = tmp_path / f"{prefix}{os.getppid()}-0badf00d"  # a live writer's folder: left alone
    for folder in (stale, live):
        folder.mkdir()
        (folder / "00000.tar").write_bytes(b"half written")
    shards = generate_train(tmp_path / "d", 12, seed=0, shard_size=10)
    assert not stale.exists() and live.exists()
    assert len(_samples(shards)) == 12


def test_foreign_folder_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "mine.txt").write_text("not generated")
    with pytest.raises(FileExistsError):
        generate_train(tmp_path / "d", 5, seed=0)
    assert (tmp_path / "d" / "mine.txt").read_text() == "not generated"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_concurrent_writers_agree(tmp_path: Path) -> None:
    results: list[list[Path]] = []
    threads = [threading.Thread(target=lambda: results.append(
        generate_train(tmp_path / "d", 40, seed=1, shard_size=20))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results[0] == results[1]
    assert len(_samples(results[0])) == 40
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


# --- evaluation sets --------------------------------------------------------------------------


def test_eval_layout(eval_sets: dict[str, Path]) -> None:
    assert set(eval_sets) == set(EVAL_SETS)
    for root in eval_sets.values():
        assert (root / SUCCESS).is_file()
        assert (root / "test" / "nshards.txt").read_text().strip() == "1"
        assert (root / "test" / "0.tar").is_file()
    for name in ("synth_shapes", "synth_shapes_outline"):
        root = eval_sets[name]
        assert (root / "classnames.txt").read_text().splitlines() == CLASSNAMES
        assert all("{c}" in t for t in (root / "zeroshot_classification_templates.txt").read_text().splitlines())
    assert (eval_sets["synth_scenes"] / "dataset_type.txt").read_text().strip() == "retrieval"
    positions = eval_sets["synth_positions"]
    assert (positions / "classnames.txt").read_text().splitlines() == POSITION_CLASSNAMES
    assert len(POSITION_CLASSNAMES) == len(set(POSITION_CLASSNAMES)) == 9
    for split in ("train", "test"):  # a train split for linear probes
        labels = [int(f["cls"]) for f in _samples([positions / split / "0.tar"]).values()]
        assert sorted(set(labels)) == list(range(9))
    train = _samples([positions / "train" / "0.tar"])
    test = _samples([positions / "test" / "0.tar"])
    assert {f["jpg"] for f in train.values()}.isdisjoint(f["jpg"] for f in test.values())


def test_eval_scenes_differ_from_training_scenes(tmp_path: Path, eval_sets: dict[str, Path]) -> None:
    # Same seed on purpose: the streams, not the seeds, keep the sets apart.
    train = _samples(generate_train(tmp_path / "t", 300, seed=1234))
    train_images = {f["jpg"] for f in train.values()}
    train_captions = {f["txt"] for f in train.values()}
    shapes = _samples([eval_sets["synth_shapes"] / "test" / "0.tar"])
    outline = _samples([eval_sets["synth_shapes_outline"] / "test" / "0.tar"])
    scenes = _samples([eval_sets["synth_scenes"] / "test" / "0.tar"])
    for files in [*shapes.values(), *outline.values(), *scenes.values()]:
        assert files["jpg"] not in train_images
    assert not any(f["txt"] in train_captions for f in scenes.values())
    assert {f["jpg"] for f in shapes.values()}.isdisjoint(f["jpg"] for f in outline.values())


@pytest.fixture(scope="module")
def tiny_model():  # type: ignore[no-untyped-def]
    """A randomly initialised clipscale-tiny-s, its eval transform and tokenizer, on one thread:
    the model is too small to gain from threads, and on a busy machine an OpenMP thread that
    waits for a descheduled sibling can make each call 100x slower."""
    import open_clip
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    register_model_configs()
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("clipscale-tiny-s")
    yield model.eval(), preprocess, open_clip.get_tokenizer("clipscale-tiny-s")
    torch.set_num_threads(threads)


def _loader(name: str, root: Path, transform: object, task: str):  # type: ignore[no-untyped-def]
    """The dataset and loader exactly as clip_benchmark's cli builds them for a wds/ set."""
    import torch
    from clip_benchmark.datasets.builder import build_dataset

    ds = build_dataset(f"wds/{name}", root=str(root), transform=transform, split="test", task=task)
    return ds, torch.utils.data.DataLoader(ds.batched(64), batch_size=None, shuffle=False, num_workers=0)


@pytest.mark.parametrize("name", ["synth_shapes", "synth_shapes_outline"])
def test_classification_sets_through_clip_benchmark(
    eval_sets: dict[str, Path], tiny_model: tuple, name: str  # type: ignore[type-arg]
) -> None:
    from clip_benchmark.metrics import zeroshot_classification

    model, preprocess, tokenizer = tiny_model
    ds, loader = _loader(name, eval_sets[name], preprocess, "zeroshot_classification")
    assert ds.classes == CLASSNAMES and len(ds.templates) >= 5
    images, labels = next(iter(loader))
    assert tuple(images.shape) == (64, 3, 32, 32) and labels.tolist()[:3] == [0, 1, 2]
    metrics = zeroshot_classification.evaluate(
        model, loader, tokenizer, ds.classes, ds.templates, "cpu", amp=False)
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("acc1", "acc5", "mean_per_class_recall"))
    assert metrics["acc1"] < 0.15  # an untrained model is near chance (1/35)


def test_retrieval_set_through_clip_benchmark(
    eval_sets: dict[str, Path], tiny_model: tuple  # type: ignore[type-arg]
) -> None:
    from clip_benchmark.metrics import zeroshot_retrieval

    model, preprocess, tokenizer = tiny_model
    _, loader = _loader("synth_scenes", eval_sets["synth_scenes"], preprocess, "zeroshot_retrieval")
    images, texts = next(iter(loader))
    assert tuple(images.shape) == (64, 3, 32, 32)
    assert all(len(t) == 2 and all(isinstance(c, str) and c for c in t) for t in texts)
    metrics = zeroshot_retrieval.evaluate(model, loader, tokenizer, "cpu", amp=False, recall_k_list=[1, 5])
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    assert metrics["image_retrieval_recall@5"] < 0.25  # chance: 5 of 100 images


# --- ensure_datasets --------------------------------------------------------------------------


def _cfg(data_root: Path, shards: str, num_samples: int = 1100) -> DictConfig:
    eval_root = f"{data_root}/synthetic/eval"
    datasets = [
        {"name": "synth_shapes", "task": "zeroshot_classification",
         "root": f"{eval_root}/synth_shapes", "split": "test"},
        {"name": "synth_scenes", "task": "zeroshot_retrieval",
         "root": f"{eval_root}/synth_scenes", "split": "test"},
        {"name": "imagenet1k", "task": "zeroshot_classification",
         "root": f"{data_root}/real/imagenet1k", "split": "test"},
    ]
    return compose_cfg("data=syn4k", f"data.shards={hydra_value(shards)}",
                       f"data.num_samples={num_samples}", "data.seed=5", "data.image_size=32",
                       f"eval.datasets={hydra_value(datasets)}",
                       root=data_root / "runs", data_root=data_root)


def test_ensure_datasets_generates_what_is_missing(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, f"{tmp_path}/synthetic/syn/{{00000..00001}}.tar")
    ensure_datasets(cfg)
    shards = sorted((tmp_path / "synthetic" / "syn").glob("*.tar"))
    assert [p.name for p in shards] == ["00000.tar", "00001.tar"]
    assert len(_samples(shards)) == 1100
    for name in EVAL_SETS:
        assert (tmp_path / "synthetic" / "eval" / name / SUCCESS).is_file()
    assert not (tmp_path / "real").exists()  # real data is never touched
    markers = sorted((tmp_path / "synthetic").rglob(SUCCESS))
    assert len(markers) == 1 + len(EVAL_SETS)
    stamps = [m.stat().st_mtime_ns for m in markers]
    ensure_datasets(cfg)
    assert [m.stat().st_mtime_ns for m in markers] == stamps


def test_ensure_datasets_rejects_a_mismatched_shard_range(tmp_path: Path) -> None:
    for pattern in ("{00000..00002}.tar", "{0..1}.tar", "{00001..00002}.tar", "00000.tar"):
        cfg = _cfg(tmp_path, f"{tmp_path}/synthetic/syn/{pattern}")
        with pytest.raises(ValueError, match="data.shards"):
            ensure_datasets(cfg)
    assert not (tmp_path / "synthetic").exists()  # checked before anything is written


def test_ensure_datasets_rejects_an_unknown_synthetic_eval_set(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, f"{tmp_path}/synthetic/syn/{{00000..00001}}.tar")
    cfg.eval.datasets[0].root = f"{tmp_path}/synthetic/eval/synth_colours"
    with pytest.raises(ValueError, match="synth_colours"):
        ensure_datasets(cfg)
    assert not (tmp_path / "synthetic").exists()


def test_ensure_datasets_skips_real_data(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, f"{tmp_path}/laion/{{00000..41407}}.tar", num_samples=math.ceil(41408 * 1024))
    cfg.data.synthetic = False
    cfg.eval.datasets = [cfg.eval.datasets[2]]
    ensure_datasets(cfg)
    assert list(tmp_path.iterdir()) == []


def test_the_composed_default_config(make_cfg) -> None:  # type: ignore[no-untyped-def]
    for data in ("syn4k", "syn32k"):  # both embedded data configs name the shards we write
        cfg = make_cfg(f"data={data}")
        generate._check_shard_pattern(cfg.data.shards, math.ceil(cfg.data.num_samples / 1024))
    cfg = make_cfg()
    ensure_datasets(cfg)
    shards = sorted(Path(cfg.data.shards).parent.glob("*.tar"))
    assert [p.name for p in shards] == [f"{i:05d}.tar" for i in range(4)]
    for entry in cfg.eval.datasets:
        assert (Path(entry.root) / SUCCESS).is_file()
