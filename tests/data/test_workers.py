import pytest
import torch

from cisctool.data import workers
from cisctool.data.workers import loader_workers


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
