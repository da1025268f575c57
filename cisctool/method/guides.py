"""Which labeled prototype guides each (unlabeled image, present class) query.

`nearest` (ours): the top-k same-class prototypes from the index, averaged.
`random` (the official code): a random labeled image that has the class.
Random draws come from a hash of (seed, image position, class), so a resumed
or sharded run picks exactly what an uninterrupted one would. A query never
gets its own image as guide (an image may be in both splits).
"""

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from cisctool.config import Guide, choices
from cisctool.method.index import (
    PrototypeIndex,
    search_by_class,
    stored_vectors,
)


def mix_hash(*keys: np.ndarray) -> np.ndarray:
    """Deterministic uint64 hash of integer arrays (splitmix64 rounds), vectorised."""
    state = np.zeros(np.broadcast(*keys).shape, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for key in keys:
            state = state ^ np.asarray(key).astype(np.uint64)
            state = state + np.uint64(0x9E3779B97F4A7C15)
            state = (state ^ (state >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            state = (state ^ (state >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            state = state ^ (state >> np.uint64(31))
    return state


@dataclass
class Guides:
    """Per query: the guide prototype, the labeled position of its image, and whether there is one."""

    vectors: np.ndarray  # Q×D, L2-normalised (zeros where unguided)
    labeled_positions: np.ndarray  # Q, top guide's image's split position in the labeled split, −1 = none
    guided: np.ndarray  # Q bools
    fallback: np.ndarray  # Q bools: no hit, the class's global prototype was used

    @classmethod
    def none(cls, dim: int) -> "Guides":
        """No queries, no guides (self-training)."""
        return cls(np.zeros((0, dim), np.float32), np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0, bool))


class GuideSource:
    """The labeled prototypes of one index, ready to hand out guides."""

    def __init__(self, prototype_index: PrototypeIndex, num_classes: int, mode: str, topk: int, seed: int):
        if mode not in choices(Guide):
            raise ValueError(f"unknown guide mode {mode!r}")
        self.index, self.mode, self.topk, self.seed = prototype_index, mode, topk, seed
        self.vectors = stored_vectors(prototype_index)
        classes = prototype_index.classes
        self.order = np.argsort(classes, kind="stable")  # index rows grouped by class
        self.class_start = np.searchsorted(classes[self.order], np.arange(num_classes + 1))
        self.class_count = np.diff(self.class_start)
        sums = np.zeros((num_classes, self.vectors.shape[1]), dtype=np.float64)
        np.add.at(sums, classes, self.vectors)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        self.class_means = (sums / np.maximum(norms, 1e-12)).astype(np.float32)
        self.position_of_id = {image_id: at for at, image_id in enumerate(prototype_index.image_ids)}

    def labeled_positions(self, image_ids: Iterable[str]) -> np.ndarray:
        """Each image's split position in the labeled split, −1 when it is not a labeled image."""
        return np.fromiter((self.position_of_id.get(image_id, -1) for image_id in image_ids), dtype=np.int64)

    def choose(
        self, queries: np.ndarray, classes: np.ndarray, positions: np.ndarray, own_positions: np.ndarray
    ) -> Guides:
        """Guides for Q queries (prototypes Q×D, class indices Q, the images' split positions Q, their own
        labeled positions Q, −1 when not labeled)."""
        count = len(classes)
        has_class = self.class_count[classes] > 0 if count else np.zeros(0, dtype=bool)
        if self.mode == "nearest":
            vectors, labeled, hit = self._nearest(queries, classes, own_positions)
        else:
            vectors, labeled, hit = self._random(classes, positions, own_positions)
        fallback = has_class & ~hit
        vectors[fallback] = self.class_means[classes[fallback]]
        vectors[~has_class] = 0.0
        return Guides(vectors, np.where(hit, labeled, -1), has_class, fallback)

    def _nearest(
        self, queries: np.ndarray, classes: np.ndarray, own_positions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        extra = int((own_positions >= 0).any())  # one more hit to make room for dropping the image itself
        _, index_rows = search_by_class(self.index, queries, classes, self.topk + extra)
        hit_positions = np.where(index_rows >= 0, self.index.rows[np.maximum(index_rows, 0)], -1)
        keep = (index_rows >= 0) & (hit_positions != own_positions[:, None])
        keep &= np.cumsum(keep, axis=1) <= self.topk  # the first k that are not the image itself
        weights = keep.astype(np.float32)[..., None]
        summed = (self.vectors[np.maximum(index_rows, 0)] * weights).sum(axis=1)
        norms = np.linalg.norm(summed, axis=1, keepdims=True)
        vectors = (summed / np.maximum(norms, 1e-12)).astype(np.float32)
        first = np.argmax(keep, axis=1)
        return vectors, hit_positions[np.arange(len(classes)), first], keep.any(axis=1)

    def _random(
        self, classes: np.ndarray, positions: np.ndarray, own_positions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        size = self.class_count[classes]
        draw = mix_hash(np.uint64(self.seed), positions, classes) % np.maximum(size, 1).astype(np.uint64)
        first = self.class_start[classes] + draw.astype(np.int64)
        index_rows = self.order[np.minimum(first, len(self.order) - 1)]
        own = self.index.rows[index_rows] == own_positions
        step = np.where(own & (size > 1), 1, 0)  # the next vector of the class instead of itself
        shifted = self.class_start[classes] + (draw.astype(np.int64) + step) % np.maximum(size, 1)
        index_rows = self.order[np.minimum(shifted, len(self.order) - 1)]
        hit = (size > 0) & (self.index.rows[index_rows] != own_positions)
        return self.vectors[index_rows].copy(), self.index.rows[index_rows], hit


def official_slots(guided_slots: np.ndarray, positions: np.ndarray, seed: int) -> np.ndarray:
    """The official weight's one random guided class per image: slot index, −1 when none.

    guided_slots B×K bools, positions B split positions.
    """
    count = guided_slots.sum(axis=1)
    draw = mix_hash(np.uint64(seed), positions, np.uint64(1 << 20)) % np.maximum(count, 1).astype(np.uint64)
    rank = np.cumsum(guided_slots, axis=1) - 1
    matches = guided_slots & (rank == draw.astype(np.int64)[:, None])
    return np.where(count > 0, np.argmax(matches, axis=1), -1)


@dataclass
class GuideHit:
    """One retrieved guide of a query class: labeled position (`row`), its image id, cosine."""

    cls: int
    area: float
    rank: int
    row: int
    image_id: str
    score: float
