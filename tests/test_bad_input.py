"""Bad input, as a user types it: one line naming the key, exit status 2, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import ConfigError
from core.validate import check_name
from tests.helpers.procs import ROOT


def _launch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "launch.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


BAD_LINE = "error: point [samples.seen=-5 root={root} eval=none]: samples.seen must be positive, got -5"
"""What both paths print for one bad point: the same one line."""


@pytest.mark.parametrize("multirun", [False, True], ids=["single", "sweep"])
def test_a_bad_value_is_one_line_and_exit_status_2(tmp_path: Path, multirun: bool):
    out = _launch(*(["-m"] if multirun else []), "samples.seen=-5", f"root={tmp_path}", "eval=none")
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == BAD_LINE.format(root=tmp_path), out.stderr
    assert not [p for p in tmp_path.iterdir() if p.name != "_hydra"]  # no run folder


def test_several_bad_points_are_listed_together(tmp_path: Path):
    out = _launch("-m", "samples.seen=-5,-6", f"root={tmp_path}", "eval=none")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines[0] == "error: 2 point(s) cannot run; nothing was launched:", lines
    assert [ln.strip().rsplit(" ", 1)[-1] for ln in lines[1:]] == ["-5", "-6"], lines


def test_hydra_full_error_keeps_the_traceback(tmp_path: Path):
    out = _launch("samples.seen=-5", f"root={tmp_path}", "eval=none", env={"HYDRA_FULL_ERROR": "1"})
    assert out.returncode != 0 and "Traceback" in out.stderr and "ConfigError" in out.stderr


def test_a_name_cannot_walk_out_of_the_root(tmp_path: Path):
    root = tmp_path / "a" / "b" / "c"
    out = _launch("model.name=../../../elsewhere/evil", f"root={root}", "eval=none")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "model.name='../../../elsewhere/evil'" in out.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["a"]  # nothing beside the root
    assert not [p for p in root.iterdir() if p.name != "_hydra"]


@pytest.mark.parametrize("name", ["..", ".", "a/b", "a..b", "x y", "", "ü"])
def test_unsafe_names_are_refused(name: str):
    with pytest.raises(ConfigError, match="model.name"):
        check_name("model.name", name)


@pytest.mark.parametrize("name", ["vit_b32", "laion400m", "13B", "s6k", "tiny-s.v2"])
def test_safe_names_pass(name: str):
    assert check_name("model.name", name) == name


def test_the_plan_check_names_the_key(make_cfg):
    from launcher.plan import make_point

    cfg = make_cfg("data.name=../x")
    with pytest.raises(ConfigError, match=r"data.name='../x'"):
        make_point(["data.name=../x"], cfg)
