"""Fidelity of trunks and branches (``train.schedule=const_cooldown``, training.schedule).

tiny_s on the test shards, 16 pairs a step, warm-up 2, cooldown fraction 0.2, data segments of 3
steps (so forks land mid-segment). Three points: A (5 steps, fork 4), B (10 steps, fork 8) and
C (8 steps, fork 6, which no trunk pins: it forks from the pin at 4 and trains the constant-LR
steps 4..6 itself). Each branch must end with the weights of the same point trained from step 0
in one go; the trunk's own weights must not depend on branches forking from it or on being
trained in two segments.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers.training import make_cfg
from training import checkpoint, data, schedule
from training.schedule import Branch, Trunk
from training.train import train

BATCH = 16
POINTS = {"A": 5, "B": 10, "C": 8}
"""Steps of each point."""
ATOL = 1e-6


def _cfg(shards: str, steps: int):
    return make_cfg(shards, samples__seen=BATCH * steps, samples__name=f"s{BATCH * steps}",
                    train__schedule="const_cooldown", train__cooldown_fraction=0.2)


def _weights(path: str | Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(path)["state_dict"]


def _worst(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.fixture(scope="module", autouse=True)
def short_segments():
    real, data.SEGMENT_STEPS = data.SEGMENT_STEPS, 3
    yield
    data.SEGMENT_STEPS = real


@pytest.fixture(scope="module")
def straight(shards: str, tmp_path_factory) -> dict[str, dict[str, torch.Tensor]]:
    """Final weights of each point trained from step 0 in one go."""
    root = tmp_path_factory.mktemp("straight")
    return {name: _weights(train(_cfg(shards, steps), root / name)["checkpoint"])
            for name, steps in POINTS.items()}


@pytest.fixture(scope="module")
def trunks(shards: str, tmp_path_factory) -> dict[str, Path]:
    """X: the trunk trained to step 8 in one go, pinning 4 and 8. Y: trained to 4, forked
    from (branch A), then extended to 8."""
    root = tmp_path_factory.mktemp("trunks")
    cfg = _cfg(shards, POINTS["B"])
    train(cfg, root / "X", trunk=Trunk(8, frozenset({4, 8})))
    train(cfg, root / "Y", trunk=Trunk(4, frozenset({4})))
    a = train(_cfg(shards, POINTS["A"]), root / "A", branch=Branch(root / "Y", 4))
    assert a["resumed_from"] == 4 and a["forked_from"].endswith("step_00000004.pt")
    out = train(cfg, root / "Y", trunk=Trunk(8, frozenset({4, 8})))
    assert out["resumed_from"] == 4 and out["step"] == 8 and not out["skipped"]
    return {"X": root / "X", "Y": root / "Y", "A": root / "A", "root": root}


def test_fork_step_and_schedule():
    assert [schedule.fork_step(t, 0.2) for t in (5, 8, 10)] == [4, 6, 8]
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0)
    lr = schedule.const_cooldown_lr(opt, 1.0, 2, 10, 8, "linear")
    assert [lr(s) for s in range(10)] == [0.5, 1, 1, 1, 1, 1, 1, 1, 1, 0.5]
    sqrt = schedule.const_cooldown_lr(opt, 1.0, 2, 12, 8, "1-sqrt")
    assert sqrt(12 - 3) == pytest.approx(0.5) and opt.param_groups[0]["lr"] == pytest.approx(0.5)
    trunk = schedule.const_cooldown_lr(opt, 1.0, 2, None, 8, "linear")
    assert [trunk(s) for s in (0, 8, 10_000)] == [0.5, 1, 1]
    assert schedule.keep_steps([4, 8, 30], 10, 3) == {3, 4, 6, 8, 9}
    assert schedule.keep_steps([], 100, 0) == set(range(10, 101, 10))


def test_branch_equals_straight_run(trunks, straight, shards):
    b = train(_cfg(shards, POINTS["B"]), trunks["root"] / "B", branch=Branch(trunks["X"], 8))
    assert b["resumed_from"] == 8 and b["step"] == 10
    for name, got in (("A", _weights(checkpoint.final(trunks["A"]))), ("B", _weights(b["checkpoint"]))):
        worst = _worst(got, straight[name])
        print(f"branch {name} vs straight: largest weight difference {worst:.3g}")
        assert worst <= ATOL, name


def test_fork_between_pins_trains_the_constant_steps_itself(trunks, straight, shards):
    c = train(_cfg(shards, POINTS["C"]), trunks["root"] / "C", branch=Branch(trunks["X"], 6))
    assert c["forked_from"].endswith("step_00000004.pt") and c["resumed_from"] == 4
    worst = _worst(_weights(c["checkpoint"]), straight["C"])
    print(f"branch C (forked at 4 for 6) vs straight: largest weight difference {worst:.3g}")
    assert worst <= ATOL


def test_trunk_steps_do_not_depend_on_branches_or_segments(trunks):
    folder = checkpoint.checkpoint_dir
    for step in (4, 8):
        x = _weights(folder(trunks["X"]) / f"step_{step:08d}.pt")
        y = _weights(folder(trunks["Y"]) / f"step_{step:08d}.pt")
        assert _worst(x, y) == 0.0, step
    assert checkpoint.final(trunks["X"]) is None  # a trunk never finishes: it can be extended
    assert checkpoint.read_marker(folder(trunks["X"]) / "step_00000004.pt")["pinned"]


def test_trunk_already_past_its_target_trains_nothing(trunks, shards):
    out = train(_cfg(shards, POINTS["B"]), trunks["X"], trunk=Trunk(4, frozenset({4})))
    assert out["skipped"] and out["step"] == 8


def _events(run_dir: Path, event: str) -> list[dict]:
    from launcher import rundir

    return [e for e in rundir.events(run_dir) if e["event"] == event]


def test_plan_runs_trunk_segments_first_and_relaunch_trains_only_the_new_ones(shards, tmp_path):
    from core.identity import trunk_id
    from launcher.plan import make_point, with_trunks
    from launcher.policy import Action, RelaunchPolicy
    from launcher.run import run_point

    def launch(names: str) -> list[str]:
        cfgs = [make_cfg(shards, root=str(tmp_path / "runs"), samples__seen=BATCH * POINTS[n],
                         samples__name=f"s{BATCH * POINTS[n]}", train__schedule="const_cooldown")
                for n in names]
        plan = with_trunks([make_point([f"samples={n}"], c) for n, c in zip(names, cfgs, strict=True)])
        todo = [p for p in plan if RelaunchPolicy().decide(p.state) != Action.SKIP]
        for p in todo:
            run_point(p.cfg, p.overrides)
        return [f"{p.run_id}:{p.trunk_until}" for p in todo]

    first = launch("AC")  # forks 4 and 6: segments 0->4, 4->6, then the branches
    assert [r.split(":")[1] for r in first] == ["4", "6", "0", "0"]
    trunk = tmp_path / "runs" / first[0].split(":")[0]
    second = launch("ACB")  # B forks at 8: only the segment 6->8 and branch B run
    assert len(second) == 2 and second[0] == f"{trunk.name}:8" and ":0" in second[1]
    starts = [e["trunk_until"] for e in _events(trunk, "start")]
    assert starts == [4, 6, 8]
    assert [e["resumed_from"] for e in _events(trunk, "trained")] == [None, 4, 6]
    b_dir = tmp_path / "runs" / second[1].split(":")[0]
    assert _events(b_dir, "start")[0]["fork_step"] == 8
    assert _events(b_dir, "start")[0]["trunk"] == trunk.name == trunk_id(make_cfg(
        shards, train__schedule="const_cooldown"))
    assert _events(b_dir, "trained")[0]["forked_from"].endswith("step_00000008.pt")
