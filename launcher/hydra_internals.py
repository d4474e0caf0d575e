"""The private Hydra and submitit internals clipscale relies on, wrapped in one place.

hydra-core (1.3.8) and hydra-submitit-launcher (1.2.0) are pinned; these are the only places
that reach past their public API. ``tests/test_hydra_internals.py`` calls :func:`check`, which
fails with a message naming what moved, so an upgrade breaks one test, not a sweep.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_loader import ConfigLoader
from hydra.core.override_parser.types import Override
from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher

SUBMITIT_CALL_ARGS = ("sweep_overrides", "job_dir_key", "job_num", "job_id", "singleton_state")
"""Positional arguments of ``BaseSubmititLauncher.__call__`` (the job function it pickles)."""


def apply_overrides(overrides: list[Override], cfg: Any) -> None:
    """Apply plain ``key=value`` overrides to a composed config, exactly as Hydra does after it
    composed the defaults list (same parsing, struct-mode and schema checks, same errors)."""
    ConfigLoaderImpl._apply_overrides_to_config(overrides, cfg)


def split_sweep_arguments(overrides: list[Override]) -> list[list[str]]:
    """The cartesian product of the command line's sweep overrides (``a=1,2 b=x,y``), as
    Hydra's basic sweeper expands it: one override list per point."""
    return BasicSweeper.split_arguments(overrides, None)[0]


def group_test(loader: ConfigLoader) -> Callable[[str], bool]:
    """``group_exists`` of the loader's config repository: is ``name`` a config group?"""
    assert isinstance(loader, ConfigLoaderImpl), type(loader)
    return loader.repository.group_exists


def job_error(ret: JobReturn) -> BaseException | None:
    """The exception a failed Hydra job raised (None when it did not fail), without
    ``JobReturn.return_value``'s side effect (it prints and re-raises)."""
    if ret.status != JobStatus.FAILED:
        return None
    value = ret._return_value
    return value if isinstance(value, BaseException) else RuntimeError(str(value))


def submitit_call_args(overrides: Sequence[str], job_num: int, singleton_state: Any) -> tuple:
    """The arguments ``BaseSubmititLauncher.__call__`` takes for one job, in its order."""
    return (list(overrides), "hydra.sweep.dir", job_num, f"job_id_for_{job_num}", singleton_state)


def overrides_of_call(args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[str]:
    """The point's overrides among the arguments ``BaseSubmititLauncher.__call__`` was called
    with (and submitit hands its ``checkpoint`` on a requeue): ``sweep_overrides``, the first."""
    return list(args[0]) if args else list(kwargs[SUBMITIT_CALL_ARGS[0]])


def launcher_params(launcher: BaseSubmititLauncher) -> dict[str, Any]:
    """A copy of the launcher's ``hydra.launcher`` fields, resolved to plain values, which
    ``BaseSubmititLauncher.__init__`` keeps in ``self.params`` (``submitit_folder``,
    ``gpus_per_node``, ``additional_parameters`` ...)."""
    return dict(launcher.params)


def check() -> None:
    """Raise RuntimeError naming the first internal that moved or changed its shape."""
    problems = []
    if not callable(getattr(ConfigLoaderImpl, "_apply_overrides_to_config", None)):
        problems.append("hydra ConfigLoaderImpl._apply_overrides_to_config is gone")
    if not callable(getattr(BasicSweeper, "split_arguments", None)):
        problems.append("hydra BasicSweeper.split_arguments is gone")
    if "_return_value" not in inspect.signature(JobReturn).parameters:
        problems.append("hydra JobReturn has no _return_value field")
    params = tuple(inspect.signature(BaseSubmititLauncher.__call__).parameters)[1:]
    if params != SUBMITIT_CALL_ARGS:
        problems.append(f"BaseSubmititLauncher.__call__ takes {params}, not {SUBMITIT_CALL_ARGS}")
    call = inspect.signature(BaseSubmititLauncher.checkpoint).parameters.values()
    if not any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in call):
        problems.append("BaseSubmititLauncher.checkpoint no longer takes __call__'s arguments (*args)")
    try:
        kept = getattr(BaseSubmititLauncher(probe=1), "params", None)
    except Exception as e:  # a constructor that now wants other arguments
        kept = e
    if kept != {"probe": 1}:
        problems.append(f"BaseSubmititLauncher(**params) no longer keeps them in .params (got {kept!r})")
    if not hasattr(ConfigLoaderImpl, "repository") and "repository" not in inspect.getsource(
            ConfigLoaderImpl.__init__):
        problems.append("hydra ConfigLoaderImpl has no repository")
    if problems:
        raise RuntimeError("a pinned Hydra/submitit internal changed (see "
                           "launcher/hydra_internals.py): " + "; ".join(problems))
