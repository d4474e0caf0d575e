"""Restartable at any step: SIGKILL, also in the middle of a checkpoint write, for real.

The trainer runs in a child process (``python -c`` calling ``training.train.train`` on a saved
OmegaConf config, a checkpoint every step); the parent kills it, resumes the run in-process and
compares the final weights with a run that went straight through. ``data.SEGMENT_STEPS`` is
shrunk to 3 so that the 8 steps cross data-segment boundaries and a resume lands mid-segment.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from test_training import make_cfg, spawn_python

from training import checkpoint, data
from training.train import train

STEPS = 8
SEGMENT = 3
ATOL = 1e-6
"""fp32 tolerance on the final weights (measured difference: 0, the resumed run is bitwise equal)."""

CHILD = """
import os, signal, sys, time, io
import torch
torch.set_num_threads(1)
from omegaconf import OmegaConf
from training import data
import training.train as T
data.SEGMENT_STEPS = {segment}
mode = {mode!r}
if mode == "kill_mid_write":
    # Die with SIGKILL halfway through writing the checkpoint of step {at}: a torn temporary file.
    real_save = torch.save
    def save(obj, f, *a, **kw):
        if isinstance(obj, dict) and obj.get("step") == {at} and not obj.get("final"):
            buf = io.BytesIO()
            real_save(obj, buf, *a, **kw)
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, f, *a, **kw)
    torch.save = save
elif mode == "slow":
    real_step = T.train_step
    def slow_step(*a, **kw):
        time.sleep(0.2)  # leaves the parent time to send its signal mid-run
        return real_step(*a, **kw)
    T.train_step = slow_step
cfg = OmegaConf.load({cfg!r})
try:
    T.train(cfg, {run_dir!r})
except T.Preempted as e:
    print("PREEMPTED", e.step, e.checkpoint, flush=True)
    sys.exit(T.PREEMPTED_EXIT_CODE)
"""


@pytest.fixture(scope="module")
def cfg(shards: str):
    return make_cfg(
        shards,
        model__global_batch=16,
        model__local_batch=8,  # accumulation too
        samples__seen=16 * STEPS,
        train__checkpoint_every=1,
        train__keep_checkpoints=2,
        train__log_every=1,
    )


@pytest.fixture(scope="module")
def straight(cfg, tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """Final weights of the run trained straight through, in this process."""
    mp = pytest.MonkeyPatch()
    mp.setattr(data, "SEGMENT_STEPS", SEGMENT)
    try:
        out = train(cfg, tmp_path_factory.mktemp("straight") / "run")
    finally:
        mp.undo()
    return checkpoint.load(out["checkpoint"])["state_dict"]


def _child(cfg, run_dir: Path, mode: str, at: int = 0) -> subprocess.Popen:
    cfg_path = run_dir.parent / "cfg.yaml"
    OmegaConf.save(cfg, cfg_path)
    code = CHILD.format(segment=SEGMENT, mode=mode, at=at, cfg=str(cfg_path), run_dir=str(run_dir))
    return spawn_python(code)


def _resume_and_compare(cfg, run_dir: Path, straight, monkeypatch, from_step: int) -> None:
    monkeypatch.setattr(data, "SEGMENT_STEPS", SEGMENT)
    out = train(cfg, run_dir)
    assert out["resumed_from"] == from_step and out["step"] == STEPS
    resumed = checkpoint.load(out["checkpoint"])["state_dict"]
    worst = max(float((resumed[k] - straight[k]).abs().max()) for k in straight)
    print(f"largest weight difference, resumed at {from_step} vs straight: {worst:.3g}")
    for k in straight:
        torch.testing.assert_close(resumed[k], straight[k], atol=ATOL, rtol=0, msg=k)


def test_sigkill_during_checkpoint_write_keeps_previous_and_resumes_exactly(
    cfg, straight, tmp_path: Path, monkeypatch
):
    run_dir = tmp_path / "run"
    half = STEPS // 2
    proc = _child(cfg, run_dir, "kill_mid_write", at=half + 1)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err
    folder = checkpoint.checkpoint_dir(run_dir)
    torn = list(folder.glob(f".step_{half + 1:08d}.pt.*.tmp"))
    assert torn and torn[0].stat().st_size > 0  # the write really was cut in half
    assert checkpoint.latest(run_dir) == folder / f"step_{half:08d}.pt"
    assert checkpoint.load(checkpoint.latest(run_dir))["step"] == half  # still readable
    _resume_and_compare(cfg, run_dir, straight, monkeypatch, from_step=half)
    assert not list(folder.glob(".*.tmp"))  # the torn file was cleared


def test_sigkill_from_outside_then_resume(cfg, straight, tmp_path: Path, monkeypatch):
    run_dir = tmp_path / "run"
    proc = _child(cfg, run_dir, "slow")
    marker = checkpoint.marker_path(checkpoint.checkpoint_dir(run_dir) / "step_00000002.pt")
    deadline = time.monotonic() + 60
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    latest = checkpoint.latest(run_dir)
    assert latest is not None and latest.name != checkpoint.FINAL
    step = checkpoint.load(latest)["step"]
    assert 2 <= step < STEPS
    _resume_and_compare(cfg, run_dir, straight, monkeypatch, from_step=step)
