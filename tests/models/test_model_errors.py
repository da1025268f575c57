"""Bad names and bad weight files give one-line InputErrors naming what is wrong."""

from pathlib import Path

import pytest
import torch

from cisctool.errors import InputError
from cisctool.models import BACKBONE_NAMES, build_model, load_pretrained
from cisctool.models.tiny import TinyBackbone


def test_unknown_arch_lists_valid_names() -> None:
    with pytest.raises(InputError, match="deeplabv3plus"):
        build_model(arch="unet")


def test_unknown_backbone_lists_valid_names() -> None:
    with pytest.raises(InputError) as caught:
        build_model(backbone="vgg16")
    assert "vgg16" in str(caught.value)
    for name in BACKBONE_NAMES:
        assert name in str(caught.value)


def test_bad_output_stride_and_tiny_pretrained() -> None:
    with pytest.raises(InputError, match="output_stride"):
        build_model(backbone="tiny", output_stride=32)
    with pytest.raises(InputError, match="no pretrained weights"):
        build_model(backbone="tiny", pretrained="weights.pth")


def _load_error(path: Path) -> str:
    """The message load_pretrained raises for `path` into a tiny backbone; it must be one line."""
    with pytest.raises(InputError) as caught:
        load_pretrained(TinyBackbone(), path, ("head.",))
    message = str(caught.value)
    assert str(path) in message and "\n" not in message
    return message


def test_missing_file(tmp_path: Path) -> None:
    assert "not found" in _load_error(tmp_path / "absent.pth")


def test_unreadable_and_non_state_dict_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file\n" * 4)
    assert "cannot read" in _load_error(garbage)
    listing = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listing)
    assert "not a state dict" in _load_error(listing)


def test_missing_unexpected_and_mismatched_keys(tmp_path: Path) -> None:
    state = TinyBackbone().state_dict()
    missing = tmp_path / "missing.pth"
    torch.save({k: v for k, v in state.items() if k != "low_level.0.0.weight"}, missing)
    assert "low_level.0.0.weight" in _load_error(missing)
    unexpected = tmp_path / "unexpected.pth"
    torch.save({**state, "extra.weight": torch.zeros(1)}, unexpected)
    assert "extra.weight" in _load_error(unexpected)
    reshaped = tmp_path / "reshaped.pth"
    torch.save({**state, "high_level.2.0.weight": torch.zeros(1, 2, 3, 3)}, reshaped)
    assert "high_level.2.0.weight" in _load_error(reshaped)


def test_wrapped_state_dict_with_ignored_head_loads(tmp_path: Path) -> None:
    """A {"state_dict": ...} file with a head to skip and no BN batch counters (old files) loads."""
    source = TinyBackbone()
    state = {
        key: value
        for key, value in source.state_dict().items()
        if not key.endswith("num_batches_tracked")
    }
    state["head.weight"] = torch.zeros(3)
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": state, "epoch": 3}, path)
    target = TinyBackbone()
    load_pretrained(target, path, ("head.",))
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value)


def test_the_backbones_built_are_the_config_s_choice_list() -> None:
    from cisctool.config import Backbone, choices
    from cisctool.models import _BACKBONES, VIT_SIZES

    assert (*_BACKBONES, *VIT_SIZES) == choices(Backbone) == BACKBONE_NAMES
