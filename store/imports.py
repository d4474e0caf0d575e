"""Other people's published CLIP results, read into ordinary store records.

``python -m evaluation import --format FORMAT PATH --root STORE`` (or ``import_results``)
turns a published results file into records of the store's format (:mod:`store.records`), one
per (model, checkpoint, downstream dataset, task), so the analysis fits them beside the user's
own runs. Each reader is one function of ``FORMATS``:

``scaling-laws-openclip``
    The 2022 paper's ``zeroshot_results.csv`` (LAION-AI/scaling-laws-openclip): GMACs per pair
    and samples seen from its own columns; families ``openclip`` (LAION) and ``openai``.
``scaling-laws-for-comparison``
    The 2025 follow-up's ``scaling_laws/data/all_results.csv.gz`` (LAION-AI/scaling-laws-for-
    comparison, Nezhurina et al.): one row per checkpoint (``epoch`` of ``total_epochs``),
    downstream dataset and ``eval_type``. GFLOPs per sample come from its ``model_profile.csv``
    (by ``model_simple_namespace``; found beside the data or up to three folders above it, or
    ``--model-profile``), else from a ``gflops`` column. Samples seen at a checkpoint =
    ``total_samples_seen * epoch / total_epochs``. Families are model type x pretraining data x
    schedule, e.g. ``clip-datacomp-cosine``, ``mammut-relaion-const`` (an ``eval_type`` other
    than ``similarity`` is appended). Every hyper-parameter variant is a run of its own (the run
    id hashes lr, batch, warm-up, ...; a fit takes the frontier). With a ``cosine`` (or
    ``const-cooldown``) schedule only the last epoch is final, the others are intermediate
    records (learning curves); with ``const`` every checkpoint past warm-up is a point of its own
    (run id ``...-e<epoch>``, final), as the follow-up fits them.
``clip-benchmark``
    A folder (searched recursively) or file of ``clip_benchmark eval`` JSON outputs
    (``{"dataset", "model", "pretrained", "task", "metrics", "language"}``) for open_clip models.
``openclip-results``
    open_clip's ``docs/openclip_results.csv``: one row per pretrained model (``name``,
    ``pretrained``), one column per evaluation set under its display name, each holding that
    set's main metric (DataComp's: accuracy, mean per-class recall, mean recall@1 for retrieval,
    ...). The ``Average`` column is not imported.

For the last two, GFLOPs per pair come from open_clip's ``docs/model_profile.csv`` (the copy in
``core/reference``, or ``--model-profile`` with columns ``model`` and ``gflops`` or ``gmacs``),
and samples seen from the pretrained tag where it says so (``laion2b_s34b_b79k`` -> 34e9) or
from ``--samples-map FILE`` (CSV: ``pretrained,samples_seen`` and optionally ``model``; it wins
over the tag). Their family is ``openclip-<data of the tag>`` (``openclip-laion2b``,
``openclip-datacomp_xl``, ``openclip-openai``). ``--family NAME`` puts every imported record in
family ``NAME`` instead, for any format.

Records say where they come from: ``imported_from`` (the format) and ``compute_unit`` (``GMACs``
or ``GFLOPs``: the store's ``gmacs`` field holds the source's own number, and one family is
always one unit). A row or file that cannot be placed (a model without a profile entry, a tag
without samples seen, a dataset with no accuracy or recall) is skipped and counted with its
reason; a malformed file is refused as a whole with :class:`ImportFormatError`, naming the file,
line and column at fault.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import store
from core.errors import UserError
from core.reference import MODEL_PROFILE_CSV, PAPER_CSV, model_label
from store.export import REFERENCE_COLUMNS, paper_record, write_records


class ImportFormatError(UserError):
    """A malformed results file: ``str()`` is one line naming the file, line and column."""

    def __init__(self, path: str | os.PathLike[str], line: int, message: str,
                 column: int | None = None, column_name: str | None = None):  # fmt: skip
        self.path, self.line, self.column, self.column_name = Path(path), line, column, column_name
        where = f"{self.path}, line {line}"
        if column is not None:
            where += f", column {column}" + (f" ({column_name})" if column_name else "")
        elif column_name:
            where += f", column {column_name}"
        super().__init__(f"{where}: {message}")


@dataclass
class Options:
    """What the user gave besides the file: ``family`` (overrides every record's family),
    ``model_profile``, ``samples_map`` (paths or None) and ``datasets`` (keep only these)."""

    family: str | None = None
    model_profile: Path | None = None
    samples_map: Path | None = None
    datasets: Sequence[str] | None = None


@dataclass
class Imported:
    """A reader's result: the records, and why other rows were left out (reason -> count)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)


# --- reading files ----------------------------------------------------------------------------


def _open_text(path: Path) -> io.TextIOBase:
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


@dataclass
class Row:
    """One CSV row: its cells by column name, and where it is for error messages."""

    path: Path
    line: int
    cells: dict[str, str]
    columns: dict[str, int]  # name -> 1-based column number

    def has(self, name: str) -> bool:
        return self.cells.get(name, "") not in ("", None)

    def text(self, name: str) -> str:
        value = self.cells.get(name, "")
        if value in ("", None):
            raise self.error(name, "empty cell where a value is needed")
        return value.strip()

    def number(self, name: str, required: bool = True) -> float | None:
        """The cell as a float; None if empty (or "nan") and not ``required``."""
        value = (self.cells.get(name) or "").strip()
        if value == "" or value.lower() == "nan":
            if required:
                raise self.error(name, "empty cell where a number is needed")
            return None
        try:
            number = float(value)
        except ValueError:
            raise self.error(name, f"{value[:40]!r} is not a number") from None
        if math.isinf(number):
            raise self.error(name, f"{value!r} is not a finite number")
        return number

    def error(self, name: str, message: str) -> ImportFormatError:
        return ImportFormatError(self.path, self.line, message, self.columns.get(name), name)


def csv_rows(path: Path, required: Sequence[str]) -> Iterator[Row]:
    """The rows of a CSV (gzip if ``.gz``), checked for the ``required`` columns and for the
    header's number of fields; line numbers are the file's physical lines."""
    with _open_text(path) as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise ImportFormatError(path, 1, "empty file: no header") from None
        except (csv.Error, UnicodeDecodeError, OSError, EOFError) as e:
            raise ImportFormatError(path, 1, f"unreadable: {e}") from None
        names = [name.strip() for name in header]
        columns = {name: i + 1 for i, name in enumerate(names)}
        for name in required:
            if name not in columns:
                raise ImportFormatError(path, 1, f"no column {name!r} in the header "
                                        f"({len(header)} columns)", column_name=name)  # fmt: skip
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except (csv.Error, UnicodeDecodeError, OSError, EOFError) as e:
                raise ImportFormatError(path, reader.line_num, f"unreadable: {e}") from None
            if not cells:
                continue
            if len(cells) != len(header):
                at = min(len(cells), len(header))  # the first missing or extra field
                raise ImportFormatError(path, reader.line_num, f"{len(cells)} fields where the "
                                        f"header has {len(header)}", at + 1,
                                        names[at] if at < len(names) else None)  # fmt: skip
            yield Row(path, reader.line_num, dict(zip(names, cells, strict=True)), columns)


def _position(text: str, key: str) -> tuple[int, int]:
    """(line, column) of ``"key"`` in a JSON text, (1, 1) if it is not there."""
    at = text.find(f'"{key}"')
    if at < 0:
        return 1, 1
    line = text.count("\n", 0, at) + 1
    return line, at - (text.rfind("\n", 0, at) + 1) + 1


# --- shared pieces ----------------------------------------------------------------------------

_SAMPLES_TAG = re.compile(r"(?:^|_)s(\d+(?:\.\d+)?)([kmbt])(?=_|$)", re.IGNORECASE)
_UNITS = {"k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}
_METRIC = re.compile(
    r"^(acc1|acc5|mean_per_class_recall|mean_average_precision|(image|text)_retrieval_recall@\d+)$"
)
RETRIEVAL = re.compile(r"^(image|text)_retrieval_recall@\d+$|^mean_recall@\d+$")


def samples_from_tag(tag: str) -> float | None:
    """Samples seen written in an open_clip pretrained tag: ``laion2b_s34b_b79k`` -> 34e9."""
    found = _SAMPLES_TAG.search(Path(tag).name)
    return float(found.group(1)) * _UNITS[found.group(2).lower()] if found else None


def data_of_tag(tag: str) -> str:
    """The pretraining data an open_clip tag names: the part before its samples or epochs
    token (``laion2b_s34b_b79k`` -> ``laion2b``, ``laion400m_e32`` -> ``laion400m``)."""
    head = re.split(r"_(?:s\d|e\d)", Path(tag).name, maxsplit=1)[0]
    return head or tag


def pretty_count(n: float) -> str:
    """34e9 -> ``34B``, 1.28e9 -> ``1.28B``, 6.4e6 -> ``6.4M``."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.3g}"


def safe_id(*parts: Any) -> str:
    """Parts joined by ``-`` with anything but letters, digits, ``_ . -`` replaced by ``_``."""
    return "-".join(re.sub(r"[^A-Za-z0-9._-]+", "_", str(p)).strip("_") for p in parts if p != "")


def short_hash(*parts: Any) -> str:
    return hashlib.sha1(json.dumps(parts, default=str).encode()).hexdigest()[:8]


def _mtime(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="seconds")


def make_record(
    *, run_id: str, dataset: str, task: str, metrics: dict[str, float], arch: str, label: str,
    data: str, samples_seen: float, compute_per_sample: float, unit: str, family: str,
    pretrained: str, fmt: str, created: str, step: int = 0, final: bool = True,
    samples: str | None = None, language: str = "en",
) -> dict[str, Any]:  # fmt: skip
    """A store record (every key of ``store.REQUIRED_KEYS``) of one imported result."""
    return {
        "dataset": dataset, "model": arch, "pretrained": pretrained, "task": task,
        "metrics": metrics, "language": language, "schema_version": store.SCHEMA_VERSION,
        "run_id": run_id, "model_name": arch, "model_label": label, "arch": arch,
        "data": data, "data_label": data, "samples": samples or pretty_count(samples_seen),
        "samples_seen": samples_seen, "gmacs": compute_per_sample,
        "compute": compute_per_sample * samples_seen, "step": step, "final": final,
        "family": family, "config_hash": fmt, "git_commit": "import", "eval_seconds": 0.0,
        "created": created, "imported_from": fmt, "compute_unit": unit,
    }  # fmt: skip


def task_of(metrics: dict[str, float]) -> str | None:
    """clip_benchmark's task for a set of metrics: retrieval if it has recalls, classification
    if it has an accuracy, None (not importable) otherwise."""
    if any(RETRIEVAL.match(k) for k in metrics):
        return "zeroshot_retrieval"
    if metrics.keys() & {"acc1", "mean_per_class_recall", "mean_average_precision"}:
        return "zeroshot_classification"
    return None


@dataclass
class Profile:
    """Compute per image-text pair by model name, in ``unit``, read from ``path``."""

    path: Path
    unit: str
    per_model: dict[str, float]

    def get(self, model: str) -> float | None:
        for name in (model, model.removesuffix("-quickgelu"), model.replace("/", "-")):
            if name in self.per_model:
                return self.per_model[name]
        return None


def read_profile(path: Path, key: str = "model") -> Profile:
    """A model profile CSV: ``key`` column and ``gflops`` (GFLOPs) or ``gmacs`` (GMACs)."""
    with _open_text(path) as f:
        header = next(csv.reader(f), [])
    unit, column = ("GFLOPs", "gflops") if "gflops" in header else ("GMACs", "gmacs")
    per_model = {}
    for row in csv_rows(path, [key, column]):
        value = row.number(column, required=False)
        if value is not None and value > 0:
            per_model[row.text(key)] = value
    return Profile(path, unit, per_model)


def read_samples_map(path: Path | None) -> dict[tuple[str, str], float]:
    """``--samples-map``: (model or "*", pretrained) -> samples seen."""
    if path is None:
        return {}
    out = {}
    for row in csv_rows(path, ["pretrained", "samples_seen"]):
        seen = row.number("samples_seen")
        assert seen is not None
        if seen <= 0:
            raise row.error("samples_seen", f"{seen:g} is not a positive count")
        model = row.cells.get("model", "").strip() or "*"
        out[(model, row.text("pretrained"))] = seen
    return out


@dataclass
class OpenClipPlacement:
    """Where an open_clip pretrained model sits on the compute axis (clip-benchmark and
    openclip-results share it): its profile and the samples-seen mapping."""

    profile: Profile
    samples: dict[tuple[str, str], float]
    fmt: str
    family: str | None

    @classmethod
    def of(cls, options: Options, fmt: str) -> OpenClipPlacement:
        profile = read_profile(options.model_profile or MODEL_PROFILE_CSV)
        return cls(profile, read_samples_map(options.samples_map), fmt, options.family)

    def place(self, model: str, pretrained: str) -> tuple[float, float] | str:
        """(compute per pair, samples seen), or the reason it cannot be placed."""
        seen = self.samples.get((model, pretrained), self.samples.get(("*", pretrained)))
        if seen is None:
            seen = samples_from_tag(pretrained)
        if seen is None:
            return f"no samples seen in the pretrained tag and none in --samples-map: {pretrained}"
        per_pair = self.profile.get(model)
        if per_pair is None:
            return f"model not in the model profile {self.profile.path.name}: {model}"
        return per_pair, seen

    def record(self, model: str, pretrained: str, dataset: str, task: str,
               metrics: dict[str, float], created: str, prefix: str, language: str = "en",
               ) -> dict[str, Any] | str:  # fmt: skip
        placed = self.place(model, pretrained)
        if isinstance(placed, str):
            return placed
        per_pair, seen = placed
        tag = Path(pretrained).name if ("/" in pretrained or pretrained.endswith(".pt")) else pretrained
        run_id = safe_id(prefix, model, tag)
        if tag != pretrained:  # a checkpoint path: two paths with one file name stay apart
            run_id = safe_id(run_id, short_hash(pretrained))
        data = data_of_tag(tag)
        return make_record(
            run_id=run_id, dataset=dataset, task=task, metrics=metrics, arch=model,
            label=model_label(model), data=data, samples_seen=seen, compute_per_sample=per_pair,
            unit=self.profile.unit, family=self.family or safe_id("openclip", data),
            pretrained=pretrained, fmt=self.fmt, created=created, language=language,
        )  # fmt: skip


# --- the formats ------------------------------------------------------------------------------


def read_scaling_laws_openclip(path: Path, options: Options) -> Imported:
    """The 2022 paper's ``zeroshot_results.csv`` (what ``import-paper`` reads)."""
    out = Imported()
    numbers = ("samples_seen", "gmacs_total", "gmacs")
    metrics = [c for c in REFERENCE_COLUMNS if _METRIC.match(c)]
    for row in csv_rows(path, REFERENCE_COLUMNS):
        for name in numbers:
            row.number(name)
        for name in metrics:
            row.number(name, required=False)
        for name in ("arch", "downstream_dataset", "task", "upstream_dataset", "name"):
            row.text(name)
        record = paper_record(row.cells)
        if options.family:
            record["family"] = options.family
        record.update(imported_from="scaling-laws-openclip", compute_unit="GMACs")
        out.records.append(record)
    return out


FOLLOWUP_REQUIRED = ("model_simple_namespace", "total_samples_seen", "pretrain_dataset",
                     "downstream_dataset", "lr_scheduler", "epoch", "total_epochs")  # fmt: skip
FOLLOWUP_HYPER = ("model", "lr", "global_batch_size", "local_batch_size", "gpus", "warmup",
                  "beta1", "beta2", "wd", "total_epochs")  # fmt: skip
"""Columns that tell two hyper-parameter variants of one (model, data, samples) apart."""
FOLLOWUP_DATA = {"datacomp_1b": "datacomp", "relaion2b-en": "relaion", "dfn_2b": "dfn"}
FOLLOWUP_CREATED = "2025-06-05T00:00:00+00:00"
"""``created`` of the follow-up's records: its arXiv date (2506.04598), so a re-import is a no-op."""


def _find_profile(path: Path, given: Path | None) -> Path | None:
    if given is not None:
        return given
    for folder in [path.parent, *list(path.parent.parents)[:3]]:
        if (folder / "model_profile.csv").is_file():
            return folder / "model_profile.csv"
    return None


def _followup_metrics(row: Row) -> dict[str, float]:
    """The row's accuracy and recall columns as fractions: the release holds some in percent
    (its own ``main.py`` takes ``1 - x if x < 1 else 100 - x`` as the error); a value above 1
    is read as percent here."""
    metrics = {}
    for name in row.columns:
        if _METRIC.match(name):
            value = row.number(name, required=False)
            if value is not None:
                metrics[name] = value / 100 if value > 1 else value
    return metrics


def _followup_record(row: Row, profile: Profile | None, options: Options,
                     ) -> dict[str, Any] | str:  # fmt: skip
    namespace = row.text("model_simple_namespace")
    simple, _, kind = namespace.rpartition("_")
    if not simple:
        raise row.error("model_simple_namespace", f"{namespace!r} is not <model>_<type>")
    seen_total = row.number("total_samples_seen")
    epoch, epochs = row.number("epoch"), row.number("total_epochs")
    assert seen_total is not None and epoch is not None and epochs is not None
    if epochs <= 0 or not 0 < epoch <= epochs:
        raise row.error("epoch", f"epoch {epoch:g} of {epochs:g}: not in 1..total_epochs")
    per_sample = profile.get(namespace) if profile else None
    if per_sample is None and row.has("gflops"):
        per_sample = row.number("gflops")
    if per_sample is None:
        return f"model not in the model profile: {namespace}"
    metrics = _followup_metrics(row)
    task = task_of(metrics)
    dataset = row.text("downstream_dataset")
    if task is None:
        return f"no accuracy or recall metric: {dataset}"
    schedule, pretrain = row.text("lr_scheduler"), row.text("pretrain_dataset")
    eval_type = row.cells.get("eval_type", "").strip() or "similarity"
    if schedule == "const" and row.has("warmup") and row.has("global_batch_size"):
        steps = seen_total / (row.number("global_batch_size") or 1)
        if (row.number("warmup") or 0) / steps > epoch / epochs:
            return "const schedule, checkpoint still in warm-up"
    data = FOLLOWUP_DATA.get(pretrain, pretrain)
    family = safe_id(kind, data, schedule) + ("" if eval_type == "similarity" else f"-{safe_id(eval_type)}")  # fmt: skip
    seen = seen_total * epoch / epochs
    hyper = [row.cells.get(c, "").strip() for c in FOLLOWUP_HYPER]
    run_id = safe_id("fu", namespace, data, schedule, pretty_count(seen_total),
                     short_hash(namespace, pretrain, schedule, seen_total, eval_type, hyper))  # fmt: skip
    final = epoch == epochs
    if schedule == "const":  # every checkpoint of a constant schedule is a point of its own
        run_id, final = safe_id(run_id, f"e{int(epoch)}"), True
    return make_record(
        run_id=run_id, dataset=dataset, task=task, metrics=metrics,
        arch=row.cells.get("model", "").strip() or namespace, label=model_label(simple),
        data=pretrain, samples_seen=seen, compute_per_sample=per_sample,
        unit=profile.unit if profile and profile.get(namespace) else "GFLOPs",
        family=options.family or family, pretrained=row.cells.get("name", "").strip() or run_id,
        fmt="scaling-laws-for-comparison", created=FOLLOWUP_CREATED, step=int(epoch),
        final=final, samples=pretty_count(seen),
    )  # fmt: skip


def read_scaling_laws_for_comparison(path: Path, options: Options) -> Imported:
    """The 2025 follow-up's ``all_results.csv.gz`` (see the module docstring)."""
    out = Imported()
    profile_path = _find_profile(path, options.model_profile)
    profile = read_profile(profile_path, "model_simple_namespace") if profile_path else None
    for row in csv_rows(path, FOLLOWUP_REQUIRED):
        if profile is None and "gflops" not in row.columns:
            raise UserError(f"{path}: no model_profile.csv beside it or above it and no gflops "
                            "column: give --model-profile (the release's model_profile.csv)")  # fmt: skip
        if options.datasets and row.cells["downstream_dataset"] not in options.datasets:
            continue
        record = _followup_record(row, profile, options)
        if isinstance(record, str):
            out.skipped[record] += 1
        else:
            out.records.append(record)
    return out


def _benchmark_json(path: Path) -> dict[str, Any]:
    """One ``clip_benchmark eval`` output, checked."""
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        result = json.loads(text)
    except json.JSONDecodeError as e:
        raise ImportFormatError(path, e.lineno, f"invalid JSON: {e.msg}", e.colno) from None
    if not isinstance(result, dict):
        raise ImportFormatError(path, 1, "not a clip_benchmark result: a JSON object is expected", 1)
    for key, kind in (("dataset", str), ("model", str), ("pretrained", str), ("task", str),
                      ("metrics", dict)):  # fmt: skip
        if key not in result:
            raise ImportFormatError(path, 1, f"missing key {key!r}", 1)
        if not isinstance(result[key], kind):
            line, col = _position(text, key)
            raise ImportFormatError(path, line, f"{key!r} is not {'a string' if kind is str else 'an object'}", col)  # fmt: skip
    for name, value in result["metrics"].items():
        if value is not None and not isinstance(value, (int, float)):
            line, col = _position(text, name)
            raise ImportFormatError(path, line, f"metric {name!r} is not a number", col)
    return result


def read_clip_benchmark(path: Path, options: Options) -> Imported:
    """A folder (recursively) or file of ``clip_benchmark eval`` JSON outputs."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.json") if p.is_file())
        if not files:
            raise UserError(f"{path}: no .json files (clip_benchmark eval outputs) in it")
    elif path.is_file():
        files = [path]
    else:
        raise UserError(f"{path}: no such file or folder")
    place = OpenClipPlacement.of(options, "clip-benchmark")
    out, seen = Imported(), set()
    for file in files:
        result = _benchmark_json(file)
        metrics = {k: float(v) for k, v in result["metrics"].items()
                   if isinstance(v, (int, float)) and math.isfinite(v)}  # fmt: skip
        dataset = store.paper_name(result["dataset"])
        if options.datasets and dataset not in options.datasets:
            continue
        language = result.get("language") or "en"
        if isinstance(language, list):
            language = ",".join(map(str, language))
        if language != "en":
            out.skipped[f"language {language} (only en results are fit)"] += 1
            continue
        record = place.record(result["model"], result["pretrained"], dataset, result["task"],
                              metrics, _mtime(file), "cb")  # fmt: skip
        if isinstance(record, str):
            out.skipped[record] += 1
            continue
        key = (record["run_id"], dataset, record["task"])
        if key in seen:
            out.skipped[f"a second result for the same model, dataset and task: {file.name}"] += 1
            continue
        seen.add(key)
        out.records.append(record)
    return out


OPENCLIP_SETS: dict[str, tuple[str, str]] = {
    "ImageNet 1k": ("imagenet1k", "acc1"),
    "Caltech-101": ("vtab/caltech101", "mean_per_class_recall"),
    "CIFAR-10": ("cifar10", "acc1"),
    "CIFAR-100": ("vtab/cifar100", "acc1"),
    "CLEVR Counts": ("vtab/clevr_count_all", "acc1"),
    "CLEVR Distance": ("vtab/clevr_closest_object_distance", "acc1"),
    "Country211": ("country211", "acc1"),
    "Describable Textures": ("vtab/dtd", "acc1"),
    "EuroSAT": ("vtab/eurosat", "acc1"),
    "FGVC Aircraft": ("fgvc_aircraft", "mean_per_class_recall"),
    "Food-101": ("food101", "acc1"),
    "GTSRB": ("gtsrb", "acc1"),
    "ImageNet Sketch": ("imagenet_sketch", "acc1"),
    "ImageNet v2": ("imagenetv2", "acc1"),
    "ImageNet-A": ("imagenet-a", "acc1"),
    "ImageNet-O": ("imagenet-o", "acc1"),
    "ImageNet-R": ("imagenet-r", "acc1"),
    "KITTI Vehicle Distance": ("vtab/kitti_closest_vehicle_distance", "acc1"),
    "MNIST": ("mnist", "acc1"),
    "ObjectNet": ("objectnet", "acc1"),
    "Oxford Flowers-102": ("vtab/flowers", "mean_per_class_recall"),
    "Oxford-IIIT Pet": ("vtab/pets", "mean_per_class_recall"),
    "Pascal VOC 2007": ("voc2007", "acc1"),
    "PatchCamelyon": ("vtab/pcam", "acc1"),
    "Rendered SST2": ("renderedsst2", "acc1"),
    "RESISC45": ("vtab/resisc45", "acc1"),
    "Stanford Cars": ("cars", "acc1"),
    "STL-10": ("stl10", "acc1"),
    "SUN397": ("sun397", "acc1"),
    "SVHN": ("vtab/svhn", "acc1"),
    "Flickr": ("flickr30k", "mean_recall@1"),
    "MSCOCO": ("mscoco_captions", "mean_recall@1"),
    "WinoGAViL": ("winogavil", "jaccard_score_10-12"),
    "iWildCam": ("wilds/iwildcam", "F1-macro_all"),
    "Camelyon17": ("wilds/camelyon17", "acc1"),
    "FMoW": ("wilds/fmow", "acc_worst_region"),
    "Dollar Street": ("fairness/dollar_street", "acc_top5_wg"),
    "GeoDE": ("fairness/geode", "acc_wg"),
}
"""open_clip's column names -> (dataset, the metric the column holds): DataComp's evaluation
suite and main metrics (mlfoundations/datacomp ``tasklist.yml``; accuracy where it names none),
under the dataset names of this project's reference tables where those hold the same set."""


def read_openclip_results(path: Path, options: Options) -> Imported:
    """open_clip's ``docs/openclip_results.csv``: a row per pretrained model, a column per set."""
    place = OpenClipPlacement.of(options, "openclip-results")
    out, created = Imported(), _mtime(path)
    sets: list[str] | None = None
    for row in csv_rows(path, ["name", "pretrained"]):
        if sets is None:  # the header's evaluation columns, once
            named = [c for c in row.columns if c not in ("name", "pretrained") and not c.startswith("Average")]  # fmt: skip
            for column in named:
                if column not in OPENCLIP_SETS:
                    out.skipped[f"unknown evaluation column {column!r} (a column)"] += 1
            sets = [c for c in named if c in OPENCLIP_SETS]
        model, pretrained = row.text("name"), row.text("pretrained")
        placed = place.place(model, pretrained)
        if isinstance(placed, str):
            out.skipped[f"{placed} (a model)"] += 1
            continue
        for column in sets:
            dataset, metric = OPENCLIP_SETS[column]
            value = row.number(column, required=False)
            if value is None or (options.datasets and dataset not in options.datasets):
                continue
            if not 0 <= value <= 1:
                raise row.error(column, f"{value:g} is not a fraction in [0, 1]")
            task = "zeroshot_retrieval" if RETRIEVAL.match(metric) else "zeroshot_classification"
            record = place.record(model, pretrained, dataset, task, {metric: value}, created, "ocr")
            assert not isinstance(record, str)  # placed above
            out.records.append(record)
    return out


Reader = Callable[[Path, Options], Imported]


@dataclass(frozen=True)
class Format:
    """A reader and the options it reads (others are refused, so a typo is not ignored)."""

    read: Reader
    options: tuple[str, ...]
    default_path: Path | None = None


FORMATS: dict[str, Format] = {
    "scaling-laws-openclip": Format(read_scaling_laws_openclip, ("family",), PAPER_CSV),
    "scaling-laws-for-comparison": Format(
        read_scaling_laws_for_comparison, ("family", "model_profile", "datasets")
    ),
    "clip-benchmark": Format(
        read_clip_benchmark, ("family", "model_profile", "samples_map", "datasets")
    ),
    "openclip-results": Format(
        read_openclip_results, ("family", "model_profile", "samples_map", "datasets")
    ),
}
"""Format name -> its reader (one function each, above)."""


def read_results(fmt: str, path: str | os.PathLike[str] | None, options: Options) -> Imported:
    """Read ``path`` as format ``fmt`` (UserError for an unknown format or unused option,
    ImportFormatError for a malformed file)."""
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    spec = FORMATS[fmt]
    for name in ("family", "model_profile", "samples_map", "datasets"):
        if getattr(options, name) and name not in spec.options:
            raise UserError(f"--{name.replace('_', '-')} is not used by --format {fmt}")
    where = Path(path) if path is not None else spec.default_path
    if where is None:
        raise UserError(f"--format {fmt} needs the path of the file to import")
    for given in (options.model_profile, options.samples_map):
        if given is not None and not Path(given).is_file():
            raise UserError(f"{given}: no such file")
    return spec.read(where, options)


def import_results(
    fmt: str, path: str | os.PathLike[str] | None, root: str | os.PathLike[str],
    options: Options | None = None,
) -> tuple[int, int, Imported]:  # fmt: skip
    """Read ``path`` as ``fmt`` and write its records into the store under ``root`` (records
    already there unchanged are left alone). Returns (written, unchanged, what was read)."""
    imported = read_results(fmt, path, options or Options())
    written, unchanged = write_records(root, imported.records)
    return written, unchanged, imported
