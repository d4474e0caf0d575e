"""From a fitted joint law to a plan: the compute-optimal allocation, and a designed sweep.

``optimal``
    For a budget of GPU-hours (priced by ``core.cost``), the model size N, samples seen S and
    unique data U that minimise the joint law's predicted error (``analysis.joint``). For each
    unique-data choice U the budget fixes S once N is chosen, ``S = hours x 3600 x samples/s
    (N)``, with samples/s from FLOPs at the MFU interpolated between the archs measured on the
    device (``core.cost.throughput_at``); N is then a one-dimensional search over log N within
    ``N_RANGE`` times the fitted models' sizes (an optimum at either end says "bigger/smaller
    than this range", not where the optimum is). More unique data never hurts under these laws,
    so U is reported per data choice, not optimised away. Intervals: the same optimum on every
    bootstrap law.
``design``
    A sweep file (``sweeps/<name>.yaml``) of points within a budget that best pin down the law
    for a target point (a larger model or more samples than the sweep trains). Two strategies:

    * ``interval`` (used when a prior law can be fitted, e.g. ``--source paper`` for the LAION
      models): a c-optimal design. The prediction variance of log E at the target,
      ``g' (J'J + lambda I)^-1 g`` (J: the gradient of log E in the law's parameters at each
      chosen point, g: at the target, from the prior law), is reduced greedily: each step adds
      the candidate (model, data, samples) with the largest variance reduction per GPU-hour
      that still fits the budget. It spends where the law is least pinned down for *that*
      target, which an IsoFLOP grid does not know.
    * ``isoflop`` (no prior law: a new setting, such as the embedded default with an empty
      store): Hoffmann et al.'s approach 2 grid, model-free. ``n_budgets`` budgets a factor
      ``ratio`` apart; at each, every model on every data choice trains for that budget (its
      samples follow from its throughput). Every point spends its budget, the profiles vary
      N against S at fixed cost and the data choices vary U, which is what the joint law needs.

    Every point is priced as the plan prices it (``core.cost.throughput`` with the job's GPUs
    and per-GPU batch, samples rounded up to whole steps), so ``launch.py -m sweep=<name>
    dry_run=true`` shows the same total.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from analysis import joint
from analysis import plots as figs
from analysis.fit import error_points, task_name
from analysis.joint import Data, Fitted, Law, interval, log_predict
from analysis.load import load
from core import cost, validate
from core.atomic import atomic_write_text

N_RANGE = (0.5, 4.0)
"""The optimum is searched within [0.5 x smallest, 4 x largest] fitted model size ..."""
S_RANGE = (0.5, 4.0)
"""... and samples seen within [0.5 x fewest, 4 x most] fitted: the law is not extrapolated
further; an optimum on one of these bounds says so (``edge``)."""
UNLIMITED = float("inf")


# ---- compute-optimal allocation -----------------------------------------------------------


@dataclass(frozen=True)
class Device:
    """Which device the budget buys (``core.cost``): a GPU by its peak, or a CPU process."""

    peak_tflops: float = 312.0
    cpu: bool = False
    compiled: bool = False

    def rate(self, gmacs: np.ndarray) -> np.ndarray:
        """Samples/s of one device for models of ``gmacs`` (interpolated MFU)."""
        return np.array([cost.throughput_at(float(g), self.peak_tflops, self.compiled, self.cpu)
                         .samples_per_s for g in np.atleast_1d(gmacs)])  # fmt: skip

    @property
    def unit(self) -> str:
        return "CPU-hours" if self.cpu else f"{cost.device_name(self.peak_tflops)} GPU-hours"


def _best(law: Law, hours: float, U: float, n_grid: np.ndarray, rates: np.ndarray,
          s_range: tuple[float, float]) -> tuple[float, float, float, str]:  # fmt: skip
    """(N, S, E, edge) minimising the law's error for ``hours`` on data of ``U`` pairs, with
    N on ``n_grid`` and S within ``s_range``; ``edge`` names the bound the optimum sits on
    ("" inside). All NaN when no N of the grid buys a samples count within the range."""
    S = hours * 3600 * rates
    ok = (S >= s_range[0]) & (S <= s_range[1])
    if not ok.any():
        return math.nan, math.nan, math.nan, "no N gives S within the fitted range"
    u = np.full_like(S, 1e30 if math.isinf(U) else U)
    err = np.where(ok, law.predict(n_grid, S, u), np.inf)
    i = int(np.argmin(err))
    # refine between the neighbours of the best grid node (the grid steps are ~2 %)
    lo, hi = max(i - 1, 0), min(i + 1, len(n_grid) - 1)
    fine = np.geomspace(n_grid[lo], n_grid[hi], 41)
    fine_s = hours * 3600 * np.exp(np.interp(np.log(fine), np.log(n_grid), np.log(rates)))
    fine_ok = (fine_s >= s_range[0]) & (fine_s <= s_range[1])
    fine_err = np.where(fine_ok, law.predict(fine, fine_s, np.full_like(fine, u[0])), np.inf)
    j = int(np.argmin(fine_err))
    edge = ""
    inside = np.flatnonzero(ok)
    if i == inside[0] or i == inside[-1]:
        at_low_n = i == inside[0]
        if (i == 0 and at_low_n) or (i == len(n_grid) - 1 and not at_low_n):
            edge = "N at the smallest size searched" if at_low_n else "N at the largest size searched"
        else:  # samples fall with N: the small-N end is the most samples, and vice versa
            edge = "S at the most samples allowed" if at_low_n else "S at the fewest samples allowed"
    return float(fine[j]), float(fine_s[j]), float(fine_err[j]), edge


OPTIMAL_COLUMNS = ("task", "metric", "form", "budget", "unit", "data", "U", "N_opt", "N_low",
                   "N_high", "S_opt", "S_low", "S_high", "compute", "E_opt", "E_low", "E_high",
                   "at_edge", "best")  # fmt: skip


def optimal(
    fitted: Fitted,
    hours: float,
    device: Device = Device(),
    data: dict[str, float] | None = None,
    n_points: int = 300,
) -> pd.DataFrame:
    """One ``OPTIMAL_COLUMNS`` row per data choice (label -> unique pairs; default: the
    fitted runs' data and "unlimited"): N, S and error at the optimum with bootstrap
    intervals; ``best`` marks the lowest error."""
    runs = fitted.runs
    if data is None:
        data = dict(zip(runs["data_label"], runs["U"], strict=True))
        data = {k: float(v) for k, v in sorted(data.items(), key=lambda kv: kv[1])}
        data["unlimited"] = UNLIMITED
    n_grid = np.geomspace(runs["N"].min() * N_RANGE[0], runs["N"].max() * N_RANGE[1], n_points)
    s_range = (runs["samples_seen"].min() * S_RANGE[0], runs["samples_seen"].max() * S_RANGE[1])
    rates = device.rate(n_grid)
    rows = []
    for label, U in data.items():
        n, s, e, edge = _best(fitted.law, hours, U, n_grid, rates, s_range)
        boot = np.array([_best(b, hours, U, n_grid, rates, s_range)[:3]
                         for b in fitted.boot]).reshape(-1, 3)  # fmt: skip
        (n_lo, n_hi), (s_lo, s_hi), (e_lo, e_hi) = (interval(boot[:, k]) for k in range(3))
        rows.append({"task": runs["task"].iloc[0], "metric": runs["metric"].iloc[0],
                     "form": fitted.law.form.name, "budget": hours, "unit": device.unit,
                     "data": label, "U": U, "N_opt": n, "N_low": n_lo, "N_high": n_hi,
                     "S_opt": s, "S_low": s_lo, "S_high": s_hi, "compute": n * s,
                     "E_opt": e, "E_low": e_lo, "E_high": e_hi, "at_edge": edge,
                     "best": False})  # fmt: skip
    table = pd.DataFrame(rows, columns=list(OPTIMAL_COLUMNS))
    if table["E_opt"].notna().any():
        table.loc[table["E_opt"].idxmin(), "best"] = True
    return table


def frontier(fitted: Fitted, budgets: Sequence[float], device: Device = Device(),
             data_label: str | None = None) -> pd.DataFrame:  # fmt: skip
    """The optimum along ``budgets`` on one data choice (default: the largest fitted), for
    the N_opt / S_opt against compute figure."""
    runs = fitted.runs
    if data_label is None:
        data_label = str(runs.loc[runs["U"].idxmax(), "data_label"])
    U = float(runs.loc[runs["data_label"] == data_label, "U"].iloc[0])
    parts = [optimal(fitted, h, device, {data_label: U}) for h in budgets]
    return pd.concat(parts, ignore_index=True)


def format_optimal(table: pd.DataFrame, law: Law, n_kind: str = "gmacs") -> str:
    """The ``optimal`` table as the command prints it."""
    if table.empty:
        return "no optimum: nothing fitted"
    first = table.iloc[0]
    n_unit = "GMACs/pair" if n_kind == "gmacs" else "M params"
    lines = [f"compute-optimal allocation (N within {N_RANGE[0]:g}-{N_RANGE[1]:g}x, S within "
             f"{S_RANGE[0]:g}-{S_RANGE[1]:g}x the fitted runs' range) for {first['budget']:,.0f} {first['unit']} "
             f"(core.cost), {first['task']} ({first['metric']}), {law.form.formula} "
             f"fitted on {law.n_runs} runs; 95% bootstrap intervals:"]  # fmt: skip
    head = f"  {'data (U)':<22} {'N_opt ' + n_unit:>30} {'S_opt (pairs seen)':>30} {'compute':>9} {'error':>22}"
    lines.append(head)
    for r in table.itertuples():
        u = "unlimited" if math.isinf(r.U) else f"{r.U:.3g}"
        lines.append(
            f"  {r.data + ' (' + u + ')':<22} {_iv(r.N_opt, r.N_low, r.N_high, '.4g'):>30} "
            f"{_iv(r.S_opt, r.S_low, r.S_high, '.3g'):>30} {r.compute:>9.3g} "
            f"{_iv(r.E_opt, r.E_low, r.E_high, '.4f'):>22}"
            + ("  <- lowest" if r.best else "") + (f"  ({r.at_edge})" if r.at_edge else "")
        )  # fmt: skip
    return "\n".join(lines)


def _iv(v: float, lo: float, hi: float, spec: str) -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return format(v, spec)
    return f"{v:{spec}} [{lo:{spec}}, {hi:{spec}}]"


def catalog_options(fitted: Fitted, hours: float, device: Device, data_label: str) -> pd.DataFrame:
    """Each ``conf/model`` model for ``hours`` on ``data_label``: its samples and error."""
    U = float(fitted.runs.loc[fitted.runs["data_label"] == data_label, "U"].iloc[0])
    rows = []
    for m in cost.models().values():
        if m.gmacs < 1 and fitted.runs["N"].min() >= 1:
            continue  # the tiny CPU models beside LAION-scale laws: not an option
        rate = cost.throughput(m.arch, m.gmacs, device.peak_tflops,
                               gpus=m.global_batch // m.local_batch, local_batch=m.local_batch,
                               compiled=device.compiled, cpu=device.cpu)  # fmt: skip
        S = hours * 3600 * rate.samples_per_s
        rows.append({"model": m.name, "gmacs": m.gmacs, "samples": S,
                     "error": float(fitted.law.predict(m.gmacs, S, U)[0]), "priced": rate.source})
    return pd.DataFrame(rows).sort_values("gmacs").reset_index(drop=True)


# ---- the sweep designer -------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A point the designer may choose: a config choice of model and data, samples seen."""

    model: cost.ModelInfo
    data: cost.DataInfo
    samples: int
    hours: float
    source: str

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.model.name, self.data.name, self.samples)


def price(model: cost.ModelInfo, samples: float, device: Device) -> tuple[int, float, str]:
    """(samples rounded up to whole steps, device-hours, figure) as the plan prices it."""
    seen = int(math.ceil(samples / model.global_batch) * model.global_batch)
    rate = cost.throughput(model.arch, model.gmacs, device.peak_tflops,
                           gpus=model.global_batch // model.local_batch,
                           local_batch=model.local_batch, compiled=device.compiled,
                           cpu=device.cpu)  # fmt: skip
    return seen, rate.hours(seen), rate.source


def samples_grid(lo: float, hi: float, per_decade: int = 4) -> list[float]:
    """Samples values from ``lo`` to ``hi``, ``per_decade`` per decade (geometric)."""
    n = max(2, int(round(math.log10(hi / lo) * per_decade)) + 1)
    return [float(v) for v in np.geomspace(lo, hi, n)]


def candidates(models: Sequence[str], data: Sequence[str], samples: Sequence[float],
               device: Device) -> list[Candidate]:  # fmt: skip
    out = {}
    for m in models:
        for d in data:
            for s in samples:
                info = cost.models()[m]
                seen, hours, source = price(info, s, device)
                c = Candidate(info, cost.datasets()[d], seen, hours, source)
                out[c.key] = c
    return list(out.values())


def _gradient(law: Law, rows: Sequence[tuple[float, float, float]]) -> np.ndarray:
    """d log E / d theta at each (N, S, U) (central differences), shape (points, params)."""
    data = Data.of(*zip(*rows, strict=True))
    base = law.theta
    grads = []
    for k in range(len(base)):
        step = 1e-5 * max(1.0, abs(base[k]))
        up, down = base.copy(), base.copy()
        up[k] += step
        down[k] -= step
        grads.append((log_predict(law.form, up, data) - log_predict(law.form, down, data)) / (2 * step))
    g = np.stack(grads, axis=1)
    if not law.r_free:
        g[:, len(law.form.coefs) + len(law.form.exponents):] = 0.0
    return g


def interval_design(law: Law, cands: Sequence[Candidate], target: tuple[float, float, float],
                    budget: float, ridge: float = 1e-4) -> tuple[list[Candidate], list[float]]:  # fmt: skip
    """Greedy c-optimal design: (chosen candidates, the target's log-E variance after each,
    in units of the residual variance)."""
    J = _gradient(law, [(c.model.gmacs, c.samples, c.data.num_samples) for c in cands])
    g = _gradient(law, [target])[0]
    p = len(g)
    info = ridge * np.eye(p)
    chosen: list[Candidate] = []
    trace: list[float] = []
    left = budget
    free = list(range(len(cands)))

    def variance(m: np.ndarray) -> float:
        return float(g @ np.linalg.solve(m, g))

    current = variance(info)
    while True:
        best, best_gain, best_var = None, 0.0, current
        for i in free:
            c = cands[i]
            if c.hours > left:
                continue
            v = variance(info + np.outer(J[i], J[i]))
            gain = (current - v) / max(c.hours, 1e-12)
            if gain > best_gain:
                best, best_gain, best_var = i, gain, v
        if best is None:
            return chosen, trace
        info = info + np.outer(J[best], J[best])
        current = best_var
        chosen.append(cands[best])
        trace.append(current)
        left -= cands[best].hours
        free.remove(best)


def isoflop_design(models: Sequence[str], data: Sequence[str], budget: float, device: Device,
                   n_budgets: int = 3, ratio: float = 4.0,
                   min_steps: int = 20) -> tuple[list[Candidate], list[float]]:  # fmt: skip
    """IsoFLOP profiles: (points, the per-point budget of each profile). A point that would
    train fewer than ``min_steps`` steps is left out (its budget is spent by the others)."""
    n = len(models) * len(data)
    weights = [ratio**k for k in range(n_budgets)]
    base = budget / (n * sum(weights))
    budgets = [base * w for w in weights]
    out = []
    for b in budgets:
        for m in models:
            info = cost.models()[m]
            rate = cost.throughput(info.arch, info.gmacs, device.peak_tflops,
                                   gpus=info.global_batch // info.local_batch,
                                   local_batch=info.local_batch, compiled=device.compiled,
                                   cpu=device.cpu)  # fmt: skip
            steps = int(b * 3600 * rate.samples_per_s // info.global_batch)  # down: stay within
            if steps < min_steps:
                continue
            for d in data:
                seen = steps * info.global_batch
                out.append(Candidate(info, cost.datasets()[d], seen, rate.hours(seen), rate.source))
    return out, budgets


def samples_name(samples: int) -> str:
    """The ``conf/samples`` choice nearest (in log) to ``samples``: the run id's prefix; the
    block's ``samples.seen`` pins the exact count."""
    choices = {}
    for path in sorted((cost.CONF_DIR / "samples").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text()) or {}
        if "name" in doc and "seen" in doc:
            choices[doc["name"]] = float(doc["seen"])
    return min(choices, key=lambda k: abs(math.log(choices[k] / samples)))


def sweep_text(points: Sequence[Candidate], description: str, unit: str) -> str:
    """The sweep file: a description and one block per point (``launcher.sweep``'s format)."""
    lines = ["description: >"]
    lines += [f"  {line}" for line in description.strip().splitlines()]
    lines.append("points:")
    for c in sorted(points, key=lambda c: (c.model.gmacs, c.data.num_samples, c.samples)):
        lines.append(f"  - {{model: {c.model.name}, data: {c.data.name}, "
                     f"samples: {samples_name(c.samples)}, samples.seen: {c.samples}}}"
                     f"  # {c.hours:,.4g} {unit}")  # fmt: skip
    return "\n".join(lines) + "\n"


def write_sweep(path, text: str):
    return atomic_write_text(path, text)


# ---- the report's joint-law section -------------------------------------------------------

JOINT_FILES = {"fits": "joint_fit.csv", "holdout": "joint_holdout.csv", "loo": "joint_loo.csv",
               "bottleneck": "joint_bottleneck.csv", "optimal": "joint_optimal.csv"}  # fmt: skip


def report_device(fitted: Fitted) -> Device:
    """The device a law's budgets buy in the report: a CPU for the tiny models, else A100."""
    return Device(cost.CPU_PEAK_TFLOPS, cpu=True) if fitted.runs["N"].max() < 1 else Device()


def run_hours(fitted: Fitted, device: Device) -> np.ndarray:
    """Device-hours each fitted run took by the continuous cost model."""
    return fitted.runs["samples_seen"].to_numpy(float) / device.rate(fitted.runs["N"]) / 3600


def joint_section(
    points: pd.DataFrame,
    out,
    n_boot: int,
    plots: bool = True,
    forms: Sequence[str] | None = None,
    paper_holdout: pd.DataFrame | None = None,
) -> tuple[dict[str, pd.DataFrame], list, list, list[str]]:
    """The joint law on ``points`` into ``out``: (report extras, files written, figures,
    problems). Files: ``JOINT_FILES``; figures ``joint_<task>`` (measured against predicted)
    and ``optimal_<task>`` (N_opt and S_opt against compute, the runs drawn in)."""
    out = Path(out)
    forms = list(forms) if forms is not None else [joint.DEFAULT_FORM, "chinchilla"]
    result = joint.joint_analysis(points, forms, n_boot=n_boot, paper_holdout=paper_holdout)
    problems = list(result.problems)
    fronts = []
    for (_, _, _, _), fitted in result.laws.items():
        if fitted.law.form.name != joint.ALLOCATION_FORM:  # no interior optimum (see there)
            continue
        device = report_device(fitted)
        hours = run_hours(fitted, device)
        budgets = list(np.geomspace(hours.min() / 2, hours.max() * 10, 12))
        try:
            fronts.append(frontier(fitted, budgets, device).assign(family=fitted.runs["family"].iloc[0]))
        except Exception as e:  # the fits stand without the allocation
            problems.append(f"joint optimum failed: {type(e).__name__}: {e}")
    front = pd.concat(fronts, ignore_index=True) if fronts else pd.DataFrame(columns=list(OPTIMAL_COLUMNS))
    tables = {"fits": result.fits, "holdout": result.holdout, "loo": result.loo,
              "bottleneck": result.bottleneck, "optimal": front}  # fmt: skip
    written = [atomic_write_text(out / name, tables[key].to_csv(index=False))
               for key, name in JOINT_FILES.items()]  # fmt: skip
    figures: list = []
    if plots:
        for task in dict.fromkeys(result.summary["task"]):
            try:
                figures += figs.joint_figure(result.loo, result.holdout, task, out)
                runs = next(f.runs for k, f in result.laws.items() if k[1] == task)
                figures += figs.optimal_figure(front[front["task"] == task], runs, task, out)
            except Exception as e:  # one bad figure must not cost the others
                problems.append(f"task {task}: joint figure failed: {type(e).__name__}: {e}")
    extras = {"joint_summary": result.summary, "joint_fit": result.fits,
              "joint_bottleneck": result.bottleneck}  # fmt: skip
    return extras, written + figures, figures, problems


# ---- the commands: python -m analysis optimal | design ------------------------------------

GPU_SAMPLES_RANGE = (1e9, 3.4e10)
CPU_SAMPLES_RANGE = (3072.0, 55296.0)


def _budget_args(p) -> None:
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--budget-gpu-hours", type=float, metavar="H",
                       help="GPU-hours on the device of --peak-tflops (core.cost)")
    group.add_argument("--budget-cpu-seconds", type=float, metavar="S",
                       help="seconds of one CPU process (core.cost's CPU figures)")
    p.add_argument("--peak-tflops", type=float, default=cost.GPU_PEAK_TFLOPS,
                   help="the GPU's peak bf16 TFLOP/s (312: A100, 989: H200)")
    p.add_argument("--cpu-peak-tflops", type=float, default=cost.CPU_PEAK_TFLOPS,
                   help="one CPU process's peak TFLOP/s (cluster.cpu_peak_tflops)")  # fmt: skip


def _budget(args) -> tuple[float, Device]:
    """(device-hours, device) of the budget arguments."""
    if args.budget_cpu_seconds is not None:
        return args.budget_cpu_seconds / 3600, Device(args.cpu_peak_tflops, cpu=True)
    return args.budget_gpu_hours, Device(args.peak_tflops)


def _check_budget(hours: float, args) -> None:
    """Refuse a budget that is not a positive finite number, naming its flag."""
    if not (math.isfinite(hours) and hours > 0):
        cpu = args.budget_cpu_seconds is not None
        flag, value = ("--budget-cpu-seconds", args.budget_cpu_seconds) if cpu else (
            "--budget-gpu-hours", args.budget_gpu_hours)  # fmt: skip
        raise ValueError(f"{flag} must be a positive number, got {value:g}")


def _law_args(p, source: str = "paper") -> None:
    p.add_argument("--source", choices=("store", "paper", "both"), default=source)
    p.add_argument("--root", default="runs", help="result store root (default: runs)")
    p.add_argument("--task", default="imagenet1k", help="target whose error the law models")
    p.add_argument("--family", default=None, help="family (default: the one with most runs)")
    p.add_argument("--form", default=None,
                   help="joint law form (default: joint.ALLOCATION_FORM for optimal, "
                   "joint.DEFAULT_FORM for design)")  # fmt: skip
    p.add_argument("--bootstrap", type=int, default=100, metavar="N",
                   help="bootstrap resamples for the intervals")  # fmt: skip


def fit_prior(args, default_form: str | None = None) -> tuple[Fitted | None, list[str]]:
    """The joint law of ``--task`` on ``--source`` (the family with most runs), bootstrapped;
    form ``--form``, else ``default_form``, else ``joint.DEFAULT_FORM``."""
    df, problems = load(args.source, args.root)
    points, probs = error_points(df, [args.task])
    if points.empty and not df.empty:
        known = sorted({task_name(d, t) for d, t in zip(df["downstream_dataset"], df["task"],
                                                         strict=True)})  # fmt: skip
        raise ValueError(f"--task {args.task}: no results of it in --source {args.source} "
                         f"(its tasks: {', '.join(known)})")
    problems += probs
    runs_all, probs = joint.joint_points(points)
    problems += probs
    if args.family is not None:
        runs_all = runs_all[runs_all["family"] == args.family]
    if runs_all.empty:
        return None, [*problems, f"no runs of {args.task} to fit a joint law to"]
    family = args.family or runs_all["family"].value_counts().index[0]
    runs = runs_all[runs_all["family"] == family]
    runs = runs[runs["metric"] == runs["metric"].iloc[0]].reset_index(drop=True)
    if len(runs) < joint.MIN_RUNS or runs["N"].nunique() < 2:
        return None, [*problems, f"family {family}, {args.task}: {len(runs)} runs over "
                      f"{runs['N'].nunique()} model size(s): too few for a joint law"]  # fmt: skip
    form = args.form or default_form or joint.DEFAULT_FORM
    with joint.single_threaded():
        data = joint.data_of(runs)
        law = joint.fit_law(form, data)
        boot = joint.bootstrap(form, data, args.bootstrap, warm=law)
    return Fitted(law, boot, runs), problems


def optimal_main(argv: Sequence[str]) -> int:
    """``python -m analysis optimal``: the compute-optimal N, S, U for a budget."""
    p = argparse.ArgumentParser(prog="python -m analysis optimal",
                                description="compute-optimal model size, samples seen and "
                                "unique data for a budget, from the joint law")  # fmt: skip
    _budget_args(p)
    _law_args(p)
    args = p.parse_args(argv)
    hours, device = _budget(args)
    try:
        _check_budget(hours, args)
        fitted, problems = fit_prior(args, joint.ALLOCATION_FORM)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"problem: {problem}")
    if fitted is None:
        return 1
    if fitted.law.form.name != joint.ALLOCATION_FORM:
        print(f"note: in form {fitted.law.form.name} N and S enter as one product, so at a "
              "fixed compute the optimum is an end of the searched range "
              f"(joint.ALLOCATION_FORM: {joint.ALLOCATION_FORM})")  # fmt: skip
    table = optimal(fitted, hours, device)
    print(format_optimal(table, fitted.law))
    best = table[table["best"]].iloc[0]
    data_label = best["data"] if best["data"] in set(fitted.runs["data_label"]) else \
        str(fitted.runs.loc[fitted.runs["U"].idxmax(), "data_label"])  # fmt: skip
    options = catalog_options(fitted, hours, device, data_label)
    if not options.empty:
        print(f"the grid's models for this budget on {data_label} (samples it buys, error):")
        for r in options.itertuples():
            print(f"  {r.model:<8} {r.gmacs:>9.4g} GMACs  {r.samples:>10.3g} samples  "
                  f"error {r.error:.4f}  ({r.priced})")  # fmt: skip
    params = ", ".join(f"{k}={v:.6g}" for k, v in fitted.law.params.items())
    print(f"law ({fitted.law.form.name}, N in GMACs, S and U in 1e9 pairs): {params}")
    return 0


def _target(text: str | None, models: Sequence[str], data: Sequence[str],
            samples_hi: float) -> tuple[cost.ModelInfo, cost.DataInfo, float]:  # fmt: skip
    """``MODEL:DATA:SAMPLES`` or the default: the next larger ``conf/model`` model than the
    largest listed (else that one at twice the largest samples) on the largest listed data."""
    catalog = cost.models()
    if text:
        m, d, s = text.split(":")
        return catalog[m], cost.datasets()[d], float(s)
    big = max((catalog[m] for m in models), key=lambda m: m.gmacs)
    larger = sorted((m for m in catalog.values() if m.gmacs > big.gmacs and
                     (m.gmacs < 1) == (big.gmacs < 1)), key=lambda m: m.gmacs)  # fmt: skip
    data_big = max((cost.datasets()[d] for d in data), key=lambda d: d.num_samples)
    if larger:
        return larger[0], data_big, samples_hi
    return big, data_big, 2 * samples_hi


def design_main(argv: Sequence[str]) -> int:
    """``python -m analysis design``: write ``sweeps/<name>.yaml`` within a budget."""
    p = argparse.ArgumentParser(prog="python -m analysis design",
                                description="a sweep within a budget that pins down the joint "
                                "law at a target point")  # fmt: skip
    _budget_args(p)
    p.add_argument("--model", required=True, help="conf/model choices, comma-separated")
    p.add_argument("--data", required=True, help="conf/data choices, comma-separated")
    p.add_argument("--name", required=True, help="the sweep's name: sweeps/<name>.yaml")
    p.add_argument("--samples-range", nargs=2, type=float, default=None, metavar=("LO", "HI"),
                   help="samples seen the points may take (default: 1e9..3.4e10 for GPU "
                   "models, 3072..55296 for the tiny CPU ones)")  # fmt: skip
    p.add_argument("--strategy", choices=("auto", "interval", "isoflop"), default="auto",
                   help="interval: shrink the target's prediction interval (needs a prior "
                   "law from --source); isoflop: model-free profiles; auto: interval when a "
                   "prior law can be fitted")  # fmt: skip
    p.add_argument("--target", default=None, metavar="MODEL:DATA:SAMPLES",
                   help="the point to predict (default: the next larger model on the "
                   "largest data)")  # fmt: skip
    p.add_argument("--n-budgets", type=int, default=3, help="isoflop: budgets (profiles)")
    p.add_argument("--ratio", type=float, default=4.0, help="isoflop: factor between budgets")
    p.add_argument("--min-steps", type=int, default=20,
                   help="isoflop: leave out a point of fewer optimizer steps")  # fmt: skip
    p.add_argument("--sweeps-dir", default=str(cost.ROOT / "sweeps"), help="where to write")
    p.add_argument("--force", action="store_true", help="overwrite an existing sweep file")
    _law_args(p)
    args = p.parse_args(argv)
    hours, device = _budget(args)
    models, data = args.model.split(","), args.data.split(",")
    try:
        _check_budget(hours, args)
        validate.check_name("sweep name", args.name)
        unknown = [m for m in models if m not in cost.models()]
        unknown += [d for d in data if d not in cost.datasets()]
        if unknown:
            raise ValueError(f"unknown model/data choice(s): {', '.join(unknown)} (conf/model: "
                             f"{', '.join(cost.models())}; conf/data: {', '.join(cost.datasets())})")
    except Exception as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    path = Path(args.sweeps_dir) / f"{args.name}.yaml"
    if path.exists() and not args.force:
        print(f"error: {path} exists (--force to overwrite)", file=sys.stderr)
        return 2
    tiny = max(cost.models()[m].gmacs for m in models) < 1
    lo, hi = args.samples_range or (CPU_SAMPLES_RANGE if tiny else GPU_SAMPLES_RANGE)
    target = _target(args.target, models, data, hi)
    try:
        fitted, problems = (None, []) if args.strategy == "isoflop" else fit_prior(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.strategy == "interval" and fitted is None:
        for problem in problems:
            print(f"problem: {problem}")
        print("error: --strategy interval needs a prior law (see the problems above)", file=sys.stderr)
        return 1
    strategy = "interval" if fitted is not None else "isoflop"
    t_model, t_data, t_samples = target
    command = " ".join(["python -m analysis design", *argv])
    if strategy == "interval":
        assert fitted is not None
        cands = candidates(models, data, samples_grid(lo, hi), device)
        chosen, trace = interval_design(fitted.law, cands, (t_model.gmacs, t_samples, t_data.num_samples), hours)
        sd = float(np.std(fitted.law.residuals))
        why = (f"Strategy interval (c-optimal): points added greedily by how much each shrinks "
               f"the variance of the predicted log error at the target per {device.unit[:-1]}, "
               f"under the prior law {fitted.law.form.formula} fitted on {len(fitted.runs)} runs "
               f"of {args.task} ({args.source}); the target's prediction sd after these points: "
               f"{100 * sd * math.sqrt(trace[-1]) if trace else float('nan'):.2f}% of its error "
               f"(residual sd {100 * sd:.2f}%).")  # fmt: skip
    else:
        chosen, budgets = isoflop_design(models, data, hours, device, args.n_budgets, args.ratio,
                                         args.min_steps)  # fmt: skip
        why = (f"Strategy isoflop (no prior law{': ' + problems[-1] if problems else ''}): "
               f"{len(budgets)} IsoFLOP profiles at {', '.join(f'{b:.3g}' for b in budgets)} "
               f"{device.unit} per point, every model on every data choice; model-free, so it "
               f"suits a setting with no runs yet.")  # fmt: skip
    if not chosen:
        print(f"error: no point fits within {hours:.4g} {device.unit}", file=sys.stderr)
        return 1
    total = sum(c.hours for c in chosen)
    description = (f"Designed by: {command}\n"
                   f"Target: {t_model.name} on {t_data.name} at {t_samples:.4g} samples seen. "
                   f"{why}\n"
                   f"{len(chosen)} points, {total:.6g} of {hours:.6g} {device.unit} "
                   f"(core.cost, as the plan prices them).")  # fmt: skip
    write_sweep(path, sweep_text(chosen, description, device.unit))
    print(f"wrote {path}: {len(chosen)} points, {total:.4g} of {hours:.4g} {device.unit} "
          f"({strategy}); target {t_model.name}:{t_data.name}:{t_samples:.4g}")
    print(f"  python launch.py -m sweep={args.name} dry_run=true")
    return 0
