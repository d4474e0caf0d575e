"""Evaluation stage: zero-shot classification and retrieval of one checkpoint.

The numbers must be comparable with the paper's, so the measuring is left entirely to
clip_benchmark's own code (dataset loader, classifier construction, metrics), wired the way
its CLI (``clip_benchmark/cli.py``) wires them for ``wds/`` datasets. This module only adds
resume (a record that exists is not recomputed) and the bookkeeping of the result store.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from evaluation import store

log = logging.getLogger(__name__)

TASKS = ("zeroshot_classification", "zeroshot_retrieval")
"""Tasks this stage runs (the paper's downstream evaluation)."""


def evaluate(
    cfg: DictConfig, run_dir: Path, checkpoint: str | Path, step: int, final: bool = True
) -> list[dict[str, Any]]:
    """Evaluate ``checkpoint`` (step ``step`` of the run in ``run_dir``) on ``cfg.eval.datasets``.

    Each dataset is read from ``root`` in clip_benchmark's ``wds/`` layout and scored with
    clip_benchmark's own metrics; one record per (dataset, task) is written to the store
    (``evaluation.store``). Returns the records of this step, one per dataset that has one:
    those just computed and those already in the store (those are not evaluated again; a
    store file that is unreadable is recomputed). A dataset whose root is missing is logged
    as an error and skipped, the others still run; an unknown task raises ValueError before
    anything runs. The model is only loaded if something is left to evaluate.
    """
    run_dir = Path(run_dir)
    datasets = list(cfg.eval.datasets)
    for ds in datasets:
        if ds.task not in TASKS:
            raise ValueError(
                f"eval dataset {ds.name}: unsupported task {ds.task!r}, not in {TASKS}"
            )
    done, todo = _split_done(run_dir, step, datasets)
    todo = [ds for ds in todo if _root_present(ds)]
    if not todo:
        return done
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, preprocess, tokenizer = _load_model(cfg.model.arch, checkpoint, device)
    base = _base_record(cfg, run_dir, checkpoint, step, final)
    new = []
    for ds in todo:
        start = time.perf_counter()
        metrics = _run_clip_benchmark(cfg.eval, ds, model, preprocess, tokenizer, device)
        record = {
            **base,
            "dataset": _benchmark_name(ds.name),
            "task": ds.task,
            "metrics": metrics,
            "eval_seconds": time.perf_counter() - start,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        path = store.write_record(run_dir, record)
        log.info("step %d %s %s: %s", step, record["dataset"], ds.task, metrics)
        # return what the store holds (a NaN metric is stored as null), so that a resumed
        # call returns the same records as the first one
        new.append(store.read_record(path))
    return done + new


def _benchmark_name(name: str) -> str:
    """clip_benchmark's name of a local webdataset set (``wds/<name>``)."""
    return name if name.startswith("wds/") else f"wds/{name}"


def _split_done(
    run_dir: Path, step: int, datasets: list[Any]
) -> tuple[list[dict[str, Any]], list[Any]]:
    """Records already in the store for ``step``, and the datasets still to evaluate."""
    done, todo = [], []
    for ds in datasets:
        path = store.record_path(run_dir, step, _benchmark_name(ds.name), ds.task)
        if not path.exists():
            todo.append(ds)
            continue
        try:
            done.append(store.read_record(path))
        except ValueError as e:
            log.warning("re-evaluating %s: stored record is bad (%s)", path, e)
            todo.append(ds)
    return done, todo


def _root_present(ds: Any) -> bool:
    """Whether ``ds.root`` holds the split clip_benchmark will read; logs an error if not."""
    root = Path(ds.root)
    if not root.is_dir():
        log.error("eval dataset %s: root %s does not exist; skipped", ds.name, root)
        return False
    if not (root / ds.split / "nshards.txt").is_file():
        log.error(
            "eval dataset %s: %s is not in clip_benchmark's wds layout (no %s/nshards.txt); skipped",
            ds.name,
            root,
            ds.split,
        )
        return False
    return True


def _load_model(arch: str, checkpoint: str | Path, device: str) -> tuple[Any, Any, Any]:
    """open_clip model (eval mode, on ``device``), its validation transform and tokenizer."""
    import open_clip

    from training.models import register_model_configs

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        # open_clip would take a missing path for a pretrained *tag* and fail obscurely
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    register_model_configs()  # the tiny clipscale archs
    model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=str(checkpoint))
    model = model.to(device).eval()
    return model, preprocess, open_clip.get_tokenizer(arch)


def _run_clip_benchmark(
    eval_cfg: Any, ds: Any, model: Any, preprocess: Any, tokenizer: Any, device: str
) -> dict[str, Any]:
    """clip_benchmark's metrics dict for one dataset, built as its CLI builds it."""
    from clip_benchmark.datasets.builder import build_dataset
    from clip_benchmark.metrics import zeroshot_classification, zeroshot_retrieval

    # task must be passed: with its default (classification) a retrieval set fails an assert
    dataset = build_dataset(
        _benchmark_name(ds.name),
        root=str(ds.root),
        transform=preprocess,
        split=ds.split,
        language="en",
        task=ds.task,
    )
    # As the CLI does for wds/ sets: webdataset batches (its collation keeps each image's
    # caption list intact for retrieval), the DataLoader only adds workers.
    loader = torch.utils.data.DataLoader(
        dataset.batched(eval_cfg.batch_size),
        batch_size=None,
        shuffle=False,
        num_workers=eval_cfg.workers,
    )
    # clip_benchmark opens torch.autocast(device, enabled=amp) without a dtype, so it inherits
    # the dtype of an enclosing autocast: bf16 on cuda; on cpu autocast is off (fp32).
    amp = device == "cuda"
    outer = torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    with outer:
        if ds.task == "zeroshot_classification":
            return zeroshot_classification.evaluate(
                model,
                loader,
                tokenizer,
                dataset.classes,
                dataset.templates,
                device=device,
                amp=amp,
            )
        return zeroshot_retrieval.evaluate(
            model,
            loader,
            tokenizer,
            recall_k_list=list(eval_cfg.recall_k),
            device=device,
            amp=amp,
        )


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
        "family": cfg.get("sweep") or "adhoc",
        "config_hash": meta.get("config_hash", "unknown"),
        "git_commit": meta.get("git_commit", "unknown"),
    }
