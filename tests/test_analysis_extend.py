"""Further than the paper: prediction intervals, the held-out check, the family interaction
test and the saturating law, on synthetic data with a known answer; the predict CLI; the 2025
follow-up's law on a Pareto frontier, its family crossovers and held-out cut."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import extend
from analysis.__main__ import main
from analysis.fit import fit_one, followup_fit, pareto_bin


def power_law_points(
    family: str = "syn", alpha: float = -0.15, A: float = 8.0, e_inf: float = 0.0,
    noise: float = 0.02, models: int = 5, samples: int = 4, seed: int = 0,
) -> pd.DataFrame:  # fmt: skip
    """Runs of ``models`` sizes x ``samples`` sample counts, E = A C^alpha + e_inf with
    log-normal noise (``noise`` in log10), in the layout of ``analysis.error_points``."""
    rng = np.random.default_rng(seed)
    rows = []
    for m in range(models):
        gmacs = 4.0 * 3**m
        for s in range(samples):
            seen = 1e9 * 3**s
            compute = gmacs * seen
            err = (A * compute**alpha + e_inf) * 10 ** rng.normal(0, noise)
            rows.append({
                "family": family, "task": "synth", "eval_task": "zeroshot_classification",
                "metric": "acc1", "error": err, "value": 1 - err, "compute": compute,
                "gmacs": gmacs, "samples_seen": seen, "model_label": f"M{m}",
                "data_label": "D", "run_id": f"{family}-{m}-{s}",
            })  # fmt: skip
    return pd.DataFrame(rows)


def test_prediction_interval_contains_a_held_out_true_value():
    train = power_law_points(models=4)
    truth = 8.0 * (4.0 * 3**6 * 2e10) ** -0.15  # a model two sizes beyond the data
    pred = extend.predict(train, gmacs=4.0 * 3**6, samples_seen=2e10).iloc[0]
    assert pred["error_pi_low"] < truth < pred["error_pi_high"]
    assert pred["error_ci_low"] < pred["error"] < pred["error_ci_high"]
    assert pred["error"] == pytest.approx(truth, rel=0.05)
    assert "extrapolated" in pred["note"] and pred["n_fit"] == 16
    # the prediction interval (one new run) is wider than the interval of the mean
    assert pred["error_pi_high"] - pred["error_pi_low"] > pred["error_ci_high"] - pred["error_ci_low"]  # fmt: skip


def test_holdout_predicts_the_larger_models_within_their_intervals():
    points = power_law_points(models=5)
    table = extend.holdout(points, methods=("ols",))
    assert set(table["heldout_model"]) == {"M3", "M4"}  # of 5 models the 2 largest
    assert (table["n_fit"] == 12).all()
    assert table["rel_error"].abs().max() < 0.15
    summary = extend.holdout_summary(table)
    # 95 % intervals: with this seed 7 of the 8 held-out runs fall inside
    assert summary["pi_coverage"].item() >= 0.75 and summary["n_heldout"].item() == 8
    assert summary["mean_abs_rel_error"].item() < 0.05


def test_interaction_p_value_separates_different_from_equal_exponents():
    a = power_law_points("a", alpha=-0.10, seed=1)
    same = power_law_points("b", alpha=-0.10, A=5.0, seed=2)
    differ = power_law_points("b", alpha=-0.20, A=60.0, seed=3)
    p_same = extend.family_tests(pd.concat([a, same]), methods=("ols",))
    p_diff = extend.family_tests(pd.concat([a, differ]), methods=("ols",))
    assert p_same["p_value"].item() > 0.05
    assert p_diff["p_value"].item() < 1e-6
    row = p_diff.iloc[0]
    assert row["alpha_diff"] == pytest.approx(-0.10, abs=0.02)
    assert row["diff_low"] < row["alpha_diff"] < row["diff_high"]
    assert (row["family_a"], row["family_b"], row["n_a"], row["n_b"]) == ("a", "b", 20, 20)


def test_saturating_fit_recovers_the_floor_and_wins_the_comparison():
    points = power_law_points(alpha=-0.3, A=300.0, e_inf=0.2, noise=0.005)
    row = extend.saturating_fit(points)
    assert row["E_inf"] == pytest.approx(0.2, rel=0.1)
    assert row["E_inf_low"] < 0.2 < row["E_inf_high"]
    assert row["alpha"] == pytest.approx(-0.3, abs=0.05)
    assert row["preferred"] == "saturating" and row["p_F"] < 1e-3
    assert row["aic_saturating"] < row["aic_power"] and row["bic_saturating"] < row["bic_power"]


def test_saturating_fit_on_a_pure_power_law_finds_no_floor():
    row = extend.saturating_fit(power_law_points())
    assert row["preferred"] == "power" and row["p_F"] > 0.05
    assert row["bic_power"] < row["bic_saturating"]
    exact = extend.saturating_fit(power_law_points(noise=0.0))
    assert "no floor" in exact["note"]


def test_too_few_points_give_notes_not_errors():
    two = power_law_points(models=2, samples=1)
    assert "need >= 5" in extend.saturating_fit(two)["note"]
    pred = extend.predict(two, 100.0, 1e12).iloc[0]
    assert np.isfinite(pred["error"]) and np.isnan(pred["error_pi_low"])
    assert "no interval" in pred["note"]
    one = power_law_points(models=1, samples=1)
    assert "no line" in extend.predict(one, 100.0, 1e12).iloc[0]["note"]
    assert extend.holdout(one).empty
    assert extend.family_tests(pd.concat([one, power_law_points("b")])).empty


def test_predict_cli_on_the_paper(capsys):
    rc = main(["predict", "--gmacs", "532", "--samples", "68e9", "--task", "imagenet1k"])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "95% prediction interval" in printed
    assert "openclip" in printed and "openai" in printed and "extrapolated" in printed


def test_predict_cli_with_nothing_to_fit(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    rc = main(["predict", "--source", "store", "--root", str(tmp_path / "runs"),
               "--gmacs", "1", "--samples", "1e6"])  # fmt: skip
    printed = capsys.readouterr().out
    assert rc == 1 and "nothing to predict" in printed and "no evaluation records" in printed


def test_paper_report_has_tests_holdout_predictions_and_page(tmp_path, capsys):
    out = tmp_path / "o"
    rc = main(["--source", "paper", "--out", str(out), "--tasks", "imagenet1k", "flickr30k",
               "--bootstrap", "0", "--no-plots", "--predict", "532", "68e9"])  # fmt: skip
    printed = capsys.readouterr().out
    assert rc == 0 and "p=" in printed and "held-out check" in printed
    tests = pd.read_csv(out / "family_tests.csv")
    assert set(tests["method"]) == {"ols", "paper"}
    assert ((tests["p_value"] > 0) & (tests["p_value"] < 1)).all()
    held = pd.read_csv(out / "holdout.csv")
    openclip = held[(held["family"] == "openclip") & (held["method"] == "paper")]
    assert set(openclip["heldout_model"]) == {"ViT-H/14", "ViT-g/14"}
    assert openclip["inside_pi"].all()
    preds = pd.read_csv(out / "predictions.csv")
    assert len(preds) == 6 and (preds["error_pi_low"] < preds["error"]).all()
    sat = pd.read_csv(out / "saturating.csv")
    assert set(sat.columns) >= {"aic_power", "aic_saturating", "p_F", "preferred"}
    page = (out / "report.html").read_text()
    assert "Exponents" in page and "p same alpha (paper)" in page and "Predictions" in page


# --- the 2025 follow-up's method: E = a (C + b)^c + d on a Pareto frontier --------------------


def saturating_frontier(family: str = "fu", a: float = 4.0, b: float = 5e9, c: float = -0.15,
                        d: float = 0.1, lo: float = 1e9, hi: float = 1e13, n: int = 24,
                        noise: float = 0.0, seed: int = 0) -> pd.DataFrame:  # fmt: skip
    """Runs on E = a (C + b)^c + d (the frontier, ``noise``: relative) and two worse runs at each
    compute (a model too small or too large for it), in ``analysis.error_points``' layout."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, compute in enumerate(np.geomspace(lo, hi, n)):
        best = (a * (compute + b) ** c + d) * (1 + rng.normal(0, noise))
        for k, factor in enumerate((1.0, 1.08, 1.25)):
            err = best * factor
            rows.append({
                "family": family, "task": "synth", "eval_task": "zeroshot_classification",
                "metric": "acc1", "error": err, "value": 1 - err, "compute": compute,
                "gmacs": compute / 1e9, "samples_seen": 1e9, "model_label": f"M{k}",
                "data_label": "D", "run_id": f"{family}-{i}-{k}",
            })  # fmt: skip
    return pd.DataFrame(rows)


def test_pareto_bin_keeps_each_bins_best_only_if_it_improves():
    compute = np.array([1.0, 1.5, 10.0, 12.0, 100.0, 150.0, 1000.0])
    error = np.array([0.9, 0.8, 0.7, 0.85, 0.75, 0.72, 0.5])
    # 4 geometric edges (1, 10, 100, 1000): bins [1, 10), [10, 100), [100, 1000); then the top
    mask = pareto_bin(compute, error, num_bins=4)
    # bin 1: 0.8; bin 2: 0.7; bin 3's best 0.72 does not beat 0.7; the largest compute does
    assert mask.tolist() == [False, True, True, False, False, False, True]


def test_followup_fit_recovers_a_known_saturating_law():
    points = saturating_frontier()
    fit = followup_fit(points["compute"].to_numpy(), points["error"].to_numpy(), n_boot=50)
    assert not isinstance(fit, str)
    assert fit.frontier.sum() == 24 and (points.loc[fit.frontier, "model_label"] == "M0").all()
    assert fit.c == pytest.approx(-0.15, abs=0.01) and fit.d == pytest.approx(0.1, abs=0.005)
    assert fit.b == pytest.approx(5e9, rel=0.2) and fit.a == pytest.approx(4.0, rel=0.3)
    row = fit_one(points, "followup", n_boot=50)
    assert (row["method"], row["fit_kind"], row["n_fit"], row["n_points"]) == (
        "followup", "pareto_bin", 24, 72)
    assert row["alpha"] == pytest.approx(fit.c) and row["E_inf"] == pytest.approx(fit.d)
    assert row["alpha_low"] <= row["alpha"] <= row["alpha_high"]  # exact data: a tight interval
    assert "b = " in row["note"]


def test_followup_with_noise_estimates_and_intervals():
    """1 % noise: c trades off against the floor d, so single estimates scatter by a few
    hundredths; the bootstrap interval holds the truth most of the time (not 95 %: 4
    parameters on a 24-point frontier, and the frontier keeps the lucky runs)."""
    rows = [fit_one(saturating_frontier(noise=0.01, seed=seed), "followup", n_boot=60)
            for seed in range(6)]  # fmt: skip
    assert all(abs(r["alpha"] + 0.15) < 0.06 for r in rows)
    assert all(r["alpha_high"] - r["alpha_low"] > 0.02 for r in rows)
    assert sum(r["alpha_low"] < -0.15 < r["alpha_high"] for r in rows) >= 4


def test_followup_needs_five_frontier_points():
    few = saturating_frontier(n=4)
    row = fit_one(few, "followup", n_boot=10)
    assert np.isnan(row["alpha"]) and "need >= 5" in row["note"]


def test_crossover_of_two_laws_is_found_with_an_interval():
    # 2 C^-0.1 and 8 C^-0.15 cross where C^0.05 = 4: C = 4^20 = 1.1e12, beyond both families' data
    a = saturating_frontier("a", a=2.0, b=0.0, c=-0.10, d=0.0, hi=1e11, noise=0.005, seed=1)
    b = saturating_frontier("b", a=8.0, b=0.0, c=-0.15, d=0.0, hi=1e11, noise=0.005, seed=2)
    table = extend.crossovers(pd.concat([a, b]), n_boot=100)
    row = table.iloc[0]
    assert (row["family_a"], row["family_b"], row["lower_below"], row["lower_above"]) == ("a", "b", "a", "b")
    assert row["crossover"] == pytest.approx(4.0**20, rel=0.5)
    assert row["crossover_low"] < 4.0**20 < row["crossover_high"]
    assert row["boot_share"] > 0.5 and "b overtakes a" in row["note"]
    parallel = saturating_frontier("c", a=3.0, b=0.0, c=-0.10, d=0.0, hi=1e11, seed=4)
    apart = extend.crossovers(pd.concat([a, parallel]), n_boot=20).iloc[0]
    assert np.isnan(apart["crossover"]) and "a stays below" in apart["note"]


def test_followup_holdout_above_a_compute_cut():
    points = saturating_frontier(noise=0.005, seed=5)
    table = extend.followup_holdout(points, cut=1e12, n_boot=50)
    assert len(table) and (table["compute"] > 1e12).all() and (table["method"] == "followup").all()
    assert table["rel_error"].abs().max() < 0.05
    assert table["inside_pi"].mean() >= 0.5


def test_followup_from_the_cli_on_the_follow_up_release(tmp_path, capsys):
    from store.imports import import_results

    fixture = Path(__file__).parent / "fixtures" / "scaling-laws-for-comparison" / "all_results.csv.gz"
    import_results("scaling-laws-for-comparison", fixture, tmp_path / "store")
    out = tmp_path / "o"
    rc = main(["--source", "store", "--root", str(tmp_path / "store"), "--out", str(out),
               "--tasks", "imagenet1k", "--methods", "paper", "followup", "--bootstrap", "30",
               "--holdout-above", "3e10", "--no-plots"])  # fmt: skip
    printed = capsys.readouterr().out
    assert rc == 0 and "followup c=" in printed and "overtakes" in printed
    fits = pd.read_csv(out / "fits.csv")
    assert set(fits["method"]) == {"paper", "followup"}
    fu = fits[(fits["method"] == "followup") & fits["alpha"].notna()].set_index("family")
    assert set(fu.index) == {"clip-datacomp-cosine", "mammut-datacomp-cosine"}
    # the made-up release's frontiers lie near c = -0.18 (CLIP) and -0.21 (MaMMUT) ...
    assert fu.loc["clip-datacomp-cosine", "alpha"] == pytest.approx(-0.18, abs=0.03)
    assert fu.loc["mammut-datacomp-cosine", "alpha"] == pytest.approx(-0.21, abs=0.03)
    assert (fu["alpha_low"] <= fu["alpha"]).all() and (fu["alpha"] <= fu["alpha_high"]).all()
    # ... and cross at C = 1e10 GFLOPs: MaMMUT overtakes CLIP
    cross = pd.read_csv(out / "crossovers.csv").iloc[0]
    assert cross["lower_above"] == "mammut-datacomp-cosine" and 5e9 < cross["crossover"] < 2e10
    assert cross["crossover_low"] < cross["crossover"] < cross["crossover_high"]
    held = pd.read_csv(out / "holdout.csv")
    assert (held.loc[held["method"] == "followup", "compute"] > 3e10).all()
    page = (out / "report.html").read_text()
    assert "cross" in page and "mammut-datacomp-cosine" in page


def test_predict_on_the_paper_shows_the_papers_method_and_ols(capsys):
    rc = main(["predict", "--gmacs", "532", "--samples", "68e9", "--task", "imagenet1k"])
    printed = capsys.readouterr().out
    assert rc == 0
    rows = {(line.split()[2], line.split()[3]): line.split() for line in printed.splitlines()
            if line.startswith("imagenet1k")}  # fmt: skip
    assert float(rows["openclip", "paper"][8]) == pytest.approx(0.819, abs=0.001)  # the paper's 81.9%
    assert float(rows["openclip", "ols"][8]) == pytest.approx(0.790, abs=0.001)
    assert "paper: the paper's method" in printed and "ols: a line through every run" in printed
    main(["predict", "--gmacs", "532", "--samples", "68e9", "--task", "imagenet1k", "--method", "ols"])
    assert "paper" not in {line.split()[3] for line in capsys.readouterr().out.splitlines()
                           if line.startswith("imagenet1k")}  # fmt: skip


def test_printed_summary_is_short_and_summary_txt_has_every_fit(tmp_path, capsys):
    out = tmp_path / "o"
    rc = main(["--source", "paper", "--out", str(out), "--bootstrap", "0", "--no-plots"])
    printed = capsys.readouterr().out
    assert rc == 0 and len(printed.splitlines()) <= 50
    assert " ols " not in printed and "fits of other methods in fits.csv" in printed
    assert "imagenet1k           acc1                      openclip   paper alpha=-0.111" in printed
    full = (out / "summary.txt").read_text()
    assert full.count(" ols   alpha=") == 14 and "summary.txt" in printed
