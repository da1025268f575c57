"""`cisctool rectify --round N`: the batched pseudo-labelling pipeline (DESIGN §1.3–1.6, §5).

DataLoader workers decode → one forward per batch (AMP on CUDA) → prototypes
of every predicted class by einsum → one guide lookup per batch → CISC maps,
weights, relabel/drop on the model's device → a writer thread crops each
image, appends it to `pseudo.h5` and feeds the quality report while the next
batch computes.

Batches are fixed slices of the split (batch b = images b·B … b·B+B−1), so a
resumed run pads and computes every image exactly as an uninterrupted run
would; random choices hash (seed, image position, class).
"""

import functools
import hashlib
import json
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from cisctool.checkpoint import load_model
from cisctool.cisc import (
    agreement,
    class_areas,
    class_prototypes,
    cisc_maps,
    drop,
    pixel_weight,
    predicted_class_similarity,
    present_classes,
    relabel,
    reliability,
    similarity_contrast,
    upsample_maps,
)
from cisctool.config import Config, config_hash, to_dict, to_toml
from cisctool.console import RateColumn, progress_bar
from cisctool.data.datasets import InferenceDataset, pad_collate
from cisctool.data.masks import image_size
from cisctool.data.splits import SplitEntry, read_split
from cisctool.errors import InputError
from cisctool.guides import Guides, GuideSource, official_slots
from cisctool.index_build import open_round_index
from cisctool.pseudo_store import PseudoImage, PseudoWriter, partial_path
from cisctool.quality import QualityAccumulator
from cisctool.runs import RunLayout, atomic_write_json, sha256_file

TTA_SCALES = (0.75, 1.0, 1.25)
RESUME_KEYS = ("checkpoint_sha256", "index_sha256", "inputs_hash", "tta")  # what an unfinished file must match
WEIGHT_MODES = ("official", "mean")


class SimulatedCrash(RuntimeError):
    """Raised by the `crash_after` test hook once k batches are safely on disk."""


@dataclass(frozen=True)
class RectifySettings:
    """The config keys the per-batch maths reads."""

    num_classes: int
    ignore_index: int
    min_area: float
    guide_exclude: tuple[int, ...]
    weight_mode: str
    margin: float
    p_min: float
    cisc_min: float
    conf_min: float
    seed: int

    @classmethod
    def of(cls, config: Config) -> "RectifySettings":
        rectify = config.rectify
        return cls(
            config.data.num_classes, config.data.ignore_index, config.index.min_area,
            tuple(rectify.guide_exclude), rectify.weight_mode, rectify.margin, rectify.p_min,
            rectify.cisc_min, rectify.conf_min, config.train.seed,
        )  # fmt: skip


@dataclass
class BatchSignals:
    """What one batch's forward and guides give, before thresholds (padded B×H×W unless noted).

    Kept on the model's device; `tune` applies many thresholds to one of these.
    """

    probabilities: torch.Tensor  # B×C×H×W
    raw_label: torch.Tensor  # ignore on padding
    confidence: torch.Tensor
    maps: torch.Tensor  # B×K×H×W CISC maps of the guided slots
    slot_classes: torch.Tensor  # B×K, −1 = empty slot
    cisc: torch.Tensor  # S_ŷ, NaN where ŷ has no guide
    contrast: torch.Tensor  # S_ŷ − best other guided S (report only)
    weights: dict[str, torch.Tensor]  # per weight mode
    reliability: torch.Tensor  # B
    guide_rows: torch.Tensor  # B×C
    queries: dict[str, int] = field(default_factory=dict)  # guided / fallback / unguided counts


def predict(model: nn.Module, images: torch.Tensor, tta: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities B×C×H×W (float32) and features B×D×h×w of the plain view.

    With `tta`, probabilities average TTA_SCALES × {plain, flipped}, as the
    official stage 2 predicts; features stay those of the plain image.
    """
    output = model(images)
    probabilities = output.logits.float().softmax(dim=1)
    if not tta:
        return probabilities, output.features
    size = images.shape[-2:]
    views = 1
    for scale in TTA_SCALES:
        scaled = images if scale == 1.0 else F.interpolate(images, scale_factor=scale, mode="bilinear")
        for flip in (False, True):
            if scale == 1.0 and not flip:
                continue
            view = scaled.flip(-1) if flip else scaled
            logits = model(view).logits.float()
            logits = logits.flip(-1) if flip else logits
            probabilities = probabilities + F.interpolate(logits, size=size, mode="bilinear").softmax(dim=1)
            views += 1
    return probabilities / views, output.features


def batch_signals(
    model: nn.Module,
    images: torch.Tensor,
    valid: torch.Tensor,
    keys: np.ndarray,
    own_rows: np.ndarray,
    source: GuideSource | None,
    settings: RectifySettings,
    tta: bool = False,
) -> BatchSignals:
    """Predict and guide one padded batch: every signal the thresholds act on.

    images B×3×H×W, valid B×H×W (false on padding), keys B split positions,
    own_rows B labeled rows of the images themselves (−1 if not labeled). Without a
    source (`rectify.enabled = false`) nothing is guided: labels stay raw, weights 1,
    and reliability is mean −log confidence.
    """
    num_classes, ignore = settings.num_classes, settings.ignore_index
    probabilities, features = predict(model, images, tta)
    confidence, raw = probabilities.max(dim=1)
    raw = torch.where(valid, raw, torch.full_like(raw, ignore))
    prototypes, _ = class_prototypes(features, raw, num_classes, ignore)
    present = present_classes(class_areas(raw, num_classes, ignore), settings.min_area)
    present[:, list(settings.guide_exclude)] = False
    if source is None:  # plain self-training: no class gets a guide
        present[:] = False
    image_slot, cls = torch.nonzero(present, as_tuple=True)
    slot_of = (present.cumsum(dim=1) - 1)[image_slot, cls]

    cls_host, image_host = cls.cpu().numpy(), image_slot.cpu().numpy()
    queries = prototypes[image_slot, cls].cpu().numpy()
    guides = (
        source.choose(queries, cls_host, keys[image_host], own_rows[image_host])
        if source is not None else Guides.none(queries.shape[1])
    )  # fmt: skip
    batch, width = images.shape[0], max(int(present.sum(dim=1).max()), 1)
    device = images.device
    guided = torch.from_numpy(guides.guided).to(device)
    slot_classes = torch.full((batch, width), -1, dtype=torch.long, device=device)
    slot_classes[image_slot, slot_of] = torch.where(guided, cls, torch.full_like(cls, -1))
    guide_vectors = torch.zeros(batch, width, features.shape[1], device=device)
    guide_vectors[image_slot, slot_of] = torch.from_numpy(guides.vectors).to(device)
    guide_rows = torch.full((batch, num_classes), -1, dtype=torch.long, device=device)
    guide_rows[image_slot, cls] = torch.from_numpy(guides.rows).to(device)

    maps = upsample_maps(cisc_maps(features, guide_vectors), tuple(images.shape[-2:]))
    cisc = predicted_class_similarity(maps, raw, slot_classes)
    agreements = agreement(maps, raw, slot_classes)
    chosen = official_slots((slot_classes >= 0).cpu().numpy(), keys, settings.seed)
    chosen_slot = torch.from_numpy(chosen).to(device)
    return BatchSignals(
        probabilities=probabilities,
        raw_label=raw,
        confidence=confidence,
        maps=maps,
        slot_classes=slot_classes,
        cisc=cisc,
        contrast=similarity_contrast(maps, raw, slot_classes),
        weights={mode: pixel_weight(agreements, slot_classes, mode, chosen_slot) for mode in WEIGHT_MODES},
        reliability=reliability(cisc if source is not None else confidence, valid),
        guide_rows=guide_rows,
        queries={
            "guided": int((guides.guided & ~guides.fallback).sum()),
            "fallback": int(guides.fallback.sum()),
            "unguided": int((~guides.guided).sum()),
        },
    )


def rectified_labels(
    signals: BatchSignals, margin: float, p_min: float, cisc_min: float, conf_min: float, ignore_index: int
) -> torch.Tensor:
    """Relabel, then drop (DESIGN §1.5); padding stays ignore (raw is ignore there)."""
    label = relabel(
        signals.raw_label, signals.maps, signals.probabilities, signals.slot_classes, signals.cisc, margin, p_min
    )
    label = drop(label, signals.cisc, signals.confidence, cisc_min, conf_min, ignore_index)
    return torch.where(signals.raw_label == ignore_index, signals.raw_label, label)


def host_arrays(signals: BatchSignals, label: torch.Tensor) -> dict[str, np.ndarray]:
    """What the writer thread needs, on the host in one transfer per tensor."""
    arrays = {
        "label": label.to(torch.uint8),
        "raw_label": signals.raw_label.to(torch.uint8),
        "confidence": signals.confidence.half(),
        "cisc": signals.cisc.half(),
        "contrast": signals.contrast.half(),
        "reliability": signals.reliability.float(),
        "guide_rows": signals.guide_rows.int(),
        **{f"weight_{mode}": weight.half() for mode, weight in signals.weights.items()},
    }
    return {name: tensor.cpu().numpy() for name, tensor in arrays.items()}


class BackgroundWriter:
    """Runs `consume(item)` on a thread, at most `depth` items behind; re-raises its failure."""

    def __init__(self, consume: Callable[[Any], None], depth: int = 2) -> None:
        self.consume = consume
        self.items: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="pseudo-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.items.get()) is not None:
            if self.error is None:
                try:
                    self.consume(item)
                except BaseException as error:  # handed to the main thread at the next put/close
                    self.error = error

    def put(self, item: Any) -> None:
        self._raise()
        self.items.put(item)

    def close(self) -> None:
        """Wait until every item is consumed; raise what the thread raised."""
        self.items.put(None)
        self.thread.join()
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error


@dataclass
class RectifyOutcome:
    """What a rectify run did and measured."""

    path: Path
    images: int
    computed: int
    seconds: float
    report: dict[str, Any]

    @property
    def images_per_second(self) -> float:
        return self.computed / self.seconds if self.seconds > 0 else math.nan


def pseudo_inputs_hash(config: Config) -> str:
    """Hash of the settings that change pseudo labels (data, model, index, rectify, seed); not training."""
    values = to_dict(config)
    relevant = {key: values[key] for key in ("data", "model", "index", "rectify")}
    relevant["seed"] = values["train"]["seed"]
    relevant["rectify"] = {k: v for k, v in relevant["rectify"].items() if k not in ("select", "ratio", "batch_size")}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()


def fixed_batches(count: int, batch_size: int) -> list[list[int]]:
    """Positions 0…count−1 cut into consecutive batches (the same cut on every run)."""
    return [list(range(start, min(start + batch_size, count))) for start in range(0, count, batch_size)]


def image_shapes(entries: list[SplitEntry]) -> np.ndarray:
    """N×2 (H, W) from the image headers; an unreadable image stops the run before any work."""
    return np.asarray([image_size(entry.image) for entry in entries], dtype=np.int32).reshape(-1, 2)


def rectify_round(
    config: Config,
    round_index: int,
    device: str,
    resume: bool = False,
    force: bool = False,
    tta: bool = False,
    compression: str = "lzf",
    crash_after: int | None = None,
) -> RectifyOutcome:
    """Pseudo labels *for* round N from round N−1's model and index, into runs/<name>/roundN/pseudo.h5."""
    if round_index < 1:
        raise InputError("--round must be ≥ 1: round N's pseudo labels come from round N−1's model")
    layout = RunLayout.of(config)
    source_round = round_index - 1
    model_path = layout.model(source_round)
    if not model_path.is_file():
        raise InputError(f"{model_path}: no model for round {source_round} (train it first)")
    index_path = layout.index_files(source_round)[0]
    prototype_index = None
    if config.rectify.enabled:
        prototype_index, stale = open_round_index(config, source_round)
        if stale:
            raise InputError(
                f"{index_path}: stale (round {source_round}'s model changed since it was built); "
                f"rerun `cisctool index build --round {source_round}`"
            )
    final_path = layout.pseudo(round_index)
    if final_path.exists() and not force:
        raise InputError(f"{final_path}: already exists; pass --force to recompute it")
    entries = read_split(config.data_root / config.data.unlabeled, config.data_root, masks_required=False)
    with_masks = all(entry.mask is not None for entry in entries)
    attrs = {
        "round": round_index,
        "ignore_index": config.data.ignore_index,
        "class_names": list(config.class_names),
        "checkpoint_sha256": sha256_file(model_path),
        "index_sha256": sha256_file(index_path) if config.rectify.enabled else "",
        "config": to_toml(config),
        "config_hash": config_hash(config),
        "inputs_hash": pseudo_inputs_hash(config),
        "rectified": config.rectify.enabled,
        "guide": config.rectify.guide,
        "weight_mode": config.rectify.weight_mode,
        "tta": tta,
    }
    work_path = partial_path(final_path)
    try:
        final_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"{final_path.parent}: cannot create the pseudo-label file's folder ({error})") from None
    ids = [entry.id for entry in entries]
    if resume and work_path.exists():
        writer = PseudoWriter.reopen(work_path, {key: attrs[key] for key in RESUME_KEYS}, ids)
    else:
        shapes = image_shapes(entries)
        work_path.unlink(missing_ok=True)
        writer = PseudoWriter.create(work_path, ids, shapes, config.data.num_classes, attrs, compression)
    try:
        outcome = _run(config, source_round, entries, with_masks, writer, prototype_index, device, tta, crash_after)
    finally:
        writer.close()
    os.replace(work_path, final_path)
    outcome.path = final_path
    outcome.report.update(
        round=round_index, file=str(final_path), images_per_second=outcome.images_per_second,
        seconds=outcome.seconds, computed_this_run=outcome.computed, tta=tta,
        guide=config.rectify.guide, weight_mode=config.rectify.weight_mode,
    )  # fmt: skip
    atomic_write_json(layout.pseudo_quality(round_index), outcome.report)
    return outcome


SIGNALS = ["confidence", "confidence_where_guided", "cisc", "cisc_calibrated", "cisc_contrast", "confidence_x_cisc",
           *(f"weight_{mode}" for mode in WEIGHT_MODES),
           *(f"confidence_x_weight_{mode}" for mode in WEIGHT_MODES)]  # fmt: skip


def _run(
    config: Config,
    source_round: int,
    entries: list[SplitEntry],
    with_masks: bool,
    writer: PseudoWriter,
    prototype_index: Any,
    device: str,
    tta: bool,
    crash_after: int | None,
) -> RectifyOutcome:
    settings = RectifySettings.of(config)
    model, source = guided_model(config, RunLayout.of(config).model(source_round), prototype_index, device)
    pending = set(writer.pending().tolist())
    batches = [batch for batch in fixed_batches(len(entries), config.rectify.batch_size) if pending & set(batch)]
    quality = QualityAccumulator(list(config.class_names), settings.ignore_index, SIGNALS)
    queries = {"guided": 0, "fallback": 0, "unguided": 0}
    calibration = class_calibration(config, model, source, device) if with_masks and source else None
    store = functools.partial(
        _store, writer, quality, pending, config.rectify.weight_mode, with_masks, calibration
    )
    background = BackgroundWriter(store)
    started = time.perf_counter()
    computed = 0
    stream = signal_stream(config, model, source, entries, batches, device, tta, with_masks)
    try:
        with progress_bar(RateColumn("img")) as bar, torch.inference_mode():
            task = bar.add_task(f"rectify for round {source_round + 1}", total=len(pending))
            for done_batches, (batch, signals) in enumerate(stream):
                label = rectified_labels(
                    signals, settings.margin, settings.p_min, settings.cisc_min, settings.conf_min,
                    settings.ignore_index,
                )  # fmt: skip
                for name, count in signals.queries.items():
                    queries[name] += count
                keys = batch["index"].numpy()
                background.put((keys, batch["sizes"].numpy(), host_arrays(signals, label), batch["mask"].numpy()))
                fresh = len(pending.intersection(keys.tolist()))
                computed += fresh
                bar.advance(task, fresh)
                if crash_after is not None and done_batches + 1 >= crash_after:
                    background.close()
                    raise SimulatedCrash(f"simulated crash after {crash_after} batches")
    finally:
        if background.thread.is_alive():
            background.close()
    seconds = time.perf_counter() - started
    report = quality.report()
    report.update(
        queries=queries,
        images_total=len(entries),
        guide_exclude=list(settings.guide_exclude),
        thresholds={"margin": settings.margin, "p_min": settings.p_min,
                    "cisc_min": settings.cisc_min, "conf_min": settings.conf_min},
    )  # fmt: skip
    return RectifyOutcome(Path(), len(entries), computed, seconds, report)


def guided_model(
    config: Config, model_path: Path, prototype_index: Any, device: str
) -> tuple[nn.Module, GuideSource | None]:
    """The model in eval mode on `device` and the guide source over its index (None without one)."""
    model, _ = load_model(model_path, expected=config)
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
    entries: list[SplitEntry],
    batches: list[list[int]],
    device: str,
    tta: bool,
    with_masks: bool,
) -> Iterator[tuple[dict[str, torch.Tensor], BatchSignals]]:
    """Decode `batches` of `entries` in DataLoader workers and yield (batch, signals) for each."""
    settings = RectifySettings.of(config)
    ids = [entry.id for entry in entries]
    own_rows = source.labeled_rows(ids) if source is not None else np.full(len(ids), -1, dtype=np.int64)
    dataset = InferenceDataset(entries, settings.num_classes, settings.ignore_index, with_masks=with_masks)
    loader = DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=min(config.train.workers, 4),
        collate_fn=functools.partial(pad_collate, ignore_index=settings.ignore_index),
        pin_memory=device.startswith("cuda"),
    )
    amp = config.train.amp and device.startswith("cuda")
    memory_format = torch.channels_last if config.train.channels_last else torch.contiguous_format
    for batch in loader:
        with torch.inference_mode(), torch.autocast(device_type="cuda", enabled=amp):
            images = batch["image"].to(device, non_blocking=True).contiguous(memory_format=memory_format)
            keys = batch["index"].numpy()
            valid = _valid_pixels(batch["sizes"], images.shape[-2:]).to(device)
            signals = batch_signals(model, images, valid, keys, own_rows[keys], source, settings, tta)
        yield batch, signals


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
    entries = read_split(config.data_root / config.data.labeled, config.data_root, masks_required=True)
    batches = fixed_batches(len(entries), config.rectify.batch_size)
    values: list[list[np.ndarray]] = [[] for _ in range(config.data.num_classes)]
    for batch, signals in signal_stream(config, model, source, entries, batches, device, False, True):
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


def calibrated_cisc(cisc: np.ndarray, predicted: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Each pixel's S_ŷ as its quantile level among labeled pixels of class ŷ (NaN when unknown)."""
    levels = np.linspace(0.0, 1.0, table.shape[1])
    out = np.full(cisc.shape, np.nan, dtype=np.float32)
    for cls in np.unique(predicted):
        if cls < len(table) and not np.isnan(table[cls]).any():
            chosen = (predicted == cls) & ~np.isnan(cisc)
            out[chosen] = np.interp(cisc[chosen], table[cls], levels)
    return out


def cropped_images(
    keys: np.ndarray, sizes: np.ndarray, arrays: dict[str, np.ndarray], masks: np.ndarray, with_masks: bool
) -> Iterator[tuple[int, dict[str, np.ndarray], np.ndarray | None]]:
    """Each image of a host batch: (split position, its H×W arrays, its mask or None)."""
    for slot, key in enumerate(keys.tolist()):
        height, width = (int(value) for value in sizes[slot])
        crop = {name: value[slot, :height, :width] for name, value in arrays.items() if value.ndim == 3}
        crop.update({name: value[slot] for name, value in arrays.items() if value.ndim < 3})
        yield key, crop, masks[slot, :height, :width] if with_masks else None


def report_signals(crop: dict[str, np.ndarray], calibration: np.ndarray | None) -> dict[str, np.ndarray]:
    """The per-pixel signals the quality report scores (SIGNALS), in [0, 1], NaN = undefined."""
    confidence = crop["confidence"].astype(np.float32)
    cisc = crop["cisc"].astype(np.float32)
    signals = {
        "confidence": confidence,
        "confidence_where_guided": np.where(np.isnan(cisc), np.nan, confidence),
        "cisc": cisc,
        "cisc_calibrated": (
            calibrated_cisc(cisc, crop["raw_label"], calibration)
            if calibration is not None else np.full_like(cisc, np.nan)
        ),  # fmt: skip
        "cisc_contrast": (crop["contrast"].astype(np.float32) + 1.0) / 2.0,  # [−1, 1] → [0, 1]
        "confidence_x_cisc": confidence * np.nan_to_num(cisc, nan=1.0),  # unguided pixels: confidence
    }
    for mode in WEIGHT_MODES:
        weight = crop[f"weight_{mode}"].astype(np.float32)
        signals[f"weight_{mode}"] = weight
        signals[f"confidence_x_weight_{mode}"] = confidence * weight
    return signals


def _store(
    writer: PseudoWriter,
    quality: QualityAccumulator,
    pending: set[int],
    weight_mode: str,
    with_masks: bool,
    calibration: np.ndarray | None,
    item: tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], np.ndarray],
) -> None:
    """Writer-thread side: crop each pending image out of its batch, write it, score it."""
    positions, images = [], []
    for key, crop, truth in cropped_images(*item, with_masks):
        if key not in pending:
            continue
        image = PseudoImage(
            label=crop["label"],
            raw_label=crop["raw_label"],
            confidence=crop["confidence"],
            cisc=crop["cisc"],
            weight=crop[f"weight_{weight_mode}"],
            guides=crop["guide_rows"],
            reliability=float(crop["reliability"]),
        )
        positions.append(key)
        images.append(image)
        signals = report_signals(crop, calibration) if truth is not None else {}
        quality.add(image.raw_label, image.label, image.weight, image.reliability, signals, truth)
    writer.write(positions, images)
