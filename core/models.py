"""Model registration: the tiny clipscale architectures (``core/model_configs``) made known to
open_clip, and the quieting of open_clip's model-building log lines. Training builds models to
train, evaluation to load weights into; both register through here."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
"""Our own open_clip architectures (``clipscale-tiny-s``, ``clipscale-tiny-m``)."""

_registered = False


def register_model_configs() -> None:
    """Make the architectures of ``core/model_configs`` known to open_clip (idempotent)."""
    global _registered
    if not _registered:
        import open_clip  # torch: kept off the import of core

        open_clip.add_model_config(MODEL_CONFIG_DIR)
        _registered = True


class _QuietModelBuild(logging.Filter):
    # open_clip logs ~10 INFO lines per model built, and warns "initialized randomly" when
    # there are no weights to load: training from scratch is the point, and evaluation loads
    # its weights right after. One run must stay one short log block.
    def __init__(self, info: bool) -> None:
        super().__init__()
        self.info = info

    def filter(self, record: logging.LogRecord) -> bool:
        if "initialized randomly" in record.getMessage():
            return False
        return self.info or record.levelno > logging.INFO


@contextlib.contextmanager
def quiet_model_build(info: bool = False) -> Iterator[None]:
    """Hide open_clip's "initialized randomly" warning (and, unless ``info``, its INFO lines)
    while a model is built; open_clip logs through the root logger."""
    root, quiet = logging.getLogger(), _QuietModelBuild(info)
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)
