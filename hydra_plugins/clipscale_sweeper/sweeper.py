"""The clipscale sweeper: decides *what* runs; the Hydra launcher decides *where*.

It expands the command line (and a named ``sweep=``) into grid points, composes and checks every
point before anything is launched, prints the plan, skips done points, and hands the rest to
whichever launcher Hydra is configured with (local by default, submitit for SLURM).
"""


import logging
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from core import schema
from launcher.compose import sweep_composer
from launcher.errors import exit_on_user_error
from launcher.protocol import SubmittingLauncher
from launcher.sweep import plan_sweep, report_returns

log = logging.getLogger(__name__)
schema.register()


@dataclass
class ClipscaleSweeperConf:
    _target_: str = "hydra_plugins.clipscale_sweeper.sweeper.ClipscaleSweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="clipscale", node=ClipscaleSweeperConf,
                             provider="clipscale")


class ClipscaleSweeper(Sweeper):
    def __init__(self) -> None:
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.hydra_context is not None
        loader = self.hydra_context.config_loader
        parsed = OverridesParser.create(config_loader=loader).parse_overrides(arguments)
        with exit_on_user_error():  # the message names the key or file; no traceback
            # Hydra composes once per distinct set of group choices; each point's plain
            # assignments are applied to a copy (launcher/compose.py)
            todo = plan_sweep(self.config, parsed, compose=sweep_composer(loader, self.config))
        if not todo:
            return []
        submitting = isinstance(self.launcher, SubmittingLauncher)
        if submitting:  # it reuses the checked points, queues them and returns
            self.launcher.set_plan(todo)
        returns = self.launcher.launch([p.overrides for p in todo], initial_job_idx=0)
        if submitting:  # submitted, not run: nothing to report
            return returns
        report_returns(todo, returns)
        return returns
