"""Errors a user can fix: the CLI prints them on one line and exits with code 2."""

import errno


class InputError(Exception):
    """Bad user input (file, key or value); the message names it and says what is wrong."""


def first_line(error: BaseException) -> str:
    """`Type: first line of the message`, for wrapping a library's error into one line."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def is_disk_full(error: BaseException) -> bool:
    """ENOSPC, also where HDF5 reports it only inside its message."""
    return getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in str(error)
