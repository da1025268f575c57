"""One batch, from images to every per-pixel signal rectification acts on.

DataLoader workers decode → one forward per batch (AMP on CUDA) → prototypes
of every predicted class by einsum → one guide lookup per batch → CISC maps,
S_ŷ, weights in both modes and reliability on the model's device. Thresholds
(relabel, drop) are applied separately (`rectified_labels`), so `tune` can try
many on one batch's signals.

Batches are fixed slices of the split (batch b = images b·B … b·B+B−1), so a
resumed or sharded run pads and computes every image exactly as an
uninterrupted run would; random choices hash (seed, image position, class).
"""

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cisctool.config import Config, WeightMode, choices
from cisctool.method.cisc import (
    agreement,
    cisc_maps,
    confidence_weight,
    drop,
    image_reliability,
    pixel_weight,
    predicted_class_similarity,
    relabel,
    similarity_contrast,
    upsample_maps,
)
from cisctool.method.guides import Guides, GuideSource, official_slots
from cisctool.method.prior_alignment import align
from cisctool.method.prototypes import class_areas, class_prototypes, present_classes
from cisctool.method.stability import instability

WEIGHT_MODES = choices(WeightMode)
QUERY_KINDS = ("guided", "fallback", "unguided")


@dataclass(frozen=True)
class RectifySettings:
    """The config keys the per-batch maths reads."""

    num_classes: int
    ignore_index: int
    min_area: float
    guide_exclude: tuple[int, ...]
    weight_mode: str
    margin: float
    p_min: float
    cisc_min: float
    conf_min: float
    seed: int
    tta_scales: tuple[float, ...] = (1.0,)
    tta_flip: bool = False
    reliability: str = "cisc"
    class_factors: tuple[float, ...] = ()  # distribution alignment's (π_c / p̄_c)^τ; () = off
    class_conf_min: tuple[float, ...] = ()  # FreeMatch's thresholds τ_c by predicted class (conf_adaptive); () = off
    pseudo_source: str = "prediction"  # "masks": the true masks are the pseudo labels (the oracle)

    @classmethod
    def of(cls, config: Config) -> "RectifySettings":
        rectify = config.rectify
        return cls(
            config.data.num_classes, config.data.ignore_index, config.index.min_area,
            tuple(rectify.guide_exclude), rectify.weight_mode, rectify.margin, rectify.p_min,
            rectify.cisc_min, rectify.conf_min, config.train.seed,
            tuple(rectify.tta_scales) if rectify.tta else (1.0,), rectify.tta and rectify.tta_flip,
            rectify.reliability, pseudo_source=rectify.pseudo_source,
        )  # fmt: skip


@dataclass
class BatchSignals:
    """What one batch's forward and guides give, before thresholds (padded B×H×W unless noted).

    Kept on the model's device; `tune` applies many thresholds to one of these.
    """

    probabilities: torch.Tensor  # B×C×H×W
    raw_label: torch.Tensor  # ignore on padding
    confidence: torch.Tensor
    maps: torch.Tensor  # B×K×H×W CISC maps of the guided slots
    slot_classes: torch.Tensor  # B×K, −1 = empty slot
    cisc: torch.Tensor  # S_ŷ, NaN where ŷ has no guide
    contrast: torch.Tensor | None  # S_ŷ − best other guided S (quality report only)
    weights: dict[str, torch.Tensor]  # per weight mode (only the configured one without a report)
    reliability: torch.Tensor  # B image scores (`rectify.reliability`), lower = more reliable
    guide_positions: torch.Tensor  # B×C the guide's labeled position per class index, −1 none
    queries: torch.Tensor  # B×3 class queries of each image: guided, fallback, unguided (QUERY_KINDS)


def predict(
    model: nn.Module, images: torch.Tensor, scales: tuple[float, ...] = (1.0,), *, flip: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities B×C×H×W (float32) and features B×D×h×w of the plain view.

    Probabilities average the softmax over `scales` × ({plain, mirrored} with `flip`),
    each view's logits resized to the image first, as the official stage 2 and ST++
    predict pseudo labels; features always come from the plain view (one forward).
    """
    output = model(images)
    size = images.shape[-2:]
    probabilities = torch.zeros_like(output.logits, dtype=torch.float32)
    views = 0
    for scale in scales:
        scaled = images if scale == 1.0 else F.interpolate(images, scale_factor=scale, mode="bilinear")
        for mirrored in (False, True) if flip else (False,):
            if scale == 1.0 and not mirrored:
                logits = output.logits.float()
            else:
                logits = model(scaled.flip(-1) if mirrored else scaled).logits.float()
                logits = logits.flip(-1) if mirrored else logits
            if logits.shape[-2:] != size:
                logits = F.interpolate(logits, size=size, mode="bilinear")
            probabilities += logits.softmax(dim=1)
            views += 1
    return probabilities / views, output.features


def batch_signals(
    model: nn.Module,
    images: torch.Tensor,
    valid: torch.Tensor,
    positions: np.ndarray,
    own_positions: np.ndarray,
    source: GuideSource | None,
    settings: RectifySettings,
    *,
    report: bool = True,
    snapshots: tuple[nn.Module, ...] = (),
) -> BatchSignals:
    """Predict and guide one padded batch: every signal the thresholds act on (and, with
    `report`, the extra ones the quality report compares: both weight modes, the S contrast).

    images B×3×H×W, valid B×H×W (false on padding), positions B split positions,
    own_positions B labeled positions of the images themselves (−1 if not labeled). With
    `settings.class_factors`, every signal reads the aligned probabilities. Without a
    source (`rectify.enabled = false`) nothing is guided: labels stay raw, weights 1,
    and reliability is mean −log confidence. With `snapshots` (earlier models of the same
    training, `rectify.reliability = "stability"`), reliability is ST++'s instability instead.
    """
    probabilities, features = predict(model, images, settings.tta_scales, flip=settings.tta_flip)
    if settings.class_factors:
        probabilities = align(probabilities, torch.tensor(settings.class_factors))
    confidence, raw = probabilities.max(dim=1)
    raw = torch.where(valid, raw, torch.full_like(raw, settings.ignore_index))
    slots = _guide_slots(features, raw, positions, own_positions, source, settings)
    maps = upsample_maps(cisc_maps(features, slots.vectors), tuple(images.shape[-2:]))
    cisc = predicted_class_similarity(maps, raw, slots.classes)
    modes = WEIGHT_MODES if report else (settings.weight_mode,)
    return BatchSignals(
        probabilities=probabilities,
        raw_label=raw,
        confidence=confidence,
        maps=maps,
        slot_classes=slots.classes,
        cisc=cisc,
        contrast=similarity_contrast(maps, raw, slots.classes) if report else None,
        weights=_weights(modes, maps, raw, slots.classes, confidence, cisc, positions, settings.seed),
        reliability=_stability(snapshots, images, raw, valid, settings) if snapshots else image_reliability(
            cisc if source is not None else None, confidence, valid, settings.reliability
        ),
        guide_positions=slots.positions,
        queries=slots.queries,
    )


@dataclass
class _GuideSlots:
    """A batch's guided classes, one slot per present class of each image (S the most any image has):
    classes B×S (−1: no class, or no guide found), vectors B×S×D (the guides' prototypes), positions B×C
    (the guide's labeled position per class index, −1 none), queries B×3 (classes guided, fallen back to
    the class mean, unguided)."""

    classes: torch.Tensor
    vectors: torch.Tensor
    positions: torch.Tensor
    queries: torch.Tensor


def _guide_slots(
    features: torch.Tensor,
    raw: torch.Tensor,
    positions: np.ndarray,
    own_positions: np.ndarray,
    source: GuideSource | None,
    settings: RectifySettings,
) -> _GuideSlots:
    """Pool each image's present classes (features B×D×h×w, raw B×H×W) and look up a guide for each:
    none without a source (self-training) or for `guide_exclude`'s classes."""
    num_classes, ignore = settings.num_classes, settings.ignore_index
    prototypes, _ = class_prototypes(features, raw, num_classes, ignore)
    present = present_classes(class_areas(raw, num_classes, ignore), settings.min_area)
    present[:, list(settings.guide_exclude)] = False
    if source is None:  # self-training: no class gets a guide
        present[:] = False
    image_slot, cls = torch.nonzero(present, as_tuple=True)
    slot_of = (present.cumsum(dim=1) - 1)[image_slot, cls]
    cls_host, image_host = cls.cpu().numpy(), image_slot.cpu().numpy()
    queries = prototypes[image_slot, cls].cpu().numpy()
    guides = (
        source.choose(queries, cls_host, positions[image_host], own_positions[image_host])
        if source is not None else Guides.none(queries.shape[1])
    )  # fmt: skip
    batch, width = raw.shape[0], max(int(present.sum(dim=1).max()), 1)
    device = raw.device
    guided = torch.from_numpy(guides.guided).to(device)
    slot_classes = torch.full((batch, width), -1, dtype=torch.long, device=device)
    slot_classes[image_slot, slot_of] = torch.where(guided, cls, torch.full_like(cls, -1))
    guide_vectors = torch.zeros(batch, width, features.shape[1], device=device)
    guide_vectors[image_slot, slot_of] = torch.from_numpy(guides.vectors).to(device)
    guide_positions = torch.full((batch, num_classes), -1, dtype=torch.long, device=device)
    guide_positions[image_slot, cls] = torch.from_numpy(guides.labeled_positions).to(device)
    counts = torch.from_numpy(np.stack([
        np.bincount(image_host, weights=kind, minlength=batch).astype(np.int64)
        for kind in (guides.guided & ~guides.fallback, guides.fallback, ~guides.guided)
    ], axis=1))  # fmt: skip
    return _GuideSlots(slot_classes, guide_vectors, guide_positions, counts)


def _weights(
    modes: tuple[str, ...],
    maps: torch.Tensor,
    raw: torch.Tensor,
    slot_classes: torch.Tensor,
    confidence: torch.Tensor,
    cisc: torch.Tensor,
    positions: np.ndarray,
    seed: int,
) -> dict[str, torch.Tensor]:
    """Each of `modes`' B×H×W pixel weights: from the guides' agreement ("official": one guide per image,
    drawn by `seed` and the image's split position; "mean": all guides) or from confidence and S
    ("confidence")."""
    agreements = agreement(maps, raw, slot_classes)
    chosen = official_slots((slot_classes >= 0).cpu().numpy(), positions, seed)
    chosen_slot = torch.from_numpy(chosen).to(maps.device)
    return {
        mode: confidence_weight(confidence, cisc) if mode == "confidence"
        else pixel_weight(agreements, slot_classes, mode, chosen_slot)
        for mode in modes
    }  # fmt: skip


def _stability(
    snapshots: tuple[nn.Module, ...], images: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor,
    settings: RectifySettings,
) -> torch.Tensor:
    """ST++'s score of each image: 1 − mean IoU of each snapshot's argmax (the same views as the
    model's) against the model's, B."""
    predicted = []
    for snapshot in snapshots:
        probabilities = predict(snapshot, images, settings.tta_scales, flip=settings.tta_flip)[0]
        if settings.class_factors:
            probabilities = align(probabilities, torch.tensor(settings.class_factors))
        predicted.append(probabilities.argmax(dim=1))
    return instability(labels, predicted, valid, settings.num_classes)


def pseudo_labels(signals: BatchSignals, settings: RectifySettings, masks: torch.Tensor) -> torch.Tensor:
    """What the pseudo file stores as labels: the rectified prediction, or the true masks B×H×W
    (`rectify.pseudo_source = "masks"`, the oracle; ignore on padding as collated)."""
    if settings.pseudo_source == "masks":
        return masks.to(signals.raw_label.device)
    return rectified_labels(
        signals, settings.margin, settings.p_min, settings.cisc_min, settings.conf_min, settings.ignore_index,
        class_conf_min=settings.class_conf_min,
    )


def rectified_labels(
    signals: BatchSignals, margin: float, p_min: float, cisc_min: float, conf_min: float, ignore_index: int,
    class_conf_min: tuple[float, ...] = (),
) -> torch.Tensor:  # fmt: skip
    """Relabel (S_c' − S_ŷ > margin and P_c' ≥ p_min), then drop (cisc < cisc_min, confidence < conf_min, or
    confidence under the predicted class's `class_conf_min`); padding stays ignore (raw is ignore there)."""
    label = relabel(
        signals.raw_label, signals.maps, signals.probabilities, signals.slot_classes, signals.cisc, margin, p_min
    )
    floor = conf_min
    if class_conf_min:  # ŷ's threshold; padding (ignore) reads any class's, it stays ignore below
        thresholds = torch.tensor(class_conf_min, dtype=signals.confidence.dtype, device=signals.confidence.device)
        floor = torch.clamp_min(thresholds[signals.raw_label.clamp_max(len(class_conf_min) - 1)], conf_min)
    label = drop(label, signals.cisc, signals.confidence, cisc_min, floor, ignore_index)
    return torch.where(signals.raw_label == ignore_index, signals.raw_label, label)


def host_arrays(signals: BatchSignals, label: torch.Tensor) -> dict[str, np.ndarray]:
    """What the writer thread needs, on the host in one transfer per tensor."""
    arrays = {
        "label": label.to(torch.uint8),
        "raw_label": signals.raw_label.to(torch.uint8),
        "confidence": signals.confidence.half(),
        "cisc": signals.cisc.half(),
        "reliability": signals.reliability.float(),
        "guide_positions": signals.guide_positions.int(),
        "queries": signals.queries,
        **{f"weight_{mode}": weight.half() for mode, weight in signals.weights.items()},
    }
    if signals.contrast is not None:
        arrays["contrast"] = signals.contrast.half()
    return {name: tensor.cpu().numpy() for name, tensor in arrays.items()}


def fixed_batches(count: int, batch_size: int) -> list[range]:
    """Positions 0…count−1 cut into consecutive batches (the same cut on every run); ranges, so that a
    split of 100k images costs no 100k Python ints."""
    return [range(start, min(start + batch_size, count)) for start in range(0, count, batch_size)]


def cropped_images(
    positions: np.ndarray,
    sizes: np.ndarray,
    arrays: dict[str, np.ndarray],
    masks: np.ndarray,
    *,
    with_masks: bool,
) -> Iterator[tuple[int, dict[str, np.ndarray], np.ndarray | None]]:
    """Each image of a host batch: (split position, its H×W arrays, its mask or None)."""
    for slot, position in enumerate(positions.tolist()):
        height, width = (int(value) for value in sizes[slot])
        crop = {name: value[slot, :height, :width] for name, value in arrays.items() if value.ndim == 3}
        crop.update({name: value[slot] for name, value in arrays.items() if value.ndim < 3})
        yield position, crop, masks[slot, :height, :width] if with_masks else None
