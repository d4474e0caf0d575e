"""A sweep's plan: one :class:`Point` per grid point, derived quantities, checks and the table.

Everything here runs on the login node before anything is queued: a point that cannot run
(missing shards, a batch that does not divide, an unknown precision) fails here, in a second,
with a message naming the config key at fault (the checks themselves: ``core.validate``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from core import cost, validate
from core.errors import ConfigError
from core.identity import run_id, trunk_id
from core.schema import Schedule
from core.states import Event, RunState
from core.steps import Steps
from core.tables import fmt_count, render
from launcher import rundir
from training.schedule import fork_step

__all__ = ["ConfigError", "Point", "check", "make_point", "table", "with_trunks"]


@dataclass
class Point:
    """One grid point: its overrides, composed config and what follows from them."""

    overrides: list[str]
    cfg: DictConfig
    run_id: str
    run_dir: Path
    state: RunState
    start: int = 0
    """Step the point's training starts from: a trunk segment's previous fork point, a
    branch's fork step (0: from scratch)."""

    @property
    def trunk_until(self) -> int:
        """> 0 for a trunk segment: the step it trains the trunk to."""
        return int(self.cfg.train.trunk_until)

    @cached_property
    def _steps(self) -> Steps:
        return validate.steps(self.cfg)

    @property
    def global_batch(self) -> int:
        return self._steps.global_batch

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the trained model: ceil(samples seen / global batch); a trunk
        segment's: the step it ends at."""
        return self.trunk_until or self._steps.total_steps

    @property
    def steps(self) -> int:
        """Optimizer steps this point trains: ceil(samples seen / global batch), less those a
        branch takes over from its trunk (a trunk segment: its own)."""
        return self.total_steps - self.start

    @property
    def samples_seen(self) -> int:
        """Pairs its model has seen at the end: whole steps of the global batch."""
        return self.total_steps * self.global_batch

    @property
    def samples_trained(self) -> int:
        """Pairs this point itself trains on (its steps' share)."""
        return self.steps * self.global_batch

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
        """Estimated GPU-hours on the cluster's device (``core.cost``): pairs trained over a
        measured per-GPU throughput (the paper's A100 jobs, this project's benchmarks), else
        training FLOPs at an assumed MFU; :attr:`cost_source` names the figure."""
        return self._gpu_hours(self.samples_trained)

    @cached_property
    def gpu_hours_cosine(self) -> float:
        """What the point would cost as its own run from step 0 (0 for a trunk segment)."""
        return 0.0 if self.trunk_until else self._gpu_hours(self.samples_seen)

    @cached_property
    def _throughput(self) -> cost.Throughput:
        return cost.throughput(
            str(self.cfg.model.arch), float(self.cfg.model.gmacs),
            peak_tflops=float(self.cfg.cluster.gpu_peak_tflops), gpus=self.gpus,
            local_batch=int(self.cfg.model.local_batch), compiled=bool(self.cfg.train.compile),
        )  # fmt: skip

    @property
    def cost_source(self) -> str:
        """The per-GPU throughput figure that priced :attr:`gpu_hours`, and where it is from."""
        return self._throughput.source

    def _gpu_hours(self, samples: int) -> float:
        return self._throughput.hours(samples)

    @property
    def where(self) -> str:
        """How error messages name the point."""
        return f"point [{' '.join(self.overrides) or 'defaults'}]"


def make_point(overrides: list[str], cfg: DictConfig) -> Point:
    """The point of ``cfg``; ConfigError when its run id would not be one folder under the root
    (a name holding ``/`` or ``..``: :func:`check` says which key). With ``train.trunk_until``
    the point is that segment of its trunk (run id: the trunk's)."""
    segment = int(cfg.train.trunk_until) > 0
    rid = trunk_id(cfg) if segment else run_id(cfg)
    try:
        validate.check_name("run id", rid)
    except ConfigError:
        check(Point(list(overrides), cfg, rid, Path(rid), RunState.NEW), need_data=False)
        raise
    path = rundir.root_dir(str(cfg.root)) / rid
    if segment:
        return Point(list(overrides), cfg, rid, path, segment_state(path, int(cfg.train.trunk_until)))
    return Point(list(overrides), cfg, rid, path, rundir.state(path))


def is_branch(cfg: DictConfig) -> bool:
    """True for a const_cooldown point (it forks from its trunk), not a trunk segment."""
    return Schedule(cfg.train.schedule) == Schedule.const_cooldown and not int(cfg.train.trunk_until)


def branch_fork(cfg: DictConfig) -> int:
    """The step a const_cooldown point forks from its trunk: round((1 - f) x steps)."""
    return fork_step(validate.steps(cfg).total_steps, float(cfg.train.cooldown_fraction))


def trunk_progress(trunk_dir: Path, evs: list[dict[str, Any]] | None = None) -> int:
    """The step the trunk has been trained to: its newest ``trained`` event's (0: none);
    ``evs``: its status log's events, when already read."""
    evs = rundir.events(trunk_dir) if evs is None else evs
    return max((int(e.get("step", 0)) for e in evs if e.get("event") == Event.TRAINED), default=0)


def segment_state(trunk_dir: Path, until: int, evs: list[dict[str, Any]] | None = None) -> RunState:
    """A trunk segment is done once its trunk was trained to ``until``; else the trunk's state
    when its last attempt failed, was cancelled or stopped mid-segment (so the relaunch policy
    treats it as any point), else new (``evs``: the trunk's events, when already read)."""
    evs = rundir.events(trunk_dir) if evs is None else evs
    if trunk_progress(trunk_dir, evs) >= until:
        return RunState.DONE
    state = rundir.state(trunk_dir, evs)
    return state if state in (RunState.FAILED, RunState.CANCELLED, RunState.PARTIAL) else RunState.NEW


def with_trunks(points: list[Point]) -> list[Point]:
    """``points`` with the segments of their trunks: every const_cooldown point is a branch
    of the trunk it shares with the points that match it in all but samples seen and cooldown;
    each trunk gets one segment per distinct fork step (segment k trains from fork k-1 to fork
    k, the overrides of the branch that forks there plus ``train.trunk_until``). Order: the
    cosine points, then each trunk's segments, then its branches, shortest first: run in
    order, every segment runs before the branches that fork from it. (SLURM can submit the
    segments as a chain and each branch ``afterok`` on the segment that ends at its fork.)"""
    groups: dict[str, list[Point]] = {}
    out = [p for p in points if not is_branch(p.cfg)]
    for p in points:
        if is_branch(p.cfg):
            groups.setdefault(trunk_id(p.cfg), []).append(p)
    for branches in groups.values():
        branches.sort(key=lambda p: (branch_fork(p.cfg), p.steps))
        previous, segments = 0, []
        for b in branches:
            b.start = branch_fork(b.cfg)
            if b.start > previous:
                segments.append(_segment(b, previous, b.start))
                previous = b.start
        out += segments + branches
    return out


def _segment(branch: Point, start: int, until: int) -> Point:
    cfg = copy.deepcopy(branch.cfg)
    with open_dict(cfg):
        cfg.train.trunk_until = until
    point = make_point([*branch.overrides, f"train.trunk_until={until}"], cfg)
    point.start = start
    return point


def check(point: Point, need_data: bool = True) -> None:
    """Raise :class:`ConfigError` if the point cannot run (``core.validate.validate``).
    ``need_data=False`` (dry runs) skips the checks that need the dataset on disk."""
    validate.validate(point.cfg, point.where, need_data=need_data)


COLUMNS = ("run id", "model", "data", "samples seen", "global batch", "steps", "GPUs",
           "compute (GMACs)", "GPU-hours", "state")


def _steps_cell(p: Point) -> str:
    """Steps the point trains; a trunk segment's or branch's with the step range."""
    if p.trunk_until or is_branch(p.cfg):
        return f"{p.steps:,} ({p.start:,}->{p.total_steps:,})"
    return f"{p.steps:,}"


def rows(points: list[Point]) -> list[tuple[str, ...]]:
    return [(p.run_id, p.cfg.model.name, p.cfg.data.name, fmt_count(p.samples_seen),
             f"{p.global_batch:,}", _steps_cell(p), f"{p.gpus:,}", f"{p.compute_gmacs:.3g}",
             f"{p.gpu_hours:,.1f}", p.state) for p in points]


def table(points: list[Point]) -> str:
    """The plan as a fixed-width table with a totals line, then the throughput figure that
    priced each model's GPU-hours."""
    states = {s: sum(p.state == s for p in points) for s in RunState}
    # trained, not seen: a branch's first steps are its trunk's
    total = ("total", f"{len(points)} points", "", fmt_count(sum(p.samples_trained for p in points)),
             "", f"{sum(p.steps for p in points):,}", f"{max((p.gpus for p in points), default=0):,} max",
             f"{sum(p.compute_gmacs for p in points):.3g}", f"{sum(p.gpu_hours for p in points):,.1f}",
             " ".join(f"{n} {s}" for s, n in states.items() if n))
    lines = render(COLUMNS, rows(points), total, right_from=3)
    if any(p.trunk_until for p in points):
        cosine = sum(p.gpu_hours_cosine for p in points)
        lines.append(f"trunks and branches: {sum(p.gpu_hours for p in points):,.1f} GPU-hours; "
                     f"the same points as cosine runs: {cosine:,.1f}")
    sources = dict.fromkeys(f"  {p.cfg.model.name}: {p.cost_source}" for p in points)
    return "\n".join([*lines, "GPU-hours priced from (core.cost):", *sources])
