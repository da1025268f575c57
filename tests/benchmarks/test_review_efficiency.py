"""The review benchmark's calibrated ceiling: expected wrong pixels from error rates per class and confidence bin."""

import sys
from pathlib import Path

import numpy as np
import pytest

from cisctool.data.masks import write_mask

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import review_efficiency  # noqa: E402  (a script folder, not a package)

IGNORE = 255


class Stored:
    """The two things the ceiling reads of a pseudo-label file: ids and per-pixel arrays."""

    def __init__(self, arrays: dict[str, dict[str, np.ndarray]]) -> None:
        self.arrays = arrays
        self.ids = list(arrays)

    def pixels(self, name: str, index: int) -> np.ndarray:
        return self.arrays[self.ids[index]][name]


def test_ceiling_sums_the_error_rate_of_each_pixels_class_and_confidence_bin(tmp_path: Path) -> None:
    # a: class 1 at 0.62 (bin 12), two of four wrong; b: the same cell, none wrong, plus a dropped pixel
    label_a = np.array([[1, 1], [1, 1]], dtype=np.uint8)
    label_b = np.array([[1, 1], [0, IGNORE]], dtype=np.uint8)
    confidence = np.full((2, 2), 0.62, dtype=np.float16)
    truths = {"a": np.array([[1, 0], [0, 1]], np.uint8), "b": np.array([[1, 1], [0, 0]], np.uint8)}
    masks = {}
    for image_id, truth in truths.items():
        masks[image_id] = tmp_path / f"{image_id}.png"
        write_mask(masks[image_id], truth)
    stored = Stored({"a": {"label": label_a, "confidence": confidence},
                     "b": {"label": label_b, "confidence": confidence}})  # fmt: skip
    scores = review_efficiency.calibrated_ceiling(stored, masks, IGNORE, classes=2)
    # class 1 in bin 12: 2 wrong of 6 pixels; class 0 in bin 12: 0 of 1
    assert scores == pytest.approx([4 * 2 / 6, 2 * 2 / 6 + 0.0])
