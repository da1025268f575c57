"""Our DINOv2 ViTs against the official code (the PyPI package `dinov2`, installed by make --no-deps):
the same parameter names and shapes, the same features from the same weights, and the official
files loading through `model.pretrained` while other models' files are refused in one line."""

from pathlib import Path

import pytest
import torch
from torch import nn

from cisctool.errors import InputError
from cisctool.models import build_model
from cisctool.models.dinov2 import PRETRAIN_SIZE, VIT_SIZES, dinov2
from cisctool.models.resnet import resnet50

official = pytest.importorskip(
    "dinov2.models.vision_transformer", reason="the official DINOv2 code (make installs it with --no-deps)"
)
BUILDERS = {"dinov2_small": "vit_small", "dinov2_base": "vit_base", "dinov2_large": "vit_large"}
INPUT_SIZES = [(70, 112), (154, 98)]  # both resize the 37×37 positional embedding; the second non-square


def official_vit(name: str) -> nn.Module:
    """The official model as torch.hub's `dinov2_vits14` etc. build it, random weights (a uniform drop-path
    rate, 0 as in the hub's models either way, needs no `linspace(...).item()`, which the meta device lacks)."""
    builder = getattr(official, BUILDERS[name])
    return builder(patch_size=14, img_size=PRETRAIN_SIZE, init_values=1.0, block_chunks=0, drop_path_uniform=True).eval()


@pytest.fixture(scope="module", params=["dinov2_small", "dinov2_base"])
def pair(request: pytest.FixtureRequest) -> tuple[str, nn.Module, nn.Module]:
    """(name, official model, ours holding the official model's random weights)."""
    torch.manual_seed(0)
    reference = official_vit(request.param)
    ours = dinov2(request.param).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    return request.param, reference, ours


@pytest.mark.parametrize("size", INPUT_SIZES)
def test_same_intermediate_features_and_class_tokens(pair: tuple[str, nn.Module, nn.Module], size: tuple[int, int]):
    name, reference, ours = pair
    images = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected = reference.get_intermediate_layers(images, list(VIT_SIZES[name].taken_blocks), return_class_token=True)
        got = ours(images)
    assert got.grid == (size[0] // 14, size[1] // 14)
    assert len(got.patch_tokens) == len(expected) == 4
    for (patch_tokens, class_token), ours_patch, ours_class in zip(expected, got.patch_tokens, got.class_tokens, strict=True):
        torch.testing.assert_close(ours_patch, patch_tokens, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(ours_class, class_token, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size", [(518, 518), (518, 266), (28, 14), (1022, 700)])
def test_same_positional_embedding(pair: tuple[str, nn.Module, nn.Module], size: tuple[int, int]):
    """At 518×518 the file's embedding is used as it is; every other size is resized as the official code does."""
    _, reference, ours = pair
    tokens = torch.zeros(1, (size[0] // 14) * (size[1] // 14) + 1, ours.embed_dim)
    with torch.no_grad():
        expected = reference.interpolate_pos_encoding(tokens, size[0], size[1])
        got = ours.interpolate_pos_encoding(tokens, *size)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_large_has_the_official_keys_and_shapes():
    """ViT-L is built in both (on the meta device: no weights are drawn) but not run: too slow for the quick suite."""
    with torch.device("meta"):
        reference, ours = official_vit("dinov2_large"), dinov2("dinov2_large")
    expected = {key: tuple(value.shape) for key, value in reference.state_dict().items()}
    assert {key: tuple(value.shape) for key, value in ours.state_dict().items()} == expected
    assert expected["blocks.23.ls2.gamma"] == (1024,) and expected["pos_embed"] == (1, 1370, 1024)


def test_official_file_loads_through_model_pretrained(tmp_path: Path):
    torch.manual_seed(1)
    reference = official_vit("dinov2_small")
    path = tmp_path / "dinov2_small.pth"
    torch.save(reference.state_dict(), path)  # what dinov2_vits14_pretrain.pth holds: the bare state dict
    model = build_model(backbone="dinov2_small", num_classes=3, pretrained=str(path), head_channels=64)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(model.backbone.state_dict()[key], value, rtol=0, atol=0, msg=key)


def _refusal(path: Path, backbone: str = "dinov2_small") -> str:
    with pytest.raises(InputError) as caught:
        build_model(backbone=backbone, num_classes=3, pretrained=str(path))
    message = str(caught.value)
    assert message.startswith(str(path)) and "\n" not in message
    return message


def test_other_models_files_are_refused_in_one_line(tmp_path: Path):
    resnet = tmp_path / "resnet50.pth"
    torch.save(resnet50().state_dict(), resnet)
    assert "none of this backbone's" in _refusal(resnet) and "conv1.weight" in _refusal(resnet)
    base = tmp_path / "dinov2_base.pth"
    with torch.device("meta"):
        state = dinov2("dinov2_base").state_dict()
    torch.save({key: torch.zeros(value.shape) for key, value in state.items()}, base)
    assert "shape mismatches" in _refusal(base) and "768" in _refusal(base)


def test_missing_and_unexpected_keys_are_named(tmp_path: Path):
    state = dinov2("dinov2_small").state_dict()
    missing = tmp_path / "missing.pth"
    torch.save({key: value for key, value in state.items() if key != "norm.weight"}, missing)
    assert "1 backbone keys missing" in _refusal(missing) and "norm.weight" in _refusal(missing)
    registers = tmp_path / "registers.pth"
    torch.save({**state, "register_tokens": torch.zeros(1, 4, 384)}, registers)
    assert "unexpected" in _refusal(registers) and "register_tokens" in _refusal(registers)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(2)
    plain, checkpointed = dinov2("dinov2_small"), dinov2("dinov2_small", gradient_checkpointing=True)
    checkpointed.load_state_dict(plain.state_dict())
    images = torch.randn(2, 3, 42, 56)
    for model in (plain, checkpointed):
        sum(tokens.square().mean() for tokens in model(images).patch_tokens).backward()
    for (key, first), second in zip(plain.named_parameters(), checkpointed.parameters(), strict=True):
        torch.testing.assert_close(second.grad, first.grad, rtol=1e-5, atol=1e-6, msg=key)


def test_mask_token_is_kept_but_not_trained():
    """The pretraining's mask token is in the files (so it is a parameter) but never in a segmentation
    forward; frozen, it leaves no unused trainable parameter for DistributedDataParallel to trip on."""
    model = dinov2("dinov2_small")
    assert "mask_token" in model.state_dict() and not model.mask_token.requires_grad


def test_input_not_a_multiple_of_the_patch_is_refused():
    with pytest.raises(ValueError, match="multiple of the patch size 14"):
        dinov2("dinov2_small")(torch.zeros(1, 3, 50, 56))
