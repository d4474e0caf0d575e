"""The real Hydra app end to end on a tiny grid: train, evaluate, relaunch, analyse.

Two points of the embedded default with few steps, run through ``launch.py -m`` exactly as a
user does, then ``python -m analysis`` on the records they wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from launcher import rundir
from store import read_records

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _launch(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "launch.py", "-m", "model=tiny_s,tiny_m", "data=syn4k", "samples=s6k",
           "samples.seen=512", "train.warmup=2", "train.workers=0", "eval.batch_size=128",
           f"root={tmp_path / 'runs'}", f"data_root={tmp_path / 'data'}", *overrides]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "TQDM_DISABLE": "1"})


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    first = _launch(tmp)
    return tmp, first


def test_first_launch_trains_and_evaluates_every_point(grid):
    tmp, out = grid
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    runs = sorted(p for p in (tmp / "runs").iterdir() if not p.name.startswith("_"))
    assert [r.name.split("-")[0] for r in runs] == ["tiny_m", "tiny_s"]
    for run in runs:
        assert rundir.state(run) == "done", run
        assert (run / "config.yaml").is_file() and json.loads((run / "meta.json").read_text())["git_commit"]
        events = [e["event"] for e in rundir.events(run)]
        assert events == ["start", "trained", "evaluated", "done"]
    records, problems = read_records(tmp / "runs")
    assert not problems
    # per run (conf/eval/embedded.yaml): 3 zero-shot sets, 1 retrieval set, 2 linear probes
    # (full, 10-shot) and 3 aggregates
    assert len(records) == 2 * 9
    assert {r["task"] for r in records} == {"zeroshot_classification", "zeroshot_retrieval",
                                            "linear_probe", "linear_probe_10shot"}
    assert {"synth_robustness", "synth_vtab", "synth_vtab+"} <= {r["dataset"] for r in records}
    for r in records:
        assert all(v is None or 0.0 <= v <= 1.0 for v in r["metrics"].values())
        assert r["samples_seen"] == 512 and r["compute"] == pytest.approx(512 * r["gmacs"])


def test_relaunch_runs_nothing_again(grid):
    tmp, _ = grid
    before = {p: p.stat().st_mtime for p in (tmp / "runs").rglob("*.pt")}
    again = _launch(tmp)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 point(s) to run, 2 skipped" in again.stdout
    assert {p: p.stat().st_mtime for p in (tmp / "runs").rglob("*.pt")} == before


def test_analysis_reads_the_store(grid):
    tmp, _ = grid
    out = subprocess.run([sys.executable, "-m", "analysis", "--source", "store", "--root",
                          str(tmp / "runs"), "--out", str(tmp / "report"), "--bootstrap", "0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert (tmp / "report" / "fits.csv").is_file()
    assert (tmp / "report" / "points.csv").read_text().count("\n") >= 2


def test_stages_train_then_evaluate(tmp_path):
    """``stage=train`` trains and stops at ``trained`` (what a SLURM training job does before its
    evaluation job); a plain relaunch then only evaluates; ``stage=eval`` on an untrained
    point is refused with the reason."""
    point = ["model=tiny_s", "data=syn4k", "samples=s6k", "samples.seen=256", "train.workers=0",
             f"root={tmp_path / 'runs'}", f"data_root={tmp_path / 'data'}"]

    def launch(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "launch.py", "-m", *point, *extra], cwd=ROOT,
                              capture_output=True, text=True, timeout=600,
                              env={**os.environ, "TQDM_DISABLE": "1", "HYDRA_FULL_ERROR": "1"})

    early = launch("stage=eval")
    assert early.returncode != 0 and "stage=eval, but its training has not finished" in early.stderr
    assert launch("stage=train").returncode == 0
    run, = (tmp_path / "runs").glob("tiny_s-*")
    assert rundir.state(run) == "trained" and not (run / "eval").exists()
    final = run / "checkpoints" / "final.pt"
    trained_at = final.stat().st_mtime
    again = launch()
    assert again.returncode == 0, again.stderr[-3000:]
    assert "trained" in again.stdout and "1 point(s) to run" in again.stdout
    assert rundir.state(run) == "done" and final.stat().st_mtime == trained_at
    assert [e["event"] for e in rundir.events(run)].count("trained") == 1
    records, problems = read_records(tmp_path / "runs")
    assert records and not problems
