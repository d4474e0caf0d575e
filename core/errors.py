"""The exceptions that cross stage boundaries, defined once and caught by type.

A user error (:class:`ConfigError`, :class:`SweepError`) carries a one-line message naming the
key or file at fault; entry points print it without a traceback and exit with status 2.
"""

from __future__ import annotations

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
