"""The private Hydra and submitit internals we use are where launcher/hydra_internals.py says."""

from __future__ import annotations

import pytest

from launcher import hydra_internals


def test_pinned_internals_are_in_place():
    hydra_internals.check()  # raises, naming what moved, after an upgrade


def test_split_sweep_arguments_expands_the_cartesian_product():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(["a=1,2", "b=x,y"])
    points = hydra_internals.split_sweep_arguments(parsed)
    assert sorted(map(sorted, points)) == [["a=1", "b=x"], ["a=1", "b=y"], ["a=2", "b=x"],
                                           ["a=2", "b=y"]]


def test_overrides_of_call_reads_positional_and_keyword_calls():
    args = hydra_internals.submitit_call_args(["a=1", "b=2"], 3, None)
    assert hydra_internals.overrides_of_call(args, {}) == ["a=1", "b=2"]
    kwargs = dict(zip(hydra_internals.SUBMITIT_CALL_ARGS, args, strict=True))
    assert hydra_internals.overrides_of_call((), kwargs) == ["a=1", "b=2"]


def test_launcher_params_are_a_copy_of_the_launchers_fields():
    launcher = hydra_internals.BaseSubmititLauncher(gpus_per_node=4, submitit_folder="x")
    params = hydra_internals.launcher_params(launcher)
    assert params == {"gpus_per_node": 4, "submitit_folder": "x"}
    params.pop("submitit_folder")
    assert hydra_internals.launcher_params(launcher)["submitit_folder"] == "x"


def test_check_names_a_moved_internal(monkeypatch):
    def init(self, **params):  # an upgrade that keeps the fields elsewhere
        self.options = params

    # the class check() sees (another test may have re-imported the plugin module)
    monkeypatch.setattr(hydra_internals.BaseSubmititLauncher, "__init__", init)
    with pytest.raises(RuntimeError, match=r"no longer keeps them in \.params"):
        hydra_internals.check()
