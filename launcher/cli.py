"""``clipscale``: one command for what is otherwise reached through ``python -m``.

    clipscale status [--sweep demo] [--root runs]      # python -m launcher.status
    clipscale cancel [--root runs] [RUN_ID ...]         # python -m launcher.slurm cancel
    clipscale eval run --run-dir runs/<id>              # python -m evaluation run|checkpoint|list|export
    clipscale import --format FORMAT PATH --root STORE  # python -m evaluation import
    clipscale analyze --source paper --out reports/p    # python -m analysis
    clipscale predict --gmacs 532 --samples 68e9        # python -m analysis predict
    clipscale optimal --budget-gpu-hours 1e5            # python -m analysis optimal
    clipscale design --budget-gpu-hours 2e5 --name N    # python -m analysis design

Every argument after the subcommand goes to that entry point unchanged (``clipscale status
--help`` is its own help). Sweeps are still launched with ``python launch.py -m ...`` (Hydra's
command line) or the Makefile. Each entry point is imported only when its subcommand runs, so
``clipscale --help`` does not load torch.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence


def _status(argv: list[str]) -> int:
    from launcher import status  # deferred: each entry point loads only for its subcommand

    return status.main(argv)


def _cancel(argv: list[str]) -> int:
    from launcher import slurm  # deferred: keeps --help fast

    return slurm.main(["cancel", *argv])


def _eval(argv: list[str]) -> int:
    from evaluation.__main__ import main  # torch: kept off --help and status

    return main(argv)


def _import(argv: list[str]) -> int:
    from evaluation.__main__ import main  # torch: kept off --help and status

    return main(["import", *argv])


def _analyze(argv: list[str]) -> int:
    from analysis.__main__ import main  # heavy (pandas, scipy, matplotlib): kept off status

    return main(argv)


def _predict(argv: list[str]) -> int:
    from analysis.__main__ import main  # heavy (pandas, scipy, matplotlib): kept off status

    return main(["predict", *argv])


def _optimal(argv: list[str]) -> int:
    from analysis.__main__ import main  # heavy (pandas, scipy, matplotlib): kept off status

    return main(["optimal", *argv])


def _design(argv: list[str]) -> int:
    from analysis.__main__ import main  # heavy (pandas, scipy, matplotlib): kept off status

    return main(["design", *argv])


COMMANDS: dict[str, tuple[str, Callable[[list[str]], int]]] = {
    "status": ("state of every point of a sweep: progress, checkpoint age, job, last error", _status),
    "cancel": ("cancel the SLURM jobs of a root's runs (all, or the run ids given)", _cancel),
    "eval": ("evaluate a run or any checkpoint; list or export the store (run, checkpoint, list, export)", _eval),
    "import": ("published results (other studies, open_clip, clip_benchmark outputs) into the store", _import),
    "analyze": ("fit and plot the scaling laws of the store, the paper, or both", _analyze),
    "predict": ("predicted error at a model's GMACs and samples seen, with its interval", _predict),
    "optimal": ("compute-optimal model size, samples seen and data for a budget (joint law)", _optimal),
    "design": ("write sweeps/<name>.yaml: the points that best pin down the law within a budget", _design),
}  # fmt: skip
"""Subcommand -> (one line of help, the entry point it passes its arguments to)."""


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: clipscale COMMAND [ARGS ...]   (clipscale COMMAND --help: its options)", "",
             "commands:"]  # fmt: skip
    lines += [f"  {name:<{width}}  {text}" for name, (text, _) in COMMANDS.items()]
    lines += ["", "Sweeps: python launch.py -m sweep=NAME ... (make help lists the Makefile targets)."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"clipscale: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return int(COMMANDS[name][1](rest))


if __name__ == "__main__":
    sys.exit(main())
