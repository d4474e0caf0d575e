"""The analysis stage: the paper's fitting method on its own data, fits on synthetic power
laws, and ``python -m analysis`` on a store of records written in the store's format."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import error_points, fit_all, fit_one, load_paper, reference_frame
from analysis.__main__ import main
from analysis.fit import binned_points
from analysis.load import REFERENCE_COLUMNS, load

REPO = Path(__file__).resolve().parents[1]


def _paper_fit(task: str, metric: str, family: str, method: str = "paper") -> pd.Series:
    points, _ = error_points(load_paper(), [task])
    group = points[(points["family"] == family) & (points["metric"] == metric)]
    return pd.Series(fit_one(group, method, n_boot=0))


# --- the paper's own data --------------------------------------------------------------------


def test_paper_frame_has_reference_columns_and_families():
    df = load_paper()
    assert list(df.columns[: len(REFERENCE_COLUMNS)]) == list(REFERENCE_COLUMNS)
    coco = df[df["downstream_dataset"] == "mscoco_captions"]
    assert coco["family"].value_counts().to_dict() == {"openclip": 29, "openai": 3}
    assert np.allclose(coco["gmacs_total"], coco["gmacs"] * coco["samples_seen"], rtol=1e-6)
    assert set(coco.loc[coco["family"] == "openai", "model_label"]) == {
        "ViT-B/32",
        "ViT-B/16",
        "ViT-L/14",
    }


@pytest.mark.parametrize(
    ("task", "family", "published"),
    [
        ("mscoco_captions", "openclip", -0.08),
        ("mscoco_captions", "openai", -0.05),
        ("flickr30k", "openclip", -0.19),
        ("flickr30k", "openai", -0.10),
    ],
)
def test_paper_method_reproduces_published_retrieval_exponents(task, family, published):
    fit = _paper_fit(task, "image_retrieval_recall@5", family)
    assert round(fit["alpha"], 2) == pytest.approx(published, abs=0.005)
    # OpenCLIP: 29 runs binned to 5 envelope points; OpenAI: a plain line through 3 models.
    expected = ("binned", 29, 5) if family == "openclip" else ("lstsq", 3, 3)
    assert (fit["fit_kind"], fit["n_points"], fit["n_fit"]) == expected
    assert fit["alpha_low"] < fit["alpha"] < fit["alpha_high"]


def test_paper_method_imagenet_exponents():
    """What the method gives on ImageNet top-1 error (the paper's Figure 1a: -0.11 vs -0.16)."""
    openclip = _paper_fit("imagenet1k", "acc1", "openclip")
    openai = _paper_fit("imagenet1k", "acc1", "openai")
    assert round(openclip["alpha"], 2) == pytest.approx(-0.11, abs=0.005)
    assert round(openai["alpha"], 2) == pytest.approx(-0.16, abs=0.005)
    assert openclip["A"] == pytest.approx(5.86, abs=0.01)
    assert openai["A"] == pytest.approx(23.18, abs=0.01)


def test_ols_on_paper_data_is_flatter_than_envelope_for_openclip():
    """OLS averages over under-trained runs; the envelope follows the best model per compute."""
    paper = _paper_fit("imagenet1k", "acc1", "openclip", "paper")
    ols = _paper_fit("imagenet1k", "acc1", "openclip", "ols")
    assert ols["n_fit"] == 29
    assert ols["alpha"] == pytest.approx(-0.101, abs=0.001)
    assert ols["alpha_low"] < ols["alpha"] < ols["alpha_high"]
    assert paper["alpha"] < ols["alpha"]


# --- the methods on synthetic data -----------------------------------------------------------


def test_binned_points_takes_the_minimum_per_bin_at_its_centre():
    # [0, 2 + 0.1] in 5 bins of 0.42; the bin [0.84, 1.26) is empty and left out.
    x = np.array([0.0, 0.1, 0.5, 1.3, 1.6, 2.0])
    y = np.array([5.0, 4.0, 3.0, 2.0, 2.5, 1.0])
    centres, mins = binned_points(x, y)
    assert np.allclose(centres, [0.21, 0.63, 1.47, 1.89])
    assert np.allclose(mins, [4.0, 3.0, 2.0, 1.0])


def _frame(compute, error, family="synthetic"):
    return pd.DataFrame(
        {
            "family": family,
            "task": "t",
            "eval_task": "zeroshot_classification",
            "metric": "acc1",
            "compute": compute,
            "error": error,
        }  # fmt: skip
    )


def test_paper_method_recovers_the_lower_envelope():
    """The envelope is an exact power law at the bin centres; worse runs above it are ignored."""
    alpha, A = -0.12, 3.0
    # The envelope runs sit at log10 C = 10.1, 10.3, ..., 10.9 and a worse run at 10.0, so the
    # range [10.0, 10.9 + 0.1] splits into 5 bins of 0.2 centred exactly on the envelope runs.
    centres = np.array([10.1, 10.3, 10.5, 10.7, 10.9])
    rng = np.random.default_rng(1)
    worse_x = np.r_[10.0, rng.uniform(10.0, 10.9, 40)]
    # Each worse run is above the envelope at its bin's centre (error falls with compute).
    worse_e = A * (10 ** (worse_x - 0.2)) ** alpha * rng.uniform(1.05, 1.6, worse_x.size)
    pts = _frame(10 ** np.r_[centres, worse_x], np.r_[A * (10**centres) ** alpha, worse_e])
    fit = fit_one(pts, "paper", n_boot=200)
    assert fit["fit_kind"] == "binned" and fit["n_fit"] == 5
    assert fit["alpha"] == pytest.approx(alpha, abs=1e-9)
    assert fit["A"] == pytest.approx(A, rel=1e-6)
    assert fit["boot_alpha_low"] <= fit["boot_alpha_high"]
    ols = fit_one(pts, "ols", n_boot=0)
    assert abs(ols["alpha"] - alpha) > 1e-3  # OLS is pulled by the runs above the envelope


def test_ols_recovers_a_known_exponent_within_its_interval():
    alpha, A = -0.15, 2.0
    rng = np.random.default_rng(0)
    compute = np.logspace(3, 9, 40)
    error = A * compute**alpha * 10 ** rng.normal(0, 0.03, compute.size)
    fit = fit_one(_frame(compute, error), "ols", n_boot=300)
    assert fit["alpha_low"] <= alpha <= fit["alpha_high"]
    assert fit["alpha_high"] - fit["alpha_low"] < 0.02
    assert fit["A_low"] <= A <= fit["A_high"]
    assert fit["boot_alpha_low"] <= alpha <= fit["boot_alpha_high"]


def test_fit_reports_why_it_cannot_fit():
    fits, problems = fit_all(
        pd.concat([_frame([1e3], [0.5], "one"), _frame([1e3, 1e3], [0.5, 0.4], "flat")]),
        n_boot=0,
    )
    assert fits["alpha"].isna().all() and len(fits) == 4
    assert any("family one" in p and "1 point" in p for p in problems)
    assert any("family flat" in p and "one compute" in p for p in problems)


# --- the CLI on a store of records -----------------------------------------------------------

MODELS = {"tiny_s": ("Tiny-S", "clipscale-tiny-s", 0.00424), "tiny_m": ("Tiny-M", "clipscale-tiny-m", 0.0121)}  # fmt: skip
DATA = {"syn4k": ("Synth-4k", 4096), "syn32k": ("Synth-32k", 32768)}
SAMPLES = {"s6k": 6144, "s18k": 18432, "s54k": 55296}


def record(run_id, model, data, samples, dataset, task, metrics, step, final, family="demo"):
    """A record with every key store requires, as the evaluation stage writes it."""
    label, arch, gmacs = MODELS[model]
    seen = SAMPLES[samples] if final else SAMPLES[samples] // 2
    return {
        "dataset": dataset, "model": arch, "pretrained": f"runs/{run_id}/checkpoints/x.pt",
        "task": task, "metrics": metrics, "language": "en", "schema_version": 1,
        "run_id": run_id, "model_name": model, "model_label": label, "arch": arch,
        "data": data, "data_label": DATA[data][0], "samples": samples, "samples_seen": seen,
        "gmacs": gmacs, "compute": gmacs * seen, "step": step, "final": final,
        "family": family, "config_hash": "abc123", "git_commit": "deadbeef",
        "eval_seconds": 1.5, "created": "2025-01-01T00:00:00Z",
    }  # fmt: skip


def write_record(root: Path, rec: dict) -> Path:
    path = root / rec["run_id"] / "eval" / f"step_{rec['step']:08d}"
    path = path / f"{rec['dataset'].replace('/', '_')}__{rec['task']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec))
    return path


def fake_sweep(root: Path, family: str = "demo", classification: str = "wds/synth_shapes") -> int:
    """2 models x 2 data x 3 samples, error = power law of compute, capped by data size.

    Datasets are named as clip_benchmark names local sets (``wds/<name>``), as the
    evaluation stage records them; the analysis calls them by the bare name.
    """
    rng = np.random.default_rng(0)
    n = 0
    for model in MODELS:
        for data, (_, size) in DATA.items():
            for samples, seen in SAMPLES.items():
                run = f"{model}-{data}-{samples}-{family}"
                compute = MODELS[model][2] * seen
                floor = 0.3 * (size / 4096) ** -0.2  # the data bottleneck
                err = floor + 1.2 * compute**-0.3 * 10 ** rng.normal(0, 0.01)
                for step, final in ((seen // 256, False), (seen // 128, True)):
                    e = err if final else min(0.95, err * 1.2)
                    cls = {"acc1": 1 - e, "acc5": min(1.0, 1.5 - e), "mean_per_class_recall": 1 - e}
                    ret = {
                        "image_retrieval_recall@5": 1 - e,
                        "text_retrieval_recall@5": 1 - 0.9 * e,
                    }
                    for dataset, task, metrics in (
                        (classification, "zeroshot_classification", cls),
                        ("wds/synth_scenes", "zeroshot_retrieval", ret),
                    ):
                        rec = record(run, model, data, samples, dataset, task, metrics, step, final, family)  # fmt: skip
                        write_record(root, rec)
                n += 1
    return n


def test_cli_end_to_end_on_a_store(tmp_path):
    root, out = tmp_path / "runs", tmp_path / "report"
    assert fake_sweep(root) == 12
    proc = subprocess.run(
        [sys.executable, "-m", "analysis", "--source", "store", "--root", str(root),
         "--out", str(out), "--bootstrap", "100"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "synth_shapes" in proc.stdout and "alpha=" in proc.stdout

    fits = pd.read_csv(out / "fits.csv")
    for col in ("family", "task", "metric", "method", "A", "alpha", "alpha_low", "alpha_high", "n_points"):  # fmt: skip
        assert col in fits.columns
    got = set(zip(fits["task"], fits["metric"], fits["method"], strict=True))
    assert got == {
        (t, m, meth)
        for t, m in (
            ("synth_shapes", "acc1"),
            ("synth_scenes", "image_retrieval_recall@5"),
            ("synth_scenes", "text_retrieval_recall@5"),
        )
        for meth in ("paper", "ols", "saturating")
    }
    assert (fits["family"] == "demo").all() and (fits["n_points"] == 12).all()
    assert (fits["alpha"] < 0).all()
    # fake_sweep's errors have a data-size floor: the saturating law finds one
    sat = fits[fits["method"] == "saturating"]
    assert (sat["E_inf"] > 0.1).all()
    paper = fits[fits["method"] == "paper"]
    assert (paper["fit_kind"] == "binned").all()

    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 6  # scaling, bottleneck, learning x 2 tasks
    assert "Do the families scale differently?" in page and "Held-out check" in page
    assert 'src="http' not in page and "<link" not in page  # self-contained
    points = pd.read_csv(out / "points.csv")
    assert len(points) == 36  # 12 final runs x 3 (task, metric): intermediate steps left out
    for name in ("synth_shapes", "synth_scenes"):
        for stem in (f"scaling_{name}", f"bottleneck_{name}"):
            for ext in ("png", "svg"):
                assert (out / f"{stem}.{ext}").stat().st_size > 1000
        # 12 runs evaluated at an intermediate step and at the end: a learning curve each
        assert (out / f"learning_{name}.png").stat().st_size > 1000
        table = pd.read_csv(out / f"table_{name}.csv")
        assert len(table) == 12 and {"model_label", "data_label", "samples_seen_pretty"} <= set(table.columns)  # fmt: skip
        assert (out / f"table_{name}.md").read_text().startswith("| family | model |")


def test_both_sources_overlay_the_paper(tmp_path, capsys):
    root, out = tmp_path / "runs", tmp_path / "report"
    fake_sweep(root, classification="wds/imagenet1k")
    rc = main(["--source", "both", "--root", str(root), "--out", str(out), "--tasks", "imagenet1k",
               "--bootstrap", "0", "--no-plots"])  # fmt: skip
    assert rc == 0
    fits = pd.read_csv(out / "fits.csv")
    assert set(fits["family"]) == {"openclip", "openai", "demo"}
    assert set(fits["task"]) == {"imagenet1k"}
    openclip = fits[(fits["family"] == "openclip") & (fits["method"] == "paper")]
    assert round(openclip["alpha"].item(), 2) == -0.11


def test_reference_frame_matches_reference_layout():
    rec = record("r", "tiny_s", "syn4k", "s6k", "wds/synth_shapes", "zeroshot_classification",
                 {"acc1": 0.5, "acc5": None}, 48, True)  # fmt: skip
    newer = {**rec, "metrics": {"acc1": 0.6}, "created": "2025-02-01T00:00:00Z"}
    df = reference_frame([newer, rec])
    assert len(df) == 1  # a re-evaluated checkpoint: the newest record wins
    row = df.iloc[0]
    assert row["downstream_dataset"] == "synth_shapes"
    assert row["acc1"] == 0.6 and math.isnan(row["acc5"])
    assert row["gmacs_total"] == pytest.approx(0.00424 * 6144)
    assert (row["upstream_dataset"], row["model_label"], row["family"]) == ("Synth-4k", "Tiny-S", "demo")  # fmt: skip


# --- bad input: a message, partial output, no traceback ----------------------------------------


def test_empty_store_says_so_and_fails(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    rc = main(["--source", "store", "--root", str(tmp_path / "runs"), "--out", str(tmp_path / "o")])
    printed = capsys.readouterr().out
    assert rc == 1
    assert "no evaluation records" in printed and "nothing written" in printed
    assert not (tmp_path / "o" / "fits.csv").exists()


def test_missing_store_root_says_so(tmp_path, capsys):
    rc = main(["--source", "store", "--root", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert rc == 1
    assert "is not a directory" in capsys.readouterr().out


def test_only_intermediate_checkpoints_are_not_fit(tmp_path, capsys):
    root = tmp_path / "runs"
    rec = record("r1", "tiny_s", "syn4k", "s6k", "synth_shapes", "zeroshot_classification",
                 {"acc1": 0.5}, 10, False)  # fmt: skip
    write_record(root, rec)
    write_record(root, {**rec, "step": 20, "samples_seen": 2 * rec["samples_seen"],
                        "metrics": {"acc1": 0.6}})  # fmt: skip
    out = tmp_path / "o"
    rc = main(["--source", "store", "--root", str(root), "--out", str(out)])
    printed = capsys.readouterr().out
    assert "no final-checkpoint record" in printed and "r1" in printed
    assert "nothing to fit" in printed
    # a sweep in progress: no fits, but its learning curves and a page that says why
    assert rc == 0 and not (out / "fits.csv").exists()
    assert (out / "learning_synth_shapes.png").stat().st_size > 1000
    page = (out / "report.html").read_text()
    assert "nothing to fit" in page and "data:image/png;base64," in page


def test_single_point_writes_what_it_can(tmp_path, capsys):
    root, out = tmp_path / "runs", tmp_path / "o"
    rec = record("r1", "tiny_s", "syn4k", "s6k", "synth_shapes", "zeroshot_classification",
                 {"acc1": 0.5}, 48, True)  # fmt: skip
    write_record(root, rec)
    rc = main(["--source", "store", "--root", str(root), "--out", str(out), "--bootstrap", "0"])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "family demo, task synth_shapes, metric acc1 (paper, ols): 1 point(s)" in printed
    fits = pd.read_csv(out / "fits.csv")
    assert len(fits) == 2 and fits["alpha"].isna().all()
    assert (out / "points.csv").exists() and (out / "scaling_synth_shapes.png").exists()
    page = (out / "report.html").read_text()
    assert "1 point(s)" in page and "data:image/png;base64," in page


def edit_records(root: Path, run: str, dataset: str, edit) -> None:
    """Apply ``edit`` to the metrics dict of every record of ``run`` on ``dataset``."""
    for path in root.glob(f"{run}/eval/*/*{dataset}__*.json"):
        rec = json.loads(path.read_text())
        edit(rec["metrics"])
        path.write_text(json.dumps(rec))


def test_missing_metrics_nans_and_bad_files_are_reported(tmp_path, capsys):
    root, out = tmp_path / "runs", tmp_path / "o"
    fake_sweep(root)
    # One run lost its text-retrieval metric, one's accuracy is NaN (stored as null), one's
    # accuracy is a percentage.
    edit_records(root, "tiny_s-syn4k-s6k-demo", "synth_scenes",
                 lambda m: m.pop("text_retrieval_recall@5"))  # fmt: skip
    edit_records(root, "tiny_m-syn4k-s6k-demo", "synth_shapes", lambda m: m.update(acc1=None))
    edit_records(root, "tiny_m-syn32k-s6k-demo", "synth_shapes",
                 lambda m: m.update(acc1=100 * m["acc1"]))  # fmt: skip
    broken = root / "broken-run" / "eval" / "step_00000001" / "synth_shapes__zeroshot_classification.json"  # fmt: skip
    broken.parent.mkdir(parents=True)
    broken.write_text('{"dataset": "synth_sha')
    rc = main(["--source", "store", "--root", str(root), "--out", str(out), "--bootstrap", "0",
               "--no-plots"])  # fmt: skip
    printed = capsys.readouterr().out
    assert rc == 0
    assert "family demo, task synth_scenes, metric text_retrieval_recall@5: 1 of 12" in printed
    assert "family demo, task synth_shapes, metric acc1: 1 of 12" in printed
    assert "family demo, task synth_shapes, metric acc1: 1 results outside [0, 1]" in printed
    assert "broken-run" in printed
    fits = pd.read_csv(out / "fits.csv").set_index(["task", "metric", "method"])
    assert fits.loc[("synth_scenes", "text_retrieval_recall@5", "ols"), "n_points"] == 11
    assert fits.loc[("synth_scenes", "image_retrieval_recall@5", "ols"), "n_points"] == 12
    assert fits.loc[("synth_shapes", "acc1", "ols"), "n_points"] == 10
    assert fits["alpha"].notna().all()


def test_unknown_task_is_named(tmp_path, capsys):
    rc = main(["--source", "paper", "--out", str(tmp_path / "o"), "--tasks", "imagenet1k",
               "no_such_set", "--bootstrap", "0", "--no-plots"])  # fmt: skip
    assert rc == 0
    assert "task no_such_set: no final results" in capsys.readouterr().out


def test_without_intermediate_records_no_learning_figure_is_drawn(tmp_path, capsys):
    root, out = tmp_path / "runs", tmp_path / "o"
    for model in MODELS:
        for samples, seen in SAMPLES.items():
            acc = 1 - 0.9 * (MODELS[model][2] * seen) ** -0.1
            write_record(root, record(f"{model}-{samples}", model, "syn4k", samples,
                                      "wds/synth_shapes", "zeroshot_classification",
                                      {"acc1": acc}, 48, True))  # fmt: skip
    rc = main(["--source", "store", "--root", str(root), "--out", str(out), "--bootstrap", "0"])
    printed = capsys.readouterr().out
    assert rc == 0 and (out / "scaling_synth_shapes.png").exists()
    assert not list(out.glob("learning_*")) and "learning" not in printed
    assert "learning curves" not in (out / "report.html").read_text()


def test_cooled_trunk_branches_are_a_family_of_their_own(tmp_path):
    """Records carry their schedule: const_cooldown branches are fitted as ``demo:const_cooldown``
    beside the cosine ``demo`` points, never mixed into one fit."""
    root = tmp_path / "runs"
    fake_sweep(root)
    for path in list(root.rglob("*.json")):  # the same grid once more, as cooled branches
        rec = json.loads(path.read_text())
        cooled = {**rec, "run_id": rec["run_id"] + "-cd", "schedule": "const_cooldown",
                  "trunk_id": "trunk-" + rec["model_name"]}  # fmt: skip
        write_record(root, cooled)
    df, problems = load("store", root)
    assert not problems
    assert df.groupby("family")["schedule"].unique().map(list).to_dict() == {
        "demo": ["cosine"], "demo:const_cooldown": ["const_cooldown"]}
    points, _ = error_points(df, ["synth_shapes"])
    fits, _ = fit_all(points, methods=("ols",), n_boot=50)
    assert set(fits["family"]) == {"demo", "demo:const_cooldown"}
    assert (fits["n_points"] == 12).all()
