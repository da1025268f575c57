import pytest
import torch
from torch import nn

from cisctool.models import build_model
from cisctool.models.fold import fold_batch_norm


def with_trained_looking_norms(model: nn.Module) -> nn.Module:
    """Batch-norm statistics and affine terms away from their initial 0/1, as after training."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            size = module.num_features
            module.running_mean.copy_(torch.rand(size, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(size, generator=generator) * 1.5 + 0.5)
            module.weight.data.copy_(torch.rand(size, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(size, generator=generator) * 0.4 - 0.2)
    return model.eval()


@pytest.mark.parametrize("backbone", ["tiny", "mobilenetv2", "resnet50"])
def test_folded_model_gives_the_same_outputs_without_any_batch_norm(backbone: str):
    torch.manual_seed(0)
    model = with_trained_looking_norms(build_model(backbone=backbone, num_classes=4, head_channels=32))
    folded = fold_batch_norm(model)
    assert not any(isinstance(module, nn.BatchNorm2d) for module in folded.modules())
    images = torch.randn(2, 3, 67, 90)
    with torch.inference_mode():
        expected, got = model(images), folded(images)
    for name in ("logits", "features"):
        reference = getattr(expected, name)
        scale = reference.abs().max().item()
        torch.testing.assert_close(getattr(got, name), reference, rtol=0, atol=1e-4 * max(scale, 1.0))


def test_folding_leaves_the_loaded_model_and_its_state_dict_untouched():
    model = with_trained_looking_norms(build_model(backbone="tiny", num_classes=3, head_channels=16))
    before = {key: value.clone() for key, value in model.state_dict().items()}
    fold_batch_norm(model)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[key], after[key]) for key in before)
    assert sum(isinstance(module, nn.BatchNorm2d) for module in model.modules()) > 0


def test_a_convolution_with_its_own_bias_keeps_it_inside_the_fold():
    torch.manual_seed(0)
    block = with_trained_looking_norms(nn.Sequential(nn.Conv2d(3, 5, 3, bias=True), nn.BatchNorm2d(5), nn.ReLU()))
    folded = fold_batch_norm(block)
    assert isinstance(folded[1], nn.Identity)
    images = torch.randn(2, 3, 9, 9)
    with torch.inference_mode():
        torch.testing.assert_close(folded(images), block(images), rtol=0, atol=1e-5)
