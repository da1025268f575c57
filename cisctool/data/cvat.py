"""CVAT's "Segmentation mask 1.1" zip: pseudo labels out for review, people's corrected masks back in.

The layout CVAT exports and imports (a Pascal VOC segmentation subset):
    labelmap.txt                        `name:r,g,b:parts:actions`, one line per label
    ImageSets/Segmentation/default.txt  image names without extension, one per line
    SegmentationClass/<name>.png        RGB masks, each pixel the colour of its label
SegmentationObject/ (instance masks) is optional on import and left out: a
semantic label has one region per class, which CVAT makes of the class masks.
Class colours are the VOC palette, as cisctool's own masks use; the ignore
value (dropped pixels) is the label `ignored` in VOC's colour of 255. On the
way back, CVAT's `background` label, when the config has no such class, marks
pixels nobody labelled: they become ignore, as `ignored` does.
"""

import io
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from cisctool.data.masks import voc_palette
from cisctool.errors import InputError
from cisctool.store.atomic import atomic_write

LABELMAP = "labelmap.txt"
IMAGE_SET = "ImageSets/Segmentation/default.txt"
CLASS_MASKS = "SegmentationClass/"
IGNORE_LABEL = "ignored"
UNLABELLED = "background"


def colour_table(count: int) -> np.ndarray:
    """256×3 uint8 VOC colours: row i is the colour of label value i."""
    return np.asarray(voc_palette(), dtype=np.uint8).reshape(-1, 3)[:count]


def write_zip(
    path: Path, items: Iterable[tuple[str, np.ndarray]], class_names: Sequence[str], ignore_index: int
) -> int:
    """Write (image id, H×W class indices) pairs as a Segmentation mask 1.1 zip; returns the count."""
    for name in (*class_names, IGNORE_LABEL):
        if any(mark in name for mark in ":,\n") or not name.strip():
            raise InputError(
                f"class name {name!r}: CVAT's labelmap.txt cannot hold it (no ':', ',' or newline)"
            )
    colours = colour_table(256)
    lines = ["# label:color_rgb:parts:actions"]
    lines += [f"{name}:{','.join(map(str, colours[index]))}::" for index, name in enumerate(class_names)]
    lines.append(f"{IGNORE_LABEL}:{','.join(map(str, colours[ignore_index]))}::")
    written: list[str] = []

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(LABELMAP, "\n".join(lines) + "\n")
            for image_id, label in items:
                buffer = io.BytesIO()
                Image.fromarray(colours[label]).save(buffer, format="PNG")
                archive.writestr(f"{CLASS_MASKS}{image_id}.png", buffer.getvalue())
                written.append(image_id)
            archive.writestr(IMAGE_SET, "".join(f"{image_id}\n" for image_id in written))

    atomic_write(path, write)
    return len(written)


def read_zip(path: Path, class_names: Sequence[str], ignore_index: int) -> dict[str, np.ndarray]:
    """Image id (mask file stem) → H×W class indices from a Segmentation mask 1.1 zip."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            labelmaps = sorted((name for name in names if PurePosixPath(name).name == LABELMAP), key=len)
            if not labelmaps:
                raise InputError(
                    f"{path}: no {LABELMAP}; export the task from CVAT as 'Segmentation mask 1.1'"
                )
            root = labelmaps[0][: -len(LABELMAP)]
            values = _label_values(
                path, archive.read(labelmaps[0]).decode("utf-8"), class_names, ignore_index
            )
            masks = {}
            for name in names:
                if name.startswith(root + CLASS_MASKS) and name.lower().endswith(".png"):
                    masks[PurePosixPath(name).stem] = _read_mask(path, name, archive.read(name), values)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not a readable zip archive ({error})") from None
    if not masks:
        raise InputError(f"{path}: no {CLASS_MASKS}*.png masks")
    return masks


def _label_values(path: Path, text: str, class_names: Sequence[str], ignore_index: int) -> dict[int, int]:
    """Packed colour r·65536 + g·256 + b of each labelmap line → the class index (or ignore) it means."""
    classes = {name: index for index, name in enumerate(class_names)}
    values: dict[int, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, rest = line.partition(":")
        channels = rest.partition(":")[0].split(",")
        if len(channels) != 3 or not all(channel.strip().isdigit() for channel in channels):
            raise InputError(f"{path}: {LABELMAP}:{number}: label {name!r} has no r,g,b colour")
        if name in classes:
            value = classes[name]
        elif name == IGNORE_LABEL or (name == UNLABELLED and UNLABELLED not in classes):
            value = ignore_index
        else:
            raise InputError(
                f"{path}: {LABELMAP}:{number}: unknown class name {name!r} (classes: {', '.join(class_names)})"
            )
        red, green, blue = (int(channel) for channel in channels)
        packed = (red << 16) | (green << 8) | blue
        if values.setdefault(packed, value) != value:
            raise InputError(
                f"{path}: {LABELMAP}:{number}: colour {red},{green},{blue} of {name!r} is another label's too"
            )
    return values


def _read_mask(path: Path, name: str, data: bytes, values: dict[int, int]) -> np.ndarray:
    """One colour mask → H×W class indices; a colour the labelmap does not declare is an error."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            rgb = np.asarray(image.convert("RGB"), dtype=np.int64)
    except (OSError, ValueError, SyntaxError) as error:
        raise InputError(f"{path}: {name}: cannot read mask ({error})") from None
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    colours, inverse = np.unique(packed, return_inverse=True)
    unknown = [int(colour) for colour in colours if int(colour) not in values]
    if unknown:
        red, green, blue = unknown[0] >> 16, (unknown[0] >> 8) & 255, unknown[0] & 255
        raise InputError(f"{path}: {name}: colour ({red},{green},{blue}) is not in {LABELMAP}")
    lookup = np.asarray([values[int(colour)] for colour in colours], dtype=np.uint8)
    return lookup[inverse].reshape(packed.shape)
