"""``python -m analysis``: fit and plot scaling laws from the store, the paper, or both.

    python -m analysis --source paper --out reports/paper
    python -m analysis --source store --root runs --out reports/demo
    python -m analysis --source both --root runs --out reports/both --tasks imagenet1k

Exit status 0 when something was written (problems are still printed), 1 when nothing could be.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from analysis.fit import task_name
from analysis.load import PAPER_DEFAULT_TASKS, load
from analysis.report import analyze


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
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    df, problems = load(args.source, args.root)
    tasks = args.tasks or default_tasks(args.source, df)
    try:
        report = analyze(df, args.out, tasks, n_boot=args.bootstrap, plots=not args.no_plots)
    except OSError as e:  # an unwritable --out, a full disk
        print(f"error: cannot write to {args.out}: {e}", file=sys.stderr)
        return 1
    report.problems[:0] = problems
    print(report.summary())
    return 0 if report.written else 1


if __name__ == "__main__":
    sys.exit(main())
