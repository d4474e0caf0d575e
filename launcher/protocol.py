"""The explicit contract between the clipscale sweeper and a launcher that only submits.

The sweeper plans and checks every point, then hands the rest to whichever Hydra launcher is
configured. A launcher that derives from :class:`SubmittingLauncher` gets the checked points
first (no second composition per point) and returns as soon as its jobs are queued, so the
sweeper does not wait for or report results. Any other launcher (Hydra's basic one, locally)
runs the points and returns their results.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from launcher.plan import Point


class SubmittingLauncher(abc.ABC):
    """A launcher that queues the sweeper's points and returns without results."""

    @abc.abstractmethod
    def set_plan(self, points: list[Point]) -> None:
        """The sweeper's checked points, before ``launch`` is called with their overrides."""
