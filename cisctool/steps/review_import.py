"""`cisctool data import`: corrected masks from an annotation tool become labeled images.

Each corrected image must be one of the unlabeled split, with a mask of its
image's size. The masks are written as class-index PNGs under
`<data.root>/reviewed/<id>.png` and a new labeled split lists the existing
labeled images (an image imported again takes its new mask) followed by the
imported ones, so a run with `data.labeled` set to it trains on them. Every
file is read and checked before anything is written: bad input leaves no trace.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cisctool.config import Config
from cisctool.data.cvat import read_zip
from cisctool.data.labelstudio import read_annotations
from cisctool.data.masks import image_size, write_mask
from cisctool.data.splits import split_entries
from cisctool.errors import InputError
from cisctool.store.atomic import atomic_write, atomic_write_text

REVIEWED_DIR = "reviewed"


@dataclass
class ImportOutcome:
    """What an import wrote."""

    split: Path
    masks: Path
    imported: int
    labeled: int  # images in the new split, imported included

    def labeled_key(self, config: Config) -> str:
        """The value of `data.labeled` that selects the new split (relative to data.root when inside it)."""
        split, root = self.split.resolve(), config.data_root.resolve()
        return split.relative_to(root).as_posix() if split.is_relative_to(root) else str(split)


def import_reviewed(config: Config, file_format: str, path: Path, out_split: Path) -> ImportOutcome:
    """Read `path` (a Label Studio JSON export or a CVAT Segmentation mask 1.1 zip), check every mask,
    then write the masks and the labeled split `out_split`."""
    class_names, ignore = list(config.class_names), config.data.ignore_index
    masks = (
        read_zip(path, class_names, ignore)
        if file_format == "cvat"
        else read_annotations(path, class_names, ignore)
    )
    root = config.data_root
    unlabeled = {
        entry.id: entry for entry in split_entries(config, "unlabeled")
    }
    for image_id, mask in masks.items():
        entry = unlabeled.get(image_id)
        if entry is None:
            raise InputError(
                f"{path}: image {image_id!r} is not in the unlabeled split {config.data.unlabeled}"
            )
        height, width = image_size(entry.image)
        if mask.shape != (height, width):
            raise InputError(
                f"{path}: mask of {image_id!r} is {mask.shape[1]}×{mask.shape[0]}, its image {width}×{height}"
            )
    labeled = split_entries(config, "labeled")
    mask_dir = root / REVIEWED_DIR
    lines = [
        f"{_relative(entry.image, root)} {_relative(entry.mask, root)}"
        for entry in labeled
        if entry.id not in masks
    ]
    for image_id, mask in masks.items():
        target = mask_dir / f"{image_id}.png"
        atomic_write(target, lambda tmp, mask=mask: write_mask(tmp, mask.astype(np.uint8), fmt="PNG"))
        lines.append(f"{_relative(unlabeled[image_id].image, root)} {_relative(target, root)}")
    atomic_write_text(out_split, "\n".join(lines) + "\n")
    return ImportOutcome(out_split, mask_dir, len(masks), len(lines))


def _relative(path: Path | None, root: Path) -> str:
    """A split-file path: relative to data.root, with forward slashes."""
    return Path(os.path.relpath(path, root)).as_posix()
