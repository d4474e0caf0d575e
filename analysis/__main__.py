"""``python -m analysis``: fit and plot scaling laws from the store, the paper, or both.

    python -m analysis --source paper --out reports/paper
    python -m analysis --source store --root runs --out reports/demo
    python -m analysis --source both --root runs --out reports/both --tasks imagenet1k
    python -m analysis --source paper --out reports/paper --predict 532 68e9

``--predict GMACS SAMPLES`` (repeatable) adds ``predictions.csv`` and a report section: each
fitted target's error at that compute with its 95 % prediction interval. ``--no-saturating``
leaves out the saturating law E = A C^alpha + E_inf (``saturating.csv``, method
``saturating`` in ``fits.csv``).

``--methods`` chooses the fits of ``fits.csv`` (default ``paper ols saturating``); ``followup``
is the 2025 follow-up's E = a (C + b)^c + d on a Pareto frontier, with bootstrap intervals (its
c in the ``alpha`` column), and with two families or more it writes ``crossovers.csv`` (does
one family's law overtake another's, at what compute, with an interval). ``--holdout-above C``
adds its held-out check: the law fit at or below compute C predicts the frontier above it
(method ``followup`` in ``holdout.csv``). It is not in the default run (its bootstrap refits
take seconds per target):

    python -m analysis --source store --root imported --out reports/fu --methods paper followup
    python -m analysis --source store --root imported --out reports/fu --methods followup \
        --holdout-above 1e11 --tasks imagenet1k

It ends by printing the headline exponents with their intervals and where the report is;
``summary.txt`` there lists every fit, test and held-out run.

Prediction alone, printed, nothing written:

    python -m analysis predict --gmacs 532 --samples 68e9 --task imagenet1k
    python -m analysis predict --source store --root runs --gmacs 0.0121 --samples 1e6

(ViT-G/14 is 532 GMACs per pair, not in the paper's data: GMACs are given directly.)
By default it prints both the paper's method (its lower envelope; the paper's own numbers) and
OLS over every run, labelled; ``--method paper|ols|followup`` prints one (``followup``: the
follow-up's law, with the bootstrap interval of the law).

The joint law E(N, S, U) of model size, samples seen and unique data (``analysis.joint``:
``joint_fit.csv``, ``joint_holdout.csv``, ``joint_loo.csv``, a report section) is fitted with
``--joint-bootstrap`` resamples: for ``--source paper|both`` by default (``--bootstrap``
resamples, at most 50; the quick run, ``--bootstrap 0``, leaves it out), for ``--source store``
when ``--joint-bootstrap`` is given (a store's sweep is often too small for its 7 parameters,
and ``make demo``'s analysis stays quick); ``--no-joint`` never.
From it (``analysis.design``), printed or a sweep file:

    python -m analysis optimal --budget-gpu-hours 1e5 --task imagenet1k --source paper
    python -m analysis design --budget-gpu-hours 2e5 --model vit_b32,vit_b16,vit_l14 \
        --data laion400m,laion2b --name planned

Exit status 0 when something was written (problems are still printed), 1 when nothing could be.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import pandas as pd

from analysis.design import design_main, optimal_main
from analysis.extend import predict
from analysis.fit import FIT_METHODS, error_points, task_name
from analysis.joint import JOINT_BOOT
from analysis.load import PAPER_DEFAULT_TASKS, load
from analysis.report import FAMILY_ORDER, analyze


def default_tasks(source: str, df) -> list[str]:
    """Paper: its headline targets; store: every target present; both: the union."""
    store = df[df["source"] == "store"]
    present = [
        task_name(d, t) for d, t in zip(store["downstream_dataset"], store["task"], strict=True)
    ]
    tasks = list(PAPER_DEFAULT_TASKS) if source in ("paper", "both") else []
    return list(dict.fromkeys(tasks + sorted(set(present))))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.split("\n")[0])
    p.add_argument(
        "--source",
        choices=("store", "paper", "both"),
        default="store",
        help="evaluation records under --root, the paper's published results, or both",
    )
    p.add_argument("--root", default="runs", help="result store root (default: runs)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--tasks",
        nargs="+",
        default=None,
        help="downstream datasets to analyse (default: the paper's headline "
        "targets for --source paper, every dataset for the store)",
    )
    p.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        metavar="N",
        help="bootstrap resamples per fit for boot_alpha_low/high (0: skip)",
    )
    p.add_argument("--no-plots", action="store_true", help="write tables and fits only")
    p.add_argument(
        "--no-saturating", action="store_true", help="leave out the saturating law E_inf fits"
    )
    p.add_argument(
        "--methods",
        nargs="+",
        choices=(*FIT_METHODS, "saturating"),
        default=None,
        metavar="METHOD",
        help="fit methods for fits.csv: paper, ols, saturating (default: these three), followup",
    )
    p.add_argument(
        "--holdout-above",
        type=float,
        default=None,
        metavar="COMPUTE",
        help="the follow-up's held-out check: fit its law at or below this compute, predict above",
    )
    p.add_argument("--joint-bootstrap", type=int, default=None, metavar="N",
                   help="fit the joint law E(N, S, U) with N bootstrap resamples (default for "
                   f"--source paper|both: --bootstrap, at most {JOINT_BOOT}, none with "
                   "--bootstrap 0; --source store: only when given)")  # fmt: skip
    p.add_argument("--no-joint", action="store_true", help="leave out the joint law E(N, S, U)")
    p.add_argument(
        "--predict",
        nargs=2,
        type=float,
        action="append",
        default=[],
        metavar=("GMACS", "SAMPLES"),
        help="predict every target at GMACs per pair x samples seen (repeatable)",
    )
    return p.parse_args(argv)


def parse_predict_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m analysis predict",
        description="error at a model's GMACs and samples seen, with 95%% prediction interval",
    )
    p.add_argument("--source", choices=("store", "paper", "both"), default="paper")
    p.add_argument("--root", default="runs", help="result store root (default: runs)")
    p.add_argument("--gmacs", type=float, required=True, help="forward GMACs per pair")
    p.add_argument("--samples", type=float, required=True, help="samples seen, e.g. 68e9")
    p.add_argument("--task", nargs="+", default=None, help="targets (default: all loaded)")
    p.add_argument("--family", nargs="+", default=None, help="families (default: all)")
    p.add_argument("--method", choices=("paper", "ols", "followup"), default=None,
                   help="one method (default: paper and ols, labelled)")  # fmt: skip
    return p.parse_args(argv)


def predict_main(argv: Sequence[str]) -> int:
    args = parse_predict_args(argv)
    if not (args.gmacs > 0 and args.samples > 0):
        print("error: --gmacs and --samples must be positive", file=sys.stderr)
        return 1
    df, problems = load(args.source, args.root)
    tasks = args.task or default_tasks(args.source, df)
    points, probs = error_points(df, tasks)
    for p in problems + probs:
        print(f"problem: {p}")
    methods = [args.method] if args.method else ["paper", "ols"]
    preds = pd.concat(
        [predict(points, args.gmacs, args.samples, tasks, args.family, m) for m in methods],
        ignore_index=True,
    )
    if preds.empty:
        print("nothing to predict from: no fitted points for that selection")
        return 1
    rank = preds["family"].map(lambda f: FAMILY_ORDER.get(f, len(FAMILY_ORDER)))
    preds = preds.assign(_f=rank).sort_values(["task", "metric", "_f", "family"], kind="stable")
    shown = preds[["task", "metric", "family", "method", "n_fit", "error", "error_pi_low",
                   "error_pi_high", "value", "note"]]  # fmt: skip
    compute = args.gmacs * args.samples
    labels = {"paper": "paper: the paper's method, lower envelope of 5 compute bins",
              "ols": "ols: a line through every run",
              "followup": "followup: the 2025 follow-up's law on its Pareto frontier, "
                          "interval: the bootstrap of the law"}  # fmt: skip
    print(f"predicted error (1 - metric) at {args.gmacs:g} GMACs x {args.samples:.3g} samples "
          f"= {compute:.3g} GMACs, 95% prediction interval")  # fmt: skip
    print("  " + "; ".join(labels[m] for m in methods))
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["predict"]:
        return predict_main(argv[1:])
    if argv[:1] in (["optimal"], ["design"]):
        return (optimal_main if argv[0] == "optimal" else design_main)(argv[1:])
    args = parse_args(argv)
    joint_boot = args.joint_bootstrap
    if joint_boot is None and args.bootstrap > 0 and args.source != "store":
        joint_boot = min(args.bootstrap, JOINT_BOOT)
    df, problems = load(args.source, args.root)
    tasks = args.tasks or default_tasks(args.source, df)
    try:
        report = analyze(
            df, args.out, tasks, n_boot=args.bootstrap, plots=not args.no_plots,
            saturating=not args.no_saturating, predict_at=[tuple(p) for p in args.predict],
            title=f"clipscale scaling laws: {args.source} results", problems=problems,
            methods=args.methods, holdout_above=args.holdout_above,
            joint_boot=None if args.no_joint else joint_boot,
        )  # fmt: skip
    except OSError as e:  # an unwritable --out, a full disk
        print(f"error: cannot write to {args.out}: {e}", file=sys.stderr)
        return 1
    print(report.brief())
    return 0 if report.written else 1


if __name__ == "__main__":
    sys.exit(main())
