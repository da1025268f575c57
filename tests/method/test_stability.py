import torch

from cisctool.method.stability import instability, prediction_miou


def test_prediction_miou_is_st_plus_plus_mean_iou_over_the_classes_either_map_has():
    model = torch.tensor([[[0, 0], [1, 1]], [[2, 2], [2, 2]]])
    earlier = torch.tensor([[[0, 1], [1, 1]], [[2, 2], [2, 0]]])
    valid = torch.ones_like(model, dtype=torch.bool)
    miou = prediction_miou(earlier, model, valid, 3)
    # image 0: class 0 1/2, class 1 2/3 (class 2 in neither: left out); image 1: class 0 0/1, class 2 3/4
    assert torch.allclose(miou, torch.tensor([(1 / 2 + 2 / 3) / 2, (0 + 3 / 4) / 2]))
    valid[1, 1, 1] = False  # a padding pixel counts for nothing
    assert torch.allclose(prediction_miou(earlier, model, valid, 3)[1], torch.tensor(1.0))


def test_instability_is_one_minus_the_mean_over_snapshots_lower_is_steadier():
    model = torch.tensor([[[0, 0], [1, 1]], [[0, 0], [1, 1]]])
    steady, unsteady = model.clone(), torch.tensor([[[0, 0], [1, 1]], [[1, 1], [0, 0]]])
    valid = torch.ones_like(model, dtype=torch.bool)
    score = instability(model, [steady, unsteady], valid, 2)
    assert torch.allclose(score, torch.tensor([0.0, 0.5]))  # image 1: IoU 1 with one snapshot, 0 with the other
