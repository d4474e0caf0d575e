"""Training data: an endless webdataset stream of (image, token) batches, as open_clip_train's
``--dataset-resampled`` builds it.

Shards are img2dataset's layout (``.jpg``/``.txt``/``.json`` per sample). They are drawn with
replacement, so the stream never ends and a run is measured in samples seen, not epochs. A
corrupt or missing shard, or a corrupt sample, is skipped with a warning; only a stream in
which nothing at all is readable stops the run (:class:`SkipErrors`).

Per worker core it loads more samples per second than open_clip_train's ``get_wds_dataset``
(measured: ``benchmarks/results/loader_per_core.json``), with the same crops, the same tokens and, for crops decoded at full scale, the same pixels: shards are
read without ``tarfile``'s per-member parsing (``training.tars``), only the image and caption
are decoded, open_clip's train transform is fused with decoding and writes each crop normalised
into a shared-memory batch (``training.augment``), captions are tokenized a batch at a time, and
a JPEG whose crop is at least twice the model input is decoded at reduced scale (``draft``; the
one change of pixels).
"""

from __future__ import annotations

import functools
import itertools
import math
import multiprocessing
import os
import random
import signal
import warnings
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import webdataset as wds
from omegaconf import DictConfig
from open_clip import get_input_dtype
from open_clip_train.data import filter_no_caption_or_no_image
from webdataset.filters import _shuffle

from core.steps import Steps
from core.validate import expand_shards, is_local
from training.augment import FusedTransform
from training.tars import tar_samples

SHUFFLE_SIZE = 5000
"""Sample shuffle buffer (open_clip_train's ``_SAMPLE_SHUFFLE_SIZE``)."""
SHUFFLE_INITIAL = 1000
"""Samples buffered before the first one is yielded (``_SAMPLE_SHUFFLE_INITIAL``)."""


SEGMENT_STEPS = 100
"""Optimizer steps per data segment: the stream restarts from a fresh seed every this many steps.

A resume mid-segment restarts that segment and discards the steps already trained on, so a run
resumed at any step sees exactly the batches of an uninterrupted run (at most
``SEGMENT_STEPS - 1`` steps of loading, no model compute, are redone). Changing it changes
which samples a run sees.
"""


def stream_seed(seed: int, segment: int, rank: int = 0) -> int:
    """Seed of data segment ``segment`` on ``rank``: no two ranks or segments share a stream."""
    return wds.utils.make_seed(seed, segment, rank)


def _worker_seed(base: int) -> int:
    # Each loader worker must draw its own shard sequence, or workers would return duplicates.
    info = torch.utils.data.get_worker_info()
    return wds.utils.make_seed(base, info.id if info is not None else 0)


class _SeededShuffle(wds.PipelineStage):
    """``wds.shuffle`` whose RNG is seeded per worker when iteration starts (reproducible)."""

    def __init__(self, base: int, bufsize: int, initial: int):
        self.base, self.bufsize, self.initial = base, bufsize, initial

    def run(self, src: Iterator[Any]) -> Iterator[Any]:
        rng = random.Random(_worker_seed(self.base) + 1)
        # Augmentations (RandomResizedCrop) draw from torch's RNG of the process that decodes:
        # seeding it here makes a segment's batches a function of its seed alone, in a loader
        # worker or (workers=0) in the training process, which draws from it nothing else.
        torch.manual_seed(_worker_seed(self.base) + 2)
        return _shuffle(src, self.bufsize, self.initial, rng)


class SkipCounts:
    """Samples and shards a pipeline skipped, shared by the loader's worker processes.

    Counts what the loader read, including what its workers prefetched beyond the batches
    consumed so far, so at any moment it may run a few batches ahead of the training step.
    """

    def __init__(self) -> None:
        self._counts = multiprocessing.Array("q", 2)  # samples, shards; inherited by workers

    def add(self, shard: bool) -> None:
        with self._counts.get_lock():
            self._counts[int(shard)] += 1

    @property
    def samples(self) -> int:
        return int(self._counts[0])

    @property
    def shards(self) -> int:
        return int(self._counts[1])


@dataclass
class SkipTally:
    """What the loader skipped over a run's data segments, as ``[samples, shards]``."""

    closed: list[int] = field(default_factory=lambda: [0, 0])
    """Skipped in the segments whose loaders are closed (and, on resume, before the segment)."""
    live: dict[int, SkipCounts] = field(default_factory=dict)
    """Counters of the open segments' loaders, by segment."""

    def open(self, segment: int) -> SkipCounts:
        """A fresh counter for the loader of ``segment``."""
        self.live[segment] = SkipCounts()
        return self.live[segment]

    def close(self, segment: int) -> None:
        """Fold the counts of ``segment``, whose loader is done, into :attr:`closed`."""
        done = self.live.pop(segment)
        self.closed = [self.closed[0] + done.samples, self.closed[1] + done.shards]

    def total(self, before_segment: int | None = None) -> list[int]:
        """``[samples, shards]`` skipped so far (only in segments before ``before_segment``)."""
        total = list(self.closed)
        for segment, counts in self.live.items():
            if before_segment is None or segment < before_segment:
                total[0] += counts.samples
                total[1] += counts.shards
        return total


class SkipErrors:
    """Exception handler of the pipeline: warn, count and skip the shard or sample, no sleeping.

    ``wds.warn_and_continue`` sleeps 0.5 s per error, which with resampled shards turns a few
    missing shards into minutes of idling. After ``limit`` errors in a row with no good sample
    in between (every shard unreadable), it raises instead of spinning forever. Errors go to
    ``counts`` (a shard when raised while opening or reading a tar, else a sample).
    """

    def __init__(self, limit: int = 1000, counts: SkipCounts | None = None):
        self.limit, self.in_a_row = limit, 0
        self.counts = counts if counts is not None else SkipCounts()

    def shard(self, exn: Exception) -> bool:
        """Handler of the stages that open and read tars: the rest of the shard is skipped."""
        return self._skip(exn, shard=True)

    def __call__(self, exn: Exception) -> bool:
        return self._skip(exn, shard=False)

    def _skip(self, exn: Exception, shard: bool) -> bool:
        self.counts.add(shard)
        self.in_a_row += 1
        if self.in_a_row >= self.limit:
            raise RuntimeError(
                f"data.shards: {self.in_a_row} unreadable shards/samples in a row"
            ) from exn
        warnings.warn(f"skipping unreadable data: {exn!r}", stacklevel=2)
        return True

    def good(self, src: Iterator[Any]) -> Iterator[Any]:
        """Pipeline stage placed after the last fallible one: a sample got through."""
        for sample in src:
            self.in_a_row = 0
            yield sample


IMAGE_KEYS = ("jpg", "png", "jpeg", "webp")
"""Image entries of a sample, the first present is used (open_clip_train's rename order)."""


def _crops(
    src: Iterator[dict[str, Any]], fused: FusedTransform, handler: Callable[[Exception], bool]
) -> Iterator[tuple[np.ndarray, str]]:
    """``(crop, caption)`` of each sample; what the unfused stages decode, rename and transform.

    Only the image and the caption are decoded (the unfused ``wds.decode`` also parses the
    ``.json``, which nothing reads: a sample whose only fault is a bad ``.json`` is kept here).
    """
    for sample in src:
        try:
            data = next(sample[k] for k in IMAGE_KEYS if k in sample)
            text = sample["txt"].decode("utf-8")
            crop = fused.crop(data)
        except Exception as exn:
            if handler(exn):
                continue
            break
        yield crop, text


def _fused_batches(
    src: Iterator[tuple[np.ndarray, str]],
    fused: FusedTransform,
    tokenizer: Callable[[list[str]], torch.Tensor],
    batch_size: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Full batches of ``(images, tokens)``: normalised and tokenized a batch at a time."""
    crops: list[np.ndarray] = []
    texts: list[str] = []
    for crop, text in src:
        crops.append(crop)
        texts.append(text)
        if len(crops) == batch_size:
            yield fused.batch(crops), tokenizer(texts)
            crops, texts = [], []


def _tokenize_batch(tokenizer: Callable[[list[str]], torch.Tensor], batch: tuple) -> tuple:
    # One tokenizer call per batch instead of per sample: same tokens, less per-sample overhead.
    images, texts = batch
    return images, tokenizer(list(texts))


def shard_urls(
    shards: str, weights: Sequence[float] | None = None
) -> tuple[list[str], list[float] | None]:
    """Expand ``pattern1::pattern2...`` into shard URLs and, with ``weights``, their weights.

    ``weights`` has one entry per ``::``-separated list and weighs each shard of that list, as
    open_clip_train's ``--train-data-upsampling-factors``: list ``i`` is drawn with
    probability proportional to (its number of shards) x ``weights[i]``. ValueError on a
    count mismatch or weights that are negative or all zero.
    """
    lists = expand_shards(shards)
    urls = [u for urls in lists for u in urls]
    if weights is None:
        return urls, None
    weights = [float(w) for w in weights]
    if len(weights) != len(lists):
        raise ValueError(
            f"data.shard_weights has {len(weights)} entries for {len(lists)} shard lists "
            f"in data.shards={shards!r} (separated by '::')"
        )
    if any(w < 0 or not math.isfinite(w) for w in weights) or not any(weights):
        raise ValueError(f"data.shard_weights={weights} must be finite, >= 0, not all 0")
    return urls, [w for w, part in zip(weights, lists, strict=True) for _ in part]


class _WeightedShards(wds.PipelineStage):
    """``wds.ResampledShards`` drawing each shard with its weight (seeded per worker)."""

    def __init__(self, urls: list[str], weights: list[float], seed: int):
        self.urls, self.seed = urls, seed
        self.cum_weights = list(itertools.accumulate(weights))

    def run(self) -> Iterator[dict[str, str]]:
        rng = random.Random(_worker_seed(self.seed))
        while True:
            yield {"url": rng.choices(self.urls, cum_weights=self.cum_weights)[0]}


def check_shards(shards: str, weights: Sequence[float] | None = None) -> list[str]:
    """Expand the brace pattern(s); raise if no local shard exists (the stream would spin
    forever) or the weights do not fit (:func:`shard_urls`).

    Remote URLs (``pipe:``, ``s3://`` ...) are not checked. Deliberately more tolerant than
    the plan's check (``core.validate.check_shard_ends``: first and last shard of each list):
    a job whose shards went missing after it was queued trains on the rest, skipping them.
    """
    urls, _ = shard_urls(shards, weights)
    local = [u for u in urls if is_local(u)]
    if local and len(local) == len(urls) and not any(os.path.exists(u) for u in local):
        raise FileNotFoundError(f"data.shards: none of the {len(urls)} shards of {shards!r} exists")
    return urls


def make_pipeline(
    shards: str,
    preprocess: Callable[[Any], torch.Tensor],
    tokenizer: Callable[[list[str]], torch.Tensor],
    batch_size: int,
    seed: int,
    shuffle_size: int = SHUFFLE_SIZE,
    shuffle_initial: int = SHUFFLE_INITIAL,
    counts: SkipCounts | None = None,
    weights: Sequence[float] | None = None,
    draft: bool = True,
) -> wds.DataPipeline:
    """Endless pipeline of ``(images [B,3,H,W], tokens [B,L])`` batches of exactly ``batch_size``.

    ``shards`` may join several lists with ``::``, drawn with ``weights`` (:func:`shard_urls`).
    Unreadable shards and samples are skipped and counted in ``counts`` when given.
    open_clip's train transform is fused with decoding (``training.augment``: the same crops and
    pixels; with ``draft``, JPEGs at least twice the model input are decoded at reduced scale);
    any other ``preprocess`` is applied to each decoded image as it is.
    """
    check_shards(shards, weights)
    urls, shard_weights = shard_urls(shards, weights)
    warn = SkipErrors(counts=counts)
    if shard_weights is None:
        sampler = wds.ResampledShards(
            urls, worker_seed=functools.partial(_worker_seed, seed), deterministic=True
        )
    else:
        sampler = _WeightedShards(urls, shard_weights, seed)
    head = [
        sampler,
        functools.partial(tar_samples, handler=warn.shard),
        _SeededShuffle(seed, shuffle_size, min(shuffle_initial, shuffle_size)),
        wds.select(filter_no_caption_or_no_image),
    ]
    fused = FusedTransform.of(preprocess, draft=draft)
    if fused is not None:
        return wds.DataPipeline(
            *head,
            functools.partial(_crops, fused=fused, handler=warn),
            warn.good,
            functools.partial(_fused_batches, fused=fused, tokenizer=tokenizer,
                              batch_size=batch_size),
        )  # fmt: skip
    return wds.DataPipeline(
        *head,
        wds.decode("pilrgb", handler=warn),
        wds.rename(image="jpg;png;jpeg;webp", text="txt", handler=warn),
        wds.map_dict(image=preprocess, handler=warn),
        wds.to_tuple("image", "text", handler=warn),
        warn.good,
        wds.batched(batch_size, partial=False),
        wds.map(functools.partial(_tokenize_batch, tokenizer)),
    )


def make_loader(
    shards: str,
    preprocess: Callable[[Any], torch.Tensor],
    tokenizer: Callable[[list[str]], torch.Tensor],
    batch_size: int,
    workers: int,
    seed: int,
    **pipeline_kw: Any,
) -> wds.WebLoader:
    """``wds.WebLoader`` over :func:`make_pipeline` with ``workers`` processes (0: in-process).

    Iterate it once and take as many batches as needed; the stream does not end by itself.
    ``pipeline_kw`` goes to :func:`make_pipeline` (``counts=SkipCounts()`` counts what is
    skipped, in every worker).
    """
    pipeline = make_pipeline(shards, preprocess, tokenizer, batch_size, seed, **pipeline_kw)
    return wds.WebLoader(pipeline, batch_size=None, shuffle=False, num_workers=workers,
                         worker_init_fn=_ignore_stop_signals if workers else None)


def _ignore_stop_signals(worker_id: int) -> None:
    """SLURM signals every process of a job (``scontrol requeue``, preemption, the time
    limit): the loader's workers leave SIGTERM/SIGUSR2 to the trainer, which checkpoints at
    the next step and then shuts them down (a worker killed first fails the step instead)."""
    for s in (signal.SIGTERM, signal.SIGUSR2):
        signal.signal(s, signal.SIG_IGN)


def step_batches(
    cfg: DictConfig,
    steps: Steps,
    start: int,
    rank: int,
    device: torch.device,
    preprocess: Callable[[Any], torch.Tensor],
    tokenizer: Callable[[list[str]], torch.Tensor],
    skips: SkipTally,
) -> Generator[list, None, None]:
    """Endless iterator, from step ``start`` on, of lists of ``steps.accum`` micro-batches of
    ``steps.local_batch`` on ``device`` (images in ``model.precision``'s input dtype).

    The stream is cut into segments of :data:`SEGMENT_STEPS` steps, each with its own seed
    (``train.seed``, segment, ``rank``); a start mid-segment restarts the segment and skips the
    steps already taken, so the batches of step ``s`` do not depend on where the run was
    interrupted. The next segment's loader starts (its workers spawn and prefetch) while the
    last step of the current one trains, so a segment boundary does not stall the model.
    What each segment skips is counted in ``skips``. Close the generator to shut the loader's
    workers down.
    """
    input_dtype = get_input_dtype(cfg.model.precision)

    def start_segment(segment: int) -> Iterator[Any]:
        loader = make_loader(
            cfg.data.shards,
            preprocess,
            tokenizer,
            steps.local_batch,
            int(cfg.train.workers),
            seed=stream_seed(int(cfg.train.seed), segment, rank),
            counts=skips.open(segment),
            weights=cfg.data.shard_weights,
        )
        return iter(loader)

    def on_device(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        images, texts = batch
        images = images.to(device, dtype=input_dtype, non_blocking=True)
        return images, texts.to(device, non_blocking=True)

    segment, offset = divmod(start, SEGMENT_STEPS)
    it = start_segment(segment)
    for _ in range(offset * steps.accum):
        next(it)
    while True:
        for k in range(offset, SEGMENT_STEPS):
            group = [on_device(b) for b in (next(it) for _ in range(steps.accum))]
            if k == SEGMENT_STEPS - 1:
                following = start_segment(segment + 1)
            yield group
        # Dropping the last reference shuts the finished segment's loader workers down.
        it, segment, offset = following, segment + 1, 0
        skips.close(segment - 1)
