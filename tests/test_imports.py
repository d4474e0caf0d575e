"""Published results of other formats imported into the store (``store.imports``, ``python -m
evaluation import``): each format's fixture (a few rows in the real column layout, under
``tests/fixtures/<format>/``), re-imports that change nothing, and malformed files refused with
their file, line and column."""

from __future__ import annotations

import csv
import gzip
import shutil
from pathlib import Path

import pytest

import store
from core.errors import UserError
from evaluation.__main__ import main
from store.export import import_paper
from store.imports import (
    FORMATS,
    ImportFormatError,
    Options,
    data_of_tag,
    import_results,
    read_results,
    samples_from_tag,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
FOLLOWUP = FIXTURES / "scaling-laws-for-comparison" / "all_results.csv.gz"
BENCHMARK = FIXTURES / "clip-benchmark"
OPENCLIP = FIXTURES / "openclip-results" / "openclip_results.csv"
PAPER = FIXTURES / "scaling-laws-openclip" / "zeroshot_results.csv"


def by_run(records):
    out: dict[str, list[dict]] = {}
    for r in records:
        out.setdefault(r["run_id"], []).append(r)
    return out


@pytest.mark.parametrize(
    ("fmt", "path", "n_records", "families"),
    [
        ("scaling-laws-openclip", PAPER, 6, {"openclip", "openai"}),
        ("scaling-laws-for-comparison", FOLLOWUP, 185,
         {"clip-datacomp-cosine", "mammut-datacomp-cosine", "clip-datacomp-const"}),
        ("clip-benchmark", BENCHMARK / "results", 6, {"openclip-laion2b"}),
        ("openclip-results", OPENCLIP, 8 * 38, {"openclip-laion2b", "openclip-datacomp_xl"}),
    ],
)  # fmt: skip
def test_every_format_becomes_valid_records_and_reimports_as_a_no_op(
    tmp_path, fmt, path, n_records, families
):
    written, unchanged, imported = import_results(fmt, path, tmp_path)
    assert (written, unchanged) == (n_records, 0)
    records, problems = store.read_records(tmp_path)
    assert len(records) == n_records and not problems
    assert {r["family"] for r in records} == families
    for r in records:
        store.check_record(r)
        assert r["compute"] == pytest.approx(r["gmacs"] * r["samples_seen"])
        assert r["gmacs"] > 0 and r["samples_seen"] > 0
        assert r["imported_from"] == fmt
        assert r["compute_unit"] == ("GMACs" if fmt == "scaling-laws-openclip" else "GFLOPs")
    assert import_results(fmt, path, tmp_path)[:2] == (0, n_records)


def test_followup_release_families_variants_checkpoints_and_profile(tmp_path):
    imported = read_results("scaling-laws-for-comparison", FOLLOWUP, Options())
    runs = by_run(imported.records)
    # GFLOPs per sample from the release's model_profile.csv (found beside the data file)
    b32 = [r for r in imported.records if r["arch"] == "mammut_ViT-B-32"]
    assert {r["gmacs"] for r in b32} == {26.91}
    # each hyper-parameter variant is a run of its own: two learning rates at ViT-B-32 1.28B
    variants = [k for k in runs if k.startswith("fu-ViT-B-32_clip-datacomp-cosine-1.28B-")]
    assert len(variants) == 2
    # cosine: the last epoch is final, an earlier one an intermediate record with its samples
    steps = sorted((r["step"], r["final"], r["samples_seen"]) for r in runs[variants[0]]
                   if r["dataset"] == "imagenet1k")  # fmt: skip
    assert steps == [(5, False, 0.64e9), (10, True, 1.28e9)]
    # const: every epoch past warm-up is a final point of its own; epoch 1 is in warm-up
    const = [r for r in imported.records if r["family"] == "clip-datacomp-const"]
    assert sorted(r["step"] for r in const) == [4, 7, 10]
    assert all(r["final"] and r["run_id"].endswith(f"-e{r['step']}") for r in const)
    assert imported.skipped == {
        "const schedule, checkpoint still in warm-up": 1,
        "no accuracy or recall metric: relaion2b": 1,
    }
    coco = next(r for r in imported.records if r["dataset"] == "mscoco_captions")
    assert coco["task"] == "zeroshot_retrieval" and "image_retrieval_recall@5" in coco["metrics"]
    only = read_results("scaling-laws-for-comparison", FOLLOWUP,
                        Options(datasets=["imagenet1k"], family="mine"))  # fmt: skip
    assert {(r["dataset"], r["family"]) for r in only.records} == {("imagenet1k", "mine")}


def test_followup_without_a_profile_asks_for_one(tmp_path):
    rows = gzip.decompress(FOLLOWUP.read_bytes()).decode().splitlines()
    reader = list(csv.DictReader(rows))
    columns = [c for c in reader[0] if c != "gflops"]
    alone = tmp_path / "data" / "all_results.csv"
    alone.parent.mkdir()
    with open(alone, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(reader[:4])
    with pytest.raises(UserError, match="give --model-profile"):
        read_results("scaling-laws-for-comparison", alone, Options())
    profile = FIXTURES / "scaling-laws-for-comparison" / "model_profile.csv"
    imported = read_results("scaling-laws-for-comparison", alone, Options(model_profile=profile))
    assert len(imported.records) == 4 and imported.records[0]["gmacs"] == 5.51


def test_clip_benchmark_samples_from_the_tag_or_the_map(tmp_path):
    imported = read_results("clip-benchmark", BENCHMARK / "results", Options())
    b32 = [r for r in imported.records if r["model"] == "ViT-B-32"]
    assert {(r["dataset"], r["task"]) for r in b32} == {
        ("imagenet1k", "zeroshot_classification"), ("mscoco_captions", "zeroshot_retrieval")}
    assert {r["samples_seen"] for r in b32} == {34e9} and {r["gmacs"] for r in b32} == {14.78}
    assert b32[0]["run_id"] == "cb-ViT-B-32-laion2b_s34b_b79k"
    # "wds/mscoco_captions" is stored under the plain name, as the reference tables have it
    assert "mscoco_captions" in {r["dataset"] for r in imported.records if r["model"] == "ViT-L-14"}
    assert imported.skipped == {
        "no samples seen in the pretrained tag and none in --samples-map: openai": 1}
    mapped = read_results("clip-benchmark", BENCHMARK / "results",
                          Options(samples_map=BENCHMARK / "samples_map.csv", family="pretrained"))  # fmt: skip
    openai = [r for r in mapped.records if r["pretrained"] == "openai"]
    assert len(openai) == 1 and openai[0]["samples_seen"] == 12.8e9
    assert {r["family"] for r in mapped.records} == {"pretrained"} and not mapped.skipped


def test_openclip_results_main_metrics_and_what_is_skipped():
    imported = read_results("openclip-results", OPENCLIP, Options())
    one = {(r["dataset"], r["task"]): r for r in imported.records
           if r["run_id"] == "ocr-ViT-B-32-laion2b_s34b_b79k"}  # fmt: skip
    assert len(one) == 38  # the Average column is not a set
    assert one[("imagenet1k", "zeroshot_classification")]["metrics"] == {"acc1": 0.6656}
    assert one[("vtab/pets", "zeroshot_classification")]["metrics"] == {"mean_per_class_recall": 0.9076}
    assert one[("mscoco_captions", "zeroshot_retrieval")]["metrics"] == {"mean_recall@1": 0.4783}
    assert one[("imagenet1k", "zeroshot_classification")]["samples_seen"] == 34e9
    # the real file's CoCa row has a garbled Average cell: not read, so the row imports
    assert any(r["model"] == "coca_ViT-L-14" for r in imported.records)
    assert set(imported.skipped) == {
        f"no samples seen in the pretrained tag and none in --samples-map: {tag} (a model)"
        for tag in ("openai", "laion400m_e32")}
    mapped = read_results("openclip-results", OPENCLIP,
                          Options(samples_map=FIXTURES / "openclip-results" / "samples_map.csv"))  # fmt: skip
    assert {r["family"] for r in mapped.records} >= {"openclip-openai", "openclip-laion400m"}


def test_the_paper_format_is_import_paper(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert import_paper(a, PAPER) == (6, 0)
    import_results("scaling-laws-openclip", PAPER, b)
    left, _ = store.read_records(a)
    right, _ = store.read_records(b)
    strip = ("imported_from", "compute_unit")
    assert [{k: v for k, v in r.items() if k not in strip} for r in right] == left


def test_tag_parsing():
    assert samples_from_tag("laion2b_s34b_b79k") == 34e9
    assert samples_from_tag("datacomp_s1.28b_b8k") == 1.28e9
    assert samples_from_tag("laion400m_e32") is None and samples_from_tag("openai") is None
    assert data_of_tag("laion2b_s34b_b79k") == "laion2b"
    assert data_of_tag("datacomp_xl_s13b_b90k") == "datacomp_xl"
    assert data_of_tag("laion400m_e32") == "laion400m"


# --- the CLI: import, the import-paper alias, malformed files ---------------------------------


def test_cli_import_and_the_import_paper_alias(tmp_path, capsys):
    rc = main(["import", "--format", "clip-benchmark", str(BENCHMARK / "results"), "--root",
               str(tmp_path), "--samples-map", str(BENCHMARK / "samples_map.csv")])  # fmt: skip
    printed = capsys.readouterr().out
    assert rc == 0 and "7 records (7 written, 0 unchanged)" in printed
    assert "families: openclip-laion2b, openclip-openai" in printed
    rc = main(["import-paper", "--root", str(tmp_path / "paper"), "--csv", str(PAPER)])
    printed = capsys.readouterr().out
    assert rc == 0 and "paper results into" in printed and "6 records written, 0 unchanged" in printed


@pytest.mark.parametrize(
    ("fmt", "path", "where"),
    [
        ("scaling-laws-openclip", "scaling-laws-openclip/malformed.csv",
         "malformed.csv, line 4, column 7 (acc1): '0.7l3' is not a number"),
        ("openclip-results", "openclip-results/malformed.csv",
         "malformed.csv, line 4, column 40 (Dollar Street): 39 fields where the header has 41"),
        ("clip-benchmark", "clip-benchmark/malformed",
         "truncated.json, line 1, column 142: invalid JSON"),
        ("clip-benchmark", "clip-benchmark/malformed_metrics.json",
         "malformed_metrics.json, line 5, column 2: 'metrics' is not an object"),
    ],
)  # fmt: skip
def test_a_malformed_file_is_refused_with_line_and_column(tmp_path, capsys, fmt, path, where):
    root = tmp_path / "runs"
    rc = main(["import", "--format", fmt, str(FIXTURES / path), "--root", str(root)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and where in err and len(err.splitlines()) == 1
    assert not root.exists()  # all or nothing: no record of a refused file


def _edited_followup(tmp_path: Path, line: int, column: str, value: str) -> Path:
    rows = list(csv.reader(gzip.decompress(FOLLOWUP.read_bytes()).decode().splitlines()))
    rows[line - 1][rows[0].index(column)] = value
    out = tmp_path / "all_results.csv"
    with open(out, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    shutil.copy(FIXTURES / "scaling-laws-for-comparison" / "model_profile.csv", tmp_path)
    return out


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("epoch", "ten", "line 3, column 6 (epoch): 'ten' is not a number"),
        ("epoch", "12", "line 3, column 6 (epoch): epoch 12 of 10: not in 1..total_epochs"),
        ("acc1", "", None),  # an empty metric is a missing metric, not an error
        ("model_simple_namespace", "ViT-B-32", "column 23 (model_simple_namespace): 'ViT-B-32' is not <model>_<type>"),
    ],
)  # fmt: skip
def test_followup_cells_are_checked(tmp_path, column, value, message):
    if message is None:
        path = _edited_followup(tmp_path, 2, column, value)
        first = read_results("scaling-laws-for-comparison", path, Options()).records[0]
        assert "acc1" not in first["metrics"] and "acc5" in first["metrics"]
        return
    path = _edited_followup(tmp_path, 3, column, value)
    with pytest.raises(ImportFormatError) as e:
        read_results("scaling-laws-for-comparison", path, Options())
    assert message in str(e.value) and str(e.value).startswith(str(path))


def test_followup_missing_column_and_options_not_read(tmp_path):
    bad = tmp_path / "all_results.csv"
    bad.write_text("model_simple_namespace,epoch\nViT-B-32_clip,1\n")
    with pytest.raises(ImportFormatError, match=r"line 1, column total_samples_seen: no column"):
        read_results("scaling-laws-for-comparison", bad, Options())
    with pytest.raises(UserError, match="--samples-map is not used"):
        read_results("scaling-laws-for-comparison", FOLLOWUP, Options(samples_map=bad))
    with pytest.raises(UserError, match="unknown format"):
        read_results("nope", FOLLOWUP, Options())
    assert set(FORMATS) == {"scaling-laws-openclip", "scaling-laws-for-comparison",
                            "clip-benchmark", "openclip-results"}  # fmt: skip


def test_followup_metrics_in_percent_are_read_as_fractions(tmp_path):
    """The release's own fitting code reads a metric >= 1 as percent (100 - x): so does ours."""
    rows = list(csv.DictReader(gzip.decompress(FOLLOWUP.read_bytes()).decode().splitlines()))
    first = next(r for r in rows if r["downstream_dataset"] == "imagenet1k")
    percent = {**first, "acc1": str(100 * float(first["acc1"])), "acc5": str(100 * float(first["acc5"]))}
    path = tmp_path / "all_results.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([first, percent])
    profile = FIXTURES / "scaling-laws-for-comparison" / "model_profile.csv"
    records = read_results("scaling-laws-for-comparison", path, Options(model_profile=profile)).records
    assert [r["metrics"]["acc1"] for r in records] == pytest.approx([float(first["acc1"])] * 2)
