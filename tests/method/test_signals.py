import torch
import torch.nn.functional as F

from cisctool.method.signals import predict
from cisctool.models import build_model


def test_tta_probabilities_equal_a_hand_averaged_loop_of_views():
    torch.manual_seed(0)
    model = build_model("deeplabv3plus", "tiny", 4, head_channels=16).eval()
    images = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        probabilities, features = predict(model, images, (0.5, 1.0, 1.5), flip=True)
        expected = torch.zeros(2, 4, 64, 96)
        for scale in (0.5, 1.0, 1.5):
            for mirrored in (False, True):
                view = images if scale == 1.0 else F.interpolate(images, scale_factor=scale, mode="bilinear")
                logits = model(view.flip(-1) if mirrored else view).logits
                logits = logits.flip(-1) if mirrored else logits
                expected += F.interpolate(logits, size=(64, 96), mode="bilinear").softmax(dim=1)
        plain = model(images)
        assert torch.allclose(probabilities, expected / 6, atol=1e-6)
        assert torch.equal(features, plain.features)  # CISC features: the plain view's
        single, _ = predict(model, images)
        assert torch.allclose(single, plain.logits.softmax(dim=1), atol=1e-6)
