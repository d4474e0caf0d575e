"""The paper's published tables (``core/reference/*.csv``, see its README) and the names the
paper spells things with. Every stage that reads a reference file or writes a label takes it
from here."""

from __future__ import annotations

from pathlib import Path

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
PAPER_CSV = REFERENCE_DIR / "zeroshot_results.csv"
"""Per-model, per-downstream-dataset results of the paper's 29 runs and 3 OpenAI models."""
TRAINED_MODELS_CSV = REFERENCE_DIR / "trained_models_info.csv"
"""The paper's 29 training runs and their hyper-parameters (``sweeps/paper.yaml`` source)."""
ARCH_INFO_CSV = REFERENCE_DIR / "arch_info.csv"
MODEL_PROFILE_CSV = REFERENCE_DIR / "model_profile.csv"


def model_label(arch: str) -> str:
    """``ViT-B-32`` -> ``ViT-B/32``, as the paper's figures spell it (other names unchanged)."""
    head, _, tail = arch.rpartition("-")
    return f"{head}/{tail}" if head and tail.isdigit() else arch
