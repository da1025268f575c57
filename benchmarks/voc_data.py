"""A synthetic data set at Pascal VOC's sizes, for the benchmarks' `--size voc`: what the loaders,
the model and the pseudo-label file meet when a user trains on VOC, without VOC itself.

Images are 500×375 JPEG (VOC's most common size and format; quality 90) of a smooth colour field,
one to three textured ellipses of the 20 object classes and pixel noise, so decoding costs what a
photograph's does; masks are class-index PNG with VOC's ignore band (255) around each object.
The config is the tool's defaults for VOC: DeepLabV3+ on ResNet (`--backbone`), output stride 16,
crop 321, batch 8 labeled + 8 pseudo-labelled. Round 1's `pseudo.h5` is written by the tool's
own writer for an untrained round-0 model: labels are the true masks, weights, confidence and
CISC values random, so training reads a real file of VOC-size images.
"""

import os
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cisctool.config import Config, load_config
from cisctool.data.masks import read_mask
from cisctool.data.splits import split_entries
from cisctool.models import build_configured_model
from cisctool.store.atomic import sha256_file
from cisctool.store.checkpoints import model_payload, save_checkpoint
from cisctool.store.layout import RunLayout
from cisctool.store.pseudo_labels import PseudoImage, PseudoWriter, partial_path

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")  # fmt: skip
WIDTH, HEIGHT = 500, 375
IGNORE = 255
CONFIG = """\
# A synthetic set at VOC's sizes (benchmarks/voc_data.py): the tool's defaults for VOC.
name = "voc-like"

[data]
root = "."
labeled = "splits/labeled.txt"
unlabeled = "splits/unlabeled.txt"
val = "splits/val.txt"
num_classes = 21
class_names = [{names}]

[model]
backbone = "{backbone}"
output_stride = 16

[train]
batch_size = 8
pseudo_batch_size = 8
crop_size = 321
"""


def ensure_voc_like(folder: Path, labeled: int, unlabeled: int, backbone: str, overrides: dict) -> Config:
    """The data set under `folder` (made aside and renamed when missing) and its config with `overrides`."""
    if not folder.exists():
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        _write_images(partial, labeled, unlabeled)
        partial.rename(folder)
    names = ", ".join(f'"{name}"' for name in VOC_CLASSES)
    (folder / "cisctool.toml").write_text(CONFIG.format(names=names, backbone=backbone))
    return load_config(folder / "cisctool.toml", overrides)


def _write_images(out: Path, labeled: int, unlabeled: int) -> None:
    """JPEG images, PNG masks and the three splits (val = the first 4 unlabeled images)."""
    (out / "images").mkdir(parents=True)
    (out / "masks").mkdir()
    (out / "splits").mkdir()
    lines = []
    for index in range(labeled + unlabeled):
        image, mask = synthetic_pair(np.random.default_rng([7, index]))
        name = f"{index:05d}"
        Image.fromarray(image).save(out / "images" / f"{name}.jpg", quality=90)
        Image.fromarray(mask).save(out / "masks" / f"{name}.png")
        lines.append(f"images/{name}.jpg masks/{name}.png")
    (out / "splits/labeled.txt").write_text("\n".join(lines[:labeled]) + "\n")
    (out / "splits/unlabeled.txt").write_text("\n".join(lines[labeled:]) + "\n")
    (out / "splits/val.txt").write_text("\n".join(lines[labeled : labeled + 4]) + "\n")


def synthetic_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One 375×500×3 uint8 image and its mask: background field, 1–3 textured objects, noise, ignore band."""
    field = rng.uniform(40, 215, (4, 5, 3)).astype(np.uint8)
    image = np.asarray(Image.fromarray(field).resize((WIDTH, HEIGHT), Image.BICUBIC), dtype=np.float32)
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH]
    for _ in range(int(rng.integers(1, 4))):
        cls = int(rng.integers(1, len(VOC_CLASSES)))
        centre_row, centre_col = rng.uniform(0.2, 0.8) * HEIGHT, rng.uniform(0.2, 0.8) * WIDTH
        radius_row, radius_col = rng.uniform(0.1, 0.35) * HEIGHT, rng.uniform(0.1, 0.35) * WIDTH
        inside = ((rows - centre_row) / radius_row) ** 2 + ((cols - centre_col) / radius_col) ** 2 <= 1
        stripes = 30 * np.sin(cols * (0.05 + 0.02 * cls) + rows * 0.03 * (cls % 5))
        image[inside] = (rng.uniform(30, 225, 3) + stripes[inside, None])
        mask[inside] = cls
    image += rng.normal(0, 10, image.shape)
    edge = np.zeros_like(mask, dtype=bool)  # VOC's ignore band: pixels whose 2-px neighbourhood changes class
    for shift in (1, 2):
        edge[:-shift] |= mask[:-shift] != mask[shift:]
        edge[:, :-shift] |= mask[:, :-shift] != mask[:, shift:]
    mask[edge] = IGNORE
    return np.clip(image, 0, 255).astype(np.uint8), mask


def ensure_round0_model(config: Config) -> Path:
    """Round 0's model.pt, untrained (seeded), written when missing."""
    path = RunLayout.of(config).model(0)
    if not path.is_file():
        torch.manual_seed(config.train.seed)
        model = build_configured_model(config, imagenet=False)
        save_checkpoint(path, model_payload(model, config, 0))
    return path


def ensure_round1_pseudo(config: Config) -> Path:
    """Round 0's untrained model.pt and round 1's pseudo.h5 for it, written when missing."""
    layout = RunLayout.of(config)
    ensure_round0_model(config)
    target = layout.pseudo(1)
    if target.is_file():
        return target
    entries = split_entries(config, "unlabeled", masks_required=True)
    shapes = np.array([[HEIGHT, WIDTH]] * len(entries))
    attrs = {"round": 1, "checkpoint_sha256": sha256_file(layout.model(0)), "class_names": list(config.class_names)}
    work = partial_path(target)
    writer = PseudoWriter.create(work, [entry.id for entry in entries], shapes, config.data.num_classes, attrs)
    rng = np.random.default_rng(11)
    for index, entry in enumerate(entries):
        label = read_mask(entry.mask)
        signal = rng.uniform(0, 1, label.shape).astype(np.float16)
        guides = np.full(config.data.num_classes, -1, np.int32)
        weight = rng.uniform(0, 1, label.shape)
        writer.write([index], [PseudoImage(label, label, signal, signal, weight, guides, float(rng.uniform()))])
    writer.close()
    os.replace(work, target)
    return target
