"""Preemption signals, non-finite losses and loss spikes: the run stops cleanly or carries on."""

from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from open_clip import ClipLoss

import training.step as S
from core.errors import NonFiniteLoss, Preempted
from tests.helpers.training import (
    STEPS,
    resume_and_compare,
    resume_cfg,
    spawn_trainer,
    straight_weights,
)
from training import checkpoint
from training.metrics import LOG_FILE, Meter
from training.stop import PREEMPTED_EXIT_CODE
from training.train import train


# The resume tests' run, and the weights of its uninterrupted twin.
@pytest.fixture(scope="module")
def cfg(shards: str):
    return resume_cfg(shards)


@pytest.fixture(scope="module")
def straight(cfg, tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    return straight_weights(cfg, tmp_path_factory.mktemp("straight") / "run")


def test_sigterm_checkpoints_at_step_boundary_and_exits_with_preempted(
    cfg, straight, tmp_path: Path, monkeypatch
):
    run_dir = tmp_path / "run"
    cfg = cfg.copy()
    cfg.train.checkpoint_every = 0  # the checkpoint must come from the signal alone
    proc = spawn_trainer(cfg, run_dir, "slow")
    log = run_dir / LOG_FILE
    deadline = time.monotonic() + 60
    while not log.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == PREEMPTED_EXIT_CODE, err
    _, step, path = out.strip().splitlines()[-1].split()
    latest = checkpoint.latest(run_dir)
    assert str(latest) == path and checkpoint.is_complete(latest)
    assert 1 <= int(step) < STEPS and checkpoint.load(latest)["step"] == int(step)
    resume_and_compare(cfg, run_dir, straight, monkeypatch, from_step=int(step))


def test_sigusr2_in_process_raises_preempted_and_restores_handlers(
    cfg, tmp_path: Path, monkeypatch
):
    cfg = cfg.copy()
    cfg.train.checkpoint_every = 0
    calls = []
    real_step = S.train_step

    def step_then_signal(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # arrives in the middle of step 3
            os.kill(os.getpid(), signal.SIGUSR2)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(S, "train_step", step_then_signal)
    before = signal.getsignal(signal.SIGUSR2)
    with pytest.raises(Preempted) as caught:
        train(cfg, tmp_path / "run")
    assert caught.value.step == 3 and caught.value.signum == signal.SIGUSR2
    assert checkpoint.latest(tmp_path / "run") == caught.value.checkpoint
    assert checkpoint.load(caught.value.checkpoint)["step"] == 3
    assert signal.getsignal(signal.SIGUSR2) == before


class _NanLoss(ClipLoss):
    """ClipLoss whose value is NaN on the given (1-based) calls."""

    bad: set[int] = set()
    calls = 0

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        type(self).calls += 1
        return out * math.nan if type(self).calls in self.bad else out


def _nan_at(monkeypatch, calls: set[int]) -> None:
    loss = type("NanLoss", (_NanLoss,), {"bad": calls, "calls": 0})
    monkeypatch.setattr(S, "ClipLoss", loss)


def test_non_finite_steps_are_skipped_and_counted(cfg, tmp_path: Path, monkeypatch):
    cfg = cfg.copy()
    cfg.model.local_batch = 16  # one loss call per step
    _nan_at(monkeypatch, {3, 5})
    out = train(cfg, tmp_path / "run")
    assert out["step"] == STEPS and math.isfinite(out["loss"])
    lines = [json.loads(x) for x in (tmp_path / "run" / LOG_FILE).read_text().splitlines()]
    assert [r["nonfinite_skipped"] for r in lines] == [0, 0, 1, 1, 2, 2, 2, 2]
    final = checkpoint.load(out["checkpoint"])
    assert final["nonfinite_skipped"] == 2
    assert all(torch.isfinite(v).all() for v in final["state_dict"].values())
    # Adam stepped only on the 6 good steps.
    assert all(s["step"] == STEPS - 2 for s in final["optimizer"]["state"].values())


def test_non_finite_in_a_row_stops_with_last_good_checkpoint(cfg, tmp_path: Path, monkeypatch):
    cfg = cfg.copy()
    cfg.model.local_batch = 16
    _nan_at(monkeypatch, set(range(3, 100)))
    with pytest.raises(NonFiniteLoss, match="5 non-finite losses in a row.*step_00000002"):
        train(cfg, tmp_path / "run")
    latest = checkpoint.latest(tmp_path / "run")
    assert latest.name == "step_00000002.pt" and math.isfinite(checkpoint.load(latest)["loss"])


def test_loss_spike_is_flagged_against_running_mean():
    meter = Meter(0, flops_per_sample=1.0, peak=1.0)
    assert not any(meter.add(1.0) for _ in range(20))
    assert not meter.add(math.nan)  # non-finite: counted elsewhere, not a spike
    assert meter.add(10.0) and meter.spikes == 1
    assert not meter.add(1.2)
