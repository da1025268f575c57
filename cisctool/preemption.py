"""SIGTERM as a request to stop at the next safe point: how a scheduler preempts.

Slurm preempts (and warns before a time limit, with `--signal`) by sending
SIGTERM, then SIGKILL after a grace period. Inside `stop_on_sigterm()` SIGTERM
only sets a flag; the training and rectify loops look at it between steps and
batches, save what they hold (a checkpoint at the current step; the queued
batches and the quality totals) and raise `Preempted`, which the command turns
into exit 143 (128 + SIGTERM, what a shell reports for a SIGTERM) and one line
saying how to resume. Outside such a block SIGTERM ends the process as usual:
there is nothing to save. DataLoader workers ignore it (`ignore_in_worker`):
their parent decides when to stop, and they die with it. Since a worker then
outlives multiprocessing's own SIGTERM at exit (which it would wait for
forever), the parent kills what is left of them first (`kill_workers_at_exit`).
"""

import atexit
import multiprocessing
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

PREEMPTED_EXIT = 128 + signal.SIGTERM
_requested = threading.Event()
_exit_hook: list[bool] = []  # registered once per process


class Preempted(Exception):
    """Raised once the work so far is saved after a SIGTERM; the message says what was saved."""


def _request(signum: int, frame: FrameType | None) -> None:
    _requested.set()


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Inside the block SIGTERM sets the stop flag instead of ending the process.

    Nested blocks share the outer one's flag; off the main thread (where Python
    cannot take a signal) the block changes nothing.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is _request:
        yield
        return
    _requested.clear()
    previous = signal.signal(signal.SIGTERM, _request)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _requested.clear()


def requested() -> bool:
    """Whether a SIGTERM came inside `stop_on_sigterm()`."""
    return _requested.is_set()


def ignore_in_worker() -> None:
    """In a DataLoader worker: SIGTERM is for the parent, which stops at a safe point and takes its workers along."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def kill_workers_at_exit() -> None:
    """In the parent: at exit, SIGKILL the worker processes still running, before multiprocessing's exit
    handler sends them the SIGTERM they ignore and waits for them (registered after it, so run before it)."""
    if not _exit_hook:
        atexit.register(_kill_workers)
        _exit_hook.append(True)


def _kill_workers() -> None:
    """torch's SIGCHLD handler would take a worker's end for a crash: the default first."""
    workers = [child for child in multiprocessing.active_children() if child.daemon]
    if not workers:
        return
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for child in workers:
        child.kill()
        child.join()
