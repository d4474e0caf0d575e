"""Training stage: real tiny runs on CPU over shards written here (no other stage involved)."""

from __future__ import annotations

import contextlib
import json
import math
import random
import warnings
from pathlib import Path

import pytest
import torch
import webdataset as wds

from core.models import register_model_configs
from tests.helpers.data import jpeg
from tests.helpers.training import ARCH, make_cfg
from training import checkpoint, data, models
from training.metrics import LOG_FILE
from training.train import make_plan, train


def _log_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / LOG_FILE).read_text().splitlines()]


def test_run_writes_final_checkpoint_log_and_loads_in_open_clip(shards: str, tmp_path: Path):
    cfg = make_cfg(shards, samples__seen=70)  # ceil(70 / 16) = 5 steps
    out = train(cfg, tmp_path / "run")
    assert out["step"] == 5 == math.ceil(70 / 16)
    assert out["samples_seen"] == 80 and out["resumed_from"] is None and not out["skipped"]
    assert math.isfinite(out["loss"]) and out["seconds"] > 0
    path = Path(out["checkpoint"])
    assert path == checkpoint.latest(tmp_path / "run") == tmp_path / "run/checkpoints/final.pt"
    assert checkpoint.read_marker(path)["final"] is True

    lines = _log_lines(tmp_path / "run")
    assert [r["step"] for r in lines] == [2, 4, 5]
    assert set(lines[0]) >= {
        "step",
        "samples_seen",
        "loss",
        "lr",
        "logit_scale",
        "samples_per_s",
        "samples_per_s_per_gpu",
        "mfu",
        "eta_s",
        "nonfinite_skipped",
        "loss_spikes",
    }
    assert 0 < lines[0]["mfu"] < 1 and lines[0]["samples_per_s_per_gpu"] > 0
    assert lines[-1]["loss"] == out["loss"] and lines[-1]["eta_s"] == 0

    state = checkpoint.load(path)  # weights_only=True: only tensors and plain values inside
    assert state["step"] == 5 and state["arch"] == ARCH and state["epoch"] == 1
    register_model_configs()
    import open_clip

    loaded, _, _ = open_clip.create_model_and_transforms(ARCH, pretrained=str(path))
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, state["state_dict"][k]), k
    assert 0 <= float(state["state_dict"]["logit_scale"]) <= math.log(100)

    again = train(cfg, tmp_path / "run")  # finished: nothing is trained twice
    assert again["skipped"] and again["step"] == 5 and again["checkpoint"] == str(path)
    assert len(_log_lines(tmp_path / "run")) == 3


def test_resume_from_latest_complete_checkpoint(shards: str, tmp_path: Path, monkeypatch):
    run_dir = tmp_path / "run"
    cfg = make_cfg(shards, samples__seen=96, train__checkpoint_every=2, train__keep_checkpoints=2)
    real_save = checkpoint.save

    def killed_at_final(run_dir, step, state, keep):  # the job dies while writing final.pt
        if state.get("final"):
            raise KeyboardInterrupt("killed")
        return real_save(run_dir, step, state, keep)

    monkeypatch.setattr(checkpoint, "save", killed_at_final)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run_dir)  # 6 steps: step_2 and step_4 written, final never completes
    monkeypatch.setattr(checkpoint, "save", real_save)
    ckpts = run_dir / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("*.pt")) == ["step_00000002.pt", "step_00000004.pt"]
    assert checkpoint.latest(run_dir) == ckpts / "step_00000004.pt"
    before = checkpoint.load(ckpts / "step_00000004.pt")
    out = train(cfg, run_dir)
    assert out["resumed_from"] == 4 and out["step"] == 6 and out["samples_seen"] == 96
    final = checkpoint.load(out["checkpoint"])
    assert final["resumed_from"] == 4 and final["seconds"] > before["seconds"]
    assert [r["step"] for r in _log_lines(run_dir)] == [2, 4, 6, 6]
    # The optimizer state carried over: Adam's step counter went on from 4 to 6.
    assert all(s["step"] == 6 for s in final["optimizer"]["state"].values())
    # A finished run keeps only its final checkpoint: the step ones are of no more use.
    assert sorted(p.name for p in ckpts.glob("*.pt")) == ["final.pt"]


def test_accumulation_bf16_and_worker_process(shards: str, tmp_path: Path):
    cfg = make_cfg(
        shards,
        model__global_batch=16,
        model__local_batch=8,
        model__precision="amp_bf16",
        samples__seen=32,
        train__workers=1,
    )
    out = train(cfg, tmp_path / "run")
    assert out["step"] == 2 and out["samples_seen"] == 32 and math.isfinite(out["loss"])


def test_accumulated_gradient_equals_full_batch_gradient(shards: str):
    """Micro-batches with the feature cache give the gradient of the global-batch loss.

    The logit scale gets it once per micro-batch, as in open_clip_train (see the parity test).
    """
    from open_clip import ClipLoss

    from training.step import accumulated_backward

    torch.manual_seed(0)
    model, _, _, tok = models.create_model(ARCH, "fp32", "cpu")
    images, texts = torch.randn(8, 3, 32, 32), tok([f"a photo {i}" for i in range(8)])
    ClipLoss()(**model(images, texts)).backward()
    full = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    halves = [(images[:4], texts[:4]), (images[4:], texts[4:])]
    accumulated_backward(model, ClipLoss(), halves, contextlib.nullcontext, None)
    for n, p in model.named_parameters():
        if n in full:
            expected = full[n] * len(halves) if n == "logit_scale" else full[n]
            torch.testing.assert_close(p.grad, expected, rtol=1e-4, atol=1e-6, msg=n)


def test_non_divisible_batch_is_rejected(shards: str):
    with pytest.raises(ValueError, match="model.global_batch.*model.local_batch"):
        make_plan(make_cfg(shards, model__global_batch=32, model__local_batch=24))


def test_corrupt_shard_and_sample_are_skipped(shards: str, tmp_path: Path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "00000.tar").write_bytes(b"this is not a tar file" * 100)
    with wds.TarWriter(str(bad / "00001.tar")) as sink:
        sink.write({"__key__": "000000000", "jpg": b"not a jpeg", "txt": "broken"})
        for i in range(1, 64):
            sink.write(
                {"__key__": f"{i:09d}", "jpg": jpeg(random.Random(i)), "txt": "a red square"}
            )
    # 00002.tar does not exist at all.
    with pytest.warns(UserWarning, match="skipping unreadable data") as caught:
        out = train(make_cfg(str(bad / "{00000..00002}.tar"), samples__seen=32), tmp_path / "run")
    assert out["step"] == 2 and math.isfinite(out["loss"])
    messages = " ".join(str(w.message) for w in caught)
    assert "00000.tar" in messages and "00002.tar" in messages  # unreadable and missing shards
    assert "UnidentifiedImageError" in messages or "cannot identify image" in messages


def test_all_shards_unreadable_raises_instead_of_spinning(tmp_path: Path):
    (tmp_path / "00000.tar").write_bytes(b"garbage")
    pipeline = data.make_pipeline(
        str(tmp_path / "00000.tar"), lambda im: im, lambda t: t, 4, seed=0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="data.shards"):
            next(iter(pipeline))


def test_missing_shards_fail_fast(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="data.shards"):
        train(make_cfg(str(tmp_path / "{00000..00003}.tar")), tmp_path / "run")


def _state(step: int, final: bool = False) -> dict:
    return {
        "step": step,
        "samples_seen": step * 4,
        "final": final,
        "loss": 1.0,
        "seconds": 1.0,
        "w": torch.full((2,), float(step)),
    }


def test_latest_ignores_torn_checkpoints_and_save_prunes(tmp_path: Path):
    assert checkpoint.latest(tmp_path) is None
    for step in (1, 2, 3):
        checkpoint.save(tmp_path, step, _state(step), keep=2)
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.glob("*.pt")) == ["step_00000002.pt", "step_00000003.pt"]
    assert checkpoint.latest(tmp_path) == folder / "step_00000003.pt"

    # A newer checkpoint torn before its marker, and a temporary file of a killed writer.
    torch.save(_state(4), folder / "step_00000004.pt")
    (folder / ".step_00000005.pt.abc.tmp").write_bytes(b"half")
    assert checkpoint.latest(tmp_path) == folder / "step_00000003.pt"
    assert checkpoint.load(checkpoint.latest(tmp_path))["w"][0] == 3

    checkpoint.save(tmp_path, 5, _state(5), keep=1)  # prunes to step 5, clears the torn files
    assert sorted(p.name for p in folder.iterdir()) == ["step_00000005.pt", "step_00000005.pt.done"]

    final = checkpoint.save(tmp_path, 6, _state(6, final=True), keep=1)
    assert final.name == "final.pt" and checkpoint.latest(tmp_path) == final
    assert sorted(p.name for p in folder.iterdir()) == ["final.pt", "final.pt.done"]


def test_rng_state_round_trips(tmp_path: Path):
    state = checkpoint.rng_state()
    torch.save(state, tmp_path / "rng.pt")
    expected = (torch.rand(3), random.random())
    torch.rand(5), random.random()
    checkpoint.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]


def test_interrupted_run_with_loader_worker_resumes_to_the_same_weights(
    shards: str, tmp_path: Path, monkeypatch
):
    """Per-segment seeds reach the loader worker: a resume mid-segment replays the same data."""
    monkeypatch.setattr(data, "SEGMENT_STEPS", 3)
    cfg = make_cfg(shards, samples__seen=16 * 6, train__workers=1, train__checkpoint_every=1)
    straight = checkpoint.load(train(cfg, tmp_path / "straight")["checkpoint"])["state_dict"]
    real_save = checkpoint.save

    def killed_at_step_5(run_dir, step, state, keep):
        if step == 5:
            raise KeyboardInterrupt("killed")
        return real_save(run_dir, step, state, keep)

    monkeypatch.setattr(checkpoint, "save", killed_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "run")
    monkeypatch.setattr(checkpoint, "save", real_save)
    out = train(cfg, tmp_path / "run")
    assert out["resumed_from"] == 4
    resumed = checkpoint.load(out["checkpoint"])["state_dict"]
    for k in straight:
        assert torch.equal(resumed[k], straight[k]), k
