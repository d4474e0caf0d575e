"""The loader's fast paths against what they replace: open_clip's train transform applied to each
decoded image (``training.augment``) and ``tarfile``-based shard reading (``training.tars``).

Bit for bit wherever the crop is decoded at full scale; with JPEG draft decoding (crops at least
twice the model input), the same crops resampled differently.
"""

from __future__ import annotations

import functools
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import webdataset as wds
from open_clip.transform import PreprocessCfg, image_transform_v2
from open_clip_train.data import tarfile_to_samples_nothrow
from PIL import Image
from torchvision.transforms import RandomResizedCrop

from core.models import register_model_configs
from tests.helpers.data import write_shards
from training import augment, data
from training.tars import tar_samples

TOKENIZER = open_clip.get_tokenizer("ViT-B-32")


def _picture(rng: np.random.Generator, size: int) -> Image.Image:
    """Smooth colours plus noise: a JPEG of it has photo-like structure at any size."""
    coarse = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC))
    noisy = smooth.astype(np.int16) + rng.integers(-12, 13, smooth.shape, dtype=np.int16)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _encode(img: Image.Image, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _mixed_shards(folder: Path, size: int, n: int = 24) -> str:
    """JPEG RGB, greyscale, CMYK, PNG with alpha and palette, a truncated and a broken JPEG."""
    rng = np.random.default_rng(size)
    folder.mkdir(parents=True)
    with wds.TarWriter(str(folder / "00000.tar")) as sink:
        for i in range(n):
            img, kind = _picture(rng, size), i % 8
            sample = {"__key__": f"{i:06d}", "txt": f"a picture number {i}", "json": "{}"}
            if kind == 1:
                sample["jpg"] = _encode(img.convert("L"))
            elif kind == 2:
                sample["jpg"] = _encode(img.convert("CMYK"))
            elif kind == 3:
                sample["png"] = _encode(img.convert("RGBA"), "PNG")
            elif kind == 4:
                sample["png"] = _encode(img.convert("P"), "PNG")
            elif kind == 5 and i == 5:
                sample["jpg"] = _encode(img)[:2000]  # header fine, pixels cut: fails in load()
            elif kind == 6 and i == 6:
                sample["jpg"] = b"not an image"
            else:
                sample["jpg"] = _encode(img)
            sink.write(sample)
    return str(folder / "00000.tar")


def _batches(shards: str, preprocess, n: int, workers: int = 0, **kw) -> list:
    loader = data.make_loader(
        shards, preprocess, TOKENIZER, 8, workers, seed=3, shuffle_initial=16, **kw
    )
    it = iter(loader)
    out = [next(it) for _ in range(n)]
    del it
    return out


def _transform(size: int):
    return image_transform_v2(PreprocessCfg(size=size), is_train=True)


@pytest.mark.filterwarnings("ignore:skipping unreadable data")
@pytest.mark.parametrize(
    ("source", "model_input", "draft", "workers"),
    [(32, 32, True, 0), (256, 224, True, 0), (256, 224, True, 1), (512, 224, False, 0)],
    ids=["32px", "256px", "256px-worker", "512px-no-draft"],
)
def test_fused_transform_is_bit_identical_at_full_scale(
    tmp_path: Path, source: int, model_input: int, draft: bool, workers: int
):
    shards = _mixed_shards(tmp_path / "shards", source)
    preprocess = _transform(model_input)
    assert augment.FusedTransform.of(preprocess) is not None
    unfused = _batches(shards, lambda img: preprocess(img), 5, workers)  # not recognised
    fused = _batches(shards, preprocess, 5, workers, draft=draft)
    for (a_img, a_tok), (b_img, b_tok) in zip(unfused, fused, strict=True):
        assert torch.equal(a_img, b_img) and torch.equal(a_tok, b_tok)


@pytest.mark.filterwarnings("ignore:skipping unreadable data")
def test_draft_decoding_keeps_the_crops_and_changes_only_resampling(tmp_path: Path):
    shards = _mixed_shards(tmp_path / "shards", 512)
    preprocess = _transform(224)
    exact = torch.cat([b for b, _ in _batches(shards, preprocess, 4, draft=False)])
    reduced = torch.cat([b for b, _ in _batches(shards, preprocess, 4)])
    assert exact.shape == reduced.shape
    per_image = (exact - reduced).abs().mean(dim=(1, 2, 3))
    # Same crop boxes (a different box would differ by ~0.5 on these pictures), RNG in step.
    assert float(per_image.max()) < 0.05
    # But JPEGs (not the PNGs) were decoded at half scale: not the same pixels.
    assert float((per_image > 0).float().mean()) > 0.5


@pytest.mark.parametrize(
    "scale,ratio", [((0.9, 1.0), (3 / 4, 4 / 3)), ((0.08, 1.0), (3 / 4, 4 / 3)), ((1.0, 1.0), (1.0, 1.0))]
)
def test_crop_draws_are_torchvisions(scale, ratio):
    """The same crops and the same RNG state after, on sizes that take one attempt, ten, or
    torchvision's central-crop fallback (too narrow, too wide, one pixel)."""
    draws = augment.CropDraws.of(scale, ratio)
    sizes = [(32, 32), (256, 256), (512, 384), (300, 10), (10, 300), (1, 1), (640, 480)]
    for width, height in sizes:
        img = Image.new("RGB", (width, height))
        torch.manual_seed(width * 1000 + height)
        theirs = [RandomResizedCrop.get_params(img, scale, ratio) for _ in range(500)]
        state = torch.get_rng_state()
        torch.manual_seed(width * 1000 + height)
        ours = [draws(width, height) for _ in range(500)]
        assert ours == theirs, (width, height)
        assert torch.equal(torch.get_rng_state(), state)


def test_draft_scale_is_the_largest_that_keeps_the_model_input():
    reduction = augment.FusedTransform._reduction
    assert reduction(461, 512, 224, 224) == 2  # a 512 px source: always 1/2
    assert reduction(447, 512, 224, 224) == 1  # below 2 x 224 in one dimension: full scale
    assert reduction(1800, 1900, 224, 224) == 8
    assert reduction(1000, 900, 224, 224) == 4


@pytest.mark.filterwarnings("ignore:Unused augmentation cfg items")
def test_other_transforms_are_applied_as_they_are(tmp_path: Path):
    register_model_configs()
    _, _, val = open_clip.create_model_and_transforms("clipscale-tiny-s")  # eval transform
    assert augment.FusedTransform.of(val) is None
    jitter = image_transform_v2(
        PreprocessCfg(size=32), is_train=True, aug_cfg={"color_jitter_prob": 0.5,
                                                       "color_jitter": (0.4, 0.4, 0.4, 0.1)}
    )  # fmt: skip
    assert augment.FusedTransform.of(jitter) is None
    (images, _), *_ = _batches(write_shards(tmp_path / "s"), val, 1)
    assert images.shape == (8, 3, 32, 32)


def _tar_variants(folder: Path) -> list[str]:
    folder.mkdir()
    paths = []
    for fmt, name in [(tarfile.GNU_FORMAT, "gnu"), (tarfile.PAX_FORMAT, "pax"),
                      (tarfile.USTAR_FORMAT, "ustar")]:  # fmt: skip
        path = folder / f"{name}.tar"
        with tarfile.open(path, "w", format=fmt) as tar:
            info = tarfile.TarInfo("dir")
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
            for i in range(4):
                stem = ("d" * (60 if name == "ustar" else 130)) + f"/k{i}" if i == 1 else f"k{i}"
                for ext, payload in [("jpg", b"x" * (700 + i)), ("txt", b"hi"), ("json", b"{}")]:
                    info = tarfile.TarInfo(f"{stem}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
            for extra in ["__meta__", "ünï.txt", "K0.TXT"]:
                info = tarfile.TarInfo(extra)
                info.size = 1
                tar.addfile(info, io.BytesIO(b"1"))
        paths.append(str(path))
    with tarfile.open(folder / "c.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("a.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"1"))
    whole = (folder / "pax.tar").read_bytes()
    (folder / "cut.tar").write_bytes(whole[:3000])
    (folder / "garbage.tar").write_bytes(b"not a tar" * 200)
    return [*paths, str(folder / "c.tar.gz"), str(folder / "cut.tar"),
            str(folder / "garbage.tar"), str(folder / "missing.tar")]  # fmt: skip


def _note(seen: list[str], exn: Exception) -> bool:
    seen.append(str(exn))
    return True


def _read_both(url: str) -> tuple[list, list[list[str]]]:
    got, errors = [], []
    for read in [tarfile_to_samples_nothrow, tar_samples]:
        seen: list[str] = []
        got.append(list(read(iter([{"url": url}]), handler=functools.partial(_note, seen))))
        errors.append(seen)
    return got, errors


def test_tar_reader_yields_what_tarfile_yields(tmp_path: Path, shards: str):
    urls = _tar_variants(tmp_path / "tars") + list(data.shard_urls(shards)[0])
    for url in urls:
        got, errors = _read_both(url)
        assert got[0] == got[1], url
        assert bool(errors[0]) == bool(errors[1]), url  # an unreadable shard is reported by both
        assert all(url in e for e in errors[1]), errors  # and named
    assert json.loads(got[1][0]["json"]) is not None  # the real shards came through


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_tar_reader_on_a_shard_cut_anywhere(tmp_path: Path, fmt: int):
    path = tmp_path / "whole.tar"
    with tarfile.open(path, "w", format=fmt) as tar:
        for i in range(3):
            stem = (
                ("d" * (50 if fmt == tarfile.USTAR_FORMAT else 120)) + "/k1" if i == 1 else f"k{i}"
            )
            for ext, payload in [("jpg", b"x" * (700 + i)), ("txt", b"hi"), ("json", b"{}")]:
                info = tarfile.TarInfo(f"{stem}.{ext}")
                info.size, info.mtime = len(payload), 1.5  # a float mtime: pax headers
                tar.addfile(info, io.BytesIO(payload))
    whole = path.read_bytes()
    for cut in range(0, len(whole) + 1, 128):
        (tmp_path / "cut.tar").write_bytes(whole[:cut])
        got, errors = _read_both(str(tmp_path / "cut.tar"))
        assert got[0] == got[1], cut  # the same complete samples
        # Reported whenever tarfile reports it, and also when cut inside a header block,
        # where tarfile stops without a word.
        assert errors[1] or not errors[0], cut


def test_tar_reader_skips_the_rest_of_a_shard_at_a_bad_header(tmp_path: Path):
    write_shards(tmp_path, n_shards=1, per_shard=4)
    path = tmp_path / "00000.tar"
    with tarfile.open(path) as tar:
        fourth = tar.getmembers()[3]
    raw = bytearray(path.read_bytes())
    raw[fourth.offset_data - 512 + 10] ^= 0xFF  # a name byte of its header
    path.write_bytes(bytes(raw))
    errors: list[str] = []
    samples = list(
        tar_samples(iter([{"url": str(path)}]), handler=functools.partial(_note, errors))
    )
    assert len(errors) == 1 and "checksum" in errors[0] and str(path) in errors[0]
    assert [s["__key__"] for s in samples] == ["000000000"]  # the members before it
