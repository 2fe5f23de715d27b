"""Two CPU processes (gloo) under torchrun train the same model and end with identical weights.

The test launches this file as its own worker:
    python -m torch.distributed.run --nproc_per_node=2 tests/test_ddp.py --worker OUT_DIR
Each rank writes its final state_dict, its data shard and its log to OUT_DIR; the test compares.
The workers import the package like any script does; PYTHONPATH, set in their environment
only, puts this checkout first so that they test the same code as the test process.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

REPO = Path(__file__).resolve().parents[1]


def make_net(width: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 10))


def worker(out: Path) -> None:
    from modelsurgery.images import load_fashion_mnist
    from modelsurgery.train.dist import cleanup_distributed, seed_everything, setup_distributed
    from modelsurgery.train.loader import TensorLoader
    from modelsurgery.train.loop import Trainer
    from modelsurgery.train.schedules import MultiStep

    torch.set_num_threads(1)
    info = setup_distributed()
    x, y = load_fashion_mnist("train", source="fixture")
    vx, vy = load_fashion_mnist("test", source="fixture")
    train = TensorLoader(x, y, batch_size=32, size=16, max_batches=4, flip=True)
    val = TensorLoader(vx[:201], vy[:201], batch_size=50, train=False, mean=train.mean, std=train.std)
    shard = train.indices()[: 4 * 32].tolist()   # what this rank trains on in epoch 0

    def grow(trainer, epoch):
        if epoch >= 1 and trainer.form == "pretrain":
            with torch.random.fork_rng():   # every rank builds different weights; rank 0's must win
                torch.manual_seed(100 + info.rank)
                grown = make_net(12)
            trainer.replace_model(grown, form="target")
            trainer.set_input_size(20)

    seed_everything(info.rank)
    trainer = Trainer(make_net(8), train, val, schedule=MultiStep(0.05, (2,)), seed=0, form="pretrain",
                      on_epoch_start=[grow], progress=False,
                      step_context=lambda t, e, it: contextlib.nullcontext() if torch.rand(()) < 0.5 else None,
                      log_path=out / "log.jsonl", checkpoint_path=out / "last.safetensors")
    trainer.fit(3)
    state = {k: v.detach().contiguous() for k, v in trainer.model.state_dict().items()}
    save_file(state, out / f"rank{info.rank}.safetensors")
    summary = {"shard": shard, "history": trainer.history, "world": info.world_size,
               "ddp": type(trainer.net).__name__, "accuracy": trainer.evaluate()}
    (out / f"rank{info.rank}.json").write_text(json.dumps(summary))
    cleanup_distributed()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_hold_identical_weights(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", __file__, "--worker", str(tmp_path)]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]

    weights = [load_file(tmp_path / f"rank{r}.safetensors") for r in (0, 1)]
    summaries = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert weights[0].keys() == weights[1].keys() and "0.weight" in weights[0]
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
    assert weights[0]["0.weight"].shape[0] == 12   # the grown net, swapped in on both ranks

    assert all(s["world"] == 2 and s["ddp"] == "DistributedDataParallel" for s in summaries)
    assert set(summaries[0]["shard"]).isdisjoint(summaries[1]["shard"])   # each rank its own data
    histories = [[{k: v for k, v in r.items() if k not in ("wall", "epoch_start_s")} for r in s["history"]]
                 for s in summaries]   # times differ per rank
    assert histories[0] == histories[1]   # all-reduced losses and accuracies; the same coin flips
    assert summaries[0]["accuracy"] == summaries[1]["accuracy"] > 0.1

    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]   # rank 0 alone writes the log
    assert [(r["form"], r["size"]) for r in records] == [("pretrain", 16), ("target", 20), ("target", 20)]
    assert {r["mode"] for r in records} == {"mixed"}
    checkpoint = load_file(tmp_path / "last.safetensors")
    assert all(torch.equal(checkpoint[k], v) for k, v in weights[0].items())
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "last.safetensors", "log.jsonl", "rank0.json", "rank0.safetensors", "rank1.json", "rank1.safetensors"]


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    worker(Path(sys.argv[2]))
