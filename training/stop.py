"""Stop requests: SIGTERM/SIGUSR2 (what SLURM sends before a time limit or a preemption) make the
run checkpoint at the next step boundary and raise :class:`core.errors.Preempted`; a caller's
``should_stop`` (the run's lease was lost: another process owns the folder now) makes it stop at
once, saving nothing, and raise :class:`Abandoned`."""

from __future__ import annotations

import signal
import threading
from typing import Any, Protocol

import torch

from training.distributed import Dist, any_rank, any_ranks

PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)
"""What SLURM sends before a time limit or a preemption."""


class ShouldStop(Protocol):
    """``should_stop(fresh)``: why the run must stop at once without writing anything more into
    its folder (its lease was taken over), or None to go on. Asked after every step, where it
    must be cheap (it may answer from a recent look), and with ``fresh=True`` right before every
    checkpoint save, where it must look now: a save must not follow a takeover it could see."""

    def __call__(self, fresh: bool = False) -> str | None: ...

RANK0_STOPPED = "rank 0 was told to stop"
"""The reason other ranks give for an :class:`Abandoned` run (``should_stop`` is rank 0's)."""
PREEMPTED_EXIT_CODE = 3
"""Exit status a CLI wrapper should use for :class:`core.errors.Preempted` (requeue, do not mark failed)."""


class StopFlag:
    """Records SIGTERM/SIGUSR2 while in its ``with`` block (the previous handlers come back
    after it), so that the loop stops at the next step boundary."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for s in PREEMPT_SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def requested(self, dist_: Dist, device: torch.device, should_stop: ShouldStop | None = None,
                  step: int = 0) -> bool:
        """True on every rank when any rank got a signal (all must save the same step). In the
        same collective, :func:`check_abandoned`'s test of ``should_stop`` (raise
        :class:`Abandoned` at ``step`` on every rank): the loop asks both after every step."""
        reason = should_stop() if should_stop is not None else None
        abandoned, signalled = any_ranks((reason is not None, self.signum is not None), dist_,
                                         device)  # fmt: skip
        if abandoned:
            raise Abandoned(step, reason or RANK0_STOPPED)
        return signalled


class Abandoned(Exception):
    """The run stopped at ``step`` without saving: ``should_stop`` said ``reason``."""

    def __init__(self, step: int, reason: str):
        super().__init__(f"stopped at step {step} without saving: {reason}")
        self.step, self.reason = step, reason


def check_abandoned(should_stop: ShouldStop | None, step: int, dist_: Dist,
                    device: torch.device) -> None:
    """Raise :class:`Abandoned` on every rank when ``should_stop`` (rank 0's; None elsewhere),
    asked afresh, gives a reason on any rank; every rank calls it at the same points (before a
    save)."""
    reason = should_stop(fresh=True) if should_stop is not None else None
    if any_rank(reason is not None, dist_, device):
        raise Abandoned(step, reason or RANK0_STOPPED)
