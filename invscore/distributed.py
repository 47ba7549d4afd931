"""Sharding a run over ``torchrun`` processes: detect the launcher, join its process group, pass objects.

``torchrun --nproc_per_node=N -m invscore evaluate …`` starts N copies of the CLI with ``WORLD_SIZE``,
``RANK`` and ``LOCAL_RANK`` in their environment. :func:`shard` joins the process group (gloo on CPU,
nccl on CUDA, each process on ``cuda:LOCAL_RANK``) and leaves it at the end; without those variables it
is a one-process shard and nothing is initialised. Objects go through ``torch.distributed``'s pickling
collectives, so per-image metric rows arrive on rank 0 as the exact floats computed elsewhere.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

__all__ = ["Shard", "launched", "main_process", "local_world_size", "shard"]


@dataclass(frozen=True)
class Shard:
    """This process's place in the run: ``rank`` of ``world`` processes; it computes ``batches[rank::world]``."""
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """Rank 0: the one process that creates the run directory, prints and writes the merged files."""
        return self.rank == 0

    def mine(self, n_batches: int) -> range:
        """The batch indices this process computes: rank, rank + world, …"""
        return range(self.rank, n_batches, self.world)

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every process."""
        if self.world == 1:
            return obj
        import torch.distributed as dist
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj) -> list | None:
        """Every process's ``obj`` as a list indexed by rank on rank 0; ``None`` elsewhere."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist
        out = [None] * self.world if self.main else None
        dist.gather_object(obj, out, dst=0)
        return out


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def main_process() -> bool:
    """Whether this process is rank 0 (or runs alone): the one that prints."""
    return int(os.environ.get("RANK", "0")) == 0


def local_world_size() -> int:
    """Processes sharing this machine (``LOCAL_WORLD_SIZE``; 1 outside a launcher)."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")) or 1))


@contextlib.contextmanager
def shard(device: torch.device):
    """Yield this process's :class:`Shard`, joining (and at the end leaving) torchrun's process group.

    Under a launcher a CUDA ``device`` becomes ``cuda:LOCAL_RANK`` and the backend is nccl; on CPU it is
    gloo. A process group that the caller already initialised is used as it is and left open.
    """
    if not launched():
        yield Shard(device=device)
        return
    import torch.distributed as dist
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield Shard(rank=dist.get_rank(), world=dist.get_world_size(), device=device)
    finally:
        if owned:
            dist.destroy_process_group()
