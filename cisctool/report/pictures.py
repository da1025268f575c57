"""Pictures a person looks at: label overlays side by side (PIL only)."""

from pathlib import Path

import numpy as np
from PIL import Image

from cisctool.data.masks import voc_palette
from cisctool.store.pseudo_labels import PseudoLabels

PANEL_HEIGHT = 160


def colorize(mask: np.ndarray) -> np.ndarray:
    """H×W class indices → H×W×3 palette colours."""
    palette = np.asarray(voc_palette(), dtype=np.uint8).reshape(-1, 3)
    return palette[mask]


def class_colours(count: int) -> list[str]:
    """`#rrggbb` of each class's label colour, for legends and annotation tools."""
    palette = np.asarray(voc_palette(), dtype=np.uint8).reshape(-1, 3)[:count]
    return ["#" + "".join(f"{value:02x}" for value in colour) for colour in palette.tolist()]


def blend(image: np.ndarray, mask: np.ndarray, highlight: int | None = None) -> np.ndarray:
    """Image with the label colours at 50 % (only class `highlight` when given)."""
    colours = colorize(mask).astype(np.float32)
    shown = np.ones(mask.shape, dtype=bool) if highlight is None else mask == highlight
    mixed = image.astype(np.float32)
    mixed[shown] = 0.5 * mixed[shown] + 0.5 * colours[shown]
    return mixed.astype(np.uint8)


def save_panels(path: Path, panels: list[np.ndarray]) -> None:
    """Scale H×W×3 panels to one height and write them left to right, 4 px apart."""
    scaled = []
    for panel in panels:
        width = max(1, round(panel.shape[1] * PANEL_HEIGHT / panel.shape[0]))
        scaled.append(np.asarray(Image.fromarray(panel).resize((width, PANEL_HEIGHT), Image.NEAREST)))
        scaled.append(np.full((PANEL_HEIGHT, 4, 3), 255, dtype=np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(scaled[:-1], axis=1)).save(path)


HEAT_ANCHORS = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float32)
UNDEFINED_GREY = 128


def heatmap(values: np.ndarray) -> np.ndarray:
    """H×W values in [0, 1] → H×W×3 (dark = low, yellow = high; NaN = grey)."""
    undefined = np.isnan(values)
    scaled = np.clip(np.nan_to_num(values.astype(np.float32)), 0.0, 1.0) * (len(HEAT_ANCHORS) - 1)
    low = np.floor(scaled).astype(np.int64).clip(max=len(HEAT_ANCHORS) - 2)
    fraction = (scaled - low)[..., None]
    colours = HEAT_ANCHORS[low] * (1 - fraction) + HEAT_ANCHORS[low + 1] * fraction
    colours[undefined] = UNDEFINED_GREY
    return colours.astype(np.uint8)


def save_overlay(stored: PseudoLabels, index: int, image: np.ndarray, path: Path) -> None:
    """Panels: image | rectified label on image | raw label | CISC S_ŷ | weight."""
    label = stored.pixels("label", index)
    shown = np.where(label == stored.attrs["ignore_index"], 0, label)
    panels = [
        image,
        blend(image, shown),
        colorize(stored.pixels("raw_label", index)),
        heatmap(stored.pixels("cisc", index).astype(np.float32)),
        heatmap(stored.pixels("weight", index).astype(np.float32)),
    ]
    save_panels(path, panels)
