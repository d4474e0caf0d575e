"""open_clip's training transform fused with decoding: from image bytes to the batch tensor.

:meth:`FusedTransform.of` recognises the train transform ``open_clip.create_model_and_transforms``
returns with the default augmentation, ``Compose([RandomResizedCrop, MaybeConvertMode("RGB"),
MaybeToTensor, Normalize])``, and splits it in two: :meth:`FusedTransform.crop` turns one
sample's bytes into its crop (uint8, H x W x 3, still in PIL's resampling), and
:meth:`FusedTransform.batch` turns a batch of crops into the normalised float tensor in four
passes over the whole batch, instead of a ``ToTensor`` and a ``Normalize`` per sample. For any
other transform it returns None, and the pipeline applies that transform as it is.

What stays identical to ``preprocess(decoded image)``, bit for bit:

- the crop parameters: the same ``RandomResizedCrop.get_params`` draws, from the same torch
  RNG, in the same order (:class:`CropDraws` makes them into two reused one-element tensors
  instead of six new tensors per attempt, and a crop takes up to ten attempts). They depend
  only on the image's size, which the file's header gives, so they are drawn before the pixels
  are decoded; an image that then fails to decode puts the
  RNG state back, as if the draw had not happened (the unfused pipeline skips such a sample
  before drawing);
- the pixels of every crop that is decoded at full scale: PIL decodes, converts to RGB, crops and
  resamples (``F.resized_crop``, as ``RandomResizedCrop.forward``), and the float conversion and
  normalisation are the same elementwise operations (``/ 255``, ``- mean``, ``/ std``), applied to
  a batch at once.

What differs, only where ``draft`` is on and the crop is large: a JPEG whose crop is at least
``2 x`` the model input in both dimensions (a 512 px source for a 224 px model: the crop covers
90-100 % of the area, so always) is decoded by libjpeg at 1/2, 1/4 or 1/8 scale
(``Image.draft``), the largest reduction that keeps the crop at or above the model input in both
dimensions. The crop is the same fraction of the picture, its box snapped to the reduced image's
pixel grid (by at most half a reduced pixel: one source pixel at 1/2), and it is resized by
torch's uint8 antialiased kernel (``interpolate(..., antialias=True)``: PIL's filter, rounded
within 2/255 of PIL's result, and faster), so the pixels are those of a different resampling:
libjpeg's DCT-domain reduction, then a milder bicubic (mean absolute difference on 512 px
photo-like pictures: 1.4/255, 99th percentile 9/255, the largest at sharp edges). A crop below
twice the model input (every 256 px source) is decoded at full scale and its pixels are the
unfused ones. ``draft=False`` gives the unfused pixels everywhere.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torchvision.transforms.functional as F
from open_clip.transform import MaybeConvertMode, MaybeToTensor
from PIL import Image
from torchvision.transforms import Compose, InterpolationMode, Normalize, RandomResizedCrop

REDUCTIONS = (8, 4, 2)
"""The scales libjpeg decodes at (1/8, 1/4, 1/2), largest reduction first."""
TORCH_MODES = {InterpolationMode.BICUBIC: "bicubic", InterpolationMode.BILINEAR: "bilinear"}
"""The crop's interpolations that draft decoding supports (the resize after it is torch's)."""


def _nearest(x: float) -> int:
    return math.floor(x + 0.5)


@dataclass(frozen=True)
class CropDraws:
    """``RandomResizedCrop.get_params`` for one ``scale`` and ``ratio``, with its buffers.

    The same draws from torch's global RNG in the same order, and the same arithmetic
    (``tests/test_training_fast_loader.py`` compares them with torchvision's): ``uniform_``,
    ``exp`` and ``random_`` on one-element tensors, as ``torch.empty(1).uniform_``,
    ``torch.exp`` and ``torch.randint`` compute them, but into tensors made once.
    """

    scale: tuple[float, float]
    ratio: tuple[float, float]
    log_ratio: tuple[float, float]
    """``torch.log(torch.tensor(ratio))`` (float32, as get_params computes it per call)."""
    _f: torch.Tensor = field(default_factory=lambda: torch.empty(1), repr=False, compare=False)
    _i: torch.Tensor = field(
        default_factory=lambda: torch.empty(1, dtype=torch.long), repr=False, compare=False
    )

    @classmethod
    def of(cls, scale: Sequence[float], ratio: Sequence[float]) -> CropDraws:
        log_ratio = torch.log(torch.tensor(ratio))
        return cls(
            (float(scale[0]), float(scale[1])),
            (float(ratio[0]), float(ratio[1])),
            (float(log_ratio[0]), float(log_ratio[1])),
        )

    def __call__(self, width: int, height: int) -> tuple[int, int, int, int]:
        """``(top, left, h, w)`` of a random crop of a ``width x height`` image."""
        area = height * width
        for _ in range(10):
            target_area = area * self._f.uniform_(*self.scale).item()
            aspect_ratio = self._f.uniform_(*self.log_ratio).exp_().item()
            w = int(round(math.sqrt(target_area * aspect_ratio)))
            h = int(round(math.sqrt(target_area / aspect_ratio)))
            if 0 < w <= width and 0 < h <= height:
                top = int(self._i.random_(0, height - h + 1).item())
                left = int(self._i.random_(0, width - w + 1).item())
                return top, left, h, w
        in_ratio = float(width) / float(height)  # torchvision's fallback: a central crop
        if in_ratio < min(self.ratio):
            w, h = width, int(round(width / min(self.ratio)))
        elif in_ratio > max(self.ratio):
            w, h = int(round(height * max(self.ratio))), height
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w


@dataclass(frozen=True)
class FusedTransform:
    """``RandomResizedCrop`` + ``MaybeConvertMode`` + ``MaybeToTensor`` + ``Normalize``, fused."""

    rrc: RandomResizedCrop
    mean: torch.Tensor
    """Normalisation mean, shaped to broadcast over a ``[B, C, H, W]`` batch."""
    std: torch.Tensor
    draft: bool = True
    """Decode a JPEG at reduced scale where its crop stays >= the model input (module doc)."""
    draws: CropDraws = field(init=False, repr=False, compare=False)
    """The crop draws, from ``rrc``'s scale and ratio."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "draws", CropDraws.of(self.rrc.scale, self.rrc.ratio))

    @classmethod
    def of(cls, preprocess: Any, draft: bool = True) -> FusedTransform | None:
        """The fused form of ``preprocess``, or None when it is not open_clip's train transform."""
        if type(preprocess) is not Compose:
            return None
        kinds = [type(t) for t in preprocess.transforms]
        if kinds != [RandomResizedCrop, MaybeConvertMode, MaybeToTensor, Normalize]:
            return None
        rrc, convert, _, norm = preprocess.transforms
        if convert.mode != "RGB":
            return None
        mean = torch.as_tensor(norm.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.as_tensor(norm.std, dtype=torch.float32).view(1, -1, 1, 1)
        if mean.shape[1] != 3 or std.shape[1] != 3 or bool((std == 0).any()):
            return None
        return cls(rrc, mean, std, draft and rrc.interpolation in TORCH_MODES)

    def crop(self, data: bytes) -> np.ndarray:
        """The random resized crop of the image in ``data``, RGB, ``uint8 [H, W, 3]``."""
        img: Image.Image = Image.open(io.BytesIO(data))
        full_w, full_h = img.size
        state = torch.get_rng_state()
        top, left, h, w = self.draws(full_w, full_h)
        out_h, out_w = self.rrc.size
        try:
            k = self._reduction(h, w, out_h, out_w) if self.draft else 1
            if k > 1:
                img.draft("RGB", (full_w // k, full_h // k))
            img.load()
            if img.mode != "RGB":
                img = img.convert("RGB")
        except BaseException:
            torch.set_rng_state(state)  # as if never drawn: this sample is skipped
            raise
        if img.size == (full_w, full_h):
            out = F.resized_crop(
                img, top, left, h, w, self.rrc.size, self.rrc.interpolation,
                antialias=self.rrc.antialias,
            )  # fmt: skip
        else:
            return self._reduced_crop(img, (top, left, h, w), (full_w, full_h))
        return np.array(out)  # writable: torch.from_numpy warns about read-only arrays

    def _reduced_crop(
        self, img: Image.Image, box: tuple[int, int, int, int], full: tuple[int, int]
    ) -> np.ndarray:
        """The crop ``box`` (full-scale ``top, left, h, w``) of ``img``, decoded at reduced
        scale, resized with torch's uint8 antialiased kernel (PIL's filter, faster than PIL's)."""
        top, left, h, w = box
        sx, sy = img.width / full[0], img.height / full[1]
        y0, x0 = _nearest(top * sy), _nearest(left * sx)
        y1 = min(_nearest((top + h) * sy), img.height)
        x1 = min(_nearest((left + w) * sx), img.width)
        pixels = torch.from_numpy(np.array(img)).permute(2, 0, 1).unsqueeze(0)  # channels last
        out = torch.nn.functional.interpolate(
            pixels[:, :, y0:y1, x0:x1],
            size=tuple(self.rrc.size),
            mode=TORCH_MODES[self.rrc.interpolation],
            antialias=True,
        )
        return out[0].permute(1, 2, 0).numpy()

    @staticmethod
    def _reduction(h: int, w: int, out_h: int, out_w: int) -> int:
        """The largest JPEG reduction that keeps an ``h x w`` crop >= the output size."""
        for k in REDUCTIONS:
            if h >= k * out_h and w >= k * out_w:
                return k
        return 1

    def batch(self, crops: list[np.ndarray]) -> torch.Tensor:
        """``[B, 3, H, W]`` float32: ``ToTensor`` then ``Normalize`` of each crop.

        Each crop is converted while it is in cache, into a tensor that, in a loader worker, is
        allocated in shared memory (as ``default_collate`` does): handing it to the training
        process then copies nothing.
        """
        h, w, c = crops[0].shape
        out = _empty((len(crops), c, h, w))
        mean, std = self.mean[0], self.std[0]
        for k, crop in enumerate(crops):
            o = out[k]
            o.copy_(torch.from_numpy(crop).permute(2, 0, 1))
            o.div_(255).sub_(mean).div_(std)
        return out


def _empty(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised float32 tensor, in shared memory when in a DataLoader worker."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape)
    storage = torch.empty(0)._typed_storage()._new_shared(math.prod(shape), device="cpu")
    return torch.empty(0).new(storage).view(shape)  # type: ignore[call-overload]
