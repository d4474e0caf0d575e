"""Further than the paper: prediction intervals, a held-out check, family tests, saturation,
and where two families' laws cross.

The first four work on the same points as ``analysis.fit`` (log10 E against log10 C, C in
GMACs); the last two on the follow-up's law E = a (C + b)^c + d (``analysis.fit.followup_fit``):

``predict``
    E at a compute C = GMACs per pair x samples seen, from a statsmodels OLS fit in log-log
    (``get_prediction``): the fitted line, the 95 % interval of the mean and the 95 %
    prediction interval (where one new run should fall). ``method="ols"`` fits every run;
    ``method="paper"`` fits the paper's lower-envelope points (the best run per compute bin).
``holdout``
    Per (family, task, metric): fit on every model but the largest (by GMACs), predict the
    largest model's runs, and report each one's error, predicted error, relative error and
    whether it fell inside the 95 % prediction interval.
``family_tests``
    Do two families scale differently? OLS of ``log_e ~ log_c * family`` on both families'
    points (``method="ols"``: every run; ``"paper"``: each family's envelope points); the
    interaction coefficient is the difference of the exponents and its p-value tests
    "same exponent".
``saturating_fit``
    E = A * C^alpha + E_inf (scipy ``curve_fit`` on log10 E, so the residuals are on the same
    scale as the power law's), compared with the pure power law by AIC, BIC and the F-test of
    the nested models (E_inf = 0 lies on the boundary, so the F p-value is approximate).
``crossovers``
    Per (task, metric) and pair of families, each family's followup law: does one overtake the
    other, and at what compute? The first crossing of the two laws between the smaller
    family's smallest frontier compute and ``CROSSOVER_DECADES`` decades beyond the larger's
    largest, with a percentile interval over the bootstrap laws (pairs of the two families'
    refits; ``boot_share`` of those pairs cross at all in that range).
``followup_holdout``
    The follow-up's check: fit the law on the frontier points at or below a compute cut,
    predict the frontier points above it, with the bootstrap interval of the law (rows in
    ``holdout.csv``'s columns, method ``followup``).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import statsmodels.api as sm
import statsmodels.formula.api as smf
from scipy import optimize, stats

from analysis.fit import (
    FOLLOWUP_BOOT,
    FollowupFit,
    followup_fit,
    followup_law,
    group_of,
    log_points,
    paper_line,
)

LEVEL = 0.95
MIN_PRED_POINTS = 3  # a line through 2 points has no residual variance: no interval
MIN_SAT_POINTS = 5  # 3 parameters need a few residual degrees of freedom

PREDICT_COLUMNS = (
    "family", "task", "metric", "method", "gmacs", "samples_seen", "compute", "error",
    "error_ci_low", "error_ci_high", "error_pi_low", "error_pi_high", "value", "n_fit", "note",
)  # fmt: skip
HOLDOUT_COLUMNS = (
    "family", "task", "metric", "method", "train_models", "heldout_model", "run_id",
    "samples_seen", "compute", "error", "predicted", "pi_low", "pi_high", "rel_error",
    "inside_pi", "n_fit",
)  # fmt: skip
TEST_COLUMNS = (
    "task", "metric", "method", "family_a", "family_b", "alpha_a", "alpha_b", "alpha_diff",
    "diff_low", "diff_high", "p_value", "n_a", "n_b",
)  # fmt: skip
CROSSOVER_COLUMNS = (
    "task", "metric", "family_a", "family_b", "crossover", "crossover_low", "crossover_high",
    "boot_share", "error_at_crossover", "lower_below", "lower_above", "range_low", "range_high",
    "n_boot", "note",
)  # fmt: skip
CROSSOVER_DECADES = 3.0
"""How far beyond the data (decades of compute) ``crossovers`` looks for a crossing."""
COMPARISON_COLUMNS = (
    "family", "task", "eval_task", "metric", "n_points", "A", "alpha", "E_inf", "E_inf_low", "E_inf_high",
    "rss_power", "rss_saturating", "aic_power", "aic_saturating", "bic_power",
    "bic_saturating", "F", "p_F", "preferred", "note",
)  # fmt: skip


def _fit_xy(points: pd.DataFrame, method: str) -> tuple[np.ndarray, np.ndarray]:
    """The (log10 C, log10 E) pairs ``method`` regresses on."""
    x, y = log_points(points)
    if method == "ols":
        return x, y
    if method == "paper":
        if len(x) < 2 or np.ptp(x) == 0:
            return x, y  # no line: callers check the length and spread
        line = paper_line(x, y)
        return line.x, line.y
    raise ValueError(f"unknown method {method!r}: expected ols or paper")


def _ols(x: np.ndarray, y: np.ndarray):
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return sm.OLS(y, sm.add_constant(x)).fit()


def predict_log(
    x: np.ndarray, y: np.ndarray, log_c: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predicted log10 E at ``log_c`` with the 95 % confidence and prediction intervals.

    Returns ``(mean, ci (n, 2), pi (n, 2))``; the intervals are NaN below 3 fit points.
    """
    log_c = np.atleast_1d(np.asarray(log_c, float))
    res = _ols(x, y)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        exog = sm.add_constant(log_c, has_constant="add")
        frame = res.get_prediction(exog).summary_frame(alpha=1 - LEVEL)
    mean = frame["mean"].to_numpy()
    ci = frame[["mean_ci_lower", "mean_ci_upper"]].to_numpy()
    pi = frame[["obs_ci_lower", "obs_ci_upper"]].to_numpy()
    if len(x) < MIN_PRED_POINTS:
        ci, pi = np.full_like(ci, np.nan), np.full_like(pi, np.nan)
    return mean, ci, pi


def predict(
    points: pd.DataFrame,
    gmacs: float,
    samples_seen: float,
    tasks: Sequence[str] | None = None,
    families: Sequence[str] | None = None,
    method: str = "ols",
) -> pd.DataFrame:
    """One ``PREDICT_COLUMNS`` row per (family, task, metric) of ``points`` at that compute."""
    sel = points
    if tasks:
        sel = sel[sel["task"].isin(tasks)]
    if families:
        sel = sel[sel["family"].isin(families)]
    compute = float(gmacs) * float(samples_seen)
    rows = []
    for (family, task, metric), group in sel.groupby(["family", "task", "metric"], sort=False):
        row: dict = dict.fromkeys(PREDICT_COLUMNS, float("nan"))
        row.update(family=family, task=task, metric=metric, method=method, gmacs=gmacs,
                   samples_seen=samples_seen, compute=compute, note="")  # fmt: skip
        if method == "followup":
            rows.append(_predict_followup(row, group, compute))
            continue
        x, y = _fit_xy(group, method)
        row["n_fit"] = len(x)
        if len(x) < 2 or np.ptp(x) == 0:
            row["note"] = f"{len(x)} fit point(s) at distinct compute: no line"
            rows.append(row)
            continue
        mean, ci, pi = predict_log(x, y, np.array([math.log10(compute)]))
        row.update(
            error=10 ** mean[0], error_ci_low=10 ** ci[0, 0], error_ci_high=10 ** ci[0, 1],
            error_pi_low=10 ** pi[0, 0], error_pi_high=10 ** pi[0, 1], value=1 - 10 ** mean[0],
        )  # fmt: skip
        notes = []
        if len(x) < MIN_PRED_POINTS:
            notes.append("line through 2 points: no interval")
        lo, hi = 10 ** x.min(), 10 ** x.max()
        if not lo <= compute <= hi:
            notes.append(f"extrapolated {abs(math.log10(compute) - np.clip(math.log10(compute), x.min(), x.max())):.2f} decades")  # fmt: skip
        row["note"] = "; ".join(notes)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(PREDICT_COLUMNS))


def _extrapolated(compute: float, low: float, high: float) -> str:
    """A note saying how far ``compute`` lies outside [low, high], in decades ("" inside)."""
    lc = math.log10(compute)
    beyond = abs(lc - np.clip(lc, math.log10(low), math.log10(high)))
    return f"extrapolated {beyond:.2f} decades" if beyond > 0 else ""


def _predict_followup(row: dict, group: pd.DataFrame, compute: float) -> dict:
    """``row`` filled in from the followup law of ``group`` at ``compute``."""
    fit = followup_fit(group["compute"].to_numpy(float), group["error"].to_numpy(float),
                       n_boot=FOLLOWUP_BOOT)  # fmt: skip
    if isinstance(fit, str):
        return {**row, "n_fit": 0, "note": fit}
    error = float(fit.predict(compute))
    low, high = (float(v[0]) for v in fit.band(compute))
    notes = ["interval: bootstrap of the law (not of a new run)"]
    notes += [n for n in [_extrapolated(compute, fit.x.min(), fit.x.max())] if n]
    return {**row, "error": error, "error_ci_low": low, "error_ci_high": high,
            "error_pi_low": low, "error_pi_high": high, "value": 1 - error,
            "n_fit": len(fit.x), "note": "; ".join(notes)}  # fmt: skip


def holdout(points: pd.DataFrame, methods: Sequence[str] = ("ols", "paper")) -> pd.DataFrame:
    """Fit on the smaller models of each (family, task, metric), predict the larger ones.

    Of n models (by GMACs) the largest max(1, n - 3) are held out: of the paper's five
    OpenCLIP models ViT-H/14 and ViT-g/14, of OpenAI's three ViT-L/14.
    """
    rows = []
    for (family, task, metric), group in points.groupby(["family", "task", "metric"], sort=False):
        gmacs = group.groupby("model_label")["gmacs"].max().sort_values()
        if len(gmacs) < 2:
            continue
        n_out = max(1, len(gmacs) - 3)  # paper: hold out ViT-H/14 and g/14 of 5 models
        big = list(gmacs.index[-n_out:])
        train, test = group[~group["model_label"].isin(big)], group[group["model_label"].isin(big)]
        for method in methods:
            x, y = _fit_xy(train, method)
            if len(x) < 2 or np.ptp(x) == 0:
                continue
            lc, le = log_points(test)
            mean, _, pi = predict_log(x, y, lc)
            for i, (_, run) in enumerate(test.iterrows()):
                pred = 10 ** mean[i]
                rows.append({
                    "family": family, "task": task, "metric": metric, "method": method,
                    "train_models": ", ".join(map(str, gmacs.index[:-n_out])),
                    "heldout_model": run["model_label"],
                    "run_id": run["run_id"], "samples_seen": run["samples_seen"],
                    "compute": run["compute"], "error": run["error"], "predicted": pred,
                    "pi_low": 10 ** pi[i, 0], "pi_high": 10 ** pi[i, 1],
                    "rel_error": (pred - run["error"]) / run["error"],
                    "inside_pi": bool(pi[i, 0] <= le[i] <= pi[i, 1]) if np.isfinite(pi[i]).all() else None,  # fmt: skip
                    "n_fit": len(x),
                })  # fmt: skip
    return pd.DataFrame(rows, columns=list(HOLDOUT_COLUMNS))


def holdout_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean absolute relative error and PI coverage per (family, task, metric, method)."""
    if table.empty:
        return pd.DataFrame()
    keys = ["family", "task", "metric", "method"]
    return (
        table.assign(abs_rel=table["rel_error"].abs(), inside=table["inside_pi"].astype(float))
        .groupby(keys, sort=False)
        .agg(
            heldout=("heldout_model", lambda m: ", ".join(dict.fromkeys(m))),
            n_heldout=("run_id", "size"),
            n_fit=("n_fit", "first"),
            mean_abs_rel_error=("abs_rel", "mean"),
            pi_coverage=("inside", "mean"),
        )  # fmt: skip
        .reset_index()
    )


def interaction_test(
    xa: np.ndarray, ya: np.ndarray, xb: np.ndarray, yb: np.ndarray
) -> dict[str, float]:
    """OLS ``log_e ~ log_c * family`` (a is the baseline): exponents, their difference, p."""
    frame = pd.DataFrame({
        "log_c": np.r_[xa, xb], "log_e": np.r_[ya, yb],
        "family": ["a"] * len(xa) + ["b"] * len(xb),
    })  # fmt: skip
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        res = smf.ols("log_e ~ log_c * C(family)", data=frame).fit()
    term = "log_c:C(family)[T.b]"
    low, high = res.conf_int(1 - LEVEL).loc[term]
    return {
        "alpha_a": float(res.params["log_c"]),
        "alpha_b": float(res.params["log_c"] + res.params[term]),
        "alpha_diff": float(res.params[term]),
        "diff_low": float(low),
        "diff_high": float(high),
        "p_value": float(res.pvalues[term]),
    }


def family_tests(points: pd.DataFrame, methods: Sequence[str] = ("ols", "paper")) -> pd.DataFrame:
    """One ``TEST_COLUMNS`` row per (task, metric, method, pair of families)."""
    rows = []
    for (task, metric), group in points.groupby(["task", "metric"], sort=False):
        families = list(dict.fromkeys(group["family"]))
        for fa, fb in itertools.combinations(families, 2):
            for method in methods:
                xa, ya = _fit_xy(group[group["family"] == fa], method)
                xb, yb = _fit_xy(group[group["family"] == fb], method)
                # 4 parameters: need a spread in compute within each family and a residual
                if min(len(xa), len(xb)) < 2 or min(np.ptp(xa), np.ptp(xb)) == 0:
                    continue
                if len(xa) + len(xb) < 5:
                    continue
                rows.append({
                    "task": task, "metric": metric, "method": method, "family_a": fa,
                    "family_b": fb, "n_a": len(xa), "n_b": len(xb),
                    **interaction_test(xa, ya, xb, yb),
                })  # fmt: skip
    return pd.DataFrame(rows, columns=list(TEST_COLUMNS))


def _sat_log10(log_c: np.ndarray, log_a: float, alpha: float, log_einf: float) -> np.ndarray:
    return np.log10(10 ** (log_a + alpha * log_c) + 10**log_einf)


def saturating_fit(points: pd.DataFrame) -> dict:
    """E = A * C^alpha + E_inf on one (family, task, metric) group, against the power law.

    Returns a ``COMPARISON_COLUMNS`` row; ``note`` says why when no fit was possible.
    """
    x, y = log_points(points)
    row: dict = dict.fromkeys(COMPARISON_COLUMNS, float("nan"))
    row.update(**group_of(points), n_points=len(x), preferred="", note="")
    if len(x) < MIN_SAT_POINTS or np.ptp(x) == 0:
        row["note"] = f"{len(x)} point(s): need >= {MIN_SAT_POINTS} for 3 parameters"
        return row
    power = _ols(x, y)
    # Centre log C so A and alpha are not strongly correlated; start from the power law with
    # a small floor.
    xc = x.mean()
    e_min = float(10 ** y.min())
    p0 = (
        power.params[0] + power.params[1] * xc,
        min(power.params[1], -1e-3),
        math.log10(e_min / 4),
    )
    bounds = ([-10, -10, -12], [10, 0, math.log10(e_min)])
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            params, cov = optimize.curve_fit(
                _sat_log10, x - xc, y, p0=p0, bounds=bounds, maxfev=20000
            )
    except (RuntimeError, ValueError) as e:
        row["note"] = f"saturating fit failed: {e}"
        return row
    log_a, alpha, log_einf = params
    rss_p = float(power.ssr)
    rss_s = float(np.sum((y - _sat_log10(x - xc, *params)) ** 2))
    n = len(x)
    aic = lambda rss, k: n * math.log(max(rss, 1e-300) / n) + 2 * k  # noqa: E731
    bic = lambda rss, k: n * math.log(max(rss, 1e-300) / n) + k * math.log(n)  # noqa: E731
    df_s = n - 3
    F = max(rss_p - rss_s, 0.0) / (rss_s / df_s) if rss_s > 0 else float("inf")
    se = math.sqrt(cov[2, 2]) if np.isfinite(cov[2, 2]) else float("nan")
    half = stats.t.ppf(0.5 + LEVEL / 2, df_s) * se
    if not half < 3:  # an interval wider than 3 decades says only "not determined"
        half = float("nan")
    row.update(
        A=float(10 ** (log_a - alpha * xc)), alpha=float(alpha), E_inf=float(10**log_einf),
        E_inf_low=float(10 ** (log_einf - half)), E_inf_high=float(10 ** (log_einf + half)),
        rss_power=rss_p, rss_saturating=rss_s,
        aic_power=aic(rss_p, 2), aic_saturating=aic(rss_s, 3),
        bic_power=bic(rss_p, 2), bic_saturating=bic(rss_s, 3),
        F=float(F), p_F=float(stats.f.sf(F, 1, df_s)) if np.isfinite(F) else 0.0,
    )  # fmt: skip
    row["preferred"] = "saturating" if row["aic_saturating"] < row["aic_power"] else "power"
    if 10**log_einf < 0.01 * e_min:
        row["note"] = "E_inf ~ 0: no floor visible"
    elif log_einf >= bounds[1][2] - 1e-6:
        row["note"] = "E_inf at the smallest observed error"
    return row


def saturating_all(points: pd.DataFrame) -> pd.DataFrame:
    rows = [
        saturating_fit(group)
        for _, group in points.groupby(["family", "task", "metric"], sort=False)
    ]
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))


def saturating_fit_rows(comparison: pd.DataFrame, fit_columns: Sequence[str]) -> pd.DataFrame:
    """The saturating laws as ``fits.csv`` rows (method ``saturating``)."""
    if comparison.empty:
        return pd.DataFrame(columns=list(fit_columns))
    rows = comparison.assign(
        method="saturating", fit_kind="curve_fit", n_fit=comparison["n_points"]
    )  # fmt: skip
    return rows.reindex(columns=list(fit_columns))


# --- on the follow-up's law -------------------------------------------------------------------


def _fits_by_family(group: pd.DataFrame, n_boot: int) -> dict[str, FollowupFit]:
    fits = {}
    for family, fam in group.groupby("family", sort=False):
        fit = followup_fit(fam["compute"].to_numpy(float), fam["error"].to_numpy(float),
                           n_boot=n_boot)  # fmt: skip
        if not isinstance(fit, str):
            fits[str(family)] = fit
    return fits


def first_crossing(pa: Sequence[float], pb: Sequence[float], low: float, high: float,
                   ) -> tuple[float, int]:  # fmt: skip
    """The smallest compute in [low, high] where law ``pa`` equals law ``pb`` (NaN if none),
    and how many times they cross there."""
    t = np.linspace(math.log10(low), math.log10(high), 400)
    diff = followup_law(10**t, *pa) - followup_law(10**t, *pb)
    signs = np.sign(diff)
    changes = np.flatnonzero(signs[:-1] * signs[1:] < 0)
    if not len(changes):
        return float("nan"), 0
    i = int(changes[0])
    f = lambda v: float(followup_law(10**v, *pa) - followup_law(10**v, *pb))  # noqa: E731
    return float(10 ** optimize.brentq(f, t[i], t[i + 1])), len(changes)


def crossovers(
    points: pd.DataFrame, n_boot: int = FOLLOWUP_BOOT, decades: float = CROSSOVER_DECADES
) -> pd.DataFrame:
    """One ``CROSSOVER_COLUMNS`` row per (task, metric, pair of families with a followup law)."""
    rows = []
    for (task, metric), group in points.groupby(["task", "metric"], sort=False):
        fits = _fits_by_family(group, n_boot)
        for fa, fb in itertools.combinations(fits, 2):
            rows.append(_crossover_row(str(task), str(metric), fa, fb, fits[fa], fits[fb], decades))
    return pd.DataFrame(rows, columns=list(CROSSOVER_COLUMNS))


def _crossover_row(task: str, metric: str, fa: str, fb: str, a: FollowupFit, b: FollowupFit,
                   decades: float) -> dict:  # fmt: skip
    low = min(a.x.min(), b.x.min())
    high = max(a.x.max(), b.x.max()) * 10**decades
    at, n = first_crossing(a.params, b.params, low, high)
    k = min(len(a.boot), len(b.boot))
    boots = np.array([first_crossing(a.boot[i], b.boot[i], low, high)[0] for i in range(k)])
    crossed = boots[np.isfinite(boots)]
    tail = 100 * (1 - LEVEL) / 2
    ci = np.percentile(crossed, [tail, 100 - tail]) if len(crossed) else [np.nan, np.nan]
    lower = lambda c: fa if a.predict(c) < b.predict(c) else fb  # noqa: E731
    below, above = lower(low), lower(high)
    if n:
        note = f"{above} overtakes {below} at C = {at:.3g}"
        if n > 1:
            note += f" (the first of {n} crossings)"
    else:
        note = f"no crossing in [{low:.3g}, {high:.3g}]: {below} stays below"
    return {
        "task": task, "metric": metric, "family_a": fa, "family_b": fb, "crossover": at,
        "crossover_low": float(ci[0]), "crossover_high": float(ci[1]),
        "boot_share": len(crossed) / k if k else float("nan"),
        "error_at_crossover": float(a.predict(at)) if n else float("nan"),
        "lower_below": below, "lower_above": above, "range_low": low, "range_high": high,
        "n_boot": k, "note": note,
    }  # fmt: skip


def followup_holdout(points: pd.DataFrame, cut: float, n_boot: int = FOLLOWUP_BOOT) -> pd.DataFrame:
    """Fit each group's followup law at or below compute ``cut``, predict its frontier above."""
    rows = []
    for (family, task, metric), group in points.groupby(["family", "task", "metric"], sort=False):
        compute = group["compute"].to_numpy(float)
        fit = followup_fit(compute, group["error"].to_numpy(float), n_boot=n_boot, max_compute=cut)
        if isinstance(fit, str):
            continue
        test = group[fit.frontier & (compute > cut)]
        if test.empty:
            continue
        pred = fit.predict(test["compute"])
        low, high = fit.band(test["compute"])
        for i, (_, run) in enumerate(test.iterrows()):
            inside = bool(low[i] <= run["error"] <= high[i]) if np.isfinite(low[i]) else None
            rows.append({
                "family": family, "task": task, "metric": metric, "method": "followup",
                "train_models": f"frontier at C <= {cut:.3g}", "heldout_model": run["model_label"],
                "run_id": run["run_id"], "samples_seen": run["samples_seen"],
                "compute": run["compute"], "error": run["error"], "predicted": pred[i],
                "pi_low": low[i], "pi_high": high[i],
                "rel_error": (pred[i] - run["error"]) / run["error"], "inside_pi": inside,
                "n_fit": len(fit.x),
            })  # fmt: skip
    return pd.DataFrame(rows, columns=list(HOLDOUT_COLUMNS))
