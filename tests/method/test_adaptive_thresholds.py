import numpy as np

from cisctool.method.adaptive_thresholds import self_adaptive_thresholds


def test_the_most_predicted_class_gets_the_mean_confidence_and_the_others_their_share_of_it():
    thresholds = self_adaptive_thresholds(np.array([0.6, 0.3, 0.1]), 0.9)
    assert np.allclose(thresholds, [0.9, 0.45, 0.15])


def test_no_prediction_gives_no_threshold():
    assert np.array_equal(self_adaptive_thresholds(np.zeros(3), 0.9), np.zeros(3))
