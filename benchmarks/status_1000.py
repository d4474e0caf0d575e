"""Benchmark ``python -m launcher.status`` on a generated 1000-point sweep.

Writes a sweep of 1000 tiny points, composes it once (the plan cache), fills the run folders
with a mix of states (done, failed, partial with a checkpoint and a training log, submitted to
a SLURM job that has left the queue, new), then times the status command as a user runs it
(a fresh interpreter; squeue/sacct are called when SLURM answers): cold, the first status of a
changed sweep (no plan cache: every point composed, launcher/compose.py), and warm (from the
plan cache). Result: ``benchmarks/results/status_1000.json`` with ``seconds`` (the warm command,
best of 3) and ``cold_seconds`` (the cold one, best of 3).

    .venv/bin/python benchmarks/status_1000.py [--points 1000]
"""

from __future__ import annotations

import argparse
import json
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
from launcher import rundir, status  # noqa: E402


def fill(entries: list[status.Entry]) -> None:
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=1000)
    args = ap.parse_args()
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
        for _ in range(3):  # cold and warm in turn, so that both see the same machine load
            t, cold_out = timed(no_cache=True)
            cold_times.append(t)
            t, out = timed(no_cache=False)
            times.append(t)
        assert cold_out.splitlines()[-1] == out.splitlines()[-1]
        print(out.splitlines()[-1])
        slurm_up = shutil.which("squeue") is not None and subprocess.run(
            ["squeue", "-h"], capture_output=True).returncode == 0
        result = {"seconds": round(min(times), 3), "seconds_all": [round(t, 3) for t in times],
                  "cold_seconds": round(min(cold_times), 3),
                  "cold_seconds_all": [round(t, 3) for t in cold_times],
                  "points": args.points, "cold_compose_seconds": round(cold, 2),
                  "squeue_sacct_called": slurm_up, "summary": out.splitlines()[-1],
                  "machine": f"{platform.node()} {platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores",
                  "date": time.strftime("%Y-%m-%d")}
        atomic_write_json(REPO / "benchmarks" / "results" / "status_1000.json", result)
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
