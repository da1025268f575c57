"""How many wrong pixels a review score stands for, calibrated on val (for unlabeled images without masks).

The review score is Σ(1 − confidence)²: it grows with the doubtful pixels, but it
is not itself a count. The model that made a round's pseudo labels predicts the
val images as rectify predicts (the config's TTA, padded alike); the ratio of
their wrong pixels to their summed (1 − confidence)² scales the score into an
estimate of wrong pixels per unlabeled image.
"""

from dataclasses import dataclass
from pathlib import Path

import torch

from cisctool.config import Config
from cisctool.console import progress_bar
from cisctool.data.datasets import InferenceDataset, pad_collate
from cisctool.data.splits import read_split
from cisctool.method.signals import predict
from cisctool.store.checkpoints import load_inference_model

SIZE_DIVISOR = 32  # as rectify pads its batches (steps/signal_stream.py)


@dataclass
class Calibration:
    """Val's summed (1 − confidence)² and its true count of wrong pixels, over `images` images."""

    images: int
    estimated: float
    wrong: int

    @property
    def factor(self) -> float:
        """What one unit of the review score is worth in wrong pixels."""
        return self.wrong / self.estimated if self.estimated > 0 else 1.0


@torch.inference_mode()
def val_calibration(config: Config, model_path: Path) -> Calibration:
    """Predict val with the model at `model_path` (CPU, the config's TTA) and compare Σ(1 − confidence)²
    with the wrong pixels, both over the pixels val labels."""
    ignore = config.data.ignore_index
    entries = read_split(config.data_root / config.data.val, config.data_root, masks_required=True)
    dataset = InferenceDataset(entries, config.data.num_classes, ignore, with_masks=True)
    model, _ = load_inference_model(model_path, expected=config)
    model.eval()
    scales, flip = tuple(config.rectify.tta_scales), config.rectify.tta_flip
    estimated, wrong = 0.0, 0
    with progress_bar() as bar:
        for index in bar.track(range(len(dataset)), description="review score calibration on val"):
            batch = pad_collate([dataset[index]], ignore_index=ignore, size_divisor=SIZE_DIVISOR)
            probabilities, _ = predict(model, batch["image"], scales, flip=flip)
            height, width = (int(value) for value in batch["sizes"][0])
            confidence, label = probabilities[0, :, :height, :width].max(dim=0)
            truth = batch["mask"][0, :height, :width]
            counted = truth != ignore
            estimated += float(((1.0 - confidence.double())[counted] ** 2).sum())
            wrong += int((label != truth)[counted].sum())
    return Calibration(len(dataset), estimated, wrong)
