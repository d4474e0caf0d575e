"""A sweep's plan: one :class:`Point` per grid point, derived quantities, checks and the table.

Everything here runs on the login node before anything is queued: a point that cannot run
(missing shards, a batch that does not divide, an unknown precision) fails here, in a second,
with a message naming the config key at fault (the checks themselves: ``core.validate``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from omegaconf import DictConfig

from core import validate
from core.errors import ConfigError
from core.identity import run_id
from core.states import RunState
from core.steps import Steps
from core.tables import fmt_count, render
from launcher import rundir

__all__ = ["ConfigError", "Point", "check", "make_point", "table"]


@dataclass
class Point:
    """One grid point: its overrides, composed config and what follows from them."""

    overrides: list[str]
    cfg: DictConfig
    run_id: str
    run_dir: Path
    state: RunState

    @cached_property
    def _steps(self) -> Steps:
        return validate.steps(self.cfg)

    @property
    def global_batch(self) -> int:
        return self._steps.global_batch

    @property
    def steps(self) -> int:
        """Optimizer steps: ceil(samples seen / global batch)."""
        return self._steps.total_steps

    @property
    def samples_seen(self) -> int:
        """Pairs actually seen: whole steps of the global batch."""
        return self._steps.samples_seen

    @cached_property
    def nodes(self) -> int:
        return validate.job_shape(self.cfg)[0]

    @property
    def gpus(self) -> int:
        return self._steps.world

    @property
    def accumulation(self) -> int:
        """Gradient-accumulation steps so that gpus x local batch x accumulation = global batch."""
        return self._steps.accum

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

    @property
    def where(self) -> str:
        """How error messages name the point."""
        return f"point [{' '.join(self.overrides) or 'defaults'}]"


def make_point(overrides: list[str], cfg: DictConfig) -> Point:
    """The point of ``cfg``; ConfigError when its run id would not be one folder under the root
    (a name holding ``/`` or ``..``: :func:`check` says which key)."""
    rid = run_id(cfg)
    try:
        validate.check_name("run id", rid)
    except ConfigError:
        check(Point(list(overrides), cfg, rid, Path(rid), RunState.NEW), need_data=False)
        raise
    path = rundir.root_dir(str(cfg.root)) / rid
    return Point(list(overrides), cfg, rid, path, rundir.state(path))


def check(point: Point, need_data: bool = True) -> None:
    """Raise :class:`ConfigError` if the point cannot run (``core.validate.validate``).
    ``need_data=False`` (dry runs) skips the checks that need the dataset on disk."""
    validate.validate(point.cfg, point.where, need_data=need_data)


COLUMNS = ("run id", "model", "data", "samples seen", "global batch", "steps", "GPUs",
           "compute (GMACs)", "GPU-hours", "state")


def rows(points: list[Point]) -> list[tuple[str, ...]]:
    return [(p.run_id, p.cfg.model.name, p.cfg.data.name, fmt_count(p.samples_seen),
             f"{p.global_batch:,}", f"{p.steps:,}", f"{p.gpus:,}", f"{p.compute_gmacs:.3g}",
             f"{p.gpu_hours:,.1f}", p.state) for p in points]


def table(points: list[Point]) -> str:
    """The plan as a fixed-width table with a totals line."""
    states = {s: sum(p.state == s for p in points) for s in RunState}
    total = ("total", f"{len(points)} points", "", fmt_count(sum(p.samples_seen for p in points)),
             "", f"{sum(p.steps for p in points):,}", f"{max((p.gpus for p in points), default=0):,} max",
             f"{sum(p.compute_gmacs for p in points):.3g}", f"{sum(p.gpu_hours for p in points):,.1f}",
             " ".join(f"{n} {s}" for s, n in states.items() if n))
    return "\n".join(render(COLUMNS, rows(points), total, right_from=3))
