"""Shared fixtures: compose the real Hydra config, as the app does, for assertions on values."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

import core  # noqa: F401  # first: sets OMP_WAIT_POLICY before torch starts OpenMP
from tests.helpers.config import compose_cfg


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """``make_cfg("model=tiny_m", ...)``: the composed config, with root and data_root in tmp."""

    def _make(*overrides: str, root: Path | None = None) -> DictConfig:
        return compose_cfg(*overrides, root=root or tmp_path / "runs", data_root=tmp_path / "data")

    return _make


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from 2 threads, lose much when others share the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A few tiny img2dataset-style shards (``tests.helpers.data.write_shards``), made once a module."""
    from tests.helpers.data import write_shards

    return write_shards(tmp_path_factory.mktemp("shards"))
