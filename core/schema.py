"""Typed schema of the clipscale configuration.

Every YAML file under ``conf/`` is validated against these dataclasses when Hydra composes it
(the files list ``<group>_schema`` first in their defaults), so a misspelt key or a value of the
wrong type fails at composition, on the login node, before anything is queued.

Fields marked ``identity=False`` in their metadata do not change a run's result (paths, worker
counts, cluster shape, logging cadence); they are left out of the run id's hash, so moving a
sweep to another cluster or another disk finds the same run folders.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class Precision(StrEnum):
    """open_clip's precision names (``--precision``)."""

    amp = "amp"
    amp_bf16 = "amp_bf16"
    amp_bfloat16 = "amp_bfloat16"
    bf16 = "bf16"
    fp16 = "fp16"
    pure_bf16 = "pure_bf16"
    pure_fp16 = "pure_fp16"
    fp32 = "fp32"


class Task(StrEnum):
    """What an evaluation entry measures."""

    zeroshot_classification = "zeroshot_classification"
    zeroshot_retrieval = "zeroshot_retrieval"
    linear_probe = "linear_probe"


class ReportTo(StrEnum):
    """Loggers a run can also write to (``train.report_to``)."""

    tensorboard = "tensorboard"
    wandb = "wandb"


class Schedule(StrEnum):
    """Learning-rate schedule after the linear warm-up (``train.schedule``)."""

    cosine = "cosine"
    """open_clip_train's cosine decay to 0 at the last step (the paper's recipe)."""
    const_cooldown = "const_cooldown"
    """Constant ``lr``, then a cooldown to 0 over the last ``cooldown_fraction`` of the steps;
    points that differ only in samples seen share one constant-LR trunk (README, Cheaper grids)."""


CooldownShape = StrEnum("CooldownShape", {"linear": "linear", "1-sqrt": "1-sqrt"})
"""Shape of a cooldown from ``lr`` to 0: ``linear`` or ``1-sqrt`` (Hägele et al. 2024)."""


class Stage(StrEnum):
    """What a job does with its point (``stage=``)."""

    all = "all"
    """Train, then evaluate."""
    train = "train"
    """Train only (the SLURM launcher evaluates in a dependent job of its own)."""
    eval = "eval"
    """Evaluate the finished training."""


def _identity_unless_default(default: Any) -> Any:
    """A field left out of the run id while it holds its default: adding one to the schema
    keeps the id of every existing run."""
    return field(default=default, metadata={"identity": "unless_default"})


def _not_identity(default: Any = MISSING, **kw: Any) -> Any:
    """A field that does not change the trained weights (excluded from the run id)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: default, metadata={"identity": False}, **kw)
    return field(default=default, metadata={"identity": False}, **kw)


@dataclass
class ModelConfig:
    """One model size of the grid (``conf/model/*.yaml``)."""

    name: str = MISSING
    """Short name used in run ids and tables (``vit_b32``)."""
    arch: str = MISSING
    """open_clip architecture name (``ViT-B-32``, or one of ``core/model_configs``)."""
    label: str = _not_identity(MISSING)
    """Name shown in plots, as the paper writes it (``ViT-B/32``)."""
    gmacs: float = _not_identity(MISSING)
    """Forward GMACs per image-text pair (reference/arch_info.csv, or measured for tiny ones)."""
    global_batch: int = MISSING
    """Global batch the paper used by default for this model (pairs per optimizer step)."""
    local_batch: int = _not_identity(MISSING)
    """Per-device batch; with the cluster shape it fixes gradient accumulation, not the result."""
    precision: Precision = Precision.amp_bf16
    """open_clip precision: amp_bf16, amp, fp32, bf16, pure_bf16, fp16, pure_fp16."""
    grad_checkpointing: bool = _not_identity(False)
    """Recompute activations in backward to save memory (same result, slower)."""
    ref_samples_per_s_per_gpu: float = _not_identity(0.0)
    """Throughput of one A100 in the paper's runs, for the GPU-hours estimate (0: unknown)."""


@dataclass
class DataConfig:
    """One upstream dataset (``conf/data/*.yaml``): webdataset shards in img2dataset's layout."""

    name: str = MISSING
    """Short name used in run ids (``laion400m``)."""
    label: str = _not_identity(MISSING)
    """Name as the paper and the reference CSV write it (``LAION-400M``)."""
    num_samples: int = MISSING
    """Unique image-text pairs in the dataset."""
    shards: str = _not_identity(MISSING)
    """Brace pattern of the shards, e.g. ``/data/laion400m/{00000..41407}.tar``. Required to train."""
    shard_weights: list[float] | None = None
    """Weights of several shard lists: ``shards`` may join lists with ``::`` (open_clip_train's
    ``--train-data "a::b"``); one weight per list, applied to each of its shards (open_clip's
    ``--train-data-upsampling-factors``), so list i is drawn with probability proportional to
    (its shards) x weight i. null: every shard alike."""
    synthetic: bool = False
    """True for the embedded default: the shards are generated from ``seed`` when missing."""
    seed: int = 0
    """Generator seed of a synthetic dataset (ignored for real data)."""
    image_size: int = 32
    """Image side of a synthetic dataset's pictures."""


@dataclass
class SamplesConfig:
    """Samples seen (``conf/samples/*.yaml``): how many image-text pairs training consumes."""

    name: str = MISSING
    """Short name used in run ids (``13B``)."""
    seen: int = MISSING
    """Number of pairs seen; optimizer steps = ceil(seen / global_batch)."""


@dataclass
class TrainConfig:
    """Optimisation recipe (``conf/train/*.yaml``), open_clip_train's defaults for the paper."""

    lr: float = 1e-3
    warmup: int = 10000
    """Linear warm-up steps before cosine decay."""
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    weight_decay: float = 0.2
    seed: int = 0
    workers: int = _not_identity(2)
    """Data-loader processes per rank."""
    compile: bool = _not_identity(False)
    """``torch.compile`` the model for the training step (speed-ups measured in
    benchmarks/results/gpu_throughput_compile.json); the first steps pay the compile."""
    log_every: int = _not_identity(10)
    """Steps between two lines of the training log."""
    checkpoint_every: int = _not_identity(0)
    """Steps between checkpoints (0: only at the end)."""
    keep_checkpoints: int = _not_identity(2)
    """How many of the newest complete checkpoints to keep."""
    max_nonfinite: int = _not_identity(5)
    """Non-finite losses in a row (each step skipped) before the run stops with NonFiniteLoss;
    its last good checkpoint stays."""
    zeroshot_every: int = _not_identity(0)
    """Steps between two evaluations on ``eval`` during training (open_clip's
    ``--zeroshot-frequency``; 0: off). Each writes ``final: false`` records of a complete
    checkpoint of that step (saved for it if it is not a checkpoint step): the learning curve."""
    report_to: list[ReportTo] = _not_identity([])
    """Where rank 0 also logs the training scalars and every evaluation record, as
    open_clip_train's ``--report-to``: ``tensorboard`` (event files in the run folder),
    ``wandb`` (offline without a network or key). Empty: the run's JSON logs only."""
    schedule: Schedule = _identity_unless_default(Schedule.cosine)
    """LR after the warm-up: ``cosine`` decay, or ``const_cooldown`` (constant, then a cooldown
    over the last ``cooldown_fraction`` of the steps, forked from a shared trunk)."""
    cooldown_fraction: float = _identity_unless_default(0.2)
    """Fraction f of a const_cooldown run's steps spent cooling down: constant LR up to step
    round((1 - f) x steps), the fork point from the trunk."""
    cooldown_shape: CooldownShape = _identity_unless_default(CooldownShape.linear)  # type: ignore[valid-type]
    """``linear`` (lr x (1 - p)) or ``1-sqrt`` (lr x (1 - sqrt(p))), p the cooldown's progress."""
    fork_every: int = _not_identity(0)
    """Samples between a trunk's extra kept checkpoints, beside one at every fork point it
    knows of, so that a samples-seen value added later forks from a near checkpoint (the
    constant-LR steps up to its exact fork are trained by the branch). 0: a tenth of the
    trunk's current length (at most ten extra checkpoints, each later fork catches up at
    most 10% of the longest run)."""
    trunk_until: int = _not_identity(0)
    """Set by the plan, not by hand: > 0 makes this job a trunk segment, which trains the
    point's trunk (not the point) up to this step."""


@dataclass
class EvalDatasetConfig:
    """One evaluation set, in clip_benchmark's naming."""

    name: str = MISSING
    """clip_benchmark dataset name (``wds/imagenet1k`` style names are built from ``root``)."""
    task: Task = MISSING
    """zeroshot_classification, zeroshot_retrieval or linear_probe (one record per
    ``eval.probe.fewshot_k``; an entry of the same name with zeroshot_classification shares
    its image features)."""
    root: str = MISSING
    """Local folder in clip_benchmark's ``wds/`` layout."""
    split: str = "test"
    train_split: str = "train"
    """Split a linear probe is fitted on (its validation part is held out of it)."""


@dataclass
class ProbeConfig:
    """Linear probes (``task: linear_probe``): logistic regression on frozen image features."""

    fewshot_k: list[int] = field(default_factory=lambda: [-1, 10, 25])
    """Training images per class; -1 is the whole train split (clip_benchmark's convention)."""
    lrs: list[float] = field(default_factory=lambda: [0.1, 0.01, 0.001])
    """AdamW learning rates tried; the best (lr, epochs) on the validation part wins."""
    epochs: list[int] = field(default_factory=lambda: [10, 20, 40])
    """Epoch counts tried (one run per lr, scored on validation after each of these epochs)."""
    weight_decay: float = 0.0
    batch_size: int = 256
    val_proportion: float = 0.2
    """Part of the (few-shot) train split held out to choose lr and epochs; the chosen
    setting is then refitted on the whole of it."""
    seed: int = 0


@dataclass
class EvalConfig:
    """Post-run evaluation (``conf/eval/*.yaml``)."""

    data_dir: str = "${data_root}/eval"
    """Folder holding the suite's datasets; each YAML builds its roots as
    ``${eval.data_dir}/<folder>`` (override: ``eval.data_dir=/p/data/clip_benchmark``)."""
    datasets: list[EvalDatasetConfig] = field(default_factory=list)
    aggregates: dict[str, list[str]] = field(default_factory=dict)
    """Aggregate name -> member dataset names (zero-shot classification): written as a record
    of its own (metrics = mean over the members, plus ``members``) once every member has one."""
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    batch_size: int = 256
    workers: int = 0
    recall_k: list[int] = field(default_factory=lambda: [1, 5, 10])


@dataclass
class ClusterConfig:
    """Where points run (``conf/cluster/*.yaml``). Never part of a run's identity."""

    name: str = "local"
    gpus_per_node: int = 1
    """Devices (processes) per node; 1 on a laptop."""
    nodes: int | None = None
    """Nodes per job; null derives it from global batch / (local batch x gpus per node)."""
    gpu_peak_tflops: float = 312.0
    """Peak bf16 TFLOP/s of one device (A100: 312), for GPU-hour and MFU estimates."""
    cpu_peak_tflops: float = 0.1
    """Peak TFLOP/s of one CPU process, for the MFU estimate of CPU runs."""


@dataclass
class LeaseConfig:
    """Who works on a run: the process that trains or evaluates a point holds its lease
    (``<run dir>/lease.json``, see ``launcher.lease``). Never part of a run's identity."""

    wait_s: float = 0.0
    """How long a process that finds the run held by a live holder waits for it (0: it skips
    the point at once, saying who holds it)."""
    heartbeat_s: float = 30.0
    """Seconds between two heartbeats of the holder (the lease file's modification time)."""
    stale_after_s: float = 300.0
    """A lease whose heartbeat is older than this counts as abandoned and is taken over (so is
    one whose pid is dead on this host, or whose SLURM job left the queue)."""


@dataclass
class Config:
    """Root of the composed configuration (``conf/config.yaml``)."""

    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    samples: SamplesConfig = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    lease: LeaseConfig = field(default_factory=LeaseConfig)
    root: str = "runs"
    """Folder that holds one sub-folder per run (``<root>/<run id>``)."""
    data_root: str = "data"
    """Folder where the embedded default's generated datasets live."""
    sweep: str | None = None
    """Named sweep (``sweeps/<name>.yaml``) expanded by the sweeper; null for the command line."""
    dry_run: bool = False
    """Print the plan (one row per point) and run nothing."""
    retry_failed: bool = True
    """Re-run points whose last attempt failed (done points are always skipped)."""
    stage: Stage = Stage.all
    """What a job does with its point: ``all`` (train, then evaluate), ``train`` (train only:
    the SLURM launcher evaluates in a dependent job of its own) or ``eval`` (evaluate the
    finished training)."""


IDENTITY_SECTIONS = ("model", "data", "samples", "train")
"""Config sections whose identity fields make up a run's hash."""

_SCHEMAS = {
    "model": ModelConfig,
    "data": DataConfig,
    "samples": SamplesConfig,
    "train": TrainConfig,
}


@functools.cache
def non_identity_fields(section: str) -> frozenset[str]:
    """Names of the fields of ``section`` that are excluded from the run id."""
    return frozenset(f.name for f in fields(_SCHEMAS[section]) if f.metadata.get("identity", True) is False)


@functools.cache
def identity_defaults(section: str) -> dict[str, Any]:
    """Fields of ``section`` left out of the run id while they hold their default, with it."""
    return {f.name: f.default for f in fields(_SCHEMAS[section])
            if f.metadata.get("identity") == "unless_default"}


def schedule_of(section: Any) -> Schedule:
    """The schedule a ``train`` section or a store record names (anything with ``.get``), and
    ``cosine`` where it names none: run folders and records saved before ``train.schedule``
    existed hold cosine runs (the field's default)."""
    value = section.get("schedule")
    return Schedule(value) if value else Schedule(TrainConfig.schedule)


def register() -> None:
    """Store the schemas in Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
