"""Cross-entropy losses of a training step: CE (or OHEM CE) on labeled masks, and weighted CE on pseudo
labels (each pixel weighted by its stored weight, normalised by the sum of weights); ignore pixels count
for nothing."""

import torch
import torch.nn.functional as F


def masked_cross_entropy(logits: torch.Tensor, masks: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Mean CE over non-ignore pixels; 0 (not NaN) when a batch has none. logits B×C×H×W, masks B×H×W."""
    total = F.cross_entropy(logits.float(), masks, ignore_index=ignore_index, reduction="sum")
    return total / (masks != ignore_index).sum().clamp_min(1)


def ohem_cross_entropy(
    logits: torch.Tensor, masks: torch.Tensor, ignore_index: int, threshold: float, min_kept: float
) -> torch.Tensor:
    """Mean CE over the hard pixels only, as mmsegmentation's OHEM sampler and UniMatch's Cityscapes
    loss: those whose true-class probability is ≤ `threshold`, and at least the `min_kept` share of
    the non-ignore pixels (the least probable), so thin and rare classes are not outvoted by the easy
    bulk. The cut is found by sorting, not by reading a count, so a GPU step never waits on the host."""
    per_pixel = F.cross_entropy(logits.float(), masks, ignore_index=ignore_index, reduction="none").flatten()
    valid = masks.flatten() != ignore_index
    with torch.no_grad():
        probability = torch.where(valid, torch.exp(-per_pixel), torch.full_like(per_pixel, 2.0))  # ignore: last
        ordered = probability.sort().values
        kth = (valid.sum() * min_kept).long().clamp(1, ordered.numel()) - 1
        cut = ordered.gather(0, kth.view(1)).clamp_min(threshold)
        kept = valid & (probability <= cut)
    return (per_pixel * kept).sum() / kept.sum().clamp_min(1)


def weighted_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, ignore_index: int
) -> torch.Tensor:
    """Σ w·CE / Σ w over non-ignore pixels (0 when nothing counts). logits B×C×H×W, labels/weights B×H×W."""
    per_pixel = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index, reduction="none")
    counted = (labels != ignore_index).float() * weights.float()
    return (per_pixel * counted).sum() / counted.sum().clamp_min(1e-6)
