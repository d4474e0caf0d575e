"""Restartable at any step: SIGKILL, also in the middle of a checkpoint write, for real.

The trainer runs in a child process (``python -c`` calling ``training.train.train`` on a saved
OmegaConf config, a checkpoint every step: ``tests.helpers.training.spawn_trainer``); the parent
kills it, resumes the run in-process and compares the final weights with a run that went
straight through. ``data.SEGMENT_STEPS`` is shrunk to 3 so that the 8 steps cross data-segment
boundaries and a resume lands mid-segment.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import torch

from tests.helpers.training import (
    STEPS,
    resume_and_compare,
    resume_cfg,
    spawn_trainer,
    straight_weights,
)
from training import checkpoint


@pytest.fixture(scope="module")
def cfg(shards: str):
    return resume_cfg(shards)


@pytest.fixture(scope="module")
def straight(cfg, tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """Final weights of the run trained straight through, in this process."""
    return straight_weights(cfg, tmp_path_factory.mktemp("straight") / "run")


def test_sigkill_during_checkpoint_write_keeps_previous_and_resumes_exactly(
    cfg, straight, tmp_path: Path, monkeypatch
):
    run_dir = tmp_path / "run"
    half = STEPS // 2
    proc = spawn_trainer(cfg, run_dir, "kill_mid_write", at=half + 1)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err
    folder = checkpoint.checkpoint_dir(run_dir)
    torn = list(folder.glob(f".step_{half + 1:08d}.pt.*.tmp"))
    assert torn and torn[0].stat().st_size > 0  # the write really was cut in half
    assert checkpoint.latest(run_dir) == folder / f"step_{half:08d}.pt"
    assert checkpoint.load(checkpoint.latest(run_dir))["step"] == half  # still readable
    resume_and_compare(cfg, run_dir, straight, monkeypatch, from_step=half)
    assert not list(folder.glob(".*.tmp"))  # the torn file was cleared


def test_sigkill_from_outside_then_resume(cfg, straight, tmp_path: Path, monkeypatch):
    run_dir = tmp_path / "run"
    proc = spawn_trainer(cfg, run_dir, "slow")
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
    resume_and_compare(cfg, run_dir, straight, monkeypatch, from_step=step)
