"""The quality report's running totals, kept beside an unfinished pseudo file: a resumed run reports on every image.

`rectify --resume` recomputes only images that are not done, yet its report
must score every image, as an uninterrupted run's does. After writing a batch
the writer thread saves the totals and the split positions they cover to
`<partial file>.quality.npz` (temporary name, then rename: always a whole
state). A resumed run starts from that state and recomputes every image it
does not cover, done or not, adding only those. Saving costs time, so a save
waits until SAVE_GAP times the last save's duration has passed (a few per
cent of the run at most), and the last one comes at the end.
"""

import time
from pathlib import Path
from typing import Any

import numpy as np

from cisctool.method.signals import QUERY_KINDS
from cisctool.report.quality import QualityAccumulator
from cisctool.store.atomic import atomic_write

SAVE_GAP = 20


def progress_path(work_path: Path) -> Path:
    """Where the running totals of the unfinished pseudo file `work_path` are saved."""
    return work_path.with_suffix(".quality.npz")


class QualityProgress:
    """A quality accumulator, the class-query counts and the split positions (of N) both cover."""

    def __init__(self, path: Path, quality: QualityAccumulator, count: int) -> None:
        self.path, self.quality = path, quality
        self.queries = np.zeros(len(QUERY_KINDS), dtype=np.int64)
        self.covered = np.zeros(count, dtype=bool)
        self._next_save = 0.0

    @classmethod
    def begin(cls, path: Path, quality: QualityAccumulator, count: int, *, resume: bool) -> "QualityProgress":
        """Saved totals when resuming and they fit `quality` and N; otherwise none (every image is scored)."""
        progress = cls(path, quality, count)
        if not resume:
            path.unlink(missing_ok=True)
            return progress
        try:
            with np.load(path) as saved:
                state = {key: saved[key] for key in saved.files}
            covered, queries = state.pop("covered"), state.pop("queries")
            if covered.shape != progress.covered.shape or queries.shape != progress.queries.shape:
                raise ValueError("saved totals of another split")
            quality.restore(state)
        except (OSError, ValueError, KeyError):  # missing or foreign: recompute what it would have covered
            fresh = QualityAccumulator(quality.class_names, quality.ignore_index, list(quality.signals))
            return cls(path, fresh, count)
        progress.covered, progress.queries = covered.astype(bool), queries.astype(np.int64)
        return progress

    def add(self, raw: np.ndarray, label: np.ndarray, weight: np.ndarray, reliability: float,
            signals: dict[str, np.ndarray], truth: np.ndarray | None, queries: np.ndarray) -> None:  # fmt: skip
        """One image, as `QualityAccumulator.add`, with its class-query counts (QUERY_KINDS)."""
        self.quality.add(raw, label, weight, reliability, signals, truth)
        self.queries += queries

    def cover(self, positions: list[int]) -> None:
        """Mark images written and added; save when due."""
        self.covered[positions] = True
        if time.perf_counter() >= self._next_save:
            self.save()

    def save(self) -> None:
        started = time.perf_counter()
        state = {**self.quality.state(), "covered": self.covered, "queries": self.queries}

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez_compressed(handle, **state)

        atomic_write(self.path, write)
        finished = time.perf_counter()
        self._next_save = finished + SAVE_GAP * (finished - started)

    def report(self) -> dict[str, Any]:
        queries = dict(zip(QUERY_KINDS, self.queries.tolist(), strict=True))
        return {**self.quality.report(), "queries": queries}

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
