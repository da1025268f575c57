"""Multi-process training through torchrun (PyTorch's own launcher and DDP, nothing home-made).

`torchrun --nproc-per-node G -m cisctool train …` sets RANK, WORLD_SIZE and
LOCAL_RANK; without them everything runs as one process. NCCL on GPUs, gloo
on CPU. Rank 0 alone writes checkpoints, logs and metrics; every rank draws
its own slice of the same seeded sample stream, so a step sees
`batch_size × WORLD_SIZE` labeled images and `train.lr` is the rate for that
total batch (scale it with the number of processes, as the linear rule says).
"""

import os
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


def start(device: str) -> tuple[Processes, str]:
    """Join the process group when launched by torchrun; returns the processes and this rank's device."""
    processes = from_environment()
    if not processes.active:
        return processes, device
    if device.startswith("cuda"):
        device = f"cuda:{processes.local_rank}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return processes, device


def barrier(processes: Processes) -> None:
    """Wait for every rank (no-op for one process)."""
    if processes.active and dist.is_initialized():
        dist.barrier()


def stop() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()
