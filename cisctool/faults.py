"""A fault-injection hook for the kill tests, as faiss.contrib's `crash_at`: off unless asked for.

`CISCTOOL_FAULT="<point>:<n>[:INT]"` sends this process SIGKILL (or SIGINT with
`:INT`) the n-th time it reaches `<point>`. Points: `forward` (before a
rectify batch's forward), `pseudo-write` (inside an HDF5 write, before the
`done` flags), `checkpoint-write` (a checkpoint saved under its temporary
name, not yet renamed), `train-step` (after an optimizer step).
"""

import os
import signal

FAULT_VARIABLE = "CISCTOOL_FAULT"
_reached: dict[str, int] = {}


def reached(point: str) -> None:
    """Count a pass through `point`; signal this process when the configured pass comes."""
    spec = os.environ.get(FAULT_VARIABLE)
    if not spec:
        return
    name, _, rest = spec.partition(":")
    if name != point:
        return
    count, _, kind = rest.partition(":")
    _reached[point] = _reached.get(point, 0) + 1
    if _reached[point] == int(count or 1):
        if kind == "INT":  # as a terminal's Ctrl-C: Python's own handler, even if the parent ignored SIGINT
            signal.signal(signal.SIGINT, signal.default_int_handler)
            os.kill(os.getpid(), signal.SIGINT)
        else:
            os.kill(os.getpid(), signal.SIGKILL)
