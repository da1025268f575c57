"""Multi-process training through torchrun (PyTorch's own launcher and DDP, nothing home-made).

`torchrun --nproc-per-node G -m cisctool train …` sets RANK, WORLD_SIZE and
LOCAL_RANK; without them everything runs as one process. NCCL on GPUs, gloo
on CPU. Rank 0 alone writes checkpoints, logs and metrics; every rank draws
its own slice of the same seeded sample stream, so a step sees
`batch_size × WORLD_SIZE` labeled images and `train.lr` is the rate for that
total batch (scale it with the number of processes, as the linear rule says).
`process_group` is the one place that joins and leaves the process group.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Processes:
    """This process's place among the training processes."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def from_environment() -> Processes:
    """RANK / WORLD_SIZE / LOCAL_RANK as torchrun sets them; one process without them."""
    return Processes(
        int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))
    )


@contextmanager
def process_group(device: str) -> Iterator[tuple[Processes, str]]:
    """Inside the block: this process's place and device, in torchrun's process group when launched by it.

    The outermost block joins the group and leaves it at the end, also on failure;
    a nested block (a step inside a step) uses the group its caller joined.
    """
    processes = from_environment()
    joins = processes.active and not dist.is_initialized()
    if processes.active and device.startswith("cuda"):
        device = f"cuda:{processes.local_rank}"
        torch.cuda.set_device(device)
    if joins:
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    try:
        yield processes, device
    finally:
        if joins and dist.is_initialized():
            dist.destroy_process_group()


def barrier(processes: Processes) -> None:
    """Wait for every rank (no-op for one process)."""
    if processes.active and dist.is_initialized():
        dist.barrier()


def any_rank(processes: Processes, flag: bool, device: str) -> bool:
    """Whether `flag` holds on any rank (itself for one process): a preemption that reaches one rank
    stops all of them at the same step. A collective: every rank calls it at the same point."""
    if not (processes.active and dist.is_initialized()):
        return flag
    shared = torch.tensor([float(flag)], device=device)
    dist.all_reduce(shared, op=dist.ReduceOp.MAX)
    return bool(shared.item())
