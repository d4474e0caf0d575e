"""One optimizer step of open_clip_train's recipe: optimizer, loss, (accumulated) backward, update.

The recipe follows open_clip_train step for step (``tests/test_training_parity.py`` checks it
against its own ``train_one_epoch``): ``ClipLoss`` over the whole global batch (micro-batches
accumulate with its feature cache, so the contrastive negatives are the global batch, not the
micro-batch), AdamW without weight decay on gains and biases, and ``logit_scale`` clamped to
[0, ln 100] after every step. In DDP the loss is ``ClipLoss(local_loss=True,
gather_with_grad=True)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
import torch.distributed as dist
from omegaconf import DictConfig
from open_clip import ClipLoss

from training.distributed import Dist

Autocast = Callable[[], AbstractContextManager]
"""A context-manager factory (open_clip_train's ``get_autocast``) the forward passes run under."""


FUSED_DEVICES = ("cpu", "cuda")
"""Devices where ``make_optimizer`` uses torch's fused AdamW by default."""


def _no_weight_decay(name: str, p: torch.Tensor) -> bool:
    # open_clip_train/main.py's `exclude`: gains, biases and the temperature are not decayed.
    return p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name


def make_optimizer(
    model: torch.nn.Module, t: DictConfig, fused: bool | None = None
) -> torch.optim.AdamW:
    """AdamW over open_clip_train's two parameter groups (weight decay only on matrices).

    ``t``: the ``train`` section (lr, beta1, beta2, eps, weight_decay). ``fused`` (default:
    when the parameters are on a CPU or a CUDA GPU, the devices torch has the kernel for) runs
    the update as one pass over each tensor instead of the for-loop's several: the same AdamW
    arithmetic as open_clip_train's, up to float rounding (``tests/test_training_parity.py``).
    A resumed run keeps the kernel its checkpoint was trained with (the saved parameter groups
    carry ``fused``).
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if fused is None:
        fused = bool(named) and named[0][1].device.type in FUSED_DEVICES
    return torch.optim.AdamW(
        [
            {"params": [p for n, p in named if _no_weight_decay(n, p)], "weight_decay": 0.0},
            {
                "params": [p for n, p in named if not _no_weight_decay(n, p)],
                "weight_decay": t.weight_decay,
            },
        ],
        lr=t.lr,
        betas=(t.beta1, t.beta2),
        eps=t.eps,
        fused=fused or None,
    )


def make_loss(dist_: Dist) -> ClipLoss:
    """open_clip's ``ClipLoss``; across processes, each rank's features against all ranks'."""
    if dist_.world > 1:
        return ClipLoss(
            local_loss=True, gather_with_grad=True, rank=dist_.rank, world_size=dist_.world
        )
    return ClipLoss()


def make_scaler(precision: str, device: torch.device) -> Any:
    """fp16's GradScaler for ``precision == "amp"`` (as open_clip_train), else None."""
    return torch.amp.GradScaler(device.type) if precision == "amp" else None


def unwrap(model: Any) -> Any:
    """The model inside torch.compile's and DDP's wrappers (or the model itself)."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def _backward(loss: torch.Tensor, scaler: Any) -> None:
    (scaler.scale(loss) if scaler is not None else loss).backward()


def _split_scale(out: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """Per-sample features apart from the scalars (logit scale and bias) of a model output."""
    scalars = {k: out.pop(k) for k in ("logit_scale", "logit_bias") if k in out}
    return out, scalars


def accumulated_backward(
    model: Any, loss_fn: ClipLoss, batches: list, autocast: Autocast, scaler: Any
) -> torch.Tensor:
    """Backward of the loss over all micro-batches together (open_clip_train's ``accum_freq``).

    Features of every micro-batch are cached without gradients; then each micro-batch is run
    again with gradients and its features replace its cached ones in the full-batch loss. The
    summed gradients are the gradient of the global-batch contrastive loss, except for the
    logit scale (and bias): as in open_clip_train, every pass sends it the full-batch gradient,
    so it receives ``accum`` times that. We keep this on purpose: it is the recipe the paper's
    runs were trained with, and AdamW is nearly invariant to the factor (up to ``eps``).
    """
    cached: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad(), autocast():
        for images, texts in batches:
            features, _ = _split_scale(model(images, texts))
            for k, v in features.items():
                cached.setdefault(k, []).append(v)
    for j, (images, texts) in enumerate(batches):
        with autocast():
            features, scalars = _split_scale(model(images, texts))
            inputs = {k: torch.cat(v[:j] + [features[k]] + v[j + 1 :]) for k, v in cached.items()}
            loss = loss_fn(**inputs, **scalars)
        _backward(loss, scaler)
    return loss.detach()


def train_step(
    model: Any,
    optimizer: torch.optim.Optimizer,
    scaler: Any,
    loss_fn: ClipLoss,
    batches: list,
    autocast: Autocast,
) -> torch.Tensor:
    """One optimizer step over ``batches`` (this process's micro-batches of one global batch).

    Returns the (detached) loss, averaged over the processes. A non-finite loss skips the
    update on every process: gradients are dropped and the weights, optimizer state and logit
    scale stay as they were.
    """
    optimizer.zero_grad(set_to_none=True)
    if len(batches) == 1:
        with autocast():
            loss = loss_fn(**model(*batches[0]))
        _backward(loss, scaler)
        loss = loss.detach()
    else:
        loss = accumulated_backward(model, loss_fn, batches, autocast, scaler)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        # Every rank must take the same decision on a non-finite loss, and log the mean.
        loss = loss.clone()
        dist.all_reduce(loss)
        loss /= dist.get_world_size()
    if not torch.isfinite(loss):  # one host sync per step; GradScaler does as much anyway
        optimizer.zero_grad(set_to_none=True)
        return loss
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    with torch.no_grad():
        # As in the paper (and open_clip_train): the temperature never exceeds 100.
        unwrap(model).logit_scale.clamp_(0, math.log(100))
    return loss
