"""The store and the paper's published results, in one table shape.

``export_csv`` writes the store's records with exactly the columns of the paper's
``core/reference/zeroshot_results.csv`` (``REFERENCE_COLUMNS``), so the user's sweep and
the paper's runs load into one DataFrame. ``import_paper`` does the reverse: each row of that
CSV becomes a store record of its own family (``openclip`` for LAION runs, ``openai`` for
CLIP-WIT), under ``<root>/paper-<name>/eval/step_00000000/``; importing twice changes nothing.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import store
from core.atomic import atomic_write_text
from core.reference import PAPER_CSV, model_label

METRICS = (
    "acc1",
    "acc5",
    "mean_per_class_recall",
    "image_retrieval_recall@5",
    "text_retrieval_recall@5",
    "mean_average_precision",
)
REFERENCE_COLUMNS = (
    "arch",
    "samples_seen",
    "gmacs_total",
    "gmacs",
    "upstream_dataset",
    "downstream_dataset",
    *METRICS,
    "task",
    "samples_seen_pretty",
    "name",
)
"""Columns of the paper's zeroshot_results.csv, in its order."""

PAPER_CREATED = "2022-12-14T00:00:00+00:00"
"""``created`` of imported records: fixed (the paper's arXiv date) so a re-import is a no-op."""


def _cell(value: Any) -> Any:
    """A metric as a CSV cell: empty where the record has none (or NaN)."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else value


def reference_row(record: dict[str, Any]) -> dict[str, Any]:
    """One record as a row of the paper's CSV."""
    dataset = store.paper_name(str(record["dataset"]))
    return {
        "arch": record["arch"],
        "samples_seen": float(record["samples_seen"]),
        "gmacs_total": float(record["compute"]),
        "gmacs": record["gmacs"],
        "upstream_dataset": record.get("data_label") or record["data"],
        "downstream_dataset": dataset,
        **{k: _cell(store.metric(record["metrics"], k)) for k in METRICS},
        "task": record["task"],
        "samples_seen_pretty": record["samples"],
        "name": record["run_id"],
    }


def export_csv(
    root: str | os.PathLike[str], out: str | os.PathLike[str], all_steps: bool = False
) -> tuple[int, list[tuple[Path, str]]]:
    """Write the store under ``root`` to ``out`` (reference columns); final-checkpoint records
    only unless ``all_steps``. Returns (rows written, bad files skipped)."""
    records, problems = store.read_records(root)
    rows = [reference_row(r) for r in records if all_steps or r.get("final")]
    text = io.StringIO(newline="")  # csv's own \r\n line ends, as a file opened with newline=""
    writer = csv.DictWriter(text, fieldnames=list(REFERENCE_COLUMNS))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out, text.getvalue())
    return len(rows), problems


def _number(text: str) -> float | None:
    return float(text) if text not in ("", None) else None


def _run_id(row: dict[str, str]) -> str:
    # the three OpenAI models share the name "openai": their arch tells them apart
    name = row["name"].removesuffix(".pt")
    if name == "openai":
        name = f"openai-{row['arch']}"
    return "paper-" + re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def paper_record(row: dict[str, str]) -> dict[str, Any]:
    """One row of the paper's CSV as a store record (step 0, final, family openclip/openai)."""
    metrics = {k: _number(row[k]) for k in METRICS if _number(row[k]) is not None}
    family = "openai" if row["upstream_dataset"] == "CLIP-WIT" else "openclip"
    return {
        "dataset": row["downstream_dataset"],
        "model": row["arch"],
        "pretrained": row["name"],
        "task": row["task"],
        "metrics": metrics,
        "language": "en",
        "schema_version": store.SCHEMA_VERSION,
        "run_id": _run_id(row),
        "model_name": row["arch"],
        "model_label": model_label(row["arch"]),
        "arch": row["arch"],
        "data": row["upstream_dataset"],
        "data_label": row["upstream_dataset"],
        "samples": row["samples_seen_pretty"],
        "samples_seen": _number(row["samples_seen"]),
        "gmacs": _number(row["gmacs"]),
        "compute": _number(row["gmacs_total"]),
        "step": 0,
        "final": True,
        "family": family,
        "config_hash": "paper",
        "git_commit": "paper",
        "eval_seconds": 0.0,
        "created": PAPER_CREATED,
    }


def write_records(
    root: str | os.PathLike[str], records: Iterable[dict[str, Any]]
) -> tuple[int, int]:
    """Write ``records`` into the store under ``root``; a record already there with the same
    content is left alone, so importing twice changes nothing. Returns (written, unchanged)."""
    written = unchanged = 0
    for record in records:
        run_dir = Path(root) / record["run_id"]
        path = store.record_path(run_dir, record["step"], record["dataset"], record["task"])
        try:
            if store.read_record(path) == record:
                unchanged += 1
                continue
        except ValueError:
            pass  # absent or bad: (re)written
        store.write_record(run_dir, record)
        written += 1
    return written, unchanged


def import_paper(
    root: str | os.PathLike[str], csv_path: str | os.PathLike[str] = PAPER_CSV
) -> tuple[int, int]:
    """Write the paper's results into the store under ``root``; a record already there with
    the same content is left alone. Returns (written, unchanged)."""
    with open(csv_path, newline="", encoding="utf-8") as f:
        return write_records(root, (paper_record(row) for row in csv.DictReader(f)))
