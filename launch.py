"""clipscale's entry point: compose a grid point (or, with -m, a whole sweep) and run it.

    python launch.py -m model=vit_b32,vit_l14 data=laion400m,laion2b samples=13B,34B dry_run=true
    python launch.py -m sweep=demo

See README.md. The sweeper (hydra_plugins/clipscale_sweeper) plans and checks the sweep; the
launcher (local, or submitit for SLURM) runs ``launcher.run.run_point`` for each point.
"""

import hydra
from omegaconf import DictConfig

from core import schema  # first project import: core sets OMP_WAIT_POLICY before torch loads
from launcher.errors import exit_on_user_error
from launcher.run import run_point

schema.register()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict:
    from hydra.core.hydra_config import HydraConfig

    with exit_on_user_error():  # one line and exit status 2, as the sweeper's check does
        return run_point(cfg, list(HydraConfig.get().overrides.task))


if __name__ == "__main__":
    main()
