"""Confusion-matrix mIoU and whole-image / sliding-window inference.

mIoU is the mean over classes that occur (in prediction or ground truth) of
TP / (TP + FP + FN), accumulated over the whole split as in torchvision's
reference `ConfusionMatrix` and mmsegmentation.
"""

import functools
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from cisctool.console import progress_bar
from cisctool.data.datasets import InferenceDataset, pad_collate
from cisctool.data.splits import SplitEntry
from cisctool.data.workers import exit_with_parent


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


@dataclass
class EvalResult:
    """Scores of one split; IoUs in [0, 1]. `collapsed` names the classes the masks hold
    that the model never predicts or scores below COLLAPSE_IOU: a model that learned
    nothing of them, which later rounds' pseudo labels would only repeat."""

    class_names: list[str]
    per_class_iou: list[float]
    mean_iou: float
    pixel_accuracy: float
    images: int
    seconds: float
    mode: str
    extra: dict[str, float] = field(default_factory=dict)
    collapsed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "mean_iou": self.mean_iou,
            "pixel_accuracy": self.pixel_accuracy,
            "per_class_iou": {
                name: (None if math.isnan(value) else value)
                for name, value in zip(self.class_names, self.per_class_iou, strict=True)
            },
            "images": self.images,
            "seconds": self.seconds,
            "collapsed_classes": self.collapsed,
            "mode": self.mode,
        }


def predict_logits(
    model: nn.Module, images: torch.Tensor, mode: str, crop_size: int, stride: int
) -> torch.Tensor:
    """B×3×H×W → B×C×H×W logits, the whole image at once or averaged over sliding windows."""
    if mode == "whole":
        return model(images).logits
    return _slide_logits(model, images, crop_size, stride)


def _slide_logits(model: nn.Module, images: torch.Tensor, crop_size: int, stride: int) -> torch.Tensor:
    """Windows of crop_size every `stride` pixels (last one flush with the border), averaged."""
    batch, _, height, width = images.shape
    crop_height, crop_width = min(crop_size, height), min(crop_size, width)
    tops = _window_starts(height, crop_height, stride)
    lefts = _window_starts(width, crop_width, stride)
    logits = None
    hits = torch.zeros(1, 1, height, width, device=images.device)
    for top in tops:
        for left in lefts:
            window = images[:, :, top : top + crop_height, left : left + crop_width]
            window_logits = model(window).logits.float()
            if logits is None:
                logits = images.new_zeros(batch, window_logits.shape[1], height, width).float()
            logits[:, :, top : top + crop_height, left : left + crop_width] += window_logits
            hits[:, :, top : top + crop_height, left : left + crop_width] += 1
    return logits / hits


def _window_starts(length: int, window: int, stride: int) -> list[int]:
    starts = list(range(0, max(length - window, 0) + 1, stride))
    if starts[-1] + window < length:
        starts.append(length - window)
    return starts


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    entries: list[SplitEntry],
    class_names: list[str],
    ignore_index: int,
    mode: str = "whole",
    crop_size: int = 513,
    stride: int = 341,
    batch_size: int = 8,
    workers: int = 0,
    device: str = "cpu",
    amp: bool = False,
    description: str = "eval",
) -> EvalResult:
    """Predict every entry (masks required) and score it; images of one batch are padded alike."""
    num_classes = len(class_names)
    dataset = InferenceDataset(entries, num_classes, ignore_index, with_masks=True)
    loader = DataLoader(
        dataset,
        batch_size=batch_size if mode == "whole" else 1,
        num_workers=workers,
        worker_init_fn=exit_with_parent(),
        collate_fn=functools.partial(pad_collate, ignore_index=ignore_index),
    )
    confusion = ConfusionMatrix(num_classes, ignore_index)
    model.eval().to(device)
    started = time.perf_counter()
    autocast = torch.autocast(device_type="cuda", enabled=amp and device.startswith("cuda"))
    with progress_bar() as bar, autocast:
        task = bar.add_task(description, total=len(dataset))
        for batch in loader:
            images = batch["image"].to(device, non_blocking=True)
            logits = predict_logits(model, images, mode, crop_size, stride)
            confusion.update(logits.argmax(dim=1).cpu(), batch["mask"])
            bar.advance(task, len(batch["index"]))
    return EvalResult(
        class_names=list(class_names),
        per_class_iou=confusion.iou(),
        mean_iou=confusion.mean_iou(),
        pixel_accuracy=confusion.pixel_accuracy(),
        images=len(dataset),
        seconds=time.perf_counter() - started,
        mode=mode,
        collapsed=collapsed_classes(confusion, class_names),
    )


def collapsed_classes(confusion: ConfusionMatrix, class_names: list[str]) -> list[str]:
    """Classes present in the ground truth that are never predicted or have IoU < COLLAPSE_IOU."""
    present, predicted = confusion.present_and_predicted()
    return [
        name
        for name, iou, here, seen in zip(class_names, confusion.iou(), present, predicted, strict=True)
        if here and (not seen or iou < COLLAPSE_IOU)
    ]

