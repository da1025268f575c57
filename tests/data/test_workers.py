from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cisctool.data import workers
from cisctool.data.splits import SplitEntry
from cisctool.data.workers import INFERENCE_WORKERS, inference_loader, loader_workers


@pytest.mark.parametrize(("threads", "expected"), [(4, 0), (3, 1), (1, 3), (0, 4)])
def test_cpu_loaders_get_only_the_cores_torchs_threads_leave_free(
    monkeypatch: pytest.MonkeyPatch, threads: int, expected: int
):
    monkeypatch.setattr(workers.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    assert loader_workers(4, "cpu") == expected
    assert loader_workers(0, "cpu") == 0


def test_gpu_loaders_get_the_workers_asked_for(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 64)
    assert loader_workers(4, "cuda") == 4
    assert loader_workers(4, "cuda:1") == 4


def images(folder: Path, sizes: list[tuple[int, int]]) -> list[SplitEntry]:
    entries = []
    for number, (height, width) in enumerate(sizes):
        path = folder / f"{number}.png"
        Image.fromarray(np.full((height, width, 3), 40 * number, dtype=np.uint8)).save(path)
        entries.append(SplitEntry(str(number), path, None))
    return entries


def test_an_inference_loader_pads_each_batch_alike_and_keeps_each_images_size(tmp_path: Path):
    entries = images(tmp_path, [(20, 30), (33, 10), (8, 8)])
    batches = list(inference_loader(entries, 3, 255, "cpu", with_masks=False, workers=0, batches=[[0, 1], [2]],
                                    size_divisor=16))  # fmt: skip
    assert [tuple(batch["image"].shape) for batch in batches] == [(2, 3, 48, 32), (1, 3, 16, 16)]
    assert batches[0]["sizes"].tolist() == [[20, 30], [33, 10]] and batches[1]["index"].tolist() == [2]
    assert (batches[0]["mask"][1, :, 10:] == 255).all()  # padding is ignored


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # built, never iterated
def test_an_inference_loader_takes_at_most_its_cap_of_the_workers_asked_for_and_pins_for_a_gpu(tmp_path: Path):
    entries = images(tmp_path, [(8, 8)])
    short = inference_loader(entries, 3, 255, "cuda", with_masks=False, workers=8, batch_size=4)
    long = inference_loader(entries, 3, 255, "cuda", with_masks=False, workers=8, most_workers=4)
    few = inference_loader(entries, 3, 255, "cuda", with_masks=False, workers=1, most_workers=4)
    assert (short.num_workers, long.num_workers, few.num_workers) == (INFERENCE_WORKERS, 4, 1)
    assert short.batch_size == 4 and short.pin_memory and long.pin_memory
    assert not inference_loader(entries, 3, 255, "cpu", with_masks=False, workers=0).pin_memory

