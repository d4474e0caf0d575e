"""The cost model: device-hours of a grid point from its compute and a measured throughput.

A point trains ``samples`` image-text pairs of a model of ``gmacs`` forward GMACs per pair
(its compute, the paper's x axis, is ``gmacs x samples``). Its cost is
``samples / (samples/s per device) / 3600`` device-hours, with the throughput taken, in this
order, from what was measured:

1. ``paper``: the paper's own training jobs (``core/reference/trained_models_info.csv``,
   A100s of JUWELS Booster): each job's ``samples_per_sec`` (the whole job) / ``gpus``. A job's
   per-GPU throughput falls as it spans more GPUs (from the paper's ``trained_models_info.csv``,
   ViT-B/32: 850 samples/s per GPU on 128 GPUs, 635 on 344, 228 on 824), so the figure is the median of the arch's jobs at the GPU count
   nearest (in log) to the point's.
2. ``benchmark``: this project's single-device benchmarks (``benchmarks/results/``):
   ``gpu_throughput.json`` (H200, bf16, eager) and ``gpu_throughput_compile.json``
   (``torch.compile``), and ``train_throughput_cpu.json`` (one CPU thread, fp32, tiny models).
   One device, no communication: an upper bound on what a multi-node job reaches per device.
3. ``assumed``: training FLOPs (3 x forward, 2 FLOPs per MAC) at the model-FLOPs utilisation
   measured for the arch nearest in GMACs on the same device (tiny_m on a CPU: tiny_s's;
   ViT-H/14 on an H200: ViT-L/14's), or, for a device without any measurement, at an assumed
   15 % of its peak (an input, from the paper's jobs in ``trained_models_info.csv``).

The device comes from the cluster's peak (``cluster.gpu_peak_tflops``: 312 -> A100, 989 ->
H200; any other value is a GPU known only by its peak) or is ``cpu``
(``cluster.cpu_peak_tflops``). Paper figures exist only for A100s and benchmark figures only for
the devices they were measured on; a figure is never carried to another device.

Every :class:`Throughput` says where it came from (``source``, ``kind``), so a plan or a
designed sweep can show which figure priced each point. Training only: evaluation is not
counted.

The catalogue of the grid's choices (``conf/model/*.yaml``: arch, GMACs; ``conf/data/*.yaml``:
unique pairs) is read here too, for the analysis that prices points it designs.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np
import yaml

from core.reference import ARCH_INFO_CSV, TRAINED_MODELS_CSV
from core.schema import ClusterConfig

ROOT = Path(__file__).resolve().parent.parent
BENCHMARK_DIR = ROOT / "benchmarks" / "results"
CONF_DIR = ROOT / "conf"

GPU_BENCHMARKS = {False: "gpu_throughput.json", True: "gpu_throughput_compile.json"}
CPU_BENCHMARK = "train_throughput_cpu.json"
GPU_PEAK_TFLOPS = float(ClusterConfig.gpu_peak_tflops)
CPU_PEAK_TFLOPS = float(ClusterConfig.cpu_peak_tflops)
"""The schema's defaults (``cluster.gpu_peak_tflops``: an A100; ``cluster.cpu_peak_tflops``)."""
DEVICES = {312.0: "A100", 989.0: "H200"}
"""Peak bf16 TFLOP/s -> device name, for the devices that have measured figures."""
ASSUMED_MFU = 0.15
"""Model-FLOPs utilisation assumed where nothing was measured (an input, about what the paper's
A100 jobs reached by ``trained_models_info.csv``)."""
FLOPS_PER_MAC = 2
TRAIN_FACTOR = 3  # forward + backward ~ 3 forward passes


@dataclass(frozen=True)
class Throughput:
    """Training samples/s of one device (one GPU, or one CPU process) and where it came from."""

    samples_per_s: float
    device: str
    kind: str
    """``paper``, ``benchmark`` or ``assumed``."""
    source: str
    """One line naming the figure: file, run(s) or assumption."""

    def hours(self, samples: float) -> float:
        """Device-hours to train ``samples`` pairs."""
        return float(samples) / self.samples_per_s / 3600

    def mfu(self, gmacs: float, peak_tflops: float) -> float:
        """The model-FLOPs utilisation this throughput means on a device of that peak."""
        return train_flops(gmacs, 1.0) * self.samples_per_s / (peak_tflops * 1e12)


def device_name(peak_tflops: float) -> str:
    """``A100`` for 312 TFLOP/s, ``H200`` for 989, else ``GPU@<peak>TF``."""
    return DEVICES.get(float(peak_tflops), f"GPU@{peak_tflops:g}TF")


def train_flops(gmacs: float, samples: float) -> float:
    """Training FLOPs: 3 x forward, 2 FLOPs per multiply-accumulate."""
    return TRAIN_FACTOR * FLOPS_PER_MAC * float(gmacs) * 1e9 * float(samples)


@cache
def paper_jobs() -> tuple[tuple[str, int, int, float, str], ...]:
    """(arch, gpus, local batch, samples/s per GPU, run name) of each of the paper's jobs."""
    with open(TRAINED_MODELS_CSV, newline="") as f:
        return tuple(
            (r["arch"], int(r["gpus"]), int(r["local_bs"]),
             float(r["samples_per_sec"]) / int(r["gpus"]), r["name"])
            for r in csv.DictReader(f)
        )  # fmt: skip


def _paper(arch: str, gpus: int | None, local_batch: int | None) -> Throughput | None:
    jobs = [j for j in paper_jobs() if j[0] == arch]
    if not jobs:
        return None
    if gpus:  # the jobs at the nearest GPU count: per-GPU throughput falls with the job's size
        near = min(abs(math.log(j[1] / gpus)) for j in jobs)
        jobs = [j for j in jobs if abs(math.log(j[1] / gpus)) == near]
    same_batch = [j for j in jobs if j[2] == local_batch]
    jobs = same_batch or jobs
    rate = median(j[3] for j in jobs)
    shape = ", ".join(sorted({f"{j[1]} GPUs x {j[2]}" for j in jobs}))
    return Throughput(
        rate, "A100", "paper",
        f"paper A100 jobs ({TRAINED_MODELS_CSV.name}): median of {len(jobs)} {arch} job(s) "
        f"at {shape}: {rate:.1f} samples/s/GPU",
    )  # fmt: skip


@cache
def _benchmark(name: str) -> Mapping[str, Any] | None:
    path = BENCHMARK_DIR / name
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _gpu_benchmarks(device: str, compiled: bool) -> dict[str, Throughput]:
    """The benchmark figures measured on ``device``, by arch: compiled ones if asked (eager
    where a model has none)."""
    out: dict[str, Throughput] = {}
    for comp in dict.fromkeys((compiled, False)):
        doc = _benchmark(GPU_BENCHMARKS[comp])
        if not doc or device_name(float(doc.get("peak_tflops", 0))) != device:
            continue
        for m in doc.get("models", []):
            arch, rate = m.get("model"), float(m.get("ours_samples_per_s") or 0)
            if arch and rate > 0 and arch not in out:
                how = "torch.compile" if comp else "eager"
                out[arch] = Throughput(
                    rate, device, "benchmark",
                    f"benchmark {GPU_BENCHMARKS[comp]} ({device}, {m.get('precision')}, {how}, "
                    f"batch {m.get('batch')}): {rate:.1f} samples/s",
                )  # fmt: skip
    return out


def _cpu_benchmarks() -> dict[str, Throughput]:
    doc = _benchmark(CPU_BENCHMARK) or {}
    arch, rate = doc.get("model"), float(doc.get("ours_samples_per_s") or 0)
    if not arch or rate <= 0:
        return {}
    return {arch: Throughput(
        rate, "cpu", "benchmark",
        f"benchmark {CPU_BENCHMARK} ({arch}, {doc.get('threads')} thread(s), "
        f"{doc.get('precision')}): {rate:.1f} samples/s",
    )}  # fmt: skip


def _measured(device: str, compiled: bool) -> dict[str, Throughput]:
    """Every measured figure on ``device``, by arch (paper jobs: the median over all of an
    arch's jobs, the figure an arch without jobs of its own borrows the MFU of)."""
    if device == "cpu":
        return _cpu_benchmarks()
    if device == "A100":
        archs = dict.fromkeys(j[0] for j in paper_jobs())
        return {a: t for a in archs if (t := _paper(a, None, None)) is not None}
    return _gpu_benchmarks(device, compiled)


def _borrowed(
    arch: str, gmacs: float, peak_tflops: float, device: str, measured: dict[str, Throughput]
) -> Throughput:
    """FLOPs at the MFU measured for the arch nearest in GMACs on this device, else at
    :data:`ASSUMED_MFU`."""
    known = {a: g for a in measured if (g := arch_gmacs(a))}
    if not known:
        return _assumed(gmacs, peak_tflops, device, ASSUMED_MFU, f"{ASSUMED_MFU:.0%} MFU (assumed)")
    near = min(known, key=lambda a: abs(math.log(known[a] / gmacs)))
    mfu = measured[near].mfu(known[near], peak_tflops)
    return _assumed(gmacs, peak_tflops, device, mfu,
                    f"{mfu:.1%} MFU (assumed: the MFU measured for {near} on {device})")  # fmt: skip


def _assumed(gmacs: float, peak_tflops: float, device: str, mfu: float, why: str) -> Throughput:
    rate = mfu * peak_tflops * 1e12 / train_flops(gmacs, 1.0)
    return Throughput(
        rate, device, "assumed",
        f"training FLOPs at {why} of {peak_tflops:g} TFLOP/s: {rate:.4g} samples/s",
    )


def throughput(
    arch: str,
    gmacs: float,
    peak_tflops: float = 312.0,
    gpus: int | None = None,
    local_batch: int | None = None,
    compiled: bool = False,
    cpu: bool = False,
) -> Throughput:
    """Samples/s of one device for ``arch`` (``gmacs`` forward GMACs per pair).

    ``peak_tflops``: the device's peak (``cluster.gpu_peak_tflops``; with ``cpu=True``,
    ``cluster.cpu_peak_tflops``); ``gpus``, ``local_batch``: the job's shape (picks the paper
    jobs of the nearest GPU count, and of that per-GPU batch if one has it); ``compiled``:
    prefer a ``torch.compile`` benchmark. An arch measured on the device gets its figure;
    another gets training FLOPs at the MFU measured for the arch nearest in GMACs on that
    device; a device without measurements, FLOPs at :data:`ASSUMED_MFU`."""
    if not gmacs > 0:
        raise ValueError(f"gmacs must be positive, got {gmacs}")
    device = "cpu" if cpu else device_name(peak_tflops)
    measured = _measured(device, compiled)
    if arch in measured:
        if device == "A100":
            return _paper(arch, gpus, local_batch) or measured[arch]
        return measured[arch]
    return _borrowed(arch, gmacs, peak_tflops, device, measured)


def mfu_curve(peak_tflops: float = 312.0, compiled: bool = False,
              cpu: bool = False) -> list[tuple[str, float, float]]:  # fmt: skip
    """(arch, GMACs, MFU) of every arch measured on the device, smallest first."""
    device = "cpu" if cpu else device_name(peak_tflops)
    out = [(a, g, t.mfu(g, peak_tflops)) for a, t in _measured(device, compiled).items()
           if (g := arch_gmacs(a))]  # fmt: skip
    return sorted(out, key=lambda r: r[1])


def throughput_at(
    gmacs: float, peak_tflops: float = 312.0, compiled: bool = False, cpu: bool = False
) -> Throughput:
    """Samples/s of a model of any size (no arch): training FLOPs at the MFU interpolated in
    log GMACs between the archs measured on the device (constant beyond the smallest and the
    largest), else at :data:`ASSUMED_MFU`. For compute-optimal allocations over a continuum of
    model sizes; a grid point of a known arch is priced by :func:`throughput`."""
    curve = mfu_curve(peak_tflops, compiled, cpu)
    device = "cpu" if cpu else device_name(peak_tflops)
    if not curve:
        return _assumed(gmacs, peak_tflops, device, ASSUMED_MFU, f"{ASSUMED_MFU:.0%} MFU (assumed)")
    xs = [math.log(g) for _, g, _ in curve]
    mfu = float(np.interp(math.log(gmacs), xs, [m for _, _, m in curve]))
    span = f"{curve[0][0]} {curve[0][2]:.1%} .. {curve[-1][0]} {curve[-1][2]:.1%}"
    return _assumed(gmacs, peak_tflops, device, mfu,
                    f"{mfu:.1%} MFU (interpolated between the archs measured on {device}: {span})")


def device_hours(
    arch: str, gmacs: float, samples: float, **kw: Any
) -> tuple[float, Throughput]:
    """(device-hours to train ``samples`` pairs, the throughput that priced them); ``kw`` as
    :func:`throughput`. On GPUs the hours are GPU-hours: the job's GPUs x its wall time."""
    rate = throughput(arch, gmacs, **kw)
    return rate.hours(samples), rate


# ---- the grid's catalogue (conf/model, conf/data) -----------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """A ``conf/model`` choice: what pricing and fitting it needs."""

    name: str
    arch: str
    label: str
    gmacs: float
    global_batch: int
    local_batch: int


@dataclass(frozen=True)
class DataInfo:
    """A ``conf/data`` choice: its name, label and unique pairs."""

    name: str
    label: str
    num_samples: int


def _yaml_dir(group: str) -> list[dict[str, Any]]:
    out = []
    for path in sorted((CONF_DIR / group).glob("*.yaml")):
        doc = yaml.safe_load(path.read_text()) or {}
        if isinstance(doc, dict) and "name" in doc:
            out.append(doc)
    return out


@cache
def models() -> dict[str, ModelInfo]:
    """``conf/model/*.yaml`` by name."""
    return {
        d["name"]: ModelInfo(d["name"], d["arch"], d.get("label", d["name"]), float(d["gmacs"]),
                             int(d["global_batch"]), int(d["local_batch"]))
        for d in _yaml_dir("model")
    }  # fmt: skip


@cache
def datasets() -> dict[str, DataInfo]:
    """``conf/data/*.yaml`` by name."""
    return {
        d["name"]: DataInfo(d["name"], d.get("label", d["name"]), int(d["num_samples"]))
        for d in _yaml_dir("data")
    }


def unique_pairs(name_or_label: str) -> int | None:
    """Unique pairs of a dataset given by its ``conf/data`` name or label (``laion2b``,
    ``LAION-2B``), or None when no config has it."""
    for d in datasets().values():
        if name_or_label in (d.name, d.label):
            return d.num_samples
    return None


@cache
def arch_gmacs(arch: str) -> float | None:
    """Forward GMACs per pair of an open_clip arch (or ``conf/model`` name): the config's
    figure, else ``core/reference/arch_info.csv``'s; None if neither has it."""
    for m in models().values():
        if arch in (m.arch, m.name):
            return m.gmacs
    with open(ARCH_INFO_CSV, newline="") as f:
        for row in csv.DictReader(f):
            if row["model"] == arch:
                return float(row["gmacs"])
    return None
