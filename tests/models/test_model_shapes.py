"""Every backbone through build_model: shapes, non-negative features, gradients, determinism."""

import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from cisctool.errors import InputError
from cisctool.models import BACKBONE_NAMES, build_model
from cisctool.models.mobilenetv2 import MobileNetV2
from cisctool.models.resnet import resnet50

NUM_CLASSES = 5
HEIGHT, WIDTH = 41, 37  # not multiples of 16 on purpose; small for CPU speed
CNN_BACKBONES = [name for name in BACKBONE_NAMES if not name.startswith("dinov2")]  # the ViTs' DPT: test_dpt.py


@pytest.mark.parametrize("backbone", CNN_BACKBONES)
def test_forward_backward_and_eval(backbone: str) -> None:
    torch.manual_seed(0)
    model = build_model(backbone=backbone, num_classes=NUM_CLASSES)
    assert model.num_classes == NUM_CLASSES and model.feature_dim == 256
    images = torch.randn(2, 3, HEIGHT, WIDTH)

    output = model(images)
    assert output.logits.shape == (2, NUM_CLASSES, HEIGHT, WIDTH)
    assert output.features.shape == (2, 256, math.ceil(HEIGHT / 4), math.ceil(WIDTH / 4))
    assert output.features.min() >= 0

    (output.logits.mean() + output.features.mean()).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
    backbone_grads = [p.grad.abs().sum() for p in model.backbone.parameters()]
    assert sum(backbone_grads) > 0
    assert model.classifier.weight.grad.abs().sum() > 0
    assert model.aspp.project[0][0].weight.grad.abs().sum() > 0

    model.eval()
    with torch.no_grad():
        first, second = model(images), model(images)
    assert torch.equal(first.logits, second.logits)
    assert torch.equal(first.features, second.features)


@pytest.mark.parametrize("make_backbone", [resnet50, MobileNetV2], ids=["resnet50", "mobilenetv2"])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_output_stride(make_backbone: Callable[[int], nn.Module], output_stride: int) -> None:
    backbone = make_backbone(output_stride).eval()
    with torch.no_grad():
        fine, low, high = backbone(torch.randn(1, 3, HEIGHT, WIDTH))
    assert fine.shape == (1, backbone.fine_level_channels, math.ceil(HEIGHT / 2), math.ceil(WIDTH / 2))
    low_size = (math.ceil(HEIGHT / 4), math.ceil(WIDTH / 4))
    assert low.shape == (1, backbone.low_level_channels, *low_size)
    assert high.shape == (
        1,
        backbone.high_level_channels,
        math.ceil(HEIGHT / output_stride),
        math.ceil(WIDTH / output_stride),
    )
    assert backbone.atrous_rates == ((6, 12, 18) if output_stride == 16 else (12, 24, 36))


def test_tiny_is_small_and_at_stride_16() -> None:
    model = build_model(backbone="tiny", num_classes=NUM_CLASSES)
    assert sum(p.numel() for p in model.backbone.parameters()) < 400_000
    with torch.no_grad():
        fine, low, high = model.backbone.eval()(torch.randn(1, 3, 96, 96))
    assert (fine.shape, low.shape, high.shape) == ((1, 16, 48, 48), (1, 24, 24, 24), (1, 96, 6, 6))


def test_head_channels_set_the_feature_dim() -> None:
    model = build_model(backbone="tiny", num_classes=NUM_CLASSES, head_channels=32).eval()
    with torch.no_grad():
        output = model(torch.randn(1, 3, HEIGHT, WIDTH))
    assert model.feature_dim == 32
    assert output.features.shape == (1, 32, math.ceil(HEIGHT / 4), math.ceil(WIDTH / 4))


@pytest.mark.parametrize("backbone", CNN_BACKBONES)
def test_decoder_stride_2_predicts_from_a_stride_2_stage_and_keeps_the_stride_4_features(backbone: str) -> None:
    torch.manual_seed(0)
    model = build_model(backbone=backbone, num_classes=NUM_CLASSES, head_channels=32, decoder_stride=2)
    images = torch.randn(2, 3, HEIGHT, WIDTH)
    output = model(images)
    assert output.logits.shape == (2, NUM_CLASSES, HEIGHT, WIDTH)
    assert output.features.shape == (2, 32, math.ceil(HEIGHT / 4), math.ceil(WIDTH / 4))
    assert model.classifier.in_channels == 16
    output.logits.mean().backward()
    assert model.fine_decoder.reduce[0].weight.grad.abs().sum() > 0  # the stride-2 path reaches the logits
    stride_4 = build_model(backbone=backbone, num_classes=NUM_CLASSES, head_channels=32)
    assert stride_4.fine_decoder is None and stride_4.classifier.in_channels == 32



def test_other_decoder_strides_are_refused() -> None:
    with pytest.raises(InputError, match="decoder_stride must be 4 or 2, got 8"):
        build_model(backbone="tiny", num_classes=NUM_CLASSES, decoder_stride=8)
