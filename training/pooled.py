"""The last transformer block of each tower computed only where the tower pools.

A CLIP tower keeps one row of its last block's output: the class token of a ViT (``pool_type
'tok'``), the end-of-text token of the text transformer (``'argmax'``). Every other row of that
block is computed and thrown away, and receives no gradient. :func:`pool_last_block` makes the
towers compute the last block's attention queries, attention output and MLP for the pooled row
alone (keys and values still come from every row): the same function and the same gradients,
up to float rounding (``tests/test_pooled.py``), for a block's worth of compute. The share saved
is about a tower's last block: large for the embedded default's 2-4-layer tiny models, about
4-8 % of a 12-24-layer ViT's compute.

The towers are patched per instance (``forward`` of ``model.visual``, ``model.encode_text``), so
DDP, ``torch.compile`` and clip_benchmark's ``encode_image``/``encode_text`` all go through them;
the weights and the checkpoint format do not change. Only configurations whose forward this
module reproduces are patched (:func:`pool_last_block` says which); in any other, and whenever
a tower is asked for its tokens, open_clip's own forward runs.
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from open_clip.transformer import ResidualAttentionBlock, Transformer, VisionTransformer
from torch import nn
from torch.utils.checkpoint import checkpoint

TEXT_POOLS = ("argmax", "eos", "first", "last")
"""Text pool types whose pooled row is known before the last block (open_clip's
``text_global_pool``)."""


def _plain(transformer: Any) -> bool:
    """A batch-first open_clip ``Transformer`` of standard residual attention blocks."""
    return (
        type(transformer) is Transformer
        and transformer.batch_first
        and len(transformer.resblocks) > 0
        and all(type(r) is ResidualAttentionBlock for r in transformer.resblocks)
    )


def _blocks(transformer: Transformer, x: torch.Tensor, attn_mask: torch.Tensor | None) -> Any:
    """All blocks but the last, as ``Transformer.forward`` runs them (checkpointing included)."""
    for r in transformer.resblocks[:-1]:
        if transformer.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint(r, x, None, None, attn_mask, use_reentrant=False)
        else:
            x = r(x, attn_mask=attn_mask)
    return x


def _last_block_at(
    r: ResidualAttentionBlock, x: torch.Tensor, rows: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """Row ``rows[b]`` of block ``r``'s output for every sample ``b`` of ``x`` [B, L, D].

    ``mask``: the rows of the block's additive attention mask at ``rows`` [B, L], or None.
    """
    y = r.ln_1(x)
    batch = torch.arange(x.shape[0], device=x.device)
    query = y[batch, rows].unsqueeze(1)  # [B, 1, D]
    if mask is not None:
        # nn.MultiheadAttention's per-sample mask: [B * heads, queries, keys], batch-major.
        mask = mask.to(query.dtype).unsqueeze(1).repeat_interleave(r.attn.num_heads, dim=0)
    h = x[batch, rows].unsqueeze(1) + r.ls_1(
        r.attn(query, y, y, need_weights=False, attn_mask=mask)[0]
    )
    h = h + r.ls_2(r.mlp(r.ln_2(h)))
    return h[:, 0]


def _visual_forward(self: VisionTransformer, x: torch.Tensor) -> Any:
    if self.output_tokens:
        return type(self).forward(self, x)
    x = _blocks(self.transformer, self._embeds(x), None)
    cls = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    pooled = self.ln_post(_last_block_at(self.transformer.resblocks[-1], x, cls, None))
    # ln_post before or after pooling ('final_ln_after_pool'): the same, it normalises per row.
    return pooled @ self.proj if self.proj is not None else pooled


def _text_rows(model: CLIP, text: torch.Tensor) -> torch.Tensor:
    """The row ``text_global_pool`` takes from each sample."""
    pool = model.text_pool_type
    if pool == "argmax":
        return text.argmax(dim=-1)
    if pool == "eos":
        return (text == model.text_eos_id).int().argmax(dim=-1)
    n = text.shape[0]
    return torch.full((n,), 0 if pool == "first" else text.shape[1] - 1, device=text.device)


def _encode_text(self: CLIP, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    cast_dtype = self.transformer.get_cast_dtype()
    x = self.token_embedding(text).to(cast_dtype) + self.positional_embedding.to(cast_dtype)
    x = _blocks(self.transformer, x, self.attn_mask)
    rows = _text_rows(self, text)
    mask = self.attn_mask[rows] if self.attn_mask is not None else None
    x = self.ln_final(_last_block_at(self.transformer.resblocks[-1], x, rows, mask))
    if self.text_projection is not None:
        if isinstance(self.text_projection, nn.Linear):
            x = self.text_projection(x)
        else:
            x = x @ self.text_projection
    return F.normalize(x, dim=-1) if normalize else x


def _visual_supported(visual: Any) -> bool:
    return (
        type(visual) is VisionTransformer
        and visual.attn_pool is None
        and visual.pool_type == "tok"
        and (visual.proj is None or isinstance(visual.proj, nn.Parameter))
        and _plain(visual.transformer)
    )


def _text_supported(model: Any) -> bool:
    return (
        type(model) is CLIP
        and model.text_pool_type in TEXT_POOLS
        and (model.text_pool_type != "eos" or getattr(model, "text_eos_id", None) is not None)
        and _plain(model.transformer)
    )


def pool_last_block(model: Any) -> list[str]:
    """Make ``model``'s towers compute their last block only at the pooled row; returns the
    towers patched (``"image"``, ``"text"``), none for a model this module does not reproduce.

    ``model`` is an open_clip model before any DDP or ``torch.compile`` wrapper.
    """
    patched = []
    if _visual_supported(getattr(model, "visual", None)):
        model.visual.forward = types.MethodType(_visual_forward, model.visual)
        patched.append("image")
    if _text_supported(model):
        model.encode_text = types.MethodType(_encode_text, model)
        patched.append("text")
    return patched
