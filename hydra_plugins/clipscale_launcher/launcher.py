"""Submit a sweep to SLURM and return: hydra-submitit-launcher's SlurmLauncher, minus the wait.

The stock launcher blocks until every job has ended (a login-node process that must live for
weeks). This one, selected by ``cluster=slurm`` (``hydra/launcher: clipscale_slurm``):

1. reads the queue once (``squeue``; unreachable slurmctld -> a clear error, nothing written);
2. leaves out every point whose job is still pending/running (the sweeper already left out
   the done ones), so relaunching never submits a second job for a point;
3. submits the rest as job arrays, one per node count (``nodes`` follows from the point's
   global batch, as in the plan; every other sbatch field is hydra-submitit-launcher's);
4. records each job id in the run's ``status.jsonl`` (``submitted``) and in the sweep manifest
   ``<root>/_slurm/<sweep>.json``, and returns.

An array that sbatch refuses (unknown partition, too many nodes, ...) is reported with sbatch's
own message and the points it concerns; the other arrays are still submitted, and the command
then exits with status 1.
"""


import logging
import signal
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


@dataclass
class ClipscaleSlurmConf(SlurmQueueConf):
    """hydra-submitit-launcher's SLURM fields (partition, account, qos, timeout_min, ...)."""

    _target_: str = "hydra_plugins.clipscale_launcher.launcher.ClipscaleSlurmLauncher"
    submitit_folder: str = "${root}/_slurm/submitit/%j"
    manifest: str | None = None
    """The sweep manifest (run id -> overrides, job id, submission time; merged on relaunch);
    null: ``<root>/_slurm/<sweep name, or cli>.json``."""


ConfigStore.instance().store(group="hydra/launcher", name="clipscale_slurm",
                             node=ClipscaleSlurmConf, provider="clipscale")


class ClipscaleSlurmLauncher(SlurmLauncher):
    submit_only = True  # the sweeper does not wait for results

    def __init__(self, manifest: str | None = None, **params: Any) -> None:
        super().__init__(**params)
        self._manifest = manifest
        self._plan: dict[tuple[str, ...], Any] = {}

    def set_plan(self, points: list[Any]) -> None:
        """The sweeper's checked points (``launcher.plan.Point``), keyed by their overrides."""
        self._plan = {tuple(p.overrides): p for p in points}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_plan"] = {}  # the job needs only its overrides, not the whole sweep's configs
        return state

    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
        ret = super().__call__(*args, **kwargs)
        if ret.status == JobStatus.FAILED and type(ret._return_value).__name__ == "Preempted":
            # The trainer caught SLURM's USR2/TERM and saved a checkpoint: hand the signal back to
            # submitit, whose handler calls checkpoint() below, requeues this job and exits.
            signal.raise_signal(signal.SIGUSR2)
        _ = ret.return_value  # re-raises a failed point, so that SLURM records the job as FAILED
        return ret

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """SLURM signalled the time limit or a preemption: requeue the same point; its run
        resumes from the newest complete checkpoint (``max_num_timeout`` bounds the requeues)."""
        from launcher.run import mark_requeueing

        mark_requeueing()
        return super().checkpoint(*args, **kwargs)

    def _executor(self, nodes: int) -> Any:
        import submitit

        params = dict(self.params)
        params.pop("manifest", None)
        init = {"folder": params.pop("submitit_folder"),
                "slurm_max_num_timeout": params.pop("max_num_timeout", 0)}
        executor = submitit.AutoExecutor(cluster="slurm", **init)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
        executor.update_parameters(nodes=nodes)
        return executor

    def launch(self, job_overrides: Any, initial_job_idx: int) -> list[JobReturn]:
        from launcher import rundir, slurm
        from launcher.plan import make_point

        assert self.config is not None and self.hydra_context is not None
        self.manifest = Path(self._manifest) if self._manifest else slurm.manifest_path(
            self.config.root, Path(str(self.config.sweep)).stem if self.config.get("sweep") else None)
        try:
            squeue = slurm.queue()
        except slurm.SlurmError as e:
            print(f"error: cannot submit, SLURM does not answer: {e}\nnothing was submitted",
                  file=sys.stderr, flush=True)
            raise SystemExit(2) from None

        groups: dict[int, list[tuple[int, list[str], Any]]] = defaultdict(list)
        active = []
        for i, ov in enumerate(job_overrides):
            ov = list(ov)
            point = self._plan.get(tuple(ov)) or make_point(
                ov, self.hydra_context.config_loader.load_sweep_config(self.config, ov))
            jid = slurm.job_id(point.run_dir)
            if jid is not None and jid in squeue and point.state != "done":
                active.append(f"{point.run_id} (job {jid}, {squeue[jid].lower()})")
                continue
            groups[point.nodes].append((initial_job_idx + i, ov, point))

        entries: dict[str, dict[str, Any]] = {}
        refused = []
        for nodes, members in sorted(groups.items()):
            for idx, ov, _ in members:
                log.info("\t#%d : %s", idx, " ".join(filter_overrides(ov)))
            args = [(ov, "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state())
                    for idx, ov, _ in members]
            try:
                jobs = self._executor(nodes).map_array(self, *zip(*args, strict=True))
            except Exception as e:  # submitit's FailedJobError carries sbatch's own message
                msg = str(e).strip().splitlines()
                refused.append(f"sbatch refused {len(members)} point(s) with nodes={nodes}: "
                               f"{' '.join(m.strip() for m in msg if m.strip())[-600:]}\n    "
                               + "\n    ".join(p.run_id for _, _, p in members))
                continue
            now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            for (_, ov, point), job in zip(members, jobs, strict=True):
                path = point.run_dir  # the job writes config.yaml and meta.json when it starts
                path.mkdir(parents=True, exist_ok=True)
                rundir.log_event(path, "submitted", job_id=job.job_id, nodes=nodes,
                                 manifest=str(self.manifest))
                entries[point.run_id] = {"overrides": ov, "job_id": job.job_id, "nodes": nodes,
                                         "submitted": now, "run_dir": str(path)}

        if entries:
            from launcher.slurm import update_manifest

            update_manifest(self.manifest, entries)
        n_jobs = len({e["job_id"].split("_")[0] for e in entries.values()})
        print(f"submitted {len(entries)} point(s) in {n_jobs} array job(s); "
              f"{len(active)} already queued or running, not resubmitted", flush=True)
        for line in active:
            print(f"  queued: {line}", flush=True)
        if entries:
            print(f"manifest: {self.manifest}\nstatus:   python -m launcher.status "
                  f"--root {self.config.root}" + (f" --sweep {self.config.sweep}" if self.config.get("sweep") else ""),
                  flush=True)
        if refused:
            print("error: " + "\n  ".join(refused), file=sys.stderr, flush=True)
            raise SystemExit(1)
        return []
