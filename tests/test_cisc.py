import torch
import torch.nn.functional as F

from cisctool.cisc import class_areas, class_prototypes, cisc_maps, consistency_loss, one_hot_masks

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
    from cisctool.cisc import present_classes

    areas = torch.tensor([[0.0, 0.02, 0.5]])
    assert present_classes(areas, 0.03).tolist() == [[False, False, True]]
    assert present_classes(areas, 0.0).tolist() == [[False, True, True]]
