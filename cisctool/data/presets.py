"""Dataset presets: `dataset = "voc" | "cityscapes"` fills class names, crop size and eval mode.

A preset is a partial config; keys the user sets in the file win over it.
"""

from typing import Any

VOC_CLASS_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

CITYSCAPES_CLASS_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip

PRESETS: dict[str, dict[str, Any]] = {
    "voc": {
        "data": {"num_classes": 21, "class_names": list(VOC_CLASS_NAMES)},
        "train": {"crop_size": 321},
        "eval": {"mode": "whole"},
        "rectify": {"guide_exclude": [0]},
    },
    "cityscapes": {
        "data": {"num_classes": 19, "class_names": list(CITYSCAPES_CLASS_NAMES)},
        "train": {"crop_size": 721, "lr": 0.004},
        "eval": {"mode": "slide", "crop_size": 721, "stride": 481},
    },
}
