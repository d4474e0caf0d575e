"""clipscale's SLURM launcher: hydra-submitit-launcher's SlurmLauncher that submits and returns."""
