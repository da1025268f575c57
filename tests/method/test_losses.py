"""OHEM cross-entropy: which pixels it keeps, and that it reduces to plain CE when it keeps all."""

import pytest
import torch
import torch.nn.functional as F

from cisctool.method.losses import masked_cross_entropy, ohem_cross_entropy


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 4, 6, 5, generator=generator) * 2
    masks = torch.randint(0, 4, (2, 6, 5), generator=generator)
    masks[0, 0, :] = 255
    return logits, masks


def test_keeping_every_pixel_is_plain_cross_entropy():
    logits, masks = _batch()
    torch.testing.assert_close(ohem_cross_entropy(logits, masks, 255, 1.0, 0.15), masked_cross_entropy(logits, masks, 255))


def test_keeps_pixels_at_or_below_the_threshold_and_at_least_the_min_kept_share():
    logits, masks = _batch(1)
    per_pixel = F.cross_entropy(logits, masks, ignore_index=255, reduction="none")[masks != 255]
    probability = torch.exp(-per_pixel)
    below = probability <= 0.25
    assert 0 < int(below.sum()) < per_pixel.numel()
    expected = per_pixel[below].mean()
    torch.testing.assert_close(ohem_cross_entropy(logits, masks, 255, 0.25, 0.0), expected)
    # a min_kept share above what the threshold keeps: the hardest pixels, by a loop over the sorted ones
    share = 0.8
    count = int(per_pixel.numel() * share)
    assert count > int(below.sum())
    hardest = sorted(per_pixel.tolist(), reverse=True)[:count]
    torch.testing.assert_close(ohem_cross_entropy(logits, masks, 255, 0.25, share), torch.tensor(sum(hardest) / count))


def test_ignore_pixels_never_count_and_an_all_ignore_batch_gives_zero():
    logits, masks = _batch(2)
    changed = logits.clone()
    changed[0, :, 0, :] = 50.0 * torch.randn(4, 5)  # the ignore row: any logits
    for threshold, share in ((0.7, 0.15), (0.3, 0.9), (1.0, 0.0)):
        torch.testing.assert_close(
            ohem_cross_entropy(changed, masks, 255, threshold, share), ohem_cross_entropy(logits, masks, 255, threshold, share)
        )
    assert float(ohem_cross_entropy(logits, torch.full_like(masks, 255), 255, 0.7, 0.15)) == 0.0


def test_gradient_reaches_only_the_kept_pixels():
    logits, masks = _batch(3)
    logits.requires_grad_(True)
    ohem_cross_entropy(logits, masks, 255, 0.5, 0.0).backward()
    probability = torch.exp(-F.cross_entropy(logits.detach(), masks, ignore_index=255, reduction="none"))
    kept = (masks != 255) & (probability <= 0.5)
    touched = logits.grad.abs().sum(dim=1) > 0
    assert torch.equal(touched, kept)


@pytest.mark.parametrize("share", [0.0, 0.15, 1.0])
def test_the_loss_is_finite_and_positive_on_random_batches(share):
    logits, masks = _batch(4)
    value = ohem_cross_entropy(logits, masks, 255, 0.7, share)
    assert torch.isfinite(value) and float(value) > 0
