"""Distribution alignment of the pseudo labels' class probabilities (ReMixMatch, Berthelot et al. 2020).

A thin class (aerial roads, VOC's bottles) loses pixels to its neighbours in a
model trained on few labels, and self-training on those labels shrinks it
further, round by round. Scaling each class's probability by (π_c / p̄_c)^τ —
π the labeled masks' class shares, p̄ the model's mean prediction over the
unlabeled images — and renormalising moves the argmax towards the labeled
distribution without forcing it there: the boost is spent on pixels where the
class was already a close second.
"""

import numpy as np
import torch

# p̄ is estimated on at most this many unlabeled images, spread evenly over the split: a class
# share is steady long before the whole set is seen, and the pre-pass then costs a few per cent
# of a demo round's rectify rather than a second pass over the set.
PRIOR_SAMPLE_IMAGES = 64


def sample_positions(count: int, size: int = PRIOR_SAMPLE_IMAGES) -> list[int]:
    """`size` split positions spread evenly over 0…count−1 (all of them when count ≤ size); the
    same on every run and in every shard, so each computes the same p̄."""
    if count <= size:
        return list(range(count))
    return np.unique(np.linspace(0, count - 1, size).round().astype(np.int64)).tolist()


def alignment_factors(labeled_share: np.ndarray, mean_prediction: np.ndarray, strength: float) -> np.ndarray:
    """Per-class factors (π_c / p̄_c)^τ; a class absent from the labeled masks or never predicted keeps
    1 (there is nothing to align it to, and a 0 would forbid the class outright)."""
    factors = np.ones(len(labeled_share), dtype=np.float64)
    known = (labeled_share > 0) & (mean_prediction > 0)
    factors[known] = (labeled_share[known] / mean_prediction[known]) ** strength
    return factors


def align(probabilities: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """B×C×H×W probabilities scaled by the C class `factors` and renormalised over the classes."""
    aligned = probabilities * factors.to(probabilities).view(1, -1, 1, 1)
    return aligned / aligned.sum(dim=1, keepdim=True).clamp_min(torch.finfo(aligned.dtype).tiny)
