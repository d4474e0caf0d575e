"""The last block computed only at the pooled row (``training.pooled``) is open_clip's forward.

Each model is built twice from one seed, one of them patched; both see the same images and
captions, and their features and the gradients of open_clip's ``ClipLoss`` on every parameter
must agree up to float rounding.
"""

from __future__ import annotations

import copy

import open_clip
import pytest
import torch
from open_clip import ClipLoss

from core.models import register_model_configs
from training.pooled import pool_last_block

ATOL = 1e-5
"""fp32: the patched and unpatched towers differ only in the order of float operations."""


def _pair(build) -> tuple[torch.nn.Module, torch.nn.Module, list[str]]:
    torch.manual_seed(0)
    ref = build()
    ours = copy.deepcopy(ref)
    return ref, ours, pool_last_block(ours)


def _arch(name: str):
    register_model_configs()
    return lambda: open_clip.create_model(name, output_dict=True)


def _clip(text_pool: str = "argmax", grad_checkpointing: bool = False, **vision):
    vision_cfg = {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8}
    text_cfg = {"context_length": 16, "vocab_size": 1000, "width": 64, "heads": 2, "layers": 2,
                "pool_type": text_pool, "eos_id": 999}

    def build():
        model = open_clip.CLIP(32, vision_cfg={**vision_cfg, **vision}, text_cfg=text_cfg,
                               output_dict=True)
        model.set_grad_checkpointing(grad_checkpointing)
        return model

    return build


def _inputs(model: torch.nn.Module, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    size = model.visual.image_size
    images = torch.randn(batch, 3, *size, generator=g)
    length = int(model.positional_embedding.shape[0])
    vocab = int(model.token_embedding.num_embeddings)
    texts = torch.zeros(batch, length, dtype=torch.long)
    for b in range(batch):  # start, words, end (the largest id: argmax pooling finds it), pads
        n = int(torch.randint(1, length - 1, (1,), generator=g))
        texts[b, 0] = vocab - 2
        texts[b, 1:n] = torch.randint(1, vocab - 2, (n - 1,), generator=g)
        texts[b, n] = vocab - 1
    return images, texts


def _features_and_grads(model, images, texts):
    model.zero_grad(set_to_none=True)
    out = model(images, texts)
    ClipLoss()(**out).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out["image_features"].detach(), out["text_features"].detach(), grads


def _assert_same(ref, ours, batch: int) -> None:
    images, texts = _inputs(ref, batch)
    ref_img, ref_txt, ref_grads = _features_and_grads(ref, images, texts)
    img, txt, grads = _features_and_grads(ours, images, texts)
    torch.testing.assert_close(img, ref_img, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(txt, ref_txt, atol=ATOL, rtol=1e-4)
    assert grads.keys() == ref_grads.keys()  # every parameter still gets its gradient
    for name, g in ref_grads.items():
        torch.testing.assert_close(grads[name], g, atol=ATOL, rtol=1e-4, msg=name)


@pytest.mark.parametrize(
    "arch,batch", [("clipscale-tiny-s", 16), ("clipscale-tiny-m", 16), ("ViT-B-32", 2)]
)
def test_same_features_and_gradients_as_open_clip(arch: str, batch: int) -> None:
    ref, ours, patched = _pair(_arch(arch))
    assert patched == ["image", "text"]
    _assert_same(ref, ours, batch)


@pytest.mark.parametrize("text_pool", ["argmax", "eos", "first", "last"])
def test_every_text_pool_type_and_grad_checkpointing(text_pool: str) -> None:
    ref, ours, patched = _pair(_clip(text_pool, grad_checkpointing=True, final_ln_after_pool=True))
    assert patched == ["image", "text"]
    _assert_same(ref, ours, 8)


def test_in_eval_mode_without_gradients() -> None:
    ref, ours, _ = _pair(_arch("clipscale-tiny-s"))
    images, texts = _inputs(ref, 8)
    with torch.no_grad():
        a, b = ref.eval()(images, texts), ours.eval()(images, texts)
    for key in ("image_features", "text_features"):
        torch.testing.assert_close(b[key], a[key], atol=ATOL, rtol=1e-4)


def test_towers_it_does_not_reproduce_keep_open_clips_forward() -> None:
    # Average-pooled ViT: every row is pooled, nothing to leave out; the text tower still is.
    _, ours, patched = _pair(_clip(pool_type="avg"))
    assert patched == ["text"]
    assert "forward" not in vars(ours.visual)
    # A tower asked for its tokens runs open_clip's forward (all rows are needed).
    ref, ours, _ = _pair(_arch("clipscale-tiny-s"))
    ref.visual.output_tokens = ours.visual.output_tokens = True
    images, _ = _inputs(ref, 4)
    (pooled_ref, tokens_ref), (pooled, tokens) = ref.visual(images), ours.visual(images)
    assert torch.equal(pooled, pooled_ref) and torch.equal(tokens, tokens_ref)


def test_the_patched_model_copies_and_keeps_its_weights_format() -> None:
    ref, ours, _ = _pair(_arch("clipscale-tiny-s"))
    assert ours.state_dict().keys() == ref.state_dict().keys()
    twin = copy.deepcopy(ours)  # the copy's towers are bound to the copy, not to `ours`
    assert twin.visual.forward.__self__ is twin.visual and twin.encode_text.__self__ is twin
    _assert_same(ref, twin, 4)
