"""Config composition, run identity and the plan, on the real conf/ tree."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from core.identity import config_hash, identity, run_id
from launcher.plan import ConfigError, check, make_point, table

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_compose_to_the_embedded_default(make_cfg):
    cfg = make_cfg()
    assert (cfg.model.name, cfg.data.name, cfg.samples.name, cfg.cluster.name) == ("tiny_s", "syn4k", "s6k", "local")
    assert cfg.data.synthetic is True
    assert cfg.data.shards.endswith("synthetic/syn4k/{00000..00003}.tar")
    assert cfg.eval.datasets[0].root.endswith("synthetic/eval/synth_shapes")
    assert not OmegaConf.missing_keys(cfg)


@pytest.mark.parametrize("model,arch,gmacs,batch", [
    ("vit_b32", "ViT-B-32", 7.4, 88064),
    ("vit_b16", "ViT-B-16", 20.57, 88064),
    ("vit_l14", "ViT-L-14", 87.73, 88704),
    ("vit_h14", "ViT-H-14", 190.97, 79104),
    ("vit_g14", "ViT-g-14", 290.74, 64000),
])
def test_paper_models_carry_reference_values(make_cfg, model, arch, gmacs, batch):
    cfg = make_cfg(f"model={model}", "data=laion400m", "samples=13B")
    assert cfg.model.arch == arch
    assert cfg.model.global_batch == batch
    ref = {r["model"]: r for r in csv.DictReader(open(ROOT / "core/reference/arch_info.csv"))}
    assert cfg.model.gmacs == pytest.approx(float(ref[arch]["gmacs"]))
    assert cfg.model.gmacs == pytest.approx(gmacs, rel=0.01)


def test_tiny_model_gmacs_match_a_flop_count(make_cfg):
    import open_clip
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from core.models import register_model_configs

    register_model_configs()
    for name in ("tiny_s", "tiny_m"):
        cfg = make_cfg(f"model={name}")
        model = open_clip.create_model(cfg.model.arch)
        tok = open_clip.get_tokenizer(cfg.model.arch)
        size = model.visual.image_size
        with FlopCounterMode(display=False) as fc:
            model(torch.zeros(1, 3, *size), tok(["a red circle"]))
        assert cfg.model.gmacs == pytest.approx(fc.get_total_flops() / 2e9, rel=0.05), name


def test_tiny_models_differ_enough_in_compute(make_cfg):
    s, m = make_cfg("model=tiny_s").model, make_cfg("model=tiny_m").model
    assert m.gmacs > 4 * s.gmacs


def test_unknown_choice_lists_valid_ones(make_cfg):
    with pytest.raises(MissingConfigException) as e:
        make_cfg("model=vit_b23")
    assert "vit_b23" in str(e.value) and "vit_b32" in str(e.value)
    with pytest.raises(MissingConfigException, match="13B"):
        make_cfg("samples=12B")


def test_unknown_key_and_wrong_type_fail_at_composition(make_cfg):
    with pytest.raises(ConfigCompositionException, match="lrr"):
        make_cfg("train.lrr=0.1")
    with pytest.raises(ConfigCompositionException, match="global_batch"):
        make_cfg("model.global_batch=many")


def test_missing_shards_named_before_anything_runs(make_cfg):
    point = make_point(["data=laion400m"], make_cfg("model=vit_b32", "data=laion400m"))
    with pytest.raises(ConfigError, match=r"data\.shards.*LAION-400M"):
        check(point)
    check(point, need_data=False)  # a dry run needs no data


def test_absent_shard_file_is_named(make_cfg, tmp_path):
    cfg = make_cfg("model=vit_b32", "data=laion400m", f"data.shards='{tmp_path}/{{00000..00009}}.tar'")
    with pytest.raises(ConfigError, match="00000.tar"):
        check(make_point([], cfg))


def test_batch_that_does_not_divide_is_refused(make_cfg):
    cfg = make_cfg("model=vit_b32", "data=laion400m", "model.global_batch=1000", "model.local_batch=256")
    with pytest.raises(ConfigError, match="model.global_batch=1000"):
        check(make_point([], cfg), need_data=False)


# ---- run identity ----------------------------------------------------------------------------

@pytest.mark.parametrize("override", [
    "root=/elsewhere", "data_root=/scratch", "train.workers=7", "train.log_every=3",
    "train.checkpoint_every=11", "train.keep_checkpoints=5", "model.local_batch=64",
    "cluster=juwels", "eval=none", "dry_run=true", "sweep=demo", "model.label=X",
    "model.gmacs=1.0", "model.grad_checkpointing=true",
])
def test_keys_that_do_not_change_the_run_id(make_cfg, override):
    assert run_id(make_cfg(override)) == run_id(make_cfg())


@pytest.mark.parametrize("override", [
    "train.lr=0.01", "train.warmup=5", "train.seed=1", "train.weight_decay=0.1",
    "train.beta2=0.95", "model.precision=amp_bf16", "model.global_batch=256",
    "samples.seen=1000", "data.num_samples=100", "data.seed=9",
])
def test_keys_that_change_the_run_id(make_cfg, override):
    assert config_hash(make_cfg(override)) != config_hash(make_cfg())


def test_run_id_is_readable_and_stable(make_cfg):
    cfg = make_cfg("model=tiny_m", "data=syn32k", "samples=s18k")
    rid = run_id(cfg)
    assert rid.startswith("tiny_m-syn32k-s18k-") and len(rid.split("-")[-1]) == 8
    assert rid == run_id(make_cfg("model=tiny_m", "data=syn32k", "samples=s18k"))
    assert "shards" not in identity(cfg)["data"] and "workers" not in identity(cfg)["train"]


# ---- the plan --------------------------------------------------------------------------------

def test_plan_derives_steps_gpus_and_compute(make_cfg):
    p = make_point([], make_cfg("model=vit_b32", "data=laion400m", "samples=13B", "cluster=juwels"))
    assert p.steps == -(-13_000_000_000 // 88064)
    assert p.gpus == 344 and p.nodes == 86 and p.accumulation == 1
    assert p.compute_gmacs == pytest.approx(7.4 * p.samples_seen)
    local = make_point([], make_cfg("model=vit_b32", "data=laion400m", "samples=13B"))
    assert local.gpus == 344  # the plan shows what the point asks for, whatever runs it
    tiny = make_point([], make_cfg())
    assert (tiny.steps, tiny.gpus, tiny.accumulation) == (48, 1, 1)
    assert "48" in table([tiny]) and "new" in table([tiny])


def test_dry_run_of_the_real_app_prints_one_row_per_point(tmp_path):
    cmd = [sys.executable, "launch.py", "-m", "model=vit_b32,vit_l14", "data=laion400m,laion2b",
           "samples=13B,34B", "dry_run=true", f"root={tmp_path}"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith(("vit_b32-", "vit_l14-"))]
    assert len(rows) == 8
    assert all(r.split()[-1] == "new" for r in rows)
    assert "total" in out.stdout and "8 points" in out.stdout
    assert "344" in out.stdout and "396" in out.stdout
    assert not any(tmp_path.iterdir()) or list(tmp_path.iterdir()) == [tmp_path / "_hydra"]


def test_typo_in_a_sweep_fails_before_anything_runs(tmp_path):
    cmd = [sys.executable, "launch.py", "-m", "model=tiny_s,tiny_x", f"root={tmp_path}"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "model/tiny_x" in out.stderr and "tiny_m" in out.stderr
    assert not [p for p in tmp_path.iterdir() if p.name != "_hydra"]


@pytest.mark.parametrize("override", ["train.lr=nan", "train.lr=-0.001", "train.beta2=inf"])
def test_optimizer_values_must_be_finite_and_non_negative(make_cfg, override):
    cfg = make_cfg("model=tiny_s", "data=syn4k", "samples=s6k", override)
    with pytest.raises(ConfigError, match=override.split("=")[0].replace(".", r"\.")):
        check(make_point([override], cfg))


def test_compile_is_on_for_the_paper_recipe_and_off_for_tiny_cpu_runs(make_cfg):
    assert make_cfg().train.compile is False  # the embedded default (train=tiny)
    assert make_cfg("model=vit_l14", "data=laion400m", "samples=13B", "train=paper").train.compile is True
