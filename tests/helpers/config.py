"""The one way tests build a config: ``conf/`` composed through Hydra, as the app composes it,
checked by the schema (the ``make_cfg`` fixture and ``tests.helpers.training.make_cfg`` wrap it)."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from core import schema
from tests.helpers.procs import ROOT

CONF = ROOT / "conf"


def hydra_value(v: object) -> str:
    """``v`` in Hydra's override grammar."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list | tuple):
        return "[" + ",".join(hydra_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{hydra_value(x)}" for k, x in v.items()) + "}"
    return "'" + str(v).replace("'", "\\'") + "'"


def compose_cfg(*overrides: str, root: Path | str, data_root: Path | str,
                config_name: str = "config") -> DictConfig:
    """The composed config of ``overrides`` with ``root`` and ``data_root`` set (both before
    ``overrides``, so an override may still change them)."""
    schema.register()
    base = [f"root={hydra_value(str(root))}", f"data_root={hydra_value(str(data_root))}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name, overrides=[*base, *overrides])
