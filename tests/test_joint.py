"""The joint law E(N, S, U) (analysis.joint), the optimum and the sweep designer
(analysis.design): pinned on the paper's runs; the designed sweep proven on the embedded
default (slow).

Tolerances: the fits are deterministic (a fixed variable-projection grid, L-BFGS-B, no random
starts), so only floating point and scipy versions move them. The Huber loss with delta 1e-3
is almost an L1 loss, whose minimum can be flat along a direction: E_inf of the floor law is
~0 (1.8e-9) and moves by orders of magnitude with the optimiser's tolerance, so it is pinned
only as "below 0.01"; the exponents and held-out predictions moved by less than 0.5 % and
0.01 points when the tolerance was changed 1000-fold (ftol 1e-13 -> 1e-10), so they are
pinned at 2 % (exponents) and 0.1 points (errors in %) - tight enough to catch a changed
law, loss or S_eff, loose enough for another BLAS.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from analysis import design, extend, joint
from analysis.__main__ import main
from analysis.fit import error_points
from analysis.load import load
from core import cost

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def imagenet() -> pd.DataFrame:
    df, _ = load("paper")
    points, _ = error_points(df, ["imagenet1k"])
    return points


@pytest.fixture(scope="module")
def runs(imagenet) -> pd.DataFrame:
    out, problems = joint.joint_points(imagenet)
    assert not problems
    return out[out["family"] == "openclip"].reset_index(drop=True)


def test_seff_counts_the_first_epoch_fully_and_saturates():
    U = np.full(4, 1e9)
    S = np.array([0.5e9, 1e9, 2e9, 1e15])
    s = joint.seff(S, U, 10.0)
    assert s[0] == 0.5e9 and s[1] == 1e9  # up to one epoch: every pair counts
    assert s[2] == pytest.approx(1e9 + 1e9 * 10 * (1 - np.exp(-0.1)))
    assert s[3] == pytest.approx(1e9 * 11)  # never more than U (1 + R_star)


def test_runs_get_unique_pairs_and_gmacs(runs):
    assert len(runs) == 29
    assert set(runs["U"]) == {80_000_415, 407_332_084, 2_320_000_000}
    assert (runs["N"] == runs["gmacs"]).all()


def test_varpro_and_hoffmann_grid_reach_the_same_minimum(runs):
    # the product law: 162 grid starts take seconds; README has the others (same minima)
    data = joint.data_of(runs)
    fast = joint.fit_law("product", data, starts="varpro")
    grid = joint.fit_law("product", data, starts="grid")
    assert fast.loss == pytest.approx(grid.loss, rel=1e-6)
    assert fast.seconds < grid.seconds
    for k, v in grid.params.items():
        assert fast.params[k] == pytest.approx(v, rel=1e-3, abs=1e-6), k  # E_inf ~ 0: abs


def test_floor_law_on_imagenet_is_pinned(runs):
    law = joint.fit_law("floor", joint.data_of(runs))
    p = law.params
    assert law.converged and law.grad_max < 1e-5 and law.n_agree >= 2
    assert law.loss == pytest.approx(4.09e-4, rel=0.02)  # summed Huber loss of log error
    assert p["E_inf"] < 0.01
    assert p["alpha"] == pytest.approx(0.12373, rel=0.02)
    assert p["beta"] == pytest.approx(0.090752, rel=0.02)
    assert p["delta"] == pytest.approx(1.5774, rel=0.02)
    assert p["A"] == pytest.approx(0.58832, rel=0.02)
    assert p["R_star"] == pytest.approx(83.6, rel=0.05)  # flat: 80M/400M runs are far past it
    assert np.abs(np.expm1(-law.residuals)).mean() == pytest.approx(0.01445, abs=0.001)


def test_held_out_and_leave_one_out_errors_on_imagenet(imagenet):
    paper = extend.holdout(imagenet, methods=("paper",))
    result = joint.joint_analysis(imagenet, forms=("floor", "chinchilla"), n_boot=0,
                                  paper_holdout=paper)  # fmt: skip
    ho = result.holdout.set_index(["form", "heldout_model"])["rel_error"]
    # the goal: H/14 and g/14 from B/32-L/14 within 1.5 % mean relative error
    assert 100 * ho["floor", "ViT-H/14"] == pytest.approx(1.91, abs=0.1)
    assert 100 * ho["floor", "ViT-g/14"] == pytest.approx(-0.12, abs=0.1)
    assert ho["floor"].abs().mean() < 0.015
    # the Chinchilla form with the repetition term: about 3 % (+3.0 % H/14, -2.1 % g/14)
    assert 100 * ho["chinchilla", "ViT-H/14"] == pytest.approx(2.99, abs=0.1)
    assert 100 * ho["chinchilla", "ViT-g/14"] == pytest.approx(-2.05, abs=0.1)
    # the paper's method on its envelope stays better on these two runs (0.42 %)
    assert result.holdout["paper_rel_error"].abs().mean() == pytest.approx(0.0042, abs=0.0005)
    s = result.summary.set_index("form")
    assert 100 * s.loc["floor", "loo_mean_abs_rel"] == pytest.approx(1.89, abs=0.1)
    assert 100 * s.loc["chinchilla", "loo_mean_abs_rel"] == pytest.approx(3.65, abs=0.1)
    assert len(result.loo) == 2 * 29
    # the L/14 LAION-400M bottleneck: measured 3.3 % (13B -> 34B) vs 7.8 % on 2B; the laws
    # predict a smaller gain on 400M, but not small enough
    bn = result.bottleneck.set_index(["form", "model_label", "data_label"])
    assert bn.loc[("floor", "ViT-L/14", "LAION-400M"), "measured_gain"] == pytest.approx(0.0328, abs=1e-3)
    assert bn.loc[("floor", "ViT-L/14", "LAION-400M"), "predicted_gain"] == pytest.approx(0.059, abs=0.005)
    assert s.loc["floor", "bottleneck"].startswith("no:")


def test_cli_writes_the_joint_files_and_keeps_the_others(tmp_path, capsys):
    out = tmp_path / "o"
    rc = main(["--source", "paper", "--out", str(out), "--tasks", "imagenet1k", "--bootstrap",
               "0", "--joint-bootstrap", "3", "--no-plots"])  # fmt: skip
    assert rc == 0
    fit = pd.read_csv(out / "joint_fit.csv")
    assert set(fit["form"]) == {"floor", "chinchilla"} and fit["n_boot"].eq(3).all()
    assert {"value", "low", "high", "converged", "n_agree"} <= set(fit.columns)
    held = pd.read_csv(out / "joint_holdout.csv")
    assert set(held["heldout_model"]) == {"ViT-H/14", "ViT-g/14"}
    assert held["paper_rel_error"].notna().all()
    assert len(pd.read_csv(out / "joint_loo.csv")) == 2 * 29
    assert "joint law E(N, S, U)" in (out / "summary.txt").read_text()
    assert "Joint law E(N, S, U)" in (out / "report.html").read_text()
    # the quick run leaves the joint law out
    quick = tmp_path / "q"
    assert main(["--source", "paper", "--out", str(quick), "--tasks", "imagenet1k",
                 "--bootstrap", "0", "--no-plots"]) == 0  # fmt: skip
    assert not (quick / "joint_fit.csv").exists()


def test_optimal_allocation_prints_the_optimum_per_data_choice(capsys):
    rc = main(["optimal", "--budget-gpu-hours", "1e5", "--task", "imagenet1k", "--source",
               "paper", "--bootstrap", "5"])  # fmt: skip
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "compute-optimal allocation" in printed and "<- lowest" in printed
    for label in ("LAION-80M", "LAION-400M", "LAION-2B", "unlimited"):
        assert label in printed
    assert "vit_g14" in printed and "paper A100 jobs" in printed
    # the allocation form (a sum of an N and an S term) has an optimum inside the range
    assert "law (chinchilla" in printed and "at the largest size searched" not in printed


def test_optimal_with_a_product_form_says_why_its_optimum_is_an_edge(capsys):
    assert main(["optimal", "--budget-gpu-hours", "1e5", "--task", "imagenet1k", "--source",
                 "paper", "--bootstrap", "0", "--form", "floor"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "note: in form floor N and S enter as one product" in printed
    assert "(N at the largest size searched)" in printed


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["optimal", "--budget-gpu-hours", "-5"], "--budget-gpu-hours must be a positive number, got -5"),
        (["optimal", "--budget-cpu-seconds", "nan"], "--budget-cpu-seconds must be a positive number"),
        (["optimal", "--budget-gpu-hours", "1e5", "--task", "imagenet2k"], "--task imagenet2k: no results"),
        (["design", "--budget-gpu-hours", "0", "--model", "vit_b32", "--data", "laion2b", "--name", "x"],
         "--budget-gpu-hours must be a positive number, got 0"),
        (["design", "--budget-gpu-hours", "1e5", "--model", "vit_b32", "--data", "laion2b", "--name", "x",
          "--task", "imagenet2k", "--strategy", "interval"], "--task imagenet2k: no results"),
    ],
    ids=["negative_budget", "nan_budget", "unknown_task", "design_zero_budget", "design_unknown_task"],
)
def test_bad_planning_input_is_one_line_naming_the_flag(argv, says, capsys, tmp_path):
    argv = [*argv, "--source", "paper", "--bootstrap", "2"]
    if argv[0] == "design":
        argv += ["--sweeps-dir", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and says in err[0], err
    if "--task" in argv:
        assert "imagenet1k" in err[0]  # the tasks the source has are listed
    assert not list(tmp_path.iterdir())  # nothing written


def test_optimum_of_the_chinchilla_law_is_inside_the_range(runs):
    data = joint.data_of(runs)
    fitted = joint.Fitted(joint.fit_law("chinchilla", data), [], runs)
    table = design.optimal(fitted, 1e4)
    best = table[table["data"] == "LAION-2B"].iloc[0]
    assert best["at_edge"] == "" and 20 < best["N_opt"] < 200
    # 1e4 A100-hours at the interpolated MFU buy N_opt x S_opt GMACs of compute
    assert best["compute"] == pytest.approx(best["N_opt"] * best["S_opt"])


def test_designed_sweep_fits_its_budget_and_runs_as_a_sweep(tmp_path, capsys):
    sweeps = tmp_path / "sweeps"
    name = "planned_test"
    rc = main(["design", "--budget-gpu-hours", "2e5", "--model", "vit_b32,vit_b16,vit_l14",
               "--data", "laion400m,laion2b", "--name", name, "--sweeps-dir", str(sweeps),
               "--bootstrap", "0"])  # fmt: skip
    printed = capsys.readouterr().out
    assert rc == 0, printed
    path = sweeps / f"{name}.yaml"
    doc = yaml.safe_load(path.read_text())
    assert "Strategy interval" in doc["description"] and "vit_h14" in doc["description"]
    assert all({"model", "data", "samples", "samples.seen"} <= set(b) for b in doc["points"])
    assert len({b["model"] for b in doc["points"]}) >= 2
    # the plan prices it as the designer did: within the budget
    out = subprocess.run([sys.executable, "launch.py", "-m", f"sweep={path}", "dry_run=true",
                          f"root={tmp_path / 'runs'}"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    total = next(line for line in out.stdout.splitlines() if line.startswith("total"))
    planned = float(total.split()[-3].replace(",", ""))
    assert f"{len(doc['points'])} points" in total and 0.9 * 2e5 < planned <= 2e5
    assert main(["design", "--budget-gpu-hours", "2e5", "--model", "vit_b32", "--data",
                 "laion2b", "--name", name, "--sweeps-dir", str(sweeps)]) == 2  # exists


def test_isoflop_design_spends_the_budget_in_profiles():
    points, budgets = design.isoflop_design(["tiny_s", "tiny_m"], ["syn4k", "syn32k"], 0.05,
                                            design.Device(0.1, cpu=True), n_budgets=2)  # fmt: skip
    assert budgets[1] == pytest.approx(4 * budgets[0])
    assert sum(c.hours for c in points) <= 0.05
    assert {(c.model.name, c.data.name) for c in points} == {
        (m, d) for m in ("tiny_s", "tiny_m") for d in ("syn4k", "syn32k")}
    assert all(c.samples % c.model.global_batch == 0 for c in points)


def _launch(*overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    return subprocess.run([sys.executable, "launch.py", "-m", *overrides], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


@pytest.mark.slow
def test_designed_sweep_on_the_embedded_default_predicts_a_larger_held_out_point(tmp_path):
    """Issue 12's proof at CI scale: design a sweep within 72 CPU-seconds, run it, fit the joint
    law on its records, and predict a point of twice the largest designed compute (tiny_s on
    syn32k at twice its largest designed samples seen), trained for the check. At this size
    (8 to 122 optimizer steps; chance on synth_shapes is an error of 1 - 1/8) errors are noisy,
    so the check is: the law foresees the improvement (its prediction lies below the error of
    the largest designed point of that model and data) and comes within 15 % of the measured
    error (measured while writing this test: 0.703 predicted against 0.647 measured, +8.7 %)."""
    sweeps, root, data = tmp_path / "sweeps", tmp_path / "runs", tmp_path / "data"
    # 72 CPU-seconds at the tiny_s price of core.cost when this test was written (1305.9
    # samples/s, train_throughput_cpu.json): the same design whatever that benchmark now says.
    tiny_s = cost.throughput("clipscale-tiny-s", 0.00424, peak_tflops=cost.CPU_PEAK_TFLOPS, cpu=True)
    budget = f"{72 * 1305.9 / tiny_s.samples_per_s:.6g}"
    rc = main(["design", "--budget-cpu-seconds", budget, "--model", "tiny_s,tiny_m", "--data",
               "syn4k,syn32k", "--name", "ci_tiny", "--sweeps-dir", str(sweeps), "--strategy",
               "isoflop", "--n-budgets", "2", "--ratio", "2", "--min-steps", "8"])  # fmt: skip
    assert rc == 0
    doc = yaml.safe_load((sweeps / "ci_tiny.yaml").read_text())
    assert len(doc["points"]) == 8  # 2 budgets x 2 models x 2 data
    shapes = data / "synthetic" / "eval" / "synth_shapes"
    common = ["train.workers=0", "train.warmup=2", "eval.aggregates={}",
              f"eval.datasets=[{{name:synth_shapes,task:zeroshot_classification,root:{shapes}}}]",
              f"data_root={data}"]  # fmt: skip
    out = _launch(f"sweep={sweeps / 'ci_tiny.yaml'}", f"root={root}", *common)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    big = max(b["samples.seen"] for b in doc["points"] if b["model"] == "tiny_s")
    held_root = tmp_path / "heldout"
    out = _launch("model=tiny_s", "data=syn32k", "samples=s18k", f"samples.seen={2 * big}",
                  f"root={held_root}", *common)  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]

    df, problems = load("store", root)
    runs, _ = joint.joint_points(error_points(df, ["synth_shapes"])[0])
    assert len(runs) == 8 and set(runs["U"]) == {4096, 32768}
    law = joint.fit_law("floor", joint.data_of(runs))
    held, _ = joint.joint_points(error_points(load("store", held_root)[0], ["synth_shapes"])[0])
    measured = float(held["error"].iloc[0])
    pred = float(law.predict(held["N"], held["samples_seen"], held["U"])[0])
    largest = runs[(runs["N"] == float(held["N"].iloc[0])) & (runs["U"] == 32768)]
    largest = float(largest.sort_values("samples_seen")["error"].iloc[-1])
    print(f"held-out tiny_s syn32k {2 * big} samples: measured {measured:.4f}, predicted "
          f"{pred:.4f} ({(pred - measured) / measured:+.3f}); largest designed {largest:.4f}")
    assert pred < largest
    assert abs(pred - measured) / measured < 0.15
