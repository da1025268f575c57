"""A model and its guides streamed over a split: DataLoader workers decode, then every batch's signals.

Shared by `rectify` and `tune` (and the class-wise calibration of S, computed
over the labeled images). The workers start before the stream is returned, so
a file opened afterwards (the pseudo file being written) is never inherited.
"""

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from cisctool import faults
from cisctool.config import Config
from cisctool.console import RateColumn, progress_bar
from cisctool.data.splits import SplitEntry, split_entries
from cisctool.data.workers import inference_loader
from cisctool.method.guides import GuideSource
from cisctool.method.prior_alignment import align
from cisctool.method.signals import BatchSignals, RectifySettings, batch_signals, fixed_batches, predict
from cisctool.store.checkpoints import load_inference_model

# Batches are padded to a multiple of the backbone's largest stride, as mmsegmentation's
# `size_divisor`: the feature grid then sits exactly on the image grid, and a long run
# sees few distinct batch shapes. With every batch's own maximum (as many shapes as
# image sizes), oneDNN's per-shape kernels and the allocator's free lists never settle:
# a 4000-image demo run's RSS crept from 440 to 600 MiB; padded, it stays level.
SIZE_DIVISOR = 32
# rectify's stream is the long pass (the whole unlabeled split, every round) whose rate must keep up
# with a GPU's batched forward, so its decoding may take more of `train.workers` than a short pass
STREAM_WORKERS = 4


def guided_model(
    config: Config, model_path: Path, prototype_index: Any, device: str
) -> tuple[nn.Module, GuideSource | None]:
    """The model in eval mode on `device` and the guide source over its index (None without one)."""
    model, _ = load_inference_model(model_path, expected=config)
    model.eval().to(device)
    if config.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if prototype_index is None:
        return model, None
    source = GuideSource(
        prototype_index, config.data.num_classes, config.rectify.guide, config.index.topk, config.train.seed
    )
    return model, source


def signal_stream(
    config: Config,
    model: nn.Module,
    source: GuideSource,
    entries: Sequence[SplitEntry],
    batches: list[list[int]],
    device: str,
    *,
    with_masks: bool,
    class_factors: tuple[float, ...] = (),
    snapshots: tuple[nn.Module, ...] = (),
) -> Iterator[tuple[dict[str, torch.Tensor], BatchSignals]]:
    """Decode `batches` of `entries` in DataLoader workers and yield (batch, signals) for each;
    report-only signals are computed only when the entries have masks to score them against.
    `class_factors` are distribution alignment's (from `sample_statistics`); () leaves P as predicted.
    `snapshots` (earlier models of the same training) score images by ST++'s stability.

    The workers start before this returns: a file opened afterwards (the pseudo
    file being written) is never inherited by them, so no worker keeps it open.
    """
    settings = dataclasses.replace(RectifySettings.of(config), class_factors=class_factors)
    # an id at a time: a list of every id would be 13 MB at 100k images, at the peak of the run
    ids = (entry.id for entry in entries)
    unlabeled = np.full(len(entries), -1, dtype=np.int64)
    own_positions = source.labeled_positions(ids) if source is not None else unlabeled
    loader = _loader(config, entries, batches, device, with_masks=with_masks)
    return _signals(iter(loader), model, source, settings, own_positions, config, device,
                    with_masks=with_masks, snapshots=snapshots)  # fmt: skip


def sample_statistics(
    config: Config, model: nn.Module, entries: Sequence[SplitEntry], positions: list[int], device: str,
    class_factors: tuple[float, ...] = (),
) -> tuple[np.ndarray, float]:
    """The C mean class probabilities and the mean confidence (largest probability) over the pixels of
    `entries` at `positions`, predicted as the pseudo labels are (the config's TTA, then `class_factors`
    when given): distribution alignment's p̄, and FreeMatch's p̄ and τ̄."""
    settings = RectifySettings.of(config)
    batches = fixed_batches(len(positions), config.rectify.batch_size)
    sampled = [[positions[i] for i in batch] for batch in batches]
    loader = _loader(config, entries, sampled, device, with_masks=False)
    total = torch.zeros(settings.num_classes, dtype=torch.float64, device=device)
    confidence = torch.zeros((), dtype=torch.float64, device=device)
    pixels = 0
    with progress_bar(RateColumn("img")) as bar:
        task = bar.add_task("class statistics of a sample of the unlabeled images", total=len(positions))
        for batch in loader:
            with torch.inference_mode(), _autocast(config, device):
                images, valid = _on_device(batch, config, device)
                probabilities, _ = predict(model, images, settings.tta_scales, flip=settings.tta_flip)
                if class_factors:
                    probabilities = align(probabilities, torch.tensor(class_factors))
                kept = probabilities.permute(1, 0, 2, 3)[:, valid]
                total += kept.sum(dim=1, dtype=torch.float64)
                confidence += kept.max(dim=0).values.sum(dtype=torch.float64)
                pixels += int(valid.sum())
            bar.advance(task, len(batch["index"]))
    return (total / max(pixels, 1)).cpu().numpy(), float(confidence) / max(pixels, 1)


def _loader(
    config: Config, entries: Sequence[SplitEntry], batches: list[list[int]], device: str, *, with_masks: bool
) -> DataLoader:
    """`batches` of `entries` decoded in worker processes and padded to `SIZE_DIVISOR`."""
    return inference_loader(entries, config.data.num_classes, config.data.ignore_index, device,
                            with_masks=with_masks, workers=config.train.workers, most_workers=STREAM_WORKERS,
                            batches=batches, size_divisor=SIZE_DIVISOR)  # fmt: skip


def _signals(
    loaded: Iterator[dict[str, torch.Tensor]],
    model: nn.Module,
    source: GuideSource,
    settings: RectifySettings,
    own_positions: np.ndarray,
    config: Config,
    device: str,
    *,
    with_masks: bool,
    snapshots: tuple[nn.Module, ...] = (),
) -> Iterator[tuple[dict[str, torch.Tensor], BatchSignals]]:
    for batch in loaded:
        faults.reached("forward")
        with torch.inference_mode(), _autocast(config, device):
            images, valid = _on_device(batch, config, device)
            positions = batch["index"].numpy()  # split positions
            own = own_positions[positions]
            signals = batch_signals(model, images, valid, positions, own, source, settings, report=with_masks,
                                    snapshots=snapshots)  # fmt: skip
        yield batch, signals


def _autocast(config: Config, device: str) -> torch.autocast:
    """Mixed precision on CUDA when the config asks for it (`train.amp`); a no-op elsewhere."""
    return torch.autocast(device_type="cuda", enabled=config.train.amp and device.startswith("cuda"))


def _on_device(
    batch: dict[str, torch.Tensor], config: Config, device: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's images on `device` in the config's memory format, and its B×H×W unpadded pixels."""
    memory_format = torch.channels_last if config.train.channels_last else torch.contiguous_format
    images = batch["image"].to(device, non_blocking=True).contiguous(memory_format=memory_format)
    return images, _valid_pixels(batch["sizes"], images.shape[-2:]).to(device)


def _valid_pixels(sizes: torch.Tensor, padded: torch.Size) -> torch.Tensor:
    """B×H×W bools: inside each image's own H×W, false on the padding."""
    rows = torch.arange(padded[0]).view(1, -1, 1) < sizes[:, 0].view(-1, 1, 1)
    cols = torch.arange(padded[1]).view(1, 1, -1) < sizes[:, 1].view(-1, 1, 1)
    return rows & cols


CALIBRATION_QUANTILES = 101


def class_calibration(
    config: Config, model: nn.Module, source: GuideSource, device: str
) -> np.ndarray:
    """C×Q quantiles of S_c on labeled pixels of class c (rightly predicted, guided by another image).

    Maps an unlabeled pixel's S_ŷ to how typical that similarity is for class ŷ
    on labeled images (`calibrated_cisc`), making S comparable across classes.
    Rows of classes without guided labeled pixels are NaN.
    """
    entries = split_entries(config, "labeled")
    batches = fixed_batches(len(entries), config.rectify.batch_size)
    values: list[list[np.ndarray]] = [[] for _ in range(config.data.num_classes)]
    for batch, signals in signal_stream(config, model, source, entries, batches, device, with_masks=True):
        truth = batch["mask"].to(signals.raw_label.device)
        right = (signals.raw_label == truth) & ~torch.isnan(signals.cisc)
        cisc, classes = signals.cisc[right].cpu().numpy(), truth[right].cpu().numpy()
        for cls in np.unique(classes):
            values[cls].append(cisc[classes == cls])
    levels = np.linspace(0.0, 1.0, CALIBRATION_QUANTILES)
    table = np.full((config.data.num_classes, CALIBRATION_QUANTILES), np.nan, dtype=np.float32)
    for cls, parts in enumerate(values):
        if parts:
            table[cls] = np.quantile(np.concatenate(parts), levels)
    return table
