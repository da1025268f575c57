"""Second procedural benchmark: aerial-map tiles, a different kind of data from the shapes demo.

Where the demo has five equally frequent compact objects told apart by shape and texture,
these tiles have seven classes of very unequal area and form: thin roads (2–4 px
polylines), meandering rivers, large striped fields, small clustered buildings with
cast shadows, clumps of round tree crowns and smooth lakes. Rivers and lakes share one
range of water colours (only their shape tells them apart), roads share the ground's
palette, and the ground itself is multi-octave noise in earthy tones rather than
gradients and palette blobs. Per-tile haze, blur, gamma and sensor noise change the
image statistics again. Nothing here is tuned to any rectification method: the
generator was written once, from the description above, before any run on it.

Every image is drawn from its own generator seeded by (seed, split, index), so a
split's images do not change when another split's size does.
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from cisctool.data.demo_images import write_dataset

AERIAL_CLASS_NAMES: tuple[str, ...] = ("ground", "road", "river", "field", "building", "tree", "lake")

# P(class in a tile) for ground = 0 (always) and classes 1…6: unequal on purpose.
_PRESENCE = (1.0, 0.6, 0.3, 0.5, 0.45, 0.55, 0.25)
_MIN_LABELED_IMAGES_PER_CLASS = 3
_EARTH = np.array([(0.52, 0.45, 0.33), (0.45, 0.47, 0.30), (0.58, 0.54, 0.46), (0.40, 0.36, 0.28)], np.float32)
_WATER = np.array([(0.16, 0.30, 0.45), (0.22, 0.36, 0.30), (0.30, 0.33, 0.36), (0.12, 0.22, 0.30)], np.float32)
_CROPS = np.array([(0.40, 0.58, 0.22), (0.75, 0.68, 0.35), (0.55, 0.44, 0.26), (0.30, 0.45, 0.20)], np.float32)
_ROOFS = np.array([(0.72, 0.30, 0.22), (0.62, 0.62, 0.64), (0.85, 0.82, 0.75), (0.35, 0.33, 0.36)], np.float32)


def generate_aerial_dataset(
    out: Path,
    seed: int = 0,
    num_labeled: int = 40,
    num_unlabeled: int = 400,
    num_val: int = 100,
    min_size: int = 96,
    max_size: int = 128,
) -> None:
    """Write images/, masks/ (palette PNGs, every image) and splits/{labeled,unlabeled,val}.txt."""
    if not 32 <= min_size <= max_size:
        raise ValueError(f"need 32 <= min_size <= max_size, got {min_size} and {max_size}")
    if num_labeled < 1:
        raise ValueError("num_labeled must be at least 1")
    counts = {"labeled": num_labeled, "unlabeled": num_unlabeled, "val": num_val}

    def draw(split: str, split_code: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([seed, 100 + split_code, index])
        classes = _draw_classes(rng)
        if split == "labeled":  # every class in at least a few labeled tiles
            classes.add(1 + index % (len(AERIAL_CLASS_NAMES) - 1))
        return render_tile(rng, classes, min_size, max_size)

    write_dataset(out, counts, draw)


def _draw_classes(rng: np.random.Generator) -> set[int]:
    """The object classes of one tile, each by its own presence probability; at least one."""
    draws = rng.random(len(_PRESENCE))
    classes = {cls for cls in range(1, len(_PRESENCE)) if draws[cls] < _PRESENCE[cls]}
    return classes or {int(rng.integers(1, len(_PRESENCE)))}


def render_tile(
    rng: np.random.Generator, classes: set[int], min_size: int, max_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """One tile (H×W×3 uint8) and its class mask (H×W uint8), painted bottom layer first:
    ground, fields, lake, river, road, trees, buildings (a later layer covers an earlier one)."""
    height, width = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
    image = Image.fromarray(_ground(rng, height, width))
    mask = Image.new("L", (width, height), 0)
    painters = {3: _fields, 6: _lake, 2: _river, 1: _roads, 5: _trees, 4: _buildings}
    for cls, paint in painters.items():
        if cls in classes:
            paint(rng, image, mask, cls)
    return _photometric(rng, image), np.asarray(mask, dtype=np.uint8)


def _ground(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Multi-octave value noise in one or two earthy tones, H×W×3 uint8."""
    first, second = _EARTH[rng.integers(len(_EARTH), size=2)] + rng.normal(0, 0.04, (2, 3)).astype(np.float32)
    blend = _octave_noise(rng, height, width)[..., None]
    image = first * (1 - blend) + second * blend
    image += rng.normal(0, 0.02, (height, width, 3)).astype(np.float32)
    return _to_uint8(image)


def _octave_noise(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """H×W noise in [0, 1] with energy at several scales (coarse grids 2…16 cells, halving amplitude)."""
    total = np.zeros((height, width), np.float32)
    for octave, cells in enumerate((2, 4, 8, 16)):
        coarse = Image.fromarray(rng.random((cells + 1, cells + 1)).astype(np.float32), mode="F")
        total += np.asarray(coarse.resize((width, height), Image.BICUBIC)) * 0.5**octave
    return (total - total.min()) / (np.ptp(total) + 1e-6)


def _fields(rng: np.random.Generator, image: Image.Image, mask: Image.Image, cls: int) -> None:
    """1–3 large convex quadrilaterals with parallel crop-row stripes at a random angle."""
    width, height = image.size
    for _ in range(int(rng.integers(1, 4))):
        centre = rng.uniform(0.2, 0.8, 2) * (width, height)
        angles = np.sort(rng.uniform(0, 2 * np.pi, 4))
        radii = rng.uniform(0.2, 0.45, 4) * min(width, height)
        polygon = [(float(centre[0] + r * np.cos(a)), float(centre[1] + r * np.sin(a))) for a, r in zip(angles, radii)]
        region = Image.new("L", image.size, 0)
        ImageDraw.Draw(region).polygon(polygon, fill=255)
        colour = _CROPS[rng.integers(len(_CROPS))] + rng.normal(0, 0.03, 3).astype(np.float32)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        direction = rng.uniform(0, np.pi)
        rows = np.sin((np.cos(direction) * xs + np.sin(direction) * ys) * 2 * np.pi / rng.uniform(3, 7))
        texture = colour * (1 + rng.uniform(0.08, 0.2) * rows[..., None])
        image.paste(Image.fromarray(_to_uint8(texture)), mask=region)
        mask.paste(cls, mask=region)


def _water_colour(rng: np.random.Generator) -> np.ndarray:
    return _WATER[rng.integers(len(_WATER))] + rng.normal(0, 0.03, 3).astype(np.float32)


def _lake(rng: np.random.Generator, image: Image.Image, mask: Image.Image, cls: int) -> None:
    """A smooth blob: a noisy-radius closed curve, filled with rippled water."""
    width, height = image.size
    centre = rng.uniform(0.25, 0.75, 2) * (width, height)
    base = rng.uniform(0.12, 0.3) * min(width, height)
    angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    wobble = sum(rng.uniform(-0.2, 0.2) * np.cos(k * angles + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
    polygon = [(float(centre[0] + base * (1 + w) * np.cos(a)), float(centre[1] + base * (1 + w) * np.sin(a)))
               for a, w in zip(angles, wobble)]  # fmt: skip
    region = Image.new("L", image.size, 0)
    ImageDraw.Draw(region).polygon(polygon, fill=255)
    _fill_water(rng, image, region)
    mask.paste(cls, mask=region)


def _river(rng: np.random.Generator, image: Image.Image, mask: Image.Image, cls: int) -> None:
    """A meandering band 5–12 px wide crossing the tile from one side to another."""
    points = _crossing_curve(rng, *image.size, bends=6)
    region = Image.new("L", image.size, 0)
    ImageDraw.Draw(region).line(points, fill=255, width=int(rng.integers(5, 13)), joint="curve")
    _fill_water(rng, image, region)
    mask.paste(cls, mask=region)


def _fill_water(rng: np.random.Generator, image: Image.Image, region: Image.Image) -> None:
    width, height = image.size
    ripples = _octave_noise(rng, height, width)[..., None] - 0.5
    water = _water_colour(rng) * (1 + 0.15 * ripples)
    image.paste(Image.fromarray(_to_uint8(water)), mask=region)


def _roads(rng: np.random.Generator, image: Image.Image, mask: Image.Image, cls: int) -> None:
    """1–3 thin polylines (2–4 px) in an asphalt grey or a dirt-track tone close to the ground's."""
    draw_image, draw_mask = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    for _ in range(int(rng.integers(1, 4))):
        points = _crossing_curve(rng, *image.size, bends=int(rng.integers(1, 4)))
        asphalt = rng.random() < 0.5
        tone = np.full(3, rng.uniform(0.3, 0.5), np.float32) if asphalt else _EARTH[rng.integers(len(_EARTH))] * 1.25
        width = int(rng.integers(2, 5))
        draw_image.line(points, fill=tuple(_to_uint8(tone).tolist()), width=width, joint="curve")
        draw_mask.line(points, fill=cls, width=width, joint="curve")


def _crossing_curve(rng: np.random.Generator, width: int, height: int, bends: int) -> list[tuple[float, float]]:
    """A polyline from one tile edge to the opposite one, with `bends` random lateral offsets."""
    along = np.linspace(-0.1, 1.1, bends + 2)
    across = np.cumsum(rng.normal(0, 0.12, bends + 2)) + rng.uniform(0.2, 0.8)
    if rng.random() < 0.5:
        return [(float(a * width), float(c * height)) for a, c in zip(along, across)]
    return [(float(c * width), float(a * height)) for a, c in zip(along, across)]


def _trees(rng: np.random.Generator, image: Image.Image, mask: Image.Image, cls: int) -> None:
    """1–3 clumps of 5–25 round crowns (radius 2–5 px), dark green with a lit side."""
    width, height = image.size
    draw_image, draw_mask = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    for _ in range(int(rng.integers(1, 4))):
        centre = rng.uniform(0.1, 0.9, 2) * (width, height)
        spread = rng.uniform(0.05, 0.15) * min(width, height)
        green = np.array((0.16, 0.30, 0.12), np.float32) * rng.uniform(0.7, 1.3)
        for _ in range(int(rng.integers(5, 26))):
            x, y = centre + rng.normal(0, spread, 2)
            radius = float(rng.uniform(2, 5))
            box = (x - radius, y - radius, x + radius, y + radius)
            draw_image.ellipse(box, fill=tuple(_to_uint8(green).tolist()))
            lit = (x - radius * 0.6, y - radius * 0.6, x + radius * 0.2, y + radius * 0.2)
            draw_image.ellipse(lit, fill=tuple(_to_uint8(green * 1.5).tolist()))
            draw_mask.ellipse(box, fill=cls)


def _buildings(rng: np.random.Generator, image: Image.Image, mask: Image.Image, cls: int) -> None:
    """A cluster of 2–8 turned rectangles (6–14 px) with a shadow cast to one side (the shadow is ground)."""
    width, height = image.size
    draw_image, draw_mask = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    centre = rng.uniform(0.2, 0.8, 2) * (width, height)
    shadow = rng.uniform(1.5, 3.5) * np.array([np.cos(a := rng.uniform(0, 2 * np.pi)), np.sin(a)])
    turn = rng.uniform(0, np.pi / 2)
    for _ in range(int(rng.integers(2, 9))):
        middle = centre + rng.normal(0, 0.12 * min(width, height), 2)
        half = rng.uniform(3, 7, 2)
        corners = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)]) * half
        rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
        polygon = corners @ rotation.T + middle
        draw_image.polygon([tuple(p) for p in (polygon + shadow).tolist()], fill=(40, 38, 36))
        roof = _ROOFS[rng.integers(len(_ROOFS))] + rng.normal(0, 0.04, 3).astype(np.float32)
        draw_image.polygon([tuple(p) for p in polygon.tolist()], fill=tuple(_to_uint8(roof).tolist()))
        draw_mask.polygon([tuple(p) for p in (polygon + shadow).tolist()], fill=0)
        draw_mask.polygon([tuple(p) for p in polygon.tolist()], fill=cls)


def _photometric(rng: np.random.Generator, image: Image.Image) -> np.ndarray:
    """Per-tile blur, haze, gamma, colour cast and sensor noise, then 8-bit H×W×3."""
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 0.8)))
    pixels = np.asarray(image, dtype=np.float32) / 255
    haze = rng.uniform(0.0, 0.3)
    pixels = pixels * (1 - haze) + haze * rng.uniform(0.6, 0.9)
    pixels = np.clip(pixels, 0, 1) ** rng.uniform(0.8, 1.25) * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    pixels += rng.normal(0, rng.uniform(0.005, 0.04), pixels.shape).astype(np.float32)
    return _to_uint8(pixels)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return (np.clip(values, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
