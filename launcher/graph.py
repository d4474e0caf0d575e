"""The SLURM job graph of trunks and branches: which job waits for which (a pure function).

A const_cooldown sweep's plan (:func:`launcher.plan.with_trunks`) holds, per trunk, one segment
per distinct fork step and the branches that fork there. Under SLURM:

- segment k is one job that waits for segment k-1 (``--dependency=afterok:<job>``);
- a branch is one job that waits for the segment ending at its fork step;
- a branch with evaluation datasets is evaluated by a job of its own that waits for it;
- every dependent job has ``--kill-on-invalid-dep=yes``: a segment that fails or is cancelled
  takes the later segments, its branches and their evaluations with it.

A dependency is either a job of this submission (by key) or a job SLURM still holds from an
earlier one (by job id): a relaunch that adds a branch whose segment is still queued makes it
wait for that queued job. Segments and branches that are done or queued are not submitted
again (the caller decides that, with :class:`launcher.policy.RelaunchPolicy`, and passes the
action per point). Cosine points, and branches that only need their evaluation, are left to
the launcher's job arrays.

Keys (in the sweep manifest and in status): a branch's run id; a segment's
``<trunk id>@<until step>`` (:func:`segment_key`), since every segment shares the trunk's folder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from core.identity import trunk_id
from launcher.plan import Point, branch_fork, is_branch
from launcher.policy import Action


def segment_key(trunk: str, until: int) -> str:
    """The manifest and status key of the trunk segment that ends at step ``until``."""
    return f"{trunk}@{until}"


def point_key(point: Point) -> str:
    """A point's key: its run id, or :func:`segment_key` for a trunk segment."""
    return segment_key(point.run_id, point.trunk_until) if point.trunk_until else point.run_id


def is_trunk_job(point: Point) -> bool:
    """True for a trunk segment or a branch (a job of the graph, not of an array)."""
    return bool(point.trunk_until) or is_branch(point.cfg)


@dataclass(frozen=True)
class Job:
    """One job to submit, after the jobs before it in :attr:`Graph.jobs`."""

    key: str
    point: Point
    stage: str
    """``stage=`` of the job: ``train`` (evaluation follows in its own job) or ``all``."""
    after: str | None = None
    """Key of the job of this submission it waits for (afterok)."""
    after_job: str | None = None
    """Id of a job SLURM holds already that it waits for (afterok)."""
    with_eval: bool = False
    """Followed by an evaluation job (1 node, 1 task) that waits for this one (afterok)."""
    trunk: str = ""
    """The trunk's run id (a segment's own, a branch's trunk)."""


@dataclass
class Graph:
    jobs: list[Job]
    """Segment and branch jobs in submission order (a job's dependency comes before it)."""
    plain: list[tuple[Point, Action]]
    """Points for the job arrays (cosine points; branches that need only their evaluation)."""


def build(items: Sequence[tuple[Point, Action]], queued: Mapping[str, str],
          separate_eval: bool = True) -> Graph:
    """The jobs to submit for ``items`` (each point with the relaunch policy's action for it).

    ``queued``: key (:func:`point_key`) -> job id of every segment and branch that SLURM still
    holds a job of; such a point's action is SKIP, and its job is what later ones wait for.
    A segment waits for the trunk's latest segment before it that is submitted now or queued
    (none: the trunk is trained that far, or it starts at step 0); a branch for the segment
    that ends at its fork step."""
    jobs: list[Job] = []
    plain: list[tuple[Point, Action]] = []
    new_segments: dict[str, dict[int, str]] = {}  # trunk -> until -> key, submitted now
    old_segments: dict[str, dict[int, str]] = {}  # trunk -> until -> job id, queued
    for key, job_id in queued.items():
        name, sep, step = key.rpartition("@")
        if sep and step.isdigit():
            old_segments.setdefault(name, {})[int(step)] = job_id
    # segments first, each trunk's in step order, so a dependency is always submitted first
    ordered = sorted(items, key=lambda it: (0, it[0].trunk_until) if it[0].trunk_until else (1, 0))
    for point, action in ordered:
        if not is_trunk_job(point) or action == Action.EVALUATE:
            if action != Action.SKIP:
                plain.append((point, action))
            continue
        if action == Action.SKIP:
            continue
        trunk = point.run_id if point.trunk_until else trunk_id(point.cfg)
        new, old = new_segments.setdefault(trunk, {}), old_segments.get(trunk, {})
        if point.trunk_until:
            until = point.trunk_until
            before = [u for u in (*new, *old) if u < until]
            after, after_job = _dependency(max(before, default=0), new, old)
            jobs.append(Job(point_key(point), point, "train", after, after_job, trunk=trunk))
            new[until] = point_key(point)
        else:
            after, after_job = _dependency(branch_fork(point.cfg), new, old)
            with_eval = separate_eval and len(point.cfg.eval.datasets) > 0
            jobs.append(Job(point.run_id, point, "train" if with_eval else "all", after,
                            after_job, with_eval, trunk))
    return Graph(jobs, plain)


def _dependency(until: int, new: Mapping[int, str], old: Mapping[int, str]) -> tuple[str | None, str | None]:
    """(key, job id) of the segment ending at ``until``: submitted now, or queued (neither:
    done, or no segment there)."""
    if until in new:
        return new[until], None
    return None, old.get(until)
