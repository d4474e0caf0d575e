"""Further than the paper: prediction intervals, the held-out check, the family interaction
test and the saturating law, on synthetic data with a known answer; the predict CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import extend
from analysis.__main__ import main


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
