"""The DPT head over a DINOv2 ViT: shapes at any input size, UniMatch V2's parameter names, the CISC
feature map it names, and inference folding that finds no batch norm to fold."""

from pathlib import Path

import pytest
import torch
from torch import nn

from cisctool.config import load_config
from cisctool.errors import InputError
from cisctool.models import build_model
from cisctool.models.dpt import CISC_FEATURES, DPT
from cisctool.models.fold import fold_batch_norm


@pytest.fixture(scope="module")
def model() -> DPT:
    torch.manual_seed(0)
    built = build_model(backbone="dinov2_small", num_classes=5, head_channels=64)
    assert isinstance(built, DPT)
    return built.eval()


@pytest.mark.parametrize("size", [(98, 98), (100, 75), (128, 96)])
def test_logits_at_input_size_and_fusion_features_over_the_whole_image(model: DPT, size: tuple[int, int]):
    """Sides that are not multiples of 14 are resized to the nearest ones; the fusion map is at 8× the patch grid."""
    with torch.no_grad():
        output = model(torch.randn(2, 3, *size))
    grid = tuple(int(side / 14 + 0.5) for side in size)
    assert output.logits.shape == (2, 5, *size)
    assert output.features.shape == (2, 64, 8 * grid[0], 8 * grid[1])
    assert CISC_FEATURES == "fusion" and model.feature_dim == 64


def test_patch_token_features_are_the_last_taken_block(model: DPT):
    model.cisc_features = "tokens"
    try:
        with torch.no_grad():
            images = torch.randn(1, 3, 42, 70)
            output, tokens = model(images), model.backbone(images).patch_tokens[-1]
    finally:
        model.cisc_features = CISC_FEATURES
    assert output.features.shape == (1, 384, 3, 5)
    torch.testing.assert_close(output.features.flatten(2).transpose(1, 2), tokens)


def test_unimatch_v2_parameter_names(model: DPT):
    """UniMatch V2's DPT names, so its layout is recognisable (and its head weights map one to one)."""
    keys = set(model.state_dict())
    for key in ("head.projects.3.weight", "head.resize_layers.0.weight", "head.resize_layers.3.weight",
                "head.scratch.layer1_rn.weight", "head.scratch.refinenet4.resConfUnit2.conv1.weight",
                "head.scratch.refinenet1.out_conv.bias", "head.scratch.output_conv.2.weight",
                "backbone.blocks.11.ls2.gamma"):  # fmt: skip
        assert key in keys, key
    assert "head.scratch.layer1_rn.bias" not in keys  # as UniMatch V2: no bias on the reassemble convs
    shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert shapes["head.projects.0.weight"] == (48, 384, 1, 1) and shapes["head.projects.3.weight"] == (384, 384, 1, 1)


def test_folding_finds_no_batch_norm(model: DPT):
    assert not any(isinstance(module, nn.BatchNorm2d) for module in model.modules())
    folded = fold_batch_norm(model)
    images = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(folded(images).logits, model(images).logits, rtol=0, atol=0)


def test_training_reaches_backbone_and_head():
    torch.manual_seed(1)
    model = build_model(backbone="dinov2_small", num_classes=3, head_channels=16)
    output = model(torch.randn(2, 3, 28, 42))
    (output.logits.mean() + output.features.mean()).backward()
    assert model.backbone.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert model.head.projects[0].weight.grad.abs().sum() > 0


def test_deeplab_decoder_stride_is_refused():
    with pytest.raises(InputError, match="decoder_stride = 2 is a DeepLabV3\\+ stage"):
        build_model(backbone="dinov2_small", decoder_stride=2)


def test_the_unimatch_v2_example_config_loads_with_its_recipe():
    config = load_config(Path(__file__).parents[2] / "examples" / "unimatch_v2.toml")
    assert config.model.backbone == "dinov2_base" and config.model.pretrained.endswith("dinov2_base.pth")
    assert config.train.crop_size % 14 == 0 and config.train.optimizer == "adamw"
    assert config.train.head_lr_mult == 40.0 and config.train.amp
