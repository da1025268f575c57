"""`cisctool export`: a round's pseudo labels as palette PNGs, and overlays a person can look at.

The PNGs are what ST++ and UniMatch read as pseudo masks: `<id>.png`, palette
index = class, 255 = ignore (dropped pixels). With `overlay`, `overlay/<id>.png`
shows the image, the image blended with the rectified label, the raw label,
the CISC map S_ŷ (grey where the class had no guide) and the loss weight.
"""

from pathlib import Path

import numpy as np

from cisctool.config import Config
from cisctool.console import progress_bar
from cisctool.data.masks import read_image, write_mask
from cisctool.data.splits import read_split
from cisctool.pictures import blend, colorize, heatmap, save_panels
from cisctool.pseudo_store import PseudoLabels
from cisctool.runs import RunLayout, atomic_write


def export_round(config: Config, round_index: int, out: Path, overlay: bool, limit: int | None = None) -> int:
    """Write the PNGs for round N's pseudo labels (the first `limit` images when given); returns the count."""
    entries = {entry.id: entry for entry in read_split(
        config.data_root / config.data.unlabeled, config.data_root, masks_required=False
    )}  # fmt: skip
    with PseudoLabels(RunLayout.of(config).pseudo(round_index)) as stored:
        count = len(stored) if limit is None else min(limit, len(stored))
        out.mkdir(parents=True, exist_ok=True)
        with progress_bar() as bar:
            task = bar.add_task(f"export round {round_index}", total=count)
            for index in range(count):
                image_id = stored.ids[index]
                label = stored.pixels("label", index)
                atomic_write(out / f"{image_id}.png", lambda tmp: write_mask(tmp, label, fmt="PNG"))
                if overlay:
                    save_overlay(stored, index, read_image(entries[image_id].image), out / "overlay" / f"{image_id}.png")
                bar.advance(task)
    return count


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
