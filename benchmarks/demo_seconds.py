"""Wall time of ``make demo`` from scratch: the 12 demo points trained and evaluated, then the fit.

Runs in a fresh temporary root and data root (the synthetic sets are generated, as on a
newcomer's first run), exactly what the demo runs:

* ``--mode parallel`` (the default, the proposed ``make demo``): two ``launch.py -m sweep=demo``
  processes at once, one per dataset (``data=syn32k`` and ``data=syn4k``: each holds half the
  training compute, and every trunk of a const_cooldown grid stays within one process), each on
  one core (``OMP_NUM_THREADS=1``); then ``python -m analysis --source store``.
* ``--mode sequential``: the previous ``make demo``, one process for the 12 points, torch's
  default threads.

Records ``seconds`` (the whole thing), the launch and analysis phases, a breakdown summed over
the points from each run's status log (``done``: data generation, training, evaluation; the
trained event: the training loop alone) with the start-up as the rest of each process's wall
time, the machine's load average before and after (and sampled during: the machine is shared),
and the fitted exponents of the report with their intervals (``fits.csv``). ``step_floor``: what
the training steps alone would take, each model's optimizer step timed in isolation (one
thread, an in-memory batch, after the demo) times the grid's steps, spread over the two
processes: the wall time no loader, evaluation or scheduling could get under.

    python benchmarks/demo_seconds.py              # writes benchmarks/results/demo_seconds.json
    python benchmarks/demo_seconds.py --quick      # 2 points, no fit: the script's own test
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
PARTS = ("syn32k", "syn4k")
"""One process per dataset: the same samples seen, so the same training compute in each."""


class LoadSampler:
    """The 1-minute load average every ``every`` seconds while it runs (a shared machine)."""

    def __init__(self, every: float = 5.0):
        self.every = every
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append(round(os.getloadavg()[0], 2))

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, Any]:
        s = self.samples
        return {"mean": round(sum(s) / len(s), 2) if s else None, "max": max(s, default=None),
                "samples": len(s), "every_s": self.every}


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def launch_commands(root: Path, data_root: Path, mode: str, overrides: Sequence[str] = (),
                    parts: Sequence[str] = PARTS) -> list[tuple[str, list[str], dict[str, str]]]:
    """``(name, argv, extra env)`` of each launch process ``mode`` runs at once (``parallel``:
    one per dataset of ``parts``)."""
    base = [PY, str(ROOT / "launch.py"), "-m", "sweep=demo", f"root={root}",
            f"data_root={data_root}", *overrides]
    if mode == "sequential":
        return [("all", base, {})]
    return [(part, [*base, f"data={part}"], {"OMP_NUM_THREADS": "1"}) for part in parts]


def run_launches(commands: list[tuple[str, list[str], dict[str, str]]], log_dir: Path
                 ) -> dict[str, dict[str, Any]]:
    """Start every command at once, wait for all; wall seconds and exit status of each."""
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": str(ROOT)}
    procs = {}
    for name, argv, extra in commands:
        log = open(log_dir / f"launch_{name}.log", "w")  # noqa: SIM115 - closed below
        procs[name] = (subprocess.Popen(argv, cwd=ROOT, env={**env, **extra}, stdout=log,
                                        stderr=subprocess.STDOUT), log, time.perf_counter())
    out: dict[str, dict[str, Any]] = {}

    def wait(name: str, proc: subprocess.Popen, began: float) -> None:
        rc = proc.wait()
        out[name] = {"seconds": round(time.perf_counter() - began, 1), "returncode": rc,
                     "argv": [a if a != PY else "python" for a in proc.args]}  # type: ignore[union-attr]

    waiters = [threading.Thread(target=wait, args=(n, p, b)) for n, (p, _, b) in procs.items()]
    for w in waiters:
        w.start()
    for w in waiters:
        w.join()
    for _, log, _ in procs.values():
        log.close()
    out = {n: out[n] for n in procs}
    failed = {n: o for n, o in out.items() if o["returncode"]}
    if failed:
        tails = {n: (log_dir / f"launch_{n}.log").read_text()[-3000:] for n in failed}
        raise RuntimeError(f"launch failed: {failed}\n{tails}")
    return out


def events(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "status.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def breakdown(root: Path, processes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Seconds summed over the points (and trunk segments) from their status logs; start-up
    is each process's wall time less what its points spent."""
    parts = {"data_generation": 0.0, "training": 0.0, "training_loop": 0.0, "evaluation": 0.0}
    per_point, spent_by_part = {}, dict.fromkeys(processes, 0.0)
    for run_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")):
        evs = events(run_dir)
        done = [e for e in evs if e["event"] == "done"]
        trained = [e for e in evs if e["event"] == "trained"]
        if done:  # a point (cosine, or a branch)
            d = done[-1]
            loop = float(trained[-1]["seconds"]) if trained else 0.0
            row = {"seconds": d["seconds"], "data_generation": d.get("seconds_data", 0.0),
                   "training": d.get("seconds_train", 0.0), "training_loop": loop,
                   "evaluation": d.get("seconds_eval", 0.0)}
        elif trained:  # a trunk: one trained event per segment
            row = {"seconds": 0.0, "data_generation": 0.0, "training": 0.0, "training_loop": 0.0,
                   "evaluation": 0.0, "segments": len(trained)}
            for e in trained:
                row["data_generation"] += e.get("seconds_data", 0.0)
                row["training"] += e.get("seconds_train", 0.0)
                row["training_loop"] += float(e["seconds"])
            row["seconds"] = round(row["data_generation"] + row["training"], 2)
        else:
            continue
        per_point[run_dir.name] = row
        for k in parts:
            parts[k] += float(row[k])
        owner = next((n for n in processes if f"-{n}-" in run_dir.name), next(iter(processes)))
        spent_by_part[owner] += float(row["seconds"])
    startup = {n: round(processes[n]["seconds"] - spent_by_part[n], 1) for n in processes}
    return {
        **{k: round(v, 1) for k, v in parts.items()},
        "startup": round(sum(startup.values()), 1),
        "startup_per_process": startup,
        "per_point": per_point,
    }


def _step_seconds(arch: str, batch: int, recipe: Any, timed: int) -> float:
    """Seconds an optimizer step of ``arch`` takes alone (in-memory batch, the trainer's own
    ``train_step``, timed as ``gpu_throughput.py`` times ours after 3 warm-up steps)."""
    import torch  # heavy: only for this measurement, after the demo
    from gpu_throughput import _batches, _measure
    from open_clip import ClipLoss

    from training.models import create_model
    from training.step import make_optimizer, train_step

    cpu = torch.device("cpu")
    torch.manual_seed(0)
    model, _, _, _ = create_model(arch, "fp32", cpu)
    optimizer, loss_fn = make_optimizer(model, recipe), ClipLoss()
    data = _batches(model, batch, 1, cpu, None)

    def run(n: int) -> None:
        for _ in range(n):
            train_step(model, optimizer, None, loss_fn, data, contextlib.nullcontext)

    return batch / _measure(run, 3, timed, batch, cpu)["samples_per_s"]


def step_floor(processes: int = len(PARTS), timed: int = 10) -> dict[str, Any]:
    """Each demo model's isolated step time on one thread (:func:`_step_seconds`) and the grid's
    training steps at that rate over ``processes`` cores."""
    import torch  # heavy: only for this measurement, after the demo
    from omegaconf import OmegaConf

    conf = ROOT / "conf"
    grid = OmegaConf.load(ROOT / "sweeps" / "demo.yaml").points[0]
    recipe = OmegaConf.merge(OmegaConf.load(conf / "train" / "paper.yaml"),
                             OmegaConf.load(conf / "train" / "tiny.yaml"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    per_model: dict[str, Any] = {}
    try:
        for name in grid.model:
            m = OmegaConf.load(conf / "model" / f"{name}.yaml")
            batch = int(m.global_batch)
            step_s = _step_seconds(m.arch, batch, recipe, timed)
            steps = sum(int(OmegaConf.load(conf / "samples" / f"{s}.yaml").seen) // batch
                        for s in grid.samples) * len(grid.data)
            per_model[name] = {"step_s": round(step_s, 4), "steps": steps,
                               "seconds": round(step_s * steps, 1)}
    finally:
        torch.set_num_threads(threads)
    total = sum(v["seconds"] for v in per_model.values())
    return {"seconds": round(total / processes, 1), "cpu_seconds": round(total, 1),
            "processes": processes, "per_model": per_model}


def fitted_exponents(out_dir: Path) -> list[dict[str, Any]]:
    """The report's fits (``fits.csv``): alpha with its interval, and whether it excludes 0."""
    path = out_dir / "fits.csv"
    if not path.exists():
        return []
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            try:
                alpha, low, high = (float(r[k]) for k in ("alpha", "alpha_low", "alpha_high"))
            except (KeyError, ValueError):
                continue
            boot = [_float(r.get(k)) for k in ("boot_alpha_low", "boot_alpha_high")]
            rows.append({"family": r.get("family"), "task": r.get("task"),
                         "metric": r.get("metric"), "method": r.get("method"),
                         "alpha": round(alpha, 4), "alpha_low": round(low, 4),
                         "alpha_high": round(high, 4), "n_points": r.get("n_points"),
                         "excludes_zero": bool(high < 0 or low > 0),
                         "boot_alpha_low": boot[0], "boot_alpha_high": boot[1],
                         "boot_excludes_zero": bool(None not in boot and (
                             boot[1] < 0 or boot[0] > 0))})  # type: ignore[operator]
    return rows


def _float(v: Any) -> float | None:
    try:
        return round(float(v), 4)
    except (TypeError, ValueError):
        return None


SIGNALS = (("synth_shapes", "acc1"), ("synth_scenes", "image_retrieval_recall@5"),
           ("synth_scenes", "text_retrieval_recall@5"))
"""The demo's headline laws: zero-shot shapes and retrieval, error falling with compute."""


def signals(fits: list[dict[str, Any]]) -> dict[str, Any]:
    """Per headline law: alpha < 0 with the OLS 95% interval and the paper method's bootstrap
    interval both below 0 (the paper method's t interval over 5 bins is wide: also shown)."""
    out: dict[str, Any] = {}
    for task, metric in SIGNALS:
        by = {f["method"]: f for f in fits if (f["task"], f["metric"]) == (task, metric)}
        ols, paper = by.get("ols"), by.get("paper")
        if ols is None or paper is None:
            continue
        out[f"{task} {metric}"] = {
            "ols": [ols["alpha"], ols["alpha_low"], ols["alpha_high"]],
            "paper": [paper["alpha"], paper["alpha_low"], paper["alpha_high"]],
            "paper_bootstrap": [paper["alpha"], paper["boot_alpha_low"], paper["boot_alpha_high"]],
            "below_zero": bool(ols["alpha_high"] < 0 and paper["boot_excludes_zero"]
                               and paper["alpha"] < 0),
        }
    return out


def run_demo(work: Path, mode: str, overrides: Sequence[str] = (), analysis: bool = True
             ) -> dict[str, Any]:
    """The demo from scratch in ``work`` (runs/, data/, reports/demo/); its figures."""
    root, data_root, report = work / "runs", work / "data", work / "reports" / "demo"
    root.mkdir(parents=True)
    before = loadavg()
    began = time.perf_counter()
    with LoadSampler() as sampler:
        processes = run_launches(launch_commands(root, data_root, mode, overrides), work)
        launch_s = time.perf_counter() - began
        analysis_s = None
        if analysis:
            tic = time.perf_counter()
            subprocess.run([PY, "-m", "analysis", "--source", "store", "--root", str(root),
                            "--out", str(report)], cwd=ROOT, check=True, capture_output=True,
                           env={**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": str(ROOT)})
            analysis_s = round(time.perf_counter() - tic, 1)
    seconds = time.perf_counter() - began
    parts = breakdown(root, processes)
    return {
        "seconds": round(seconds, 1),
        "launch_seconds": round(launch_s, 1),
        "breakdown": {**{k: v for k, v in parts.items() if k != "per_point"},
                      "analysis": analysis_s},
        "processes": processes,
        "points": len([p for p in parts["per_point"] if "-trunk-" not in p]),
        "per_point": parts["per_point"],
        "fits": fitted_exponents(report) if analysis else [],
        "loadavg_before": before,
        "loadavg_after": loadavg(),
        "loadavg_during": sampler.summary(),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("parallel", "sequential"), default="parallel")
    ap.add_argument("--quick", action="store_true",
                    help="2 points (tiny_s, s6k, both datasets), no analysis: tests the script")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/demo_seconds.json")
    ap.add_argument("--keep", type=Path, default=None, help="work in this folder, keep it")
    args = ap.parse_args(argv)
    overrides = ["model=tiny_s", "samples=s6k"] if args.quick else []
    with tempfile.TemporaryDirectory(prefix="demo_seconds_") as tmp:
        work = args.keep or Path(tmp)
        result = run_demo(work, args.mode, overrides, analysis=not args.quick)
        (work / "demo_seconds.json").write_text(json.dumps(
            {**result, "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
    laws = signals(result["fits"])
    result = {
        "seconds": result["seconds"],
        "mode": args.mode,
        "what": ("make demo from scratch (fresh root and data root: the synthetic sets are "
                 "generated): launch.py -m sweep=demo "
                 + ("as two processes at once, data=syn32k and data=syn4k, OMP_NUM_THREADS=1 each"
                    if args.mode == "parallel" else "in one process")
                 + ", then python -m analysis --source store"
                 + (" [--quick: model=tiny_s samples=s6k, no analysis]" if args.quick else "")),
        "goal_seconds": 420,
        **{k: v for k, v in result.items() if k != "seconds"},
        "step_floor": None if args.quick else step_floor(),
        "signals": laws,
        "signals_exclude_zero": bool(laws) and all(v["below_zero"] for v in laws.values()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"demo ({args.mode}): {result['seconds']} s, breakdown {result['breakdown']}, "
          f"load {result['loadavg_before']} -> {result['loadavg_after']}")
    return result


if __name__ == "__main__":
    main()
