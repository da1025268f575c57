"""Reading and writing label masks: single-channel class-index PNGs or palette PNGs.

A palette PNG stores class indices as its pixel values (mode "P"), so reading
it without converting gives the classes directly; this is how VOC's
SegmentationClass and ST++/UniMatch pseudo masks are stored.
"""

from pathlib import Path

import numpy as np
from PIL import Image

from cisctool.errors import InputError


def voc_palette(num_entries: int = 256) -> list[int]:
    """The PASCAL VOC colour map (bit-interleaved), flat [r0, g0, b0, r1, ...] of 256 colours."""
    palette = []
    for index in range(num_entries):
        red = green = blue = 0
        value = index
        for bit in range(8):
            red |= ((value >> 0) & 1) << (7 - bit)
            green |= ((value >> 1) & 1) << (7 - bit)
            blue |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette.extend((red, green, blue))
    return palette


# Cityscapes label id → train id (19 classes); every other id is ignored (255).
CITYSCAPES_LABEL_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                        25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}  # fmt: skip
CITYSCAPES_LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"


def cityscapes_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Cityscapes `*_gtFine_labelIds.png` values → the 19 train ids, others 255."""
    table = np.full(256, 255, dtype=np.uint8)
    for label_id, train_id in CITYSCAPES_LABEL_IDS.items():
        table[label_id] = train_id
    return table[label_ids]


def read_mask(path: Path) -> np.ndarray:
    """H×W uint8 class indices from a class-index or palette PNG; RGB masks are refused.

    Cityscapes `*_gtFine_labelIds.png` files are mapped to train ids on reading.
    """
    try:
        with Image.open(path) as image:
            if image.mode not in ("L", "P", "I", "I;16"):
                raise InputError(
                    f"{path}: mask has mode {image.mode}; expected a single-channel class-index "
                    "or palette PNG"
                )
            array = np.asarray(image)
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{path}: mask file not found") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise InputError(f"{path}: cannot read mask ({error})") from None
    if array.max(initial=0) > 255:
        raise InputError(f"{path}: mask values above 255 cannot be class indices")
    if path.name.endswith(CITYSCAPES_LABEL_IDS_SUFFIX):
        return cityscapes_train_ids(array.astype(np.uint8))
    return array.astype(np.uint8)


def write_mask(path: Path, mask: np.ndarray, palette: list[int] | None = None, fmt: str | None = None) -> None:
    """Write H×W class indices as a palette PNG (palette index = class); `fmt` for temp names."""
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    image.putpalette(palette if palette is not None else voc_palette())
    image.save(path, format=fmt)


def read_image(path: Path) -> np.ndarray:
    """H×W×3 uint8 RGB image."""
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))
    except FileNotFoundError:
        raise InputError(f"{path}: image file not found") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise InputError(f"{path}: cannot read image ({error})") from None


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) from the file header alone; unreadable files give a one-line InputError."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            image.verify()
    except FileNotFoundError:
        raise InputError(f"{path}: image file not found") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise InputError(f"{path}: cannot read image ({error})") from None
    return height, width
