"""Cross-field checks of one composed point, in one place, before anything is queued.

The schema (``core.schema``) types every value, so a misspelt key, a wrong type or a value
outside an enum (precision, task, stage) already fails at composition. What it cannot say is
checked here: required values, positive sizes, finite optimizer values, batch sizes that make
the global batch, and shards that exist. The plan (login node) and the job both call
:func:`validate`; each error is a :class:`~core.errors.ConfigError` naming the key at fault.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from braceexpand import braceexpand
from omegaconf import MISSING, DictConfig, OmegaConf

from core.errors import ConfigError
from core.steps import Steps

NAME_KEYS = ("model.name", "data.name", "samples.name")
"""Config values that become part of a run id, hence of a path."""
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def check_name(key: str, value: object) -> str:
    """``value`` if it is safe as one path component (letters, digits, ``_ . -``; not ``.``,
    not ``..`` or anything holding ``..``); else :class:`ConfigError` naming ``key``."""
    text = str(value)
    if not _NAME.fullmatch(text) or ".." in text or text == ".":
        raise ConfigError(f"{key}={text!r}: a name that becomes part of a path may hold only "
                          "letters, digits, '_', '.' and '-' (no '..', no '/')")
    return text


def job_shape(cfg: DictConfig) -> tuple[int, int]:
    """(nodes, devices) of a point's training job: ``cluster.nodes``, or as many nodes as the
    global batch needs at ``model.local_batch`` per device and ``cluster.gpus_per_node``."""
    c = cfg.cluster
    nodes = int(c.nodes) if c.nodes else max(
        1, math.ceil(int(cfg.model.global_batch) / (int(cfg.model.local_batch) * c.gpus_per_node)))
    return nodes, nodes * int(c.gpus_per_node)


def steps(cfg: DictConfig) -> Steps:
    """The point's step arithmetic on its job's devices."""
    return Steps(int(cfg.samples.seen), int(cfg.model.global_batch), int(cfg.model.local_batch),
                 job_shape(cfg)[1])


def validate(cfg: DictConfig, where: str, need_data: bool = True) -> None:
    """Raise :class:`ConfigError` (prefixed ``where``) if the point cannot run.

    ``need_data=False`` (dry runs) skips the checks that need the dataset on disk.
    """
    missing = sorted(k for k in missing_keys(cfg) if not (k == "data.shards" and not need_data))
    if missing:
        hint = ""
        if "data.shards" in missing:
            hint = (f" (data={cfg.data.name} needs the img2dataset shards of {cfg.data.label}: "
                    f"pass \"data.shards='/path/to/{cfg.data.name}/{{00000..NNNNN}}.tar'\")")
        raise ConfigError(f"{where}: missing required value(s) {', '.join(missing)}{hint}")
    for key in NAME_KEYS:
        try:
            check_name(key, OmegaConf.select(cfg, key))
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
    if cfg.sweep is not None:
        sweep = Path(str(cfg.sweep))
        try:  # a named sweep, or the path of a sweep file whose stem names the manifest
            check_name("sweep", sweep.stem if sweep.suffix in (".yaml", ".yml") else cfg.sweep)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
    for key in ("model.global_batch", "model.local_batch", "samples.seen"):
        if OmegaConf.select(cfg, key) <= 0:
            raise ConfigError(f"{where}: {key} must be positive, got {OmegaConf.select(cfg, key)}")
    for key in ("train.lr", "train.weight_decay", "train.beta1", "train.beta2", "train.eps"):
        value = OmegaConf.select(cfg, key)
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"{where}: {key} must be a finite, non-negative number, got {value}")
    plan = steps(cfg)
    if not plan.divides:
        nodes, _ = job_shape(cfg)
        raise ConfigError(
            f"{where}: model.global_batch={plan.global_batch} is not nodes x gpus_per_node x "
            f"model.local_batch x accumulation ({nodes} x {cfg.cluster.gpus_per_node} x "
            f"{cfg.model.local_batch} x k); choose a global batch that divides evenly")
    if need_data and not cfg.data.synthetic:
        try:
            check_shard_ends(str(cfg.data.shards))
        except FileNotFoundError as e:
            raise ConfigError(f"{where}: {e}") from None


def expand_shards(pattern: str) -> list[list[str]]:
    """The shard URLs of each ``::``-separated list of ``data.shards`` (brace patterns
    expanded, ``{00000..00003}``), in order."""
    return [list(braceexpand(part)) for part in pattern.split("::")]


def is_local(url: str) -> bool:
    """A shard on the local filesystem, whose existence can be checked: not ``pipe:`` and not a
    ``scheme://`` URL (``s3://``, ``https://`` ...)."""
    return "://" not in url and not url.startswith("pipe:")


def check_shard_ends(pattern: str) -> None:
    """The first and last shard of every ``::``-separated list exist (a cheap, early check);
    FileNotFoundError naming ``data.shards`` and the file otherwise. Remote URLs are not
    checked."""
    for files in expand_shards(pattern):
        local = [f for f in (files[0], files[-1]) if is_local(f)]
        absent = [f for f in local if not Path(f).is_file()]
        if absent:
            raise FileNotFoundError(f"data.shards={pattern!r}: shard file not found: {absent[0]}")


def missing_keys(cfg: DictConfig) -> set[str]:
    """Mandatory (``???``) keys outside Hydra's own node, as full keys (``data.shards``,
    ``eval.datasets[0].root``). One unresolved conversion to plain containers, then a walk:
    much faster than ``OmegaConf.missing_keys``, which matters over thousands of points."""
    out: set[str] = set()

    def walk(value: object, key: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{key}[{i}]")
        elif value == MISSING:
            out.add(key)

    for k in cfg:
        if k == "hydra":
            continue
        if OmegaConf.is_missing(cfg, k):
            out.add(str(k))
            continue
        node = cfg._get_node(k)
        if OmegaConf.is_config(node):
            walk(OmegaConf.to_container(node, resolve=False, throw_on_missing=False), str(k))
    return out
