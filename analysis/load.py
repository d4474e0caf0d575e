"""Load results into one frame shaped like the paper's ``zeroshot_results.csv``.

Two sources feed the analysis:

* ``paper``: the published study (``core/reference/zeroshot_results.csv``), 29 OpenCLIP
  runs (family ``openclip``) and 3 OpenAI CLIP models (family ``openai``);
* ``store``: the evaluation records of our own sweeps (``<root>/<run_id>/eval/step_*/…json``,
  read through ``store.read_records``); each row keeps its record's ``family``.

Both come out with the reference columns (arch, samples_seen, gmacs_total, gmacs,
upstream_dataset, downstream_dataset, acc1, …, task, samples_seen_pretty, name) plus
``family``, ``model_label``, ``data_label``, ``run_id``, ``step``, ``final`` and ``source``.
``gmacs_total`` is the compute axis: forward GMACs per pair x pairs seen.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import store
from core.reference import PAPER_CSV, model_label
from core.schema import Schedule, schedule_of
from store.export import REFERENCE_COLUMNS as CSV_COLUMNS

# The paper's headline targets (its Figure 1 and Table 1), in the reference CSV's names.
PAPER_DEFAULT_TASKS = ("imagenet1k", "mscoco_captions", "flickr30k", "vtab+", "imagenet_robustness")

METRIC_COLUMNS = (
    "acc1",
    "acc5",
    "mean_per_class_recall",
    "image_retrieval_recall@1",
    "image_retrieval_recall@5",
    "image_retrieval_recall@10",
    "text_retrieval_recall@1",
    "text_retrieval_recall@5",
    "text_retrieval_recall@10",
    "mean_average_precision",
)
# The reference CSV's own columns come from the export, which writes that shape; the frame
# carries every recall@K, where the CSV has only @5.
_HEAD = CSV_COLUMNS[: CSV_COLUMNS.index("acc1")]
_TAIL = CSV_COLUMNS[CSV_COLUMNS.index("mean_average_precision") + 1 :]
REFERENCE_COLUMNS = (*_HEAD, *METRIC_COLUMNS, *_TAIL)
EXTRA_COLUMNS = ("family", "schedule", "model_label", "data_label", "run_id", "step", "final",
                 "source")
COLUMNS = REFERENCE_COLUMNS + EXTRA_COLUMNS


def load_paper(path: str | Path = PAPER_CSV) -> pd.DataFrame:
    """The published results, one row per (model, downstream dataset), every row final."""
    df = pd.read_csv(path)
    df["family"] = np.where(df["upstream_dataset"] == "CLIP-WIT", "openai", "openclip")
    df["schedule"] = Schedule.cosine.value  # the paper trained every run so
    df["model_label"] = df["arch"].map(model_label)
    df["data_label"] = df["upstream_dataset"]
    df["run_id"] = df["name"]
    df["step"] = np.nan
    df["final"] = True
    df["source"] = "paper"
    return _conform(df)


def _read_records(root: Path) -> tuple[list[dict[str, Any]], list[str]]:
    records, problems = store.read_records(root)
    return list(records), [_problem_text(p) for p in problems]


def _problem_text(problem: Any) -> str:
    if isinstance(problem, tuple) and len(problem) == 2:
        return f"{problem[0]}: {problem[1]}"
    return str(problem)


def reference_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Evaluation records (schema 1) as rows in the reference layout (``COLUMNS``), the newest
    record of each (run, step, dataset, task) only. (``store.records_to_frame`` is the store's
    own table: one column per record key and per metric name.)"""
    rows = []
    for rec in records:
        metrics = rec.get("metrics") or {}
        gmacs, seen = rec.get("gmacs"), rec.get("samples_seen")
        compute = rec.get("compute")
        if compute is None and gmacs is not None and seen is not None:
            compute = float(gmacs) * float(seen)
        arch = rec.get("arch") or rec.get("model")
        row = {
            "arch": arch,
            "samples_seen": seen,
            "gmacs_total": compute,
            "gmacs": gmacs,
            "upstream_dataset": rec.get("data_label") or rec.get("data"),
            "downstream_dataset": _dataset_name(rec.get("dataset")),
            "task": rec.get("task"),
            "samples_seen_pretty": rec.get("samples"),
            "name": rec.get("run_id"),
            "family": family_of(rec),
            "schedule": schedule_of(rec).value,
            "model_label": rec.get("model_label") or rec.get("model_name") or arch,
            "data_label": rec.get("data_label") or rec.get("data"),
            "run_id": rec.get("run_id"),
            "step": rec.get("step"),
            "final": bool(rec.get("final", False)),
            "source": "store",
            "created": rec.get("created"),
        }
        for key in METRIC_COLUMNS:
            row[key] = store.metric(metrics, key)
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return _conform(df)
    # A re-evaluated checkpoint leaves two records; the newest one wins.
    df = df.sort_values("created", na_position="first", kind="stable")
    df = df.drop_duplicates(["run_id", "step", "downstream_dataset", "task"], keep="last")
    return _conform(df)


def family_of(rec: Mapping[str, Any]) -> str:
    """A record's family: its sweep (or ``adhoc``), split by learning-rate schedule, so cooled
    trunk branches (``demo:const_cooldown``) never enter a cosine fit (``demo``) silently; they
    are fitted and drawn side by side (``schedule_of``: records from before ``schedule`` existed
    are cosine)."""
    family = rec.get("family") or "adhoc"
    schedule = schedule_of(rec).value
    return family if schedule == Schedule.cosine or family.endswith(f":{schedule}") else f"{family}:{schedule}"


def _dataset_name(dataset: Any) -> Any:
    return store.paper_name(dataset) if isinstance(dataset, str) else dataset


def load_store(root: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """Every record under ``root`` (final and intermediate), plus the reader's problems."""
    root = Path(root)
    if not root.is_dir():
        return _conform(pd.DataFrame()), [f"store: {root} is not a directory"]
    records, problems = _read_records(root)
    problems = [f"store: {p}" for p in problems]
    if not records:
        problems.append(
            f"store: no evaluation records under {root} "
            "(expected <root>/<run_id>/eval/step_XXXXXXXX/<dataset>__<task>.json)"
        )
    df = reference_frame(records)
    unfinished = sorted(set(df["run_id"].dropna()) - set(df.loc[df["final"], "run_id"]))
    if unfinished:
        problems.append(
            f"store: {len(unfinished)} run(s) have no final-checkpoint record yet, only "
            f"intermediate steps, and are left out of the fits: {', '.join(unfinished)}"
        )
    return df, problems


def _conform(df: pd.DataFrame) -> pd.DataFrame:
    """Give ``df`` exactly ``COLUMNS`` with numeric columns as floats."""
    out = df.reindex(columns=list(COLUMNS))
    for col in ("samples_seen", "gmacs_total", "gmacs", "step", *METRIC_COLUMNS):
        out[col] = pd.to_numeric(out[col], errors="coerce").astype(float)
    missing = out["gmacs_total"].isna()
    out.loc[missing, "gmacs_total"] = out.loc[missing, "gmacs"] * out.loc[missing, "samples_seen"]
    out["final"] = out["final"].fillna(False).astype(bool)
    return out.reset_index(drop=True)


def load(source: str, root: str | Path = "runs") -> tuple[pd.DataFrame, list[str]]:
    """Rows of ``source`` (``paper``, ``store`` or ``both``) and the problems met reading them."""
    if source not in ("paper", "store", "both"):
        raise ValueError(f"unknown source {source!r}: expected paper, store or both")
    frames, problems = [], []
    if source in ("paper", "both"):
        frames.append(load_paper())
    if source in ("store", "both"):
        df, probs = load_store(root)
        frames.append(df)
        problems += probs
    frames = [f for f in frames if not f.empty]
    df = pd.concat(frames, ignore_index=True) if frames else _conform(pd.DataFrame())
    return df, problems


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kKmMbBgGtT]?)\b")
_UNIT = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


def size_of(label: str) -> float:
    """Rough size parsed from a label (``LAION-400M`` -> 4e8, ``Synth-4k`` -> 4e3), for sorting."""
    found = _SIZE.findall(str(label))
    if not found:
        return float("inf")
    number, unit = found[-1]
    return float(number) * _UNIT[unit.lower()]
