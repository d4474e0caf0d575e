"""Model construction for training: open_clip architectures, the tiny ones included."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import open_clip
import torch

from core.models import quiet_model_build, register_model_configs
from training.pooled import pool_last_block
from training.tokens import get_tokenizer


def seed_everything(seed: int) -> None:
    """Seed torch, Python and numpy (model init draws from them)."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def create_model(
    arch: str,
    precision: str,
    device: str | torch.device,
    pretrained: str | None = None,
    pooled: bool = True,
) -> tuple[Any, Any, Any, Any]:
    """Build ``arch`` as open_clip_train does: ``(model, preprocess_train, preprocess_val, tokenizer)``.

    The model returns a dict (``output_dict=True``), which ``open_clip.ClipLoss`` takes as
    keyword arguments. ``pretrained`` is a checkpoint path (ours or open_clip's) or None for a
    random initialisation, which draws from torch's global RNG: seed it first. With ``pooled``
    the towers compute their last block only at the row they pool (``training.pooled``: the
    same function and gradients up to float rounding); ``pooled=False`` keeps open_clip's
    forward as it is (the parity test's reference).
    """
    register_model_configs()
    with quiet_model_build():
        model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(
            arch, pretrained=pretrained, precision=precision, device=device, output_dict=True
        )
        tokenizer = get_tokenizer(arch)  # one cache per arch and process: same tokens
    if pooled:
        pool_last_block(model)
    return model, preprocess_train, preprocess_val, tokenizer
