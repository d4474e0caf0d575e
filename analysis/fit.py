"""Power-law fits E = A * C^alpha of downstream error E against training compute C.

Two methods, both linear in log10-log10 space (alpha is the slope, A = 10**intercept):

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
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import statsmodels.api as sm

NBINS = 5
EPS = 0.1
MIN_BINNED_POINTS = 6
MIN_BOOT_POINTS = 4
METHODS = ("paper", "ols")

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
    if method not in _LINES:
        raise ValueError(f"unknown method {method!r}: expected one of {METHODS}")
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
