"""Compose many grid points fast: through Hydra once per distinct set of config-group choices.

Composing one point through Hydra is slow (defaults list, YAML files, schema merges), and a sweep
has thousands of points (``benchmarks/status_1000.py`` measures it). Hydra builds a config in two steps: it composes the defaults list
that the *group* overrides select (``model=vit_b32``, ``cluster=slurm``), then applies the plain
value overrides (``train.lr=5e-4``, ``samples.seen=256``, ``root=...``) to the result, in
command-line order. :class:`Composer` runs the first step through Hydra once per distinct
combination of the overrides that shape it, keeps the result, and runs the second step on a copy
with the very function Hydra uses (``ConfigLoaderImpl._apply_overrides_to_config``; hydra-core is
pinned): the same parsed values (``train.lr=1`` is ``1.0``), the same struct-mode and type checks
against the schema, the same errors (``Could not override 'train.lrr'``).

The result is the config Hydra hands the task function: the composed config without its
``hydra`` node (Hydra deletes it too before the task runs; copying it with every point would
make each copy much slower, for a node neither the plan nor status reads).
``tests/test_compose.py`` checks every point of the named sweeps against Hydra.

Composed through Hydra whole, as part of the memo key: group choices, and every override that is
not a plain ``key=value`` assignment (``+key=``, ``++key=``, ``~key``, ``group@pkg=``, sweeps
such as ``a,b``, ``hydra.*``), with the plain assignments that precede the last of those (so
Hydra's order of application is kept). A composition error is remembered with its key, so 1000
points with one bad group choice fail after one composition, each with Hydra's own message.
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.config_loader import ConfigLoader
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from core import schema
from launcher import hydra_internals


class Composer:
    """``composer(overrides)``: the config ``compose(overrides)`` gives, less ``hydra``, fast.

    ``compose`` is the full Hydra composition of an override list (the sweeper's
    ``config_loader.load_sweep_config``, or ``hydra.compose``); ``is_group(name)`` says whether
    ``name`` is a config group (``model``, ``hydra/launcher``), as Hydra's config repository does.
    """

    def __init__(self, compose: Callable[[list[str]], DictConfig], is_group: Callable[[str], bool]) -> None:
        self._compose = compose
        self._is_group = is_group
        self._parser = OverridesParser.create()
        # override -> (parsed, kind): parsing and group_exists once each
        self._parsed: dict[str, tuple[Override, str]] = {}
        # memo key -> the composed config, pickled (a pickle round trip copies an OmegaConf
        # config, types and flags included, faster than copy.deepcopy), or the error
        self._bases: dict[tuple[str, ...], bytes | Exception] = {}
        self.hydra_composes = 0  # compositions run through Hydra so far, one per memo key

    def __call__(self, overrides: Sequence[str]) -> DictConfig:
        key, plain = self.split(overrides)
        cfg = self._base(tuple(key))
        try:
            hydra_internals.apply_overrides(plain, cfg)
        except OmegaConfBaseException as e:  # as ConfigLoaderImpl.load_configuration wraps them
            raise ConfigCompositionException().with_traceback(sys.exc_info()[2]) from e
        return cfg

    def split(self, overrides: Sequence[str]) -> tuple[list[str], list[Override]]:
        """(the overrides composed through Hydra, the plain assignments applied to a copy)."""
        parsed = [self._parse(o) for o in overrides]
        if any(p.key_or_group == "hydra.searchpath" for p, _ in parsed):
            return list(overrides), []  # new groups may appear: only Hydra tells them from keys
        last = max((i for i, (_, kind) in enumerate(parsed) if kind == "ordered"), default=-1)
        key = [o for i, (o, (_, kind)) in enumerate(zip(overrides, parsed, strict=True))
               if kind != "plain" or i < last]
        return key, [p for i, (p, kind) in enumerate(parsed) if kind == "plain" and i > last]

    def _parse(self, override: str) -> tuple[Override, str]:
        """The parsed override and its kind: ``plain`` (``key.path=value``, applied by Hydra to
        the composed config), ``choice`` (``group=option``: it selects what is composed, wherever
        it stands) or ``ordered`` (anything else: composed by Hydra, in its place)."""
        if override not in self._parsed:
            o = self._parser.parse_overrides([override])[0]
            simple = o.type == OverrideType.CHANGE and o.package is None and not o.is_sweep_override()
            group = simple and self._is_group(o.key_or_group)
            if simple and not group and not o.is_hydra_override():
                kind = "plain"
            elif group and not isinstance(o.value(), dict):
                kind = "choice"
            else:
                kind = "ordered"
            self._parsed[override] = (o, kind)
        return self._parsed[override]

    def _base(self, key: tuple[str, ...]) -> DictConfig:
        if key not in self._bases:
            self.hydra_composes += 1
            try:
                cfg = self._compose(list(key))
            except Exception as e:  # re-raised, for this point and every later one of this key
                self._bases[key] = e
            else:
                if "hydra" in cfg:
                    with read_write(cfg), open_dict(cfg):
                        del cfg["hydra"]
                self._bases[key] = pickle.dumps(cfg)
        base = self._bases[key]
        if isinstance(base, Exception):
            raise base
        cfg = pickle.loads(base)
        assert isinstance(cfg, DictConfig)
        return cfg


def _group_test(loader: ConfigLoader, searchpath: object) -> Callable[[str], bool]:
    """The repository's ``group_exists``; with an extra ``hydra.searchpath`` the repository does
    not see every group, so every override counts as one and each point composes whole."""
    if searchpath:
        return lambda name: True
    return hydra_internals.group_test(loader)


def sweep_composer(loader: ConfigLoader, master: DictConfig) -> Composer:
    """The sweeper's composer: points as ``loader.load_sweep_config(master, overrides)``."""
    return Composer(lambda ov: loader.load_sweep_config(master, ov),
                    _group_test(loader, master.hydra.get("searchpath")))


@contextmanager
def app_composer(config_dir: Path, config_name: str = "config") -> Iterator[Composer]:
    """A composer over ``config_dir`` outside a running app (``hydra.compose``): status, tests."""
    schema.register()
    primary = OmegaConf.load(Path(config_dir) / f"{config_name}.yaml")
    searchpath = OmegaConf.select(primary, "hydra.searchpath") if isinstance(primary, DictConfig) else None
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        hydra = GlobalHydra.instance().hydra
        assert hydra is not None
        yield Composer(lambda ov: compose(config_name, overrides=ov),
                       _group_test(hydra.config_loader, searchpath))
