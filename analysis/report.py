"""The analysis stage end to end: results frame -> points, fits, tables, figures, summary.

Outputs in ``out`` (all written atomically):

``points.csv``        the (family, task, metric, compute, error) points the fits used
``fits.csv``          one row per (family, task, eval_task, metric, method); see ``analysis.fit``
``table_<task>.csv``  model x data x samples seen -> metric values (fractions), one row per run
``table_<task>.md``   the same in percent, like the paper's tables
``scaling_<task>.{png,svg}``     error vs compute with the fitted laws (the paper's Figure 1)
``bottleneck_<task>.{png,svg}``  error vs samples seen per model, a line per data size
``learning_<task>.{png,svg}``    error vs samples seen over each run's evaluated checkpoints
``family_tests.csv``  do two families' exponents differ? (interaction p-values)
``saturating.csv``    E = A C^alpha + E_inf against the power law (AIC, BIC, F-test); the laws
                      are also in ``fits.csv`` as method ``saturating``
``holdout.csv``       fit on all but the largest model, predict it: one row per held-out run
                      (with ``holdout_above``: also the followup law fit below that compute,
                      predicting the frontier above it, method ``followup``)
``crossovers.csv``    with method ``followup`` and >= 2 families: where their laws cross
``predictions.csv``   E at the requested (GMACs, samples seen), with 95 % prediction intervals
``report.html``       all of the above in one self-contained page (figures embedded)
``summary.txt``       every fit, test and held-out check, problems, paths (``Report.summary``);
                      what is printed is shorter (``Report.brief``): the headline exponents
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import extend
from analysis.design import joint_section
from analysis.fit import FIT_COLUMNS, FIT_METHODS, FOLLOWUP_BOOT, METHODS, error_points, fit_all
from analysis.html import render
from analysis.load import size_of
from analysis.plots import all_figures, slug
from core.atomic import atomic_write_text

FAMILY_ORDER = {"openclip": 0, "openai": 1}
HEADLINE_METHODS = ("paper", "followup")
"""The methods whose exponents the printed summary shows (the others are in summary.txt)."""
BRIEF_LINES = 20


@dataclass
class Report:
    """What one analysis run produced and what it could not do."""

    points: pd.DataFrame
    fits: pd.DataFrame
    written: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    extras: dict[str, pd.DataFrame] = field(default_factory=dict)

    def summary(self) -> str:
        lines = ["scaling-law exponents (E = A * C^alpha; C in GMACs, E = 1 - metric):"]
        lines += [_fit_line(r) for r in self.fits.itertuples()] or ["  (no fits)"]
        lines += self._section(
            "family_tests", "do the families' exponents differ? (OLS log_e ~ log_c * family)",
            _test_line,
        )
        lines += self._section(
            "holdout_summary", "held-out check (fit on the smaller models, predict the larger):",
            _holdout_line,
        )
        lines += self._section(
            "predictions", "predictions (95% prediction interval of the error):", _pred_line
        )
        lines += self._section("crossovers", CROSSOVER_TITLE, _crossover_line)
        lines += self._section("joint_summary", JOINT_TITLE, _joint_line)
        if self.problems:
            lines.append("problems:")
            lines += [f"  - {p}" for p in self.problems]
        lines += _written_lines(self.written)
        return "\n".join(lines)

    def brief(self, limit: int = BRIEF_LINES) -> str:
        """What is printed: the headline exponents (the paper's method, and the follow-up's
        when it ran) with their intervals, the first of each further table, every problem, and
        where the report is; ``summary`` (summary.txt) has every line."""
        fits = self.fits
        shown = [m for m in HEADLINE_METHODS if not fits.empty and (fits["method"] == m).any()]
        if not shown and not fits.empty:
            shown = [str(fits["method"].iloc[0])]
        head = fits[fits["method"].isin(shown)] if shown else fits
        which = f"{', '.join(shown)} method; " if shown else ""
        lines = [f"scaling-law exponents ({which}E = A * C^alpha, C = compute, E = 1 - metric; "
                 "95% intervals):"]  # fmt: skip
        lines += _capped([_fit_line(r) for r in head.itertuples()], limit, "fits in fits.csv")
        if head.empty:
            lines.append("  (no fits)")
        if len(fits) > len(head):
            lines.append(f"  ({len(fits) - len(head)} fits of other methods in fits.csv)")
        tests = self.extras.get("family_tests")
        if tests is not None and not tests.empty:
            paper = tests[tests["method"] == "paper"] if (tests["method"] == "paper").any() else tests
            lines.append(f"do the families' exponents differ? ({paper['method'].iloc[0]} method)")
            lines += _capped([_test_line(r) for r in paper.itertuples()], limit // 2, "in family_tests.csv")
        held = self.extras.get("holdout_summary")
        if held is not None and not held.empty:
            keep = held[held["method"].isin(HEADLINE_METHODS)]
            keep = keep if not keep.empty else held
            lines.append("held-out check (fit on the smaller models, predict the larger):")
            lines += _capped([_holdout_line(r) for r in keep.itertuples()], limit // 2, "in holdout.csv")
        for name, title, line in (("predictions", "predictions (95% interval of the error):", _pred_line),
                                  ("crossovers", CROSSOVER_TITLE, _crossover_line)):  # fmt: skip
            table = self.extras.get(name)
            if table is not None and not table.empty:
                lines.append(title)
                lines += _capped([line(r) for r in table.itertuples()], limit, f"in {name}.csv")
        if self.problems:
            lines.append("problems:")
            lines += _capped([f"  - {p}" for p in self.problems], limit, "in summary.txt")
        lines += _written_lines(self.written)
        if any(p.name == "summary.txt" for p in self.written):
            lines.append(f"  every fit, test and held-out run: {self.written[0].parent}/summary.txt")
        return "\n".join(lines)


    def _section(self, name: str, title: str, line: Callable[[Any], str]) -> list[str]:
        """``title`` and one ``line(row)`` per row of the extra table ``name`` (none if empty)."""
        table = self.extras.get(name)
        if table is None or table.empty:
            return []
        return [title, *(line(r) for r in table.itertuples())]


CROSSOVER_TITLE = "where two families' followup laws cross (95% bootstrap interval):"
JOINT_TITLE = ("joint law E(N, S, U) (analysis.joint; joint_*.csv): held-out models' mean "
               "|rel. error| (the paper method's), leave-one-out, bottleneck:")


def _joint_line(r) -> str:
    return (f"  {r.task:<20} {r.metric:<25} {r.family:<10} {r.form:<10} {r.heldout}: "
            f"{100 * r.holdout_mean_abs_rel:.2f}% ({100 * r.paper_holdout_mean_abs_rel:.2f}%), "
            f"LOO {100 * r.loo_mean_abs_rel:.2f}%, bottleneck {r.bottleneck or 'n/a'}")


def _test_line(r) -> str:
    return (f"  {r.task:<20} {r.metric:<25} {r.method:<5} {r.family_a} {r.alpha_a:+.3f} vs "
            f"{r.family_b} {r.alpha_b:+.3f}: diff {r.alpha_diff:+.3f} "
            f"[{r.diff_low:+.3f}, {r.diff_high:+.3f}], p={r.p_value:.3g}")  # fmt: skip


def _holdout_line(r) -> str:
    return (f"  {r.task:<20} {r.metric:<25} {r.family:<10} {r.method:<5} {r.heldout}: "
            f"mean |rel. error| {100 * r.mean_abs_rel_error:.1f}% over {r.n_heldout} run(s)")  # fmt: skip


def _crossover_line(r) -> str:
    head = f"  {r.task:<20} {r.metric:<25} {r.family_a} vs {r.family_b}:"
    if not math.isfinite(r.crossover):
        return f"{head} {r.note}; {_fmt(100 * r.boot_share, '.0f')}% of bootstrap pairs cross"
    ci = f"[{_fmt(r.crossover_low, '.3g')}, {_fmt(r.crossover_high, '.3g')}]"
    return (f"{head} {r.lower_above} overtakes {r.lower_below} at C = {r.crossover:.3g} {ci} "
            f"(error {r.error_at_crossover:.3f}; {_fmt(100 * r.boot_share, '.0f')}% of "
            "bootstrap pairs cross)")  # fmt: skip


def _capped(lines: list[str], limit: int, where: str) -> list[str]:
    """``lines``, at most ``limit`` of them, then how many more there are and ``where``."""
    if len(lines) <= limit:
        return lines
    return [*lines[:limit], f"  ... {len(lines) - limit} more {where}"]


def _written_lines(written: list[Path]) -> list[str]:
    """The report and tables by path, the figures as one glob per kind: a terminal-sized list."""
    if not written:
        return ["nothing written"]
    folder = written[0].parent
    out = [f"written {len(written)} files to {folder}/:"]
    named = [p for p in written if p.name in ("report.html", "fits.csv", "points.csv")]
    out += [f"  {p}" for p in named]
    kinds: dict[str, int] = {}
    for p in written:
        if p.suffix == ".png":
            kind = p.name.split("_", 1)[0]
            kinds[kind] = kinds.get(kind, 0) + 1
    out += [f"  {folder}/{kind}_*.png (and .svg): {n} figures" for kind, n in kinds.items()]
    return out


def _fmt(v: float, spec: str = ".3f") -> str:
    return "nan" if v is None or not math.isfinite(v) else format(v, spec)


def _pred_line(r) -> str:
    head = f"  {r.task:<20} {r.metric:<25} {r.family:<10} {r.method:<5}"
    at = f"{r.gmacs:g} GMACs x {r.samples_seen:.3g} samples"
    if not math.isfinite(r.error):
        return f"{head} at {at}: no prediction ({r.note})"
    pi = f"[{_fmt(r.error_pi_low)}, {_fmt(r.error_pi_high)}]"
    note = f" ({r.note})" if r.note else ""
    return f"{head} at {at}: error {r.error:.3f} PI {pi}, metric {r.value:.3f}{note}"


def _fit_line(r) -> str:
    head = f"  {r.task:<20} {r.metric:<25} {r.family:<10} {r.method:<5}"
    if not math.isfinite(r.alpha):
        return f"{head} no fit: {r.note}"
    if r.method == "saturating":
        return f"{head} alpha={r.alpha:+.3f} A={r.A:.3g} E_inf={r.E_inf:.3g} ({r.n_points} pts)"
    if r.method == "followup":
        boot = f"[{_fmt(r.alpha_low)}, {_fmt(r.alpha_high)}]"
        b = str(r.note).split(";")[0].rpartition("b = ")[2]
        return (f"{head} c={r.alpha:+.3f} boot {boot} a={r.A:.3g} b={b} d={r.E_inf:.3g} "
                f"({r.n_fit} frontier pts of {r.n_points})")  # fmt: skip
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


def learning_points(df: pd.DataFrame, tasks: Sequence[str] | None) -> pd.DataFrame:
    """Every evaluation (intermediate and final) of the runs that have intermediate ones."""
    curves, _ = error_points(df, tasks, final_only=False)
    if curves.empty:
        return curves
    curves = curves[curves["run_id"].isin(curves.loc[~curves["final"].astype(bool), "run_id"])]
    return curves.sort_values(["run_id", "samples_seen"]).reset_index(drop=True)


def _further(
    points: pd.DataFrame,
    predict_at: Sequence[tuple[float, float]],
    followup: bool = False,
    n_boot: int = FOLLOWUP_BOOT,
    holdout_above: float | None = None,
) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Family tests, saturating laws, held-out check and predictions (and with ``followup``,
    the families' crossovers; with ``holdout_above``, the follow-up's held-out check); a
    failure is reported."""
    extras: dict[str, pd.DataFrame] = {}
    problems: list[str] = []
    jobs: dict[str, Callable[[], pd.DataFrame]] = {
        "family_tests": lambda: extend.family_tests(points),
        "comparison": lambda: extend.saturating_all(points),
        "holdout": lambda: extend.holdout(points),
        "predictions": lambda: pd.concat(
            [extend.predict(points, g, n) for g, n in predict_at] or [pd.DataFrame()],
            ignore_index=True,
        ),
    }
    if followup and points["family"].nunique() >= 2:
        jobs["crossovers"] = lambda: extend.crossovers(points, n_boot=n_boot)
    if holdout_above is not None:
        jobs["followup_holdout"] = lambda: extend.followup_holdout(points, holdout_above, n_boot)
    for name, job in jobs.items():
        try:
            extras[name] = job()
        except Exception as e:  # one failed extra must not cost the fits and figures
            problems.append(f"{name} failed: {type(e).__name__}: {e}")
            extras[name] = pd.DataFrame()
    more = extras.pop("followup_holdout", None)
    if more is not None and not more.empty:
        extras["holdout"] = pd.concat([extras["holdout"], more], ignore_index=True)
    extras["holdout_summary"] = extend.holdout_summary(extras["holdout"])
    return extras, problems


def _percent_table(table: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    shown = table.copy()
    for m in metrics:
        if m in shown.columns:
            shown[m] = (100 * shown[m]).round(1)
    names = {"model_label": "model", "data_label": "data", "samples_seen_pretty": "samples",
             "compute": "compute (GMACs)"}  # fmt: skip
    return shown.rename(columns={**names, **{m: f"{m} (%)" for m in metrics}})


def analyze(
    df: pd.DataFrame,
    out: str | Path,
    tasks: Sequence[str] | None = None,
    n_boot: int = 1000,
    plots: bool = True,
    saturating: bool = True,
    predict_at: Sequence[tuple[float, float]] = (),
    title: str = "clipscale: scaling laws",
    problems: Sequence[str] = (),
    methods: Sequence[str] | None = None,
    holdout_above: float | None = None,
    joint_boot: int | None = None,
) -> Report:
    """Fit and plot the final rows of ``df`` into ``out``; never raises on bad data.

    ``tasks`` selects targets (``None``: every one in ``df``). ``methods``: the fit methods of
    ``fits.csv`` (``analysis.fit.FIT_METHODS`` and ``saturating``; default ``paper``, ``ols``
    and, unless ``saturating`` is false, ``saturating``). With ``followup`` among them and two
    families or more, ``crossovers.csv``; ``holdout_above`` (a compute) adds the follow-up's
    held-out check to ``holdout.csv``. ``predict_at`` lists (GMACs per pair, samples seen) to
    predict every fitted target at. Problems (missing metrics, single points, empty tasks)
    are collected in ``Report.problems`` after the given ``problems`` (those met loading
    ``df``); whatever can still be made is written. ``joint_boot`` (bootstrap resamples) adds
    the joint law E(N, S, U) (``analysis.design.joint_section``: ``joint_*.csv``, figures).
    """
    out = Path(out)
    points, point_problems = error_points(df, tasks)
    problems = [*problems, *point_problems]
    order = list(tasks) if tasks is not None else list(dict.fromkeys(points["task"]))
    if points.empty:
        problems.append(
            "no usable points (final results with a metric and compute): nothing to fit"
        )
        if plots:
            return _learning_only(df, out, tasks, title, problems)
        return Report(points, pd.DataFrame(), [], problems)
    points = order_rows(points, order, ["compute"]).reset_index(drop=True)
    chosen = list(methods) if methods is not None else [*METHODS, "saturating"]
    saturating = saturating and "saturating" in chosen
    fit_methods = [m for m in chosen if m in FIT_METHODS]
    fits, fit_problems = fit_all(points, fit_methods, n_boot=n_boot)
    problems += fit_problems
    extras, extra_problems = _further(points, predict_at, "followup" in fit_methods,
                                      min(n_boot, FOLLOWUP_BOOT), holdout_above)  # fmt: skip
    problems += extra_problems
    if saturating and not extras["comparison"].empty:
        fitted = extras["comparison"][extras["comparison"]["alpha"].notna()]
        sat = extend.saturating_fit_rows(fitted, FIT_COLUMNS)
        fits = pd.concat([fits, sat], ignore_index=True)
    fits = order_rows(fits, order, ["method"]).reset_index(drop=True)
    written = [
        atomic_write_text(out / "points.csv", points.to_csv(index=False)),
        atomic_write_text(out / "fits.csv", fits.to_csv(index=False)),
    ]
    files = {"family_tests": "family_tests.csv", "holdout": "holdout.csv",
             "comparison": "saturating.csv", "predictions": "predictions.csv",
             "crossovers": "crossovers.csv"}  # fmt: skip
    for key, name in files.items():
        if key == "predictions" and not predict_at:
            continue
        if key not in extras:
            continue
        if key == "comparison" and not saturating:
            continue
        written.append(atomic_write_text(out / name, extras[key].to_csv(index=False)))
    present = list(dict.fromkeys(points["task"]))
    shown_tables = {}
    for task in present:
        table = task_table(points, task)
        metrics = list(dict.fromkeys(points.loc[points["task"] == task, "metric"]))
        shown_tables[task] = _percent_table(table, metrics)
        written.append(
            atomic_write_text(out / f"table_{slug(task)}.csv", table.to_csv(index=False))
        )
        written.append(atomic_write_text(out / f"table_{slug(task)}.md", markdown(table, metrics)))
    figures: list[Path] = []
    if plots:
        try:
            curves = learning_points(df, present)
        except Exception as e:  # learning curves are a view; the fits must still be written
            problems.append(f"learning curves failed: {type(e).__name__}: {e}")
            curves = pd.DataFrame()
        figures, plot_problems = all_figures(points, fits, out, present)
        if not curves.empty:  # a learning-curve figure only for a target that has curves
            more, more_problems = all_figures(curves, fits, out, present, curves, only=("learning",))
            figures, plot_problems = figures + more, plot_problems + more_problems
        written += figures
        problems += plot_problems
    if joint_boot is not None:
        try:
            held = extras["holdout"]
            paper_held = held[held["method"] == "paper"] if not held.empty else held
            joint_extras, joint_files, joint_figures, joint_problems = joint_section(
                points, out, joint_boot, plots, paper_holdout=paper_held)
            extras.update(joint_extras)
            written += joint_files
            figures += joint_figures
            problems += joint_problems
        except Exception as e:  # the joint law is an extra: the fits and figures stand
            problems.append(f"joint law failed: {type(e).__name__}: {e}")
    if not saturating:
        extras.pop("comparison", None)
    report = Report(points, fits, written, problems, extras)
    _page(report, out, title, shown_tables, figures)
    return _finish(report, out)


def _page(
    report: Report,
    out: Path,
    title: str,
    tables: dict,
    figures: list[Path],
    tasks: Sequence[str] | None = None,
) -> None:
    try:
        page = render(
            out, title, report.fits, tables, report.problems, report.extras, figures, tasks
        )
    except Exception as e:  # the CSVs and figures stand without the page
        report.problems.append(f"report.html failed: {type(e).__name__}: {e}")
        return
    report.written.append(atomic_write_text(out / "report.html", page))


def _finish(report: Report, out: Path) -> Report:
    summary_path = out / "summary.txt"
    report.written.append(summary_path)
    atomic_write_text(summary_path, report.summary() + "\n")
    return report


def _learning_only(
    df: pd.DataFrame, out: Path, tasks: Sequence[str] | None, title: str, problems: list[str]
) -> Report:
    """No final results (a sweep in progress): still draw its learning curves, if any."""
    empty = pd.DataFrame()
    try:
        curves = learning_points(df, tasks)
    except Exception as e:
        problems.append(f"learning curves failed: {type(e).__name__}: {e}")
        curves = empty
    report = Report(empty, empty, [], problems)
    if curves.empty:
        return report
    figures, plot_problems = all_figures(curves, empty, out, None, curves, only=("learning",))
    report.written += figures
    report.problems += plot_problems
    _page(report, out, title, {}, figures, list(dict.fromkeys(curves["task"])))
    return _finish(report, out)
