"""Score a model: whole-image or sliding-window inference over a split, confusion-matrix mIoU; and the
quality of a finished pseudo-label file from its stored signals (`eval --split pseudo`).
"""

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from cisctool.config import Config
from cisctool.console import progress_bar
from cisctool.data.masks import read_mask
from cisctool.data.splits import SplitEntry, split_entries
from cisctool.data.workers import inference_loader
from cisctool.report.confusion import ConfusionMatrix, collapsed_classes
from cisctool.report.quality import QualityAccumulator
from cisctool.store.checkpoints import load_inference_model
from cisctool.store.layout import RunLayout
from cisctool.store.pseudo_labels import PseudoLabels


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
    *,
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
    loader = inference_loader(entries, num_classes, ignore_index, device, with_masks=True, workers=workers,
                              batch_size=batch_size if mode == "whole" else 1)  # fmt: skip
    confusion = ConfusionMatrix(num_classes, ignore_index)
    model.eval().to(device)
    started = time.perf_counter()
    autocast = torch.autocast(device_type="cuda", enabled=amp and device.startswith("cuda"))
    with progress_bar() as bar, autocast:
        task = bar.add_task(description, total=len(entries))
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
        images=len(entries),
        seconds=time.perf_counter() - started,
        mode=mode,
        collapsed=collapsed_classes(confusion, class_names),
    )


def evaluate_round(config: Config, round_index: int, device: str) -> EvalResult:
    """Load round N's model.pt and score it on the val split with the config's eval mode."""
    model_path = RunLayout.of(config).model(round_index)
    model, _ = load_inference_model(model_path, expected=config)
    entries = split_entries(config, "val")
    return evaluate(
        model,
        entries,
        list(config.class_names),
        config.data.ignore_index,
        mode=config.eval.mode,
        crop_size=config.eval.crop_size,
        stride=config.eval.stride,
        batch_size=config.eval.batch_size,
        workers=config.train.workers,
        device=device,
        amp=config.train.amp,
        description=f"eval round {round_index}",
    )


def score_pseudo_labels(config: Config, round_index: int) -> dict[str, object]:
    """The quality report of a finished `pseudo.h5` from its stored signals (`eval --split pseudo`)."""
    entries = split_entries(config, "unlabeled")
    masks = {entry.id: entry.mask for entry in entries}
    signals = ["confidence", "cisc", "weight", "confidence_x_weight"]
    quality = QualityAccumulator(list(config.class_names), config.data.ignore_index, signals)
    with PseudoLabels(RunLayout.of(config).pseudo(round_index)) as stored, progress_bar() as bar:
        task = bar.add_task(f"score round {round_index} pseudo labels", total=len(stored))
        for index, image_id in enumerate(stored.ids):
            image = stored.image(index)
            mask_path = masks.get(image_id)
            truth = read_mask(mask_path) if mask_path is not None else None
            confidence, weight = image.confidence.astype(np.float32), image.weight.astype(np.float32)
            values = {"confidence": confidence, "cisc": image.cisc.astype(np.float32), "weight": weight,
                      "confidence_x_weight": confidence * weight}  # fmt: skip
            quality.add(image.raw_label, image.label, weight, image.reliability, values, truth)
            bar.advance(task)
        report = quality.report()
        report.update(round=round_index, guide=stored.attrs.get("guide"), weight_mode=stored.attrs.get("weight_mode"))
    return report
