"""clipscale's entry point: compose a grid point (or, with -m, a whole sweep) and run it.

    python launch.py -m model=vit_b32,vit_l14 data=laion400m,laion2b samples=13B,34B dry_run=true
    python launch.py -m sweep=demo

See README.md. The sweeper (hydra_plugins/clipscale_sweeper) plans and checks the sweep; the
launcher (local, or submitit for SLURM) runs ``launcher.run.run_point`` for each point.
"""

import os

# Before torch loads OpenMP: spinning worker threads make small CPU models up to 10x slower
# as soon as anything else (a data-loader worker, another job) shares the cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from core import schema  # noqa: E402
from launcher.run import run_point  # noqa: E402

schema.register()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict:
    from hydra.core.hydra_config import HydraConfig

    return run_point(cfg, list(HydraConfig.get().overrides.task))


if __name__ == "__main__":
    main()
