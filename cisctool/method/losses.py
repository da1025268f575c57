"""Cross-entropy losses of a training step: CE on labeled masks, and weighted CE on pseudo labels (each
pixel weighted by its stored weight, normalised by the sum of weights); ignore pixels count for nothing."""

import torch
import torch.nn.functional as F


def masked_cross_entropy(logits: torch.Tensor, masks: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Mean CE over non-ignore pixels; 0 (not NaN) when a batch has none. logits B×C×H×W, masks B×H×W."""
    total = F.cross_entropy(logits.float(), masks, ignore_index=ignore_index, reduction="sum")
    return total / (masks != ignore_index).sum().clamp_min(1)


def weighted_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, ignore_index: int
) -> torch.Tensor:
    """Σ w·CE / Σ w over non-ignore pixels (0 when nothing counts). logits B×C×H×W, labels/weights B×H×W."""
    per_pixel = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index, reduction="none")
    counted = (labels != ignore_index).float() * weights.float()
    return (per_pixel * counted).sum() / counted.sum().clamp_min(1e-6)
