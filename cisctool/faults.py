"""The one fault-injection hook: off unless asked for.

`CISCTOOL_FAULT="<point>:<n>[:KIND]"` acts the n-th time this process reaches
`<point>`: KIND is KILL (the default: SIGKILL), INT (SIGINT, as Ctrl-C), STOP
(SIGSTOP: the process freezes, holding what it holds, until sent SIGCONT),
TERM (SIGTERM, as a scheduler's preemption), ENOSPC (raise the OSError a full
disk gives) or RAISE (raise `InjectedFault`: a crash a test can catch in its own process). Points: `forward` (before a
rectify batch's forward), `pseudo-write` (inside an HDF5 write, before the
`done` flags), `checkpoint-write` (a checkpoint saved under its temporary
name, not yet renamed), `train-step` (after an optimizer step).
Passes are counted per setting of the variable, in this process; a RAISE or TERM fault's count
starts over once it has acted, so the runs of one test process crash alike.
"""

import errno
import os
import signal

FAULT_VARIABLE = "CISCTOOL_FAULT"
_passes: dict[str, int] = {}  # setting of the variable → passes through its point


class InjectedFault(RuntimeError):
    """The RAISE kind's crash: work up to this point is on disk exactly as a killed run leaves it."""


def reached(point: str) -> None:
    """Count a pass through `point`; act when the configured pass comes."""
    spec = os.environ.get(FAULT_VARIABLE)
    if not spec:
        return
    name, _, rest = spec.partition(":")
    if name != point:
        return
    count, _, kind = rest.partition(":")
    _passes[spec] = _passes.get(spec, 0) + 1
    if _passes[spec] != int(count or 1):
        return
    if kind == "INT":  # as a terminal's Ctrl-C: Python's own handler, even if the parent ignored SIGINT
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.kill(os.getpid(), signal.SIGINT)
    elif kind == "STOP":
        os.kill(os.getpid(), signal.SIGSTOP)
    elif kind == "TERM":
        del _passes[spec]
        os.kill(os.getpid(), signal.SIGTERM)
    elif kind == "ENOSPC":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    elif kind == "RAISE":
        del _passes[spec]
        raise InjectedFault(f"fault injected at {point} (pass {count or 1})")
    else:
        os.kill(os.getpid(), signal.SIGKILL)
