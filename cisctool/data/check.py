"""`cisctool data check`: every file of every split readable, sizes matching, labels valid."""

from dataclasses import dataclass, field

import numpy as np
from rich.table import Table

from cisctool.config import Config
from cisctool.console import progress_bar
from cisctool.data.datasets import class_pixels, load_pair
from cisctool.data.masks import read_image, read_mask
from cisctool.data.splits import SplitName, split_entries


@dataclass
class SplitSummary:
    """Counts of one split: images, images with masks, pixels per class."""

    name: str
    images: int = 0
    with_masks: int = 0
    class_pixels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


@dataclass
class CheckSummary:
    class_names: tuple[str, ...]
    splits: list[SplitSummary]

    def table(self) -> Table:
        """Images per split and each class's share of the labelled pixels, in percent."""
        table = Table(title="data check")
        table.add_column("split")
        table.add_column("images", justify="right")
        table.add_column("masks", justify="right")
        for name in self.class_names:
            table.add_column(name, justify="right")
        for split in self.splits:
            total = max(int(split.class_pixels.sum()), 1)
            shares = [f"{100 * count / total:.1f}" for count in split.class_pixels]
            table.add_row(split.name, str(split.images), str(split.with_masks), *shares)
        return table


def check_splits(config: Config) -> CheckSummary:
    """Read every image and mask of the labeled, unlabeled and val splits; raise on the first fault."""
    num_classes, ignore = config.data.num_classes, config.data.ignore_index
    splits: tuple[SplitName, ...] = ("labeled", "unlabeled", "val")
    summaries = []
    with progress_bar() as bar:
        for name in splits:
            if not getattr(config.data, name):
                continue
            entries = split_entries(config, name)
            summary = SplitSummary(name, class_pixels=np.zeros(num_classes, dtype=np.int64))
            task = bar.add_task(f"check {name}", total=len(entries))
            for entry in entries:
                summary.images += 1
                if entry.mask is None:
                    read_image(entry.image)
                else:
                    _, mask = load_pair(entry, num_classes, ignore)
                    summary.with_masks += 1
                    summary.class_pixels += class_pixels(mask, num_classes, ignore)
                bar.advance(task)
            summaries.append(summary)
    return CheckSummary(config.class_names, summaries)


def labeled_class_shares(config: Config) -> dict[str, float]:
    """Each class's share of the labeled masks' pixels (ignore excluded): what pseudo labels are read against."""
    num_classes, ignore = config.data.num_classes, config.data.ignore_index
    counts = np.zeros(num_classes, dtype=np.int64)
    for entry in split_entries(config, "labeled"):
        counts += class_pixels(read_mask(entry.mask), num_classes, ignore)
    shares = counts / max(int(counts.sum()), 1)
    return dict(zip(config.class_names, shares.tolist(), strict=True))
