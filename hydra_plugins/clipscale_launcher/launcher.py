"""Submit a sweep to SLURM and return: hydra-submitit-launcher's SlurmLauncher, minus the wait.

The stock launcher blocks until every job has ended (a login-node process that must live for
weeks). This one, selected by ``cluster=slurm`` (``hydra/launcher: clipscale_slurm``):

1. reads the queue once (``squeue``; unreachable slurmctld -> a clear error, nothing written);
2. leaves out every point that SLURM still holds a job of (the sweeper already left out the
   done ones), so relaunching never submits a second job for a point;
3. submits the rest as job arrays, one per node count (``nodes`` follows from the point's
   global batch, as in the plan; every other sbatch field is hydra-submitit-launcher's, and
   ``array_parallelism`` caps how many tasks of an array run at once: ``--array=0-N%P``); a
   group larger than the cluster's ``MaxArraySize`` (``scontrol show config``, read once) is
   split into several arrays of at most that many tasks.
   A point with evaluation datasets trains in that array (``stage=train``) and is evaluated by
   a small job of its own (1 node, 1 task, ``eval_timeout_min``) in a second array that
   depends on the first task by task (``--dependency=aftercorr``, ``--kill-on-invalid-dep``):
   the large allocation is never held while one process evaluates, and an evaluation starts
   only after its own training succeeded. A point whose training is finished gets only the
   evaluation job;
4. submits the trunks of ``train.schedule=const_cooldown`` points as job graphs
   (``launcher.graph``): one job per trunk segment, each ``afterok`` on the segment before it,
   one job per branch, ``afterok`` on the segment that ends at its fork step, and a branch's
   evaluation job ``afterok`` on the branch, all with ``--kill-on-invalid-dep=yes`` (a failed
   or cancelled segment takes what waits for it along). A segment or branch SLURM still holds
   is not submitted again; what a relaunch adds waits for the queued job it depends on;
5. records the job ids in the run's ``status.jsonl`` (``submitted``; a trunk's segments share
   its folder, so each names its ``trunk_until``) and in the sweep manifest
   ``<root>/_slurm/<sweep>.json`` (a segment under ``<trunk id>@<until>``, with the job it
   waits for under ``after``), and returns.

Each job's processes take their torch.distributed setup from SLURM (submitit's
``TorchDistributedEnvironment``: rank, local rank, world size, the allocation's first node as
master, a port drawn from the job id), so a job of several nodes trains in DDP.

An array that sbatch refuses (unknown partition, too many nodes, ...) is reported with sbatch's
own message and each point it concerns; the other arrays are still submitted, and the command
then exits with status 1.
"""


import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import OmegaConf

from core.errors import Preempted
from core.states import Event
from launcher import graph, hydra_internals, rundir, slurm
from launcher.lease import Lease, LeaseHeld
from launcher.plan import make_point
from launcher.policy import Action, RelaunchPolicy
from launcher.protocol import SubmittingLauncher
from launcher.run import slurm_job

log = logging.getLogger(__name__)

SUBMIT_LOCK_WAIT_S = 600.0
"""How long a submission waits for a concurrent submission of the same sweep to finish."""


@dataclass
class ClipscaleSlurmConf(SlurmQueueConf):
    """hydra-submitit-launcher's SLURM fields (partition, account, qos, timeout_min, ...)."""

    _target_: str = "hydra_plugins.clipscale_launcher.launcher.ClipscaleSlurmLauncher"
    submitit_folder: str = "${root}/_slurm/submitit/%j"
    manifest: str | None = None
    """The sweep manifest (run id -> overrides, job id, submission time; merged on relaunch);
    null: ``<root>/_slurm/<sweep name, or cli>.json``."""
    separate_eval: bool = True
    """Evaluate in a dependent job of its own (1 node, 1 task); false: in the training job."""
    eval_timeout_min: int = 120
    """Time limit of an evaluation job."""


ConfigStore.instance().store(group="hydra/launcher", name="clipscale_slurm",
                             node=ClipscaleSlurmConf, provider="clipscale")


class ClipscaleSlurmLauncher(SlurmLauncher, SubmittingLauncher):
    def __init__(self, manifest: str | None = None, separate_eval: bool = True,
                 eval_timeout_min: int = 120, **params: Any) -> None:
        super().__init__(**params)
        self._manifest = manifest
        self._separate_eval = separate_eval
        self._eval_timeout_min = eval_timeout_min
        self._plan: dict[tuple[str, ...], Any] = {}

    def set_plan(self, points: list[Any]) -> None:
        """The sweeper's checked points (``launcher.plan.Point``), keyed by their overrides."""
        self._plan = {tuple(p.overrides): p for p in points}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_plan"] = {}  # the job needs only its overrides, not the whole sweep's configs
        return state

    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
        _export_distributed()
        ret = super().__call__(*args, **kwargs)
        error = hydra_internals.job_error(ret)
        if isinstance(error, Preempted):
            if error.signum == signal.SIGUSR2:
                # The time limit or a preemption, signalled through submitit (--signal=USR2): the
                # trainer saved a checkpoint; hand the signal back to submitit, whose handler
                # calls checkpoint() below, requeues this job and exits.
                signal.raise_signal(signal.SIGUSR2)
            else:
                # SIGTERM: SLURM itself requeues (scontrol requeue, a preemption) or ends the
                # job; asking submitit to requeue it again would fail. Stop here, quietly.
                print(f"clipscale: {error}; SLURM requeues or ends the job", file=sys.stderr,
                      flush=True)
                return ret
        _ = ret.return_value  # re-raises a failed point, so that SLURM records the job as FAILED
        return ret

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """SLURM signalled the time limit or a preemption: requeue the same point; its run
        resumes from the newest complete checkpoint (``max_num_timeout`` bounds the requeues).
        The run folder logs ``requeued`` (unless the trainer logged ``preempted`` already), so
        the ``SystemExit`` submitit raises next is not taken for a failure (``run_point``)."""
        self._log_requeue(hydra_internals.overrides_of_call(args, kwargs))
        return super().checkpoint(*args, **kwargs)

    def _log_requeue(self, overrides: list[str]) -> None:
        assert self.config is not None and self.hydra_context is not None
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        path = make_point(overrides, cfg).run_dir
        evs = rundir.events(path)
        if not evs or evs[-1].get("event") != Event.PREEMPTED:
            rundir.log_event(path, Event.REQUEUED, stage=str(cfg.stage), **slurm_job())

    def _executor(self, nodes: int, **extra: Any) -> Any:
        import submitit  # kept off Hydra's start-up, which imports every plugin (as hydra-submitit-launcher does)

        params = hydra_internals.launcher_params(self)
        init = {"folder": params.pop("submitit_folder"),
                "slurm_max_num_timeout": params.pop("max_num_timeout", 0)}
        executor = submitit.AutoExecutor(cluster="slurm", **init)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        params.update(nodes=nodes, **extra)
        executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
        return executor

    def _eval_executor(self, after: str | None, kind: str = "aftercorr") -> Any:
        """One node, one task (one GPU where the training jobs have GPUs), the evaluation time
        limit; ``after``: the training array whose task i this array's task i waits for
        (``kind="afterok"``: the one training job this job waits for)."""
        extra: dict[str, Any] = {"tasks_per_node": 1, "timeout_min": self._eval_timeout_min}
        if hydra_internals.launcher_params(self).get("gpus_per_node"):
            extra["gpus_per_node"] = 1
        return self._executor(1, **extra, **self._depends(after, kind))

    def _depends(self, after: str | None, kind: str = "afterok") -> dict[str, Any]:
        """sbatch's ``--dependency=<kind>:<after>`` and ``--kill-on-invalid-dep=yes`` (a job
        whose dependency can never be met, its training failed or was cancelled, is dropped)."""
        if not after:
            return {}
        params = hydra_internals.launcher_params(self)
        return {"additional_parameters": {**(params.get("additional_parameters") or {}),
                                          "dependency": f"{kind}:{after}",
                                          "kill_on_invalid_dep": "yes"}}

    def _submit(self, executor: Any, members: list[tuple[int, list[str], Any]],
                stage: str) -> tuple[list[Any] | None, str | None]:
        """Submit one array; (jobs, None), or (None, sbatch's message) when it was refused."""
        args = [hydra_internals.submitit_call_args(_with_stage(ov, stage), idx, Singleton.get_state())
                for idx, ov, _ in members]
        try:
            return executor.map_array(self, *zip(*args, strict=True)), None
        except Exception as e:  # submitit's FailedJobError carries sbatch's own message
            lines = [m.strip() for m in str(e).strip().splitlines() if m.strip()]
            return None, " ".join(lines)[-600:]

    def _submit_chunk(self, stage: str, nodes: int, members: list[tuple[int, list[str], Any]],
                      entries: dict[str, dict[str, Any]], refused: list[str]) -> None:
        """Submit one array (at most MaxArraySize points; a training array is followed by its
        evaluation array, task i after task i); record each point's jobs in its run folder and
        in ``entries``, or sbatch's refusal in ``refused``."""
        first = self._eval_executor(None) if stage == "eval" else self._executor(nodes)
        jobs, error = self._submit(first, members, stage)
        if jobs is None:
            refused.append(_refusal(f"{stage} job(s), nodes={nodes}", error, members))
            return
        evals: list[Any] = [None] * len(members)
        if stage == "train":
            array = jobs[0].job_id.split("_")[0]
            evals_or_none, error = self._submit(self._eval_executor(array), members, "eval")
            if evals_or_none is None:
                refused.append(_refusal(f"evaluation job(s) after training array {array} "
                                        "(training submitted; a relaunch submits the "
                                        "evaluation alone once it is trained)", error, members))
            else:
                evals = evals_or_none
        now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        for (_, ov, point), job, ev in zip(members, jobs, evals, strict=True):
            path = point.run_dir  # the job writes config.yaml and meta.json when it starts
            path.mkdir(parents=True, exist_ok=True)
            fields = {"job_id": job.job_id, "stage": stage, "nodes": nodes,
                      "eval_job_id": ev.job_id if ev is not None else None}
            rundir.log_event(path, Event.SUBMITTED, **fields, manifest=str(self.manifest))
            entries[point.run_id] = {"overrides": ov, **fields, "submitted": now,
                                     "run_dir": str(path)}

    def _submit_graph(self, jobs: list[Any], index: dict[str, int], entries: dict[str, dict[str, Any]],
                      refused: list[str]) -> list[str]:
        """Submit the trunk segments and branches (``launcher.graph``), one job each, in order:
        each after the job it depends on (``afterok``, ``--kill-on-invalid-dep=yes``), a branch
        with evaluation datasets followed by its evaluation job (``afterok`` on the branch).
        Returns one line per job for the summary."""
        ids: dict[str, str] = {}  # key -> job id, of this submission
        lines = []
        for job in jobs:
            point, member = job.point, [(index[job.key], list(job.point.overrides), job.point)]
            after = ids.get(job.after) if job.after else job.after_job
            if job.after and after is None:
                refused.append(f"{job.key} [{' '.join(point.overrides)}]: not submitted: it "
                               f"waits for {job.after}, which was not submitted")
                continue
            submitted, error = self._submit(self._executor(point.nodes, **self._depends(after)),
                                            member, job.stage)
            if submitted is None:
                refused.append(_refusal(f"{job.key} job, nodes={point.nodes}", error, member))
                continue
            jid = ids[job.key] = submitted[0].job_id
            eval_id = None
            if job.with_eval:
                evals, error = self._submit(self._eval_executor(jid, "afterok"), member, "eval")
                if evals is None:
                    refused.append(_refusal(f"evaluation job after {jid} (training submitted; a "
                                            "relaunch submits the evaluation alone once it is "
                                            "trained)", error, member))
                else:
                    eval_id = evals[0].job_id
            role = ({"trunk_until": point.trunk_until, "start": point.start} if point.trunk_until
                    else {"trunk": job.trunk, "fork_step": point.start})
            fields = {"job_id": jid, "stage": job.stage, "nodes": point.nodes,
                      "eval_job_id": eval_id, "after": after, **role}
            point.run_dir.mkdir(parents=True, exist_ok=True)
            rundir.log_event(point.run_dir, Event.SUBMITTED, **fields, manifest=str(self.manifest))
            entries[job.key] = {"overrides": list(point.overrides), **fields,
                                "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                "run_dir": str(point.run_dir)}
            what = (f"segment {point.start}->{point.trunk_until}" if point.trunk_until
                    else f"branch {point.start}->{point.total_steps}")
            lines.append(f"  {job.key}: {what}, job {jid}"
                         + (f" after {after}" if after else "")
                         + (f", evaluation job {eval_id}" if eval_id else ""))
        return lines

    def launch(self, job_overrides: Any, initial_job_idx: int) -> list[JobReturn]:
        """Submit the points under the sweep manifest's lock: two concurrent submissions of one
        sweep read the queue one after the other, so no point is submitted twice."""
        assert self.config is not None and self.hydra_context is not None
        self.manifest = Path(self._manifest) if self._manifest else slurm.manifest_path(
            self.config.root, Path(str(self.config.sweep)).stem if self.config.get("sweep") else None)
        lock = Lease(self.manifest.with_name(self.manifest.name + ".lock"), "submission",
                     heartbeat_s=self.config.lease.heartbeat_s,
                     stale_after_s=self.config.lease.stale_after_s)
        made = [p for p in (self.manifest.parent.parent, self.manifest.parent) if not p.exists()]
        try:
            with lock.hold(wait_s=SUBMIT_LOCK_WAIT_S) as takeover:
                if takeover is not None:
                    log.warning("took over the stale submission lock of %s: %s", self.manifest,
                                takeover.reason)
                return self._launch_locked(job_overrides, initial_job_idx)
        except LeaseHeld as e:
            print(f"error: another submission of this sweep is still running: {e}\n"
                  "nothing was submitted", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        finally:  # a submission that wrote nothing (SLURM unreachable) leaves no folders behind
            for folder in reversed(made):
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only when empty

    def _launch_locked(self, job_overrides: Any, initial_job_idx: int) -> list[JobReturn]:
        assert self.config is not None and self.hydra_context is not None
        try:
            squeue = slurm.queue()
        except slurm.SlurmError as e:
            print(f"error: cannot submit, SLURM does not answer: {e}\nnothing was submitted",
                  file=sys.stderr, flush=True)
            raise SystemExit(2) from None

        # (stage of the first job, nodes) -> points; stage "train" is followed by an eval array
        groups: dict[tuple[str, int], list[tuple[int, list[str], Any]]] = defaultdict(list)
        policy = RelaunchPolicy.from_config(self.config)
        active = []
        items: list[tuple[Any, Action]] = []
        index: dict[str, int] = {}
        queued_segments: dict[str, str] = {}  # segment key -> the job SLURM holds of it
        logs: dict[Path, list[dict[str, Any]]] = {}  # a trunk's log, read once for its segments
        for i, ov in enumerate(job_overrides):
            ov = list(ov)
            point = self._plan.get(tuple(ov)) or make_point(
                ov, self.hydra_context.config_loader.load_sweep_config(self.config, ov))
            evs = logs[point.run_dir] if point.run_dir in logs else logs.setdefault(
                point.run_dir, rundir.events(point.run_dir))
            key = graph.point_key(point)
            index[key] = initial_job_idx + i
            if point.trunk_until:
                job = slurm.segment_jobs(evs).get(point.trunk_until)
                queued = [job] if job in squeue else []
                has_eval, trained = False, False
                if queued:
                    queued_segments[key] = queued[0]
            else:
                queued = [j for j in slurm.point_jobs(point.run_dir, evs).values() if j in squeue]
                has_eval = len(point.cfg.eval.datasets) > 0
                trained = rundir.training_finished(point.run_dir, evs)
            action = policy.decide(point.state, queued=bool(queued), has_eval=has_eval, trained=trained)
            if action == Action.SKIP and queued:
                active.append(f"{key} (job {', '.join(f'{j} {squeue[j].lower()}' for j in queued)})")
            items.append((point, action))

        plan = graph.build(items, queued_segments, self._separate_eval)
        for point, action in plan.plain:
            has_eval = len(point.cfg.eval.datasets) > 0
            if action == Action.EVALUATE:
                group = ("eval", 1)
            elif has_eval and self._separate_eval:
                group = ("train", point.nodes)
            else:
                group = ("all", point.nodes)
            groups[group].append((index[graph.point_key(point)], list(point.overrides), point))

        entries: dict[str, dict[str, Any]] = {}
        refused: list[str] = []
        # sbatch refuses an array index >= MaxArraySize: larger groups go in several arrays
        chunk = slurm.max_array_size() if groups else 1
        for (stage, nodes), grouped in sorted(groups.items()):
            for idx, ov, _ in grouped:
                log.info("\t#%d : %s", idx, " ".join(filter_overrides(ov)))
            for start in range(0, len(grouped), chunk):
                members = grouped[start:start + chunk]
                self._submit_chunk(stage, nodes, members, entries, refused)

        trunk_entries: dict[str, dict[str, Any]] = {}
        trunk_lines = self._submit_graph(plan.jobs, index, trunk_entries, refused)
        if entries or trunk_entries:
            slurm.update_manifest(self.manifest, {**entries, **trunk_entries})
        arrays = {e[k].split("_")[0] for e in entries.values() for k in ("job_id", "eval_job_id") if e[k]}
        n_eval = sum(e["eval_job_id"] is not None or e["stage"] == "eval" for e in entries.values())
        if entries or not trunk_entries:
            print(f"submitted {len(entries)} point(s) in {len(arrays)} array job(s) "
                  f"({n_eval} with an evaluation job); "
                  f"{len(active)} already queued or running, not resubmitted", flush=True)
        if trunk_entries:
            n_seg = sum("trunk_until" in e for e in trunk_entries.values())
            print(f"submitted {n_seg} trunk segment(s) and {len(trunk_entries) - n_seg} branch(es), "
                  "one job each, each after the job it forks from or extends (afterok); "
                  f"{len(active)} already queued or running, not resubmitted", flush=True)
            for line in trunk_lines:
                print(line, flush=True)
        entries = {**entries, **trunk_entries}
        for line in active:
            print(f"  queued: {line}", flush=True)
        if entries:
            print(f"manifest: {self.manifest}\nstatus:   python -m launcher.status "
                  f"--root {self.config.root}" + (f" --sweep {self.config.sweep}" if self.config.get("sweep") else ""),
                  flush=True)
        if refused:
            print("error: " + "\n".join(refused), file=sys.stderr, flush=True)
            raise SystemExit(1)
        return []


def _with_stage(overrides: list[str], stage: str) -> list[str]:
    """The point's overrides with ``stage=`` set for its job."""
    return [o for o in overrides if not o.startswith("stage=")] + [f"stage={stage}"]


def _refusal(what: str, error: str | None, members: list[tuple[int, list[str], Any]]) -> str:
    lines = [f"sbatch refused the {what} of {len(members)} point(s): {error}"]
    lines += [f"  point {p.run_id} [{' '.join(ov)}]: not submitted" for _, ov, p in members]
    return "\n".join(lines)


def _export_distributed() -> None:
    """In a SLURM job of several tasks: torch.distributed's variables from the allocation
    (submitit's TorchDistributedEnvironment). The master is the first node; where its SLURM
    name does not resolve (a node whose NodeAddr differs from its name, as on the local test
    cluster), its NodeAddr from ``scontrol``."""
    import submitit  # as hydra-submitit-launcher does: Hydra imports every plugin at start-up

    try:
        env = submitit.JobEnvironment()
        if env.num_tasks <= 1:
            return
    except RuntimeError:  # not in a SLURM job
        return
    dist_env = submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    try:
        socket.gethostbyname(dist_env.master_addr)
    except OSError:
        out = subprocess.run(["scontrol", "show", "node", "-o", dist_env.master_addr],
                             capture_output=True, text=True, timeout=30).stdout
        addr = next((f.split("=", 1)[1] for f in out.split() if f.startswith("NodeAddr=")), None)
        if addr:
            os.environ["MASTER_ADDR"] = addr
    print(f"clipscale: torch.distributed rank {os.environ['RANK']} of {os.environ['WORLD_SIZE']}, "
          f"master {os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}", file=sys.stderr, flush=True)
