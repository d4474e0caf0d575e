"""Atomic file writes, shared by every stage.

A half-written file on a shared filesystem is worse than none: each writer puts its bytes in a
temporary file in the same folder, flushes them to disk, then renames it over the target
(``os.replace`` is atomic on POSIX filesystems, NFS and Lustre included). Readers therefore see
either the old file or the new one, never a torn one.

A write that fails for lack of space (ENOSPC, EDQUOT, or torch's zip writer giving up on a full
disk) removes its temporary file first, so the space it held is free again, then raises
:class:`core.errors.DiskFull` naming the file, the bytes it needed and the bytes free. The
previous file at that path is untouched.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, cast

from core.errors import DiskFull

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)

_OCTAL = re.compile(r"\\([0-7]{3})")

_SLACK = 1 << 20
"""Room for filesystem blocks and metadata: a write of ``n`` bytes may fail with ``n`` free."""


def _no_space_errno(err: BaseException) -> int | None:
    """ENOSPC/EDQUOT when ``err`` or an exception it chains (``__cause__``/``__context__``;
    torch's writer turns Python's OSError into a RuntimeError) is an out-of-space OSError."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [err]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _NO_SPACE:
            return e.errno
        todo += [e.__cause__, e.__context__]
    return None


def _existing(folder: Path) -> Path:
    """``folder`` or its nearest existing ancestor (a mkdir may be what failed)."""
    folder = folder.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _free(folder: Path) -> int:
    try:
        return shutil.disk_usage(_existing(folder)).free
    except OSError:
        return 0


def _filesystem(folder: Path) -> str | None:
    """``"<mount point> (<type>)"`` of the filesystem holding ``folder``, from /proc/self/mounts;
    the bare mount point elsewhere; None when neither can be told."""
    folder = Path(os.path.realpath(_existing(folder)))
    best: tuple[str, str] | None = None
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 3:
                    continue
                mount = _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), fields[1])  # "\040": blank
                if folder.is_relative_to(mount) and (best is None or len(mount) >= len(best[0])):
                    best = (mount, fields[2])
    except (OSError, ValueError):
        pass
    if best is not None:
        return f"{best[0]} ({best[1]})"
    mount_point = folder
    while not os.path.ismount(mount_point) and mount_point != mount_point.parent:
        mount_point = mount_point.parent
    return str(mount_point)


def _disk_full(err: BaseException, path: Path, needed: Callable[[], int]) -> DiskFull | None:
    """The :class:`DiskFull` that ``err``, raised writing ``path``, stands for; None when it
    is not a lack of space. Call it once the partial write is removed: ``free`` is read here.

    An ENOSPC/EDQUOT OSError (or one it chains) is; a RuntimeError (torch's zip writer, which
    reports a full disk as ``unexpected pos ...``) is when the bytes wanted exceed the space
    free now; the message is not parsed. ``needed()`` is called only when it is wanted.
    """
    if isinstance(err, DiskFull) or not isinstance(err, Exception):
        return None  # already says so (an inner write), or an interrupt: let it through
    code = _no_space_errno(err)
    if code is None and not isinstance(err, RuntimeError):
        return None
    free, at_least = _free(path.parent), False
    try:
        wanted = needed()
    except Exception:
        if code is None:
            return None  # the RuntimeError stands: the data cannot even be serialized
        wanted, at_least = 0, True
    if code is None and wanted + _SLACK <= free:
        return None  # there was room: some other failure
    where = _filesystem(path.parent)
    return DiskFull(path, wanted, free, where, at_least=at_least, quota=code == errno.EDQUOT)


def _size(path: str | None) -> int:
    try:
        return os.path.getsize(path) if path else 0
    except OSError:
        return 0


def _atomic(path: Path, write: Callable[[IO[bytes]], object], needed: Callable[[], int]) -> Path:
    """Write through ``write`` to a temporary sibling of ``path``, fsync, rename over ``path``.

    ``needed()``: the bytes ``write`` wants, asked only when a write fails for lack of space.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            # mkstemp's 0600 would hide results from the rest of a shared group
            os.fchmod(fd, 0o644)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)  # first: the space it held is free again
        full = _disk_full(err, path, needed)
        if full is not None:
            raise full from err
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return _atomic(Path(path), lambda f: f.write(data), lambda: len(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to ``path`` atomically."""
    import torch  # heavy: keeps torch off core's import (status, plan)

    # ``needed`` on a full disk: neither the temporary file's size when it failed (only a lower
    # bound) nor serializing to memory first (a checkpoint can be several GB of host memory on
    # every save), but the exact byte count of a second torch.save into a sink that only counts,
    # run on the failure path alone once the temporary file is gone.
    def needed() -> int:
        sink = _CountingSink()
        torch.save(obj, cast(IO[bytes], sink))  # write() is all torch.save uses
        return sink.n

    return _atomic(Path(path), lambda f: torch.save(obj, f), needed)


class _CountingSink:
    """A write-only file that keeps no bytes, only their count (for :func:`atomic_torch_save`)."""

    def __init__(self) -> None:
        self.n = 0

    def write(self, data: bytes | memoryview) -> int:
        n = memoryview(data).nbytes
        self.n += n
        return n

    def flush(self) -> None:
        pass


def append_jsonl(path: str | os.PathLike[str], obj: Any) -> None:
    """Append one JSON line; a single ``write`` of a short line is atomic under O_APPEND.

    A line that does not fit is taken back (the file is truncated to where it began, unless
    another writer appended after it) and :class:`DiskFull` is raised: no torn line is left.
    """
    path = Path(path)
    data = (json.dumps(obj, sort_keys=True, default=str) + "\n").encode()
    fd: int | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        _append(fd, data)
    except OSError as err:
        full = _disk_full(err, path, lambda: len(data))
        if full is not None:
            raise full from err
        raise
    finally:
        if fd is not None:
            os.close(fd)


def _append(fd: int, data: bytes) -> None:
    """Write all of ``data`` at the end of ``fd`` (O_APPEND); on failure remove what was written."""
    start, written = 0, 0
    try:
        while written < len(data):
            n = os.write(fd, data[written:])
            if n <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            if not written:
                start = os.lseek(fd, 0, os.SEEK_CUR) - n  # where O_APPEND put this line
            written += n
    except BaseException:
        if written:
            try:
                if os.fstat(fd).st_size == start + written:  # nobody appended after us
                    os.ftruncate(fd, start)
            except OSError:
                pass
        raise


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
    except OSError as err:
        if _no_space_errno(err) is None:
            raise
        # Out of space, whether in an atomic write (DiskFull) or a file ``fill`` wrote itself:
        # the folder built so far goes first; what it held (plus what the failed atomic write
        # wanted) is a lower bound of the space the whole folder needs.
        held = _tree_size(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, DiskFull):
            path, held, quota = err.path, held + err.needed, err.quota
        else:
            path, quota = Path(err.filename or out_dir), err.errno == errno.EDQUOT
        free, where = _free(out_dir.parent), _filesystem(out_dir.parent)
        raise DiskFull(path, held, free, where, at_least=True, quota=quota) from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True


def _tree_size(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            total += _size(os.path.join(root, name))
    return total


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


