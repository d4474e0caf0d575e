"""Expand a sweep into grid points: named sweeps (``sweeps/<name>.yaml``) and command-line grids.

A sweep file is data::

    description: what the sweep is for
    points:                      # a union of blocks, duplicates merged
      - model: [vit_b32, vit_b16]   # a list sweeps that key (cartesian within the block)
        data: laion400m
        samples: [3B, 13B]
      - {model: vit_g14, data: laion2b, samples: 13B, train.lr: 5.0e-4}   # one point, own values

so a non-cartesian grid, and per-point hyper-parameters (the paper's exceptions), are plain
entries. Command-line overrides combine with a named sweep: a grid axis given on the command
line (``model=vit_b32``) selects the sweep's points with that value; any other key
(``train.workers=16``) is added to every point.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig

from core.errors import ConfigError, SweepError
from core.states import PointResult
from launcher import hydra_internals
from launcher.plan import Point, check, make_point, table, with_trunks
from launcher.policy import Action, RelaunchPolicy

log = logging.getLogger(__name__)

SWEEPS_DIR = Path(__file__).resolve().parent.parent / "sweeps"
AXES = ("model", "data", "samples")


def sweep_file(name: str) -> Path:
    """``sweeps/<name>.yaml``, or ``name`` itself when it is a path to a YAML file."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    path = SWEEPS_DIR / f"{name}.yaml"
    if not path.is_file():
        choices = ", ".join(sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml")))
        raise SweepError(f"sweep={name}: no file {path}; available sweeps: {choices}")
    return path


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if v is None:
        return "null"
    return str(v)


def _block_points(block: dict[str, Any]) -> list[list[str]]:
    keys = list(block)
    values = [v if isinstance(v, list) else [v] for v in block.values()]
    return [[f"{k}={_value(v)}" for k, v in zip(keys, combo, strict=True)] for combo in itertools.product(*values)]


def load_sweep(name: str) -> list[list[str]]:
    """The override lists of a named sweep's points, in file order, duplicates merged."""
    path = sweep_file(name)
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SweepError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("points"), list) or not doc["points"]:
        raise SweepError(f"{path}: expected a mapping with a non-empty list under 'points'")
    out: list[list[str]] = []
    for i, block in enumerate(doc["points"]):
        if not isinstance(block, dict) or not block:
            raise SweepError(f"{path}: points[{i}] must be a mapping of config keys to values")
        absent = [a for a in AXES if a not in block]
        if absent:
            raise SweepError(f"{path}: points[{i}] lacks the grid axis {', '.join(absent)}")
        out.extend(_block_points(block))
    return dedupe(out)


def dedupe(points: Iterable[list[str]]) -> list[list[str]]:
    seen: set[tuple[str, ...]] = set()
    out = []
    for p in points:
        key = tuple(sorted(p))
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def combine(sweep_points: list[list[str]], cli_points: list[list[str]]) -> list[list[str]]:
    """Apply command-line points to a named sweep's points (see module docstring)."""
    out = []
    for cli in cli_points:
        cli_axes = {o.split("=", 1)[0]: o for o in cli if o.split("=", 1)[0] in AXES}
        extra = [o for o in cli if o.split("=", 1)[0] not in AXES and not o.startswith("sweep=")]
        for sp in sweep_points:
            if all(a in sp for a in cli_axes.values()):
                out.append(sp + extra)
    return dedupe(out)


def expand(master: DictConfig, overrides: list[Override]) -> list[list[str]]:
    """The override lists of every point: the command-line grid, combined with a named sweep."""
    cli = hydra_internals.split_sweep_arguments(overrides)
    names = {o.split("=", 1)[1] for p in cli for o in p if o.startswith("sweep=")}
    if not names and master.sweep:
        names = {str(master.sweep)}
    if not names:
        return dedupe(cli)
    out: list[list[str]] = []
    for name in sorted(names):
        if name in ("null", "None"):
            out.extend(p for p in cli if f"sweep={name}" in p)
            continue
        tagged = [p for p in cli if f"sweep={name}" in p] or cli
        out.extend(p + [f"sweep={name}"] for p in combine(load_sweep(name), tagged))
    if not out:
        raise SweepError(f"no point of sweep {', '.join(sorted(names))} matches the command line "
                         f"{' '.join(o.input_line or '' for o in overrides)}")
    return dedupe(out)


def plan_sweep(master: DictConfig, overrides: list[Override],
               compose: Callable[[Sequence[str]], DictConfig]) -> list[Point]:
    """Compose and check every point, print the plan, and return the points to launch.

    ``compose`` maps a point's overrides to its config; the sweeper passes a
    :class:`launcher.compose.Composer` (Hydra once per distinct set of group choices). Nothing
    is launched when any point is invalid: all the errors are raised together, each
    naming its point and key (one bad point: its one line, as the single-point path prints it). A dry run prints the plan and returns no point. Done points are
    always skipped; failed ones are retried unless ``retry_failed=false``. const_cooldown
    points come after the segments of their trunk (:func:`launcher.plan.with_trunks`).
    """
    dry = bool(master.dry_run)
    points: dict[str, Point] = {}
    errors: list[str] = []
    for ov in expand(master, overrides):
        try:
            point = make_point(ov, compose(ov))
            check(point, need_data=not dry)
        except ConfigError as e:
            errors.append(str(e))
            continue
        except Exception as e:  # Hydra's composition errors name the group and list choices
            errors.append(f"point [{' '.join(ov)}]: {composition_error(e)}")
            continue
        points.setdefault(point.run_id, point)  # duplicates (same identity) merge
    if len(errors) == 1:  # the same one line as the single-point path (launch.py without -m)
        raise ConfigError(errors[0])
    if errors:
        raise ConfigError(f"{len(errors)} point(s) cannot run; nothing was launched:\n  "
                          + "\n  ".join(errors))
    plan = with_trunks(list(points.values()))  # const_cooldown points: trunk segments first
    print(table(plan), flush=True)
    if dry:
        print("dry run: nothing was run or submitted", flush=True)
        return []
    policy = RelaunchPolicy.from_config(master)
    todo = [p for p in plan if policy.decide(p.state) != Action.SKIP]
    skipped = len(plan) - len(todo)
    print(f"{len(todo)} point(s) to run, {skipped} skipped ({policy.skipped_note()})", flush=True)
    return todo


def composition_error(e: BaseException) -> str:
    """One line for a composition error: Hydra's message and OmegaConf's cause (which says the
    key and the valid values: ``Invalid value 'trian', expected one of [all, train, eval]``)."""
    text = str(e).strip()
    cause = e.__cause__
    if cause is not None and str(cause).strip():
        first = str(cause).strip().splitlines()[0]
        if first not in text:
            text = f"{text}: {first}"
    return text


def report_returns(points: list[Point], returns: Sequence[Any]) -> None:
    """Summarise finished jobs; raise if any point failed (so ``make`` stops with an error)."""
    failed, held = [], []
    for point, ret in zip(points, returns, strict=True):
        error = hydra_internals.job_error(ret)
        if error is not None:
            failed.append(f"{point.run_id}: {type(error).__name__}: {error}")
        elif (isinstance(ret.return_value, dict)
              and ret.return_value.get("state") == PointResult.HELD):
            held.append(f"{point.run_id}: {ret.return_value.get('held_by')}")
    finished = len(points) - len(failed) - len(held)
    print(f"{finished} point(s) finished, {len(held)} held by another process (skipped), "
          f"{len(failed)} failed", flush=True)
    for line in held:
        print(f"  held: {line}", flush=True)
    if failed:
        raise RuntimeError("failed points (relaunch the same command to retry them):\n  "
                           + "\n  ".join(failed))
