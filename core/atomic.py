"""Atomic file writes, shared by every stage.

A half-written file on a shared filesystem is worse than none: each writer puts its bytes in a
temporary file in the same folder, flushes them to disk, then renames it over the target
(``os.replace`` is atomic on POSIX filesystems, NFS and Lustre included). Readers therefore see
either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def _atomic(path: Path, write: Callable[[IO[bytes]], object]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide results from the rest of a shared group
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return _atomic(Path(path), lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to ``path`` atomically."""
    import torch

    return _atomic(Path(path), lambda f: torch.save(obj, f))


def append_jsonl(path: str | os.PathLike[str], obj: Any) -> None:
    """Append one JSON line; a single ``write`` of a short line is atomic under O_APPEND."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(obj, sort_keys=True, default=str) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# Whole folders: built in a temporary sibling, marked, renamed into place

SUCCESS = "_SUCCESS"
"""Marker file of a folder :func:`build_folder` published; holds the arguments it was built with."""


def _marker_matches(folder: Path, args: dict[str, Any]) -> bool:
    try:
        return json.loads((folder / SUCCESS).read_text()).get("args") == args
    except (OSError, ValueError):
        return False


def _tmp_prefix(out_dir: Path) -> str:
    return f".{out_dir.name}.tmp-{socket.gethostname()}-"


def _clean_stale_tmp(out_dir: Path) -> None:
    """Remove temporary siblings left by killed runs on this host. Another host's or a live
    process's folders are left alone: that run may still be writing."""
    for old in out_dir.parent.glob(f".{out_dir.name}.old-*"):
        shutil.rmtree(old, ignore_errors=True)  # set aside for deletion by a run killed since
    prefix = _tmp_prefix(out_dir)
    for tmp in out_dir.parent.glob(prefix + "*"):
        pid = tmp.name[len(prefix) :].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def build_folder(out_dir: Path, args: dict[str, Any], fill: Callable[[Path], None]) -> bool:
    """Make ``out_dir`` hold what ``fill(folder)`` writes, marked with ``args``.

    Returns False, doing nothing, when ``out_dir/_SUCCESS`` already records ``args``. Else
    ``fill`` writes into a fresh temporary sibling, the marker is added, and the sibling is
    renamed into place, replacing an earlier generated folder with other arguments. A
    concurrent run that published the same arguments first wins; this one's copy is discarded.
    A non-empty ``out_dir`` without a marker is not ours to delete: FileExistsError.
    """
    if _marker_matches(out_dir, args):
        return False
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_tmp(out_dir)
    tmp = out_dir.parent / f"{_tmp_prefix(out_dir)}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        fill(tmp)
        atomic_write_json(tmp / SUCCESS, {"args": args})
        _publish(tmp, out_dir, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True


def _publish(tmp: Path, out_dir: Path, args: dict[str, Any]) -> None:
    if out_dir.exists() and not (out_dir / SUCCESS).exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} holds files not written by this generator; move it away")
    for _ in range(5):  # a few tries: concurrent writers may be swapping the folder too
        try:
            os.rename(tmp, out_dir)  # succeeds when out_dir is missing or an empty folder
            return
        except OSError:
            if _marker_matches(out_dir, args):
                return  # a concurrent run published the same data first
        # An earlier generation with other arguments: move it aside, then swap ours in.
        old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(out_dir, old)
        except FileNotFoundError:
            continue
        shutil.rmtree(old, ignore_errors=True)
    raise RuntimeError(f"could not publish {out_dir}: other writers keep replacing it")


