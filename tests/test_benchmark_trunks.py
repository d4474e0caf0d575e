"""``benchmarks/trunk_vs_cosine.py``: the comparison it draws from two stores, and its JSON
shape from a real ``--quick`` run (one tiny point as a cosine run and as a trunk with a
branch, trained and evaluated; a 3-point cube and a 3-value dense sweep priced by the plan)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


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
