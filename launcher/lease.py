"""Leases: at most one process works on a run folder (or submits a sweep) at a time.

A lease is a small JSON file (``<run dir>/lease.json``, or ``<manifest>.lock``) naming its
holder: host, pid, SLURM job id, what it does, when it started, and a random token. Its
modification time is the heartbeat, refreshed by a thread while the holder works.

It is taken by an atomic create that works on shared filesystems (Lustre, GPFS, NFS), where
``flock`` cannot be trusted: the holder's record is written to a private temporary file, then
hard-linked to the lease's name (``link`` fails if the name exists, atomically, on every
POSIX filesystem and NFS; where links are not supported, ``O_CREAT | O_EXCL``). A process
that finds a live lease does not touch the run: it says who holds it and skips (or waits up to
``lease.wait_s``). A lease whose holder is gone is taken over, and the takeover is reported to
the caller (which logs it): gone means its pid no longer runs (holder on this host), its SLURM
job is no longer in the queue, or its heartbeat is older than ``lease.stale_after_s``. A
takeover renames the stale file aside (one rename wins) before creating the new one.

A holder that stalled past ``lease.stale_after_s`` may find its lease taken over: it must then
stop at once without writing anything more into the folder (:meth:`Lease.lost_reason`, which
the trainer asks after every step and before every save; ``launcher.run`` then raises
:class:`LeaseLost`).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

RUN_LEASE = "lease.json"
"""The lease file of a run folder."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lease (the file's content)."""

    host: str
    pid: int
    job_id: str | None
    purpose: str
    started: str
    token: str

    def describe(self) -> str:
        job = f", SLURM job {self.job_id}" if self.job_id else ""
        return f"{self.purpose} by pid {self.pid} on {self.host}{job}, since {self.started}"


class LeaseLost(SystemExit):
    """This process lost its lease (another took it over) and stopped without saving; the exit
    message is one line naming the new holder, the exit status 1."""

    def __init__(self, message: str):
        super().__init__(f"error: {message}")
        self.message = message

    def __str__(self) -> str:
        return self.message


class LeaseHeld(RuntimeError):
    """A live holder has the lease; ``holder`` says who."""

    def __init__(self, path: Path, holder: Holder | None, heartbeat_age: float):
        who = holder.describe() if holder else "an unreadable holder record"
        super().__init__(f"{path.parent.name} is held ({who}; heartbeat {heartbeat_age:.0f} s ago)")
        self.path, self.holder = path, holder


@dataclass(frozen=True)
class Takeover:
    """A stale lease this process took over: the previous holder and why it counted as gone."""

    previous: Holder | None
    reason: str


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(path: Path) -> tuple[Holder | None, float]:
    """(holder, heartbeat age in seconds); FileNotFoundError when there is no lease."""
    age = time.time() - path.stat().st_mtime
    try:
        return Holder(**json.loads(path.read_text())), age
    except (ValueError, TypeError):
        return None, age  # torn or foreign: only its heartbeat can tell


class Lease:
    """The lease at ``path``; ``with lease.hold() as takeover:`` holds it for the block.

    ``queue``: a function returning the job ids SLURM holds now (``launcher.slurm.queue``), to
    tell a gone job's lease from a live one on another host; None where SLURM is not asked.
    """

    def __init__(self, path: Path, purpose: str, *, job_id: str | None = None,
                 heartbeat_s: float = 30.0, stale_after_s: float = 300.0,
                 queue: Callable[[], set[str]] | None = None) -> None:
        self.path = Path(path)
        self.heartbeat_s, self.stale_after_s = heartbeat_s, stale_after_s
        self.queue = queue
        self.me = Holder(socket.gethostname(), os.getpid(), job_id, purpose,
                         time.strftime("%Y-%m-%dT%H:%M:%S%z"), uuid.uuid4().hex)
        self.lost = False
        self.new_holder: Holder | None = None
        """Who holds the lease once it was lost (None: its file was removed or unreadable)."""
        self._stop = threading.Event()
        self._checked = 0.0

    # -- taking it

    def _create(self) -> bool:
        """Create the lease file with our record; False if it exists."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{self.me.token}.tmp")
        tmp.write_text(json.dumps(asdict(self.me), sort_keys=True) + "\n")
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError as e:  # no hard links here: an exclusive create instead
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as f:
                f.write(tmp.read_text())
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def gone(self, holder: Holder | None, age: float) -> str | None:
        """Why the holder counts as gone, or None while it is alive."""
        if age > self.stale_after_s:
            return f"no heartbeat for {age:.0f} s (lease.stale_after_s={self.stale_after_s:g})"
        if holder is None:
            return None
        if holder.job_id and holder.job_id == self.me.job_id:
            return f"an earlier attempt of SLURM job {holder.job_id} (requeued since)"
        if holder.host == self.me.host and not _pid_alive(holder.pid):
            return f"pid {holder.pid} no longer runs on {holder.host}"
        if holder.job_id and holder.host != self.me.host and self.queue is not None:
            try:
                queued = self.queue()
            except Exception as e:  # SLURM unreachable: the heartbeat decides
                log.warning("cannot ask SLURM about job %s: %s", holder.job_id, e)
                return None
            if holder.job_id not in queued:
                return f"SLURM job {holder.job_id} is no longer in the queue"
        return None

    def _take_over(self, holder: Holder | None) -> bool:
        """Move the stale lease aside; False when another process moved or replaced it first."""
        aside = self.path.with_name(f".{self.path.name}.stale-{self.me.token}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        moved, _ = _read(aside)
        if holder is not None and (moved is None or moved.token != holder.token):
            try:  # we moved a newer holder's lease: give it back
                os.link(aside, self.path)
            except FileExistsError:
                pass
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        return True

    def acquire(self, wait_s: float = 0.0, poll_s: float = 1.0) -> Takeover | None:
        """Take the lease (or raise :class:`LeaseHeld` after ``wait_s``); returns the takeover
        of a stale lease, if there was one."""
        deadline = time.monotonic() + wait_s
        takeover: Takeover | None = None
        while True:
            if self._create():
                self._start_heartbeat()
                return takeover
            try:
                holder, age = _read(self.path)
            except FileNotFoundError:
                continue  # released meanwhile: try again
            reason = self.gone(holder, age)
            if reason is not None:
                if self._take_over(holder):
                    takeover = Takeover(holder, reason)
                continue
            if time.monotonic() >= deadline:
                raise LeaseHeld(self.path, holder, age)
            time.sleep(poll_s)

    # -- holding it

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        threading.Thread(target=self._beat, name=f"lease-{self.path.parent.name}",
                         daemon=True).start()

    def _mine(self) -> bool:
        for attempt in range(2):
            try:
                holder, _ = _read(self.path)
            except FileNotFoundError:
                # a taker that moved our lease aside by mistake links it back at once
                if attempt == 0:
                    time.sleep(0.05)
                    continue
                holder = None
            if holder is not None and holder.token != self.me.token:
                self.new_holder = holder
            return holder is not None and holder.token == self.me.token
        return False

    def _lose(self) -> None:
        if not self.lost:
            self.lost = True
            log.error("lost the lease %s (taken over after a stall?): %s", self.path,
                      self.lost_reason())

    def lost_reason(self, fresh: bool = False, recheck_s: float = 1.0) -> str | None:
        """Why this process no longer holds the lease (naming the new holder), or None while it
        does (a :class:`training.stop.ShouldStop`). Cheap: it reads the lease file at most every
        ``recheck_s`` seconds (the heartbeat thread checks too), or now when ``fresh`` (before
        a write into the folder)."""
        if not self.lost and (fresh or time.monotonic() - self._checked >= recheck_s):
            self._checked = time.monotonic()
            if not self._mine():
                self._lose()
        if not self.lost:
            return None
        who = self.new_holder.describe() if self.new_holder else "nobody (its file was removed)"
        return f"lost the lease of {self.path.parent.name}: now held for {who}"

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if not self._mine():
                self._lose()
                return
            try:
                os.utime(self.path)
            except OSError as e:  # a full or unreachable disk: the next beat tries again
                log.warning("lease heartbeat %s: %s", self.path, e)

    def release(self) -> None:
        self._stop.set()
        if self._mine():
            self.path.unlink(missing_ok=True)

    @contextmanager
    def hold(self, wait_s: float = 0.0) -> Iterator[Takeover | None]:
        """Hold the lease for a ``with`` block; yields the takeover, if any."""
        takeover = self.acquire(wait_s)
        try:
            yield takeover
        finally:
            self.release()
