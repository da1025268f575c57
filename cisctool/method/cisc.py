"""The CISC maths: similarity maps to guide prototypes, loss weights, relabel and drop rules, image
reliability and the round-0 consistency loss; pure batched functions, no I/O.

Shapes: B images, C classes, D feature channels, h×w feature resolution
(stride 4 for DeepLabV3+), H×W label resolution. `ignore_index` pixels never
count as a class. No Python loop runs over images or classes.
"""

import math

import torch
import torch.nn.functional as F

from cisctool.method.prototypes import class_prototypes, resize_masks


def cisc_maps(features: torch.Tensor, guides: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every pixel to every guide prototype, one batched matmul.

    features B×D×h×w, guides B×K×D (any norm) → B×K×h×w in [−1, 1]
    ([0, 1] for post-ReLU features and prototypes).
    """
    unit_features = F.normalize(features.float(), dim=1)
    unit_guides = F.normalize(guides.float(), dim=-1)
    return torch.einsum("bdhw,bkd->bkhw", unit_features, unit_guides)


def consistency_loss(
    features: torch.Tensor,
    masks: torch.Tensor,
    partner_features: torch.Tensor,
    partner_masks: torch.Tensor,
    shared_class: torch.Tensor,
    num_classes: int,
    ignore_index: int,
) -> torch.Tensor:
    """Round-0 CISC consistency loss on labeled pairs, both directions (the official stage 1, loss = CE + λ·BCE).

    features, partner_features B×D×h×w; masks, partner_masks B×H×W;
    shared_class B (−1 = no shared class). Each image's CISC map towards the
    partner's prototype of the shared class is pushed by BCE towards the
    image's binary region of that class, over its valid pixels. Pairs whose
    class vanished from either crop carry no loss. Returns a scalar (0 when
    no pair qualifies).
    """
    forward, forward_weight = _one_direction(
        features, masks, partner_features, partner_masks, shared_class, num_classes, ignore_index
    )
    backward, backward_weight = _one_direction(
        partner_features, partner_masks, features, masks, shared_class, num_classes, ignore_index
    )
    pairs = (forward_weight * backward_weight).clamp(max=1.0)
    return ((forward + backward) * pairs).sum() / pairs.sum().clamp_min(1.0)


def _one_direction(
    features: torch.Tensor,
    masks: torch.Tensor,
    guide_features: torch.Tensor,
    guide_masks: torch.Tensor,
    shared_class: torch.Tensor,
    num_classes: int,
    ignore_index: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair BCE (B) of one image's CISC map vs its class region, and whether the pair counts (B)."""
    batch = torch.arange(features.shape[0], device=features.device)
    target_class = shared_class.clamp_min(0)
    guide_prototypes, guide_counts = class_prototypes(
        guide_features, guide_masks, num_classes, ignore_index
    )
    own_low_res = resize_masks(masks, tuple(features.shape[-2:]))
    own_present = (own_low_res == target_class.view(-1, 1, 1)).any(dim=2).any(dim=1)
    guide = guide_prototypes[batch, target_class].unsqueeze(1)
    similarity = cisc_maps(features, guide)
    similarity = F.interpolate(similarity, size=masks.shape[-2:], mode="bilinear", align_corners=False)
    similarity = similarity.squeeze(1).clamp(0.0, 1.0)
    region = (masks == target_class.view(-1, 1, 1)).float()
    valid = (masks != ignore_index).float()
    pixel_loss = F.binary_cross_entropy(similarity, region, reduction="none")
    per_image = (pixel_loss * valid).sum(dim=(1, 2)) / valid.sum(dim=(1, 2)).clamp_min(1.0)
    counts = (shared_class >= 0) & (guide_counts[batch, target_class] > 0)
    return per_image, (counts & own_present).float()


# ---------------------------------------------------------------- rectification
# K guide slots per image: slot_classes B×K holds the class each slot's guide
# stands for, −1 for an empty slot (images of a batch have different class counts).


def upsample_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """B×K×h×w CISC maps → B×K×H×W, bilinear (they are similarities, not labels)."""
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def slot_regions(prediction: torch.Tensor, slot_classes: torch.Tensor) -> torch.Tensor:
    """B×H×W labels, B×K slot classes → B×K×H×W bools M_c(x) = [ŷ(x) = c] (false for empty slots)."""
    return prediction.unsqueeze(1) == slot_classes[:, :, None, None]


def predicted_class_similarity(
    maps: torch.Tensor, prediction: torch.Tensor, slot_classes: torch.Tensor
) -> torch.Tensor:
    """cisc(x) = S_ŷ(x)(x), B×H×W; NaN where the predicted class has no guide."""
    regions = slot_regions(prediction, slot_classes)
    similarity = (maps * regions).sum(dim=1)
    return torch.where(regions.any(dim=1), similarity, torch.full_like(similarity, math.nan))


def agreement(maps: torch.Tensor, prediction: torch.Tensor, slot_classes: torch.Tensor) -> torch.Tensor:
    """a_c(x) = 1 − |M_c(x) − S_c(x)| per slot, B×K×H×W (S clamped to [0, 1])."""
    regions = slot_regions(prediction, slot_classes).to(maps.dtype)
    return 1.0 - (regions - maps.clamp(0.0, 1.0)).abs()


def pixel_weight(
    agreements: torch.Tensor, slot_classes: torch.Tensor, mode: str, chosen_slot: torch.Tensor
) -> torch.Tensor:
    """Loss weight per pixel, B×H×W; 1 in images without any guided class.

    mode "official": the agreement of one slot per image (`chosen_slot` B, −1 = none),
    as the paper's code; "mean": the mean agreement over every guided slot
    (mode "confidence" is `confidence_weight`).
    """
    guided = (slot_classes >= 0).to(agreements.dtype)[:, :, None, None]
    if mode == "mean":
        total = (agreements * guided).sum(dim=1)
        count = guided.sum(dim=1)
        return torch.where(count > 0, total / count.clamp_min(1.0), torch.ones_like(total))
    if mode != "official":
        raise ValueError(f"unknown weight mode {mode!r}")
    slot = chosen_slot.clamp_min(0)[:, None, None, None].expand(-1, 1, *agreements.shape[-2:])
    picked = agreements.gather(1, slot).squeeze(1)
    return torch.where((chosen_slot >= 0)[:, None, None], picked, torch.ones_like(picked))


def confidence_weight(confidence: torch.Tensor, cisc: torch.Tensor) -> torch.Tensor:
    """Loss weight max P × S_ŷ, B×H×W: both signals must agree; S counts as 1 where ŷ has no guide
    (`cisc` NaN), so an unguided pixel keeps its confidence."""
    return confidence * torch.nan_to_num(cisc.clamp(0.0, 1.0), nan=1.0)


def relabel(
    labels: torch.Tensor,
    maps: torch.Tensor,
    probabilities: torch.Tensor,
    slot_classes: torch.Tensor,
    cisc: torch.Tensor,
    margin: float,
    p_min: float,
) -> torch.Tensor:
    """Move a pixel to guided class c' when S_c' − S_ŷ > margin and P_c' ≥ p_min (largest gap wins).

    labels B×H×W, maps B×K×H×W, probabilities B×C×H×W, cisc B×H×W (NaN = ŷ unguided:
    such pixels are compared against S_ŷ = 0).
    """
    if math.isinf(margin):
        return labels
    slot_probability = probabilities.gather(
        1, slot_classes.clamp_min(0)[:, :, None, None].expand(-1, -1, *labels.shape[-2:])
    )
    gap = maps - torch.nan_to_num(cisc, nan=0.0).unsqueeze(1)
    eligible = (gap > margin) & (slot_probability >= p_min) & (slot_classes >= 0)[:, :, None, None]
    gap = torch.where(eligible, gap, torch.full_like(gap, -math.inf))
    best_gap, best_slot = gap.max(dim=1)
    new_class = slot_classes.gather(1, best_slot.flatten(1)).view_as(labels)
    return torch.where(torch.isfinite(best_gap), new_class, labels)


def drop(
    labels: torch.Tensor,
    cisc: torch.Tensor,
    confidence: torch.Tensor,
    cisc_min: float,
    conf_min: float | torch.Tensor,
    ignore_index: int,
) -> torch.Tensor:
    """ignore_index where cisc < cisc_min (guided pixels only) or confidence < conf_min (a number, or one per
    pixel)."""
    dropped = (cisc < cisc_min) | (confidence < conf_min)  # NaN < x is false: unguided pixels stay
    return torch.where(dropped, torch.full_like(labels, ignore_index), labels)


def reliability(cisc: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Image score mean_x BCE(clamp(S_ŷ(x), 0, 1), 1) over valid guided pixels, B (lower = more reliable).

    NaN for an image with no guided pixel (no evidence either way).
    """
    counted = valid & ~torch.isnan(cisc)
    loss = -torch.log(torch.nan_to_num(cisc, nan=1.0).clamp(0.0, 1.0)).clamp(max=100.0)
    total = (loss * counted).sum(dim=(1, 2))
    count = counted.sum(dim=(1, 2))
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, math.nan))


def image_reliability(
    cisc: torch.Tensor | None, confidence: torch.Tensor, valid: torch.Tensor, mode: str
) -> torch.Tensor:
    """The score the reliable part is chosen by, B (lower = more reliable).

    No CISC (self-training): mean −log confidence. "cisc": the paper's `reliability` of S_ŷ.
    "cisc+confidence": the two summed, NaN where S_ŷ has no evidence. On both benchmarks the sum
    picked a better-labelled half than either term on the demo and than S_ŷ alone on aerial
    (docs/evidence.md, "Which half round 1 trains on").
    """
    if cisc is None:
        return reliability(confidence, valid)
    score = reliability(cisc, valid)
    return score + reliability(confidence, valid) if mode == "cisc+confidence" else score


def similarity_contrast(maps: torch.Tensor, prediction: torch.Tensor, slot_classes: torch.Tensor) -> torch.Tensor:
    """S_ŷ(x) − max over the other guided classes S_c'(x), B×H×W.

    The margin the relabel rule acts on; NaN where ŷ has no guide or no other
    class of the image has one.
    """
    regions = slot_regions(prediction, slot_classes)
    others = (slot_classes >= 0)[:, :, None, None] & ~regions
    own = torch.where(regions.any(dim=1), (maps * regions).sum(dim=1), torch.full_like(maps[:, 0], math.nan))
    best_other = torch.where(others, maps, torch.full_like(maps, -math.inf)).max(dim=1).values
    return torch.where(torch.isfinite(best_other), own - best_other, torch.full_like(own, math.nan))
