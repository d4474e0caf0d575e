"""The SLURM job graph of trunks and branches (``launcher.graph.build``), without a cluster:
which job waits for which, and what a relaunch submits.

tiny_s, 128 pairs a step: samples seen 1280, 2560, 3840 make branches of 10, 20, 30 steps that
fork at 8, 16, 24, so the trunk has segments 0->8, 8->16, 16->24.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from core.states import Event
from launcher import rundir
from launcher.graph import Job, build, point_key, segment_key
from launcher.plan import Point, make_point, with_trunks
from launcher.policy import Action, RelaunchPolicy
from tests.helpers.slurm import row

SEEN = (1280, 2560, 3840)


@pytest.fixture
def plan(make_cfg, tmp_path: Path):
    """``plan(seen..., cosine=False, eval_="none")``: the planned points (with_trunks order)."""

    def _plan(*seen: int, cosine: bool = False, eval_: str = "none") -> list[Point]:
        points = []
        for s in seen:
            ov = ["model=tiny_s", "data=syn4k", "samples=s6k", f"samples.seen={s}", f"eval={eval_}",
                  "train.schedule=const_cooldown"]
            points.append(make_point(ov, make_cfg(*ov, root=tmp_path / "runs")))
        if cosine:
            ov = ["model=tiny_m", "data=syn4k", "samples=s6k", "eval=none"]
            points.append(make_point(ov, make_cfg(*ov, root=tmp_path / "runs")))
        return with_trunks(points)

    return _plan


def _decide(points: list[Point], queued: dict[str, str]) -> list[tuple[Point, Action]]:
    """Each point with the relaunch policy's action, as the launcher decides it."""
    policy = RelaunchPolicy()
    return [(p, policy.decide(p.state, queued=point_key(p) in queued)) for p in points]


def _deps(jobs: list[Job]) -> dict[str, str | None]:
    """key -> what it waits for (a key of this submission, or ``job <id>``)."""
    return {j.key: j.after or (f"job {j.after_job}" if j.after_job else None) for j in jobs}


def test_segments_chain_and_each_branch_waits_for_its_fork_segment(plan) -> None:
    points = plan(*SEEN, cosine=True)
    trunk = points[1].run_id
    branches = {p.total_steps: p.run_id for p in points if p.start and not p.trunk_until}
    graph = build(_decide(points, {}), {})
    assert [p.cfg.model.name for p, _ in graph.plain] == ["tiny_m"]  # cosine: the arrays
    assert _deps(graph.jobs) == {
        f"{trunk}@8": None,
        f"{trunk}@16": f"{trunk}@8",
        f"{trunk}@24": f"{trunk}@16",
        branches[10]: f"{trunk}@8",
        branches[20]: f"{trunk}@16",
        branches[30]: f"{trunk}@24",
    }
    assert all(j.trunk == trunk and not j.with_eval for j in graph.jobs)
    assert {j.stage for j in graph.jobs if j.point.trunk_until} == {"train"}
    assert {j.stage for j in graph.jobs if not j.point.trunk_until} == {"all"}  # no evaluation
    order = [j.key for j in graph.jobs]
    for j in graph.jobs:  # a dependency is always submitted before its dependent
        assert j.after is None or order.index(j.after) < order.index(j.key)


def test_a_branch_with_evaluation_gets_its_own_evaluation_job(plan) -> None:
    points = plan(1280, eval_="embedded")
    separate = build(_decide(points, {}), {})
    seg, branch = separate.jobs
    assert (seg.stage, seg.with_eval) == ("train", False)  # a segment is never evaluated
    assert (branch.stage, branch.with_eval) == ("train", True)
    inside = build(_decide(points, {}), {}, separate_eval=False)
    assert [(j.stage, j.with_eval) for j in inside.jobs] == [("train", False), ("all", False)]
    # a trained branch that lacks only its evaluation goes to the evaluation arrays
    graph = build([(points[0], Action.SKIP), (points[1], Action.EVALUATE)], {})
    assert graph.jobs == [] and graph.plain == [(points[1], Action.EVALUATE)]


def test_relaunch_submits_only_what_is_missing_and_waits_for_queued_segments(plan) -> None:
    """Segment 0->8 and its branch are done, 8->16 and its branch still queued (jobs 116,
    119); the relaunch adds 3840: only 16->24 (after the queued job 116) and the new branch."""
    first = plan(*SEEN[:2])
    trunk = first[0].run_id
    rundir.log_event(first[0].run_dir, Event.TRAINED, step=8)
    rundir.log_event(first[2].run_dir, Event.DONE)  # the branch of 8
    points = plan(*SEEN)
    assert [p.state for p in points if p.trunk_until] == ["done", "new", "new"]
    queued = {segment_key(trunk, 16): "116", points[4].run_id: "119"}
    graph = build(_decide(points, queued), {k: v for k, v in queued.items() if "@" in k})
    assert _deps(graph.jobs) == {f"{trunk}@24": "job 116", points[5].run_id: f"{trunk}@24"}

    # a new branch whose segment is queued waits for that job; a done segment's branch for none
    rundir.log_event(first[2].run_dir, Event.FAILED, error="x")  # the branch of 8 re-runs
    points = plan(*SEEN[:2])
    graph = build(_decide(points, {segment_key(trunk, 16): "116"}), {segment_key(trunk, 16): "116"})
    assert _deps(graph.jobs) == {points[2].run_id: None, points[3].run_id: "job 116"}


def test_nothing_is_submitted_for_queued_or_done_segments_and_branches(plan) -> None:
    points = plan(*SEEN)
    queued = {point_key(p): str(100 + i) for i, p in enumerate(points)}
    graph = build(_decide(points, queued), {k: v for k, v in queued.items() if "@" in k})
    assert graph.jobs == [] and graph.plain == []


def test_status_shows_each_segment_with_its_step_range_and_each_branch_with_its_fork(tmp_path: Path) -> None:
    """``launcher.status`` of a const_cooldown sweep, without SLURM: a row per trunk segment
    (``<trunk>@<step>``, ``steps a->b``), done once the trunk reached its step; a row per branch."""
    from launcher import status

    sweep = tmp_path / "trunk.yaml"
    sweep.write_text("points:\n  - {model: tiny_s, data: syn4k, samples: s6k, samples.seen: "
                     f"{list(SEEN)}, eval: none, train.schedule: const_cooldown}}\n")
    root = tmp_path / "runs"
    points = status.sweep_points(str(sweep), [f"root={root}"], root)
    keys = [p.run_id for p in points]
    trunk = keys[0].split("@")[0]
    assert keys[:3] == [f"{trunk}@8", f"{trunk}@16", f"{trunk}@24"] and len(keys) == 6
    assert {p.run_dir for p in points[:3]} == {root / trunk}
    rundir.log_event(root / trunk, Event.TRAINED, step=8)
    table = status.status_table(points)
    assert " done " in row(table, f"{trunk}@8") and "steps 0->8" in row(table, f"{trunk}@8")
    assert " new " in row(table, f"{trunk}@16") and "steps 8->16" in row(table, f"{trunk}@16")
    assert "branch, fork at step 24" in row(table, keys[5])
    assert "6 points: 5 new, 1 done" in table, table
    # the cached plan gives the same rows
    assert [(p.run_id, p.until, p.start) for p in status.sweep_points(str(sweep), [f"root={root}"], root)] == \
        [(p.run_id, p.until, p.start) for p in points]

