"""Model construction: open_clip architectures, including the tiny ones shipped in ``model_configs``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import open_clip
import torch

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
"""Our own open_clip architectures (``clipscale-tiny-s``, ``clipscale-tiny-m``)."""

_registered = False


class _QuietModelBuild(logging.Filter):
    # open_clip logs ~10 INFO lines per model built, and warns when there are no weights to
    # load: training from scratch is the point, and one run must stay one short log block.
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO and "initialized randomly" not in record.getMessage()


def register_model_configs() -> None:
    """Make the architectures of ``training/model_configs`` known to open_clip (idempotent)."""
    global _registered
    if not _registered:
        open_clip.add_model_config(MODEL_CONFIG_DIR)
        _registered = True


def create_model(
    arch: str, precision: str, device: str | torch.device, pretrained: str | None = None
) -> tuple[Any, Any, Any, Any]:
    """Build ``arch`` as open_clip_train does: ``(model, preprocess_train, preprocess_val, tokenizer)``.

    The model returns a dict (``output_dict=True``), which ``open_clip.ClipLoss`` takes as
    keyword arguments. ``pretrained`` is a checkpoint path (ours or open_clip's) or None for a
    random initialisation, which draws from torch's global RNG: seed it first.
    """
    register_model_configs()
    notice = _QuietModelBuild()
    logging.getLogger().addFilter(notice)  # open_clip logs through the root logger
    try:
        model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(
            arch, pretrained=pretrained, precision=precision, device=device, output_dict=True
        )
        tokenizer = open_clip.get_tokenizer(arch)
    finally:
        logging.getLogger().removeFilter(notice)
    return model, preprocess_train, preprocess_val, tokenizer
