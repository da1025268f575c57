"""DataLoader workers: how many, and that they die with the process that started them.

On a CPU, torch's threads already use every core; a worker process decoding
beside them takes a core from one of them, and every op waits for its slowest
thread: on 2 cores one worker cut training from 6.54 to 5.08 steps/s, more
than decoding in the main process costs (bench_train). So on a CPU a loader
gets only the cores torch's threads leave free; on a GPU, as configured.

A worker of a process killed with SIGKILL lives on until torch's watchdog
notices (up to 5 s), keeping every descriptor it inherited, so a rerun at once
could find a file still open or locked. On Linux the kernel kills each worker
as soon as its parent dies (prctl PR_SET_PDEATHSIG); elsewhere the watchdog
remains. The signal follows the parent *thread* that forked the worker: start
a loader's iterator on a thread that lives as long as the loader is used.

Every forward pass over a split (eval, the labeled prototypes, rectify's
stream, predict) reads through `inference_loader`: one rule for its workers.
"""

import ctypes
import functools
import os
import signal
import sys
from collections.abc import Callable, Iterable, Sequence

import torch
from torch.utils.data import DataLoader

from cisctool import preemption
from cisctool.data.datasets import InferenceDataset, pad_collate
from cisctool.data.splits import SplitEntry

PR_SET_PDEATHSIG = 1
# a forward pass decodes each image once, unaugmented: of `train.workers`, at most this many
INFERENCE_WORKERS = 2


def loader_workers(requested: int, device: str) -> int:
    """Worker processes for a loader feeding `device`: `requested` on a GPU, at most the free cores on a CPU."""
    if device.startswith("cuda"):
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(0, min(requested, cores - torch.get_num_threads()))


def exit_with_parent() -> Callable[[int], None]:
    """A DataLoader `worker_init_fn` binding each worker's life to this process (which alone answers
    a preemption's SIGTERM: `cisctool.preemption`)."""
    preemption.kill_workers_at_exit()
    return functools.partial(_bind_to_parent, os.getpid())


def _bind_to_parent(parent: int, worker_id: int) -> None:
    preemption.ignore_in_worker()
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def inference_loader(
    entries: Sequence[SplitEntry],
    num_classes: int,
    ignore_index: int,
    device: str,
    *,
    with_masks: bool,
    workers: int,
    most_workers: int = INFERENCE_WORKERS,
    batch_size: int = 1,
    batches: Iterable[list[int]] | None = None,
    size_divisor: int = 1,
) -> DataLoader:
    """`entries` for a forward pass on `device`, by `batch_size` or in the given `batches` of indices, each
    batch padded alike (`pad_collate`). Of the `workers` asked for, at most `most_workers`, then as
    `loader_workers` allows on the device; they die with this process. Batches come in pinned memory
    for a GPU, so that their copies to it need not block."""
    return DataLoader(
        InferenceDataset(entries, num_classes, ignore_index, with_masks=with_masks),
        batch_size=batch_size,
        batch_sampler=batches,
        num_workers=loader_workers(min(workers, most_workers), device),
        collate_fn=functools.partial(pad_collate, ignore_index=ignore_index, size_divisor=size_divisor),
        pin_memory=device.startswith("cuda"),
        worker_init_fn=exit_with_parent(),
    )
