"""Load a model to evaluate from a checkpoint file, without executing code from it.

Accepted files (``torch.load(weights_only=True)``): clipscale's and open_clip_train's
checkpoints (``{"epoch", "state_dict", ...}``, DDP's ``module.`` prefix allowed) and bare
open_clip state dicts. Anything else raises ``CheckpointError`` naming the file and what is
wrong: not a torch file, no state dict inside, or weights of another architecture (missing,
unexpected and mis-shaped keys, with examples).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from core.models import quiet_model_build, register_model_configs
from training.tokens import get_tokenizer


class CheckpointError(ValueError):
    """A file that cannot be evaluated as a checkpoint of the requested architecture."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The model weights stored in ``path``; CheckpointError if it holds none."""
    path = Path(path)
    if not path.is_file():
        # open_clip would take a missing path for a pretrained *tag* and fail obscurely
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means "not a (safe) checkpoint"
        raise CheckpointError(
            f"checkpoint {path}: not a torch checkpoint loadable with weights_only=True "
            f"({_first_line(e)})"
        ) from e
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    if not isinstance(state, dict) or not state or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        what = f"keys {sorted(map(str, obj))[:8]}" if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(
            f"checkpoint {path}: holds no model state dict (found {what}; expected "
            f"open_clip's {{'state_dict': ...}} or a dict of tensors)"
        )
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _examples(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def check_fits(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, arch: str) -> None:
    """CheckpointError listing how ``state`` differs from ``model``'s own state dict."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if state[k].shape != own[k].shape
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s) ({_examples(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s) ({_examples(unexpected)})")
    if shapes:
        problems.append(f"{len(shapes)} key(s) of another shape, file vs model ({_examples(shapes)})")
    if problems:
        raise CheckpointError(
            f"checkpoint {path} does not fit architecture {arch}: {'; '.join(problems)}"
        )


def load_model(arch: str, path: str | Path, device: str) -> tuple[Any, Any, Any]:
    """open_clip model ``arch`` with the weights of ``path`` (eval mode, on ``device``), its
    validation transform and tokenizer."""
    import open_clip  # heavy: only once a model is built (a resumed evaluate() builds none)

    path = Path(path)
    state = load_state_dict(path)  # first: a bad file fails before a large model is built
    register_model_configs()  # the tiny clipscale archs
    try:
        with quiet_model_build(info=True):
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=None)
    except RuntimeError as e:
        raise ValueError(f"unknown open_clip architecture {arch!r}: {_first_line(e)}") from e
    if hasattr(model, "text") and "text_projection" in state:
        # an older CLIP-layout state dict for a CustomTextCLIP arch, as open_clip converts it
        state = open_clip.factory.convert_to_custom_text_state_dict(state)
    check_fits(model, state, path, arch)
    model.load_state_dict(state, strict=True)
    model = model.to(device).eval()
    return model, preprocess, get_tokenizer(arch)  # cached per process: same tokens
