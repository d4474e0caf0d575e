"""The local SLURM cluster (``scripts/slurm_up.sh``) as the SLURM tests use it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher import slurm
from tests.helpers.procs import ROOT

SLURM_DIR = Path(os.environ.get("CLIPSCALE_SLURM_DIR", "/tmp/clipscale-slurm"))
"""Where scripts/slurm_up.sh keeps the cluster's config, pid files and logs."""


def cluster_down_reason() -> str | None:
    """Why no local cluster answers (None when it does)."""
    try:
        out = subprocess.run(["sinfo", "-h", "-p", "debug", "-o", "%D %t"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"sinfo unavailable ({e})"
    if out.returncode != 0 or not out.stdout.strip():
        return f"sinfo failed: {(out.stderr or out.stdout).strip() or 'no partition debug'}"
    return None


def needs_cluster() -> list[pytest.MarkDecorator]:
    """The marks of a module whose tests need the cluster: ``slurm``, skipped with the reason."""
    why = cluster_down_reason()
    return [pytest.mark.slurm, pytest.mark.skipif(
        why is not None,
        reason=f"no local SLURM cluster (start it: sudo bash scripts/slurm_up.sh): {why}")]


def launch_cmd(root: Path, data_root: Path, *overrides: str) -> list[str]:
    return [sys.executable, "launch.py", "-m", *overrides, "cluster=slurm", f"root={root}",
            f"data_root={data_root}"]


def launch(root: Path, data_root: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    """Submit ``overrides`` as a sweep to the cluster (returns once submitted)."""
    return subprocess.run(launch_cmd(root, data_root, *overrides), cwd=ROOT, capture_output=True,
                          text=True, timeout=180, env={**os.environ, "HYDRA_FULL_ERROR": "1"})


def manifest(root: Path, sweep: str = "cli") -> dict:
    return json.loads((root / "_slurm" / f"{sweep}.json").read_text())["points"]


def wait_gone(job_ids: list[str], timeout: float = 240) -> None:
    """Wait until SLURM no longer holds any of ``job_ids``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not set(job_ids) & set(slurm.queue()):
            return
        time.sleep(1)
    raise AssertionError(f"jobs {job_ids} still queued after {timeout:.0f} s: {slurm.queue()}")


def wait_for(what: str, check, timeout: float = 180, every: float = 0.5):
    """Poll ``check()`` until it returns something true; AssertionError naming ``what``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def status(root: Path, sweep: Path, *overrides: str) -> str:
    out = subprocess.run([sys.executable, "-m", "launcher.status", "--sweep", str(sweep),
                          "--root", str(root), *overrides],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def processes_of_job(job_id: str, node: str) -> list[int]:
    """Pids of the job's task processes that run on ``node`` (from their environment)."""
    array, _, task = job_id.partition("_")
    want = {"SLURMD_NODENAME": node}
    want.update({"SLURM_ARRAY_JOB_ID": array, "SLURM_ARRAY_TASK_ID": task} if task
                else {"SLURM_JOB_ID": job_id})
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = dict(kv.split("=", 1) for kv in
                       (proc / "environ").read_bytes().decode(errors="replace").split("\0") if "=" in kv)
        except OSError:
            continue
        if all(env.get(k) == v for k, v in want.items()):
            pids.append(int(proc.name))
    return pids


def parent(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1])


def command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def sacct(job_ids: list[str], fields: str) -> dict[str, dict[str, str]]:
    """``sacct`` rows of ``job_ids``: job id -> {field: value} (``fields``: ``State,Start,End``).

    An array task cancelled before it started may have no row of its own: sacct then shows it
    only inside its array's remaining record (``535_[0-1%2]``, which ``-j 535_1`` does not
    match), so arrays are asked for whole and such a task gets that record's row."""
    arrays = sorted({j.partition("_")[0] for j in job_ids if "_" in j})
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", f"JobID,{fields}", "-j",
                          ",".join([*job_ids, *arrays])],
                         capture_output=True, text=True, timeout=30, check=True).stdout  # fmt: skip
    names = fields.split(",")
    rows = {r.split("|")[0]: dict(zip(names, r.split("|")[1:], strict=True)) for r in out.splitlines() if r}
    for jid in job_ids:
        base, _, task = jid.partition("_")
        if jid in rows or not task.isdigit():
            continue
        for rid, row in list(rows.items()):
            spec = re.fullmatch(rf"{re.escape(base)}_\[([0-9,-]+)(?:%\d+)?\]", rid)
            if spec and int(task) in _array_tasks(spec.group(1)):
                rows[jid] = row
    return {jid: rows[jid] for jid in job_ids if jid in rows}


def _array_tasks(spec: str) -> set[int]:
    """The task ids of an array spec such as ``0-3,7``."""
    out: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


RELEASE_SETTLE_S = 5.0
"""How long a requeued job must have waited before it is released early: released within a
second or two of its requeue, slurmctld 22.05 may still be ending the previous run ("Job
credential revoked", the job FAILED for good; or an srun retrying "Requested nodes are busy")."""


def release(job_ids: list[str], timeout: float = 120) -> None:
    """Start requeued jobs now instead of after their 120 s BeginTime: each once squeue shows it
    PENDING for BeginTime and it has waited ``RELEASE_SETTLE_S`` there (a job already running
    or gone is left alone)."""
    for jid in job_ids:
        deadline, since = time.time() + timeout, None
        while time.time() < deadline:
            state, reason = slurm.queue_detail().get(jid, ("", ""))
            if state != "PENDING":
                if state not in ("REQUEUED", "COMPLETING", "REQUEUE_HOLD"):
                    break  # running, or gone: nothing to release
                since = None
            elif "BeginTime" in reason:
                since = since or time.time()
                if time.time() - since >= RELEASE_SETTLE_S:
                    subprocess.run(["scontrol", "update", f"jobid={jid}", "starttime=now"],
                                   capture_output=True, timeout=30)
                    break
            time.sleep(0.5)


def row(table: str, key: str) -> str:
    """The line of a status table whose first column is ``key`` (AssertionError if none)."""
    for line in table.splitlines():
        if line.split(" ", 1)[0] == key:
            return line
    raise AssertionError(f"no row {key} in\n{table}")


def cancel_cmd(root: Path, *run_ids: str) -> subprocess.CompletedProcess[str]:
    """``python -m launcher.slurm cancel --root ROOT [RUN_ID ...]``."""
    return subprocess.run([sys.executable, "-m", "launcher.slurm", "cancel", "--root", str(root), *run_ids],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def sacct_settled(job_ids: list[str], fields: str, timeout: float = 60) -> dict[str, dict[str, str]]:
    """:func:`sacct` once accounting has recorded every job's end (slurmdbd lags the queue by a
    few seconds: a job squeue no longer shows may still read RUNNING, End=Unknown)."""
    def settled() -> dict[str, dict[str, str]] | None:
        rows = sacct(job_ids, f"{fields},End,State")
        done = set(rows) >= set(job_ids) and all(
            r["End"] not in ("", "Unknown") and r["State"].split()[0] not in
            ("PENDING", "RUNNING", "REQUEUED", "COMPLETING") for r in rows.values())
        return rows if done else None

    return wait_for(f"accounting of jobs {job_ids}", settled, timeout=timeout, every=1)
