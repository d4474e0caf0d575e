"""Benchmark ``python -m launcher.status`` on a generated sweep of N points.

Writes a sweep of N tiny points, composes it once (the plan cache), fills the run folders with
a mix of states (done, failed, partial with a checkpoint and a training log, submitted to a
SLURM job that has left the queue, new), then times the status command as a user runs it (a
fresh interpreter; squeue/sacct are called when SLURM answers): cold, the first status of a
changed sweep (no plan cache: every point composed, launcher/compose.py), and warm (from the
plan cache). Cold and warm run in turn, three times each, so both see the same machine load.

It also runs status once in this process with ``launcher.slurm._run`` wrapped, to record how
many times squeue and sacct were called (once and at most once, whatever N).

Result: ``benchmarks/results/status_<N>.json`` with ``seconds`` (the warm command, best of 3),
``cold_seconds`` (the cold one, best of 3), both lists, and the SLURM calls.

    .venv/bin/python benchmarks/status_bench.py --points 10000
    .venv/bin/python benchmarks/status_bench.py --points 1000
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.atomic import atomic_write_json  # noqa: E402
from launcher import rundir, slurm, status  # noqa: E402


def fill(entries: list[status.Entry]) -> None:
    """Every fifth point new; the others submitted (job 900000 + i, long gone from SLURM) and
    started, with a 20-line training log and one checkpoint; of those a quarter done, a
    quarter failed, half partial."""
    for i, e in enumerate(entries):
        kind = i % 5
        if kind == 4:
            continue  # new
        e.run_dir.mkdir(parents=True, exist_ok=True)
        rundir.log_event(e.run_dir, "submitted", job_id=str(900000 + i))
        rundir.log_event(e.run_dir, "start", job_id=str(900000 + i))
        with open(e.run_dir / "train_log.jsonl", "w") as f:
            for s in range(1, 21):
                f.write(json.dumps({"step": s, "samples_seen": s * 128, "loss": 1.0}) + "\n")
        ck = e.run_dir / "checkpoints"
        ck.mkdir(exist_ok=True)
        (ck / "step_00000020.pt").write_bytes(b"x")
        (ck / "step_00000020.pt.done").write_bytes(b"")
        if kind == 0:
            rundir.log_event(e.run_dir, "done", seconds=1.0)
        elif kind == 1:
            rundir.log_event(e.run_dir, "failed", error="RuntimeError: loss is NaN at step 20")


def slurm_calls(sweep: Path, root: Path) -> dict[str, int]:
    """Run status once in this process, counting the SLURM commands it runs (the real ones)."""
    calls: dict[str, int] = {}
    real = slurm._run

    def counting(cmd: list[str], timeout: float = 30) -> str:
        calls[cmd[0]] = calls.get(cmd[0], 0) + 1
        return real(cmd, timeout)

    slurm._run = counting  # type: ignore[assignment]
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            status.main(["--sweep", str(sweep), "--root", str(root)])
    finally:
        slurm._run = real  # type: ignore[assignment]
    return calls


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None,
                    help="result file (default benchmarks/results/status_<points>.json)")
    args = ap.parse_args()
    out_path = args.out or REPO / "benchmarks" / "results" / f"status_{args.points}.json"
    load_before = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="status_bench_"))
    try:
        sweep = tmp / "bench.yaml"
        seen = [256 * (i + 1) for i in range(args.points)]
        sweep.write_text("points:\n  - {model: tiny_s, data: syn4k, samples: s6k, eval: none, "
                         f"samples.seen: {seen}}}\n")
        root = tmp / "runs"
        tic = time.perf_counter()
        entries = status.sweep_points(str(sweep), [f"root={root}"], root)
        cold = time.perf_counter() - tic
        assert len(entries) == args.points, len(entries)
        fill(entries)
        cmd = [sys.executable, "-m", "launcher.status", "--sweep", str(sweep), "--root", str(root)]

        def timed(no_cache: bool) -> tuple[float, str]:
            if no_cache:
                shutil.rmtree(root / "_status")
            tic = time.perf_counter()
            out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
            return time.perf_counter() - tic, out.stdout

        cold_times, times = [], []
        cold_out = out = ""
        for _ in range(args.rounds):
            t, cold_out = timed(no_cache=True)
            cold_times.append(t)
            t, out = timed(no_cache=False)
            times.append(t)
        assert cold_out.splitlines()[-1] == out.splitlines()[-1]
        summary = out.splitlines()[-1]
        print(summary)
        calls = slurm_calls(sweep, root)
        result = {"seconds": round(min(times), 3), "seconds_all": [round(t, 3) for t in times],
                  "cold_seconds": round(min(cold_times), 3),
                  "cold_seconds_all": [round(t, 3) for t in cold_times],
                  "points": args.points, "cold_compose_seconds": round(cold, 2),
                  "squeue_sacct_called": calls.get("squeue", 0) > 0,
                  "slurm_calls": calls, "summary": summary,
                  "machine": f"{platform.node()} {platform.machine()}, "
                             f"{len(os.sched_getaffinity(0))} cores",
                  # the machine is shared: its 1-minute load average before and after the runs
                  "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                  "date": time.strftime("%Y-%m-%d")}
        atomic_write_json(out_path, result)
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
