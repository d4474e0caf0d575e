"""The analysis stage end to end: results frame -> points, fits, tables, figures, summary.

Outputs in ``out`` (all written atomically):

``points.csv``        the (family, task, metric, compute, error) points the fits used
``fits.csv``          one row per (family, task, eval_task, metric, method); see ``analysis.fit``
``table_<task>.csv``  model x data x samples seen -> metric values (fractions), one row per run
``table_<task>.md``   the same in percent, like the paper's tables
``scaling_<task>.{png,svg}``     error vs compute with the fitted laws (the paper's Figure 1)
``bottleneck_<task>.{png,svg}``  error vs samples seen per model, a line per data size
``summary.txt``       what is printed: exponents with intervals, problems, paths
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.fit import error_points, fit_all
from analysis.load import size_of
from analysis.plots import all_figures, slug
from training.io import atomic_write_text

FAMILY_ORDER = {"openclip": 0, "openai": 1}


@dataclass
class Report:
    """What one analysis run produced and what it could not do."""

    points: pd.DataFrame
    fits: pd.DataFrame
    written: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = ["scaling-law exponents (E = A * C^alpha; C in GMACs, E = 1 - metric):"]
        lines += [_fit_line(r) for r in self.fits.itertuples()] or ["  (no fits)"]
        if self.problems:
            lines.append("problems:")
            lines += [f"  - {p}" for p in self.problems]
        lines.append("written:" if self.written else "nothing written")
        lines += [f"  {p}" for p in self.written]
        return "\n".join(lines)


def _fmt(v: float, spec: str = ".3f") -> str:
    return "nan" if v is None or not math.isfinite(v) else format(v, spec)


def _fit_line(r) -> str:
    head = f"  {r.task:<20} {r.metric:<25} {r.family:<10} {r.method:<5}"
    if not math.isfinite(r.alpha):
        return f"{head} no fit: {r.note}"
    ci = f"[{_fmt(r.alpha_low)}, {_fmt(r.alpha_high)}]"
    boot = f"[{_fmt(r.boot_alpha_low)}, {_fmt(r.boot_alpha_high)}]"
    kind = f"{r.n_fit} bins of {r.n_points}" if r.fit_kind == "binned" else f"{r.n_points} pts"
    return f"{head} alpha={r.alpha:+.3f} 95%CI {ci} boot {boot} A={r.A:.3g} ({kind})"


def order_rows(frame: pd.DataFrame, tasks: Sequence[str], by: Sequence[str]) -> pd.DataFrame:
    """Rows in task-selection order, then metric, paper families first, then by ``by``."""
    if frame.empty:
        return frame
    rank = {t: i for i, t in enumerate(tasks)}
    keyed = frame.assign(
        _t=frame["task"].map(lambda t: rank.get(t, len(rank))),
        _f=frame["family"].map(lambda f: FAMILY_ORDER.get(f, 2)),
    )
    keys = ["_t", "task", "metric", "_f", "family", *by]
    return keyed.sort_values(keys, kind="stable").drop(columns=["_t", "_f"])


def task_table(points: pd.DataFrame, task: str) -> pd.DataFrame:
    """Model x data x samples seen -> metric values (one column per metric), one row per run."""
    sub = points[points["task"] == task]
    index = ["family", "model_label", "data_label", "samples_seen_pretty", "samples_seen",
             "compute", "run_id"]  # fmt: skip
    labels = ["family", "model_label", "data_label", "samples_seen_pretty", "run_id"]
    sub = sub.fillna({c: "?" for c in labels})  # pivot_table drops rows with a NaN key
    table = sub.pivot_table(index=index, columns="metric", values="value", aggfunc="max")
    table = table.reset_index()
    table.columns.name = None
    gmacs = sub.groupby("model_label")["gmacs"].max()
    table = table.assign(
        _f=table["family"].map(lambda f: FAMILY_ORDER.get(f, 2)),
        _m=table["model_label"].map(gmacs),
        _s=table["samples_seen_pretty"].map(size_of),  # "3B" runs saw 2.4e9 to 2.6e9 pairs
        _d=table["data_label"].map(size_of),
    ).sort_values(["_f", "family", "_m", "model_label", "_s", "_d", "data_label", "samples_seen"])
    return table.drop(columns=["_f", "_m", "_s", "_d"]).reset_index(drop=True)


def markdown(table: pd.DataFrame, metrics: Sequence[str]) -> str:
    """``table`` as a GitHub markdown table, metrics in percent."""
    shown = table.drop(columns=["run_id", "samples_seen"]).rename(
        columns={
            "model_label": "model",
            "data_label": "data",
            "samples_seen_pretty": "samples seen",
            "compute": "compute (GMACs)",
        }  # fmt: skip
    )
    cells = []
    for _, row in shown.iterrows():
        out = []
        for col, v in row.items():
            if col in metrics:
                out.append("" if pd.isna(v) else f"{100 * v:.1f}")
            elif col == "compute (GMACs)":
                out.append(f"{v:.3g}")
            else:
                out.append(str(v))
        cells.append(out)
    header = [f"{c} (%)" if c in metrics else str(c) for c in shown.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(lines) + "\n"


def analyze(
    df: pd.DataFrame,
    out: str | Path,
    tasks: Sequence[str] | None = None,
    n_boot: int = 1000,
    plots: bool = True,
) -> Report:
    """Fit and plot the final rows of ``df`` into ``out``; never raises on bad data.

    ``tasks`` selects targets (``None``: every one in ``df``). Problems (missing metrics,
    single points, empty tasks) are collected in ``Report.problems``; whatever can still be
    made is written.
    """
    out = Path(out)
    points, problems = error_points(df, tasks)
    order = list(tasks) if tasks is not None else list(dict.fromkeys(points["task"]))
    if points.empty:
        problems.append(
            "no usable points (final results with a metric and compute): nothing to fit"
        )
        return Report(points, pd.DataFrame(), [], problems)
    points = order_rows(points, order, ["compute"]).reset_index(drop=True)
    fits, fit_problems = fit_all(points, n_boot=n_boot)
    fits = order_rows(fits, order, ["method"]).reset_index(drop=True)
    problems += fit_problems
    written = [
        atomic_write_text(out / "points.csv", points.to_csv(index=False)),
        atomic_write_text(out / "fits.csv", fits.to_csv(index=False)),
    ]
    present = list(dict.fromkeys(points["task"]))
    for task in present:
        table = task_table(points, task)
        metrics = list(dict.fromkeys(points.loc[points["task"] == task, "metric"]))
        written.append(
            atomic_write_text(out / f"table_{slug(task)}.csv", table.to_csv(index=False))
        )
        written.append(atomic_write_text(out / f"table_{slug(task)}.md", markdown(table, metrics)))
    if plots:
        paths, plot_problems = all_figures(points, fits, out, present)
        written += paths
        problems += plot_problems
    report = Report(points, fits, written, problems)
    summary_path = out / "summary.txt"
    report.written.append(summary_path)
    atomic_write_text(summary_path, report.summary() + "\n")
    return report
