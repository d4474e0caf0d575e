"""The embedded default's data: small drawn scenes with captions (:mod:`synthetic.scenes`),
written as webdataset training shards and clip_benchmark evaluation sets
(:mod:`synthetic.generate`). It serves training and evaluation alike, and needs no network."""

from synthetic.generate import (  # noqa: F401
    EVAL_SETS,
    SHARD_SIZE,
    ensure_datasets,
    generate_eval,
    generate_train,
)
