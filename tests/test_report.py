"""TensorBoard and W&B logs (``train.report_to``): real tiny runs on CPU, read back with
tensorboard's own reader and W&B's own record format; W&B always offline here."""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

import training.step as S
from core.schema import ReportTo
from evaluation.evaluate import evaluate
from store.records import record_path
from tests.helpers.data import write_classification_set, write_retrieval_set
from tests.helpers.training import make_cfg
from training import report
from training.metrics import LOG_FILE
from training.train import train

BATCH = 16
TRAIN_TAGS = {
    "train/step", "train/loss", "train/loss_avg", "train/lr", "train/logit_scale",
    "train/samples_per_s", "train/samples_per_s_per_gpu", "train/mfu", "train/eta_s",
    "train/nonfinite_skipped", "train/loss_spikes", "train/skipped_samples",
    "train/skipped_shards",
}  # fmt: skip
SHAPES_ACC1 = "eval/wds/shapes/zeroshot_classification/acc1"
SCENES_R1 = "eval/wds/scenes/zeroshot_retrieval/image_retrieval_recall@1"


@pytest.fixture(autouse=True)
def wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """W&B offline, quiet, with its settings and caches in the test's folder."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    monkeypatch.setenv("WANDB_X_DISABLE_STATS", "true")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def _with_eval(cfg: DictConfig, root: Path) -> DictConfig:
    """``cfg`` evaluated on a tiny zero-shot set and a tiny retrieval set written under ``root``."""
    shapes = write_classification_set(root / "shapes", ["circle", "square", "star"], seed=0)
    scenes = write_retrieval_set(root / "scenes", seed=1)
    cfg.eval = OmegaConf.merge(cfg.eval, {
        "datasets": [
            {"name": "shapes", "task": "zeroshot_classification", "root": str(shapes)},
            {"name": "scenes", "task": "zeroshot_retrieval", "root": str(scenes)},
        ],
        "batch_size": 32,
        "recall_k": [1, 5],
    })  # fmt: skip
    return cfg


def _scalars(folder: Path) -> EventAccumulator:
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return acc


def _steps(acc: EventAccumulator, tag: str) -> list[int]:
    return [e.step for e in acc.Scalars(tag)]


def _log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / LOG_FILE).read_text().splitlines()]


def _crash_on_call(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """The ``n``-th optimizer step of the next training raises (a crash mid-run)."""
    real, calls = S.train_step, [0]

    def step(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            raise RuntimeError("crashed")
        return real(*args, **kwargs)

    monkeypatch.setattr(S, "train_step", step)


def test_tensorboard_holds_the_training_scalars_and_the_learning_curve(shards: str, tmp_path: Path):
    cfg = _with_eval(
        make_cfg(
            shards,
            samples__seen=80,
            train__log_every=2,
            train__zeroshot_every=2,
            train__report_to=["tensorboard"],
        ),
        tmp_path / "eval",
    )  # 5 steps of 16: log lines at 2, 4, 5; learning-curve evaluations at 2 and 4
    run_dir = tmp_path / "run"
    train(cfg, run_dir, evaluate_checkpoint=lambda p, s: evaluate(cfg, run_dir, p, s, final=False))

    acc = _scalars(run_dir / report.TENSORBOARD_DIR)
    tags = set(acc.Tags()["scalars"])
    assert TRAIN_TAGS <= tags
    assert {
        SHAPES_ACC1,
        SCENES_R1,
        "eval/wds/scenes/zeroshot_retrieval/text_retrieval_recall@5",
    } <= tags
    # x = samples seen: steps 2, 4, 5 of 16 pairs
    assert _steps(acc, "train/loss") == [32, 64, 80]
    assert [e.value for e in acc.Scalars("train/step")] == [2, 4, 5]
    lines = _log(run_dir)
    assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx([r["loss"] for r in lines])
    assert [e.value for e in acc.Scalars("train/mfu")] == pytest.approx([r["mfu"] for r in lines])
    assert _steps(acc, SHAPES_ACC1) == _steps(acc, SCENES_R1) == [32, 64]
    stored = json.loads(
        record_path(run_dir, 2, "wds/shapes", "zeroshot_classification").read_text()
    )
    assert acc.Scalars(SHAPES_ACC1)[0].value == pytest.approx(stored["metrics"]["acc1"])


def test_a_resumed_run_appends_to_the_same_tensorboard_curve_and_wandb_run(
    shards: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    cfg = make_cfg(
        shards, samples__seen=8 * BATCH, train__log_every=2, train__checkpoint_every=4,
        train__report_to=["tensorboard", "wandb"], sweep="demo",
    )  # fmt: skip
    run_dir = tmp_path / "tiny_s-test-s128-0123abcd"
    _crash_on_call(monkeypatch, 7)  # logged steps 2, 4, 6; last checkpoint: step 4
    with pytest.raises(RuntimeError, match="crashed"):
        train(cfg, run_dir)
    monkeypatch.undo()
    out = train(cfg, run_dir)
    assert out["resumed_from"] == 4 and out["step"] == 8

    # TensorBoard: a second event file; its purge drops the crashed attempt's step 6, so the
    # reader shows one curve, every step once, with the resumed attempt's values.
    folder = run_dir / report.TENSORBOARD_DIR
    files = sorted(folder.glob("events.out.tfevents.*"))
    assert len(files) == 2
    raw = [e.step for f in files for e in EventFileLoader(str(f)).Load()
           if any(v.tag == "train/loss" for v in e.summary.value)]  # fmt: skip
    assert raw == [32, 64, 96, 96, 128]  # what the files hold
    acc = _scalars(folder)
    assert _steps(acc, "train/loss") == [32, 64, 96, 128]
    assert all(_steps(acc, tag) == [32, 64, 96, 128] for tag in TRAIN_TAGS)
    resumed_lines = _log(run_dir)[-2:]  # the JSON log keeps both attempts' lines
    assert acc.Scalars("train/loss")[2].value == pytest.approx(resumed_lines[0]["loss"])

    # W&B: two offline attempts of one W&B run (id = run id, group = sweep), each with its history.
    attempts = sorted((run_dir / "wandb").glob("offline-run-*"), key=lambda p: p.stat().st_mtime)
    assert len(attempts) == 2
    runs, histories = zip(*(_wandb_run(a) for a in attempts), strict=True)
    assert {r["run_id"] for r in runs} == {run_dir.name}
    assert {r["run_group"] for r in runs} == {"demo"}
    assert [[row["samples_seen"] for row in h] for h in histories] == [[32, 64, 96], [96, 128]]
    for h in histories:
        assert all({"samples_seen", *TRAIN_TAGS} <= set(row) for row in h)
        assert [row["_step"] for row in h] == [2 * row["samples_seen"] for row in h]
    assert [row["train/loss"] for row in histories[1]] == pytest.approx(
        [r["loss"] for r in resumed_lines]
    )


def test_the_launcher_reports_the_learning_curve_and_the_final_evaluation(
    shards: str, tmp_path: Path
):
    from launcher.run import run_point

    cfg = _with_eval(
        make_cfg(shards, samples__seen=80, train__log_every=2, train__zeroshot_every=2,
                 train__report_to=["tensorboard", "wandb"], root=str(tmp_path / "runs")),
        tmp_path / "eval",
    )  # fmt: skip
    out = run_point(cfg)
    assert out["state"] == "done"
    run_dir = tmp_path / "runs" / out["run_id"]
    acc = _scalars(run_dir / report.TENSORBOARD_DIR)
    assert _steps(acc, "train/loss") == [32, 64, 80]
    # learning curve at steps 2 and 4 (from the trainer), the final step's evaluation after it
    assert _steps(acc, SHAPES_ACC1) == _steps(acc, SCENES_R1) == [32, 64, 80]

    # W&B: the training and the final evaluation, one W&B run (the run id, group "cli")
    attempts = sorted((run_dir / "wandb").glob("offline-run-*"), key=lambda p: p.stat().st_mtime)
    (train_run, train_rows), (eval_run, eval_rows) = (_wandb_run(a) for a in attempts)
    assert train_run == eval_run == {"run_id": out["run_id"], "run_group": "cli"}
    curve = [(r["_step"], r["samples_seen"]) for r in train_rows if SHAPES_ACC1 in r]
    assert curve == [(65, 32), (129, 64)]  # after the training line of the same samples seen
    assert [(r["_step"], r["samples_seen"]) for r in eval_rows] == [(161, 80)]
    assert {SHAPES_ACC1, SCENES_R1} <= set(eval_rows[0])
    steps = [r["_step"] for r in train_rows + eval_rows]
    assert steps == sorted(set(steps))  # unique and increasing over both


def test_only_numbers_become_tags_and_wandb_ids_are_sanitised():
    line = {"step": 3, "samples_seen": 48, "loss": 0.5, "note": "x", "flag": True}
    assert report.train_tags(line) == {"train/step": 3.0, "train/loss": 0.5}
    record = {"dataset": "vtab+", "task": "zeroshot_classification",
              "metrics": {"acc1": 0.25, "mean_average_precision": None, "acc5": float("nan")}}  # fmt: skip
    assert report.eval_tags(record) == {"eval/vtab+/zeroshot_classification/acc1": 0.25}
    assert report.wandb_id("vit_b32-laion400m-13B-0a1b2c3d") == "vit_b32-laion400m-13B-0a1b2c3d"
    assert report.wandb_id("a:b/c#d") == "a-b-c-d"


def test_a_reporter_that_logs_nothing_writes_nothing(tmp_path: Path):
    with report.Reporter(None, tmp_path, [ReportTo.tensorboard, ReportTo.wandb]) as r:
        r.records([])  # an evaluation with nothing to evaluate
    assert list(tmp_path.iterdir()) == []
    cfg = OmegaConf.create({"train": {"report_to": ["tensorboard"]}})
    assert report.for_run(cfg, tmp_path, main=False).to == []  # rank > 0
    assert report.for_run(cfg, tmp_path).to == [ReportTo.tensorboard]


# --------------------------------------------------------------------------------------------
# W&B's transaction log (``run-<id>.wandb``): records framed as in LevelDB's log format (W&B's
# "datastore"), each a ``wandb_internal_pb2.Record``. wandb no longer ships a Python reader.

_BLOCK, _HEADER = 32768, 7


def _frames(path: Path) -> Iterator[bytes]:
    buf = path.read_bytes()
    assert buf[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(buf):
        if _BLOCK - pos % _BLOCK < _HEADER:  # a block's tail too short for a header: padding
            pos += _BLOCK - pos % _BLOCK
            continue
        crc, n, kind = struct.unpack("<IHB", buf[pos : pos + _HEADER])
        data, pos = buf[pos + _HEADER : pos + _HEADER + n], pos + _HEADER + n
        if kind == 0:
            continue
        assert zlib.crc32(data, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF == crc
        if kind == 1:  # full
            yield data
        elif kind == 2:  # first
            pending = data
        elif kind == 3:  # middle
            pending += data
        else:  # last
            yield pending + data


def _wandb_run(folder: Path) -> tuple[dict, list[dict]]:
    """The run record's fields and the history rows of one offline W&B run folder."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = folder.glob("run-*.wandb")
    run: dict = {}
    history = []
    for data in _frames(path):
        rec = pb.Record()
        rec.ParseFromString(data)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            run = {"run_id": rec.run.run_id, "run_group": rec.run.run_group}
        elif kind == "history":
            history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                            for i in rec.history.item})  # fmt: skip
    return run, history
