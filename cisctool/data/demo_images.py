"""Procedural demo data set: textured shapes on cluttered backgrounds, no download.

Each object class pairs a shape with a texture: disc/concentric rings, square/checkerboard,
triangle/random speckle, ring (annulus)/dots, cross/fine grid. Every object is a "paper"
colour from one continuum of palette blends shared by all classes, with its pattern inked
darker, so colour says nothing about the class. Backgrounds carry gradients, smooth noise,
flat patches in the same colours and small elongated distractors that reuse the class
textures on a shape no class has, so texture alone is not enough either. Object scale,
texture period, phase and proportions, colours, backgrounds and photometry vary more than
30 labeled images can cover, which leaves room for unlabeled images to help.

Every image is drawn from its own generator seeded by (seed, split, index), so a split's
images do not change when another split's size does.
"""

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from cisctool.data.masks import voc_palette, write_mask

DEMO_CLASS_NAMES: tuple[str, ...] = ("background", "disc", "square", "triangle", "ring", "cross")

_NUM_OBJECT_CLASSES = len(DEMO_CLASS_NAMES) - 1
_OBJECT_SIZE = (0.25, 0.75)  # object diameter range, as a fraction of the shorter image side
_OBJECT_COUNT_PROBS = (0.1, 0.4, 0.5)  # P(1, 2 or 3 objects)
_MIN_LABELED_IMAGES_PER_CLASS = 3

# Shared by objects, distractors and background patches, so colour never names a class.
_PALETTE = np.array(
    [
        (0.86, 0.24, 0.20), (0.93, 0.60, 0.18), (0.95, 0.86, 0.30), (0.45, 0.72, 0.25),
        (0.16, 0.52, 0.36), (0.22, 0.66, 0.78), (0.20, 0.34, 0.72), (0.50, 0.30, 0.66),
        (0.86, 0.44, 0.64), (0.55, 0.38, 0.24), (0.92, 0.90, 0.84), (0.18, 0.18, 0.20),
        (0.58, 0.60, 0.58),
    ],
    dtype=np.float32,
)  # fmt: skip

_LUMA = _PALETTE @ np.array([0.299, 0.587, 0.114], dtype=np.float32)

_SPLITS = (("labeled", "lab"), ("unlabeled", "unl"), ("val", "val"))


def generate_demo_dataset(
    out: Path,
    seed: int = 0,
    num_labeled: int = 30,
    num_unlabeled: int = 500,
    num_val: int = 100,
    min_size: int = 96,
    max_size: int = 128,
) -> None:
    """Write images/, masks/ (palette PNGs, every image) and splits/{labeled,unlabeled,val}.txt."""
    if not 16 <= min_size <= max_size:
        raise ValueError(f"need 16 <= min_size <= max_size, got {min_size} and {max_size}")
    if num_labeled < 1:
        raise ValueError("num_labeled must be at least 1")
    counts = {"labeled": num_labeled, "unlabeled": num_unlabeled, "val": num_val}
    labeled_plan = _balanced_class_plan(np.random.default_rng([seed, 0]), num_labeled)

    def draw(split: str, split_code: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([seed, split_code, index])
        classes = labeled_plan[index] if split == "labeled" else _draw_classes(rng)
        return _render(rng, classes, min_size, max_size)

    write_dataset(out, counts, draw)


def write_dataset(
    out: Path, counts: dict[str, int], draw: Callable[[str, int, int], tuple[np.ndarray, np.ndarray]]
) -> None:
    """Write images/, masks/ (palette PNGs) and splits/{labeled,unlabeled,val}.txt of a generated set.

    `draw(split, split_code, index)` returns one image (H×W×3 uint8) and its mask (H×W uint8);
    split codes are 1, 2, 3 for labeled, unlabeled, val (for seeding per image).
    """
    for folder in ("images", "masks", "splits"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    palette = voc_palette()
    for split_code, (split, prefix) in enumerate(_SPLITS, start=1):
        lines = []
        for index in range(counts[split]):
            image, mask = draw(split, split_code, index)
            name = f"{prefix}_{index:04d}"
            Image.fromarray(image, mode="RGB").save(out / "images" / f"{name}.png")
            write_mask(out / "masks" / f"{name}.png", mask, palette)
            lines.append(f"images/{name}.png masks/{name}.png\n")
        (out / "splits" / f"{split}.txt").write_text("".join(lines))


def _draw_count(rng: np.random.Generator) -> int:
    """Objects in one image; mostly 2–3, so objects are a fair share of the pixels."""
    return int(rng.choice([1, 2, 3], p=_OBJECT_COUNT_PROBS))


def _draw_classes(rng: np.random.Generator) -> list[int]:
    """1–3 distinct object classes, uniformly, so classes balance over a split."""
    return [int(c) + 1 for c in rng.choice(_NUM_OBJECT_CLASSES, _draw_count(rng), replace=False)]


def _balanced_class_plan(rng: np.random.Generator, num_images: int) -> list[list[int]]:
    """Classes per labeled image, each image taking the least-used classes so far.

    A random draw of 30 images can leave a class in one or two of them. Object counts are
    raised (up to 3 per image) until there are enough slots for every class to reach the
    minimum, and taking the least-used classes keeps per-class counts within one of each
    other, so with two or more labeled images every class appears.
    """
    counts = [_draw_count(rng) for _ in range(num_images)]
    total, needed = sum(counts), _NUM_OBJECT_CLASSES * _MIN_LABELED_IMAGES_PER_CLASS
    index = 0
    while total < min(needed, 3 * num_images):
        if counts[index] < 3:
            counts[index] += 1
            total += 1
        index = (index + 1) % num_images
    used = np.zeros(_NUM_OBJECT_CLASSES)
    plan = []
    for count in counts:
        order = np.lexsort((rng.random(_NUM_OBJECT_CLASSES), used))[:count]
        used[order] += 1
        plan.append([int(c) + 1 for c in rng.permutation(order)])
    return plan


def _render(
    rng: np.random.Generator, classes: list[int], min_size: int, max_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """One image (H×W×3 uint8) and its class mask (H×W uint8).

    Objects are drawn largest first, so a smaller object is never hidden behind a larger one
    and every planned class stays visible.
    """
    height, width = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
    side = float(min(height, width))
    image = _background(rng, height, width)
    mask = np.zeros((height, width), dtype=np.uint8)
    sizes = np.sort(np.exp(rng.uniform(*np.log(_OBJECT_SIZE), len(classes))))[::-1]
    centres: list[tuple[float, float]] = []
    for cls, size in zip(classes, sizes, strict=True):
        radius = side * float(size) / 2
        centres.append(_place(rng, height, width, radius, centres))
        window, u, v = _frame(rng, centres[-1], radius, 1.25 * radius, height, width)
        distance = _SHAPES[cls](u, v)
        alpha = np.clip(0.5 - distance * radius, 0.0, 1.0)[..., None]
        image[window] = image[window] * (1 - alpha) + _textured(rng, cls, u, v, radius) * alpha
        mask[window][distance <= 0] = cls
    return _photometric(rng, image), mask


def _place(
    rng: np.random.Generator,
    height: int,
    width: int,
    radius: float,
    centres: list[tuple[float, float]],
) -> tuple[float, float]:
    """A centre that may cut the border a little, the farthest of a few tries from earlier objects."""
    margin = 0.4 * radius
    tries = rng.uniform(
        (margin, margin), (max(height - margin, margin + 1), max(width - margin, margin + 1)), (4, 2)
    )
    if not centres:
        return float(tries[0, 0]), float(tries[0, 1])
    gaps = np.linalg.norm(tries[:, None, :] - np.array(centres)[None], axis=2).min(axis=1)
    best = tries[int(np.argmax(gaps))]
    return float(best[0]), float(best[1])


def _frame(
    rng: np.random.Generator,
    centre: tuple[float, float],
    radius: float,
    reach: float,
    height: int,
    width: int,
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
    """The window of pixels within `reach` of `centre`, and its coordinates rotated at random
    and in units of `radius`, so a shape and its texture scale and turn together.

    Working in the window, not the whole image, keeps small layers cheap.
    """
    top, left = max(int(centre[0] - reach), 0), max(int(centre[1] - reach), 0)
    bottom, right = min(int(centre[0] + reach) + 2, height), min(int(centre[1] + reach) + 2, width)
    ys, xs = np.mgrid[top:bottom, left:right].astype(np.float32) + 0.5
    dy, dx = (ys - centre[0]) / radius, (xs - centre[1]) / radius
    angle = rng.uniform(0, 2 * np.pi)
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    return (slice(top, bottom), slice(left, right)), cos * dx + sin * dy, -sin * dx + cos * dy


# Signed distances (in radius units, negative inside) of the class shapes.
def _disc(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.hypot(u, v) - 1.0


def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(u), np.abs(v)) - 0.82


def _triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    normals = ((0.0, -1.0), (0.866, 0.5), (-0.866, 0.5))
    return np.max([nu * u + nv * v for nu, nv in normals], axis=0) - 0.6


def _ring(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    r = np.hypot(u, v)
    return np.maximum(0.55 - r, r - 1.0)


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    au, av = np.abs(u), np.abs(v)
    return np.minimum(np.maximum(au - 1.0, av - 0.32), np.maximum(au - 0.32, av - 1.0))


_SHAPES = {1: _disc, 2: _square, 3: _triangle, 4: _ring, 5: _cross}


# Ink coverage in [0, 1] of the class textures; `freq` is cycles per object radius. Each
# class keeps its own local statistics (bands, tiles, random grain, sparse dots, thin lines)
# so texture is learnable, while phase, duty cycle and proportions vary per object so a
# few labeled images do not cover every variant.
_Texture = Callable[[np.random.Generator, np.ndarray, np.ndarray, float], np.ndarray]


def _rings(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, freq: float) -> np.ndarray:
    duty = rng.uniform(-0.4, 0.4)
    return _soft_sign(np.cos(2 * np.pi * (freq * np.hypot(u, v) + rng.random())) + duty)


def _checker(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, freq: float) -> np.ndarray:
    stretch = rng.uniform(0.75, 1.35)
    a = 2 * np.pi * (freq * stretch * u + rng.random())
    b = 2 * np.pi * (freq / stretch * v + rng.random())
    return _soft_sign(np.sin(a) * np.sin(b))


def _speckle(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, freq: float) -> np.ndarray:
    """Random blocks a fraction of a period wide: a hash of the block index, turning with the object."""
    grain = rng.uniform(2.5, 4.0) * freq
    rows = np.floor(grain * u + rng.integers(1 << 20)).astype(np.int64)
    cols = np.floor(grain * v + rng.integers(1 << 20)).astype(np.int64)
    hashed = ((rows * 73856093) ^ (cols * 19349663)) % 1009
    return (hashed < rng.uniform(0.3, 0.55) * 1009).astype(np.float32)


def _dots(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, freq: float) -> np.ndarray:
    a = (freq * u + rng.random()) % 1.0 - 0.5
    b = (freq * v + rng.random()) % 1.0 - 0.5
    return _soft_sign(rng.uniform(0.18, 0.34) - np.hypot(a, b), 12.0)


def _grid(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, freq: float) -> np.ndarray:
    a = np.abs((1.4 * freq * u + rng.random()) % 1.0 - 0.5)
    b = np.abs((1.4 * freq * v + rng.random()) % 1.0 - 0.5)
    return _soft_sign(np.maximum(a, b) - rng.uniform(0.3, 0.42), 12.0)


def _soft_sign(x: np.ndarray, sharpness: float = 3.0) -> np.ndarray:
    """Map a signed pattern to [0, 1] with a short ramp instead of an aliased hard edge."""
    return np.clip(0.5 + sharpness * x, 0.0, 1.0)


_TEXTURES: dict[int, _Texture] = {1: _rings, 2: _checker, 3: _speckle, 4: _dots, 5: _grid}


def _palette_colour(rng: np.random.Generator, min_luma: float = 0.0) -> np.ndarray:
    """A random blend of two palette colours at least `min_luma` bright: varied, yet shared."""
    first, second = _PALETTE[rng.choice(np.flatnonzero(_LUMA >= min_luma), 2)]
    return first + (second - first) * rng.uniform(0.0, 0.5)


def _textured(
    rng: np.random.Generator, texture: int, u: np.ndarray, v: np.ndarray, radius: float
) -> np.ndarray:
    """Colours (…×3) of a class texture: a palette "paper" colour with the pattern inked darker.

    Keeping the ink a darkened paper makes texture a consistent luminance pattern that a small
    network picks up in a few hundred steps, while colour still says nothing about the class.
    The period is drawn in pixels, so big objects carry more repeats, not coarser ones.
    """
    freq = radius / float(rng.uniform(5.0, 14.0))
    ink = _TEXTURES[texture](rng, u, v, freq)[..., None]
    paper = _palette_colour(rng, min_luma=0.4)
    direction = rng.normal(size=2).astype(np.float32)
    light = 1.0 + 0.1 * (direction[0] * u + direction[1] * v)[..., None]
    return paper * (1 - ink * rng.uniform(0.45, 0.85)) * light


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Gradient + low-frequency noise + flat palette blobs + small textured distractors."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    first, second = (_mute(rng, _palette_colour(rng)) for _ in range(2))
    direction = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(direction) * xs / width + np.sin(direction) * ys / height
    ramp = ((ramp - ramp.min()) / (np.ptp(ramp) + 1e-6))[..., None]
    image = first * (1 - ramp) + second * ramp
    image += _smooth_noise(rng, height, width, int(rng.integers(3, 8)), rng.uniform(0.03, 0.1))
    side = float(min(height, width))
    for _ in range(int(rng.integers(1, 6))):
        window, alpha, _, _ = _ellipse(rng, height, width, side * rng.uniform(0.08, 0.22), 1.0, 2.5)
        colour = _mute(rng, _palette_colour(rng))
        image[window] = image[window] * (1 - alpha) + colour * alpha
    for _ in range(int(rng.integers(1, 7))):
        radius = side * rng.uniform(0.06, 0.16)
        window, alpha, u, v = _ellipse(rng, height, width, radius, 1.6, 3.0)
        texture = int(rng.integers(1, _NUM_OBJECT_CLASSES + 1))
        image[window] = image[window] * (1 - alpha) + _textured(rng, texture, u, v, radius) * alpha
    return image


def _ellipse(
    rng: np.random.Generator,
    height: int,
    width: int,
    radius: float,
    min_aspect: float,
    max_aspect: float,
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray, np.ndarray]:
    """A randomly placed, turned and stretched ellipse: window, anti-aliased alpha (…×1), coords.

    No class is an ellipse, so elongated ones carrying class textures are distractors that
    match the texture but not the shape: texture alone is not the class.
    """
    aspect = rng.uniform(min_aspect, max_aspect)
    centre = (rng.uniform(0, height), rng.uniform(0, width))
    window, u, v = _frame(rng, centre, radius, radius, height, width)
    stretched = np.hypot(u, v * aspect)
    alpha = np.clip(0.5 - (stretched - 1.0) * radius / aspect, 0.0, 1.0)[..., None]
    return window, alpha, u, v


def _mute(rng: np.random.Generator, colour: np.ndarray) -> np.ndarray:
    """A palette colour pulled part way to grey, so backgrounds are calmer than objects."""
    return colour + (0.5 - colour) * rng.uniform(0.2, 0.6)


def _smooth_noise(
    rng: np.random.Generator, height: int, width: int, cells: int, amplitude: float
) -> np.ndarray:
    """H×W×3 colour noise bilinearly interpolated from a coarse random grid."""
    coarse = rng.normal(0.0, amplitude, (cells + 1, cells + 1, 1)) + rng.normal(
        0.0, amplitude / 3, (cells + 1, cells + 1, 3)
    )
    rows, cols = _interp_matrix(height, cells), _interp_matrix(width, cells)
    by_channel = rows @ coarse.transpose(2, 0, 1).astype(np.float32) @ cols.T
    return by_channel.transpose(1, 2, 0)


def _interp_matrix(length: int, cells: int) -> np.ndarray:
    """length × (cells+1) linear-interpolation weights from grid nodes to pixel centres."""
    position = (np.arange(length, dtype=np.float32) + 0.5) / length * cells
    nodes = np.arange(cells + 1, dtype=np.float32)
    return np.clip(1.0 - np.abs(position[:, None] - nodes[None, :]), 0.0, 1.0)


def _photometric(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Per-image gamma, contrast, brightness and colour cast plus pixel noise, then 8-bit."""
    image = np.clip(image, 0.0, 1.0) ** rng.uniform(0.75, 1.35)
    mean = image.mean(axis=(0, 1), keepdims=True)
    image = (image - mean) * rng.uniform(0.65, 1.2) + mean + rng.uniform(-0.12, 0.12)
    image = image * rng.uniform(0.88, 1.12, 3).astype(np.float32)
    image = image + rng.normal(0.0, rng.uniform(0.01, 0.07), image.shape).astype(np.float32)
    return (np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
