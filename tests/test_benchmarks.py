"""The benchmark scripts (``benchmarks/``) in one place. Their CPU paths run (the GPU one is
meant for a lent H100/H200): GPU throughput's dry run, training and loader throughput, and the
loader per core against open_clip_train's (``--quick``), in their smallest settings;
``trunk_vs_cosine.py``'s comparison from two stores and its JSON shape from a real ``--quick``
run (one tiny point as a cosine run and as a trunk with a branch, trained and evaluated; a
3-point cube and a 3-value dense sweep priced by the plan); ``demo_seconds.py`` reads the
breakdown and the fits it records from run folders and a fits.csv."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

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


def _points(errors: dict[str, float]) -> pd.DataFrame:
    rows = [{"arch": "a", "data_label": "d", "samples_seen": 6144, "task": task,
             "eval_task": "zeroshot_retrieval" if "@" in metric else "zeroshot_classification",
             "metric": metric, "error": e} for (task, metric), e in
            ((tuple(k.split("|")), v) for k, v in errors.items())]
    return pd.DataFrame(rows)


def test_side_by_side_pairs_points_and_summarises():
    import trunk_vs_cosine as tvc

    cos = _points({"shapes|acc1": 0.5, "scenes|image_retrieval_recall@5": 0.6, "x|acc5": 0.1})
    trunk = _points({"shapes|acc1": 0.45, "scenes|image_retrieval_recall@5": 0.7})
    rows = tvc.side_by_side(cos, trunk)
    assert [(r["task"], r["trunk_minus_cosine"]) for r in rows] == [
        ("scenes", 0.1), ("shapes", -0.05)]  # acc5 is not compared
    close = tvc.summary(rows)
    assert close["acc1"] == {"mean_trunk_minus_cosine": -0.05, "mean_abs": 0.05, "max_abs": 0.05,
                             "trunk_better": 1, "n": 1}
    assert len(tvc.DENSE) == 10 and tvc.DENSE[0] == 3e9 and tvc.DENSE[-1] == 34e9


@pytest.mark.slow
def test_quick_run_writes_the_json_shape(tmp_path: Path):
    import trunk_vs_cosine as tvc

    out = tmp_path / "trunk_vs_cosine.json"
    result = tvc.main(["--quick", "--boot", "20", "--out", str(out)])
    assert json.loads(out.read_text()) == result
    for key in ("demo_seconds_cosine", "demo_seconds_trunk", "paper_gpu_hours_cosine",
                "paper_gpu_hours_trunk", "dense_gpu_hours_cosine", "dense_gpu_hours_trunk"):
        assert result[key] > 0, key
    assert result["paper_gpu_hours_trunk"] < result["paper_gpu_hours_cosine"]
    assert result["dense_gpu_hours_trunk"] < result["dense_gpu_hours_cosine"]
    tasks = {(r["task"], r["metric"]) for r in result["points"]}
    assert ("synth_shapes", "acc1") in tasks and ("synth_scenes", "image_retrieval_recall@5") in tasks
    assert all(r["error_cosine"] is not None and r["error_trunk"] is not None
               for r in result["points"])
    trunk_runs = result["runs"]["trunk"]["per_point"]
    assert any("-trunk-" in name for name in trunk_runs) and len(trunk_runs) == 2
    assert set(result["fits"]) == {"cosine", "trunk"}


def test_demo_seconds_reads_breakdown_and_fits(tmp_path: Path):
    import demo_seconds

    root = tmp_path / "runs"
    for name, done in (("tiny_s-syn4k-s6k-1", 10.0), ("tiny_m-syn32k-s6k-2", 20.0)):
        (root / name).mkdir(parents=True)
        evs = [{"event": "start"}, {"event": "trained", "seconds": done / 2},
               {"event": "done", "seconds": done, "seconds_data": 1.0,
                "seconds_train": done / 2 + 1, "seconds_eval": done / 2 - 2}]
        (root / name / "status.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evs))
    trunk = root / "tiny_m-syn32k-trunk-3"
    trunk.mkdir()
    (trunk / "status.jsonl").write_text(json.dumps(
        {"event": "trained", "seconds": 4.0, "seconds_data": 0.5, "seconds_train": 5.0}) + "\n")
    procs = {"syn32k": {"seconds": 40.0}, "syn4k": {"seconds": 15.0}}
    parts = demo_seconds.breakdown(root, procs)
    assert parts["training_loop"] == 19.0 and parts["evaluation"] == 11.0
    assert parts["data_generation"] == 2.5 and parts["training"] == 22.0
    assert parts["startup_per_process"] == {"syn32k": 14.5, "syn4k": 5.0}
    (tmp_path / "fits.csv").write_text(
        "family,task,metric,method,alpha,alpha_low,alpha_high,n_points\n"
        "demo,wds/synth_shapes,acc1,paper,-0.2,-0.3,-0.1,12\n"
        "demo,wds/synth_positions,acc1,paper,-0.01,-0.05,0.02,12\n")
    fits = demo_seconds.fitted_exponents(tmp_path)
    assert [f["excludes_zero"] for f in fits] == [True, False]


def test_demo_step_floor_times_each_model_over_the_grids_steps():
    import demo_seconds

    floor = demo_seconds.step_floor(timed=1)
    # sweeps/demo.yaml: 2 datasets x (6144 + 18432 + 55296 samples) / 128 a step, per model
    assert set(floor["per_model"]) == {"tiny_s", "tiny_m"}
    for m in floor["per_model"].values():
        assert m["steps"] == 2 * (48 + 144 + 432) and m["step_s"] > 0
        assert m["seconds"] == pytest.approx(m["step_s"] * m["steps"], rel=0.01)
    assert floor["seconds"] == pytest.approx(floor["cpu_seconds"] / 2, abs=0.1)
