"""Run states and status-log events: every reader and writer of a run's ``status.jsonl`` takes
its names from here.

A run's state is a function of its status log alone (:func:`run_state`); ``launcher.status``
refines it with SLURM's view of the point's job into a :class:`LiveState`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any


class Event(StrEnum):
    """The ``event`` of a status-log line."""

    SUBMITTED = "submitted"
    """sbatch accepted the point's job(s): ``job_id``, ``eval_job_id``, ``stage``, ``nodes``."""
    START = "start"
    """A process began working on the point (``stage``, ``previous_state``, ``job_id``)."""
    TRAINED = "trained"
    """Training finished: ``final.pt`` is complete (``step``, ``samples_seen``, ``loss``)."""
    EVALUATED = "evaluated"
    DONE = "done"
    FAILED = "failed"
    """The attempt failed (``error``: one line)."""
    PREEMPTED = "preempted"
    """SIGTERM/SIGUSR2: a checkpoint was saved, the job is requeued (``step``)."""
    REQUEUED = "requeued"
    """SLURM's time limit or a preemption: submitit requeues the job."""
    CANCELLED = "cancelled"
    """``launcher.slurm cancel`` (logged before scancel)."""
    CANCEL_FAILED = "cancel_failed"
    """scancel failed: withdraws the ``cancelled`` before it."""
    SKIPPED = "skipped"
    LEASE_TAKEN_OVER = "lease_taken_over"
    """This process took over a stale lease (``previous``: its holder, ``reason``)."""
    LEASE_LOST = "lease_lost"
    """A stalled holder found its lease taken over and stopped without saving (``reason``
    names the new holder; ``step``: where training stopped, if it trained)."""


NOT_STATE_CHANGES = frozenset({Event.SKIPPED, Event.LEASE_TAKEN_OVER, Event.LEASE_LOST})
"""Events that record something without changing the run's state."""


class RunState(StrEnum):
    """A run's state, from its status log."""

    NEW = "new"
    """No folder or no events."""
    SUBMITTED = "submitted"
    """Queued to SLURM, not started yet."""
    PARTIAL = "partial"
    """Started, not finished: a relaunch resumes it from its newest checkpoint."""
    TRAINED = "trained"
    """Training finished, evaluation outstanding: a relaunch only evaluates."""
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({RunState.DONE, RunState.FAILED, RunState.CANCELLED})
"""States in which no process works on the run (until it is relaunched)."""


class PointResult(StrEnum):
    """The ``state`` of what ``launcher.run.run_point`` returns (the launchers read it)."""

    DONE = "done"
    """Trained and evaluated (now or before: ``skipped``)."""
    TRAINED = "trained"
    """Trained; its evaluation runs in a job of its own."""
    HELD = "held"
    """Skipped: a live process elsewhere holds the run's lease (``held_by`` says who)."""


class LiveState(StrEnum):
    """What status shows: the run state, refined by SLURM's queue and accounting."""

    NEW = "new"
    SUBMITTED = "submitted"
    PENDING = "pending"
    RUNNING = "running"
    REQUEUED = "requeued"
    PARTIAL = "partial"
    TRAINED = "trained"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


def run_state(events: Iterable[Mapping[str, Any]]) -> RunState:
    """The state a status log's events leave the run in.

    A ``cancelled`` event holds until the point is submitted or started again: a job that logs
    on its way out after ``scancel`` (its checkpoint-on-SIGTERM, say) does not make a cancelled
    point look resumable; a ``cancel_failed`` withdraws the newest ``cancelled``.
    """
    names: list[Any] = []
    for e in events:
        ev = e.get("event")
        if ev == Event.CANCEL_FAILED and Event.CANCELLED in names:
            del names[len(names) - 1 - names[::-1].index(Event.CANCELLED)]
        elif ev not in NOT_STATE_CHANGES:
            names.append(ev)
    if not names:
        return RunState.NEW
    for ev in reversed(names):
        if ev == Event.CANCELLED:
            return RunState.CANCELLED
        if ev in (Event.SUBMITTED, Event.START):
            break
    last = names[-1]
    if last in (Event.DONE, Event.FAILED, Event.SUBMITTED, Event.TRAINED):
        return RunState(last)
    return RunState.PARTIAL


def training_finished(events: Iterable[Mapping[str, Any]]) -> bool:
    """True once the run's training logged ``trained`` (its final checkpoint is complete)."""
    return any(e.get("event") == Event.TRAINED for e in events)
