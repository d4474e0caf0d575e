"""``python -m evaluation``: evaluate runs or any checkpoint, list, export and import results.

Subcommands::

    python -m evaluation list [ROOT]                 # records at a glance (also: python -m evaluation ROOT)
    python -m evaluation run --run-dir runs/<id> [--eval NAME] [--all-steps]
    python -m evaluation checkpoint --path X.pt --arch ViT-B-32 [--eval embedded]
        [--root runs] [--run-id ID] [--step N --global-batch B --gmacs G]
    python -m evaluation export --root runs --out results.csv [--all-steps]
    python -m evaluation import --format FORMAT PATH --root runs [--family NAME]
        [--model-profile FILE] [--samples-map FILE] [--datasets NAME ...]
    python -m evaluation import-paper --root runs    # = import --format scaling-laws-openclip

``run`` evaluates the newest complete checkpoint of a run (``--all-steps``: every complete
checkpoint, the learning curve) on the run's own ``eval`` config, or on
``conf/eval/NAME.yaml`` with ``--eval NAME``; records go to ``<run dir>/eval/``.
``checkpoint`` evaluates any open_clip checkpoint given by path and architecture (loaded
weights-only) into ``<root>/<run id>/eval/`` (default run id: ``ckpt-<file stem>-<hash of
path and arch>``); samples seen = step x global batch, compute = that x gmacs.
``export`` writes the store's final records with the columns of the paper's
``zeroshot_results.csv``; ``import-paper`` writes the paper's results into the store as
families ``openclip`` and ``openai`` (idempotent). ``import`` reads other published results
(formats ``scaling-laws-openclip``, ``scaling-laws-for-comparison``, ``clip-benchmark``,
``openclip-results``; see ``store.imports``) into ordinary records; a malformed file is refused
with its file, line and column (exit 2). Datasets whose root is missing are listed
first; the others still run. ``list`` and ``export`` exit 1 if a record file was bad.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

import core  # noqa: F401  # sets OMP_WAIT_POLICY before torch loads (imported lazily below)
import store
from core.errors import UserError
from core.reference import PAPER_CSV, model_label
from core.schema import Config, EvalConfig
from store.export import export_csv
from store.imports import FORMATS, Imported, Options, import_results
from synthetic import ensure_datasets

CONF_EVAL = Path(__file__).resolve().parent.parent / "conf" / "eval"
_SHOWN = ("run_id", "step", "final", "dataset", "task", "samples_seen", "compute")
_COMMANDS = ("list", "run", "checkpoint", "export", "import", "import-paper")
_SHOWN_REASONS = 10


def _list(args: argparse.Namespace) -> int:
    records, problems = store.read_records(args.root)
    frame = store.records_to_frame(records)
    metrics = [
        c
        for c in frame.columns
        if c in ("acc1", "lp_acc1", "mean_per_class_recall")
        or c.startswith(("image_retrieval_recall@", "text_retrieval_recall@"))
    ]
    if frame.empty:
        print(f"no eval records under {args.root}")
    else:
        with pd.option_context("display.width", 200, "display.max_columns", None):
            shown = frame[list(_SHOWN) + metrics].sort_values(["run_id", "step", "dataset"])
            print(shown.to_string(index=False))
    return _report_bad(problems)


def _report_bad(problems: list[tuple[Path, str]]) -> int:
    for path, reason in problems:
        print(f"BAD {path}: {reason}", file=sys.stderr)
    return 1 if problems else 0


def eval_group(name: str) -> Any:
    """``conf/eval/<name>.yaml`` checked against the schema (interpolations left unresolved)."""
    path = CONF_EVAL / f"{name}.yaml"
    if not path.is_file():
        choices = sorted(p.stem for p in CONF_EVAL.glob("*.yaml"))
        raise SystemExit(f"--eval {name}: no {path}; choose one of {', '.join(choices)}")
    return OmegaConf.merge(OmegaConf.structured(EvalConfig), OmegaConf.load(path))


def _typed(cfg: Any) -> DictConfig:
    """``cfg`` checked against the schema (``core.schema.Config``), its defaults filled in: a
    run's saved config, or the partial one of ``checkpoint`` (what evaluation does not read may
    stay missing)."""
    merged = OmegaConf.merge(OmegaConf.structured(Config), cfg)
    assert isinstance(merged, DictConfig)
    return merged


def _evaluate(cfg: DictConfig, run_dir: Path, ckpt: Path, step: int, final: bool) -> list[dict]:
    from evaluation.evaluate import evaluate, missing_roots, plan_jobs  # torch: not for list

    ensure_datasets(cfg, eval_only=True)  # the embedded sets, if configured and missing
    missing = missing_roots([j.ds for j in plan_jobs(cfg.eval)])
    for name, reason in missing:
        print(f"MISSING {name}: {reason}", file=sys.stderr)
    records = evaluate(cfg, run_dir, ckpt, step=step, final=final)
    for r in sorted(records, key=lambda r: (r["dataset"], r["task"])):
        shown = {k: round(v, 4) for k, v in r["metrics"].items() if isinstance(v, float)}
        print(f"{r['run_id']} step {r['step']} {r['dataset']} {r['task']}: {shown}")
    return records


def _run(args: argparse.Namespace) -> int:
    from training import checkpoint as ckpts  # torch: not for list

    run_dir = Path(args.run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise SystemExit(f"{run_dir}: no config.yaml, not a run folder")
    cfg = _typed(OmegaConf.load(run_dir / "config.yaml"))
    if args.eval:
        cfg.eval = eval_group(args.eval)
    if args.all_steps:
        paths = sorted(p for p in ckpts.checkpoint_dir(run_dir).glob("*.pt") if ckpts.is_complete(p))
    else:
        latest = ckpts.latest(run_dir)
        paths = [latest] if latest else []
    if not paths:
        raise SystemExit(f"{run_dir}: no complete checkpoint to evaluate")
    for path in paths:
        marker = ckpts.read_marker(path)
        _evaluate(cfg, run_dir, path, int(marker["step"]), bool(marker.get("final", False)))
    return 0


def _checkpoint(args: argparse.Namespace) -> int:
    path = Path(args.path)
    digest = hashlib.sha256(f"{path.resolve()}|{args.arch}".encode()).hexdigest()[:8]
    run_id = args.run_id or f"ckpt-{path.stem}-{digest}"
    cfg = _typed(
        {
            "model": {"name": args.arch, "arch": args.arch, "label": model_label(args.arch),
                      "gmacs": args.gmacs, "global_batch": args.global_batch},
            "data": {"name": args.data, "label": args.data, "synthetic": False},
            "samples": {"name": str(args.step * args.global_batch)},
            "data_root": args.data_root,
        }
    )
    cfg.eval = eval_group(args.eval)
    run_dir = Path(args.root) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    _evaluate(cfg, run_dir, path, args.step, final=True)
    return 0


def _export(args: argparse.Namespace) -> int:
    n, problems = export_csv(args.root, args.out, all_steps=args.all_steps)
    print(f"wrote {n} rows to {args.out}")
    return _report_bad(problems)


def _import_paper(args: argparse.Namespace) -> int:
    written, unchanged, imported = import_results(
        "scaling-laws-openclip", args.csv or PAPER_CSV, args.root
    )
    print(f"paper results into {args.root}: {written} records written, {unchanged} unchanged")
    _print_skipped(imported)
    return 0


def _import(args: argparse.Namespace) -> int:
    options = Options(family=args.family, model_profile=args.model_profile,
                      samples_map=args.samples_map, datasets=args.datasets)  # fmt: skip
    written, unchanged, imported = import_results(args.format, args.path, args.root, options)
    where = args.path or FORMATS[args.format].default_path
    print(f"{args.format} results from {where} into {args.root}: {len(imported.records)} records "
          f"({written} written, {unchanged} unchanged)")  # fmt: skip
    families = sorted({r["family"] for r in imported.records})
    if families:
        print(f"families: {', '.join(families)}")
    _print_skipped(imported)
    return 0


def _print_skipped(imported: Imported) -> None:
    reasons = imported.skipped.most_common()
    for reason, n in reasons[:_SHOWN_REASONS]:
        print(f"skipped {n}: {reason}")
    if len(reasons) > _SHOWN_REASONS:
        rest = sum(n for _, n in reasons[_SHOWN_REASONS:])
        print(f"skipped {rest} more, for {len(reasons) - _SHOWN_REASONS} other reasons")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m evaluation", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("list", help="records at a glance")
    s.add_argument("root", nargs="?", default="runs", help="folder of run folders")
    s.set_defaults(func=_list)
    s = sub.add_parser("run", help="evaluate a run's checkpoint(s)")
    s.add_argument("--run-dir", required=True)
    s.add_argument("--eval", help="conf/eval/<NAME>.yaml instead of the run's own eval config")
    s.add_argument("--all-steps", action="store_true", help="every complete checkpoint")
    s.set_defaults(func=_run)
    s = sub.add_parser("checkpoint", help="evaluate any open_clip checkpoint by path")
    s.add_argument("--path", required=True)
    s.add_argument("--arch", required=True, help="open_clip architecture, e.g. ViT-B-32")
    s.add_argument("--eval", default="embedded", help="conf/eval/<NAME>.yaml")
    s.add_argument("--root", default="runs", help="store root (records: ROOT/RUN_ID/eval/)")
    s.add_argument("--run-id")
    s.add_argument("--data-root", default="data")
    s.add_argument("--data", default="unknown", help="upstream dataset label")
    s.add_argument("--step", type=int, default=0)
    s.add_argument("--global-batch", type=int, default=1)
    s.add_argument("--gmacs", type=float, default=0.0, help="forward GMACs per image-text pair")
    s.set_defaults(func=_checkpoint)
    s = sub.add_parser("export", help="store -> CSV with the paper's columns")
    s.add_argument("--root", default="runs")
    s.add_argument("--out", required=True)
    s.add_argument("--all-steps", action="store_true", help="intermediate checkpoints too")
    s.set_defaults(func=_export)
    s = sub.add_parser("import", help="published results of another format into the store")
    s.add_argument("--format", required=True, choices=list(FORMATS))
    s.add_argument("path", nargs="?", help="the file (or clip-benchmark: folder) to import; "
                   "scaling-laws-openclip defaults to core/reference/zeroshot_results.csv")  # fmt: skip
    s.add_argument("--root", default="runs", help="store root")
    s.add_argument("--family", help="put every imported record in this family")
    s.add_argument("--model-profile", type=Path, metavar="FILE",
                   help="GFLOPs/GMACs per model (CSV), where the format keeps them apart")  # fmt: skip
    s.add_argument("--samples-map", type=Path, metavar="FILE",
                   help="CSV pretrained,samples_seen[,model] for tags that do not say it")  # fmt: skip
    s.add_argument("--datasets", nargs="+", metavar="NAME", help="import only these datasets")
    s.set_defaults(func=_import)
    s = sub.add_parser("import-paper", help="the paper's results into the store")
    s.add_argument("--root", default="runs")
    s.add_argument("--csv", help="default: core/reference/zeroshot_results.csv")
    s.set_defaults(func=_import_paper)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in (*_COMMANDS, "-h", "--help"):
        argv = ["list", *argv]  # the original form: python -m evaluation [ROOT]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except UserError as e:  # a malformed file or a bad option: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
