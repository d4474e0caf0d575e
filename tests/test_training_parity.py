"""Parity with the reference: our trainer against open_clip_train's own ``train_one_epoch``.

Same initial weights (same seed, same model factory), same batches (drawn from our pipeline
once, then fed to both), fp32 on CPU, 20 optimizer steps. open_clip_train's optimizer is built
with the parameter groups of its ``main.py``, its own ``cosine_lr`` and torch's fused AdamW
kernel, which our trainer uses on CPU and GPU, and its model's towers compute their last block
at the pooled row only, as our trainer's do (``training.pooled``). Two more tests bound what
those two choices change against open_clip_train as it runs by default: the for-loop AdamW
kernel ``main.py`` gets on CPU, and open_clip's full last blocks (float rounding, grown by 20
steps of training). The losses and weights are expected to agree exactly; ``ATOL``/``RTOL`` keep a different BLAS or thread count from
making the test flaky.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from open_clip import ClipLoss
from open_clip_train.scheduler import cosine_lr
from open_clip_train.train import train_one_epoch

from tests.helpers.training import make_cfg
from training import checkpoint, data, models
from training.metrics import LOG_FILE
from training.models import seed_everything
from training.train import train

STEPS = 20
ATOL = 1e-6
"""Absolute tolerance on weights and losses (fp32; the measured difference is 0)."""
RTOL = 1e-5
FUSED_ATOL = 1e-3
"""Fused against for-loop AdamW: float rounding, grown by 20 steps of training."""
POOLED_ATOL = 1e-3
"""Last blocks at the pooled row against open_clip's full ones: float rounding, grown alike."""


class _RecordingLoss(ClipLoss):
    """open_clip's ClipLoss, remembering every value it returns."""

    def __init__(self) -> None:
        super().__init__()
        self.values: list[float] = []

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        total = sum(out.values()) if isinstance(out, dict) else out
        self.values.append(float(total.detach()))
        return out


class _Batches(list):
    """What ``train_one_epoch`` reads from ``data["train"].dataloader``."""

    num_samples = 0

    @property
    def num_batches(self) -> int:
        return len(self)


def _reference(
    cfg, shards: str, fused: bool = True, pooled: bool = True
) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Final weights and per-step losses of open_clip_train's ``train_one_epoch``.

    ``fused``: run its AdamW with torch's fused kernel, as our trainer does on CPU and GPU
    (``training.step.FUSED_DEVICES``), or with the for-loop kernel its ``main.py`` gets.
    ``pooled``: its model's last blocks computed at the pooled row only, as our trainer's
    (``training.pooled``), or open_clip's forward as it is.
    """
    t, accum = cfg.train, int(cfg.model.global_batch) // int(cfg.model.local_batch)
    seed_everything(int(t.seed))  # as train() does before building the model
    model, preprocess, _, tokenizer = models.create_model(
        cfg.model.arch, "fp32", "cpu", pooled=pooled
    )
    loader = data.make_loader(
        shards,
        preprocess,
        tokenizer,
        int(cfg.model.local_batch),
        0,
        seed=data.stream_seed(int(t.seed), 0),
    )
    batches, it = _Batches(), iter(loader)
    batches.extend(next(it) for _ in range(STEPS * accum))
    batches.num_samples = len(batches) * int(cfg.model.local_batch)

    # open_clip_train/main.py's optimizer, verbatim but for the kernel (``fused``).
    exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n  # noqa: E501, E731, Q000
    include = lambda n, p: not exclude(n, p)  # noqa: E731
    named_parameters = list(model.named_parameters())
    gain_or_bias_params = [p for n, p in named_parameters if exclude(n, p) and p.requires_grad]
    rest_params = [p for n, p in named_parameters if include(n, p) and p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": gain_or_bias_params, "weight_decay": 0.0},
            {"params": rest_params, "weight_decay": t.weight_decay},
        ],
        lr=t.lr,
        betas=(t.beta1, t.beta2),
        eps=t.eps,
        fused=fused or None,
    )
    scheduler = cosine_lr(optimizer, t.lr, t.warmup, STEPS)
    args = SimpleNamespace(
        device="cpu",
        precision="fp32",
        distill=False,
        accum_freq=accum,
        skip_scheduler=False,
        horovod=False,
        grad_clip_norm=None,
        log_every_n_steps=1000,
        world_size=1,
        rank=0,
        local_rank=0,
        batch_size=int(cfg.model.local_batch),
        wandb=False,
    )
    loss = _RecordingLoss()
    train_data = {"train": SimpleNamespace(dataloader=batches, set_epoch=lambda epoch: None)}
    logging.disable(logging.INFO)  # train_one_epoch logs every step at INFO
    try:
        train_one_epoch(model, train_data, loss, 0, optimizer, None, scheduler, None, args)
    finally:
        logging.disable(logging.NOTSET)
    # The loss of a step is the value of its last micro-batch pass (all passes agree).
    per_step = loss.values[accum - 1 :: accum] if accum > 1 else loss.values
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, per_step


@pytest.mark.parametrize("local_batch", [16, 8], ids=["no_accum", "accum2"])
def test_same_losses_and_weights_as_open_clip_train(shards: str, tmp_path: Path, local_batch):
    cfg = make_cfg(
        shards,
        model__global_batch=16,
        model__local_batch=local_batch,
        samples__seen=16 * STEPS,
        train__log_every=1,
        train__lr=5e-3,
        train__warmup=3,
    )
    out = train(cfg, tmp_path / "run")
    ours = checkpoint.load(out["checkpoint"])["state_dict"]
    our_losses = [
        json.loads(line)["loss"] for line in (tmp_path / "run" / LOG_FILE).read_text().splitlines()
    ]
    ref, ref_losses = _reference(cfg, shards)

    assert len(our_losses) == len(ref_losses) == STEPS
    assert ref_losses[-1] < ref_losses[0]  # it learned: the comparison is not of two no-ops
    torch.testing.assert_close(
        torch.tensor(our_losses), torch.tensor(ref_losses), atol=ATOL, rtol=RTOL
    )
    assert ours.keys() == ref.keys()
    worst = max(float((ours[k] - ref[k]).abs().max()) for k in ref)
    print(f"largest weight difference after {STEPS} steps: {worst:.3g}")
    for k in ref:
        torch.testing.assert_close(ours[k], ref[k], atol=ATOL, rtol=RTOL, msg=k)


@pytest.mark.parametrize(
    "choice,atol",
    [("fused", FUSED_ATOL), ("pooled", POOLED_ATOL)],
    ids=["fused_adamw_vs_for_loop", "pooled_last_blocks_vs_full"],
)
def test_our_choices_are_open_clip_trains_defaults_up_to_rounding(
    shards: str, choice: str, atol: float
) -> None:
    """Each of our trainer's two departures from open_clip_train's defaults, on and off in its
    own loop: the fused AdamW kernel against the for-loop one its main.py gets on CPU, and the
    towers' last blocks at the pooled row (``training.pooled``) against open_clip's full ones.
    The runs differ only by float rounding, amplified a little by 20 steps of training."""
    cfg = make_cfg(
        shards,
        model__global_batch=16,
        model__local_batch=16,
        samples__seen=16 * STEPS,
        train__lr=5e-3,
        train__warmup=3,
    )
    ours, our_losses = _reference(cfg, shards)
    theirs, their_losses = _reference(cfg, shards, **{choice: False})
    worst = max(float((ours[k] - theirs[k]).abs().max()) for k in theirs)
    print(f"{choice} on against off, largest weight difference after {STEPS} steps: {worst:.3g}")
    torch.testing.assert_close(
        torch.tensor(our_losses), torch.tensor(their_losses), atol=atol, rtol=0
    )
    for k in theirs:
        torch.testing.assert_close(ours[k], theirs[k], atol=atol, rtol=0, msg=k)
