"""A sweep's plan: one :class:`Point` per grid point, derived quantities, checks and the table.

Everything here runs on the login node before anything is queued: a point that cannot run
(missing shards, a batch that does not divide, an unknown precision) fails here, in a second,
with a message naming the config key at fault.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from braceexpand import braceexpand
from omegaconf import MISSING, DictConfig, OmegaConf

from core.identity import run_id
from launcher import rundir

PRECISIONS = ("amp", "amp_bf16", "amp_bfloat16", "bf16", "fp16", "pure_bf16", "pure_fp16", "fp32")
TASKS = ("zeroshot_classification", "zeroshot_retrieval", "linear_probe")
STAGES = ("all", "train", "eval")
"""``stage=``: train then evaluate, train only (SLURM evaluates in a job of its own), evaluate only."""


class ConfigError(ValueError):
    """A point's configuration cannot run; the message names the key at fault."""


@dataclass
class Point:
    """One grid point: its overrides, composed config and what follows from them."""

    overrides: list[str]
    cfg: DictConfig
    run_id: str
    run_dir: Path
    state: str

    @cached_property
    def global_batch(self) -> int:
        return int(self.cfg.model.global_batch)

    @cached_property
    def steps(self) -> int:
        """Optimizer steps: ceil(samples seen / global batch)."""
        return math.ceil(int(self.cfg.samples.seen) / self.global_batch)

    @cached_property
    def samples_seen(self) -> int:
        """Pairs actually seen: whole steps of the global batch."""
        return self.steps * self.global_batch

    @cached_property
    def nodes(self) -> int:
        c = self.cfg.cluster
        if c.nodes:
            return int(c.nodes)
        return max(1, math.ceil(self.global_batch / (int(self.cfg.model.local_batch) * c.gpus_per_node)))

    @cached_property
    def gpus(self) -> int:
        return self.nodes * int(self.cfg.cluster.gpus_per_node)

    @cached_property
    def accumulation(self) -> int:
        """Gradient-accumulation steps so that gpus x local batch x accumulation = global batch."""
        return max(1, self.global_batch // (self.gpus * int(self.cfg.model.local_batch)))

    @cached_property
    def compute_gmacs(self) -> float:
        """The paper's x axis: forward GMACs per pair x samples seen."""
        return float(self.cfg.model.gmacs) * self.samples_seen

    @cached_property
    def gpu_hours(self) -> float:
        """Estimated A100-hours: the paper's measured per-GPU throughput where known, else
        training FLOPs (3 x forward) at 15% of the device's peak, the MFU the paper reached."""
        per_gpu = float(self.cfg.model.ref_samples_per_s_per_gpu)
        if per_gpu > 0:
            return self.samples_seen / per_gpu / 3600
        flops = 3 * 2 * float(self.cfg.model.gmacs) * 1e9 * self.samples_seen
        return flops / (0.15 * float(self.cfg.cluster.gpu_peak_tflops) * 1e12) / 3600


def make_point(overrides: list[str], cfg: DictConfig) -> Point:
    rid = run_id(cfg)
    path = rundir.root_dir(str(cfg.root)) / rid
    return Point(list(overrides), cfg, rid, path, rundir.state(path))


def check(point: Point, need_data: bool = True) -> None:
    """Raise :class:`ConfigError` if the point cannot run. ``need_data=False`` (dry runs) skips
    the checks that need the dataset on disk."""
    cfg = point.cfg
    where = f"point [{' '.join(point.overrides) or 'defaults'}]"
    missing = sorted(k for k in _missing_keys(cfg) if not (k == "data.shards" and not need_data))
    if missing:
        hint = ""
        if "data.shards" in missing:
            hint = (f" (data={cfg.data.name} needs the img2dataset shards of {cfg.data.label}: "
                    f"pass \"data.shards='/path/to/{cfg.data.name}/{{00000..NNNNN}}.tar'\")")
        raise ConfigError(f"{where}: missing required value(s) {', '.join(missing)}{hint}")
    if cfg.get("stage", "all") not in STAGES:
        raise ConfigError(f"{where}: stage={cfg.stage!r} is not one of {', '.join(STAGES)}")
    if cfg.model.precision not in PRECISIONS:
        raise ConfigError(f"{where}: model.precision={cfg.model.precision!r} is not one of {', '.join(PRECISIONS)}")
    for key in ("model.global_batch", "model.local_batch", "samples.seen"):
        if OmegaConf.select(cfg, key) <= 0:
            raise ConfigError(f"{where}: {key} must be positive, got {OmegaConf.select(cfg, key)}")
    for key in ("train.lr", "train.weight_decay", "train.beta1", "train.beta2", "train.eps"):
        value = OmegaConf.select(cfg, key)
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"{where}: {key} must be a finite, non-negative number, got {value}")
    per_step = point.gpus * int(cfg.model.local_batch) * point.accumulation
    if per_step != point.global_batch:
        raise ConfigError(
            f"{where}: model.global_batch={point.global_batch} is not nodes x gpus_per_node x "
            f"model.local_batch x accumulation ({point.nodes} x {cfg.cluster.gpus_per_node} x "
            f"{cfg.model.local_batch} x k); choose a global batch that divides evenly")
    for i, ds in enumerate(cfg.eval.datasets):
        if ds.task not in TASKS:
            raise ConfigError(f"{where}: eval.datasets[{i}].task={ds.task!r} is not one of {', '.join(TASKS)}")
    if need_data and not cfg.data.synthetic:
        _check_shards(where, str(cfg.data.shards))


def _missing_keys(cfg: DictConfig) -> set[str]:
    """Mandatory (``???``) keys outside Hydra's own node, as full keys (``data.shards``,
    ``eval.datasets[0].root``). One unresolved conversion to plain containers, then a walk:
    ten times faster than ``OmegaConf.missing_keys``, which matters over 1000 points."""
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


def _check_shards(where: str, pattern: str) -> None:
    """The first and last shard of every ``::``-separated list exist (a cheap, early check)."""
    for part in pattern.split("::"):
        files = list(braceexpand(part))
        absent = [f for f in (files[0], files[-1]) if not Path(f).is_file()]
        if absent:
            raise ConfigError(f"{where}: data.shards={pattern!r}: shard file not found: {absent[0]}")


def fmt_count(n: float) -> str:
    """1.3e10 -> '13B', 55296 -> '55.3k'."""
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            v = n / div
            return f"{v:.0f}{unit}" if v >= 100 or v == int(v) else f"{v:.3g}{unit}"
    return f"{n:.3g}"


COLUMNS = ("run id", "model", "data", "samples seen", "global batch", "steps", "GPUs",
           "compute (GMACs)", "GPU-hours", "state")


def rows(points: list[Point]) -> list[tuple[str, ...]]:
    return [(p.run_id, p.cfg.model.name, p.cfg.data.name, fmt_count(p.samples_seen),
             f"{p.global_batch:,}", f"{p.steps:,}", f"{p.gpus:,}", f"{p.compute_gmacs:.3g}",
             f"{p.gpu_hours:,.1f}", p.state) for p in points]


def table(points: list[Point]) -> str:
    """The plan as a fixed-width table with a totals line."""
    body = rows(points)
    states = {s: sum(p.state == s for p in points) for s in rundir.STATES}
    total = ("total", f"{len(points)} points", "", fmt_count(sum(p.samples_seen for p in points)),
             "", f"{sum(p.steps for p in points):,}", f"{max((p.gpus for p in points), default=0):,} max",
             f"{sum(p.compute_gmacs for p in points):.3g}", f"{sum(p.gpu_hours for p in points):,.1f}",
             " ".join(f"{n} {s}" for s, n in states.items() if n))
    widths = [max(len(r[i]) for r in [COLUMNS, *body, total]) for i in range(len(COLUMNS))]
    line = lambda r: "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))  # noqa: E731
    sep = "-" * len(line(COLUMNS))
    return "\n".join([line(COLUMNS), sep, *map(line, body), sep, line(total)])
