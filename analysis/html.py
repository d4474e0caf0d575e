"""``report.html``: one self-contained page (PNG figures embedded as base64) for a browser."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from analysis.plots import TASK_TITLES, slug

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1250px; color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ddd;
     padding-bottom: 0.2em; margin-top: 2em; } h3 { margin-top: 1.5em; }
.meta { color: #666; font-size: 0.9em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.6em 0 1.2em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; text-align: left; } td { white-space: nowrap; }
tr:nth-child(even) td { background: #fafafa; }
td.text { text-align: left; } td.wrap { white-space: normal; min-width: 16em; }
.scroll { overflow-x: auto; max-width: 100%; }
img { max-width: 100%; height: auto; border: 1px solid #eee; margin: 0.4em 0; }
.problems li { color: #8a3b00; } .ok { color: #2a6e2a; }
nav a { margin-right: 1em; } .small { font-size: 0.85em; color: #555; }
details { margin: 0.5em 0 1em; } summary { cursor: pointer; color: #245; }
"""


def _img(path: Path, alt: str) -> str:
    if not path.exists():
        return f'<p class="small">({html.escape(path.name)} was not drawn)</p>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _num(v: object, digits: int = 3) -> str:
    if isinstance(v, bool) or v is None:
        return "" if v is None else str(v)
    if isinstance(v, (int, float)):
        if not math.isfinite(v):
            return ""
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.{digits}f}" if isinstance(v, float) else str(v)
    return str(v)


WRAPPED = ("note", "train_models")


def table(
    frame: pd.DataFrame,
    columns: Sequence[str] | None = None,
    digits: int = 3,
    empty: str = "(none)",
    cls: str = "",
) -> str:
    """``frame`` (selected ``columns``) as an HTML table, numbers rounded, text escaped."""
    if frame is None or frame.empty:
        return f'<p class="small">{html.escape(empty)}</p>'
    cols = [c for c in (columns or frame.columns) if c in frame.columns]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = []
    for _, row in frame[cols].iterrows():
        cells = []
        for c in cols:
            v = row[c]
            if isinstance(v, float) and math.isnan(v):
                v = None
            kind = "wrap" if c in WRAPPED else "text" if isinstance(v, str) else ""
            attr = f' class="{kind}"' if kind else ""
            cells.append(f"<td{attr}>{html.escape(_num(v, digits))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    klass = f' class="{cls}"' if cls else ""
    return f"<div class='scroll'><table{klass}><tr>{head}</tr>{''.join(body)}</table></div>"


def headline(fits: pd.DataFrame, tests: pd.DataFrame) -> str:
    """Per (task, metric): each family's exponent (paper method, 95 % CI) and the p-values of
    "same exponent" for the first pair of families."""
    if fits.empty:
        return table(fits, empty="(no fits)")
    paper = fits[(fits["method"] == "paper") & fits["alpha"].notna()]
    if paper.empty:
        return table(paper, empty="(no fits)")
    families = list(dict.fromkeys(paper["family"]))
    rows = []
    for (task, metric), group in paper.groupby(["task", "metric"], sort=False):
        row: dict = {"task": task, "metric": metric}
        for fam in families:
            hit = group[group["family"] == fam]
            if hit.empty:
                row[f"alpha {fam}"] = ""
                continue
            r = hit.iloc[0]
            ci = (f" [{r.alpha_low:+.3f}, {r.alpha_high:+.3f}]"
                  if math.isfinite(r.alpha_low) else "")  # fmt: skip
            row[f"alpha {fam}"] = f"{r.alpha:+.3f}{ci}"
        if tests is not None and not tests.empty:
            t = tests[(tests["task"] == task) & (tests["metric"] == metric)]
            for method in ("paper", "ols"):
                hit = t[t["method"] == method]
                if not hit.empty:
                    h = hit.iloc[0]
                    row[f"p same alpha ({method})"] = float(h.p_value)
        rows.append(row)
    return table(pd.DataFrame(rows), cls="headline")


def _fits_view(fits: pd.DataFrame) -> pd.DataFrame:
    if fits.empty:
        return fits
    ci = [
        "" if not (math.isfinite(lo) and math.isfinite(hi)) else f"[{lo:+.3f}, {hi:+.3f}]"
        for lo, hi in zip(fits["alpha_low"], fits["alpha_high"], strict=True)
    ]
    boot = [
        "" if not (math.isfinite(lo) and math.isfinite(hi)) else f"[{lo:+.3f}, {hi:+.3f}]"
        for lo, hi in zip(fits["boot_alpha_low"], fits["boot_alpha_high"], strict=True)
    ]
    return fits.assign(**{"alpha 95% CI": ci, "bootstrap 95%": boot})


FIT_SHOWN = ("task", "metric", "family", "method", "fit_kind", "alpha", "alpha 95% CI",
             "bootstrap 95%", "A", "E_inf", "n_points", "n_fit", "r2", "note")  # fmt: skip


def joint_section(extras: dict[str, pd.DataFrame]) -> list[str]:
    """The joint law's tables (``analysis.joint``); its figures are in each task's section."""
    return [
        '<h2 id="joint">Joint law E(N, S, U)</h2>',
        "<p class='small'>Every run, not the envelope: N = forward GMACs per pair, S = samples "
        "seen, U = unique pairs; S<sub>eff</sub> = min(S, U) + U R*(1 &minus; "
        "e<sup>&minus;(S/U &minus; 1)/R*</sup>) discounts repeated epochs (Muennighoff et al. "
        "2023). Huber loss of log error summed, L-BFGS from variable-projection starts, "
        "bootstrap intervals. <b>held out</b>: fit on the smaller models, predict the largest "
        "(beside the paper method's error on the same runs); <b>LOO</b>: each run predicted "
        "by the law fit on the others; <b>bottleneck</b>: does the law's gain from the last "
        "samples step on LAION-400M stay under half that on LAION-2B, as measured?</p>",
        table(extras.get("joint_summary", pd.DataFrame()), digits=4,
              empty="(no family with enough runs over 2 model sizes and samples values)"),
        "<details><summary>parameters (joint_fit.csv)</summary>",
        table(extras.get("joint_fit", pd.DataFrame()),
              ("task", "metric", "family", "form", "parameter", "value", "low", "high",
               "n_runs", "loss", "converged", "n_agree", "n_starts", "n_boot", "note"),
              digits=4),
        "</details><details><summary>bottleneck: gain of the last samples step per model and "
        "data (joint_bottleneck.csv)</summary>",
        table(extras.get("joint_bottleneck", pd.DataFrame()), digits=4),
        "</details>",
    ]  # fmt: skip


def render(
    out: Path,
    title: str,
    fits: pd.DataFrame,
    tables: dict[str, pd.DataFrame],
    problems: Sequence[str],
    extras: dict[str, pd.DataFrame],
    figures: Sequence[Path],
    tasks: Sequence[str] | None = None,
) -> str:
    """The page's HTML. ``extras``: family_tests, comparison, holdout_summary, predictions;
    ``tasks``: the per-task sections (default: those with a table)."""
    figs = {p.name for p in figures}
    tasks = list(tables) if tasks is None else list(tasks)
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">E = A &middot; C<sup>&alpha;</sup>, C = GMACs per pair &times; '
        f"samples seen, E = 1 &minus; metric. Written {now}.</p>",
        "<nav>" + "".join(
            f'<a href="#{slug(t)}">{html.escape(TASK_TITLES.get(t, t))}</a>' for t in tasks
        ) + '<a href="#fits">fits</a><a href="#further">further</a>'
        + ('<a href="#joint">joint law</a>' if "joint_summary" in extras else "") + "</nav>",
    ]  # fmt: skip
    parts.append("<h2>Problems</h2>")
    if problems:
        items = "".join(f"<li>{html.escape(p)}</li>" for p in problems)
        parts.append(f'<ul class="problems">{items}</ul>')
    else:
        parts.append('<p class="ok">none</p>')
    parts.append("<h2>Exponents</h2>")
    parts.append(
        "<p class='small'>The paper's method (lower envelope over 5 log-compute bins, then "
        "least squares; a plain line for families under 6 runs), 95 % t-interval; p: "
        "interaction test below (paper: envelope points, ols: every run).</p>"
    )
    parts.append(headline(fits, extras.get("family_tests")))
    parts.append('<h2 id="further">Further than the paper</h2>')
    parts.append(
        "<h3>Do the families scale differently?</h3><p class='small'>OLS "
        "<code>log E ~ log C * family</code>; the interaction is the difference of the "
        "exponents, p tests &ldquo;same exponent&rdquo;. <b>paper</b>: on each family's "
        "envelope points; <b>ols</b>: on every run.</p>"
    )
    parts.append(table(extras.get("family_tests", pd.DataFrame()), digits=3))
    parts.append(
        "<h3>Saturating law against the pure power law</h3><p class='small'>Both fit on "
        "log<sub>10</sub> E over every run; lower AIC/BIC is better; F-test of the nested "
        "models (approximate: E<sub>&infin;</sub> = 0 is on the boundary).</p>"
    )
    comp = extras.get("comparison", pd.DataFrame())
    if comp is not None and not comp.empty:
        comp = comp[comp["alpha"].notna()]
        comp = comp.assign(**{
            "dAIC (sat - power)": comp["aic_saturating"] - comp["aic_power"],
            "dBIC (sat - power)": comp["bic_saturating"] - comp["bic_power"],
        })  # fmt: skip
    parts.append(table(comp, ("task", "metric", "family", "n_points", "alpha", "A", "E_inf",
                              "E_inf_low", "E_inf_high", "dAIC (sat - power)",
                              "dBIC (sat - power)", "F", "p_F", "preferred", "note"),
                       empty="(no family with >= 5 runs to fit 3 parameters)"))  # fmt: skip
    parts.append(
        "<h3>Held-out check</h3><p class='small'>Fit on the smaller models, predict the "
        "larger ones' runs (of n models the largest max(1, n &minus; 3)); mean absolute "
        "relative error of the predicted error, and the share of held-out runs inside the 95 % "
        "prediction interval (one row per run in <code>holdout.csv</code>).</p>"
    )
    parts.append(table(extras.get("holdout_summary", pd.DataFrame()),
                       empty="(no family with 3 or more models)"))  # fmt: skip
    parts.append(
        "<p class='small'>With 2 training models a line has no residual: no prediction "
        "interval, so no coverage.</p>"
    )
    preds = extras.get("predictions")
    if preds is not None and not preds.empty:
        parts.append("<h3>Predictions</h3>")
        parts.append(table(preds, ("family", "task", "metric", "method", "gmacs",
                                   "samples_seen", "error", "error_pi_low", "error_pi_high",
                                   "value", "n_fit", "note")))  # fmt: skip
    cross = extras.get("crossovers")
    if cross is not None and not cross.empty:
        parts.append(
            "<h3>Does one family's law overtake another's?</h3><p class='small'>Each family's "
            "followup law E = a&middot;(C + b)<sup>c</sup> + d (Pareto frontier); the first "
            "compute where two laws cross, up to 3 decades beyond the data, with the 95 % "
            "interval over the bootstrap laws; <i>boot_share</i>: the share of bootstrap pairs "
            "that cross at all.</p>"
        )
        parts.append(table(cross, ("task", "metric", "family_a", "family_b", "crossover",
                                   "crossover_low", "crossover_high", "boot_share",
                                   "error_at_crossover", "note")))  # fmt: skip
    if "joint_summary" in extras:
        parts += joint_section(extras)
    for task in tasks:
        name = TASK_TITLES.get(task, task)
        parts.append(f'<h2 id="{slug(task)}">{html.escape(name)} '
                     f'<span class="small">({html.escape(task)})</span></h2>')  # fmt: skip
        for stem, alt in (("scaling", "error vs compute"), ("bottleneck", "error vs samples seen"),
                          ("learning", "learning curves"),
                          ("joint", "joint law: measured against predicted"),
                          ("optimal", "joint law: compute-optimal N and S")):  # fmt: skip
            name_png = f"{stem}_{slug(task)}.png"
            if name_png in figs:
                parts.append(f"<h3>{alt}</h3>" + _img(out / name_png, f"{name}: {alt}"))
        tab = tables.get(task)
        if tab is not None:
            parts.append(f"<details><summary>table: {len(tab)} runs (click to open)</summary>")
            parts.append(table(tab.drop(columns=["run_id"], errors="ignore"), digits=1))
            parts.append("</details>")
    parts.append('<h2 id="fits">Every fit</h2>')
    parts.append(
        '<p class="small"><b>paper</b>: lower envelope over 5 log-compute bins, then least '
        "squares (the paper's method); <b>ols</b>: every run; <b>saturating</b>: "
        "E = A&middot;C<sup>&alpha;</sup> + E<sub>&infin;</sub> on every run; <b>followup</b> "
        "(when asked for): E = a&middot;(C + b)<sup>c</sup> + d on the Pareto frontier, c in "
        "alpha, a in A, d in E<sub>&infin;</sub>, b in the note. Also in "
        "<code>fits.csv</code>.</p>"
    )
    parts.append(table(_fits_view(fits), FIT_SHOWN))
    parts.append("</body></html>")
    return "\n".join(parts)
