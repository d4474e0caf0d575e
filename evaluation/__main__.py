"""``python -m evaluation [ROOT]``: show the eval records of a runs folder at a glance.

Prints one line per record (run, step, dataset, main metrics) and one line per bad record
file with its reason; exits 1 if there was any bad file, so a script can check a sweep.
Evaluating is the launcher's job (``evaluation.evaluate.evaluate``), not this command's.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from evaluation.store import read_records, records_to_frame

_SHOWN = ("run_id", "step", "final", "dataset", "samples_seen", "compute")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation", description=__doc__)
    parser.add_argument("root", nargs="?", default="runs", help="folder of run folders")
    args = parser.parse_args(argv)
    records, problems = read_records(args.root)
    frame = records_to_frame(records)
    metrics = [
        c
        for c in frame.columns
        if c in ("acc1", "mean_per_class_recall")
        or c.startswith(("image_retrieval_recall@", "text_retrieval_recall@"))
    ]
    if frame.empty:
        print(f"no eval records under {args.root}")
    else:
        with pd.option_context("display.width", 200, "display.max_columns", None):
            print(
                frame[list(_SHOWN) + metrics].sort_values(["run_id", "step"]).to_string(index=False)
            )
    for path, reason in problems:
        print(f"BAD {path}: {reason}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
