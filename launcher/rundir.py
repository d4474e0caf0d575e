"""The run folder: everything a run owns lives under ``<root>/<run id>/``.

Layout::

    config.yaml       resolved config of the latest launch (rewritten atomically)
    meta.json         run id, config hash, identity, git commit, created (first launch)
    status.jsonl      append-only event log: one JSON object per line (see ``log_event``)
    train_log.jsonl   training progress (training stage)
    checkpoints/      training checkpoints (training stage)
    eval/             evaluation records (evaluation stage, the result store)

A run's state is read from its status log: ``new`` (no folder or no events), ``submitted``
(queued to SLURM, not started yet), ``partial`` (started, not finished: a relaunch resumes it
from its newest checkpoint), ``trained`` (training finished, evaluation outstanding: a relaunch
only evaluates), ``done``, ``failed``, or ``cancelled``. A ``cancelled`` event holds until the
point is submitted or started again: a job that logs on its way out after ``scancel`` (its
checkpoint-on-SIGTERM, say) does not make a cancelled point look resumable.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from core import states
from core.atomic import append_jsonl, atomic_write_json, atomic_write_text
from core.identity import config_hash, identity, run_id
from core.states import Event, RunState, run_state


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The project's current commit (``-dirty`` when the tree has changes), or ``unknown``."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=here, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def run_dir(cfg: DictConfig) -> Path:
    """Absolute folder of the run ``cfg`` describes."""
    return root_dir(str(cfg.root)) / run_id(cfg)


def root_dir(root: str) -> Path:
    """``root`` made absolute (``~`` expanded, links resolved; cached per working directory)."""
    return _root_dir(root, os.getcwd())


@lru_cache(maxsize=64)
def _root_dir(root: str, cwd: str) -> Path:
    return (Path(cwd) / Path(root).expanduser()).resolve()


def prepare(cfg: DictConfig) -> Path:
    """Create the run folder and write its config and metadata; returns the folder."""
    path = run_dir(cfg)
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    if not (path / "meta.json").exists():
        atomic_write_json(path / "meta.json", {
            "run_id": path.name,
            "config_hash": config_hash(cfg),
            "identity": identity(cfg),
            "git_commit": git_commit(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })
    return path


def log_event(path: Path, event: str, **fields: Any) -> None:
    """Append ``{"time", "event", "host", "pid", "git_commit", **fields}`` to the status log."""
    append_jsonl(Path(path) / "status.jsonl", {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "event": event,
        "host": socket.gethostname(), "pid": os.getpid(), "git_commit": git_commit(), **fields,
    })


def events(path: Path) -> list[dict[str, Any]]:
    """The status log's events; a torn last line (a writer killed mid-write) is ignored."""
    try:  # os-level calls: status over a sweep of 10k points reads 10k of these
        fd = os.open(os.path.join(path, "status.jsonl"), os.O_RDONLY)
    except FileNotFoundError:
        return []
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(fd)
    lines = b"".join(chunks).splitlines()
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:  # torn (JSONDecodeError), or not UTF-8
            continue
    return out


def state(path: Path, evs: list[dict[str, Any]] | None = None) -> RunState:
    """The run's :class:`~core.states.RunState`, from its status log (``evs``: its events,
    when already read)."""
    return run_state(events(path) if evs is None else evs)


def training_finished(path: Path, evs: list[dict[str, Any]] | None = None) -> bool:
    """True once the run's training logged ``trained`` (its final checkpoint is complete)."""
    return states.training_finished(events(path) if evs is None else evs)


def last_error(path: Path, evs: list[dict[str, Any]] | None = None) -> str | None:
    """The error line of the newest ``failed`` event, if any, after its cause where one was
    told (``lost a peer rank (a node failed?): RuntimeError: ...``: the status table's column
    is 80 characters, a gloo error's first ones name only its source file); ``evs``: the
    status log's events, when already read."""
    for ev in reversed(events(path) if evs is None else evs):
        if ev.get("event") == Event.FAILED:
            error = str(ev.get("error", ""))
            return f"{ev['cause']}: {error}" if ev.get("cause") else error
    return None
