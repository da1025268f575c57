import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cisctool.method.losses import weighted_cross_entropy
from cisctool.method.pseudo_training import cutmix, select_positions


def test_weighted_cross_entropy_equals_hand_computation():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # B=1, C=2, H=1, W=2
    labels = torch.tensor([[[0, 1]]])
    weights = torch.tensor([[[0.5, 0.25]]])
    first = -math.log(math.exp(2) / (math.exp(2) + 1))
    second = -math.log(math.exp(1) / (math.exp(1) + 1))
    expected = (0.5 * first + 0.25 * second) / 0.75
    assert float(weighted_cross_entropy(logits, labels, weights, 255)) == pytest.approx(expected, rel=1e-6)
    ignored = torch.tensor([[[0, 255]]])
    assert float(weighted_cross_entropy(logits, ignored, weights, 255)) == pytest.approx(first, rel=1e-6)
    nothing = torch.full((1, 1, 2), 255)
    assert float(weighted_cross_entropy(logits, nothing, weights, 255)) == 0.0


def test_unit_weights_give_the_plain_mean_cross_entropy():
    logits, labels = torch.randn(2, 4, 5, 5), torch.randint(0, 4, (2, 5, 5))
    plain = F.cross_entropy(logits, labels)
    assert float(weighted_cross_entropy(logits, labels, torch.ones(2, 5, 5), 255)) == pytest.approx(float(plain))


def test_round_one_takes_the_most_reliable_share_and_later_rounds_take_all():
    reliability = np.array([0.5, np.nan, 0.1, 0.9, 0.2, 0.3])
    assert select_positions(reliability, 1, "reliable", 0.5).tolist() == [2, 4, 5]
    assert select_positions(reliability, 1, "reliable", 0.8).tolist() == [0, 2, 3, 4, 5]  # NaN last
    assert select_positions(reliability, 2, "reliable", 0.5).tolist() == list(range(6))
    assert select_positions(reliability, 1, "all", 0.5).tolist() == list(range(6))
    assert select_positions(reliability, 1, "reliable", 0.01).tolist() == [2]
    assert select_positions(reliability, 2, "reliable-always", 0.5).tolist() == [2, 4, 5]  # every round
    assert select_positions(reliability, 3, "reliable-always", 1.0).tolist() == list(range(6))


def test_cutmix_pastes_boxes_of_partners_with_label_and_weight_and_is_reproducible():
    images = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 16, 16).contiguous()
    labels = torch.arange(4).view(4, 1, 1).expand(4, 16, 16).contiguous()
    weights = torch.arange(4.0).view(4, 1, 1).expand(4, 16, 16).contiguous() / 10
    mixed = cutmix(images, labels, weights, torch.Generator().manual_seed(3))
    again = cutmix(images, labels, weights, torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(mixed, again))
    mixed_images, mixed_labels, mixed_weights = mixed
    assert not torch.equal(mixed_labels, labels)  # seed 3 mixes at least one image
    for slot in range(4):
        pasted = mixed_labels[slot] != slot
        # wherever a box landed, image, label and weight all come from the same partner
        assert torch.equal(mixed_images[slot, 0][pasted], mixed_labels[slot][pasted].float())
        assert torch.allclose(mixed_weights[slot][pasted], mixed_labels[slot][pasted].float() / 10)
    assert torch.equal(images, torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 16, 16))  # inputs untouched
