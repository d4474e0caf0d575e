"""Evaluation stage: zero-shot classification, retrieval and linear probes of one checkpoint.

The numbers must be comparable with the paper's, so zero-shot and retrieval metrics are left
to clip_benchmark's own code (dataset loader, classifier construction, metrics), wired the way
its CLI (``clip_benchmark/cli.py``) wires them for ``wds/`` datasets. Image features of a
classification set are computed once and shared by its zero-shot record and its linear probes
(``evaluation.probe``; clip_benchmark's asserts CUDA). This module adds resume (a record that
exists is not recomputed), the paper's aggregates (``eval.aggregates``) and the bookkeeping of
the result store. bf16 autocast on GPU, fp32 on CPU.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

import store
from core.identity import trunk_id
from core.schema import Schedule, Task, schedule_of
from evaluation.checkpoint import load_model
from evaluation.probe import linear_probe, probe_task

log = logging.getLogger(__name__)

AGGREGATE_TASK = Task.zeroshot_classification
"""Task of the aggregates' members and of their own records."""


@dataclass(frozen=True)
class Job:
    """One record to produce: a dataset entry, the record's task, the probe's k (or None)."""

    ds: Any
    task: str
    k: int | None = None

    @property
    def dataset(self) -> str:
        return store.benchmark_name(self.ds.name)


def evaluate(
    cfg: DictConfig, run_dir: Path, checkpoint: str | Path, step: int, final: bool = True
) -> list[dict[str, Any]]:
    """Evaluate ``checkpoint`` (step ``step`` of the run in ``run_dir``) on ``cfg.eval``.

    Each dataset is read from ``root`` in clip_benchmark's ``wds/`` layout; one record per
    (dataset, task) is written to the store (``store``): zero-shot classification
    and retrieval with clip_benchmark's metrics, linear probes one per ``eval.probe.fewshot_k``
    (task ``linear_probe`` / ``linear_probe_<k>shot``, metrics ``lp_acc1``...). Then every
    ``eval.aggregates`` entry whose members all have a record gets a record of its own.
    Returns the records of this step: those just computed and those already in the store
    (not evaluated again; a store file that is unreadable is recomputed). Datasets whose root
    is missing are logged as errors up front, naming the dataset, and skipped; the others
    still run. An unknown task raises ValueError before anything runs. The model is only
    loaded if something is left to evaluate; a bad checkpoint raises
    ``evaluation.checkpoint.CheckpointError``.
    """
    run_dir = Path(run_dir)
    jobs = plan_jobs(cfg.eval)
    done, todo = _split_done(run_dir, step, jobs)
    missing_roots([j.ds for j in todo])  # reported up front, all at once
    todo = [j for j in todo if not _problems(j.ds)]
    new: list[dict[str, Any]] = []
    base = _base_record(cfg, run_dir, checkpoint, step, final)
    if todo:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model, preprocess, tokenizer = load_model(cfg.model.arch, checkpoint, device)
        ctx = _Context(cfg.eval, model, preprocess, tokenizer, device)
        for group in _by_dataset(todo):
            for job, metrics, extra, seconds in ctx.run(group):
                new.append(_write(run_dir, base, job.dataset, job.task, metrics, extra, seconds))
                log.info("step %d %s %s: %s", step, job.dataset, job.task, metrics)
    records = done + new
    return records + _aggregates(cfg.eval, run_dir, base, step, records)


def plan_jobs(eval_cfg: Any) -> list[Job]:
    """The records ``eval_cfg`` asks for; ValueError on an unknown task."""
    jobs = []
    tasks = tuple(t.value for t in Task)
    for ds in eval_cfg.datasets:
        if ds.task not in tasks:  # the schema refuses one already; a config built by hand may not
            raise ValueError(
                f"eval dataset {ds.name}: unsupported task {ds.task!r}, not in {tasks}"
            )
        if ds.task == Task.linear_probe:
            jobs += [Job(ds, probe_task(int(k)), int(k)) for k in eval_cfg.probe.fewshot_k]
        else:
            jobs.append(Job(ds, ds.task))
    return jobs


def missing_roots(datasets: list[Any]) -> list[tuple[str, str]]:
    """``(dataset name, reason)`` for each dataset whose data is not there, each logged as an
    error; a linear probe also needs its ``train_split``."""
    out: list[tuple[str, str]] = []
    for ds in datasets:
        for reason in _problems(ds):
            if (ds.name, reason) not in out:
                log.error("eval dataset %s: %s; skipped", ds.name, reason)
                out.append((ds.name, reason))
    return out


def _problems(ds: Any) -> list[str]:
    splits = [ds.split] + ([ds.train_split] if ds.task == Task.linear_probe else [])
    found = (_root_problem(Path(ds.root), split) for split in splits)
    return list(dict.fromkeys(p for p in found if p))


def _root_problem(root: Path, split: str) -> str | None:
    if not root.is_dir():
        return f"root {root} does not exist"
    if not (root / split / "nshards.txt").is_file():
        return f"{root} is not in clip_benchmark's wds layout (no {split}/nshards.txt)"
    return None


def _split_done(
    run_dir: Path, step: int, jobs: list[Job]
) -> tuple[list[dict[str, Any]], list[Job]]:
    """Records already in the store for ``step``, and the jobs still to run."""
    done, todo = [], []
    for job in jobs:
        record = _stored(store.record_path(run_dir, step, job.dataset, job.task))
        if record is None:
            todo.append(job)
        else:
            done.append(record)
    return done, todo


def _stored(path: Path) -> dict[str, Any] | None:
    """The valid record at ``path``, or None (absent, or bad: then logged for recompute)."""
    if not path.exists():
        return None
    try:
        return store.read_record(path)
    except ValueError as e:
        log.warning("re-evaluating %s: stored record is bad (%s)", path, e)
        return None


def _by_dataset(jobs: list[Job]) -> list[list[Job]]:
    """Jobs grouped by dataset (name, root, split), first-seen order: a group shares features."""
    groups: dict[tuple[str, str, str, bool], list[Job]] = {}
    for job in jobs:
        key = (job.ds.name, str(job.ds.root), job.ds.split, job.task == Task.zeroshot_retrieval)
        groups.setdefault(key, []).append(job)
    return list(groups.values())


def _write(
    run_dir: Path, base: dict[str, Any], dataset: str, task: str, metrics: dict[str, Any],
    extra: dict[str, Any], seconds: float,
) -> dict[str, Any]:
    record = {
        **base,
        **extra,
        "dataset": dataset,
        "task": task,
        "metrics": metrics,
        "eval_seconds": seconds,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    # return what the store holds (a NaN metric is stored as null), so that a resumed call
    # returns the same records as the first one
    return store.read_record(store.write_record(run_dir, record))


def _autocast(device: str) -> Any:
    # clip_benchmark opens torch.autocast(device, enabled=amp) without a dtype, so it inherits
    # the dtype of an enclosing autocast: bf16 on cuda; on cpu autocast is off (fp32).
    if device == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class _FeatureModel:
    """Stands in for the model in clip_benchmark's zero-shot ``evaluate`` when the image
    features are already computed: images are the features, text goes to the model."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def encode_text(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.model.encode_text(*args, **kwargs)

    def encode_image(self, features: torch.Tensor) -> torch.Tensor:
        return features


class _FeatureBatches:
    """Stands in for clip_benchmark's loader: batches of (features, targets), ``.dataset.classes``."""

    def __init__(self, feats: torch.Tensor, targets: torch.Tensor, classes: list[str], bs: int):
        self.feats, self.targets, self.bs = feats, targets, bs
        self.dataset = SimpleNamespace(classes=classes)

    def __len__(self) -> int:
        return (len(self.feats) + self.bs - 1) // self.bs

    def __iter__(self) -> Any:
        for i in range(0, len(self.feats), self.bs):
            yield self.feats[i : i + self.bs], self.targets[i : i + self.bs]


class LoadedSets:
    """Batches of evaluation sets as clip_benchmark's loader gave them, kept for this process.

    Every checkpoint is evaluated on the same files through the same deterministic validation
    transform, so a set is decoded once per process and its batches are served again to the
    next checkpoint (the demo evaluates twelve). The key holds the set (name, root, split,
    task), the transform's ``repr``, the batch size and the files' sizes and modification
    times; a set larger than ``max_bytes`` (real benchmarks) is streamed each time instead.
    """

    def __init__(self, max_bytes: int = 512 * 2**20):
        self.max_bytes = max_bytes
        self.sets: dict[tuple[Any, ...], list[Any]] = {}

    @staticmethod
    def key(ds: Any, split: str, task: str, preprocess: Any, batch_size: int) -> tuple[Any, ...]:
        folder = Path(ds.root) / split
        files = tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                             for p in folder.iterdir() if p.is_file())) if folder.is_dir() else ()
        return (store.benchmark_name(ds.name), str(Path(ds.root).resolve()), split, str(task),
                repr(preprocess), batch_size, files)

    def batches(self, key: tuple[Any, ...], loader: Any) -> Any:
        if key in self.sets:
            return list(self.sets[key])
        return self._load(key, loader)

    def _load(self, key: tuple[Any, ...], loader: Any) -> Any:
        kept: list[Any] | None = []
        size = self._size()
        for batch in loader:
            if kept is not None:
                kept.append(batch)
                size += _nbytes(batch)
                if size > self.max_bytes:
                    kept = None  # too large to keep: streamed, as before
            yield batch
        if kept is not None:
            self.sets[key] = kept

    def _size(self) -> int:
        return sum(_nbytes(b) for v in self.sets.values() for b in v)


def _nbytes(batch: Any) -> int:
    return sum(x.nbytes for x in batch if isinstance(x, torch.Tensor))


LOADED = LoadedSets()
"""This process's decoded evaluation sets."""


class _Context:
    """One loaded model and the eval settings: runs the jobs of one dataset."""

    def __init__(self, eval_cfg: Any, model: Any, preprocess: Any, tokenizer: Any, device: str):
        self.cfg, self.model, self.preprocess = eval_cfg, model, preprocess
        self.tokenizer, self.device = tokenizer, device
        self.amp = device == "cuda"

    def run(self, jobs: list[Job]) -> Any:
        """Yield ``(job, metrics, extra record keys, seconds)`` for each job of one dataset."""
        ds = jobs[0].ds
        if jobs[0].task == Task.zeroshot_retrieval:
            for job in jobs:
                start = time.perf_counter()
                yield job, self._retrieval(ds), {}, time.perf_counter() - start
            return
        start = time.perf_counter()
        dataset, feats, targets = self._features(ds, ds.split)
        shared = time.perf_counter() - start  # feature time is charged to every record using it
        train = None
        for job in jobs:
            start = time.perf_counter()
            extra: dict[str, Any] = {}
            if job.task == Task.zeroshot_classification:
                metrics = self._zeroshot(dataset, feats, targets)
            else:
                if train is None:
                    train = self._features(ds, ds.train_split)[1:]
                metrics, extra = linear_probe(
                    train[0], train[1], feats, targets, len(dataset.classes), int(job.k or -1),
                    self.cfg.probe, device=self.device,
                )
            yield job, metrics, extra, shared + time.perf_counter() - start

    def _dataset(self, ds: Any, split: str, task: str) -> tuple[Any, Any]:
        from clip_benchmark.datasets.builder import build_dataset  # heavy: not on a resume

        # task must be passed: with its default (classification) a retrieval set fails an assert
        dataset = build_dataset(
            store.benchmark_name(ds.name), root=str(ds.root), transform=self.preprocess,
            split=split, language="en", task=task,
        )
        # As the CLI does for wds/ sets: webdataset batches (its collation keeps each image's
        # caption list intact for retrieval), the DataLoader only adds workers.
        loader = torch.utils.data.DataLoader(
            dataset.batched(self.cfg.batch_size), batch_size=None, shuffle=False,
            num_workers=self.cfg.workers,
        )
        return dataset, loader

    def _loaded(self, ds: Any, split: str, task: str, loader: Any) -> Any:
        """The loader's batches, decoded and transformed once per process (:class:`LoadedSets`)."""
        key = LOADED.key(ds, split, task, self.preprocess, int(self.cfg.batch_size))
        return LOADED.batches(key, loader)

    def _features(self, ds: Any, split: str) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """The split's dataset, its L2-normalised image features (fp32, CPU) and targets."""
        dataset, loader = self._dataset(ds, split, Task.zeroshot_classification)
        feats, targets = [], []
        with torch.no_grad(), _autocast(self.device):
            for images, target in self._loaded(ds, split, Task.zeroshot_classification, loader):
                f = self.model.encode_image(images.to(self.device))
                feats.append(F.normalize(f, dim=-1).float().cpu())
                targets.append(target)
        return dataset, torch.cat(feats), torch.cat(targets)

    def _zeroshot(self, dataset: Any, feats: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        from clip_benchmark.metrics import zeroshot_classification  # heavy: not on a resume

        batches = _FeatureBatches(feats, targets, dataset.classes, int(self.cfg.batch_size))
        with _autocast(self.device):
            return zeroshot_classification.evaluate(
                _FeatureModel(self.model), batches, self.tokenizer, dataset.classes,
                dataset.templates, device=self.device, amp=self.amp,
            )

    def _retrieval(self, ds: Any) -> dict[str, Any]:
        from clip_benchmark.metrics import zeroshot_retrieval  # heavy: not on a resume

        _, loader = self._dataset(ds, ds.split, Task.zeroshot_retrieval)
        batches = self._loaded(ds, ds.split, Task.zeroshot_retrieval, loader)
        with _autocast(self.device):
            return zeroshot_retrieval.evaluate(
                self.model, batches, self.tokenizer, recall_k_list=list(self.cfg.recall_k),
                device=self.device, amp=self.amp,
            )


def _aggregates(
    eval_cfg: Any, run_dir: Path, base: dict[str, Any], step: int, records: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Records of ``eval_cfg.aggregates`` (name -> member datasets) for ``step``: stored ones,
    and new ones for each aggregate whose members all have a zero-shot record in ``records``.
    Metrics are the mean over the members that report them (e.g. mean_average_precision only
    from multi-label sets); the record lists its ``members``."""
    by_dataset = {r["dataset"]: r for r in records if r["task"] == AGGREGATE_TASK}
    out = []
    for name, members in eval_cfg.aggregates.items():
        members = [str(m) for m in members]
        path = store.record_path(run_dir, step, name, AGGREGATE_TASK)
        stored = _stored(path)
        if stored is not None and stored.get("members") == members:
            out.append(stored)
            continue
        absent = [m for m in members if store.benchmark_name(m) not in by_dataset]
        if absent:
            log.warning("aggregate %s not written for step %d: no record for %s",
                        name, step, ", ".join(absent))
            continue
        parts = [by_dataset[store.benchmark_name(m)] for m in members]
        metrics = {}
        for key in dict.fromkeys(k for r in parts for k in r["metrics"]):
            values = [r["metrics"][key] for r in parts if r["metrics"].get(key) is not None]
            metrics[key] = sum(values) / len(values) if values else None
        seconds = sum(float(r["eval_seconds"]) for r in parts)
        out.append(_write(run_dir, base, name, AGGREGATE_TASK, metrics, {"members": members},
                          seconds))
    return out


def _read_meta(run_dir: Path) -> dict[str, Any]:
    """The launcher's ``meta.json`` of the run, or {} if it is absent or unreadable."""
    path = run_dir / "meta.json"
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.warning("ignoring unreadable %s: %s", path, e)
        return {}
    return meta if isinstance(meta, dict) else {}


def _base_record(
    cfg: DictConfig, run_dir: Path, checkpoint: str | Path, step: int, final: bool
) -> dict[str, Any]:
    """The keys shared by every record of this checkpoint."""
    meta = _read_meta(run_dir)
    samples_seen = int(step) * int(cfg.model.global_batch)
    schedule = schedule_of(cfg.train)
    return {
        "model": cfg.model.arch,
        "pretrained": str(checkpoint),
        "language": "en",
        "schema_version": store.SCHEMA_VERSION,
        "run_id": meta.get("run_id", run_dir.name),
        "model_name": cfg.model.name,
        "model_label": cfg.model.label,
        "arch": cfg.model.arch,
        "data": cfg.data.name,
        "data_label": cfg.data.label,
        "samples": cfg.samples.name,
        "samples_seen": samples_seen,
        "gmacs": float(cfg.model.gmacs),
        "compute": float(cfg.model.gmacs) * samples_seen,
        "step": int(step),
        "final": bool(final),
        "family": cfg.sweep or "adhoc",
        "config_hash": meta.get("config_hash", "unknown"),
        "git_commit": meta.get("git_commit", "unknown"),
        # cooled-down (const_cooldown) and cosine points are separate families in a fit
        "schedule": str(schedule),
        "trunk_id": trunk_id(cfg) if schedule == Schedule.const_cooldown else None,
    }
