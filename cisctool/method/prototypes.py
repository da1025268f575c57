"""Class prototypes by masked average pooling, and which classes an image holds.

Shapes: B images, C classes, D feature channels, h×w feature resolution, H×W
label resolution; `ignore_index` pixels never count as a class. No Python loop
runs over images or classes.
"""

import numpy as np
import torch
import torch.nn.functional as F

PROTOTYPE_EPS = 5e-4


def one_hot_masks(masks: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """B×H×W class indices → B×C×H×W float one-hot; ignore pixels are all-zero."""
    valid = masks != ignore_index
    safe = torch.where(valid, masks, torch.zeros_like(masks))
    encoded = F.one_hot(safe, num_classes).permute(0, 3, 1, 2).float()
    return encoded * valid.unsqueeze(1)


def resize_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """B×H×W → B×h×w by nearest neighbour (labels must not be interpolated)."""
    resized = F.interpolate(masks.unsqueeze(1).float(), size=size, mode="nearest")
    return resized.squeeze(1).long()


def class_areas(masks: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """B×H×W → B×C fraction of each image's valid pixels that each class covers."""
    counts = one_hot_masks(masks, num_classes, ignore_index).sum(dim=(2, 3))
    return counts / counts.sum(dim=1, keepdim=True).clamp_min(1.0)


def present_classes(areas: torch.Tensor | np.ndarray, min_area: float) -> torch.Tensor | np.ndarray:
    """Area fractions (B×C, or C for one mask) → bools of the same shape: a class is present in an image
    when it covers ≥ min_area of the valid pixels and at least one pixel."""
    return (areas >= min_area) & (areas > 0)


def class_prototypes(
    features: torch.Tensor, masks: torch.Tensor, num_classes: int, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked average pooling of every class in every image, in one einsum.

    features B×D×h×w, masks B×H×W (resized to h×w, nearest) →
    (prototypes B×C×D, L2-normalised, zero for classes absent at h×w;
     pixel counts B×C at h×w).
    p_c = Σ_x F(x)·[m(x)=c] / (Σ_x [m(x)=c] + ε), ε = 5e-4.
    """
    low_res = resize_masks(masks, tuple(features.shape[-2:]))
    regions = one_hot_masks(low_res, num_classes, ignore_index).to(features.dtype)
    sums = torch.einsum("bchw,bdhw->bcd", regions, features)
    counts = regions.sum(dim=(2, 3))
    pooled = sums / (counts.unsqueeze(-1) + PROTOTYPE_EPS)
    return F.normalize(pooled.float(), dim=-1), counts.float()
