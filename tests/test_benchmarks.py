"""The benchmark scripts' CPU paths run (the GPU one is meant for a lent H100/H200): GPU
throughput's dry run, training and loader throughput, and the loader per core against
open_clip_train's (``--quick``), in their smallest settings."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


def test_gpu_throughput_dry_run_on_cpu(tmp_path: Path):
    import gpu_throughput

    out = tmp_path / "gpu.json"
    result = gpu_throughput.main(["--dry-run", "--out", str(out)])
    assert json.loads(out.read_text()) == result
    (m,) = result["models"]
    assert m["model"] == "clipscale-tiny-s" and m["ours_samples_per_s"] > 0
    assert m["open_clip_train_samples_per_s"] > 0 and 0 < m["ours_mfu"] < 1 and m["ratio"] > 0


def test_train_throughput_writes_the_json_shape(tmp_path: Path):
    import train_throughput

    out = tmp_path / "cpu.json"
    argv = [
        "--steps",
        "4",
        "--warmup",
        "1",
        "--rounds",
        "1",
        "--batch",
        "16",
        "--samples",
        "256",
        "--workers",
        "0",
        "--out",
        str(out),
    ]
    result = train_throughput.main(argv)
    assert json.loads(out.read_text()) == result
    assert {
        "model",
        "batch",
        "ours_samples_per_s",
        "open_clip_train_samples_per_s",
        "ratio",
    } <= set(result)
    assert result["batch"] == 16 and result["ratio"] > 0


def test_loader_throughput_benchmark_runs(tmp_path: Path):
    import loader_throughput

    out = tmp_path / "loader.json"
    args = ["--samples", "40", "--workers", "0", "--batch", "8", "--batches", "2", "--warmup", "1"]
    args += ["--rounds", "1"]
    result = loader_throughput.main([*args, "--out", str(out)])
    assert json.loads(out.read_text()) == result
    assert result["image_size"] == 224 and result["workers"] == [0]
    assert result["samples_per_s"][0] > 0 and result["samples_per_s_per_worker"][0] > 0


def test_loader_per_core_quick_mode_writes_both_sizes(tmp_path: Path):
    import loader_per_core

    out = tmp_path / "per_core.json"
    result = loader_per_core.main(["--quick", "--out", str(out)])
    assert json.loads(out.read_text()) == result
    for size in ("256", "512"):
        entry = result[size]
        assert entry["ours"] > 0 and entry["open_clip_train"] > 0
        assert entry["ratio"] == round(entry["ours"] / entry["open_clip_train"], 3)
        assert [len(entry["rounds"][k]) for k in ("ours", "open_clip_train")] == [1, 1]
    assert result["model_input"] == 224 and result["load_average"]["after"]
