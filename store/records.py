"""The result store: one plain JSON record per (run, step, dataset, task).

Layout (everything a run owns stays under its folder)::

    <root>/<run id>/eval/step_00001234/<dataset, "/" -> "_">__<task>.json

A record holds clip_benchmark's own result keys (``dataset``, ``model``, ``pretrained``,
``task``, ``metrics``, ``language``) plus what the scaling-law fits need to place the point
(see ``REQUIRED_KEYS``); optional keys: ``members`` (an aggregate's datasets), ``fewshot_k``,
``probe_lr``, ``probe_epochs``, ``probe_val_acc1``, ``probe_train_samples`` (a linear probe's
chosen setting). Records are written atomically, so a reader sees a whole record or
none; readers still never trust a file (a disk may fill, a person may edit one) and report a
bad file instead of raising, because one broken file must not hide a whole sweep's results.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from core.atomic import atomic_write_json

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
"""Version of the record format; bump it when a key changes meaning or is removed."""

REQUIRED_KEYS: tuple[str, ...] = (
    # clip_benchmark's own keys, as its CLI dumps them
    "dataset",  # clip_benchmark dataset name, e.g. "wds/synth_shapes"; or an aggregate's, "vtab+"
    "model",  # open_clip architecture
    "pretrained",  # checkpoint path
    "task",  # zeroshot_classification | zeroshot_retrieval | linear_probe | linear_probe_<k>shot
    "metrics",  # dict as clip_benchmark returns it (non-finite values stored as null); probes:
    # lp_acc1, lp_acc5, lp_mean_per_class_recall (``metric`` reads them as acc1...);
    # aggregates: the members' means
    "language",
    # clipscale's keys
    "schema_version",
    "run_id",
    "model_name",
    "model_label",
    "arch",
    "data",
    "data_label",
    "samples",
    "samples_seen",  # step x global batch
    "gmacs",  # forward GMACs per image-text pair
    "compute",  # gmacs x samples_seen (GMACs)
    "step",
    "final",
    "family",  # sweep name, or "adhoc"
    "config_hash",
    "git_commit",
    "eval_seconds",
    "created",  # ISO 8601, UTC
)


def benchmark_name(name: str) -> str:
    """clip_benchmark's name of a local webdataset set (``wds/<name>``), as records hold it."""
    return name if name.startswith("wds/") else f"wds/{name}"


def paper_name(dataset: str) -> str:
    """A record's ``dataset`` as the paper's CSV names it: bare, without ``wds/``."""
    return dataset.removeprefix("wds/")


def metric(metrics: Mapping[str, Any], key: str) -> Any:
    """``metrics[key]``; for a linear probe, whose clip_benchmark names say ``lp_acc1`` where
    zero-shot says ``acc1``, ``metrics["lp_" + key]``; None if the record has neither."""
    return metrics.get(key, metrics.get(f"lp_{key}"))


def record_path(run_dir: str | os.PathLike[str], step: int, dataset: str, task: str) -> Path:
    """Where the record of ``dataset``/``task`` at ``step`` of the run in ``run_dir`` lives."""
    name = f"{dataset.replace('/', '_')}__{task}.json"
    return Path(run_dir) / "eval" / f"step_{int(step):08d}" / name


def check_record(record: Any) -> None:
    """Raise ValueError saying what is wrong with ``record``; return if it is a valid record."""
    if not isinstance(record, dict):
        raise ValueError(f"not a JSON object but {type(record).__name__}")
    for key in REQUIRED_KEYS:
        if key not in record:
            raise ValueError(f"missing key {key!r}")
    if record["schema_version"] != SCHEMA_VERSION:
        raise ValueError(f"schema_version {record['schema_version']!r}, expected {SCHEMA_VERSION}")
    if not isinstance(record["metrics"], dict):
        raise ValueError("'metrics' is not an object")


def _plain(value: Any) -> Any:
    # clip_benchmark returns acc5 = nan for sets of fewer than 5 classes; NaN is not JSON,
    # so it is stored as null (records_frame turns it back into NaN).
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_record(run_dir: str | os.PathLike[str], record: dict[str, Any]) -> Path:
    """Validate ``record`` and write it atomically to its ``record_path`` under ``run_dir``.

    Raises ValueError naming the first missing key (nothing is written then).
    """
    check_record(record)
    record = {**record, "metrics": {k: _plain(v) for k, v in record["metrics"].items()}}
    path = record_path(run_dir, record["step"], record["dataset"], record["task"])
    return atomic_write_json(path, record)


def read_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load one record; ValueError (with the reason) if it is unreadable or invalid."""
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"unreadable: {e}") from e
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid JSON: {e}") from e
    check_record(record)
    return record


def read_records(
    root: str | os.PathLike[str],
) -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
    """Every record under ``root`` (``root/*/eval/**/*.json``), never raising on a bad file.

    Returns ``(records, problems)``: the valid records, sorted by path, and one
    ``(path, reason)`` per file that is truncated, not JSON, missing keys or of another
    schema version. Temporary files of writers in flight are never matched (they end in .tmp).
    """
    records: list[dict[str, Any]] = []
    problems: list[tuple[Path, str]] = []
    for path in sorted(Path(root).glob("*/eval/**/*.json")):
        try:
            records.append(read_record(path))
        except ValueError as e:
            problems.append((path, str(e)))
    return records, problems


def records_frame(root: str | os.PathLike[str]) -> pd.DataFrame:
    """All valid records under ``root`` as a table, one row per record.

    The metrics are flattened into columns (``acc1``, ``acc5``, ``mean_per_class_recall``,
    ``image_retrieval_recall@5``, ...; NaN where a record has no such metric). Each problem
    file is logged as a warning with its reason and left out.
    """
    records, problems = read_records(root)
    for path, reason in problems:
        log.warning("skipping eval record %s: %s", path, reason)
    return records_to_frame(records)


def records_to_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """``records`` as a table with flattened metrics (see ``records_frame``)."""
    columns = [k for k in REQUIRED_KEYS if k != "metrics"]
    rows = [{k: v for k, v in r.items() if k != "metrics"} | r["metrics"] for r in records]
    metric_names = sorted({m for r in records for m in r["metrics"]})
    extra = sorted({k for row in rows for k in row} - set(columns) - set(metric_names))
    frame = pd.DataFrame(rows, columns=columns + extra + metric_names)
    for name in metric_names:
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(float)
    return frame
