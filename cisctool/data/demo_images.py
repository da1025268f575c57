"""Procedural demo data set: textured shapes on cluttered backgrounds, no download.

Each object class is a pairing of a shape with a texture (disc/rings, square/checkerboard,
triangle/stripes, ring/dots, cross/grid). Colours come from one palette shared by all
classes, and the background carries distractors that reuse the class textures on shapes
no class has, so neither colour nor texture alone names a class: a network has to learn
shape and texture together. Scales, texture frequencies, colours and backgrounds vary
more than 30 labeled images can cover, which leaves room for unlabeled images to help.

Every image is drawn from its own generator seeded by (seed, split, index), so a split's
images do not change when another split's size does.
"""

from pathlib import Path

import numpy as np
from PIL import Image

from cisctool.data.masks import voc_palette, write_mask

DEMO_CLASS_NAMES: tuple[str, ...] = ("background", "disc", "square", "triangle", "ring", "cross")

_NUM_OBJECT_CLASSES = len(DEMO_CLASS_NAMES) - 1
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
    for folder in ("images", "masks", "splits"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    counts = {"labeled": num_labeled, "unlabeled": num_unlabeled, "val": num_val}
    labeled_plan = _balanced_class_plan(np.random.default_rng([seed, 0]), num_labeled)
    palette = voc_palette()
    for split_code, (split, prefix) in enumerate(_SPLITS, start=1):
        lines = []
        for index in range(counts[split]):
            rng = np.random.default_rng([seed, split_code, index])
            classes = labeled_plan[index] if split == "labeled" else _draw_classes(rng)
            image, mask = _render(rng, classes, min_size, max_size)
            name = f"{prefix}_{index:04d}"
            Image.fromarray(image, mode="RGB").save(out / "images" / f"{name}.png")
            write_mask(out / "masks" / f"{name}.png", mask, palette)
            lines.append(f"images/{name}.png masks/{name}.png\n")
        (out / "splits" / f"{split}.txt").write_text("".join(lines))


def _draw_count(rng: np.random.Generator) -> int:
    return int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))


def _draw_classes(rng: np.random.Generator) -> list[int]:
    """1–3 distinct object classes, uniformly, so classes balance over a split."""
    return [int(c) + 1 for c in rng.choice(_NUM_OBJECT_CLASSES, _draw_count(rng), replace=False)]


def _balanced_class_plan(rng: np.random.Generator, num_images: int) -> list[list[int]]:
    """Classes per labeled image, each image taking the least-used classes so far.

    A random draw of 30 images can leave a class in one or two of them; this keeps the
    counts within one of each other, so every class reaches the minimum once there are
    enough object slots, and in any case every class appears when there are five or more.
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
    """One image (H×W×3 uint8) and its class mask (H×W uint8); later objects occlude earlier."""
    height, width = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    image = _background(rng, height, width, ys, xs)
    mask = np.zeros((height, width), dtype=np.uint8)
    side = float(min(height, width))
    centres: list[tuple[float, float]] = []
    for cls in classes:
        radius = side * float(np.exp(rng.uniform(np.log(0.2), np.log(0.6)))) / 2
        centre = _place(rng, height, width, radius, centres)
        centres.append(centre)
        u, v = _local_coords(ys, xs, centre, radius, rng.uniform(0, 2 * np.pi))
        distance = _SHAPES[cls](u, v)
        alpha = np.clip(0.5 - distance * radius, 0.0, 1.0)[..., None]
        image = image * (1 - alpha) + _textured(rng, cls, u, v, radius, ys, xs) * alpha
        mask[distance <= 0] = cls
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


def _local_coords(
    ys: np.ndarray, xs: np.ndarray, centre: tuple[float, float], radius: float, angle: float
) -> tuple[np.ndarray, np.ndarray]:
    """Rotated coordinates in units of the object's radius, so shape and texture scale together."""
    dy, dx = (ys - centre[0]) / radius, (xs - centre[1]) / radius
    cos, sin = np.cos(angle), np.sin(angle)
    return cos * dx + sin * dy, -sin * dx + cos * dy


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


# Ink coverage in [0, 1] of the class textures; `freq` is cycles per object radius and
# `phase` two offsets in cycles. Each has its own local statistics (bands, 50 % tiles,
# random grain, sparse dots, thin lines) so texture is learnable from a few hundred steps.
def _rings(u: np.ndarray, v: np.ndarray, freq: float, phase: np.ndarray) -> np.ndarray:
    return _soft_sign(np.cos(2 * np.pi * (freq * np.hypot(u, v) + phase[0])))


def _checker(u: np.ndarray, v: np.ndarray, freq: float, phase: np.ndarray) -> np.ndarray:
    a, b = 2 * np.pi * (freq * u + phase[0]), 2 * np.pi * (freq * v + phase[1])
    return _soft_sign(np.sin(a) * np.sin(b))


def _speckle(u: np.ndarray, v: np.ndarray, freq: float, phase: np.ndarray) -> np.ndarray:
    """Random blocks a third of a period wide: a hash of the block index, rotating with the object."""
    rows = np.floor(3 * freq * u + 1000 * phase[0]).astype(np.int64)
    cols = np.floor(3 * freq * v + 1000 * phase[1]).astype(np.int64)
    hashed = ((rows * 73856093) ^ (cols * 19349663)) % 1009
    return (hashed < 0.45 * 1009).astype(np.float32)


def _dots(u: np.ndarray, v: np.ndarray, freq: float, phase: np.ndarray) -> np.ndarray:
    a, b = (freq * u + phase[0]) % 1.0 - 0.5, (freq * v + phase[1]) % 1.0 - 0.5
    return _soft_sign(0.28 - np.hypot(a, b), 12.0)


def _grid(u: np.ndarray, v: np.ndarray, freq: float, phase: np.ndarray) -> np.ndarray:
    a = np.abs((1.4 * freq * u + phase[0]) % 1.0 - 0.5)
    b = np.abs((1.4 * freq * v + phase[1]) % 1.0 - 0.5)
    return _soft_sign(np.maximum(a, b) - 0.36, 12.0)


def _soft_sign(x: np.ndarray, sharpness: float = 3.0) -> np.ndarray:
    """Map a signed pattern to [0, 1] with a short ramp instead of an aliased hard edge."""
    return np.clip(0.5 + sharpness * x, 0.0, 1.0)


_TEXTURES = {1: _rings, 2: _checker, 3: _speckle, 4: _dots, 5: _grid}


def _two_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A lighter "paper" and a darker "ink" palette colour, far enough apart to show texture."""
    while True:
        first, second = rng.choice(len(_PALETTE), 2, replace=False)
        if abs(_LUMA[first] - _LUMA[second]) >= 0.25:
            break
    paper, ink = (first, second) if _LUMA[first] > _LUMA[second] else (second, first)
    jitter = rng.normal(0.0, 0.04, (2, 3)).astype(np.float32)
    return _PALETTE[paper] + jitter[0], _PALETTE[ink] + jitter[1]


def _textured(
    rng: np.random.Generator,
    texture: int,
    u: np.ndarray,
    v: np.ndarray,
    radius: float,
    ys: np.ndarray,
    xs: np.ndarray,
) -> np.ndarray:
    """H×W×3 colours of a class texture with random period (pixels), phase, colours and shading."""
    freq = radius / float(rng.uniform(6.0, 12.0))
    ink = _TEXTURES[texture](u, v, freq, rng.random(2))[..., None]
    paper_colour, ink_colour = _two_colours(rng)
    return (paper_colour * (1 - ink) + ink_colour * ink) * _shading(rng, ys, xs)


def _shading(rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """A mild linear light falloff in a random direction, H×W×1."""
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction) + 1e-6
    extent = float(max(ys.shape))
    ramp = (direction[0] * ys + direction[1] * xs) / extent
    return (1.0 + rng.uniform(0.1, 0.3) * (ramp - ramp.mean()))[..., None]


def _background(
    rng: np.random.Generator, height: int, width: int, ys: np.ndarray, xs: np.ndarray
) -> np.ndarray:
    """Gradient + low-frequency colour noise + flat palette blobs + textured distractors."""
    first, second = (_mute(rng, colour) for colour in _two_colours(rng))
    direction = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(direction) * xs / width + np.sin(direction) * ys / height
    ramp = ((ramp - ramp.min()) / (np.ptp(ramp) + 1e-6))[..., None]
    image = first * (1 - ramp) + second * ramp
    image = image + _smooth_noise(rng, height, width, int(rng.integers(3, 8)), 0.06)
    side = float(min(height, width))
    for _ in range(int(rng.integers(1, 5))):
        alpha, _ = _blob(rng, ys, xs, side * rng.uniform(0.08, 0.22), rng.uniform(1.0, 2.5))
        colour = _mute(rng, _PALETTE[rng.integers(len(_PALETTE))])
        image = image * (1 - alpha) + colour * alpha
    for _ in range(int(rng.integers(1, 5))):
        radius = side * rng.uniform(0.04, 0.11)
        alpha, (u, v) = _blob(rng, ys, xs, radius, rng.uniform(1.5, 3.0))
        texture = int(rng.integers(1, _NUM_OBJECT_CLASSES + 1))
        image = image * (1 - alpha) + _textured(rng, texture, u, v, radius, ys, xs) * alpha
    return image


def _blob(
    rng: np.random.Generator,
    ys: np.ndarray,
    xs: np.ndarray,
    radius: float,
    aspect: float,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Anti-aliased alpha (H×W×1) of a rotated ellipse, which no class uses, and its local coords.

    Elongated ellipses carry class textures as distractors: matching the texture but not the
    shape, they teach the network that texture alone is not the class.
    """
    centre = (rng.uniform(0, ys.shape[0]), rng.uniform(0, xs.shape[1]))
    u, v = _local_coords(ys, xs, centre, radius, rng.uniform(0, 2 * np.pi))
    stretched = np.hypot(u, v * aspect)
    alpha = np.clip(0.5 - (stretched - 1.0) * radius / aspect, 0.0, 1.0)[..., None]
    return alpha, (u, v)


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
    return np.einsum("hi,ijc,wj->hwc", rows, coarse, cols)


def _interp_matrix(length: int, cells: int) -> np.ndarray:
    """length × (cells+1) linear-interpolation weights from grid nodes to pixel centres."""
    position = (np.arange(length, dtype=np.float32) + 0.5) / length * cells
    nodes = np.arange(cells + 1, dtype=np.float32)
    return np.clip(1.0 - np.abs(position[:, None] - nodes[None, :]), 0.0, 1.0)


def _photometric(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Per-image contrast, brightness and colour cast plus pixel noise, then 8-bit."""
    mean = image.mean(axis=(0, 1), keepdims=True)
    image = (image - mean) * rng.uniform(0.7, 1.2) + mean + rng.uniform(-0.12, 0.12)
    image = image * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    image = image + rng.normal(0.0, rng.uniform(0.01, 0.06), image.shape).astype(np.float32)
    return (np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
