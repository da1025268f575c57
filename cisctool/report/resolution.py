"""What a prediction made at stride S can score at best, per class: a resolution ceiling.

DeepLabV3+ predicts at stride 4 and upsamples its logits bilinearly. Here the masks'
true class fractions are pooled over S×S blocks (a perfect stride-S map), upsampled
bilinearly to the image and arg-maxed; the per-class IoU against the masks says how much
of each class survives that resolution alone. Thin classes lose most of it: on the
aerial benchmark's val masks a perfect stride-4 map keeps 44 % of the 2–4 px roads, a
stride-2 map 85 % (`model.decoder_stride = 2` predicts at 2).
"""

import math
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from rich.table import Table

from cisctool.config import Config
from cisctool.console import progress_bar
from cisctool.data.masks import read_mask
from cisctool.data.splits import split_entries
from cisctool.models import DECODER_STRIDES
from cisctool.report.confusion import ConfusionMatrix

# Below this stride-4 ceiling more than half of a class is lost to the output resolution.
THIN_CLASS_CEILING = 0.5


def resolution_ceilings(
    masks: Iterable[np.ndarray], num_classes: int, ignore_index: int, strides: Sequence[int]
) -> dict[int, list[float]]:
    """Per stride, per-class IoU of the arg-max of bilinearly upsampled S×S-pooled true class
    fractions (NaN for a class in no mask)."""
    confusions = {stride: ConfusionMatrix(num_classes, ignore_index) for stride in strides}
    for mask in masks:
        truth = torch.from_numpy(mask.astype(np.int64))
        valid = truth != ignore_index
        height, width = truth.shape
        fractions = F.one_hot(torch.where(valid, truth, 0), num_classes).permute(2, 0, 1).float() * valid
        for stride, confusion in confusions.items():
            pad_h, pad_w = (-height) % stride, (-width) % stride
            pooled = F.avg_pool2d(F.pad(fractions[None], (0, pad_w, 0, pad_h)), stride)
            upsampled = F.interpolate(pooled, size=(height + pad_h, width + pad_w), mode="bilinear", align_corners=False)
            confusion.update(upsampled[0, :, :height, :width].argmax(0), truth)
    return {stride: confusion.iou() for stride, confusion in confusions.items()}


def labeled_ceilings(config: Config) -> dict[int, list[float]]:
    """The stride-4 and stride-2 ceilings of the labeled masks (the classes a user has, at their sizes)."""
    entries = split_entries(config, "labeled")
    with progress_bar() as bar:
        task = bar.add_task("resolution ceilings", total=len(entries))

        def masks() -> Iterator[np.ndarray]:
            for entry in entries:
                yield read_mask(entry.mask)
                bar.advance(task)

        return resolution_ceilings(masks(), config.data.num_classes, config.data.ignore_index, DECODER_STRIDES)


def ceiling_table(class_names: Sequence[str], ceilings: dict[int, list[float]]) -> Table:
    """Per-class ceilings in percent, one row per prediction stride."""
    table = Table(title="resolution ceiling: IoU % of a perfect prediction at stride S, labeled masks")
    table.add_column("stride S")
    for name in class_names:
        table.add_column(name, justify="right")
    for stride, values in ceilings.items():
        table.add_row(str(stride), *("—" if math.isnan(value) else f"{100 * value:.1f}" for value in values))
    return table


def thin_classes(config: Config, ceilings: dict[int, list[float]]) -> list[str]:
    """One line per class that a perfect stride-4 prediction mostly loses; none when the model
    already predicts at stride 2."""
    if config.model.decoder_stride == 2:
        return []
    return [thin_class_message(name, ceilings[4][index], ceilings[2][index])
            for index, name in enumerate(config.class_names)
            if ceilings[4][index] < THIN_CLASS_CEILING]  # fmt: skip


def thin_class_message(class_name: str, stride_4: float, stride_2: float) -> str:
    """The one line `data check` prints for a class that stride 4 mostly loses."""
    return (
        f"class {class_name!r}: a perfect stride-4 prediction keeps {100 * stride_4:.0f} % IoU on the labeled masks "
        f"(stride 2: {100 * stride_2:.0f} %); set model.decoder_stride = 2 to predict at stride 2"
    )
