"""Checkpoints of one run: atomic files, completion markers, keep-latest-k, discovery on resume.

Layout (under ``<run_dir>/checkpoints/``):

- ``step_%08d.pt``: an intermediate checkpoint after that many optimizer steps.
- ``final.pt``: the checkpoint of the finished run (written once, never pruned).
- ``<checkpoint>.done``: its completion marker, a small JSON record (``step``, ``samples_seen``,
  ``final``, ``loss``, ``seconds``, ``skipped_samples``, ``skipped_shards``, ``file``, and
  ``pinned``: true for a trunk's fork checkpoints, which pruning never deletes). A
  checkpoint counts only once its marker exists: the ``.pt`` file is written to a temporary
  name, fsynced and renamed, and only then is the marker written (atomically too). A crash at
  any point leaves either a complete checkpoint or files that :func:`latest` ignores
  (``.*.tmp`` or a ``.pt`` without marker).

A checkpoint file is open_clip_train's format (``epoch``, ``name``, ``state_dict``,
``optimizer``, so ``open_clip.create_model_and_transforms(arch, pretrained=path)`` loads it)
plus ours: ``step``, ``samples_seen``, ``total_steps``, ``global_batch``, ``arch``, ``final``,
``loss`` (of the last finite step), ``pinned`` (a trunk's fork point), ``nonfinite_skipped`` (steps skipped for a non-finite
loss), ``seconds`` (training wall-clock over all attempts), ``resumed_from`` (step of the last
resume or None), ``skipped_samples`` and ``skipped_shards`` (unreadable data the loader
skipped), ``schedule`` (plain numbers), ``data`` (``segment_steps``, ``world`` and
``skipped_before_segment``, the skip counts a resume starts from), ``scaler`` (fp16
GradScaler state or None) and ``rng`` (every RNG state as tensors; rank 0's). It holds
only tensors, numbers, strings and containers, so ``torch.load(weights_only=True)`` reads it.

One process writes a run's checkpoints at a time (the launcher's job); :func:`save` therefore
deletes leftovers of dead attempts when it prunes.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.atomic import atomic_torch_save, atomic_write_json

FINAL = "final.pt"
MARKER_SUFFIX = ".done"
_STEP_RE = re.compile(r"^step_(\d{8})\.pt$")


def checkpoint_dir(run_dir: str | Path) -> Path:
    """Folder that holds a run's checkpoints."""
    return Path(run_dir) / "checkpoints"


def marker_path(path: str | Path) -> Path:
    """Completion marker of the checkpoint ``path``."""
    path = Path(path)
    return path.with_name(path.name + MARKER_SUFFIX)


def is_complete(path: str | Path) -> bool:
    """True when the checkpoint file and its completion marker both exist."""
    return Path(path).is_file() and marker_path(path).is_file()


def read_marker(path: str | Path) -> dict[str, Any]:
    """The JSON record of a complete checkpoint's marker."""
    return json.loads(marker_path(path).read_text())


def _step_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``step_*.pt`` file, complete or not, oldest first."""
    found = []
    folder = checkpoint_dir(run_dir)
    if folder.is_dir():
        for p in folder.iterdir():
            m = _STEP_RE.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
    return sorted(found)


def final(run_dir: str | Path) -> Path | None:
    """The run's complete final checkpoint, or None when the run has not finished."""
    path = checkpoint_dir(run_dir) / FINAL
    return path if is_complete(path) else None


def latest(run_dir: str | Path, at_most: int | None = None) -> Path | None:
    """Newest complete checkpoint: ``final.pt`` when the run finished, else the newest step one;
    with ``at_most``, the newest complete step checkpoint of a step <= ``at_most`` (a branch's
    fork from its trunk).

    Torn files (temporary names, a ``.pt`` without its marker) are ignored.
    """
    done = final(run_dir) if at_most is None else None
    if done is not None:
        return done
    complete = [p for s, p in _step_checkpoints(run_dir)
                if is_complete(p) and (at_most is None or s <= at_most)]
    return complete[-1] if complete else None


def load(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint onto the CPU; ``weights_only`` because files may come from elsewhere."""
    return torch.load(path, map_location="cpu", weights_only=True)


def _marker_record(path: Path, state: dict[str, Any]) -> dict[str, Any]:
    keys: tuple[str, ...] = ("step", "samples_seen", "final", "loss", "seconds", "resumed_from")
    keys += ("skipped_samples", "skipped_shards")
    return {"file": path.name, **{k: state.get(k) for k in keys}, "pinned": bool(state.get("pinned"))}


def save(run_dir: str | Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write ``state`` as the checkpoint of ``step``; return its path.

    ``state["final"]`` true writes ``final.pt`` (never pruned), else ``step_%08d.pt``. The file
    is written atomically, then its marker; then all but the newest ``keep`` complete step
    checkpoints are deleted (``keep`` < 1 counts as 1: the one just written always stays),
    except pinned ones (``state["pinned"]`` true: a trunk's fork points, which its branches
    start from).
    Once ``final.pt`` is complete the step checkpoints are of no more use for resuming and are
    all deleted, so a finished sweep holds one checkpoint per run.
    """
    state = {**state, "step": step}
    folder = checkpoint_dir(run_dir)
    path = folder / (FINAL if state.get("final") else f"step_{step:08d}.pt")
    atomic_torch_save(state, path)
    atomic_write_json(marker_path(path), _marker_record(path, state))
    prune(run_dir, keep)
    if state.get("final"):
        for _, step_path in _step_checkpoints(run_dir):
            _unlink(step_path)
    return path


def _unlink(path: Path) -> None:
    # The marker goes first: a crash in between leaves an unmarked file, which is ignored.
    marker_path(path).unlink(missing_ok=True)
    path.unlink(missing_ok=True)


def prune(run_dir: str | Path, keep: int) -> None:
    """Keep the newest ``max(keep, 1)`` complete step checkpoints and every pinned one; delete
    torn leftovers."""
    steps = _step_checkpoints(run_dir)
    complete = [p for _, p in steps if is_complete(p)]
    for path in complete[: -max(keep, 1)]:
        if not read_marker(path).get("pinned"):
            _unlink(path)
    for _, path in steps:
        if not is_complete(path):
            _unlink(path)
    folder = checkpoint_dir(run_dir)
    for tmp in folder.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def rng_state() -> dict[str, Any]:
    """Every RNG state of this process, as tensors and numbers (``weights_only``-loadable)."""
    version, py_state, gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": torch.tensor(py_state, dtype=torch.int64),
        "python_version": version,
        "python_gauss": gauss,
        "numpy": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
        "numpy_pos": int(np_pos),
        "numpy_has_gauss": int(np_has_gauss),
        "numpy_gauss": float(np_gauss),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the RNG states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    py_state = tuple(int(x) for x in state["python"].tolist())
    random.setstate((state["python_version"], py_state, state["python_gauss"]))
    np_keys = state["numpy"].numpy().astype(np.uint32)
    np.random.set_state(
        ("MT19937", np_keys, state["numpy_pos"], state["numpy_has_gauss"], state["numpy_gauss"])
    )
