"""Linear probe on frozen image features, on CPU or GPU.

clip_benchmark's own probe asserts CUDA, so this is a small re-implementation of the same
benchmark: logistic regression (a linear layer, cross-entropy, AdamW) on L2-normalised image
features, few-shot sampling of k images per class, and the best (lr, epochs) chosen on a
validation part of the train split, then refitted on all of it and scored on the test split.
Metrics carry clip_benchmark's probe names (``lp_acc1``, ``lp_acc5``,
``lp_mean_per_class_recall``), which ``store.metric`` reads as acc1 etc.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from core.schema import Task


def probe_task(k: int) -> str:
    """Record task of a probe: ``linear_probe`` for the full train split, else
    ``linear_probe_<k>shot`` (one record per (dataset, task) keeps the store key unique)."""
    return Task.linear_probe.value if k <= 0 else f"{Task.linear_probe.value}_{k}shot"


def fewshot_indices(targets: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """Indices of ``k`` random samples per class (all of a class that has fewer); all if k<=0."""
    if k <= 0:
        return torch.arange(len(targets))
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(targets), generator=g)
    picked: dict[int, list[int]] = {}
    for i in perm.tolist():
        chosen = picked.setdefault(int(targets[i]), [])
        if len(chosen) < k:
            chosen.append(i)
    return torch.tensor(sorted(i for idx in picked.values() for i in idx), dtype=torch.long)


def _train(
    x: torch.Tensor, y: torch.Tensor, n_classes: int, lr: float, epochs: list[int], cfg: Any,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.nn.Linear, dict[int, float]]:
    """A linear classifier trained for max(epochs) epochs; validation acc1 after each of them."""
    torch.manual_seed(int(cfg.seed))
    g = torch.Generator().manual_seed(int(cfg.seed))
    model = torch.nn.Linear(x.shape[1], n_classes).to(x.device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=float(cfg.weight_decay))
    bs = int(cfg.batch_size)
    scores: dict[int, float] = {}
    for epoch in range(1, max(epochs) + 1):
        perm = torch.randperm(len(x), generator=g).to(x.device)
        for i in range(0, len(x), bs):
            idx = perm[i : i + bs]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if val is not None and epoch in epochs:
            with torch.no_grad():
                scores[epoch] = (model(val[0]).argmax(1) == val[1]).float().mean().item()
    return model, scores


def linear_probe(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
    n_classes: int, k: int, cfg: Any, device: str = "cpu",
) -> tuple[dict[str, float], dict[str, Any]]:
    """Fit and score one probe; ``cfg`` is ``eval.probe`` (lrs, epochs, weight_decay,
    batch_size, val_proportion, seed). Returns (metrics, info about the chosen setting)."""
    # heavy imports, only when a probe is fitted (not when evaluate() merely resumes)
    from clip_benchmark.metrics.zeroshot_classification import accuracy
    from sklearn.metrics import balanced_accuracy_score  # sklearn: heavy, as above

    idx = fewshot_indices(train_y, k, int(cfg.seed))
    x, y = train_x[idx].float().to(device), train_y[idx].long().to(device)
    g = torch.Generator().manual_seed(int(cfg.seed) + 1)
    perm = torch.randperm(len(x), generator=g).to(device)
    n_val = max(1, math.floor(len(x) * float(cfg.val_proportion))) if len(x) > 1 else 0
    val_idx, fit_idx = perm[:n_val], perm[n_val:]
    epochs = sorted(int(e) for e in cfg.epochs)
    best = (-1.0, float(cfg.lrs[0]), epochs[-1])
    if n_val and len(fit_idx):
        for lr in cfg.lrs:
            _, scores = _train(x[fit_idx], y[fit_idx], n_classes, float(lr), epochs, cfg,
                               val=(x[val_idx], y[val_idx]))
            for e in epochs:  # ties: the smaller lr and the fewer epochs, as they come first
                if scores[e] > best[0]:
                    best = (scores[e], float(lr), e)
    model, _ = _train(x, y, n_classes, best[1], [best[2]], cfg)
    with torch.no_grad():
        logits = model(test_x.float().to(device)).cpu()
    target = test_y.long().cpu()
    if n_classes >= 5:
        acc1, acc5 = accuracy(logits, target, topk=(1, 5))
    else:
        (acc1,), acc5 = accuracy(logits, target, topk=(1,)), float("nan")
    recall = float(balanced_accuracy_score(target.numpy(), logits.argmax(1).numpy()))
    metrics = {"lp_acc1": acc1, "lp_acc5": acc5, "lp_mean_per_class_recall": recall}
    info = {"fewshot_k": k, "probe_lr": best[1], "probe_epochs": best[2],
            "probe_val_acc1": best[0] if best[0] >= 0 else None, "probe_train_samples": len(x)}
    return metrics, info
