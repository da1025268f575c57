"""What rounds ≥ 1 add to training which pseudo-labeled images, and how they are mixed.

- The reliable-image schedule: round 1 trains on the `ratio` most reliable
  unlabeled images (lowest reliability score, `rectify.reliability`: by default mean BCE of S_ŷ towards 1),
  later rounds on all, as CISC-R and ST++ do (`select = "reliable"`); `"reliable-always"` keeps the reliable part in every round, each
  round scoring its own teacher's pseudo labels.
- The pseudo loss: cross-entropy on rectified labels, each pixel weighted by
  the stored weight and normalised by the sum of weights; ignore pixels
  (dropped, padding) count for nothing.
- CutMix between the pseudo-labeled images of a batch (ST++'s strong view):
  the box is drawn from a generator seeded by (seed, step), so a resumed run
  mixes exactly as an uninterrupted one.
"""

import math

import numpy as np
import torch

CUTMIX_PROBABILITY = 0.5


def select_positions(reliability: np.ndarray, round_index: int, select: str, ratio: float) -> np.ndarray:
    """Split positions to train on: the ceil(ratio·N) lowest scores (images without CISC evidence, NaN,
    come last) in round 1 with `select = "reliable"` or in every round with `"reliable-always"`;
    otherwise every image."""
    count = len(reliability)
    reliable_round = select == "reliable-always" or (select == "reliable" and round_index == 1)
    if not reliable_round or ratio >= 1.0:
        return np.arange(count)
    keep = max(1, math.ceil(ratio * count))
    order = np.lexsort((np.arange(count), np.nan_to_num(reliability, nan=np.inf)))
    return np.sort(order[:keep])


def cutmix(
    images: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Paste a random box of another image of the batch into each image with probability 1/2.

    images B×3×H×W, labels and weights B×H×W (the box carries label and weight along).
    The box covers a fraction of the area drawn uniformly from [0.02, 0.4], as ST++'s.
    """
    batch, _, height, width = images.shape
    if batch < 2:
        return images, labels, weights
    mixed_images, mixed_labels, mixed_weights = images.clone(), labels.clone(), weights.clone()
    partners = torch.randperm(batch, generator=generator)
    draws = torch.rand(batch, 4, generator=generator)
    for slot in range(batch):  # at most B boxes per step: a loop over the batch, not over pixels
        if draws[slot, 0] >= CUTMIX_PROBABILITY or partners[slot] == slot:
            continue
        area = 0.02 + 0.38 * float(draws[slot, 1])
        box_height = max(1, min(height, round(math.sqrt(area) * height)))
        box_width = max(1, min(width, round(math.sqrt(area) * width)))
        top = int(float(draws[slot, 2]) * (height - box_height + 1))
        left = int(float(draws[slot, 3]) * (width - box_width + 1))
        rows, cols = slice(top, top + box_height), slice(left, left + box_width)
        source = int(partners[slot])
        mixed_images[slot, :, rows, cols] = images[source, :, rows, cols]
        mixed_labels[slot, rows, cols] = labels[source, rows, cols]
        mixed_weights[slot, rows, cols] = weights[source, rows, cols]
    return mixed_images, mixed_labels, mixed_weights
