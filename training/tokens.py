"""A tokenizer that remembers: the same caption is tokenized once per process.

open_clip's ``SimpleTokenizer`` spends most of a small model's loading time (BPE in Python, a
few hundred microseconds a caption). Its output depends only on the text, so a caption seen
before gets the tokens computed the first time: the same tensor values, dtype and shape. The
embedded demo sees each of its captions many times (4096 captions, up to 54k samples a
point, six points per dataset), and every evaluation tokenizes the same templates and captions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

MAX_ENTRIES = 200_000
"""Captions remembered per tokenizer; beyond that new captions are tokenized every time."""


class CachedTokenizer:
    """Wraps an open_clip tokenizer (``tokenizer(list[str]) -> LongTensor[n, context]``)."""

    def __init__(self, tokenizer: Callable[..., torch.Tensor], max_entries: int = MAX_ENTRIES):
        self.tokenizer = tokenizer
        self.max_entries = max_entries
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, texts: str | list[str], *args: Any, **kwargs: Any) -> torch.Tensor:
        if args or kwargs:  # another context length, say: not what the cache holds
            return self.tokenizer(texts, *args, **kwargs)
        if isinstance(texts, str):
            return self([texts])
        texts = list(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if missing:
            new = self.tokenizer(missing)
            if len(self.cache) + len(missing) > self.max_entries:
                fresh = {**self.cache, **dict(zip(missing, new, strict=True))}
                return torch.stack([fresh[t] for t in texts])
            self.cache.update(zip(missing, new.clone(), strict=True))
        if not texts:
            return self.tokenizer(texts)
        return torch.stack([self.cache[t] for t in texts])

    def __getattr__(self, name: str) -> Any:  # context_length, vocab_size, ... of the wrapped one
        if name == "tokenizer":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.tokenizer, name)


_BY_ARCH: dict[str, CachedTokenizer] = {}


def get_tokenizer(arch: str) -> CachedTokenizer:
    """open_clip's tokenizer of ``arch``, with a cache shared by every caller in this process."""
    if arch not in _BY_ARCH:
        import open_clip  # heavy (torch, timm): only once a tokenizer is first needed

        _BY_ARCH[arch] = CachedTokenizer(open_clip.get_tokenizer(arch))
    return _BY_ARCH[arch]
