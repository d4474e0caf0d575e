"""The exceptions that cross stage boundaries, defined once and caught by type.

A user error (:class:`ConfigError`, :class:`SweepError`) carries a one-line message naming the
key or file at fault; entry points print it without a traceback and exit with status 2.
"""

from __future__ import annotations

import errno
from pathlib import Path


class UserError(ValueError):
    """Bad input: the message names the key or the file at fault (printed without traceback)."""


class ConfigError(UserError):
    """A point's configuration cannot run; the message names the key at fault."""


class SweepError(UserError):
    """A sweep file is missing or malformed; the message names the file and the entry."""


class Preempted(Exception):
    """The run was asked to stop (SIGTERM/SIGUSR2) and saved a checkpoint: requeue it, it resumes.

    ``step``: the step checkpointed; ``checkpoint``: its path; ``signum``: the signal received.
    """

    def __init__(self, step: int, path: Path, signum: int):
        super().__init__(f"stopped by signal {signum} at step {step}; checkpoint {path}")
        self.step, self.checkpoint, self.signum = step, path, signum

    def __reduce__(self) -> tuple[type, tuple[int, Path, int]]:  # pickles through submitit
        return (type(self), (self.step, self.checkpoint, self.signum))


class NonFiniteLoss(RuntimeError):
    """``train.max_nonfinite`` losses in a row were NaN/inf; the newest complete checkpoint is
    the last good state (nothing was saved after the first bad step)."""


class Cancelled(RuntimeError):
    """The point was cancelled (``python -m launcher.slurm cancel``) while its job ran."""


class DiskFull(OSError):
    """A write failed for lack of space (``errno.ENOSPC``); the file it replaced, if any, is intact.

    ``path``: the file being written; ``needed``: the bytes the write wanted (a lower bound when
    ``at_least``); ``free``: bytes free on its filesystem once the partial write was removed;
    ``where``: that filesystem, e.g. ``/scratch (lustre)``; ``quota``: the user's quota, not the
    device, ran out (EDQUOT). ``str()`` is one line, in human units, e.g. ``no space left on
    device writing /x/checkpoints/step_00000010.pt: needed 15.4 MB, 2.1 MB free on /x (tmpfs)``.
    """

    def __init__(
        self,
        path: str | Path,
        needed: int,
        free: int,
        where: str | None = None,
        at_least: bool = False,
        quota: bool = False,
    ):
        self.path, self.needed, self.free = Path(path), int(needed), int(free)
        self.where, self.at_least, self.quota = where, at_least, quota
        what = "disk quota exceeded" if quota else "no space left on device"
        need = f"needed {'at least ' if at_least else ''}{self.human(self.needed)}"
        free_on = f"{self.human(self.free)} free" + (f" on {where}" if where else "")
        self.message = f"{what} writing {self.path}: {need}, {free_on}"
        super().__init__(errno.ENOSPC, self.message, str(self.path))

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[type, tuple[Path, int, int, str | None, bool, bool]]:
        args = (self.path, self.needed, self.free, self.where, self.at_least, self.quota)
        return (type(self), args)

    @staticmethod
    def human(n: int) -> str:
        """``n`` bytes in decimal units, one decimal: ``15.4 MB``, ``512 B``."""
        if n < 1000:
            return f"{n} B"
        size = float(n)
        for unit in ("kB", "MB", "GB", "TB", "PB"):
            size /= 1000
            if size < 999.95 or unit == "PB":
                return f"{size:.1f} {unit}"
        raise AssertionError("unreachable")
