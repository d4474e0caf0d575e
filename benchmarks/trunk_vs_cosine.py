"""Trunks with cooldown branches against cosine runs: the demo measured, the paper's grids priced.

1. The 12 demo points trained and evaluated twice, on the same generated data (made first, in
   neither time): as cosine runs (the default) and with ``train.schedule=const_cooldown``
   (one constant-LR trunk per model and dataset, a cooldown branch per samples-seen value).
   Each run is the demo's launch (``benchmarks/demo_seconds.py``: two processes at once, one
   per dataset, so every trunk stays in one process and its segments run before its
   branches). Recorded: the wall time of each (``demo_seconds_cosine``, ``demo_seconds_trunk``),
   every point's zero-shot and retrieval error side by side, and the power laws of both
   families, fitted with ``analysis.fit`` (the paper's method, bootstrap intervals).
2. The plan's cost model (``launch.py ... dry_run=true``: ``launcher.plan`` prices each trunk
   segment and branch through ``core.cost`` and prints the same points as cosine runs beside
   them; nothing is trained): the paper's 27-point cube (ViT-B/32, B/16, L/14 x LAION-80M,
   400M, 2B x 3B, 13B, 34B; ``train=paper``, each model's own batch: one recipe per model)
   and a dense sweep of ten samples-seen values from 3B to 34B per (model, data).

    python benchmarks/trunk_vs_cosine.py           # writes benchmarks/results/trunk_vs_cosine.json
    python benchmarks/trunk_vs_cosine.py --quick   # one tiny point, one small cube: tests the script
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import demo_seconds  # noqa: E402

PAPER_CUBE = ["model=vit_b32,vit_b16,vit_l14", "data=laion80m,laion400m,laion2b",
              "samples=3B,13B,34B"]
DENSE = [round(v, -8) for v in (3e9 * (34 / 3) ** (i / 9) for i in range(10))]
"""Ten samples-seen values, geometric from 3B to 34B (rounded to 0.1B)."""
TRUNK = ["train.schedule=const_cooldown"]
_TOTALS = re.compile(r"trunks and branches: ([\d,.]+) GPU-hours; the same points as cosine runs: "
                     r"([\d,.]+)")
_POINTS = re.compile(r"^total\s+(\d+) points", re.M)


def plan_hours(overrides: Sequence[str], root: Path) -> dict[str, Any]:
    """GPU-hours of ``overrides`` as trunks and as cosine runs, from the dry-run plan's totals."""
    argv = [sys.executable, str(ROOT / "launch.py"), "-m", *overrides, "train=paper", *TRUNK,
            "dry_run=true", f"root={root}"]
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    m = _TOTALS.search(out.stdout)
    n = _POINTS.search(out.stdout)
    if not m or not n:
        raise RuntimeError(f"no trunk/cosine totals in the plan:\n{out.stdout[-2000:]}")
    trunk, cosine = (float(g.replace(",", "")) for g in m.groups())
    return {"trunk": trunk, "cosine": cosine, "ratio": round(trunk / cosine, 4),
            "plan_rows": int(n.group(1)), "command": " ".join(["python launch.py", *argv[2:-1]])}


def generate_data(data_root: Path, names: Sequence[str]) -> float:
    """The demo's synthetic sets, as ``synthetic.ensure_datasets`` writes them; seconds."""
    from omegaconf import OmegaConf

    import synthetic

    tic = time.perf_counter()
    size = 32
    for name in names:
        d = OmegaConf.load(ROOT / "conf" / "data" / f"{name}.yaml")
        synthetic.generate_train(data_root / "synthetic" / name, int(d.num_samples), int(d.seed),
                                 int(d.image_size))
        size = int(d.image_size)
    synthetic.generate_eval(data_root / "synthetic" / "eval", image_size=size)
    return round(time.perf_counter() - tic, 1)


def launch(root: Path, data_root: Path, overrides: Sequence[str], log_dir: Path,
           parts: Sequence[str] = demo_seconds.PARTS) -> dict[str, Any]:
    """The demo's launch (training and evaluation of its points) in ``root``; wall seconds."""
    root.mkdir(parents=True)
    before = demo_seconds.loadavg()
    tic = time.perf_counter()
    with demo_seconds.LoadSampler() as sampler:
        processes = demo_seconds.run_launches(
            demo_seconds.launch_commands(root, data_root, "parallel", overrides, parts), log_dir)
    seconds = round(time.perf_counter() - tic, 1)
    spent = demo_seconds.breakdown(root, processes)
    return {"seconds": seconds, "breakdown": {k: v for k, v in spent.items() if k != "per_point"},
            "per_point": spent["per_point"], "loadavg_before": before,
            "loadavg_after": demo_seconds.loadavg(), "loadavg_during": sampler.summary()}


def reused(folder: Path) -> dict[str, Any]:
    """The cosine side from a finished ``demo_seconds.py --keep`` run: its launch figures."""
    path = folder / "demo_seconds.json"
    for _ in range(7200):
        if path.exists():
            break
        time.sleep(1)
    saved = json.loads(path.read_text())
    return {"seconds": saved["launch_seconds"], "breakdown": saved["breakdown"],
            "per_point": saved["per_point"], "loadavg_before": saved["loadavg_before"],
            "loadavg_after": saved["loadavg_after"], "loadavg_during": saved["loadavg_during"],
            "from": f"benchmarks/demo_seconds.py run of {saved['measured']} (its launch: data "
                    "generation, training and evaluation of the 12 points)"}


def store_points(root: Path) -> Any:
    """The store's error points (``analysis.fit.error_points``) over every target present."""
    from analysis.__main__ import default_tasks
    from analysis.fit import error_points
    from analysis.load import load_store

    df, _ = load_store(root)
    points, _ = error_points(df, default_tasks("store", df))
    return points


WANTED = {"zeroshot_classification": ("acc1",), "zeroshot_retrieval": ("image_retrieval_recall@5",
                                                                        "text_retrieval_recall@5")}
"""The errors compared point by point: zero-shot top-1 and retrieval recall@5 (1 - metric)."""


def side_by_side(cos: Any, trunk: Any) -> list[dict[str, Any]]:
    """One row per (model, data, samples seen, task, metric): both errors and their difference."""
    def table(points: Any) -> dict[tuple[Any, ...], float]:
        out = {}
        for r in points.itertuples(index=False):
            if r.metric in WANTED.get(r.eval_task, ()):
                out[(r.arch, r.data_label, int(r.samples_seen), r.task, r.metric)] = float(r.error)
        return out

    a, b = table(cos), table(trunk)
    rows = []
    for key in sorted(set(a) | set(b)):
        e_cos, e_trunk = a.get(key), b.get(key)
        diff = None if e_cos is None or e_trunk is None else round(e_trunk - e_cos, 4)
        rows.append({"arch": key[0], "data": key[1], "samples_seen": key[2], "task": key[3],
                     "metric": key[4], "error_cosine": _r(e_cos), "error_trunk": _r(e_trunk),
                     "trunk_minus_cosine": diff})
    return rows


def _r(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else round(f, 4)


def fits(points: Any, n_boot: int) -> list[dict[str, Any]]:
    """``analysis.fit.fit_all``, the paper's method and OLS: alpha, its 95% interval and its
    bootstrap interval per target (the paper method's t interval over 5 bins is wide)."""
    from analysis.fit import fit_all

    wanted = points[[m in WANTED.get(t, ()) for t, m in zip(points["eval_task"], points["metric"],
                                                            strict=True)]]
    table, _ = fit_all(wanted, methods=("paper", "ols"), n_boot=n_boot)
    out = []
    for r in table.to_dict("records"):
        keys = ("alpha", "alpha_low", "alpha_high", "boot_alpha_low", "boot_alpha_high")
        v = {k: _r(r.get(k)) for k in keys}
        out.append({"family": r["family"], "task": r["task"], "metric": r["metric"],
                    "method": r["method"], **v, "n_points": r.get("n_points"),
                    "excludes_zero": _excludes(v["alpha_low"], v["alpha_high"]),
                    "boot_excludes_zero": _excludes(v["boot_alpha_low"], v["boot_alpha_high"])})
    return out


def _excludes(low: float | None, high: float | None) -> bool:
    return low is not None and high is not None and (high < 0 or low > 0)


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How close the cooled points come: mean and largest |difference| per metric."""
    out: dict[str, Any] = {}
    for metric in dict.fromkeys(r["metric"] for r in rows):
        diffs = [r["trunk_minus_cosine"] for r in rows
                 if r["metric"] == metric and r["trunk_minus_cosine"] is not None]
        if diffs:
            out[metric] = {"mean_trunk_minus_cosine": round(sum(diffs) / len(diffs), 4),
                           "mean_abs": round(sum(map(abs, diffs)) / len(diffs), 4),
                           "max_abs": round(max(map(abs, diffs)), 4),
                           "trunk_better": sum(d < 0 for d in diffs), "n": len(diffs)}
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="one tiny point (tiny_s, syn4k, 2048 samples) and a 3-point cube")
    ap.add_argument("--boot", type=int, default=1000, help="bootstrap resamples of the fits")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/trunk_vs_cosine.json")
    ap.add_argument("--keep", type=Path, default=None, help="work in this folder, keep it")
    ap.add_argument("--cosine-from", type=Path, default=None,
                    help="a finished demo_seconds.py --keep folder: its runs are the cosine side "
                         "(not trained again); the trunks then generate their data afresh too, "
                         "so both walls include data generation")
    args = ap.parse_args(argv)
    select = ["model=tiny_s", "samples=s6k", "samples.seen=2048"] if args.quick else []
    parts = ["syn4k"] if args.quick else list(demo_seconds.PARTS)
    cube = ["model=vit_b32", "data=laion400m", "samples=3B,13B,34B"] if args.quick else PAPER_CUBE
    dense = DENSE[::4] if args.quick else DENSE
    with tempfile.TemporaryDirectory(prefix="trunk_vs_cosine_") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        data_root = work / "data"
        runs, roots = {}, {}
        data_s = None if args.cosine_from is not None else generate_data(data_root, parts)
        for name, extra in (("cosine", []), ("trunk", TRUNK)):
            if name == "cosine" and args.cosine_from is not None:
                continue
            (work / name).mkdir()
            roots[name] = work / name / "runs"
            runs[name] = launch(roots[name], data_root, [*select, *extra], work / name, parts)
        if args.cosine_from is not None:  # it may still be running: wait for its figures
            runs["cosine"] = reused(args.cosine_from)
            roots["cosine"] = args.cosine_from / "runs"
        points = {name: store_points(roots[name]) for name in runs}
        paper = plan_hours(cube, work / "plan")
        dense_hours = plan_hours([*cube[:2], "samples=34B",
                                  "samples.seen=" + ",".join(str(int(v)) for v in dense)],
                                 work / "plan")
    rows = side_by_side(points["cosine"], points["trunk"])
    result = {
        "demo_seconds_cosine": runs["cosine"]["seconds"],
        "demo_seconds_trunk": runs["trunk"]["seconds"],
        "what": ("the demo's launch (sweep=demo, two processes at once, one per dataset, "
                 "OMP_NUM_THREADS=1): training and evaluation of every point, "
                 + ("on data generated beforehand" if data_s is not None else
                    "each generating its data (cosine: a demo_seconds.py run, reused)")
                 + "; trunk: train.schedule=const_cooldown (cooldown_fraction 0.2, linear)"
                 + (" [--quick: " + " ".join(select) + "]" if args.quick else "")),
        "data_generation_seconds": data_s,
        "runs": runs,
        "points": rows,
        "closeness": summary(rows),
        "fits": {name: fits(points[name], args.boot) for name in runs},
        "paper_gpu_hours_cosine": paper["cosine"],
        "paper_gpu_hours_trunk": paper["trunk"],
        "dense_gpu_hours_cosine": dense_hours["cosine"],
        "dense_gpu_hours_trunk": dense_hours["trunk"],
        "paper_plan": paper,
        "dense_plan": {**dense_hours, "samples_seen": [int(v) for v in dense]},
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"demo: cosine {result['demo_seconds_cosine']} s, trunk {result['demo_seconds_trunk']} s; "
          f"paper cube {paper['cosine']:,.0f} -> {paper['trunk']:,.0f} GPU-hours, dense "
          f"{dense_hours['cosine']:,.0f} -> {dense_hours['trunk']:,.0f}")
    return result


if __name__ == "__main__":
    main()
