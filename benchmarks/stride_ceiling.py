"""What a prediction made at stride S can score at best, per class: a resolution ceiling.

    python benchmarks/stride_ceiling.py --config benchmarks/work/aerial/cisctool.toml --strides 4 8 16

DeepLabV3+ predicts at stride 4 and upsamples its logits bilinearly. Here the val masks' true class
fractions are pooled over S×S blocks (a perfect stride-S map), upsampled bilinearly to the image
and arg-maxed; the per-class IoU against the masks says how much of each class survives that
resolution alone. Thin classes (2–4 px roads) lose most of it.
"""

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cisctool.config import load_config
from cisctool.data.masks import read_mask
from cisctool.data.splits import read_split
from cisctool.report.confusion import ConfusionMatrix


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--strides", type=int, nargs="+", default=[4, 8, 16])
    args = parser.parse_args()
    config = load_config(args.config)
    classes, root = config.data.num_classes, config.data_root
    masks = [read_mask(entry.mask) for entry in read_split(root / config.data.val, root, masks_required=True)]
    names = config.data.class_names or [str(index) for index in range(classes)]
    print("stride  " + "  ".join(f"{name:>8}" for name in names))
    for stride in args.strides:
        print(
            f"{stride:>6}  "
            + "  ".join(
                f"{100 * iou:8.1f}" for iou in _ceiling(masks, classes, config.data.ignore_index, stride)
            )
        )


def _ceiling(masks: list[np.ndarray], classes: int, ignore: int, stride: int) -> list[float]:
    """Per-class IoU of the arg-max of bilinearly upsampled S×S-pooled true class fractions."""
    confusion = ConfusionMatrix(classes, ignore)
    for mask in masks:
        truth = torch.from_numpy(mask.astype(np.int64))
        valid = truth != ignore
        height, width = truth.shape
        fractions = F.one_hot(torch.where(valid, truth, 0), classes).permute(2, 0, 1).float() * valid
        pad_h, pad_w = (-height) % stride, (-width) % stride
        pooled = F.avg_pool2d(F.pad(fractions[None], (0, pad_w, 0, pad_h)), stride)
        upsampled = F.interpolate(
            pooled, size=(height + pad_h, width + pad_w), mode="bilinear", align_corners=False
        )
        confusion.update(upsampled[0, :, :height, :width].argmax(0), truth)
    return confusion.iou()


if __name__ == "__main__":
    main()
