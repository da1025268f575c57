"""Datasets over split entries: labeled training pairs, pseudo-labeled images, full images for inference.

Training samples are addressed by `(index, sample_seed)` keys from
`SeededSampler`, so augmentation and partner choice are reproducible and a
resumed run continues the exact sample stream.
"""

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from cisctool.data.masks import read_image, read_mask
from cisctool.data.splits import SplitEntry
from cisctool.data.transforms import normalize, pseudo_transform, train_transform
from cisctool.errors import InputError
from cisctool.method.prototypes import present_classes


def load_pair(entry: SplitEntry, num_classes: int, ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Read an image and its mask, checking sizes match and labels are < C or ignore."""
    image = read_image(entry.image)
    if entry.mask is None:
        raise InputError(f"{entry.image}: no mask for image {entry.id!r}")
    mask = read_mask(entry.mask)
    if mask.shape != image.shape[:2]:
        raise InputError(
            f"{entry.mask}: mask size {mask.shape[1]}×{mask.shape[0]} differs from image size "
            f"{image.shape[1]}×{image.shape[0]}"
        )
    bad = (mask >= num_classes) & (mask != ignore_index)
    if bad.any():
        raise InputError(
            f"{entry.mask}: label value {int(mask[bad].max())} ≥ num_classes ({num_classes}) "
            f"and ≠ ignore_index ({ignore_index})"
        )
    return image, mask


def class_pixels(mask: np.ndarray, num_classes: int, ignore_index: int) -> np.ndarray:
    """Pixels of each class in a mask (ignore, and any value ≥ num_classes, left out)."""
    valid = mask[(mask != ignore_index) & (mask < num_classes)]
    return np.bincount(valid.ravel(), minlength=num_classes)


def class_area_fractions(mask: np.ndarray, num_classes: int, ignore_index: int) -> np.ndarray:
    """C fractions of the mask's valid (non-ignore) pixels that each class covers."""
    return class_pixels(mask, num_classes, ignore_index) / max(int((mask != ignore_index).sum()), 1)


@dataclass(frozen=True)
class PairSettings:
    """How labeled training pairs are drawn and augmented."""

    num_classes: int
    ignore_index: int
    crop_size: int
    scale_range: tuple[float, float]
    min_area: float
    guide_exclude: tuple[int, ...]  # `rectify.guide_exclude`: classes never paired on


class LabeledPairDataset(Dataset):
    """Labeled image + a partner labeled image that shares a class with it (for the round-0 consistency loss).

    Each item: image, mask (3×S×S, S×S), partner_image, partner_mask, and
    shared_class (the class whose CISC consistency is trained, −1 when the
    image shares no eligible class with any other labeled image). The partner
    is never the image itself.
    """

    def __init__(self, entries: Sequence[SplitEntry], settings: PairSettings) -> None:
        if len(entries) < 2:
            raise InputError(f"{entries[0].image}: training needs at least 2 labeled images")
        self.entries = list(entries)
        self.settings = settings
        presence = []
        for entry in self.entries:
            _, mask = load_pair(entry, settings.num_classes, settings.ignore_index)
            areas = class_area_fractions(mask, settings.num_classes, settings.ignore_index)
            presence.append(present_classes(areas, settings.min_area))
        self.presence = np.stack(presence)
        self.presence[:, list(settings.guide_exclude)] = False

    def __len__(self) -> int:
        return len(self.entries)

    def choose_partner(self, index: int, rng: np.random.Generator) -> tuple[int, int]:
        """A random eligible class of image `index` and a random other image that has it."""
        classes = np.flatnonzero(self.presence[index])
        rng.shuffle(classes)
        for shared_class in classes:
            holders = np.flatnonzero(self.presence[:, shared_class])
            holders = holders[holders != index]
            if holders.size:
                return int(rng.choice(holders)), int(shared_class)
        others = np.delete(np.arange(len(self.entries)), index)
        return int(rng.choice(others)), -1

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        index, sample_seed = key
        rng = np.random.default_rng(sample_seed)
        partner, shared_class = self.choose_partner(index, rng)
        image, mask = self._augmented(index, rng)
        partner_image, partner_mask = self._augmented(partner, rng)
        return {
            "image": image,
            "mask": mask,
            "partner_image": partner_image,
            "partner_mask": partner_mask,
            "shared_class": torch.tensor(shared_class),
        }

    def _augmented(self, index: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        settings = self.settings
        image, mask = load_pair(self.entries[index], settings.num_classes, settings.ignore_index)
        return train_transform(
            image, mask, rng, settings.crop_size, settings.scale_range, settings.ignore_index
        )


class SeededSampler(Sampler[tuple[int, int]]):
    """Yields (index, sample_seed) for sample positions [start, stop) of an epoch-shuffled stream.

    Position p lies in epoch p // n, whose order is a permutation seeded by
    (seed, epoch); its sample seed derives from (seed, p). Starting at any
    position reproduces exactly what an uninterrupted run would have drawn.
    Under DDP, rank r of w takes the positions p ≡ r (mod w) of the same stream.
    """

    def __init__(
        self, dataset_size: int, seed: int, start: int, stop: int, rank: int = 0, world: int = 1
    ) -> None:
        self.dataset_size, self.seed, self.start, self.stop = dataset_size, seed, start, stop
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return len(range(self._first(), self.stop, self.world))

    def _first(self) -> int:
        return self.start + (self.rank - self.start) % self.world

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, order = -1, np.empty(0, dtype=np.int64)
        for position in range(self._first(), self.stop, self.world):
            if position // self.dataset_size != epoch:
                epoch = position // self.dataset_size
                order = np.random.default_rng([self.seed, epoch]).permutation(self.dataset_size)
            sample_seed = int(np.random.SeedSequence([self.seed, position]).generate_state(1)[0])
            yield int(order[position % self.dataset_size]), sample_seed


class InferenceDataset(Dataset):
    """Whole images for evaluation or pseudo-labelling; the mask is optional."""

    def __init__(
        self, entries: Sequence[SplitEntry], num_classes: int, ignore_index: int, *, with_masks: bool
    ) -> None:
        self.entries = entries  # as given, not listed: a packed split of 100k images stays about 5 MB
        self.num_classes, self.ignore_index, self.with_masks = num_classes, ignore_index, with_masks

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict[str, object]:
        entry = self.entries[index]
        if self.with_masks:
            image, mask = load_pair(entry, self.num_classes, self.ignore_index)
        else:
            image = read_image(entry.image)
            mask = np.full(image.shape[:2], self.ignore_index, dtype=np.uint8)
        return {
            "image": normalize(image),
            "mask": torch.from_numpy(np.ascontiguousarray(mask)).long(),
            "index": index,
        }


def pad_collate(
    items: list[dict[str, object]], ignore_index: int = 255, size_divisor: int = 1
) -> dict[str, torch.Tensor]:
    """Batch images of different sizes: pad to the largest, rounded up to a multiple of
    `size_divisor` (image 0, mask ignore); keep sizes.

    Returns image B×3×H×W, mask B×H×W, sizes B×2 (each image's own H, W), index B.
    """
    sizes = torch.tensor([list(item["mask"].shape) for item in items])
    height, width = (-(-int(value) // size_divisor) * size_divisor for value in sizes.max(dim=0).values)
    images = torch.zeros(len(items), 3, height, width)
    masks = torch.full((len(items), height, width), ignore_index, dtype=torch.long)
    for slot, item in enumerate(items):
        item_height, item_width = item["mask"].shape
        images[slot, :, :item_height, :item_width] = item["image"]
        masks[slot, :item_height, :item_width] = item["mask"]
    return {
        "image": images,
        "mask": masks,
        "sizes": sizes,
        "index": torch.tensor([item["index"] for item in items]),
    }


class PseudoLabelReader(Protocol):
    """What the pseudo-labeled dataset reads: image ids in file order and each image's pixel arrays."""

    path: Path
    ids: list[str]

    def pixels(self, name: str, position: int) -> np.ndarray: ...


class PseudoLabeledDataset(Dataset):
    """Unlabeled images with their rectified labels and weights, strongly augmented.

    `positions` are the split positions (the file's rows) to train on (the reliable schedule's
    choice). `open_labels()` opens the pseudo-label file; each DataLoader worker
    calls it lazily, so no file handle is shared across processes. `class_factors`
    (per class) scale each pixel's stored weight by its label's factor.
    """

    def __init__(
        self, open_labels: Callable[[], PseudoLabelReader], entries: Sequence[SplitEntry],
        positions: Sequence[int], settings: PairSettings, class_factors: np.ndarray | None = None,
    ) -> None:  # fmt: skip
        self.open_labels, self.positions, self.settings = open_labels, list(positions), settings
        self.entries = {entry.id: entry for entry in entries}
        self.stored: PseudoLabelReader | None = None
        self.factor_of_label: np.ndarray | None = None  # indexed by the uint8 label; ignore keeps 1
        if class_factors is not None:
            self.factor_of_label = np.ones(256, dtype=np.float32)
            self.factor_of_label[: len(class_factors)] = class_factors

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        index, sample_seed = key
        if self.stored is None:
            self.stored = self.open_labels()
        position = self.positions[index]
        image_id = self.stored.ids[position]
        image = read_image(self.entries[image_id].image)
        label = self.stored.pixels("label", position)
        if image.shape[:2] != label.shape:
            raise InputError(f"{self.entries[image_id].image}: size changed since {self.stored.path} was written")
        weight = self.stored.pixels("weight", position).astype(np.float32)
        if self.factor_of_label is not None:
            weight *= self.factor_of_label[label]
        settings = self.settings
        image_tensor, label_tensor, weight_tensor = pseudo_transform(
            image, label, weight, np.random.default_rng(sample_seed), settings.crop_size,
            settings.scale_range, settings.ignore_index,
        )  # fmt: skip
        return {"image": image_tensor, "mask": label_tensor, "weight": weight_tensor}
