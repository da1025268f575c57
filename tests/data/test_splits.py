import pickle
import re
from pathlib import Path

import pytest

from cisctool.config import Config, with_overrides
from cisctool.data.splits import SplitEntry, read_split, split_entries
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


def test_split_entries_reads_the_configs_split_with_masks_required_where_training_needs_them(demo_config: Config, tmp_path: Path):
    for name in ("labeled", "unlabeled", "val"):
        expected = read_split(demo_config.data_root / getattr(demo_config.data, name), demo_config.data_root,
                              masks_required=False)  # fmt: skip
        assert split_entries(demo_config, name) == expected
    maskless = tmp_path / "maskless.txt"  # an absolute split path, so that the shared demo folder stays as made
    maskless.write_text("images/a.png\n")
    for name in ("labeled", "val"):
        with pytest.raises(InputError, match="no mask given"):
            split_entries(with_overrides(demo_config, {f"data.{name}": str(maskless)}), name)
    unlabeled = with_overrides(demo_config, {"data.unlabeled": str(maskless)})
    assert [entry.mask for entry in split_entries(unlabeled, "unlabeled")] == [None]
    with pytest.raises(InputError, match="no mask given"):
        split_entries(unlabeled, "unlabeled", masks_required=True)


def test_packed_entries_give_back_each_line_as_written(tmp_path: Path):
    split = tmp_path / "s.txt"
    split.write_text("imgs/é1.png masks/é1.png\nimgs/b.png\nimgs/c.png masks/c.png\n", encoding="utf-8")
    entries = read_split(split, tmp_path, masks_required=False)
    expected = [SplitEntry("é1", "imgs/é1.png", "masks/é1.png", str(tmp_path)),
                SplitEntry("b", "imgs/b.png", None, str(tmp_path)),
                SplitEntry("c", "imgs/c.png", "masks/c.png", str(tmp_path))]  # fmt: skip
    assert entries == expected and list(entries) == expected and entries[-1] == expected[2]
    assert entries[1:] == expected[1:] and list(entries.ids) == ["é1", "b", "c"] and entries[1].mask is None
    assert entries[0].image == tmp_path / "imgs/é1.png" and pickle.loads(pickle.dumps(entries)) == expected
    with pytest.raises(IndexError):
        entries[3]
