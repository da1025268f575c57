import os
import signal
import subprocess
import sys

import pytest
import torch
from torch.utils.data import DataLoader

from cisctool import preemption
from cisctool.data.workers import exit_with_parent


def test_sigterm_inside_the_block_only_asks_to_stop_and_the_old_handler_comes_back():
    before = signal.getsignal(signal.SIGTERM)
    with preemption.stop_on_sigterm():
        assert not preemption.requested()
        os.kill(os.getpid(), signal.SIGTERM)
        assert preemption.requested()
        with preemption.stop_on_sigterm():  # a nested block keeps the request
            assert preemption.requested()
        assert preemption.requested()
    assert not preemption.requested() and signal.getsignal(signal.SIGTERM) is before
    assert preemption.PREEMPTED_EXIT == 143


def test_a_loader_worker_lives_through_a_sigterm_for_its_parent_to_stop_it():
    """A scheduler's SIGTERM reaches every process of the job: the workers leave it to their parent."""
    loader = DataLoader(list(range(8)), batch_size=2, num_workers=1, worker_init_fn=exit_with_parent())
    batches = iter(loader)
    first = next(batches)
    worker = batches._workers[0]
    os.kill(worker.pid, signal.SIGTERM)
    rest = list(batches)
    assert worker.exitcode in (None, 0) and torch.cat([first, *rest]).tolist() == list(range(8))


@pytest.mark.slow
def test_a_process_leaving_with_its_workers_running_exits_at_once():
    """Workers ignore SIGTERM, which multiprocessing's exit handler sends them before waiting for them: the
    parent kills what is left of them first."""
    script = (
        "from torch.utils.data import DataLoader\n"
        "from cisctool.data.workers import exit_with_parent\n"
        "batches = iter(DataLoader(list(range(64)), batch_size=2, num_workers=2, worker_init_fn=exit_with_parent()))\n"
        "next(batches)\n"
        "raise SystemExit(3)  # the iterator, still referenced, never shuts its workers down\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3 and "Traceback" not in done.stderr, done.stderr[-2000:]
