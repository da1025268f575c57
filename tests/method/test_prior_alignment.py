import numpy as np
import pytest
import torch

from cisctool.method.prior_alignment import align, alignment_factors, sample_positions


def test_factors_are_the_labeled_share_over_the_mean_prediction_to_the_strength():
    labeled = np.array([0.5, 0.3, 0.2, 0.0])
    mean_prediction = np.array([0.6, 0.3, 0.1, 0.0])
    assert np.allclose(alignment_factors(labeled, mean_prediction, 1.0), [0.5 / 0.6, 1.0, 2.0, 1.0])
    assert np.allclose(alignment_factors(labeled, mean_prediction, 0.5), [(0.5 / 0.6) ** 0.5, 1.0, 2.0**0.5, 1.0])
    # a class no labeled mask holds keeps 1 rather than being forbidden
    assert alignment_factors(np.array([1.0, 0.0]), np.array([0.7, 0.3]), 1.0)[1] == 1.0


def test_aligned_probabilities_are_the_scaled_ones_renormalised():
    torch.manual_seed(0)
    probabilities = torch.rand(2, 3, 4, 5).softmax(dim=1)
    factors = torch.tensor([1.0, 2.0, 0.5])
    aligned = align(probabilities, factors)
    by_hand = probabilities * factors.view(1, 3, 1, 1)
    assert torch.allclose(aligned, by_hand / by_hand.sum(dim=1, keepdim=True))
    assert torch.allclose(aligned.sum(dim=1), torch.ones(2, 4, 5))
    # a prediction that already has the labeled shares is left as it is
    same = alignment_factors(np.array([0.2, 0.3, 0.5]), np.array([0.2, 0.3, 0.5]), 1.0)
    assert torch.allclose(align(probabilities, torch.from_numpy(same)), probabilities)


@pytest.mark.parametrize(("count", "size"), [(5, 64), (64, 64), (1000, 64), (65, 64)])
def test_the_sample_spreads_evenly_and_is_the_same_on_every_call(count: int, size: int):
    positions = sample_positions(count, size)
    assert positions == sample_positions(count, size) == sorted(set(positions))
    assert len(positions) == min(count, size) and positions[0] == 0 and positions[-1] == count - 1
    gaps = np.diff(positions)
    assert gaps.max() - gaps.min() <= 1
