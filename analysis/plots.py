"""Figures: the paper's Figure 1 (error vs compute) and the data/samples bottleneck view.

Every figure is written as PNG and SVG, atomically (rendered in memory, then renamed into
place), so a reader of ``--out`` never sees a half-written image.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as mticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from analysis.load import size_of  # noqa: E402
from core.atomic import atomic_write_bytes  # noqa: E402

FORMATS = ("png", "svg")
TASK_TITLES = {
    "imagenet1k": "ImageNet",
    "mscoco_captions": "MS-COCO",
    "flickr30k": "Flickr30K",
    "vtab+": "VTAB+",
    "vtab": "VTAB",
    "imagenet_robustness": "ImageNet robustness",
}
METRIC_TITLES = {
    "acc1": "error (1 - top-1 accuracy)",
    "image_retrieval_recall@5": "image retrieval: 1 - recall@5",
    "text_retrieval_recall@5": "text retrieval: 1 - recall@5",
    "mean_average_precision": "1 - mean average precision",
}
# Fitted lines are black/grey with their own dashes, so they never share a colour with the
# data-size hues of the points.
LineStyle = tuple[str, Any]  # (colour, matplotlib linestyle: a name or a dash tuple)
FAMILY_STYLE: dict[str, LineStyle] = {"openclip": ("black", "-"), "openai": ("dimgray", "--")}
_OTHER_STYLES: list[LineStyle] = [
    ("black", "-."),
    ("gray", ":"),
    ("dimgray", (0, (5, 1, 1, 1))),
    ("black", (0, (1, 1))),
]


def slug(text: str) -> str:
    """File-name-safe form of a task or metric name (``vtab/dtd`` -> ``vtab_dtd``)."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", str(text)).strip("_")


def _save(fig: plt.Figure, out: Path, stem: str) -> list[Path]:
    paths = []
    for fmt in FORMATS:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=150, bbox_inches="tight")
        paths.append(atomic_write_bytes(out / f"{stem}.{fmt}", buf.getvalue()))
    plt.close(fig)
    return paths


def _orders(points: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Data labels by size (then name), models by GMACs: the paper's legend order."""
    data = sorted(points["data_label"].dropna().unique(), key=lambda d: (size_of(d), d))
    gmacs = points.groupby("model_label")["gmacs"].max()
    models = sorted(gmacs.index, key=lambda m: (np.nan_to_num(gmacs[m], nan=np.inf), m))
    return [str(d) for d in data], [str(m) for m in models]


def _family_style(family: str, others: dict[str, LineStyle]) -> LineStyle:
    if family in FAMILY_STYLE:
        return FAMILY_STYLE[family]
    return others.setdefault(family, _OTHER_STYLES[len(others) % len(_OTHER_STYLES)])


def _log_axes(ax: plt.Axes) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    low, high = ax.get_ylim()
    # Errors often span less than a decade: then label 0.2, 0.3, 0.4 ... not only powers of 10.
    ratio = high / low if low > 0 else np.inf
    subs: tuple[float, ...] = (1.0, 2.0, 5.0)
    if ratio < 3:
        subs = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0, 8.0, 9.0)
    elif ratio < 10:
        subs = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0)
    ax.yaxis.set_major_locator(mticker.LogLocator(base=10, subs=subs))
    ax.yaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(mticker.NullFormatter())
    ax.xaxis.set_minor_formatter(mticker.NullFormatter())
    ax.grid(True, which="major", alpha=0.3)


def _samples_axes(ax: plt.Axes) -> None:
    """``_log_axes`` with samples seen on x, named as the paper names sample counts."""
    _log_axes(ax)
    ax.xaxis.set_major_locator(mticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(mticker.FuncFormatter(human))
    ax.set_xlabel("samples seen")


def human(v: float, _pos: object = None) -> str:
    """3.4e10 -> 34B, 6144 -> 6.1k: how the paper names sample counts."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.2g}{unit}"
    return f"{v:g}"


def equation(A: float, alpha: float) -> str:
    """``E = A·C^alpha`` in mathtext."""
    return rf"$E = {A:.3g} \cdot C^{{{alpha:.3f}}}$"


def scaling_figure(
    points: pd.DataFrame, fits: pd.DataFrame, task: str, out: Path, method: str = "paper"
) -> list[Path]:
    """Error vs compute for ``task``: one panel per metric, one fit line per family."""
    pts = points[points["task"] == task]
    metrics = list(dict.fromkeys(pts["metric"]))
    data_order, model_order = _orders(pts)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.4), squeeze=False)
    handles: list = []
    labels: list[str] = []
    others: dict[str, LineStyle] = {}
    for ax, metric in zip(axes[0], metrics, strict=True):
        sub = pts[pts["metric"] == metric].rename(
            columns={"data_label": "Data", "model_label": "Model"}
        )
        sns.scatterplot(
            data=sub, x="compute", y="error", hue="Data", hue_order=data_order,
            style="Model", style_order=model_order, s=70, ax=ax, legend="full",
        )  # fmt: skip
        if not handles:
            handles, labels = ax.get_legend_handles_labels()
        if ax.get_legend() is not None:
            ax.get_legend().remove()
        lines = _fit_lines(ax, fits, task, metric, method, others)
        if lines:
            ax.legend(handles=lines, loc="lower left", fontsize="small", framealpha=0.8)
        _log_axes(ax)
        ax.set_xlabel("compute (GMACs = GMACs per pair x samples seen)")
        ax.set_ylabel(METRIC_TITLES.get(metric, f"1 - {metric}"))
        ax.set_title(f"{TASK_TITLES.get(task, task)}: {metric}")
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small")
    fig.tight_layout()
    return _save(fig, out, f"scaling_{slug(task)}")


def _fit_lines(
    ax: plt.Axes, fits: pd.DataFrame, task: str, metric: str, method: str, others: dict
) -> list:
    rows = fits[(fits["task"] == task) & (fits["metric"] == metric) & (fits["method"] == method)]
    lines = []
    for row in rows.itertuples():
        if not np.isfinite(row.alpha):
            continue
        # Each line spans its own family's compute range, a little beyond each end.
        c = np.logspace(np.log10(row.compute_min) - 0.1, np.log10(row.compute_max) + 0.1, 50)
        colour, dash = _family_style(str(row.family), others)
        (line,) = ax.plot(
            c, row.A * c**row.alpha, color=colour, linestyle=dash, linewidth=1.6,
            label=f"{row.family} ({row.fit_kind}): {equation(row.A, row.alpha)}",
        )  # fmt: skip
        lines.append(line)
    return lines


def bottleneck_figure(points: pd.DataFrame, task: str, out: Path) -> list[Path]:
    """Error vs samples seen: a row per metric, a column per model, a line per data size.

    Where a line flattens, more samples no longer help: data (or model) size is the bottleneck.
    Repeated runs of one (model, data, samples) point show their best (lowest) error.
    """
    sub = points[points["task"] == task]
    data_order, model_order = _orders(sub)
    metrics = list(dict.fromkeys(sub["metric"]))
    sub = sub.rename(columns={"data_label": "Data", "model_label": "Model"})
    grid = sns.relplot(
        data=sub, x="samples_seen", y="error", hue="Data", hue_order=data_order,
        col="Model", col_order=model_order, row="metric", row_order=metrics,
        kind="line", marker="o", estimator="min", errorbar=None,
        height=3.0, aspect=1.0, facet_kws={"sharey": "row", "sharex": True, "margin_titles": True},
    )  # fmt: skip
    for (metric, model), ax in grid.axes_dict.items():
        _samples_axes(ax)
        ax.set_ylabel(METRIC_TITLES.get(metric, f"1 - {metric}") if model == model_order[0] else "")
    grid.set_titles(col_template="{col_name}", row_template="")
    grid.figure.suptitle(f"{TASK_TITLES.get(task, task)}: error vs samples seen", y=1.02)
    return _save(grid.figure, out, f"bottleneck_{slug(task)}")


NO_CURVES = "no intermediate evaluations (records with final: false) for this task"


def learning_figure(curves: pd.DataFrame, task: str, out: Path) -> list[Path]:
    """Error vs samples seen over each run's evaluated checkpoints: a panel per metric, a line
    per run (colour: data size, as in the other figures; dashes: model). Without intermediate
    evaluations the figure says so.
    """
    sub = curves[curves["task"] == task] if not curves.empty else curves
    metrics = list(dict.fromkeys(sub["metric"])) if not sub.empty else [""]
    size = (5.2 * len(metrics), 4.0) if not sub.empty else (6.0, 1.0)
    fig, axes = plt.subplots(1, len(metrics), figsize=size, squeeze=False)
    title = f"{TASK_TITLES.get(task, task)}: learning curves"
    if sub.empty:
        ax = axes[0, 0]
        ax.text(0.5, 0.5, NO_CURVES, ha="center", va="center", wrap=True, transform=ax.transAxes)
        ax.set_axis_off()
        ax.set_title(title)
        return _save(fig, out, f"learning_{slug(task)}")
    data_order, model_order = _orders(sub)
    sub = sub.rename(columns={"data_label": "Data", "model_label": "Model"})
    for i, (ax, metric) in enumerate(zip(axes[0], metrics, strict=True)):
        sns.lineplot(
            data=sub[sub["metric"] == metric], x="samples_seen", y="error", hue="Data",
            hue_order=data_order, style="Model", style_order=model_order, units="run_id",
            estimator=None, marker="o", ax=ax, legend="full" if i == len(metrics) - 1 else False,
        )  # fmt: skip
        _samples_axes(ax)
        ax.set_ylabel(METRIC_TITLES.get(metric, f"1 - {metric}"))
        ax.set_title(f"{title} ({metric})" if len(metrics) > 1 else title, fontsize="medium")
    legend = axes[0, -1].get_legend()
    if legend is not None:
        sns.move_legend(axes[0, -1], "center left", bbox_to_anchor=(1.02, 0.5), fontsize="small")
    fig.tight_layout()
    return _save(fig, out, f"learning_{slug(task)}")


def all_figures(
    points: pd.DataFrame,
    fits: pd.DataFrame,
    out: Path,
    tasks: Sequence[str] | None = None,
    curves: pd.DataFrame | None = None,
    only: Sequence[str] = ("scaling", "bottleneck", "learning"),
) -> tuple[list[Path], list[str]]:
    """Every figure for every task in ``points``; a figure that fails is reported, not raised."""
    paths: list[Path] = []
    problems: list[str] = []
    tasks = list(dict.fromkeys(points["task"])) if tasks is None else list(tasks)
    for task in tasks:
        if not (points["task"] == task).any():
            continue
        jobs = [
            ("scaling", lambda t=task: scaling_figure(points, fits, t, out)),
            ("bottleneck", lambda t=task: bottleneck_figure(points, t, out)),
        ]
        if curves is not None:
            jobs.append(("learning", lambda t=task: learning_figure(curves, t, out)))
        jobs = [(what, job) for what, job in jobs if what in only]
        for what, job in jobs:
            try:
                paths += job()
            except Exception as e:  # one bad figure must not cost the others
                plt.close("all")
                problems.append(f"task {task}: {what} figure failed: {type(e).__name__}: {e}")
    return paths, problems


def joint_figure(loo: pd.DataFrame, holdout: pd.DataFrame, task: str, out: Path) -> list[Path]:
    """The joint law (``analysis.joint``), measured against predicted error: a panel per form,
    leave-one-out predictions of every run (hue: data, style: model) and the held-out models'
    predictions (black, with their 95 % bootstrap prediction intervals) beside the paper
    method's (grey crosses)."""
    lo = loo[loo["task"] == task] if not loo.empty else loo
    ho = holdout[holdout["task"] == task] if not holdout.empty else holdout
    forms = list(dict.fromkeys([*lo.get("form", []), *ho.get("form", [])]))
    fig, axes = plt.subplots(1, max(len(forms), 1), figsize=(4.8 * max(len(forms), 1), 4.4),
                             squeeze=False)  # fmt: skip
    shown = pd.concat([lo, ho]) if not ho.empty else lo
    data_order, model_order = _orders(shown) if not shown.empty else ([], [])
    for i, (ax, form) in enumerate(zip(axes[0], forms, strict=False)):
        sub = lo[lo["form"] == form].rename(columns={"data_label": "Data", "model_label": "Model"})
        if not sub.empty:
            sns.scatterplot(data=sub, x="error", y="predicted", hue="Data", hue_order=data_order,
                            style="Model", style_order=model_order, s=55, ax=ax,
                            legend="full" if i == len(forms) - 1 else False)  # fmt: skip
        h = ho[ho["form"] == form]
        if not h.empty:
            err = np.vstack([h["predicted"] - h["pi_low"], h["pi_high"] - h["predicted"]])
            ax.errorbar(h["error"], h["predicted"], yerr=np.where(np.isfinite(err), err, 0),
                        fmt="D", color="black", ms=7, capsize=3,
                        label="held out: " + ", ".join(dict.fromkeys(h["heldout_model"])))  # fmt: skip
            ax.scatter(h["error"], h["paper_predicted"], marker="x", color="gray", s=60,
                       label="paper method, held out", zorder=3)  # fmt: skip
        lims = [v for v in (*shown.get("error", []), *shown.get("predicted", [])) if np.isfinite(v)]
        if lims:
            a, b = min(lims) * 0.95, max(lims) * 1.05
            ax.plot([a, b], [a, b], color="gray", linewidth=1, linestyle=":")
            ax.set_xlim(a, b)
            ax.set_ylim(a, b)
        ax.set_xlabel("measured error")
        ax.set_ylabel("predicted error (leave-one-out; held-out fit)")
        ax.set_title(f"{TASK_TITLES.get(task, task)}: {form}", fontsize="medium")
        ax.grid(True, alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        keep = [(hd, lb) for hd, lb in zip(handles, labels, strict=True) if "held out" in lb]
        if keep and i < len(forms) - 1:
            ax.legend(*zip(*keep, strict=True), fontsize="small", loc="upper left")
    if forms:
        sns.move_legend(axes[0, -1], "center left", bbox_to_anchor=(1.02, 0.5), fontsize="small")
    fig.tight_layout()
    return _save(fig, out, f"joint_{slug(task)}")


def optimal_figure(front: pd.DataFrame, runs: pd.DataFrame, task: str, out: Path) -> list[Path]:
    """Compute-optimal N and S against compute (``analysis.design.frontier``): a line per law
    with its bootstrap band; the paper's (or the store's) runs drawn in, hue: data."""
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.2))
    data_order, model_order = _orders(runs)
    pts = runs.rename(columns={"data_label": "Data", "model_label": "Model"})
    for ax, (col, what) in zip(axes, (("N", "model size N (GMACs per pair)"),
                                      ("S", "samples seen S")), strict=True):  # fmt: skip
        for (form, data), f in front.groupby(["form", "data"], sort=False):
            f = f.sort_values("compute")
            (line,) = ax.plot(f["compute"], f[f"{col}_opt"], linewidth=1.8,
                              label=f"{form} law, optimum on {data}")  # fmt: skip
            ax.fill_between(f["compute"], f[f"{col}_low"], f[f"{col}_high"], alpha=0.15,
                            color=line.get_color())  # fmt: skip
        y = "gmacs" if col == "N" else "samples_seen"
        sns.scatterplot(data=pts, x="compute", y=y, hue="Data", hue_order=data_order,
                        style="Model", style_order=model_order, s=50, ax=ax,
                        legend="full" if col == "S" else False)  # fmt: skip
        _log_axes(ax)
        ax.set_xlabel("compute (GMACs)")
        ax.set_ylabel(what)
        ax.set_title(f"{TASK_TITLES.get(task, task)}: compute-optimal {col}", fontsize="medium")
    axes[0].legend(fontsize="small", loc="upper left")
    sns.move_legend(axes[1], "center left", bbox_to_anchor=(1.02, 0.5), fontsize="small")
    fig.tight_layout()
    return _save(fig, out, f"optimal_{slug(task)}")
