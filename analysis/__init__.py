"""Analysis stage: scaling-law fits and figures from evaluation records and the paper's data.

Reads only result records (``store``) and ``core/reference/*.csv``.

    from analysis import load, error_points, fit_all, analyze
    df, problems = load("paper")                # or "store" (root=...), or "both"
    report = analyze(df, "reports/paper")       # points.csv, fits.csv, tables, figures
    print(report.summary())

CLI: ``python -m analysis --source {store,paper,both} [--root runs] --out DIR [--tasks ...]
[--predict GMACS SAMPLES] [--no-saturating]`` writes ``DIR/report.html`` (self-contained),
the figures as PNG and SVG, and the CSVs listed in ``analysis.report``;
``python -m analysis predict --gmacs 532 --samples 68e9 --task imagenet1k`` prints a
prediction with its 95 % prediction interval (see ``analysis.__main__``).
Prediction intervals, the held-out check, the family interaction test and the saturating law
live in ``analysis.extend``.
"""

from analysis.fit import error_points, fit_all, fit_one, paper_line
from analysis.load import load, load_paper, load_store, reference_frame
from analysis.report import Report, analyze

__all__ = [
    "Report",
    "analyze",
    "error_points",
    "fit_all",
    "fit_one",
    "load",
    "load_paper",
    "load_store",
    "paper_line",
    "reference_frame",
]
