"""Two processes on CPU (gloo): DDP, ClipLoss(local_loss, gather_with_grad), per-rank streams."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import torch
from omegaconf import OmegaConf

from tests.helpers.data import write_shards
from tests.helpers.procs import spawn_python
from tests.helpers.training import make_cfg
from training import checkpoint
from training.metrics import LOG_FILE

CHILD = """
import torch
torch.set_num_threads(1)
from omegaconf import OmegaConf
from training.state import Run
from training.step import unwrap
from training.train import train
real_result = Run.result
def result(self, path):
    # Each rank keeps its own weights, to compare the ranks with each other.
    torch.save(unwrap(self.model).state_dict(), {out!r} + f"/rank{{self.dist.rank}}.pt")
    return {{**real_result(self, path), "accum": self.plan.accum, "world": self.plan.world}}
Run.result = result
out = train(OmegaConf.load({cfg!r}), {run_dir!r})
print("RANKS", len(out["ranks"]), len({{r["weights_sha256"] for r in out["ranks"]}}))
print("RESULT", out["accum"], out["world"], out["step"])
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_end_with_identical_weights(tmp_path: Path):
    steps = 4
    cfg = make_cfg(
        write_shards(tmp_path / "shards"),
        model__global_batch=32,
        model__local_batch=8,  # 2 processes x 8 x accumulation 2
        samples__seen=32 * steps,
        train__log_every=1,
    )
    OmegaConf.save(cfg, tmp_path / "cfg.yaml")
    code = CHILD.format(
        out=str(tmp_path), cfg=str(tmp_path / "cfg.yaml"), run_dir=str(tmp_path / "run")
    )
    port = str(_free_port())
    procs = [spawn_python(code, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=port) for rank in (0, 1)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
        assert out.strip().splitlines()[-2:] == ["RANKS 2 1", f"RESULT 2 2 {steps}"]

    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    final = checkpoint.load(checkpoint.final(tmp_path / "run"))
    assert final["step"] == steps and final["samples_seen"] == 32 * steps
    for k in w0:
        assert torch.equal(final["state_dict"][k], w0[k]), k  # rank 0 wrote the checkpoint
    lines = (tmp_path / "run" / LOG_FILE).read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == list(range(1, steps + 1))  # rank 0 only
    record = json.loads(lines[-1])
    assert record["samples_per_s_per_gpu"] * 2 == record["samples_per_s"]
