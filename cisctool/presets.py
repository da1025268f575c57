"""Dataset presets: `dataset = "voc" | "cityscapes" | "coco"` fill class names, crop size, rate and eval mode.

A preset is a partial config; keys the user sets in the file win over it.
Split files are ST++'s and UniMatch's as they are: VOC bare ids or
`JPEGImages/x.jpg SegmentationClass(Aug)/x.png` lines; Cityscapes
`leftImg8bit/... gtFine/..._gtFine_labelIds.png` (label ids are mapped to the
19 train ids on reading; `_labelTrainIds.png` files are read as they are);
COCO `train2017/x.jpg masks/train2017/x.png` with UniMatch's 81-class masks
(0 = background, then the 80 COCO categories in their official order).
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

COCO_CLASS_NAMES = (
    "background", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck",
    "boat", "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

PRESETS: dict[str, dict[str, Any]] = {
    "voc": {
        "data": {"num_classes": 21, "class_names": list(VOC_CLASS_NAMES)},
        "train": {"crop_size": 321, "lr": 0.001},
        "eval": {"mode": "whole"},
    },
    "cityscapes": {
        "data": {"num_classes": 19, "class_names": list(CITYSCAPES_CLASS_NAMES)},
        "train": {"crop_size": 721, "lr": 0.004},
        "eval": {"mode": "slide", "crop_size": 721, "stride": 481},
    },
    "coco": {
        "data": {"num_classes": 81, "class_names": list(COCO_CLASS_NAMES)},
        "train": {"crop_size": 513, "lr": 0.004},
        "eval": {"mode": "slide", "crop_size": 513, "stride": 341},
    },
}
