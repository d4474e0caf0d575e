"""Step arithmetic of a run, the one copy the plan (login node) and the trainer share.

``global_batch = world x local_batch x accum``: every one of the ``world`` processes runs
``accum`` micro-batches of ``local_batch`` pairs per optimizer step, and a run takes
``ceil(samples / global_batch)`` optimizer steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Steps:
    """Optimizer steps and gradient accumulation of one run on ``world`` processes."""

    samples: int
    """Pairs the config asks to see (``samples.seen``)."""
    global_batch: int
    local_batch: int
    world: int = 1

    @property
    def total_steps(self) -> int:
        """Optimizer steps: ceil(samples / global batch)."""
        return math.ceil(self.samples / self.global_batch)

    @property
    def samples_seen(self) -> int:
        """Pairs actually seen: whole steps of the global batch."""
        return self.total_steps * self.global_batch

    @property
    def accum(self) -> int:
        """Micro-batches per process and step (at least 1)."""
        return max(1, self.global_batch // (self.world * self.local_batch))

    @property
    def divides(self) -> bool:
        """True when world x local batch x accum is exactly the global batch."""
        return self.world * self.local_batch * self.accum == self.global_batch

    def check(self) -> Steps:
        """Raise ValueError naming the keys when the batch sizes cannot make the global batch."""
        if self.samples < 1:
            raise ValueError(f"samples.seen must be positive, got {self.samples}")
        if self.local_batch < 1 or self.global_batch < 1 or not self.divides:
            raise ValueError(
                f"model.global_batch ({self.global_batch}) must be a positive multiple of "
                f"model.local_batch ({self.local_batch}) x processes ({self.world}) to "
                "accumulate gradients")
        return self
