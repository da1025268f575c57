"""The three presets on tiny fake data-set layouts, with split lines as ST++ / UniMatch write them."""

from pathlib import Path

import numpy as np
from PIL import Image

from cisctool.config import load_config
from cisctool.data.datasets import load_pair
from cisctool.data.masks import write_mask
from cisctool.data.splits import read_split, split_entries


def write_image(path: Path, height: int = 12, width: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), 90, dtype=np.uint8)).save(path)


def write_config(root: Path, dataset: str, labeled: str) -> Path:
    config = root / "cisctool.toml"
    config.write_text(f'dataset = "{dataset}"\n[data]\nroot = "."\nlabeled = "{labeled}"\n')
    return config


def test_voc_bare_ids_resolve_to_jpeg_images_and_the_aug_masks(tmp_path: Path):
    for image_id in ("2007_000032", "2007_000039"):
        write_image(tmp_path / "JPEGImages" / f"{image_id}.jpg")
        (tmp_path / "SegmentationClassAug").mkdir(exist_ok=True)
        write_mask(tmp_path / "SegmentationClassAug" / f"{image_id}.png", np.full((12, 16), 15, np.uint8))
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits/labeled.txt").write_text("2007_000032\n2007_000039\n")
    config = load_config(write_config(tmp_path, "voc", "splits/labeled.txt"))
    assert config.data.num_classes == 21 and config.class_names[15] == "person"
    assert config.rectify.guide_exclude == (0,) and config.train.crop_size == 321
    entries = split_entries(config, "labeled")
    image, mask = load_pair(entries[0], 21, 255)
    assert image.shape == (12, 16, 3) and (mask == 15).all()


def test_cityscapes_label_ids_become_train_ids(tmp_path: Path):
    stem = "aachen_000000_000019"
    write_image(tmp_path / f"leftImg8bit/train/aachen/{stem}_leftImg8bit.png")
    label_ids = np.array([[7, 8, 26, 33], [0, 1, 255, 24]], dtype=np.uint8).repeat(6, 0).repeat(4, 1)
    mask_path = tmp_path / f"gtFine/train/aachen/{stem}_gtFine_labelIds.png"
    mask_path.parent.mkdir(parents=True)
    Image.fromarray(label_ids, mode="L").save(mask_path)
    line = f"leftImg8bit/train/aachen/{stem}_leftImg8bit.png gtFine/train/aachen/{stem}_gtFine_labelIds.png"
    (tmp_path / "labeled.txt").write_text(line + "\n")
    config = load_config(write_config(tmp_path, "cityscapes", "labeled.txt"))
    assert config.data.num_classes == 19 and config.eval.mode == "slide"
    entry = read_split(config.data_root / "labeled.txt", config.data_root, masks_required=True)[0]
    _, mask = load_pair(entry, 19, 255)
    assert mask[0, ::4].tolist() == [0, 1, 13, 18] and mask[6, ::4].tolist() == [255, 255, 255, 11]
    train_ids = mask_path.with_name(f"{stem}_gtFine_labelTrainIds.png")
    Image.fromarray(mask, mode="L").save(train_ids)  # already train ids: read as they are
    (tmp_path / "labeled.txt").write_text(line.replace("_labelIds", "_labelTrainIds") + "\n")
    entry = read_split(config.data_root / "labeled.txt", config.data_root, masks_required=True)[0]
    assert np.array_equal(load_pair(entry, 19, 255)[1], mask)


def test_coco_prepared_masks_with_81_classes(tmp_path: Path):
    write_image(tmp_path / "train2017/000000000009.jpg")
    (tmp_path / "masks/train2017").mkdir(parents=True)
    write_mask(tmp_path / "masks/train2017/000000000009.png", np.full((12, 16), 80, np.uint8))
    (tmp_path / "labeled.txt").write_text("train2017/000000000009.jpg masks/train2017/000000000009.png\n")
    config = load_config(write_config(tmp_path, "coco", "labeled.txt"))
    assert config.data.num_classes == 81 and len(config.class_names) == 81
    assert config.class_names[1] == "person" and config.class_names[80] == "toothbrush"
    entry = read_split(config.data_root / "labeled.txt", config.data_root, masks_required=True)[0]
    assert (load_pair(entry, 81, 255)[1] == 80).all()
