"""Review scores of one image, and the share of wrong pixels an order finds."""

import math

import numpy as np
import pytest

from cisctool.method.review import (
    CANDIDATES,
    REVIEW_SCORE,
    candidate_scores,
    efficiency,
    expected_wrong,
    found_curve,
    images_at,
    oracle_efficiency,
    random_efficiency,
    review_order,
    squared_doubt,
    wrong_pixels,
)


def test_expected_wrong_counts_the_kept_pixels_doubt():
    confidence = np.array([[0.9, 0.6], [0.5, 1.0]], dtype=np.float16)
    kept = np.array([[True, True], [False, True]])
    assert expected_wrong(confidence, kept) == pytest.approx(0.1 + 0.4, abs=1e-3)


def test_squared_doubt_weighs_doubtful_pixels_over_nearly_sure_ones():
    kept = np.ones(10, bool)
    sure = np.full(10, 0.9, dtype=np.float16)  # ten pixels at 0.9
    doubtful = np.array([0.5, 0.5] + [1.0] * 8, dtype=np.float16)  # two at 0.5
    assert expected_wrong(sure, kept) == pytest.approx(expected_wrong(doubtful, kept), abs=1e-2)
    assert squared_doubt(doubtful, kept) == pytest.approx(0.5) and squared_doubt(sure, kept) == pytest.approx(0.1, abs=1e-3)


def test_candidate_scores_of_one_image():
    confidence = np.array([[0.9, 0.6], [0.3, 1.0]], dtype=np.float16)
    cisc = np.array([[0.5, np.nan], [2.0, -1.0]], dtype=np.float16)  # NaN = unguided; clamped to [0, 1]
    kept = np.array([[True, True], [True, False]])
    scores = candidate_scores(confidence, cisc, kept, reliability=0.25)
    assert list(scores) == list(CANDIDATES) and REVIEW_SCORE in scores
    assert scores["reliability"] == 0.25
    assert scores["expected_wrong"] == pytest.approx(0.1 + 0.4 + 0.7, abs=2e-3)
    assert scores["mean_nll"] == pytest.approx(-(math.log(0.9) + math.log(0.6) + math.log(0.3)) / 3, abs=2e-3)
    assert scores["below_0.5"] == pytest.approx(1 / 3) and scores["below_0.8"] == pytest.approx(2 / 3)
    assert scores["expected_wrong_cisc"] == pytest.approx((1 - 0.45) + (1 - 0.6) + (1 - 0.3), abs=2e-3)
    assert scores[REVIEW_SCORE] == pytest.approx(0.1**2 + 0.4**2 + 0.7**2, abs=2e-3)
    assert scores["cubed_doubt"] == pytest.approx(0.1**3 + 0.4**3 + 0.7**3, abs=2e-3)
    assert scores["sum_nll"] == pytest.approx(-(math.log(0.9) + math.log(0.6) + math.log(0.3)), abs=5e-3)


def test_an_image_with_nothing_kept_scores_zero():
    confidence = np.full((3, 3), 0.2, dtype=np.float16)
    scores = candidate_scores(confidence, confidence, np.zeros((3, 3), bool), reliability=math.nan)
    assert all(value == 0.0 for name, value in scores.items() if name != "reliability")


def test_review_order_puts_high_scores_first_and_nan_last_in_split_order_on_ties():
    scores = np.array([0.2, math.nan, 0.9, 0.2, 0.5, math.nan])
    assert review_order(scores).tolist() == [2, 4, 0, 3, 1, 5]


def test_wrong_pixels_leave_out_dropped_and_unlabelled_pixels():
    label = np.array([[1, 2, 255], [0, 0, 3]], dtype=np.uint8)
    truth = np.array([[1, 1, 1], [255, 2, 3]], dtype=np.uint8)
    assert wrong_pixels(label, truth, 255) == 2  # (0,1) and (1,1); (0,2) dropped, (1,0) unlabelled


def test_found_curve_and_shares_against_random_and_oracle():
    wrong = np.array([0, 10, 50, 30, 10, 0, 0, 0, 0, 0])
    scores = np.array([0.0, 5.0, 1.0, 9.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # order 3, 1, 2, …
    curve = found_curve(review_order(scores), wrong)
    assert curve.tolist()[:4] == [0.0, 0.3, 0.4, 0.9] and curve[-1] == 1.0 and len(curve) == 11
    assert efficiency(scores, wrong, (0.1, 0.2)) == {"0.10": 0.3, "0.20": 0.4}
    assert oracle_efficiency(wrong, (0.1, 0.2)) == {"0.10": 0.5, "0.20": 0.8}
    assert random_efficiency(10, (0.1, 0.2)) == {"0.10": 0.1, "0.20": 0.2}


def test_images_at_rounds_and_keeps_one_image():
    assert images_at(0.10, 500) == 50 and images_at(0.05, 30) == 2 and images_at(0.05, 3) == 1
    assert images_at(1.0, 7) == 7


def test_no_wrong_pixel_finds_nothing_without_dividing_by_zero():
    assert found_curve(np.arange(3), np.zeros(3, dtype=np.int64)).tolist() == [0.0, 0.0, 0.0, 0.0]
