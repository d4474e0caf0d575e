"""Power-law fits E = A * C^alpha of downstream error E against training compute C.

Two methods linear in log10-log10 space (alpha is the slope, A = 10**intercept), and the 2025
follow-up's saturating law on a Pareto frontier:

``paper``
    The paper's method (Cherti et al. 2022, ``figures.ipynb`` of LAION-AI/scaling-laws-openclip):
    split [min, max + 0.1] of log10 C into 5 equal-width bins, take the minimum log10 E of each
    non-empty bin at the bin's centre (the lower envelope: the best model at that compute), and
    fit a least-squares line through those points. The paper bins its 29 OpenCLIP runs but fits
    the 3 OpenAI CLIP models with a plain least-squares line; we bin any family with at least
    ``MIN_BINNED_POINTS`` points and fit the others plainly (``fit_kind`` says which).
    ``alpha_low``/``alpha_high`` are the 95 % t-interval of the slope of that final regression,
    i.e. over the (at most 5) bin points: a statement about the line through the envelope, not
    about sampling noise in the runs.
``ols``
    statsmodels OLS of log10 E on log10 C over every point, with its 95 % intervals for alpha
    and for A (from the intercept's interval).

For both, ``boot_alpha_low``/``boot_alpha_high`` is a percentile bootstrap (runs resampled
with replacement, the whole method re-run on each resample); NaN below 4 points.

``followup``
    The method of "Scaling Laws for Robust Comparison of Open Foundation Language-Vision Models
    and Datasets" (Nezhurina et al. 2025, LAION-AI/scaling-laws-for-comparison): the Pareto
    frontier of the runs by ``pareto_bin`` (the best run of each geometric compute bin, kept
    only if it beats every cheaper bin's best), then E = a * (C + b)^c + d fitted to the
    frontier by least squares in E (scipy's bounded ``least_squares``, as their ``curve_fit``;
    a, b, d >= 0, c <= 0; several starts, the best kept). In ``fits.csv``: ``A`` = a, ``alpha`` = c, ``E_inf`` = d, b in ``note``;
    ``alpha_low``/``alpha_high`` (and ``boot_alpha_*``) and ``A_low``/``A_high`` are percentile
    intervals over a bootstrap of the frontier points (resampled, refitted; at most
    ``FOLLOWUP_BOOT`` refits), as theirs. Needs
    ``FOLLOWUP_MIN_POINTS`` frontier points (4 parameters). ``FollowupFit`` keeps every
    bootstrap fit, for prediction intervals and the family crossovers of ``analysis.extend``.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import optimize

NBINS = 5
EPS = 0.1
MIN_BINNED_POINTS = 6
MIN_BOOT_POINTS = 4
METHODS = ("paper", "ols")
"""What ``fit_all`` runs unless told: the paper's method and plain OLS."""
FIT_METHODS = ("paper", "ols", "followup")
"""Every method ``fit_one`` knows (the saturating law lives in ``analysis.extend``)."""
LEVEL = 0.95
FOLLOWUP_MIN_POINTS = 5
PARETO_FLOP_UNIT = 1500.0
"""``pareto_bin``'s default bin count is log2(C_max / this), as the follow-up's (its C is in
GFLOPs); never fewer than ``PARETO_MIN_BINS``."""
PARETO_MIN_BINS = 8

RETRIEVAL_METRICS = ("image_retrieval_recall@5", "text_retrieval_recall@5")
POINT_COLUMNS = (
    "family",
    "task",
    "eval_task",
    "downstream_dataset",
    "metric",
    "value",
    "error",
    "compute",
    "gmacs",
    "samples_seen",
    "samples_seen_pretty",
    "arch",
    "model_label",
    "data_label",
    "run_id",
    "source",
)
FIT_COLUMNS = (
    "family",
    "task",
    "eval_task",
    "metric",
    "method",
    "fit_kind",
    "A",
    "alpha",
    "alpha_low",
    "alpha_high",
    "A_low",
    "A_high",
    "boot_alpha_low",
    "boot_alpha_high",
    "n_points",
    "n_fit",
    "r2",
    "compute_min",
    "compute_max",
    "E_inf",
    "note",
)


GROUP_KEYS = ("family", "task", "eval_task", "metric")
"""What one fit is of: a family's error on one target (task, eval_task) and metric."""


def group_of(points: pd.DataFrame) -> dict[str, Any]:
    """The ``GROUP_KEYS`` values of a group of points (their first row's; None if empty)."""
    first = points.iloc[0] if len(points) else {}
    return {key: first.get(key) for key in GROUP_KEYS}


def log_points(points: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """log10 C and log10 E of ``points``: the space every fit is linear in."""
    return (
        np.log10(points["compute"].to_numpy(float)),
        np.log10(points["error"].to_numpy(float)),
    )


def task_name(dataset: str, eval_task: str) -> str:
    """Fit/plot target: the dataset for zero-shot tasks, ``linear_probe/<dataset>`` otherwise."""
    return dataset if str(eval_task).startswith("zeroshot") else f"{eval_task}/{dataset}"


def metrics_for(eval_task: str, rows: pd.DataFrame) -> list[str]:
    """Accuracy-like metrics whose complement is the error to fit."""
    if eval_task == "zeroshot_retrieval":
        return list(RETRIEVAL_METRICS)
    if rows["acc1"].isna().all() and rows["mean_average_precision"].notna().any():
        return ["mean_average_precision"]  # multi-label sets (voc2007_multilabel), as the paper
    return ["acc1"]


def error_points(
    df: pd.DataFrame, tasks: Sequence[str] | None = None, final_only: bool = True
) -> tuple[pd.DataFrame, list[str]]:
    """Long frame of (family, task, metric, compute, error) over the final rows of ``df``.

    ``tasks`` selects downstream datasets (or ``linear_probe/<dataset>`` targets); ``None``
    keeps all. Rows whose metric or compute is missing, or whose error is not positive, are
    dropped with a message naming family, task and metric. ``final_only=False`` keeps the
    intermediate evaluations too (with a ``step`` column), for learning curves.
    """
    problems: list[str] = []
    final = df[df["final"]] if final_only else df
    if final.empty:
        what = "no final results to fit" if final_only else "no results"
        return pd.DataFrame(columns=list(POINT_COLUMNS)), [what]
    final = final.assign(
        _target=[
            task_name(d, t) for d, t in zip(final["downstream_dataset"], final["task"], strict=True)
        ]
    )
    if tasks is not None:
        wanted = list(dict.fromkeys(tasks))
        present = set(final["_target"]) | set(final["downstream_dataset"])
        for t in wanted:
            if t not in present:
                problems.append(f"task {t}: no final results in the selected source(s)")
        final = final[final["_target"].isin(wanted) | final["downstream_dataset"].isin(wanted)]
    parts = []
    for (target, eval_task), rows in final.groupby(["_target", "task"], sort=False):
        for metric in metrics_for(str(eval_task), rows):
            part, probs = _points_for(rows, str(target), str(eval_task), metric)
            parts.append(part)
            problems += probs
    if not parts:
        return pd.DataFrame(columns=list(POINT_COLUMNS)), problems
    points = pd.concat(parts, ignore_index=True)
    columns = list(POINT_COLUMNS) if final_only else [*POINT_COLUMNS, "step", "final"]
    return points[columns], problems


def _points_for(
    rows: pd.DataFrame, target: str, eval_task: str, metric: str
) -> tuple[pd.DataFrame, list[str]]:
    part = pd.DataFrame(
        {
            "family": rows["family"],
            "task": target,
            "eval_task": eval_task,
            "downstream_dataset": rows["downstream_dataset"],
            "metric": metric,
            "value": rows[metric],
            "error": 1.0 - rows[metric],
            "compute": rows["gmacs_total"],
            "gmacs": rows["gmacs"],
            "samples_seen": rows["samples_seen"],
            "samples_seen_pretty": rows["samples_seen_pretty"],
            "arch": rows["arch"],
            "model_label": rows["model_label"],
            "data_label": rows["data_label"],
            "run_id": rows["run_id"],
            "source": rows["source"],
            "step": rows["step"],
            "final": rows["final"],
        }
    )
    problems = []
    for family, fam in part.groupby("family", sort=False):
        where = f"family {family}, task {target}, metric {metric}"
        n_nan = int(fam["value"].isna().sum())
        if n_nan:
            problems.append(f"{where}: {n_nan} of {len(fam)} results lack the metric; dropped")
        n_comp = int((fam["value"].notna() & ~(fam["compute"] > 0)).sum())
        if n_comp:
            problems.append(f"{where}: {n_comp} results lack gmacs/samples_seen; dropped")
        checkable = fam["value"].notna() & (fam["compute"] > 0)
        n_range = int((checkable & ~fam["value"].between(0, 1)).sum())
        if n_range:
            problems.append(f"{where}: {n_range} results outside [0, 1] (percent?); dropped")
        n_zero = int((checkable & (fam["value"] == 1)).sum())
        if n_zero:
            problems.append(f"{where}: {n_zero} results have error 0 (no log); dropped")
    keep = part["value"].between(0, 1, inclusive="left") & (part["compute"] > 0)
    keep &= np.isfinite(part["compute"])
    return part[keep], problems


@dataclass
class Line:
    """A line log10 E = intercept + alpha * log10 C, with what it was fit on."""

    alpha: float
    intercept: float
    x: np.ndarray  # log10 C of the points the final regression saw
    y: np.ndarray  # log10 E of those points
    fit_kind: str  # "binned" or "lstsq"

    @property
    def A(self) -> float:
        return float(10**self.intercept)


def binned_points(x: np.ndarray, y: np.ndarray, nbins: int = NBINS, eps: float = EPS):
    """Lower envelope: (bin centre, min y in bin) for each non-empty bin of [min x, max x + eps]."""
    edges = np.linspace(x.min(), x.max() + eps, nbins + 1)
    which = np.digitize(x, edges)  # 1..nbins, edges[i-1] <= x < edges[i]
    centres, mins = [], []
    for i in range(1, nbins + 1):
        inside = which == i
        if inside.any():
            centres.append((edges[i - 1] + edges[i]) / 2)
            mins.append(y[inside].min())
    return np.asarray(centres), np.asarray(mins)


def _lstsq(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept)


def paper_line(log_c: np.ndarray, log_e: np.ndarray) -> Line:
    """The paper's fit: binned lower envelope for big families, plain least squares for small."""
    if len(log_c) >= MIN_BINNED_POINTS:
        bx, by = binned_points(log_c, log_e)
        if len(bx) >= 2:
            return Line(*_lstsq(bx, by), bx, by, "binned")
    return Line(*_lstsq(log_c, log_e), log_c, log_e, "lstsq")


def ols_line(log_c: np.ndarray, log_e: np.ndarray) -> Line:
    return Line(*_lstsq(log_c, log_e), log_c, log_e, "lstsq")


_LINES = {"paper": paper_line, "ols": ols_line}


def _intervals(line: Line) -> dict[str, float]:
    """95 % t-intervals of slope and A from an OLS on the points the line was fit on."""
    nan = float("nan")
    out = {"alpha_low": nan, "alpha_high": nan, "A_low": nan, "A_high": nan, "r2": nan}
    if len(line.x) < 3:
        return out
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        res = sm.OLS(line.y, sm.add_constant(line.x)).fit()
        ci = np.asarray(res.conf_int(0.05))
    out.update(
        alpha_low=float(ci[1, 0]),
        alpha_high=float(ci[1, 1]),
        A_low=float(10 ** ci[0, 0]),
        A_high=float(10 ** ci[0, 1]),
        r2=float(res.rsquared),
    )
    return out


def _bootstrap(
    log_c: np.ndarray, log_e: np.ndarray, method: str, n_boot: int, seed: int
) -> tuple[float, float]:
    if n_boot <= 0 or len(log_c) < MIN_BOOT_POINTS:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    alphas = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(log_c), len(log_c))
        if np.ptp(log_c[idx]) == 0:
            continue  # one compute value: no slope
        alphas.append(_LINES[method](log_c[idx], log_e[idx]).alpha)
    if len(alphas) < n_boot // 2:
        return float("nan"), float("nan")
    low, high = np.percentile(alphas, [2.5, 97.5])
    return float(low), float(high)


def fit_one(points: pd.DataFrame, method: str, n_boot: int = 1000, seed: int = 0) -> dict:
    """Fit ``E = A * C^alpha`` to one (family, task, metric) group with ``method``.

    Returns a ``FIT_COLUMNS`` row; ``A``/``alpha`` are NaN and ``note`` says why when the
    group cannot be fit (fewer than 2 points, or a single compute value).
    """
    if method not in FIT_METHODS:
        raise ValueError(f"unknown method {method!r}: expected one of {FIT_METHODS}")
    if method == "followup":
        return followup_row(points, n_boot=n_boot, seed=seed)
    log_c, log_e = log_points(points)
    row: dict = {c: float("nan") for c in FIT_COLUMNS}
    row.update(
        **group_of(points),
        method=method,
        fit_kind="",
        n_points=len(points),
        n_fit=0,
        note="",
    )
    if len(points) < 2 or np.ptp(log_c) == 0:
        row["note"] = (
            f"{len(points)} point(s)" if len(points) < 2 else "all points at one compute"
        ) + ": need >= 2 distinct compute values; no fit"
        return row
    line = _LINES[method](log_c, log_e)
    boot_low, boot_high = _bootstrap(log_c, log_e, method, n_boot, seed)
    row.update(
        fit_kind=line.fit_kind,
        A=line.A,
        alpha=line.alpha,
        n_fit=len(line.x),
        compute_min=float(10 ** log_c.min()),
        compute_max=float(10 ** log_c.max()),
        boot_alpha_low=boot_low,
        boot_alpha_high=boot_high,
        **_intervals(line),
    )
    if len(line.x) < 3:
        row["note"] = f"line through {len(line.x)} points: no confidence interval"
    elif method == "paper" and line.fit_kind == "lstsq":
        row["note"] = f"{len(points)} < {MIN_BINNED_POINTS} points: plain least squares, no binning"
    return row


def fit_all(
    points: pd.DataFrame, methods: Sequence[str] = METHODS, n_boot: int = 1000, seed: int = 0
) -> tuple[pd.DataFrame, list[str]]:
    """One ``FIT_COLUMNS`` row per (family, task, eval_task, metric, method), plus messages."""
    rows, problems = [], []
    for _, group in points.groupby(list(GROUP_KEYS), sort=False):
        failed: dict[str, list[str]] = {}
        for method in methods:
            row = fit_one(group, method, n_boot=n_boot, seed=seed)
            rows.append(row)
            if np.isnan(row["alpha"]):
                failed.setdefault(row["note"], []).append(method)
        first = group.iloc[0]
        for note, which in failed.items():
            problems.append(
                f"family {first['family']}, task {first['task']}, metric {first['metric']} "
                f"({', '.join(which)}): {note}"
            )
    fits = pd.DataFrame(rows, columns=list(FIT_COLUMNS))
    return fits, problems


# --- the follow-up's method: E = a * (C + b)^c + d on a Pareto frontier ----------------------


def pareto_bin(compute: np.ndarray, error: np.ndarray, num_bins: int | None = None) -> np.ndarray:
    """Mask of the Pareto-frontier points, binned as the follow-up does: ``num_bins`` geometric
    bin edges from min to max compute, the lowest error of each bin in order of compute, kept
    only when below every kept one before it; the largest-compute point joins when it is lower
    still (the last bin is half-open, as theirs)."""
    c, e = np.asarray(compute, float), np.asarray(error, float)
    if len(c) == 0:
        return np.zeros(0, bool)
    if num_bins is None:
        rule = int(math.log2(c.max() / PARETO_FLOP_UNIT)) if c.max() > PARETO_FLOP_UNIT else 0
        num_bins = max(rule, PARETO_MIN_BINS)
    edges = np.geomspace(c.min(), c.max(), num_bins) if c.max() > c.min() else np.array([c.min()])
    kept: list[int] = []
    best = math.inf
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = np.flatnonzero((c >= lo) & (c < hi))
        if inside.size:
            i = int(inside[np.argmin(e[inside])])
            if not kept or e[i] < best:
                kept.append(i)
                best = e[i]
    top = int(np.argmax(c))
    if not kept or e[top] < best:
        kept.append(top)
    mask = np.zeros(len(c), bool)
    mask[kept] = True
    return mask


def followup_law(c: np.ndarray, a: float, b: float, exponent: float, d: float) -> np.ndarray:
    """E = a * (C + b)^exponent + d."""
    return a * np.power(c + b, exponent) + d


_LOWER, _UPPER = np.array([0.0, 0.0, -np.inf, 0.0]), np.array([np.inf, np.inf, 0.0, np.inf])
_INSIDE = (np.array([1e-12, 1e-12, -50.0, 1e-12]), np.array([1e12, 1e12, -1e-9, 1e12]))
FOLLOWUP_BOOT = 200
"""At most this many bootstrap refits per followup fit (the follow-up's own default is 100)."""


def _residuals(p: np.ndarray, u: np.ndarray, y: np.ndarray) -> np.ndarray:
    return followup_law(u, *p) - y


def _jacobian(p: np.ndarray, u: np.ndarray, y: np.ndarray) -> np.ndarray:
    base = u + p[1]  # >= 1: u >= 1 and b >= 0
    g = np.power(base, p[2])
    return np.column_stack([g, p[0] * p[2] * g / base, p[0] * g * np.log(base), np.ones_like(u)])


def _least_squares(
    u: np.ndarray, y: np.ndarray, starts: Sequence[Sequence[float]], max_nfev: int = 1000
) -> np.ndarray | None:
    """The best least-squares fit of the law to (u, y) over ``starts`` (scipy's bounded
    ``least_squares``, which ``curve_fit`` calls, given the analytic Jacobian), or None."""
    best, best_sse = None, math.inf
    for p0 in starts:
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                res = optimize.least_squares(
                    _residuals, np.clip(p0, *_INSIDE), jac=_jacobian, bounds=(_LOWER, _UPPER),
                    args=(u, y), method="trf", x_scale="jac", max_nfev=max_nfev,
                )  # fmt: skip
        except (ValueError, FloatingPointError, np.linalg.LinAlgError):
            continue
        sse = 2 * float(res.cost)
        if res.status >= 0 and math.isfinite(sse) and sse < best_sse:
            best, best_sse = res.x, sse
    return best


def _starts(u: np.ndarray, y: np.ndarray) -> list[list[float]]:
    """A small grid of starting points: exponent, floor and offset, a through the first point."""
    first = float(y[np.argmin(u)])
    out = []
    for exponent in (-0.05, -0.15, -0.3, -0.6):
        for d in (1e-6, 0.5 * float(y.min())):
            for b in (1e-6, 1.0):
                a = max((first - d) / (u.min() + b) ** exponent, 1e-9)
                out.append([a, b, exponent, d])
    return out


@dataclass(frozen=True)
class FollowupFit:
    """E = a * (C + b)^c + d fitted to ``x``/``y`` (the frontier points it was fit on, C in the
    data's units), with the bootstrap fits ``boot`` (rows a, b, c, d); ``frontier`` masks the
    input points on the Pareto frontier (those above a compute cut included)."""

    a: float
    b: float
    c: float
    d: float
    x: np.ndarray
    y: np.ndarray
    frontier: np.ndarray
    boot: np.ndarray

    @property
    def params(self) -> tuple[float, float, float, float]:
        return self.a, self.b, self.c, self.d

    def predict(self, compute: Any) -> np.ndarray:
        return followup_law(np.asarray(compute, float), *self.params)

    def band(self, compute: Any, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
        """Percentile interval of the bootstrap laws at ``compute`` (NaN without a bootstrap)."""
        compute = np.atleast_1d(np.asarray(compute, float))
        if len(self.boot) == 0:
            nan = np.full(len(compute), np.nan)
            return nan, nan
        preds = np.array([followup_law(compute, *p) for p in self.boot])
        tail = 100 * (1 - level) / 2
        return np.percentile(preds, tail, axis=0), np.percentile(preds, 100 - tail, axis=0)

    def interval(self, which: int, level: float = LEVEL) -> tuple[float, float]:
        """Percentile interval of parameter ``which`` (0 a, 1 b, 2 c, 3 d) over the bootstrap."""
        if len(self.boot) == 0:
            return float("nan"), float("nan")
        tail = 100 * (1 - level) / 2
        low, high = np.percentile(self.boot[:, which], [tail, 100 - tail])
        return float(low), float(high)

    @property
    def r2(self) -> float:
        resid = float(np.sum((self.predict(self.x) - self.y) ** 2))
        total = float(np.sum((self.y - self.y.mean()) ** 2))
        return 1 - resid / total if total > 0 else float("nan")


def followup_fit(
    compute: np.ndarray, error: np.ndarray, n_boot: int = 1000, seed: int = 0,
    max_compute: float | None = None,
) -> FollowupFit | str:  # fmt: skip
    """The follow-up's fit on the Pareto frontier of (``compute``, ``error``), or why not.

    ``max_compute``: fit only the frontier points at or below it (the held-out check predicts
    the others). Pure and cached: the report, the crossovers and predictions share fits.
    """
    c, e = np.asarray(compute, float), np.asarray(error, float)
    return _followup_cached(c.tobytes(), e.tobytes(), int(n_boot), int(seed),
                            None if max_compute is None else float(max_compute))  # fmt: skip


@functools.lru_cache(maxsize=512)
def _followup_cached(
    c_bytes: bytes, e_bytes: bytes, n_boot: int, seed: int, max_compute: float | None
) -> FollowupFit | str:
    c, e = np.frombuffer(c_bytes), np.frombuffer(e_bytes)
    ok = np.isfinite(c) & np.isfinite(e) & (c > 0)
    frontier = pareto_bin(c[ok], e[ok])
    mask = np.zeros(len(c), bool)
    mask[np.flatnonzero(ok)[frontier]] = True
    fit_on = mask & (c <= max_compute) if max_compute is not None else mask
    x, y = c[fit_on], e[fit_on]
    if len(np.unique(x)) < FOLLOWUP_MIN_POINTS:
        below = f" at or below C = {max_compute:.3g}" if max_compute is not None else ""
        return (f"{len(np.unique(x))} Pareto-frontier point(s){below}: need >= "
                f"{FOLLOWUP_MIN_POINTS} for 4 parameters; no fit")  # fmt: skip
    scale = float(x.min())  # C in units of the smallest frontier compute: a well-scaled problem
    u = x / scale
    best = _least_squares(u, y, _starts(u, y))
    if best is None:
        return "least squares found no solution"
    boot = []
    rng = np.random.default_rng(seed)
    n_boot = min(max(n_boot, 0), FOLLOWUP_BOOT)
    for _ in range(n_boot):
        idx = rng.integers(0, len(u), len(u))
        if len(np.unique(u[idx])) < 4:
            continue  # as many parameters as distinct points: no fit
        # from the full fit; a resample's duplicates leave b flat, so c settles long before it
        params = _least_squares(u[idx], y[idx], [list(best)], max_nfev=100)
        if params is not None:
            boot.append(params)
    if len(boot) < n_boot // 2:
        boot = []
    def to_data_units(p: np.ndarray) -> np.ndarray:  # a (u + b')^c = a s^-c (C + b' s)^c
        return np.array([p[0] * scale ** (-p[2]), p[1] * scale, p[2], p[3]])

    a, b, exponent, d = to_data_units(best)
    boots = np.array([to_data_units(p) for p in boot]) if boot else np.zeros((0, 4))
    return FollowupFit(float(a), float(b), float(exponent), float(d), x, y, mask, boots)


def followup_row(points: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict:
    """The follow-up's fit of one (family, task, metric) group as a ``FIT_COLUMNS`` row."""
    row: dict = {c: float("nan") for c in FIT_COLUMNS}
    row.update(**group_of(points), method="followup", fit_kind="", n_points=len(points),
               n_fit=0, note="")  # fmt: skip
    compute = points["compute"].to_numpy(float)
    fit = followup_fit(compute, points["error"].to_numpy(float), n_boot=n_boot, seed=seed)
    if isinstance(fit, str):
        row["note"] = fit
        return row
    c_low, c_high = fit.interval(2)
    a_low, a_high = fit.interval(0)
    notes = [f"E = a (C + b)^c + d, b = {fit.b:.3g}"]
    if len(fit.boot) == 0 and n_boot > 0:
        notes.append("bootstrap refits failed: no interval")
    if fit.c > -1e-3:
        notes.append("c ~ 0: the frontier is flat")
    row.update(
        fit_kind="pareto_bin", A=fit.a, alpha=fit.c, alpha_low=c_low, alpha_high=c_high,
        A_low=a_low, A_high=a_high, boot_alpha_low=c_low, boot_alpha_high=c_high,
        n_fit=len(fit.x), r2=fit.r2, compute_min=float(compute.min()),
        compute_max=float(compute.max()), E_inf=fit.d, note="; ".join(notes),
    )  # fmt: skip
    return row
