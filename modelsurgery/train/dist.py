"""Device choice, seeding, and torchrun / DistributedDataParallel plumbing.

Under `torchrun --nproc_per_node=N` the launcher sets RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT; `setup_distributed()` reads them and joins the process group
(nccl on CUDA, gloo otherwise). With WORLD_SIZE unset or 1 everything runs in one process
and these helpers are no-ops.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "setup_distributed", "cleanup_distributed", "dist_info", "barrier",
           "pick_device", "seed_everything", "mix_seed", "all_reduce_sum",
           "broadcast_buffers"]


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, writes checkpoints and shows progress bars."""
        return self.rank == 0


def dist_info() -> DistInfo:
    """The current rank and world size (0 and 1 without a process group)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistInfo()


def setup_distributed() -> DistInfo:
    """Join the process group described by torchrun's environment variables, once.

    Example:
        >>> info = setup_distributed()   # under torchrun: rank 0..N-1; else DistInfo(0, 1, 0)
    """
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and dist.is_available() and not dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist_info()


def cleanup_distributed() -> None:
    """Leave the process group (call at the end of a torchrun script)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum `t` over ranks in place (identity in one process)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank."""
    if dist.is_available() and dist.is_initialized():
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def pick_device(local_rank: int = 0) -> torch.device:
    """CUDA (this rank's GPU), then Apple MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python's, torch's (all devices') generators; call before building the model."""
    random.seed(seed)
    torch.manual_seed(seed)


def mix_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """One seed per (run seed, epoch, rank): what makes every epoch reproducible on its own."""
    return ((seed * 1_000_003 + epoch) * 10_007 + rank) % (2**63)
