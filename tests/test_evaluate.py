import math

import torch

from cisctool.evaluate import ConfusionMatrix, _window_starts


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
