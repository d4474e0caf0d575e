"""The cost model (core.cost): measured figures first, each labelled; the plan prices with it."""

from __future__ import annotations

import csv
import json

import pytest

from core import cost
from core.reference import PAPER_CSV, TRAINED_MODELS_CSV
from launcher.plan import make_point, table
from launcher.sweep import load_sweep


def test_paper_figure_is_the_median_of_the_jobs_of_the_nearest_shape():
    # ViT-B/32's three jobs at 344 GPUs x 256 ran 288.6, 634.2 and 638.8 samples/s per GPU
    t = cost.throughput("ViT-B-32", 7.4, gpus=344, local_batch=256)
    assert (t.kind, t.device) == ("paper", "A100")
    assert t.samples_per_s == pytest.approx(634.2277, rel=1e-5)
    assert "median of 3 ViT-B-32 job(s) at 344 GPUs x 256" in t.source
    # per-GPU throughput falls with the job's size: 128 GPUs ran faster per GPU than 824
    small = cost.throughput("ViT-B-32", 7.4, gpus=128, local_batch=256).samples_per_s
    large = cost.throughput("ViT-B-32", 7.4, gpus=824, local_batch=96).samples_per_s
    assert small > 3 * large


def test_benchmark_figures_are_used_on_the_device_they_were_measured_on():
    eager = cost.throughput("ViT-L-14", 87.73, peak_tflops=989.0)
    compiled = cost.throughput("ViT-L-14", 87.73, peak_tflops=989.0, compiled=True)
    assert (eager.kind, eager.device, eager.samples_per_s) == ("benchmark", "H200", 592.9)
    assert compiled.samples_per_s == 801.3 and "torch.compile" in compiled.source
    # an H200 figure is never used for an A100 job, nor the paper's A100 figures on an H200
    assert cost.throughput("ViT-L-14", 87.73, peak_tflops=312.0).kind == "paper"


def test_an_unmeasured_arch_borrows_the_measured_mfu_of_the_nearest_one():
    h14 = cost.throughput("ViT-H-14", 190.97, peak_tflops=989.0)
    l14 = cost.throughput("ViT-L-14", 87.73, peak_tflops=989.0)
    assert h14.kind == "assumed" and "measured for ViT-L-14 on H200" in h14.source
    assert h14.mfu(190.97, 989.0) == pytest.approx(l14.mfu(87.73, 989.0))
    tiny_m = cost.throughput("clipscale-tiny-m", 0.02795, peak_tflops=0.1, cpu=True)
    tiny_s = cost.throughput("clipscale-tiny-s", 0.00424, peak_tflops=0.1, cpu=True)
    measured = json.loads((cost.ROOT / "benchmarks/results" / cost.CPU_BENCHMARK).read_text())
    assert tiny_s.kind == "benchmark" and tiny_s.samples_per_s == measured["ours_samples_per_s"]
    assert tiny_m.kind == "assumed" and "clipscale-tiny-s on cpu" in tiny_m.source
    assert tiny_m.samples_per_s == pytest.approx(tiny_s.samples_per_s * 0.00424 / 0.02795)


def test_a_device_without_measurements_gets_the_assumed_mfu():
    t = cost.throughput("ViT-B-32", 7.4, peak_tflops=500.0)
    assert t.kind == "assumed" and t.device == "GPU@500TF" and "15% MFU (assumed)" in t.source
    assert t.mfu(7.4, 500.0) == pytest.approx(cost.ASSUMED_MFU)
    hours, used = cost.device_hours("ViT-B-32", 7.4, 1e9, peak_tflops=500.0)
    assert hours == pytest.approx(1e9 / used.samples_per_s / 3600)
    with pytest.raises(ValueError, match="gmacs"):
        cost.throughput("ViT-B-32", 0.0)


def test_the_paper_sweep_is_priced_close_to_what_the_paper_jobs_took(make_cfg):
    """The plan's GPU-hours for sweeps/paper.yaml against the paper's own jobs (samples seen /
    whole-job samples/s x GPUs). Each point takes the median of the jobs of its shape, not its
    own job, so single points may be off; the total is within 10 % (measured: 1.030M planned
    against 1.057M taken, -2.5 %)."""
    runs = {r["name"]: r for r in csv.DictReader(open(TRAINED_MODELS_CSV))}
    seen = {r["name"]: float(r["samples_seen"]) for r in csv.DictReader(open(PAPER_CSV))}
    actual = sum(seen[n] / float(r["samples_per_sec"]) * int(r["gpus"]) / 3600
                 for n, r in runs.items())  # fmt: skip
    points = [make_point(o, make_cfg(*o, "cluster=juwels")) for o in load_sweep("paper")]
    planned = sum(p.gpu_hours for p in points)
    assert len(points) == 29 and all("paper A100 jobs" in p.cost_source for p in points)
    assert planned == pytest.approx(actual, rel=0.10)


def test_the_plan_says_which_figure_priced_each_model(make_cfg):
    points = [make_point([], make_cfg(f"model={m}", "data=laion400m", "samples=13B"))
              for m in ("vit_b32", "vit_h14")]  # fmt: skip
    text = table(points)
    assert "GPU-hours priced from (core.cost):" in text
    assert "vit_b32: paper A100 jobs" in text and "vit_h14: paper A100 jobs" in text


def test_catalogue_reads_the_config_groups():
    assert cost.models()["vit_l14"].gmacs == 87.73
    assert cost.unique_pairs("laion2b") == cost.unique_pairs("LAION-2B") == 2_320_000_000
    assert cost.unique_pairs("syn4k") == 4096 and cost.unique_pairs("nope") is None
    assert cost.arch_gmacs("ViT-G-14") == 532.92  # not a config: arch_info.csv
