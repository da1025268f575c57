import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from cisctool.data.aerial_images import AERIAL_CLASS_NAMES, generate_aerial_dataset
from cisctool.data.demo import make_demo


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_seeded_and_deterministic(tmp_path: Path):
    generate_aerial_dataset(tmp_path / "a", seed=3, num_labeled=6, num_unlabeled=4, num_val=2)
    generate_aerial_dataset(tmp_path / "b", seed=3, num_labeled=6, num_unlabeled=4, num_val=2)
    generate_aerial_dataset(tmp_path / "c", seed=4, num_labeled=6, num_unlabeled=4, num_val=2)
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    assert tree_digest(tmp_path / "a") != tree_digest(tmp_path / "c")


def test_every_class_in_the_labeled_split_and_masks_match_images(tmp_path: Path):
    generate_aerial_dataset(tmp_path, seed=0, num_labeled=12, num_unlabeled=2, num_val=2)
    seen = np.zeros(len(AERIAL_CLASS_NAMES), dtype=bool)
    for line in (tmp_path / "splits/labeled.txt").read_text().splitlines():
        image_path, mask_path = line.split()
        image, mask = Image.open(tmp_path / image_path), np.asarray(Image.open(tmp_path / mask_path))
        assert image.mode == "RGB" and image.size == mask.shape[::-1]
        assert mask.max() < len(AERIAL_CLASS_NAMES)
        seen[np.unique(mask)] = True
    assert seen.all()


def test_make_demo_writes_a_config_for_the_kind(tmp_path: Path):
    config = make_demo(tmp_path, num_labeled=2, num_unlabeled=1, num_val=1, kind="aerial").read_text()
    assert 'name = "aerial"' in config and "num_classes = 7" in config and '"road"' in config
