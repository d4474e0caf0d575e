"""Training data: an endless webdataset stream of (image, token) batches, as open_clip_train's
``--dataset-resampled`` builds it.

Shards are img2dataset's layout (``.jpg``/``.txt``/``.json`` per sample). They are drawn with
replacement, so the stream never ends and a run is measured in samples seen, not epochs. A
corrupt or missing shard, or a corrupt sample, is skipped with a warning; only a stream in
which nothing at all is readable stops the run (:class:`SkipErrors`).
"""

from __future__ import annotations

import functools
import os
import random
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
import webdataset as wds
from open_clip_train.data import filter_no_caption_or_no_image, tarfile_to_samples_nothrow
from webdataset.filters import _shuffle

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


class SkipErrors:
    """Exception handler of the pipeline: warn and skip the shard or sample, without sleeping.

    ``wds.warn_and_continue`` sleeps 0.5 s per error, which with resampled shards turns a few
    missing shards into minutes of idling. After ``limit`` errors in a row with no good sample
    in between (every shard unreadable), it raises instead of spinning forever.
    """

    def __init__(self, limit: int = 1000):
        self.limit, self.in_a_row = limit, 0

    def __call__(self, exn: Exception) -> bool:
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


def _tokenize_batch(tokenizer: Callable[[list[str]], torch.Tensor], batch: tuple) -> tuple:
    # One tokenizer call per batch instead of per sample: same tokens, less per-sample overhead.
    images, texts = batch
    return images, tokenizer(list(texts))


def check_shards(shards: str) -> list[str]:
    """Expand the brace pattern; raise if no local shard exists (the stream would spin forever).

    Remote URLs (``pipe:``, ``s3://`` ...) are not checked.
    """
    urls = wds.shardlists.expand_urls(shards)
    local = [u for u in urls if "://" not in u and not u.startswith("pipe:")]
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
) -> wds.DataPipeline:
    """Endless pipeline of ``(images [B,3,H,W], tokens [B,L])`` batches of exactly ``batch_size``."""
    urls = check_shards(shards)
    warn = SkipErrors()
    return wds.DataPipeline(
        wds.ResampledShards(
            urls, worker_seed=functools.partial(_worker_seed, seed), deterministic=True
        ),
        functools.partial(tarfile_to_samples_nothrow, handler=warn),
        _SeededShuffle(seed, shuffle_size, min(shuffle_initial, shuffle_size)),
        wds.select(filter_no_caption_or_no_image),
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
    """
    pipeline = make_pipeline(shards, preprocess, tokenizer, batch_size, seed, **pipeline_kw)
    return wds.WebLoader(pipeline, batch_size=None, shuffle=False, num_workers=workers)
