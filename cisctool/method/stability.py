"""ST++'s image score: how stable the predictions of a round's earlier snapshots are against its model's.

ST++ (`select_reliable`) scores an unlabeled image by the mean over the earlier checkpoints of the
mean IoU between that checkpoint's argmax prediction and the final model's, and trains its first
re-training round on the most stable half. Here the score is 1 − that stability, so that, as every
reliability score of the pseudo file, lower means more reliable.
"""

import torch


def prediction_miou(labels: torch.Tensor, other: torch.Tensor, valid: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per image, the mean IoU between two B×H×W label maps over `valid` pixels, B.

    As ST++'s `meanIOU`: IoU_c = |both c| / |either c| for each class either map has in the image,
    averaged over those classes (a class neither has is left out, not counted as 1 or 0).
    """
    batch = labels.shape[0]
    image = torch.arange(batch, device=labels.device).view(-1, 1, 1).expand_as(labels)
    cells = (image * num_classes + labels.clamp(0, num_classes - 1)) * num_classes + other.clamp(0, num_classes - 1)
    counts = torch.bincount(cells[valid], minlength=batch * num_classes * num_classes)
    confusion = counts.view(batch, num_classes, num_classes).double()
    both = confusion.diagonal(dim1=1, dim2=2)
    either = confusion.sum(dim=2) + confusion.sum(dim=1) - both
    present = either > 0
    iou = torch.where(present, both / either.clamp_min(1), torch.zeros_like(both))
    return (iou.sum(dim=1) / present.sum(dim=1).clamp_min(1)).float()


def instability(
    labels: torch.Tensor, snapshot_labels: list[torch.Tensor], valid: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """1 − the mean over snapshots of `prediction_miou(snapshot, model)`, B (lower = more reliable)."""
    stability = torch.stack([prediction_miou(earlier, labels, valid, num_classes) for earlier in snapshot_labels])
    return 1.0 - stability.mean(dim=0)
