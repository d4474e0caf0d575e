"""What the evaluation tests share: the tiny architecture, its random weights, and a composed
config whose eval suite is a handful of tiny sets (``tests.helpers.data`` writes them)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import open_clip
import torch
from omegaconf import DictConfig, OmegaConf

from core.models import register_model_configs

ARCH = "clipscale-tiny-s"
"""The architecture of ``conf/model/tiny_s.yaml``."""


def tiny_state_dict() -> dict[str, torch.Tensor]:
    """Weights of a randomly initialised (seed 0) ``ARCH`` model, as open_clip builds it."""
    register_model_configs()
    torch.manual_seed(0)
    return open_clip.create_model(ARCH).state_dict()


def tiny_cfg(
    make_cfg: Callable[..., DictConfig],
    eval_sets: Path,
    datasets: Sequence[dict[str, Any]] | None = None,
) -> DictConfig:
    """The composed config (``make_cfg``: the ``conftest.py`` fixture) with model tiny_s at
    0.02 GMACs per pair (round computes to assert on), and an eval suite of ``datasets``
    (default: zero-shot on ``shapes`` and ``few``, retrieval on ``scenes``, under
    ``eval_sets``), batches of 32, recall@1 and @5, no aggregates.

    ``datasets`` go through the schema like any config: an unknown task is refused here
    (``omegaconf.ValidationError``, a ValueError naming it), before ``evaluate`` runs.
    """
    if datasets is None:
        datasets = [
            {"name": "shapes", "task": "zeroshot_classification", "root": str(eval_sets / "shapes")},  # fmt: skip
            {"name": "few", "task": "zeroshot_classification", "root": str(eval_sets / "few")},
            {"name": "scenes", "task": "zeroshot_retrieval", "root": str(eval_sets / "scenes")},
        ]
    cfg = make_cfg("eval=none", "model.gmacs=0.02", "eval.batch_size=32", "eval.recall_k=[1,5]")
    merged = OmegaConf.merge(cfg, {"eval": {"datasets": list(datasets)}})
    assert isinstance(merged, DictConfig)
    return merged
