"""Learning-rate schedules and the trunk/branch arithmetic of ``train.schedule=const_cooldown``.

``cosine`` is open_clip_train's ``cosine_lr`` itself (bit-identical to the paper's recipe).
``const_cooldown`` is open_clip_train's warm-up (``base_lr x (step + 1) / warmup``), then the
constant ``lr`` up to the fork step F = round((1 - f) x T), then a cooldown to 0 at T:
``lr x (1 - p)`` (``linear``, open_clip's ``const_lr_cooldown`` at power 1) or
``lr x (1 - sqrt(p))`` (``1-sqrt``), p = (step - F) / (T - F).

Up to F a const_cooldown run's LR does not depend on T, so every point that differs only in
samples seen trains the same first steps: one **trunk** (constant LR, no end) trains them once,
and each point's **branch** resumes from the trunk's checkpoint at its fork step F (or the
newest one before it: the branch then trains the remaining constant-LR steps itself, the same
steps the trunk would have trained) and cools down to its T.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig
from open_clip_train.scheduler import assign_learning_rate, cosine_lr

from core.schema import Schedule

LRSchedule = Callable[[int], float]
"""``schedule(step)``: sets the optimizer's LR for that step and returns it."""


def fork_step(total_steps: int, fraction: float) -> int:
    """F = round((1 - f) x T) (halves up), the last step of a branch's constant part."""
    return math.floor((1 - float(fraction)) * total_steps + 0.5)


def cooldown_factor(shape: str, progress: float) -> float:
    """LR multiplier at ``progress`` p in [0, 1) of a cooldown: 1 - p or 1 - sqrt(p)."""
    return 1 - math.sqrt(progress) if str(shape) == "1-sqrt" else 1 - progress


def const_cooldown_lr(optimizer, base_lr: float, warmup: int, total_steps: int | None,
                      fork: int, shape: str) -> LRSchedule:
    """Warm-up, constant ``base_lr`` to ``fork``, cooldown to 0 at ``total_steps``; with
    ``total_steps`` None (a trunk) constant for ever after the warm-up."""

    def schedule(step: int) -> float:
        if step < warmup:
            lr = base_lr * (step + 1) / warmup
        elif total_steps is None or step < fork:
            lr = base_lr
        else:
            lr = base_lr * cooldown_factor(shape, (step - fork) / max(total_steps - fork, 1))
        assign_learning_rate(optimizer, lr)
        return lr

    return schedule


def make_lr(optimizer, t: DictConfig, total_steps: int, trunk: bool = False) -> LRSchedule:
    """The LR schedule of ``train`` config ``t`` over ``total_steps`` (a trunk: no cooldown)."""
    if Schedule(t.schedule) == Schedule.cosine:
        if trunk:
            raise ValueError("a trunk needs train.schedule=const_cooldown")
        return cosine_lr(optimizer, float(t.lr), int(t.warmup), total_steps)
    fork = fork_step(total_steps, float(t.cooldown_fraction))
    return const_cooldown_lr(optimizer, float(t.lr), int(t.warmup), None if trunk else total_steps,
                             fork, str(t.cooldown_shape))


@dataclass(frozen=True)
class Trunk:
    """A trunk segment: train the trunk (constant LR) up to step ``until``, keeping a
    checkpoint (never pruned) at each of ``keep`` on the way and at ``until``."""

    until: int
    keep: frozenset[int] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Branch:
    """A branch: a run that starts, when it has no checkpoint of its own, from the trunk in
    ``trunk_dir`` at ``fork`` (its newest complete checkpoint at or before that step)."""

    trunk_dir: Path
    fork: int


def keep_steps(forks: Iterable[int], until: int, every_steps: int) -> frozenset[int]:
    """The trunk's kept steps up to ``until``: the fork steps, and every ``every_steps``
    (0: a tenth of ``until``, see ``train.fork_every``)."""
    every = every_steps if every_steps > 0 else max(until // 10, 1)
    return frozenset({f for f in forks if 0 < f <= until} | set(range(every, until + 1, every)))
