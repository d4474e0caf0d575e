"""Status of a sweep at a glance: ``python -m launcher.status --sweep demo [--root runs]``.

One row per point (state, samples seen / total, age of the newest checkpoint, last error) and
totals, read from the run folders alone: nothing is launched, and it works while runs go on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from launcher import rundir, schema
from launcher.plan import Point, fmt_count, make_point
from launcher.sweep import SweepError, load_sweep

CONF = Path(__file__).resolve().parent.parent / "conf"


def sweep_points(name: str, overrides: list[str]) -> list[Point]:
    """Compose every point of sweep ``name`` (plus ``overrides``) without running anything."""
    schema.register()
    points: dict[str, Point] = {}
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for ov in load_sweep(name):
            p = make_point(ov, compose("config", overrides=[*ov, *overrides]))
            points.setdefault(p.run_id, p)
    return list(points.values())


def _progress(path: Path) -> int:
    """Samples seen so far, from the last line of the training log (0 if none)."""
    try:
        with open(path / "train_log.jsonl", "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            last = f.read().splitlines()[-1]
        return int(json.loads(last).get("samples_seen", 0))
    except (OSError, IndexError, ValueError):
        return 0


def _checkpoint_age(path: Path) -> str:
    ckpts = list((path / "checkpoints").glob("*.pt"))
    if not ckpts:
        return "-"
    age = time.time() - max(c.stat().st_mtime for c in ckpts)
    return f"{age / 3600:.1f}h" if age >= 3600 else f"{age / 60:.0f}m" if age >= 60 else f"{age:.0f}s"


def status_table(points: list[Point]) -> str:
    cols = ("run id", "state", "samples seen", "ckpt age", "last error")
    body = []
    for p in points:
        seen = p.samples_seen if p.state == "done" else _progress(p.run_dir)
        err = rundir.last_error(p.run_dir) if p.state == "failed" else None
        body.append((p.run_id, p.state, f"{fmt_count(seen)} / {fmt_count(p.samples_seen)}",
                     _checkpoint_age(p.run_dir), (err or "")[:80]))
    counts = {s: sum(p.state == s for p in points) for s in rundir.STATES}
    widths = [max(len(r[i]) for r in [cols, *body]) for i in range(len(cols))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()  # noqa: E731
    total = f"{len(points)} points: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    return "\n".join([line(cols), "-" * len(line(cols)), *map(line, body), total])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m launcher.status", description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", default="demo", help="named sweep (sweeps/<name>.yaml) or a YAML path")
    ap.add_argument("--root", default="runs", help="folder holding the run folders")
    ap.add_argument("overrides", nargs="*", help="extra config overrides applied to every point")
    args = ap.parse_args(argv)
    try:
        points = sweep_points(args.sweep, [f"root={args.root}", *args.overrides])
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(status_table(points))
    return 0


if __name__ == "__main__":
    sys.exit(main())
