"""The private Hydra and submitit internals we use are where launcher/hydra_internals.py says."""

from __future__ import annotations

from launcher import hydra_internals


def test_pinned_internals_are_in_place():
    hydra_internals.check()  # raises, naming what moved, after an upgrade


def test_split_sweep_arguments_expands_the_cartesian_product():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(["a=1,2", "b=x,y"])
    points = hydra_internals.split_sweep_arguments(parsed)
    assert sorted(map(sorted, points)) == [["a=1", "b=x"], ["a=1", "b=y"], ["a=2", "b=x"],
                                           ["a=2", "b=y"]]
