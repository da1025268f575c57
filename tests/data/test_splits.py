import re
from pathlib import Path

import pytest

from cisctool.data.splits import read_split
from cisctool.errors import InputError


def test_image_mask_lines_and_optional_mask(tmp_path: Path):
    split = tmp_path / "s.txt"
    split.write_text("images/a.png masks/a.png\n\n# comment\nimages/b.jpg\n")
    entries = read_split(split, tmp_path, masks_required=False)
    assert [entry.id for entry in entries] == ["a", "b"]
    assert entries[0].image == tmp_path / "images/a.png" and entries[0].mask == tmp_path / "masks/a.png"
    assert entries[1].mask is None
    with pytest.raises(InputError, match=r"s.txt:4: no mask given for 'b'"):
        read_split(split, tmp_path, masks_required=True)


def test_bare_voc_ids_prefer_segmentation_class_then_aug(tmp_path: Path):
    (tmp_path / "SegmentationClassAug").mkdir()
    (tmp_path / "SegmentationClassAug" / "2007_000032.png").touch()
    (tmp_path / "SegmentationClass").mkdir()
    (tmp_path / "SegmentationClass" / "2007_000039.png").touch()
    split = tmp_path / "train.txt"
    split.write_text("2007_000032\n2007_000039\n")
    first, second = read_split(split, tmp_path, masks_required=True)
    assert first.image == tmp_path / "JPEGImages" / "2007_000032.jpg"
    assert first.mask == tmp_path / "SegmentationClassAug" / "2007_000032.png"
    assert second.mask == tmp_path / "SegmentationClass" / "2007_000039.png"


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "split is empty"),
        ("a.png m.png\na.png m2.png\n", "duplicate image id 'a' (first on line 1)"),
        ("a.png m.png extra\n", "expected 'image [mask]'"),
    ],
)
def test_bad_split_files(tmp_path: Path, text: str, message: str):
    split = tmp_path / "s.txt"
    split.write_text(text)
    with pytest.raises(InputError, match=re.escape(message)):
        read_split(split, tmp_path, masks_required=False)


def test_missing_root_and_split(tmp_path: Path):
    with pytest.raises(InputError, match="data root folder not found"):
        read_split(tmp_path / "s.txt", tmp_path / "nope", masks_required=False)
    with pytest.raises(InputError, match="split file not found"):
        read_split(tmp_path / "s.txt", tmp_path, masks_required=False)
