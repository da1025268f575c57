"""Where each round's artifacts live, atomic writes, and file hashes.

Layout (DESIGN §4), relative to `workdir`:
    runs/<name>/config.resolved.toml
    runs/<name>/round<N>/{model.pt, last.pt, metrics.json, train.log, pseudo.h5, pseudo_quality.json}
    indexes/<name>/round<N>.faiss + round<N>.json
Every file is written to a temporary name beside its target and renamed into
place, so a killed process never leaves a file that looks whole.
"""

import errno
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cisctool.config import Config
from cisctool.errors import is_disk_full

FULL_BYTES = 1 << 20  # a failed write with less free than this ran out of space


@dataclass(frozen=True)
class RunLayout:
    """Paths of one named run's artifacts."""

    workdir: Path
    name: str

    @classmethod
    def of(cls, config: Config) -> "RunLayout":
        return cls(Path(config.workdir), config.name)

    @property
    def run_dir(self) -> Path:
        return self.workdir / "runs" / self.name

    @property
    def resolved_config(self) -> Path:
        return self.run_dir / "config.resolved.toml"

    def round_dir(self, round_index: int) -> Path:
        return self.run_dir / f"round{round_index}"

    def model(self, round_index: int) -> Path:
        """The round's final model (never best-on-val)."""
        return self.round_dir(round_index) / "model.pt"

    def last(self, round_index: int) -> Path:
        """Full training state for `--resume`."""
        return self.round_dir(round_index) / "last.pt"

    def metrics(self, round_index: int) -> Path:
        return self.round_dir(round_index) / "metrics.json"

    def train_log(self, round_index: int) -> Path:
        return self.round_dir(round_index) / "train.log"

    def pseudo(self, round_index: int) -> Path:
        """Pseudo labels *for* round N (made with round N−1's model and index)."""
        return self.round_dir(round_index) / "pseudo.h5"

    def pseudo_quality(self, round_index: int) -> Path:
        """The quality report of round N's pseudo labels, beside `pseudo.h5`."""
        return self.round_dir(round_index) / "pseudo_quality.json"

    @property
    def index_dir(self) -> Path:
        return self.workdir / "indexes" / self.name

    def index_files(self, round_index: int) -> tuple[Path, Path]:
        """(`.faiss`, `.json`) of the index built from round N's model."""
        stem = self.index_dir / f"round{round_index}"
        return stem.with_suffix(".faiss"), stem.with_suffix(".json")


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
