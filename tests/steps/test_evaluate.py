import math

import torch

from cisctool.report.confusion import ConfusionMatrix
from cisctool.steps.evaluate import _window_starts


def test_confusion_matrix_miou_by_hand():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
    prediction = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 1]])
    matrix = ConfusionMatrix(4, 255)
    matrix.update(prediction, target)
    # class 0: tp 1, fp 1 (a 2 predicted 0), fn 1 (a 0 predicted 1) -> 1/3
    # class 1: tp 3, fp 1, fn 0 -> 3/4 ; class 2: tp 1, fp 0, fn 1 -> 1/2 ; class 3 absent -> nan
    iou = matrix.iou()
    assert math.isclose(iou[0], 1 / 3) and math.isclose(iou[1], 3 / 4) and math.isclose(iou[2], 1 / 2)
    assert math.isnan(iou[3])
    assert math.isclose(matrix.mean_iou(), (1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert math.isclose(matrix.pixel_accuracy(), 5 / 7)


def test_sliding_windows_cover_the_image():
    assert _window_starts(10, 4, 3) == [0, 3, 6]
    assert _window_starts(11, 4, 3) == [0, 3, 6, 7]
    assert _window_starts(4, 4, 3) == [0]


def test_collapsed_classes_are_those_present_but_never_or_barely_predicted():
    from cisctool.report.confusion import collapsed_classes

    target = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2] * 10)
    one_class = ConfusionMatrix(4, 255)
    one_class.update(torch.zeros_like(target), target)  # predicts background only
    assert collapsed_classes(one_class, ["bg", "a", "b", "absent"]) == ["a", "b"]
    good = ConfusionMatrix(4, 255)
    good.update(target, target)
    assert collapsed_classes(good, ["bg", "a", "b", "absent"]) == []
    barely = ConfusionMatrix(3, 255)  # class 2 predicted once right among 30 wrong guesses: IoU 1/30 < 0.05
    prediction = target.clone()
    prediction[prediction == 2] = 0
    prediction[5] = 2
    prediction[:3] = 2
    barely.update(prediction, target)
    assert collapsed_classes(barely, ["bg", "a", "b"]) == ["b"]
