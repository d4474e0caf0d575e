"""Shared fixtures: compose the real Hydra config, as the app does, for assertions on values."""

from __future__ import annotations

import os

# As launch.py does, before torch starts OpenMP: spinning threads stall tiny CPU models.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from launcher import schema

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """``make_cfg("model=tiny_m", ...)``: the composed config, with root and data_root in tmp."""
    schema.register()

    def _make(*overrides: str, root: Path | None = None) -> DictConfig:
        base = [f"root={root or tmp_path / 'runs'}", f"data_root={tmp_path / 'data'}"]
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("config", overrides=[*base, *overrides])

    return _make
