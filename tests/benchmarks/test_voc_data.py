"""The synthetic VOC-size set: VOC's image size, class indices and ignore band, reproducible by seed."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from voc_data import HEIGHT, IGNORE, VOC_CLASSES, WIDTH, synthetic_pair  # noqa: E402


def test_pair_has_voc_size_classes_and_an_ignore_band_around_objects() -> None:
    image, mask = synthetic_pair(np.random.default_rng([7, 3]))
    assert image.shape == (HEIGHT, WIDTH, 3) and image.dtype == np.uint8 and mask.shape == (HEIGHT, WIDTH)
    values = set(np.unique(mask).tolist())
    objects = values - {0, IGNORE}
    assert objects and objects <= set(range(1, len(VOC_CLASSES))) and IGNORE in values
    # no object pixel touches background directly: the ignore band lies between them
    assert not np.any((mask[:, 1:] == 0) & np.isin(mask[:, :-1], list(objects)))
    assert not np.any((mask[1:] == 0) & np.isin(mask[:-1], list(objects)))


def test_pair_is_a_function_of_its_seed() -> None:
    first, second = synthetic_pair(np.random.default_rng([7, 5])), synthetic_pair(np.random.default_rng([7, 5]))
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
