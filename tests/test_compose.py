"""The memoizing composer (launcher/compose.py) against Hydra: same configs, same errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from core import schema
from core.identity import run_id
from launcher.compose import Composer, app_composer, sweep_composer
from launcher.plan import ConfigError
from launcher.sweep import load_sweep, plan_sweep

CONF = Path(__file__).resolve().parent.parent / "conf"

# Command-line value overrides added to every point of a named sweep: plain assignments of every
# type the schema has (an int given to a float field, lists, a quoted brace pattern, a cast, an
# interpolation), top-level keys, and group choices given after the plain ones.
CLI = {
    "demo": [
        [],
        ["train.lr=1", "train.workers=3", "sweep=demo", "root=/elsewhere", "dry_run=true",
         "samples.seen=1000", "cluster=juwels", "eval=paper", "eval.data_dir=/p/eval",
         "model.precision=fp32", "eval.recall_k=[1,2]", "data.shard_weights=[1,2]",
         "data.shards='/x/{00000..00003}.tar'", "train.seed=int(3.0)", "model.label=${model.name}"],
    ],
    "paper": [
        [],
        ["train.lr=0.002", "data_root=/scratch", "eval=none", "cluster.nodes=4", "sweep=paper"],
    ],
}

# Overrides that are not plain assignments: composed through Hydra whole, in Hydra's order.
STRUCTURAL = [
    ["++train.lr=0.5", "train.lr=0.1"],
    ["train.lr=0.1", "++train.lr=0.5"],
    ["train.lr=0.1", "+train.extra=1", "samples.seen=7"],
    ["+extra=1", "root=/r"],
    ["~eval.probe", "eval=none"],
    ["hydra.job.chdir=true", "train.lr=0.3"],
    ["model=tiny_m", "eval={datasets: []}"],
]

# Every way a point can be wrong; the composer must fail as Hydra does, with the same message.
BAD = [
    ["train.lrr=1"], ["model.global_batch=many"], ["model=vit_b23"], ["samples=12B"],
    ["train.lr=1,2"], ["train.lr=["], ["+train.lr=1"], ["~train.nope"], ["model.nope.x=1"],
    ["data.shard_weights=abc"], ["cluster.nodes=1.5"], ["eval.datasets=3"],
    ["model=tiny_m", "train.lrr=1"], ["train.lrr=1", "model=vit_b23"],
]


@pytest.fixture
def composer() -> Iterator[Composer]:
    """The composer of ``python -m launcher.status``; Hydra is initialised on conf/ meanwhile."""
    with app_composer(CONF) as c:
        yield c


def hydra(ov: list[str]) -> DictConfig:
    """The point composed by Hydra itself, as ``hydra.compose`` does (no ``hydra`` node)."""
    return compose("config", overrides=ov)


def outcome(make: Callable[[list[str]], DictConfig], ov: list[str]) -> tuple:
    """What composing ``ov`` gives: the unresolved config and its run id, or the error."""
    try:
        cfg = make(ov)
    except Exception as e:
        cause = e.__cause__
        return ("error", type(e), str(e), type(cause), str(cause) if cause else None)
    return ("ok", OmegaConf.to_container(cfg, resolve=False), run_id(cfg), _metadata(cfg))


def _metadata(node, path="") -> list:
    """Node types, declared types and flags of every node: ``train.lr=1`` must be a float node
    of a struct-mode TrainConfig in both, not merely compare equal to Hydra's 1.0."""
    meta = node._metadata
    out = [(path, type(node).__name__, meta.ref_type, meta.object_type, meta.optional,
            getattr(meta, "key_type", None), getattr(meta, "element_type", None), dict(meta.flags))]
    if isinstance(node, (DictConfig, ListConfig)) and not (
            node._is_none() or node._is_missing() or node._is_interpolation()):
        keys = node.keys() if isinstance(node, DictConfig) else range(len(node))
        for k in keys:
            out += _metadata(node._get_node(k), f"{path}.{k}")
    return out


@pytest.mark.parametrize("sweep,cli", [(s, c) for s, clis in CLI.items() for c in clis],
                         ids=lambda v: v if isinstance(v, str) else f"{len(v)} overrides")
def test_every_point_of_the_named_sweeps_composes_as_hydra_does(composer, sweep, cli):
    points = [[*ov, *cli] for ov in load_sweep(sweep)]
    for ov in points:
        expected = outcome(hydra, ov)
        assert expected[0] == "ok", expected
        assert outcome(composer, ov) == expected, ov
    groups = {tuple(o for o in ov if o.split("=")[0] in ("model", "data", "samples", "eval", "cluster"))
              for ov in points}
    assert composer.hydra_composes == len(groups)  # once per distinct group choice


@pytest.mark.parametrize("ov", STRUCTURAL, ids=" ".join)
def test_overrides_that_are_not_plain_assignments_compose_as_hydra_does(composer, ov):
    assert outcome(composer, ov) == outcome(hydra, ov)


@pytest.mark.parametrize("ov", BAD, ids=" ".join)
def test_a_bad_point_fails_with_hydras_error(composer, ov):
    expected = outcome(hydra, ov)
    assert expected[0] == "error"
    assert outcome(composer, ov) == expected
    assert outcome(composer, ov) == expected  # the memoized failure, once more


def test_only_group_choices_and_structural_overrides_reach_hydra(composer):
    for seen in range(1, 101):
        composer(["model=tiny_m", f"samples.seen={seen}", "train.lr=0.01", "cluster=juwels"])
    assert composer.hydra_composes == 1
    key, plain = composer.split(["train.lr=1", "model=tiny_m", "+x=1", "samples.seen=2",
                                 "cluster=juwels", "root=/r"])
    assert key == ["train.lr=1", "model=tiny_m", "+x=1", "cluster=juwels"]
    assert [o.input_line for o in plain] == ["samples.seen=2", "root=/r"]


def test_a_point_is_its_own_copy(composer):
    a = composer(["eval.recall_k=[1,2]"])
    a.eval.recall_k.append(3)
    a.train.lr = 0.5
    b = composer(["eval.recall_k=[1,2]"])
    assert list(b.eval.recall_k) == [1, 2] and b.train.lr == outcome(hydra, [])[1]["train"]["lr"]


@pytest.fixture
def sweeper_context(tmp_path):
    """What the sweeper holds: the master config (with its hydra node) and the config loader."""
    schema.register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        master = compose("config", overrides=[f"root={tmp_path}", "dry_run=true"], return_hydra_config=True)
        yield master, GlobalHydra.instance().hydra.config_loader


def test_the_sweepers_composer_matches_load_sweep_config(sweeper_context):
    master, loader = sweeper_context

    def full(ov: list[str]) -> DictConfig:
        """What the sweeper composed before, less the hydra node (as the task function gets it)."""
        cfg = loader.load_sweep_config(master, ov)
        with open_dict(cfg):
            del cfg["hydra"]
        return cfg

    composer = sweep_composer(loader, master)
    for ov in load_sweep("demo")[:4] + [["model=tiny_m", "train.lr=1", "cluster=juwels"],
                                       ["train.lrr=1"], ["model=vit_b23"]]:
        assert outcome(composer, ov) == outcome(full, ov)


def test_the_sweeper_lists_every_bad_point_by_its_key(sweeper_context):
    master, loader = sweeper_context
    overrides = OverridesParser.create().parse_overrides(
        ["sweep=demo", "model=tiny_m", "data=syn4k", "train.lrr=1"])
    with pytest.raises(ConfigError) as e:
        plan_sweep(master, overrides, compose=sweep_composer(loader, master))
    assert str(e.value).startswith("3 point(s) cannot run")
    assert str(e.value).count("Could not override 'train.lrr'") == 3


def test_status_lists_the_run_ids_and_sizes_hydra_gives(tmp_path):
    from launcher.plan import make_point
    from launcher.status import _compose_points

    extra = [f"root={tmp_path}", "train.lr=0.002"]
    got = _compose_points("demo", extra)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        points = [make_point(ov, hydra([*ov, *extra])) for ov in load_sweep("demo")]
    # (key, samples seen, segment end, start step, trunk): cosine points have no trunk part
    assert got == [(p.run_id, p.samples_seen, 0, 0, "") for p in points]
