from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cisctool.data.demo_images import DEMO_CLASS_NAMES, generate_demo_dataset

SMALL = {"num_labeled": 6, "num_unlabeled": 10, "num_val": 4, "min_size": 48, "max_size": 64}


def _files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in root.rglob("*") if path.is_file()}


def _split(root: Path, name: str) -> list[tuple[str, str]]:
    lines = (root / "splits" / f"{name}.txt").read_text().splitlines()
    return [tuple(line.split()) for line in lines]  # type: ignore[misc]


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo_images")
    generate_demo_dataset(out, seed=3, **SMALL)
    return out


def test_class_names_background_first():
    assert DEMO_CLASS_NAMES[0] == "background"
    assert len(DEMO_CLASS_NAMES) == len(set(DEMO_CLASS_NAMES)) == 6


def test_splits_list_every_image_with_its_mask(small_demo: Path):
    for name, prefix, count in (("labeled", "lab", 6), ("unlabeled", "unl", 10), ("val", "val", 4)):
        entries = _split(small_demo, name)
        assert [image for image, _ in entries] == [f"images/{prefix}_{i:04d}.png" for i in range(count)]
        assert [mask for _, mask in entries] == [f"masks/{prefix}_{i:04d}.png" for i in range(count)]
    assert len(list((small_demo / "images").iterdir())) == len(list((small_demo / "masks").iterdir())) == 20


def test_images_and_masks_match_in_size_and_format(small_demo: Path):
    sizes = set()
    for name in ("labeled", "unlabeled", "val"):
        for image_path, mask_path in _split(small_demo, name):
            with Image.open(small_demo / image_path) as image, Image.open(small_demo / mask_path) as mask:
                assert image.format == mask.format == "PNG"
                assert image.mode == "RGB" and mask.mode == "P"
                assert image.size == mask.size
                width, height = image.size
                assert SMALL["min_size"] <= min(width, height) <= max(width, height) <= SMALL["max_size"]
                sizes.add(image.size)
                values = np.asarray(mask)
            assert values.max() < len(DEMO_CLASS_NAMES)
            assert (values == 0).any() and (values > 0).any()
    assert len(sizes) > 1


def test_every_object_class_appears_in_the_labeled_split(small_demo: Path):
    present = set()
    for _, mask_path in _split(small_demo, "labeled"):
        with Image.open(small_demo / mask_path) as mask:
            present |= set(np.unique(np.asarray(mask)).tolist())
    assert present == set(range(len(DEMO_CLASS_NAMES)))


def test_default_labeled_split_has_each_class_in_three_images(tmp_path: Path):
    generate_demo_dataset(tmp_path, seed=0, num_labeled=30, num_unlabeled=0, num_val=0)
    images_per_class = np.zeros(len(DEMO_CLASS_NAMES), dtype=int)
    for _, mask_path in _split(tmp_path, "labeled"):
        with Image.open(tmp_path / mask_path) as mask:
            images_per_class[np.unique(np.asarray(mask))] += 1
    assert images_per_class[1:].min() >= 3


def test_same_seed_same_bytes_other_seed_differs(small_demo: Path, tmp_path: Path):
    generate_demo_dataset(tmp_path / "again", seed=3, **SMALL)
    generate_demo_dataset(tmp_path / "other", seed=4, **SMALL)
    assert _files(tmp_path / "again") == _files(small_demo)
    other = _files(tmp_path / "other")
    assert other.keys() == _files(small_demo).keys()
    assert other["images/lab_0000.png"] != _files(small_demo)["images/lab_0000.png"]


def test_demo_config_uses_imagenet_mobilenet_when_installed(tmp_path):
    from cisctool.config import load_config
    from cisctool.data.demo import find_mobilenet_weights, make_demo

    config = load_config(make_demo(tmp_path, num_labeled=6, num_unlabeled=2, num_val=2))
    weights = find_mobilenet_weights()
    if weights is None:
        assert config.model.backbone == "tiny" and config.model.pretrained == ""
    else:
        assert config.model.backbone == "mobilenetv2" and config.model.pretrained == weights.as_posix()
    lines = (tmp_path / "splits/oracle.txt").read_text().splitlines()
    assert len(lines) == 8 and all(len(line.split()) == 2 for line in lines)
