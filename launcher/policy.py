"""What a relaunch does to each point: one small policy, used by the local and SLURM paths
(after dora's ``SubmitRules``).

Relaunching the same command is always safe. By the point's state:

==============  ========================================================================
done            skipped, always
queued          (SLURM still holds a job of it: pending, running, requeued) skipped, never
                submitted twice
trained         evaluated only (its training finished; evaluation is outstanding)
failed          run again, resuming from its newest checkpoint; skipped with
                ``retry_failed=false``
cancelled       run again, resuming (a cancel stops the job, it does not drop the point)
new, partial,   run (a partial one resumes from its newest complete checkpoint)
submitted
==============  ========================================================================

A trunk segment (``launcher.plan.with_trunks``) is a point of its own here: done once its trunk
was trained to its end step, queued while SLURM holds that segment's job (not any job of the
trunk's folder), else the trunk's failed/cancelled/partial state; ``launcher.graph`` then makes
what is submitted wait for the queued jobs it depends on.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from omegaconf import DictConfig

from core.states import RunState


class Action(StrEnum):
    RUN = "run"
    """Train (resuming if it can), then evaluate."""
    EVALUATE = "evaluate"
    """Training is finished: evaluate only."""
    SKIP = "skip"


@dataclass(frozen=True)
class RelaunchPolicy:
    """The relaunch rules; see the module docstring for the table they make."""

    retry_failed: bool = True
    """Re-run points whose last attempt failed (``retry_failed=`` in the config)."""
    retry_cancelled: bool = True
    """Re-run points that were cancelled."""

    @classmethod
    def from_config(cls, cfg: DictConfig) -> RelaunchPolicy:
        return cls(retry_failed=bool(cfg.retry_failed))

    def decide(self, state: RunState, *, queued: bool = False, trained: bool = False,
               has_eval: bool = True) -> Action:
        """The action for a point in ``state``; ``queued``: SLURM holds a job of it;
        ``trained``: its training finished; ``has_eval``: it has evaluation datasets."""
        if state == RunState.DONE or queued:
            return Action.SKIP
        if state == RunState.FAILED and not self.retry_failed:
            return Action.SKIP
        if state == RunState.CANCELLED and not self.retry_cancelled:
            return Action.SKIP
        if trained and has_eval:
            return Action.EVALUATE
        return Action.RUN

    def skipped_note(self) -> str:
        """What the plan's summary line says was skipped."""
        if self.retry_failed:
            return "done"
        return "done or failed; pass retry_failed=true to re-run failed ones"
