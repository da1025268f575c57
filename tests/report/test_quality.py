import json
import math

import numpy as np
import pytest

from cisctool.report.quality import QualityAccumulator, SignalHistograms, histogram_auroc, shrinking_classes


def exact_auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    greater = (positive[:, None] > negative[None, :]).mean()
    ties = (positive[:, None] == negative[None, :]).mean()
    return float(greater + 0.5 * ties)


def test_histogram_auroc_equals_pairwise_count_on_binned_scores():
    rng = np.random.default_rng(0)
    positive = rng.integers(0, 1000, 300)
    negative = rng.integers(0, 1000, 200)
    auroc = histogram_auroc(np.bincount(positive, minlength=1000), np.bincount(negative, minlength=1000))
    assert auroc == pytest.approx(exact_auroc(positive, negative))
    assert math.isnan(histogram_auroc(np.ones(5), np.zeros(5)))


def test_signal_histograms_pool_and_average_classes():
    histograms = SignalHistograms(num_classes=2)
    values = np.array([0.9, 0.8, 0.1, 0.2, 0.6, 0.4, np.nan])
    predicted = np.array([0, 0, 0, 0, 1, 1, 1])
    right = np.array([True, True, False, False, False, True, True])
    histograms.add(values, predicted, right)
    assert histograms.undefined == 1
    assert histograms.counts[0, 0].sum() == 2 and histograms.counts[1, 1].sum() == 1
    assert histograms.class_mean_auroc() == pytest.approx((1.0 + 0.0) / 2)
    assert histograms.pooled_auroc() == pytest.approx(exact_auroc(np.array([0.9, 0.8, 0.4]), np.array([0.1, 0.2, 0.6])))


def test_report_counts_drops_relabels_and_miou():
    quality = QualityAccumulator(["bg", "a", "b"], 255, ["confidence"])
    truth = np.array([[0, 1, 1, 2]], dtype=np.uint8)
    raw = np.array([[0, 1, 2, 2]], dtype=np.uint8)
    label = np.array([[0, 255, 1, 2]], dtype=np.uint8)  # one right pixel dropped, one wrong relabeled right
    confidence = np.array([[0.9, 0.8, 0.3, 0.7]], dtype=np.float32)
    quality.add(raw, label, np.ones_like(confidence), 0.5, {"confidence": confidence}, truth)
    report = quality.report()
    assert report["raw_miou"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert report["rectified_miou"] == pytest.approx(1.0)
    assert report["dropped_fraction"] == 0.25 and report["dropped_that_were_wrong"] == 0.0
    assert report["relabeled_fraction"] == 0.25
    assert (report["relabeled_right_before"], report["relabeled_right_after"]) == (0.0, 1.0)
    assert report["auroc"]["confidence"]["pooled"] == 1.0


def test_report_without_masks_has_no_miou():
    quality = QualityAccumulator(["bg", "a"], 255, ["confidence"])
    labels = np.array([[0, 1, 1, 255]], dtype=np.uint8)
    quality.add(labels, labels, np.full((1, 4), 0.5, np.float32), math.nan, {}, None)
    report = quality.report()
    assert not report["with_masks"] and "raw_miou" not in report
    assert report["label_share"] == {"bg": 0.25, "a": 0.5, "(dropped)": 0.25}
    assert report["mean_weight"] == 0.5 and report["reliability"]["images_without_evidence"] == 1


def test_pooled_roc_runs_from_nothing_kept_to_everything_kept_and_its_area_is_the_auroc():
    rng = np.random.default_rng(1)
    histograms = SignalHistograms(num_classes=3)
    right = rng.random(4000) < 0.7
    values = np.clip(np.where(right, rng.normal(0.7, 0.15, 4000), rng.normal(0.4, 0.2, 4000)), 0, 1)
    histograms.add(values, rng.integers(0, 3, 4000), right)
    roc = histograms.pooled_roc()
    fpr, tpr = np.array(roc["fpr"]), np.array(roc["tpr"])
    assert len(fpr) == len(tpr) == 51 and (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    # 50 thresholds 0.02 apart: the trapezoid area is the AUROC of scores binned that coarsely
    assert np.trapezoid(tpr, fpr) == pytest.approx(histograms.pooled_auroc(), abs=0.01)
    assert exact_auroc(values[right], values[~right]) == pytest.approx(histograms.pooled_auroc(), abs=1e-3)
    assert SignalHistograms(num_classes=1).pooled_roc() is None


def random_image(rng: np.random.Generator) -> tuple:
    raw = rng.integers(0, 3, (6, 5)).astype(np.uint8)
    label = np.where(rng.random((6, 5)) < 0.1, 255, raw).astype(np.uint8)
    weight = rng.random((6, 5)).astype(np.float16)
    signals = {"confidence": rng.random((6, 5)).astype(np.float32)}
    return raw, label, weight, float(rng.random()), signals, rng.integers(0, 3, (6, 5)).astype(np.uint8)


def test_totals_saved_and_restored_then_added_in_another_order_give_the_same_report():
    """As a resumed rectify: part of the images before the kill, the rest after, in another order."""
    rng = np.random.default_rng(5)
    images = [random_image(rng) for _ in range(20)]
    whole = QualityAccumulator(["a", "b", "c"], 255, ["confidence"])
    for image in images:
        whole.add(*image)
    before = QualityAccumulator(["a", "b", "c"], 255, ["confidence"])
    for image in images[:7]:
        before.add(*image)
    resumed = QualityAccumulator(["a", "b", "c"], 255, ["confidence"])
    resumed.restore({key: value.copy() for key, value in before.state().items()})
    for image in reversed(images[7:]):
        resumed.add(*image)
    assert json.dumps(resumed.report(), sort_keys=True) == json.dumps(whole.report(), sort_keys=True)
    with pytest.raises(ValueError, match="other classes or signals"):
        QualityAccumulator(["a", "b"], 255, ["confidence"]).restore(before.state())


def test_a_class_under_half_its_labeled_share_is_named_and_others_are_not():
    labeled = {"ground": 0.76, "road": 0.02, "river": 0.023, "speck": 0.0005}
    pseudo = {"ground": 0.81, "road": 0.009, "river": 0.012, "speck": 0.0, "(dropped)": 0.0}
    report = {"label_share": pseudo, "labeled_share": labeled}
    assert shrinking_classes(report) == ["road 0.9 % (labeled 2.0 %)"]  # river is just above half; speck is too rare
    assert shrinking_classes({"label_share": pseudo}) == []  # a report without the labeled shares (older files)
