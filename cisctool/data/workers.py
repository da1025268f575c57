"""DataLoader workers that die with the process that started them.

A worker of a process killed with SIGKILL lives on until torch's watchdog
notices (up to 5 s), keeping every descriptor it inherited, so a rerun at once
could find a file still open or locked. On Linux the kernel kills each worker
as soon as its parent dies (prctl PR_SET_PDEATHSIG); elsewhere the watchdog
remains. The signal follows the parent *thread* that forked the worker: start
a loader's iterator on a thread that lives as long as the loader is used.
"""

import ctypes
import functools
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def exit_with_parent() -> Callable[[int], None]:
    """A DataLoader `worker_init_fn` binding each worker's life to this process."""
    return functools.partial(_bind_to_parent, os.getpid())


def _bind_to_parent(parent: int, worker_id: int) -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)
