"""Which pseudo labels people should correct first, and how well an order finds the wrong pixels.

An image's review score says how many of its pseudo-labelled pixels are likely
wrong; people look at the highest scores first. The candidates, each from one
image's stored pixels (`kept` = pixels that carry a label, not dropped):
- `reliability`: the paper's mean BCE of S_ŷ towards 1, as stored (lower = more reliable);
- `mean_nll`: mean −log confidence (self-training's image score);
- `sum_nll`: Σ −log confidence, the same as a count (a pixel at 0.5 weighs 6.6×
  one at 0.9, between `expected_wrong`'s 5× and `squared_doubt`'s 25×);
- `expected_wrong`: Σ(1 − confidence), the number of wrong pixels expected if
  the confidence were calibrated: it counts errors instead of averaging them away;
- `below_<t>`: the share of pixels whose confidence is under t;
- `expected_wrong_cisc`: Σ(1 − confidence·S_ŷ), S_ŷ clamped to [0, 1] (1 where
  unguided): confidence discounted by cross-image disagreement;
- `squared_doubt`: Σ(1 − confidence)², the review score: a count like
  `expected_wrong`, but a pixel at 0.9 weighs 0.01 and one at 0.5 weighs 0.25, so
  the many nearly sure pixels of a large clean region no longer outweigh the
  doubtful ones. On round 1 of both benchmarks it found the most wrong pixels in
  the first 10 % of images (benchmarks/review_efficiency.py; docs/review.md);
- `cubed_doubt`: Σ(1 − confidence)³, the next power, to see whether the square's
  gain over the count keeps growing with the power.

An order's review efficiency is the share of all wrong pixels found in its
first k % of images; random order expects k %, the oracle (true error counts)
is the ceiling.
"""

import math
from collections.abc import Sequence

import numpy as np

REVIEW_SCORE = "squared_doubt"  # the default, chosen by review efficiency on both benchmarks
BELOW_THRESHOLDS = (0.5, 0.8)
CANDIDATES = (
    "reliability",
    "mean_nll",
    "sum_nll",
    "expected_wrong",
    *(f"below_{threshold}" for threshold in BELOW_THRESHOLDS),
    "expected_wrong_cisc",
    REVIEW_SCORE,
    "cubed_doubt",
)
FRACTIONS = (0.05, 0.10, 0.20)


def expected_wrong(confidence: np.ndarray, kept: np.ndarray) -> float:
    """Σ(1 − confidence) over the kept pixels: the expected count of wrong labels."""
    return float((1.0 - confidence.astype(np.float64)[kept]).sum())


def squared_doubt(confidence: np.ndarray, kept: np.ndarray) -> float:
    """Σ(1 − confidence)² over the kept pixels: the review score."""
    return float(((1.0 - confidence.astype(np.float64)[kept]) ** 2).sum())


def candidate_scores(
    confidence: np.ndarray, cisc: np.ndarray, kept: np.ndarray, reliability: float
) -> dict[str, float]:
    """Every candidate score of one image (H×W confidence, S_ŷ with NaN where unguided, kept mask);
    higher = review sooner. An image with no kept pixel scores 0 (nothing to correct)."""
    values = confidence.astype(np.float64)[kept]
    nll = -np.log(values.clip(1e-6, 1.0))
    similarity = np.nan_to_num(cisc.astype(np.float64)[kept], nan=1.0).clip(0.0, 1.0)
    scores = {
        "reliability": reliability,
        "mean_nll": float(nll.mean()) if values.size else 0.0,
        "sum_nll": float(nll.sum()),
        "expected_wrong": expected_wrong(confidence, kept),
        REVIEW_SCORE: squared_doubt(confidence, kept),
        "cubed_doubt": float(((1.0 - values) ** 3).sum()),
        "expected_wrong_cisc": float((1.0 - values * similarity).sum()),
    }
    for threshold in BELOW_THRESHOLDS:
        scores[f"below_{threshold}"] = float((values < threshold).mean()) if values.size else 0.0
    return {name: scores[name] for name in CANDIDATES}


def review_order(scores: np.ndarray) -> np.ndarray:
    """Positions highest score first; NaN (no evidence) last; ties keep split order."""
    missing = np.isnan(scores)
    values = np.where(missing, 0.0, scores.astype(np.float64))
    return np.lexsort((np.arange(len(values)), -values, missing))


def wrong_pixels(label: np.ndarray, truth: np.ndarray, ignore_index: int) -> int:
    """Pseudo-labelled pixels whose label differs from the true mask (dropped and unlabelled pixels aside)."""
    counted = (label != ignore_index) & (truth != ignore_index)
    return int((label[counted] != truth[counted]).sum())


def images_at(fraction: float, count: int) -> int:
    """How many images the first `fraction` of `count` is (at least one)."""
    return max(1, min(count, math.floor(fraction * count + 0.5)))


def found_curve(order: np.ndarray, wrong: np.ndarray) -> np.ndarray:
    """N + 1 shares of all wrong pixels found after looking at 0, 1, …, N images in `order`."""
    total = float(wrong.sum())
    found = np.concatenate([[0.0], np.cumsum(wrong[order].astype(np.float64))])
    return found / total if total > 0 else np.zeros_like(found)


def efficiency(
    scores: np.ndarray, wrong: np.ndarray, fractions: Sequence[float] = FRACTIONS
) -> dict[str, float]:
    """Share of all wrong pixels in the first k % of images in the scores' order, per k ("0.10": …)."""
    curve = found_curve(review_order(scores), wrong)
    return {f"{fraction:.2f}": float(curve[images_at(fraction, len(wrong))]) for fraction in fractions}


def oracle_efficiency(wrong: np.ndarray, fractions: Sequence[float] = FRACTIONS) -> dict[str, float]:
    """The ceiling: the same shares in the order of the true error counts."""
    return efficiency(wrong.astype(np.float64), wrong, fractions)


def random_efficiency(count: int, fractions: Sequence[float] = FRACTIONS) -> dict[str, float]:
    """What a random order finds in expectation: the share of images looked at."""
    return {f"{fraction:.2f}": images_at(fraction, count) / count for fraction in fractions}
