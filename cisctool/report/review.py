"""The review queue of a pseudo-label file: every image's review score, and how well its order finds errors.

One function, `review_scores`, gives the score that `export --worst`, the
report's gallery, Label Studio's prediction `score` and the CVAT zip's image
order all use: Σ(1 − confidence)² over the pixels that carry a label
(`method/review.py` says why this one).
"""

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cisctool.data.masks import read_mask
from cisctool.errors import InputError
from cisctool.method.review import (
    FRACTIONS,
    candidate_scores,
    efficiency,
    found_curve,
    oracle_efficiency,
    random_efficiency,
    review_order,
    squared_doubt,
    wrong_pixels,
)
from cisctool.store.pseudo_labels import PseudoLabels


def _pixels(stored: PseudoLabels, name: str, index: int) -> np.ndarray:
    """One stored array; a file without it is damaged (one line, not a traceback)."""
    try:
        return stored.pixels(name, index)
    except KeyError:
        raise InputError(f"{stored.path}: dataset '{name}' missing; the file is damaged") from None


def review_scores(stored: PseudoLabels, ignore_index: int) -> np.ndarray:
    """Every image's review score, Σ(1 − confidence)², in file order; higher = review sooner."""
    scores = np.empty(len(stored), dtype=np.float64)
    for index in range(len(stored)):
        kept = _pixels(stored, "label", index) != ignore_index
        scores[index] = squared_doubt(_pixels(stored, "confidence", index), kept)
    return scores


def review_queue(stored: PseudoLabels, ignore_index: int, count: int | None = None) -> list[int]:
    """Positions of the `count` images to review first (all when None), highest review score first."""
    return review_order(review_scores(stored, ignore_index))[:count].tolist()


def all_candidate_scores(stored: PseudoLabels, ignore_index: int) -> dict[str, np.ndarray]:
    """Every candidate score of every image (`method/review.py`), for measuring which one to use."""
    rows = []
    for index in range(len(stored)):
        kept = _pixels(stored, "label", index) != ignore_index
        confidence, cisc = _pixels(stored, "confidence", index), _pixels(stored, "cisc", index)
        rows.append(candidate_scores(confidence, cisc, kept, float(stored.reliability[index])))
    return {name: np.array([row[name] for row in rows]) for name in rows[0]} if rows else {}


def true_wrong_pixels(stored: PseudoLabels, masks: Mapping[str, Path], ignore_index: int) -> np.ndarray:
    """Every image's count of wrong pseudo-labelled pixels against its true mask."""
    counts = np.empty(len(stored), dtype=np.int64)
    for index, image_id in enumerate(stored.ids):
        label = _pixels(stored, "label", index)
        counts[index] = wrong_pixels(label, read_mask(masks[image_id]), ignore_index)
    return counts


@dataclass
class ReviewEfficiency:
    """The share of all wrong pixels found after each image looked at, for the tool's order, random order
    (the diagonal) and the oracle; and the shares at 5, 10 and 20 % of the images."""

    tool: np.ndarray
    oracle: np.ndarray
    at: dict[str, dict[str, float]]
    wrong_total: int

    @property
    def ratio_at_10(self) -> float:
        """The tool's share at 10 % over the oracle's (1 = as good as knowing the errors)."""
        oracle = self.at["oracle"]["0.10"]
        return self.at["tool"]["0.10"] / oracle if oracle > 0 else float("nan")


def measure_efficiency(scores: np.ndarray, wrong: np.ndarray) -> ReviewEfficiency:
    """How the order of `scores` finds the `wrong` pixels, against random and oracle order."""
    return ReviewEfficiency(
        tool=found_curve(review_order(scores), wrong),
        oracle=found_curve(review_order(wrong.astype(np.float64)), wrong),
        at={
            "tool": efficiency(scores, wrong, FRACTIONS),
            "random": random_efficiency(len(wrong), FRACTIONS),
            "oracle": oracle_efficiency(wrong, FRACTIONS),
        },
        wrong_total=int(wrong.sum()),
    )
