"""TensorBoard and W&B logs of a run (``train.report_to``), beside its own JSON logs.

A :class:`Reporter` is built from the config with :func:`for_run` on rank 0 (the other ranks get
one that does nothing). It logs the training log's scalars (:meth:`Reporter.scalars`, one call
per ``train_log.jsonl`` line) and evaluation records (:meth:`Reporter.records`, as they are
written), each against **samples seen** (step x global batch): learning curves of runs of
different batch sizes then share one x axis, as the scaling-law plots do. The optimizer step
is logged too (``train/step``).

Tags: ``train/<key>`` for every number of a training log line (``train/loss``, ``train/lr``,
``train/logit_scale``, ``train/samples_per_s_per_gpu``, ``train/mfu``,
``train/skipped_samples``, ...: see :data:`training.metrics.LOG_FILE`);
``eval/<dataset>/<task>/<metric>`` for every number of a record's ``metrics``, the dataset as
the record names it (``eval/wds/synth_shapes/zeroshot_classification/acc1``,
``eval/wds/synth_scenes/zeroshot_retrieval/image_retrieval_recall@5``).

- ``tensorboard``: event files in ``<run dir>/tensorboard/``, global step = samples seen. An
  attempt that resumes from a checkpoint writes a new event file there whose writer purges
  (``purge_step``) what an earlier attempt logged after that checkpoint, so TensorBoard shows
  one curve without repeated steps.
- ``wandb``: the W&B run id is the run folder's name (the run id), its group the sweep
  (``cli`` from the command line), ``resume="allow"``: a requeued or resumed job, and the
  evaluation after training, continue the same W&B run. ``samples_seen`` is the x axis of
  every key (``define_metric``). W&B's own step (``_step``) is 2 x samples seen for a
  training line and 2 x samples seen + 1 for evaluation records: unique and increasing over
  all attempts and jobs of the run, where a count of log calls would start again at 0 in
  every offline attempt and an evaluation at the last training line's samples seen would
  repeat its step. Online, W&B ignores a step below the run's current one, which leaves out
  the lines a resumed attempt repeats. Offline (``<run dir>/wandb/offline-run-*``, one folder
  an attempt, each with what it logged, repeats included; ``wandb sync`` uploads them, in
  order of start) without a key (``WANDB_API_KEY`` or a ``wandb login``) or without a
  network; ``WANDB_MODE`` wins. Neither a server nor ``wandb sync`` is tested here.

Backends open at :meth:`Reporter.start` (training) or on first use (an evaluation's records):
a reporter that is not started and logs nothing writes nothing.
"""

from __future__ import annotations

import logging
import math
import netrc
import os
import re
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf

from core.schema import ReportTo

log = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"
"""Folder of a run's TensorBoard event files."""
WANDB_PROJECT = "clipscale"
"""W&B project unless ``WANDB_PROJECT`` says otherwise."""
X = "samples_seen"
"""The x axis of every scalar: samples seen (TensorBoard's global step, W&B's step metric)."""


def _number(v: Any) -> float | None:
    """``v`` as a float if it is a number (not a bool), else None."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v)


def train_tags(line: Mapping[str, Any]) -> dict[str, float]:
    """``train/<key>``: every number of a training log line but ``samples_seen`` (the x)."""
    out = {}
    for key, value in line.items():
        v = _number(value)
        if v is not None and key != X:
            out[f"train/{key}"] = v
    return out


def eval_tags(record: Mapping[str, Any]) -> dict[str, float]:
    """``eval/<dataset>/<task>/<metric>``: every number of an evaluation record's metrics
    (a metric stored as null, NaN in clip_benchmark, is left out)."""
    base = f"eval/{record['dataset']}/{record['task']}"
    out = {}
    for key, value in (record.get("metrics") or {}).items():
        v = _number(value)
        if v is not None and math.isfinite(v):
            out[f"{base}/{key}"] = v
    return out


class Reporter:
    """What rank 0 logs to TensorBoard and W&B; does nothing with no backend."""

    def __init__(self, cfg: DictConfig | None, run_dir: Path, to: Iterable[ReportTo] = ()):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.to = [ReportTo(t) for t in to]
        self.resumed_at: int | None = None
        self._tb: Any = None
        self._wandb: Any = None

    def start(self, samples_seen: int) -> None:
        """The run continues after ``samples_seen`` (0: from the start): what an earlier
        attempt logged past it is stale (TensorBoard purges it). Call before the first log;
        it opens the backends, so that W&B's start-up is not timed as training."""
        self.resumed_at = int(samples_seen)
        if ReportTo.tensorboard in self.to and self._tb is None:
            self._open_tensorboard()
        if ReportTo.wandb in self.to and self._wandb is None:
            self._open_wandb()

    def scalars(self, samples_seen: int, values: Mapping[str, Any]) -> None:
        """Log one training log line (``train/<key>`` for each number in ``values``)."""
        self._log(int(samples_seen), train_tags(values), evaluation=False)

    def records(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Log evaluation records, each at its ``samples_seen``; then flush (curves show live)."""
        by_x: dict[int, dict[str, float]] = {}
        for r in records:
            by_x.setdefault(int(r[X]), {}).update(eval_tags(r))
        for x, tags in sorted(by_x.items()):
            self._log(x, tags, evaluation=True)
        if self._tb is not None:
            self._tb.flush()

    def _log(self, x: int, tags: dict[str, float], evaluation: bool) -> None:
        if not tags:
            return
        if ReportTo.tensorboard in self.to:
            tb = self._tb or self._open_tensorboard()
            for tag, value in tags.items():
                tb.add_scalar(tag, value, global_step=x)
        if ReportTo.wandb in self.to:
            wandb_step = 2 * x + int(evaluation)  # see the module's docstring
            (self._wandb or self._open_wandb()).log({X: x, **tags}, step=wandb_step)

    def _open_tensorboard(self) -> Any:
        from torch.utils.tensorboard import SummaryWriter  # tensorboard: only when asked for

        # TensorBoard's reader drops every event at or after purge_step read before it: the
        # lines an interrupted attempt logged after the checkpoint this one resumed from.
        purge = None if self.resumed_at is None else self.resumed_at + 1
        self._tb = SummaryWriter(
            str(self.run_dir / TENSORBOARD_DIR), purge_step=purge, flush_secs=30
        )
        return self._tb

    def _open_wandb(self) -> Any:
        import wandb  # only when asked for: a heavy import

        mode = wandb_mode()
        config: dict[str, Any] | None = None
        if self.cfg is not None:  # plain values: W&B stores the run's config as JSON
            plain = OmegaConf.to_container(self.cfg, resolve=True, enum_to_str=True)
            config = {str(k): v for k, v in plain.items()} if isinstance(plain, dict) else None
        self._wandb = wandb.init(
            project=os.environ.get("WANDB_PROJECT", WANDB_PROJECT),
            id=wandb_id(self.run_dir.name),
            name=self.run_dir.name,
            group=(self.cfg.get("sweep") if self.cfg is not None else None) or "cli",
            dir=str(self.run_dir),
            resume="allow",
            mode=mode,
            config=config,
        )
        self._wandb.define_metric(X)
        self._wandb.define_metric("*", step_metric=X)
        log.info("%s: W&B run %s (%s)", self.run_dir.name, self._wandb.id, mode or "WANDB_MODE")
        return self._wandb

    def close(self, failed: bool = False) -> None:
        """Flush and close the backends (the W&B run marked failed when ``failed``)."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish(exit_code=1 if failed else 0)
            self._wandb = None

    def __enter__(self) -> Reporter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(failed=exc is not None)


def for_run(cfg: DictConfig, run_dir: str | Path, main: bool = True) -> Reporter:
    """The reporter of the run in ``run_dir`` for ``cfg.train.report_to``; one that logs nothing
    unless ``main`` (rank 0)."""
    return Reporter(cfg, Path(run_dir), cfg.train.report_to if main else ())


_WANDB_ID_FORBIDDEN = re.compile(r"[^A-Za-z0-9_.-]")


def wandb_id(run_id: str) -> str:
    """``run_id`` as a W&B run id: characters other than letters, digits, ``_ . -`` (W&B
    refuses ``:;,#?/'``) become ``-``. Run ids are made of those characters already."""
    return _WANDB_ID_FORBIDDEN.sub("-", run_id.strip())


def wandb_mode() -> Literal["online", "offline"] | None:
    """None when ``WANDB_MODE`` is set (wandb reads it); ``offline`` without an API key
    (``WANDB_API_KEY``, or ``wandb login``'s netrc entry) or when W&B's server cannot be
    reached within 3 s; else ``online``."""
    if os.environ.get("WANDB_MODE"):
        return None
    url = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    host = urlparse(url).hostname or "api.wandb.ai"
    if not (os.environ.get("WANDB_API_KEY") or _netrc_key(host)):
        log.info("W&B: no API key, logging offline (wandb sync uploads the run later)")
        return "offline"
    try:
        port = urlparse(url).port or (443 if url.startswith("https") else 80)
        socket.create_connection((host, port), timeout=3).close()
    except OSError as e:
        log.warning("W&B: %s unreachable (%s), logging offline", host, e)
        return "offline"
    return "online"


def _netrc_key(host: str) -> bool:
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False
