"""Named sweeps: file format, expansion, and the paper sweep against the published runs."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest

from launcher.sweep import SweepError, combine, load_sweep

ROOT = Path(__file__).resolve().parent.parent
REF = ROOT / "core" / "reference"


def test_demo_is_the_12_point_cube():
    points = load_sweep("demo")
    assert len(points) == 12
    assert {p[0] for p in points} == {"model=tiny_s", "model=tiny_m"}


def test_paper_sweep_is_exactly_the_published_29_runs():
    points = [dict(o.split("=", 1) for o in p) for p in load_sweep("paper")]
    assert len(points) == 29
    names = {"vit_b32": "ViT-B-32", "vit_b16": "ViT-B-16", "vit_l14": "ViT-L-14",
             "vit_h14": "ViT-H-14", "vit_g14": "ViT-g-14"}
    data = {"laion80m": "80M", "laion400m": "400M", "laion2b": "2B"}
    ours = {(names[p["model"]], data[p["data"]], p["samples"]): p for p in points}
    runs = list(csv.DictReader(open(REF / "trained_models_info.csv")))
    assert len(runs) == 29
    for r in runs:
        p = ours[(r["arch"], r["data"], r["samples_seen_pretty"])]
        assert int(p["model.global_batch"]) == int(r["gpus"]) * int(r["local_bs"]), r["name"]
        assert int(p["model.local_batch"]) == int(r["local_bs"])
        assert float(p["train.lr"]) == float(r["lr"])
        assert int(p["train.warmup"]) == int(r["warmup"])
    cube = {(m, d, s) for m in ("ViT-B-32", "ViT-B-16", "ViT-L-14") for d in data.values()
            for s in ("3B", "13B", "34B")}
    assert cube | {("ViT-H-14", "2B", "34B"), ("ViT-g-14", "2B", "13B")} == set(ours)


def test_paper_sweep_is_what_its_generator_writes(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "make_paper_sweep", ROOT / "scripts" / "make_paper_sweep.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.render() == (ROOT / "sweeps" / "paper.yaml").read_text()
    assert gen.main(["--check"]) == 0
    out = tmp_path / "paper.yaml"
    out.write_text("stale\n")
    assert gen.main(["--check", "--out", str(out)]) == 1
    assert gen.main(["--out", str(out)]) == 0
    assert out.read_text() == gen.render()


def test_command_line_axes_select_and_other_keys_apply_to_all():
    sweep = load_sweep("demo")
    picked = combine(sweep, [["model=tiny_m", "train.workers=3"]])
    assert len(picked) == 6
    assert all("model=tiny_m" in p and "train.workers=3" in p for p in picked)
    assert combine(sweep, [["model=vit_b32"]]) == []


def test_blocks_union_and_duplicates_merge(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("points:\n"
                 "  - {model: [tiny_s, tiny_m], data: syn4k, samples: s6k}\n"
                 "  - {model: tiny_s, data: syn4k, samples: [s6k, s18k]}\n")
    assert len(load_sweep(str(f))) == 3


@pytest.mark.parametrize("text,match", [
    ("points: []", "non-empty"),
    ("points:\n  - {model: tiny_s, data: syn4k}\n", "samples"),
    ("points: [", "not valid YAML"),
])
def test_malformed_sweep_file_is_named(tmp_path, text, match):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(SweepError, match=match) as e:
        load_sweep(str(f))
    assert "bad.yaml" in str(e.value)


def test_unknown_sweep_lists_available():
    with pytest.raises(SweepError, match="paper"):
        load_sweep("nope")
