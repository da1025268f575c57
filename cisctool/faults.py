"""A fault-injection hook for the fault tests, as faiss.contrib's `crash_at`: off unless asked for.

`CISCTOOL_FAULT="<point>:<n>[:KIND]"` acts the n-th time this process reaches
`<point>`: KIND is KILL (the default: SIGKILL), INT (SIGINT, as Ctrl-C), STOP
(SIGSTOP: the process freezes, holding what it holds, until sent SIGCONT) or
ENOSPC (raise the OSError a full disk gives). Points: `forward` (before a
rectify batch's forward), `pseudo-write` (inside an HDF5 write, before the
`done` flags), `checkpoint-write` (a checkpoint saved under its temporary
name, not yet renamed), `train-step` (after an optimizer step).
"""

import errno
import os
import signal

FAULT_VARIABLE = "CISCTOOL_FAULT"
_reached: dict[str, int] = {}


def reached(point: str) -> None:
    """Count a pass through `point`; act when the configured pass comes."""
    spec = os.environ.get(FAULT_VARIABLE)
    if not spec:
        return
    name, _, rest = spec.partition(":")
    if name != point:
        return
    count, _, kind = rest.partition(":")
    _reached[point] = _reached.get(point, 0) + 1
    if _reached[point] != int(count or 1):
        return
    if kind == "INT":  # as a terminal's Ctrl-C: Python's own handler, even if the parent ignored SIGINT
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.kill(os.getpid(), signal.SIGINT)
    elif kind == "STOP":
        os.kill(os.getpid(), signal.SIGSTOP)
    elif kind == "ENOSPC":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    else:
        os.kill(os.getpid(), signal.SIGKILL)
