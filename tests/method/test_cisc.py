import math

import torch
import torch.nn.functional as F

from cisctool.method.cisc import (
    agreement,
    cisc_maps,
    consistency_loss,
    drop,
    image_reliability,
    pixel_weight,
    predicted_class_similarity,
    relabel,
    reliability,
    similarity_contrast,
    upsample_maps,
)
from cisctool.method.prototypes import class_areas, class_prototypes, one_hot_masks

IGNORE = 255


def random_masks(batch: int, size: int, num_classes: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    masks = torch.randint(0, num_classes, (batch, size, size), generator=generator)
    masks[:, :2] = IGNORE
    return masks


def test_prototypes_equal_a_naive_loop():
    features = torch.rand(3, 8, 6, 6)
    masks = random_masks(3, 24, 4)
    masks[1][masks[1] == 2] = 0  # class 2 absent from image 1
    prototypes, counts = class_prototypes(features, masks, 4, IGNORE)
    low = F.interpolate(masks[:, None].float(), size=(6, 6), mode="nearest")[:, 0].long()
    for image in range(3):
        for cls in range(4):
            region = low[image] == cls
            total = region.sum()
            expected = features[image][:, region].sum(dim=1) / (total + 5e-4)
            assert counts[image, cls] == total
            if total == 0:
                assert prototypes[image, cls].abs().max() == 0
            else:
                torch.testing.assert_close(prototypes[image, cls], F.normalize(expected, dim=0))


def test_one_hot_skips_ignore_and_areas_sum_to_one():
    masks = random_masks(2, 10, 3)
    encoded = one_hot_masks(masks, 3, IGNORE)
    assert encoded.sum(dim=1)[masks == IGNORE].max() == 0
    assert torch.equal(encoded.argmax(dim=1)[masks != IGNORE], masks[masks != IGNORE])
    torch.testing.assert_close(class_areas(masks, 3, IGNORE).sum(dim=1), torch.ones(2))


def test_cisc_maps_equal_cosine_per_pixel():
    features, guides = torch.rand(2, 5, 4, 3), torch.rand(2, 3, 5)
    maps = cisc_maps(features, guides)
    assert maps.shape == (2, 3, 4, 3)
    for image in range(2):
        for k in range(3):
            expected = F.cosine_similarity(features[image], guides[image, k].view(5, 1, 1), dim=0)
            torch.testing.assert_close(maps[image, k], expected)


def test_consistency_loss_matches_hand_computation_and_prefers_aligned_features():
    masks = torch.zeros(1, 8, 8, dtype=torch.long)
    masks[:, :, 4:] = 1
    partner = masks.flip(-1)
    aligned = one_hot_masks(masks, 2, IGNORE)  # features = one-hot of the true class
    aligned_partner = one_hot_masks(partner, 2, IGNORE)
    shared = torch.tensor([1])
    good = consistency_loss(aligned, masks, aligned_partner, partner, shared, 2, IGNORE)
    noise = torch.rand(1, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    bad = consistency_loss(noise, masks, noise.flip(-1), partner, shared, 2, IGNORE)
    assert good < 0.01 < bad
    # by hand: the map towards the partner's class-1 prototype, BCE vs the class-1 region
    prototype = noise.flip(-1)[0][:, partner[0] == 1].sum(dim=1) / (32 + 5e-4)
    similarity = F.cosine_similarity(noise[0], prototype.view(2, 1, 1), dim=0).clamp(0, 1)
    forward = F.binary_cross_entropy(similarity, (masks[0] == 1).float())
    backward_prototype = noise[0][:, masks[0] == 1].sum(dim=1) / (32 + 5e-4)
    backward_map = F.cosine_similarity(noise.flip(-1)[0], backward_prototype.view(2, 1, 1), dim=0)
    backward = F.binary_cross_entropy(backward_map.clamp(0, 1), (partner[0] == 1).float())
    torch.testing.assert_close(bad, forward + backward)


def test_consistency_loss_skips_unshared_pairs():
    features = torch.rand(2, 4, 8, 8)
    masks = torch.zeros(2, 8, 8, dtype=torch.long)
    masks[1, :, 4:] = 1
    partner_masks = torch.zeros(2, 8, 8, dtype=torch.long)  # class 1 missing from partner 1
    none_shared = torch.tensor([-1, 1])
    assert consistency_loss(features, masks, features, partner_masks, none_shared, 2, IGNORE) == 0


def test_present_classes_need_min_area_and_a_pixel():
    from cisctool.method.prototypes import present_classes

    areas = torch.tensor([[0.0, 0.02, 0.5]])
    assert present_classes(areas, 0.03).tolist() == [[False, False, True]]
    assert present_classes(areas, 0.0).tolist() == [[False, True, True]]


# ---------------------------------------------------------------- rectification


def rectify_inputs(seed: int = 0):
    """3 images, 4 classes, 2 guide slots; image 2 has no guided slot at all."""
    generator = torch.Generator().manual_seed(seed)
    maps = torch.rand(3, 2, 5, 6, generator=generator)
    prediction = torch.randint(0, 4, (3, 5, 6), generator=generator)
    slot_classes = torch.tensor([[1, 3], [2, -1], [-1, -1]])
    probabilities = torch.rand(3, 4, 5, 6, generator=generator).softmax(dim=1)
    return maps, prediction, slot_classes, probabilities


def test_predicted_class_similarity_and_agreement_equal_pixel_loops():
    maps, prediction, slot_classes, _ = rectify_inputs()
    cisc = predicted_class_similarity(maps, prediction, slot_classes)
    agreements = agreement(maps, prediction, slot_classes)
    for image in range(3):
        for y in range(5):
            for x in range(6):
                predicted = int(prediction[image, y, x])
                slots = [k for k in range(2) if int(slot_classes[image, k]) == predicted]
                if slots:
                    assert cisc[image, y, x] == maps[image, slots[0], y, x]
                else:
                    assert torch.isnan(cisc[image, y, x])
                for k in range(2):
                    inside = float(int(slot_classes[image, k]) == predicted)
                    expected = 1 - abs(inside - min(max(float(maps[image, k, y, x]), 0.0), 1.0))
                    assert abs(float(agreements[image, k, y, x]) - expected) < 1e-6


def test_pixel_weight_modes_equal_loops():
    maps, prediction, slot_classes, _ = rectify_inputs(1)
    agreements = agreement(maps, prediction, slot_classes)
    chosen = torch.tensor([1, 0, -1])
    official = pixel_weight(agreements, slot_classes, "official", chosen)
    mean = pixel_weight(agreements, slot_classes, "mean", chosen)
    torch.testing.assert_close(official[0], agreements[0, 1])
    torch.testing.assert_close(official[1], agreements[1, 0])
    torch.testing.assert_close(mean[0], (agreements[0, 0] + agreements[0, 1]) / 2)
    torch.testing.assert_close(mean[1], agreements[1, 0])  # the empty slot does not count
    assert torch.equal(official[2], torch.ones(5, 6)) and torch.equal(mean[2], torch.ones(5, 6))


def test_relabel_moves_only_pixels_past_margin_and_p_min():
    maps, prediction, slot_classes, probabilities = rectify_inputs(2)
    cisc = predicted_class_similarity(maps, prediction, slot_classes)
    margin, p_min = 0.2, 0.25
    labels = relabel(prediction, maps, probabilities, slot_classes, cisc, margin, p_min)
    for image in range(3):
        for y in range(5):
            for x in range(6):
                own = 0.0 if torch.isnan(cisc[image, y, x]) else float(cisc[image, y, x])
                best, best_class = -math.inf, int(prediction[image, y, x])
                for k in range(2):
                    cls = int(slot_classes[image, k])
                    gap = float(maps[image, k, y, x]) - own
                    if cls >= 0 and gap > margin and float(probabilities[image, cls, y, x]) >= p_min and gap > best:
                        best, best_class = gap, cls
                assert int(labels[image, y, x]) == best_class
    assert torch.equal(relabel(prediction, maps, probabilities, slot_classes, cisc, math.inf, 0.0), prediction)


def test_drop_and_reliability():
    cisc = torch.tensor([[[0.9, 0.1], [math.nan, 0.5]]])
    confidence = torch.tensor([[[0.9, 0.9], [0.2, 0.9]]])
    labels = torch.tensor([[[1, 2], [3, 1]]])
    dropped = drop(labels, cisc, confidence, cisc_min=0.3, conf_min=0.5, ignore_index=IGNORE)
    assert dropped.tolist() == [[[1, IGNORE], [IGNORE, 1]]]
    valid = torch.ones(1, 2, 2, dtype=torch.bool)
    expected = -(math.log(0.9) + math.log(0.1) + math.log(0.5)) / 3  # the NaN pixel does not count
    assert abs(float(reliability(cisc, valid)[0]) - expected) < 1e-6
    assert torch.isnan(reliability(torch.full((1, 2, 2), math.nan), valid)[0])


def test_image_reliability_adds_the_confidence_term_and_keeps_no_evidence_last():
    cisc = torch.tensor([[[0.9, 0.1], [math.nan, 0.5]], [[math.nan] * 2] * 2])
    confidence = torch.tensor([[[0.9, 0.9], [0.2, 0.9]], [[0.5, 0.5], [0.5, 0.5]]])
    valid = torch.ones(2, 2, 2, dtype=torch.bool)
    cisc_term = -(math.log(0.9) + math.log(0.1) + math.log(0.5)) / 3
    confidence_term = -(3 * math.log(0.9) + math.log(0.2)) / 4  # every valid pixel counts
    summed = image_reliability(cisc, confidence, valid, "cisc+confidence")
    assert abs(float(summed[0]) - (cisc_term + confidence_term)) < 1e-6 and torch.isnan(summed[1])
    paper = image_reliability(cisc, confidence, valid, "cisc")
    assert abs(float(paper[0]) - cisc_term) < 1e-6 and torch.isnan(paper[1])
    self_training = image_reliability(None, confidence, valid, "cisc+confidence")  # no index: confidence only
    assert abs(float(self_training[0]) - confidence_term) < 1e-6 and abs(float(self_training[1]) + math.log(0.5)) < 1e-6


def test_upsample_maps_is_bilinear_to_label_size():
    maps = torch.rand(2, 3, 4, 4)
    assert upsample_maps(maps, (16, 12)).shape == (2, 3, 16, 12)
    torch.testing.assert_close(upsample_maps(maps, (4, 4)), maps)


def test_similarity_contrast_equals_pixel_loop():
    maps, prediction, slot_classes, _ = rectify_inputs(3)
    contrast = similarity_contrast(maps, prediction, slot_classes)
    for image in range(3):
        for y in range(5):
            for x in range(6):
                predicted = int(prediction[image, y, x])
                own = [float(maps[image, k, y, x]) for k in range(2) if int(slot_classes[image, k]) == predicted]
                others = [float(maps[image, k, y, x]) for k in range(2)
                          if int(slot_classes[image, k]) not in (-1, predicted)]
                if own and others:
                    assert abs(float(contrast[image, y, x]) - (own[0] - max(others))) < 1e-6
                else:
                    assert torch.isnan(contrast[image, y, x])


def test_confidence_weight_is_confidence_times_s_and_confidence_where_unguided():
    from cisctool.method.cisc import confidence_weight

    confidence = torch.tensor([[[0.9, 0.6, 0.8]]])
    cisc = torch.tensor([[[0.5, float("nan"), 1.4]]])  # S above 1 counts as 1
    assert torch.allclose(confidence_weight(confidence, cisc), torch.tensor([[[0.45, 0.6, 0.8]]]))


def test_a_pixel_of_an_unguided_class_is_weighed_by_the_guided_classes_of_its_image():
    """docs/evidence.md: a class no labeled image has gets no guide, yet its pixels' weight is not 1 when
    another class of the image is guided: official mode gives 1 − S_c of the chosen class c,
    mean mode the mean of that over the guided classes; 1 only without any guided class."""
    prediction = torch.tensor([[[2, 2, 1, 0]], [[2, 2, 2, 2]]])  # class 2 has no labeled image
    slot_classes = torch.tensor([[1, 0], [-1, -1]])  # image 0: classes 1 and 0 guided; image 1: none
    maps = torch.tensor([[[[0.9, 0.2, 0.8, 0.1]], [[0.3, 1.4, 0.0, 0.6]]], [[[0.5] * 4], [[0.5] * 4]]])
    agreements = agreement(maps, prediction, slot_classes)
    official = pixel_weight(agreements, slot_classes, "official", torch.tensor([0, -1]))
    mean = pixel_weight(agreements, slot_classes, "mean", torch.tensor([0, -1]))
    torch.testing.assert_close(official[0, 0, :2], torch.tensor([0.1, 0.8]))  # 1 − S_1 on class-2 pixels
    torch.testing.assert_close(mean[0, 0, :2], torch.tensor([(0.1 + 0.7) / 2, (0.8 + 0.0) / 2]))  # S clamped to 1
    assert torch.equal(official[1], torch.ones(1, 4)) and torch.equal(mean[1], torch.ones(1, 4))
