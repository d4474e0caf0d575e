"""``clipscale``, the console entry point (``[project.scripts]`` -> ``launcher.cli:main``): run
through the installed script, as a user types it, and its dispatch to each stage's own main."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from launcher.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).parent / "clipscale"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def clipscale(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    if not SCRIPT.is_file():
        pytest.fail(f"{SCRIPT} is missing: reinstall with `pip install -e '.[dev]'` (make venv)")
    # the script imports the packages through the editable install: pin this checkout
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    return subprocess.run([str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def test_pyproject_declares_the_script():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"clipscale": "launcher.cli:main"}


def test_help_lists_every_subcommand_with_one_line(tmp_path):
    out = clipscale("--help", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    listed = {line.split()[0]: line for line in out.stdout.splitlines() if line.startswith("  ")}
    assert set(COMMANDS) == {"status", "cancel", "eval", "import", "analyze", "predict",
                             "optimal", "design"}
    assert set(COMMANDS) <= set(listed)
    assert all(len(listed[name].split()) > 2 for name in COMMANDS)


def test_import_then_predict_through_the_installed_script(tmp_path):
    store = tmp_path / "store"
    out = clipscale("import", "--format", "openclip-results",
                    str(FIXTURES / "openclip-results" / "openclip_results.csv"),
                    "--root", str(store), "--datasets", "imagenet1k", cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "8 records (8 written, 0 unchanged)" in out.stdout
    out = clipscale("predict", "--source", "store", "--root", str(store), "--gmacs", "532",
                    "--samples", "68e9", "--family", "openclip-laion2b", cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines() if "openclip-laion2b" in line]
    assert [r[3] for r in rows] == ["paper", "ols"]  # both methods, labelled


def test_unknown_command_and_pass_through(tmp_path, capsys):
    assert main(["nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err
    assert main([]) == 2
    (tmp_path / "runs").mkdir()
    assert main(["eval", "list", str(tmp_path / "runs")]) == 0
    assert "no eval records" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:  # the stage's own argparse help
        main(["status", "--help"])
    assert e.value.code == 0 and "python -m launcher.status" in capsys.readouterr().out


def test_optimal_through_the_installed_script(tmp_path):
    out = clipscale("optimal", "--budget-gpu-hours", "1e5", "--source", "paper", "--bootstrap",
                    "0", cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "compute-optimal allocation" in out.stdout and "<- lowest" in out.stdout
