"""The run's processes: the device, the process group, and the checks that the ranks agree.

With torch.distributed's variables set (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``, as torchrun and SLURM launchers set them) a run is one of
``WORLD_SIZE`` processes (gloo on CPU, nccl on GPU) and the model runs in DDP; else it is one
process.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    """This process's place among the run's processes."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def pick_device() -> torch.device:
    """The process's GPU (``LOCAL_RANK``) when there is one, else the CPU."""
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def init_distributed(device_type: str) -> Dist:
    """Join the process group when torch.distributed's variables are set; else one process."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return Dist()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return Dist(rank, world, int(os.environ.get("LOCAL_RANK", 0)))


def wrap(model: Any, dist_: Dist, device: torch.device) -> Any:
    """``model`` in DDP when the run has several processes (else ``model`` itself)."""
    if dist_.world == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def barrier(dist_: Dist) -> None:
    """Wait for every rank (nothing to wait for in a one-process run)."""
    if dist_.world > 1:
        dist.barrier()


def any_rank(flag: bool, dist_: Dist, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any rank."""
    return any_ranks((flag,), dist_, device)[0]


def any_ranks(flags: Sequence[bool], dist_: Dist, device: torch.device) -> tuple[bool, ...]:
    """:func:`any_rank` of several flags in one collective (one host sync)."""
    if dist_.world == 1:
        return tuple(flags)
    t = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return tuple(bool(v) for v in t.tolist())


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a model's state dict, bit for bit (names and bytes, in name order); the
    ``state_dict`` of a checkpoint gives the same digest as the model it was saved from."""
    h = hashlib.sha256()
    for name, t in sorted(state_dict.items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def rank_report(state_dict: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    """Every rank's node and final-weights digest (of ``state_dict``, this rank's weights),
    gathered on every rank. DDP keeps the replicas identical; a difference means the ranks
    diverged (raises RuntimeError)."""
    node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    mine = {"rank": dist.get_rank(), "node": node, "weights_sha256": weights_digest(state_dict)}
    ranks: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(ranks, mine)
    if len({r["weights_sha256"] for r in ranks}) > 1:
        raise RuntimeError(f"the ranks' final weights differ: {ranks}")
    return ranks
