"""Atomic writes and file hashes.

Every file is written to a temporary name beside its target and renamed into
place, so a killed process never leaves a file that looks whole.
"""

import errno
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cisctool.errors import is_disk_full

FULL_BYTES = 1 << 20  # a failed write with less free than this ran out of space


def temporary_path(path: Path) -> Path:
    """A hidden sibling name for writing `path` before renaming it into place."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` then rename tmp onto `path`; on failure remove tmp, keep the old file.

    A writer that fails on a full disk in its own words (torch.save's "unexpected
    pos …") is reported as the OSError ENOSPC of `path`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except Exception as error:
        full = is_disk_full(error) or (not isinstance(error, OSError) and disk_full(path.parent))
        if full and not getattr(error, "filename", None):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from error
        raise
    finally:
        tmp.unlink(missing_ok=True)


def disk_full(folder: Path) -> bool:
    """Less than FULL_BYTES free for ordinary users on the file system of `folder`."""
    try:
        status = os.statvfs(folder)
    except OSError:
        return False
    return status.f_bavail * status.f_frsize < FULL_BYTES


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete `.name.<pid>.tmp` files whose writer process is gone (a killed run's leftovers)."""
    removed = []
    for path in folder.glob(".*.tmp") if folder.is_dir() else []:
        pid = path.name.rsplit(".", 2)[-2]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: Path, payload: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
