"""Training tests' shared pieces: the tiny run's config, composed through Hydra as the app
composes it, and the kill-a-child-trainer-then-resume helpers of the resume and signal tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from tests.helpers.config import compose_cfg, hydra_value
from tests.helpers.procs import spawn_python
from training import checkpoint, data
from training.train import train

ARCH = "clipscale-tiny-s"

TINY_RUN = (
    "model=tiny_s",
    "model.global_batch=16",
    "model.local_batch=16",
    "model.precision=fp32",
    "data.name=test",
    "data.label=Test",
    "data.synthetic=false",
    "data.num_samples=256",
    "data.seed=0",
    "samples.name=s80",
    "samples.seen=80",
    "train=tiny",
    "train.lr=1e-3",
    "train.warmup=2",
    "train.workers=0",
    "train.log_every=2",
    "train.checkpoint_every=0",
    "train.keep_checkpoints=2",
    "eval=none",
)
"""Overrides of the tiny CPU run: 5 steps of 16 pairs, fp32, no evaluation, in-process loading.
The optimizer's other values (betas, eps, weight decay, seed) are the recipe's (train=tiny)."""


def make_cfg(shards: str, **over: object) -> DictConfig:
    """The composed config (``conf/``, checked by the schema) of a tiny CPU run on ``shards``.

    ``over``: more overrides, ``train__lr=5e-3`` for ``train.lr=0.005``. ``root`` and
    ``data_root`` are folders beside the (first list of) shards, which the tests write in a
    temporary folder; training reads neither.
    """
    beside = Path(shards.split("::")[0]).parent
    return compose_cfg(
        *TINY_RUN,
        f"data.shards={hydra_value(shards)}",
        *(f"{key.replace('__', '.')}={hydra_value(value)}" for key, value in over.items()),
        root=beside / "runs", data_root=beside / "data",
    )


# --------------------------------------------------------------------------------------------
# A trainer in a child process, killed or signalled, then resumed in this one

STEPS = 8
"""Steps of the resume and signal tests' run."""
SEGMENT = 3
"""``data.SEGMENT_STEPS`` in those runs: 8 steps cross segment boundaries, resumes land mid-segment."""
ATOL = 1e-6
"""fp32 tolerance on the final weights of a resumed run against the straight one."""

CHILD = """
import os, signal, sys, time, io
import torch
torch.set_num_threads(1)
from omegaconf import OmegaConf
from core.errors import Preempted
from training import data
import training.step as S
from training.stop import PREEMPTED_EXIT_CODE
from training.train import train
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
    real_step = S.train_step
    def slow_step(*a, **kw):
        time.sleep(0.2)  # leaves the parent time to send its signal mid-run
        return real_step(*a, **kw)
    S.train_step = slow_step
cfg = OmegaConf.load({cfg!r})
try:
    train(cfg, {run_dir!r})
except Preempted as e:
    print("PREEMPTED", e.step, e.checkpoint, flush=True)
    sys.exit(PREEMPTED_EXIT_CODE)
"""


def resume_cfg(shards: str) -> DictConfig:
    """The run the resume and signal tests interrupt: 8 steps with accumulation, a checkpoint
    and a log line every step."""
    return make_cfg(
        shards,
        model__global_batch=16,
        model__local_batch=8,  # accumulation too
        samples__seen=16 * STEPS,
        train__checkpoint_every=1,
        train__keep_checkpoints=2,
        train__log_every=1,
    )


def straight_weights(cfg: DictConfig, run_dir: Path) -> dict[str, torch.Tensor]:
    """Final weights of ``cfg`` trained straight through in this process, in ``run_dir``."""
    real = data.SEGMENT_STEPS
    data.SEGMENT_STEPS = SEGMENT
    try:
        out = train(cfg, run_dir)
    finally:
        data.SEGMENT_STEPS = real
    return checkpoint.load(out["checkpoint"])["state_dict"]


def spawn_trainer(cfg: DictConfig, run_dir: Path, mode: str, at: int = 0) -> subprocess.Popen:
    """A child process training ``cfg`` in ``run_dir``: ``mode`` ``kill_mid_write`` SIGKILLs
    itself halfway through writing the checkpoint of step ``at``; ``slow`` sleeps 0.2 s per
    step; on Preempted it prints ``PREEMPTED step path`` and exits with PREEMPTED_EXIT_CODE."""
    cfg_path = run_dir.parent / "cfg.yaml"
    OmegaConf.save(cfg, cfg_path)
    code = CHILD.format(segment=SEGMENT, mode=mode, at=at, cfg=str(cfg_path), run_dir=str(run_dir))
    return spawn_python(code)


def resume_and_compare(
    cfg: DictConfig, run_dir: Path, straight: dict[str, torch.Tensor], monkeypatch, from_step: int
) -> None:
    """Resume the run in ``run_dir`` here; it must resume at ``from_step``, finish, and end
    with the weights of ``straight`` (within ATOL)."""
    monkeypatch.setattr(data, "SEGMENT_STEPS", SEGMENT)
    out = train(cfg, run_dir)
    assert out["resumed_from"] == from_step and out["step"] == STEPS
    resumed = checkpoint.load(out["checkpoint"])["state_dict"]
    worst = max(float((resumed[k] - straight[k]).abs().max()) for k in straight)
    print(f"largest weight difference, resumed at {from_step} vs straight: {worst:.3g}")
    for k in straight:
        torch.testing.assert_close(resumed[k], straight[k], atol=ATOL, rtol=0, msg=k)
