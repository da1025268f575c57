"""Confusion-matrix mIoU, and the classes a model never learned.

mIoU is the mean over classes that occur (in prediction or ground truth) of
TP / (TP + FP + FN), accumulated over the whole split as in torchvision's
reference `ConfusionMatrix` and mmsegmentation.
"""

from __future__ import annotations

import math

import numpy as np
import torch


class ConfusionMatrix:
    """C×C counts, rows = ground truth, columns = prediction; ignore pixels skipped."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """prediction, target: any equal shapes of class indices."""
        valid = target != self.ignore_index
        codes = target[valid].long() * self.num_classes + prediction[valid].long()
        counts = torch.bincount(codes.cpu(), minlength=self.num_classes**2)
        self.matrix += counts.view(self.num_classes, self.num_classes)

    def update_numpy(self, prediction: np.ndarray, target: np.ndarray) -> None:
        """As `update`, for numpy arrays (the writer thread's per-image path)."""
        valid = target != self.ignore_index
        codes = target[valid].astype(np.int64) * self.num_classes + prediction[valid].astype(np.int64)
        counts = np.bincount(codes, minlength=self.num_classes**2)
        self.matrix += torch.from_numpy(counts).view(self.num_classes, self.num_classes)

    def iou(self) -> list[float]:
        """Per-class IoU; NaN for a class absent from both prediction and ground truth."""
        matrix = self.matrix.double()
        true_positive = matrix.diag()
        union = matrix.sum(0) + matrix.sum(1) - true_positive
        return [
            float(tp / u) if u > 0 else math.nan for tp, u in zip(true_positive, union, strict=True)
        ]

    def mean_iou(self) -> float:
        values = [value for value in self.iou() if not math.isnan(value)]
        return sum(values) / len(values) if values else math.nan

    def present_and_predicted(self) -> tuple[list[bool], list[bool]]:
        """Per class: does it occur in the ground truth; is it ever predicted."""
        return (self.matrix.sum(1) > 0).tolist(), (self.matrix.sum(0) > 0).tolist()

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(self.matrix.diag().sum()) / float(total) if total > 0 else math.nan


# A class the masks hold that the model scores below this IoU (or never predicts) has collapsed.
COLLAPSE_IOU = 0.05


def collapsed_classes(confusion: ConfusionMatrix, class_names: list[str]) -> list[str]:
    """Classes present in the ground truth that are never predicted or have IoU < COLLAPSE_IOU."""
    present, predicted = confusion.present_and_predicted()
    return [
        name
        for name, iou, here, seen in zip(class_names, confusion.iou(), present, predicted, strict=True)
        if here and (not seen or iou < COLLAPSE_IOU)
    ]


def collapse_message(collapsed: list[str], what: str) -> str:
    """The warning for classes a model never learned (see `EvalResult.collapsed`)."""
    return (
        f"{what} never learned {', '.join(collapsed)} (IoU < {100 * COLLAPSE_IOU:.0f} % or never predicted on val); "
        "pseudo labels from it will repeat that: check the recipe (train.epochs, train.lr, "
        "train.consistency_weight, model.pretrained) before spending rounds"
    )
