"""`cisctool rectify --round N`: the pseudo-labelling pipeline writing `pseudo.h5`.

`signal_stream` computes each batch on the model's device; a writer thread crops
each image, appends it to the file and feeds the quality report while the
next batch computes. Unfinished work resumes from the file's `done` flags and
the report's saved totals (`quality_progress`), so a resumed run writes and
reports what an uninterrupted one does. The pseudo file is opened only after
the DataLoader's workers have started: no worker holds it open (or locked)
after its parent has gone.
"""

import dataclasses
import functools
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cisctool import preemption
from cisctool.config import Config, config_hash, to_toml
from cisctool.console import RateColumn, progress_bar, warn
from cisctool.data.check import labeled_class_shares
from cisctool.data.masks import image_size
from cisctool.data.splits import SplitEntry, split_entries
from cisctool.errors import InputError
from cisctool.method.adaptive_thresholds import self_adaptive_thresholds
from cisctool.method.index import PrototypeIndex
from cisctool.method.prior_alignment import alignment_factors, sample_positions
from cisctool.method.signals import (
    RectifySettings,
    cropped_images,
    fixed_batches,
    host_arrays,
    pseudo_labels,
)
from cisctool.report.quality import QualityAccumulator, shrink_message, shrinking_classes
from cisctool.report.quality_progress import QualityProgress, progress_path
from cisctool.report.quality_signals import SIGNALS, report_signals
from cisctool.staleness import (
    PSEUDO,
    PSEUDO_RESUME_ATTRS,
    hashed_values,
    inert,
    keys_affecting,
    pseudo_resume_settings,
)
from cisctool.steps.distributed import barrier, from_environment, process_group
from cisctool.steps.index import open_round_index
from cisctool.steps.shards import merge_and_report, shard_path, shard_range
from cisctool.steps.signal_stream import class_calibration, guided_model, sample_statistics, signal_stream
from cisctool.steps.snapshots import snapshot_models
from cisctool.store.atomic import atomic_write_json, remove_stale_temporaries, sha256_file
from cisctool.store.background_writer import BackgroundWriter
from cisctool.store.layout import RunLayout
from cisctool.store.pseudo_labels import PseudoImage, PseudoLabels, PseudoWriter, ResumePoint, partial_path

# Host arrays that may wait for, or be in, the writer thread: two VOC-size batches of 16 with
# the quality report's signals; a larger batch still goes through, one at a time.
WRITER_QUEUE_BYTES = 128 << 20


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
    """Hash of the settings that change pseudo labels (`staleness.PSEUDO`: data, model, index, rectify, seed)."""
    keys = [dotted for dotted in keys_affecting(PSEUDO) if not inert(config, dotted)]
    relevant = hashed_values(config, keys, ("data", "model", "index", "rectify"), {})
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()


def tta_description(config: Config) -> str:
    """How the pseudo labels' probabilities were averaged, e.g. "0.5,0.75,1,1.5,2 x flip" or "off"."""
    if not config.rectify.tta:
        return "off"
    scales = ",".join(f"{scale:g}" for scale in config.rectify.tta_scales)
    return scales + (" x flip" if config.rectify.tta_flip else "")


def image_shapes(entries: Sequence[SplitEntry]) -> np.ndarray:
    """N×2 (H, W) from the image headers; an unreadable image stops the run before any work."""
    shapes = np.empty((len(entries), 2), dtype=np.int32)  # filled in place: no list of a million tuples
    for position, entry in enumerate(entries):
        shapes[position] = image_size(entry.image)
    return shapes


@dataclass
class MergedShards:
    """The pseudo-label file joined from shards, and its quality report."""

    path: Path
    report: dict[str, Any]


def rectify_command(
    config: Config, round_index: int, device: str, *, merge: bool = False, copy: bool = False, **options: Any
) -> RectifyOutcome | MergedShards | None:
    """What `cisctool rectify` does: compute round N's pseudo labels (or the shard `options["shard"]` of
    them), or join finished shards (`merge`; virtual unless `copy`); `options` are `rectify_round`'s.
    Launched by torchrun without a shard, each rank computes the shard of its rank (with `resume`, a
    finished shard of the same inputs is kept) and rank 0 merges them; the other ranks return None.
    """
    torchrun = from_environment().active and options.get("shard") is None and not merge
    final_path = RunLayout.of(config).pseudo(round_index)
    force, compression = options.get("force", False), options.get("compression", "lzf")
    if torchrun and final_path.exists() and not force:
        raise InputError(f"{final_path}: already exists; pass --force to recompute it")
    if torchrun:
        with process_group(device) as (processes, rank_device):
            rank_options = {**options, "force": True, "shard": (processes.rank, processes.world)}
            rectify_round(config, round_index, rank_device, **rank_options)
            barrier(processes)
        if not processes.is_main:
            return None
    if merge or torchrun:
        merged = MergedShards(*merge_and_report(config, round_index, compression, force=force or torchrun, copy=copy))
        _warn_if_shrinking(merged.report, round_index)
        return merged
    return rectify_round(config, round_index, device, **options)


def rectify_round(
    config: Config,
    round_index: int,
    device: str,
    *,
    resume: bool = False,
    force: bool = False,
    compression: str = "lzf",
    shard: tuple[int, int] | None = None,
) -> RectifyOutcome:
    """Pseudo labels *for* round N from round N−1's model and index, into runs/<name>/roundN/pseudo.h5.

    With `shard = (i, n)`, only the i-th of n contiguous runs of the fixed batches is computed, into
    `pseudo.shard<i>of<n>.h5` (same layout; `merge_shards` joins them). With `resume`, a shard file
    already finished from the same inputs is kept as it is (0 computed), as under torchrun.
    """
    if round_index < 1:
        raise InputError("--round must be ≥ 1: round N's pseudo labels come from round N−1's model")
    source_round = round_index - 1
    prototype_index = _source_index(config, source_round)
    final_path = RunLayout.of(config).pseudo(round_index)
    final_path = final_path if shard is None else shard_path(final_path, *shard)
    if final_path.exists():
        if resume and shard is not None and (kept := _finished_shard(config, round_index, final_path, shard)):
            return kept
        if not force:
            raise InputError(f"{final_path}: already exists; pass --force to recompute it")
    job = _open_job(config, round_index, final_path, shard, resume=resume)
    model, source = guided_model(config, RunLayout.of(config).model(source_round), prototype_index, device)
    snapshots = snapshot_models(config, source_round, device)
    labeled_share = labeled_class_shares(config)
    alignment, thresholds = _class_statistics_of(job, model, labeled_share, device)
    described = {"prior_alignment": alignment.describe(config.class_names)}
    if thresholds.thresholds:
        described["adaptive_thresholds"] = thresholds.describe(config.class_names)
    job.attrs.update({key: json.dumps(value) for key, value in described.items()})
    calibration = class_calibration(config, model, source, device) if job.with_masks and source else None
    quality = QualityAccumulator(list(config.class_names), RectifySettings.of(config).ignore_index, SIGNALS)
    resuming = job.started is not None
    progress = QualityProgress.begin(progress_path(job.work_path), quality, len(job.entries), resume=resuming)
    todo, batches = _choose_batches(job, progress)
    stream = signal_stream(
        config, model, source, job.entries, batches, device,
        with_masks=job.with_masks, class_factors=alignment.factors, snapshots=snapshots,
    )  # fmt: skip
    writer = _open_writer(job, compression)  # only now that the loader's workers exist, so none inherits it
    settings = dataclasses.replace(RectifySettings.of(config), class_conf_min=thresholds.thresholds)
    computed, seconds = _write_all(job, writer, progress, stream, todo, calibration, settings)
    return _finish(job, progress, computed, seconds, described, labeled_share)


@dataclass
class _Job:
    """One rectify run's images and files, settled before the model loads."""

    config: Config
    round_index: int
    shard: tuple[int, int] | None
    final_path: Path
    entries: Sequence[SplitEntry]
    with_masks: bool
    attrs: dict[str, Any]  # what the file records of its making (`pseudo_file_attributes`)
    started: ResumePoint | None  # the unfinished file resumed from, if any
    shapes: np.ndarray | None  # N×2 image sizes for a new file

    @property
    def work_path(self) -> Path:
        return partial_path(self.final_path)


def _open_job(
    config: Config, round_index: int, final_path: Path, shard: tuple[int, int] | None, *, resume: bool
) -> _Job:
    """Read the split, check the unfinished file a resume continues, and size a new one: every bad
    input stops the run before any work."""
    entries = split_entries(config, "unlabeled")
    with_masks = all(entry.mask is not None for entry in entries)
    require_true_masks(config, with_masks)
    attrs = pseudo_file_attributes(config, round_index)
    work_path = partial_path(final_path)
    try:
        final_path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(final_path.parent)
    except OSError as error:
        raise InputError(f"{final_path.parent}: cannot create the pseudo-label file's folder ({error})") from None
    started = None
    if resume and work_path.exists():
        expected = {key: attrs[key] for key in PSEUDO_RESUME_ATTRS}
        started = PseudoWriter.resumable(work_path, expected, entries.ids)
    shapes = None if started is not None else image_shapes(entries)
    return _Job(config, round_index, shard, final_path, entries, with_masks, attrs, started, shapes)


def _finished_shard(
    config: Config, round_index: int, path: Path, shard: tuple[int, int]
) -> RectifyOutcome | None:
    """A shard file finished from the current inputs (`PSEUDO_RESUME_ATTRS`), for the same images, with
    every image of its shard done, and its quality report: kept, 0 computed. None otherwise (recomputed
    with --force, refused without)."""
    entries = split_entries(config, "unlabeled")
    expected = pseudo_file_attributes(config, round_index)
    start, stop = shard_range(len(entries), config.rectify.batch_size, shard)
    try:
        with PseudoLabels(path, require_complete=False) as stored:
            same = all(stored.attrs.get(key) == expected[key] for key in PSEUDO_RESUME_ATTRS)
            same = same and stored.ids == list(entries.ids) and bool(stored.done[start:stop].all())
        report = json.loads(path.with_suffix(".json").read_text())
    except (InputError, OSError, json.JSONDecodeError):
        return None
    return RectifyOutcome(path, len(entries), 0, 0.0, report) if same else None


def _class_statistics_of(
    job: _Job, model: torch.nn.Module, labeled_share: dict[str, float], device: str
) -> tuple["PriorAlignment", "AdaptiveThresholds"]:
    """The prior alignment's factors and FreeMatch's thresholds: those the resumed file's first images were
    made with, else new ones."""
    attrs, names = job.started.attrs if job.started is not None else {}, job.config.class_names
    if "prior_alignment" in attrs:
        alignment = PriorAlignment.from_description(json.loads(attrs["prior_alignment"]), names)
    else:
        alignment = _prior_alignment(job.config, model, job.entries, labeled_share, device)
    if "adaptive_thresholds" in attrs:
        return alignment, AdaptiveThresholds.from_description(json.loads(attrs["adaptive_thresholds"]), names)
    return alignment, _adaptive_thresholds(job.config, model, job.entries, alignment.factors, device)


def _choose_batches(job: _Job, progress: QualityProgress) -> tuple[np.ndarray, list[range]]:
    """The positions to do (this shard's, not done or not yet in the report's totals) and the fixed
    batches that hold any of them."""
    count, batch_size = len(job.entries), job.config.rectify.batch_size
    start, stop = (0, count) if job.shard is None else shard_range(count, batch_size, job.shard)
    wanted = np.zeros(count, dtype=bool)  # masks, not sets of ints: flat memory at 100k images
    wanted[start:stop] = True
    if job.started is not None:
        wanted &= ~job.started.done | ~progress.covered
    return wanted, [batch for batch in fixed_batches(count, batch_size) if wanted[batch.start : batch.stop].any()]


def _open_writer(job: _Job, compression: str) -> PseudoWriter:
    """Reopen the resumed file at its done flags, or create a new one."""
    if job.started is not None:
        return PseudoWriter.reopen(job.work_path, job.started.done)
    job.work_path.unlink(missing_ok=True)
    return PseudoWriter.create(job.work_path, job.entries.ids, job.shapes, job.config.data.num_classes, job.attrs, compression)


def _write_all(
    job: _Job,
    writer: PseudoWriter,
    progress: QualityProgress,
    stream: Iterator[tuple[dict[str, torch.Tensor], Any]],
    todo: np.ndarray,
    calibration: np.ndarray | None,
    settings: RectifySettings,
) -> tuple[int, float]:
    """Threshold by `settings` and write every batch; on SIGTERM, save the totals of what the writer wrote
    and stop."""
    config = job.config
    store = functools.partial(
        _store, writer, progress, todo, config.rectify.weight_mode, calibration, with_masks=job.with_masks
    )
    try:
        with preemption.stop_on_sigterm():
            return _run(stream, store, settings, todo, job.round_index - 1)
    except preemption.Preempted:  # every queued batch is written: save the totals that cover them
        progress.save()
        written = int(writer.done.sum())
        raise preemption.Preempted(f"{written} of {len(job.entries)} images written to {job.work_path}") from None
    finally:
        writer.close()


def _finish(
    job: _Job, progress: QualityProgress, computed: int, seconds: float, described: dict[str, Any],
    labeled_share: dict[str, float],
) -> RectifyOutcome:  # fmt: skip
    """Write the quality report, then give the file its final name."""
    progress.save()  # a run killed before the rename below then recomputes nothing
    outcome = RectifyOutcome(job.final_path, len(job.entries), computed, seconds, progress.report())
    _describe_run(outcome, job.config, job.round_index, labeled_share)
    outcome.report.update(described)
    layout = RunLayout.of(job.config)
    quality_path = layout.pseudo_quality(job.round_index) if job.shard is None else job.final_path.with_suffix(".json")
    atomic_write_json(quality_path, outcome.report)
    os.replace(job.work_path, job.final_path)
    progress.discard()
    if job.shard is None:
        _warn_if_shrinking(outcome.report, job.round_index)
    return outcome


def require_true_masks(config: Config, with_masks: bool) -> None:
    """Refuse the oracle (`rectify.pseudo_source = "masks"`) where the unlabeled split lists no masks."""
    if config.rectify.pseudo_source == "masks" and not with_masks:
        raise InputError(
            f'{config.data_root / config.data.unlabeled}: lists no masks (or not for every image); '
            'rectify.pseudo_source = "masks" (the oracle) trains on the unlabeled images\' true masks'
        )


def _warn_if_shrinking(report: dict[str, Any], round_index: int) -> None:
    """Name the classes that the pseudo labels give under half their labeled share of the pixels."""
    if shrinking := shrinking_classes(report):
        warn(shrink_message(shrinking, f"round {round_index}'s pseudo labels"))


@dataclass(frozen=True)
class PriorAlignment:
    """Distribution alignment's inputs and class factors (`rectify.prior_alignment`); no factors when off."""

    strength: float
    labeled_share: tuple[float, ...] = ()
    mean_prediction: tuple[float, ...] = ()
    factors: tuple[float, ...] = ()
    sample_images: int = 0

    def describe(self, class_names: tuple[str, ...]) -> dict[str, Any]:
        """For the quality report: τ and, per class, π, p̄ and the factor (the report's key "weight" holds it)."""
        per_class = {
            name: {"labeled_share": share, "mean_prediction": mean, "weight": factor}
            for name, share, mean, factor in zip(class_names, self.labeled_share, self.mean_prediction, self.factors)
        }
        return {"strength": self.strength, "sample_images": self.sample_images, "classes": per_class}

    @classmethod
    def from_description(cls, described: dict[str, Any], class_names: tuple[str, ...]) -> "PriorAlignment":
        """Back from `describe` (the file's attr): a resumed run aligns with the factors its file was
        started with, not with a fresh p̄ that another device's rounding could shift."""
        per_class = [described["classes"][name] for name in class_names] if described["classes"] else []
        return cls(
            described["strength"],
            tuple(entry["labeled_share"] for entry in per_class),
            tuple(entry["mean_prediction"] for entry in per_class),
            tuple(entry["weight"] for entry in per_class),
            described["sample_images"],
        )


def _prior_alignment(
    config: Config,
    model: torch.nn.Module,
    entries: Sequence[SplitEntry],
    labeled_share: dict[str, float],
    device: str,
) -> PriorAlignment:
    """p̄ over the fixed sample of the unlabeled split and the factors (π/p̄)^τ. Computed in every shard:
    the same model and sample give the same factors (on one kind of device); a resumed run reads them
    from its file instead."""
    strength = config.rectify.prior_alignment
    if strength == 0:
        return PriorAlignment(strength)
    labeled = np.array([labeled_share[name] for name in config.class_names])
    positions = sample_positions(len(entries))
    predicted, _ = sample_statistics(config, model, entries, positions, device)
    factors = alignment_factors(labeled, predicted, strength)
    return PriorAlignment(
        strength, tuple(labeled.tolist()), tuple(predicted.tolist()), tuple(factors.tolist()), len(positions)
    )


@dataclass(frozen=True)
class AdaptiveThresholds:
    """FreeMatch's class thresholds (`rectify.conf_adaptive`) and what they came from; none when off."""

    mean_confidence: float = 0.0
    mean_prediction: tuple[float, ...] = ()
    thresholds: tuple[float, ...] = ()
    sample_images: int = 0

    def describe(self, class_names: tuple[str, ...]) -> dict[str, Any]:
        """For the quality report and the file's attr: τ̄ and, per class, p̄ and τ_c."""
        per_class = {name: {"mean_prediction": mean, "threshold": threshold}
                     for name, mean, threshold in zip(class_names, self.mean_prediction, self.thresholds)}  # fmt: skip
        return {"mean_confidence": self.mean_confidence, "sample_images": self.sample_images, "classes": per_class}

    @classmethod
    def from_description(cls, described: dict[str, Any], class_names: tuple[str, ...]) -> "AdaptiveThresholds":
        """Back from `describe`: a resumed run drops by the thresholds its file was started with."""
        per_class = [described["classes"][name] for name in class_names]
        return cls(
            described["mean_confidence"],
            tuple(entry["mean_prediction"] for entry in per_class),
            tuple(entry["threshold"] for entry in per_class),
            described["sample_images"],
        )


def _adaptive_thresholds(
    config: Config, model: torch.nn.Module, entries: Sequence[SplitEntry], class_factors: tuple[float, ...],
    device: str,
) -> AdaptiveThresholds:  # fmt: skip
    """τ̄ and p̄ over prior alignment's fixed sample, predicted as the pseudo labels are (aligned when
    alignment is on), and the thresholds τ̄ · p̄_c / max p̄. Part of CISC-R's recipe: self-training
    (`rectify.enabled = false`, the baselines) keeps every argmax label but those under `conf_min`."""
    if not (config.rectify.conf_adaptive and config.rectify.enabled):
        return AdaptiveThresholds()
    positions = sample_positions(len(entries))
    predicted, confidence = sample_statistics(config, model, entries, positions, device, class_factors)
    thresholds = self_adaptive_thresholds(predicted, confidence)
    return AdaptiveThresholds(confidence, tuple(predicted.tolist()), tuple(thresholds.tolist()), len(positions))


def _source_index(config: Config, source_round: int) -> PrototypeIndex | None:
    """Round N−1's index when rectifying (None for self-training); refuses a missing model, a stale index."""
    layout = RunLayout.of(config)
    model_path = layout.model(source_round)
    if not model_path.is_file():
        raise InputError(f"{model_path}: no model for round {source_round} (train it first)")
    if not config.rectify.enabled:
        return None
    prototype_index, stale = open_round_index(config, source_round)
    if stale:
        raise InputError(
            f"{layout.index_files(source_round)[0]}: stale (round {source_round}'s model changed since it was "
            f"built); rerun `cisctool index build --round {source_round}`"
        )
    return prototype_index


def pseudo_file_attributes(config: Config, round_index: int) -> dict[str, Any]:
    """What the pseudo file records of its making: the model, index and settings (hashes), and the choices.
    `staleness.PSEUDO_CURRENT_ATTRS` of them say whether a finished file is current, `PSEUDO_RESUME_ATTRS`
    whether an unfinished one may resume."""
    layout = RunLayout.of(config)
    return {
        "round": round_index,
        "ignore_index": config.data.ignore_index,
        "class_names": list(config.class_names),
        "checkpoint_sha256": sha256_file(layout.model(round_index - 1)),
        "index_sha256": sha256_file(layout.index_files(round_index - 1)[0]) if config.rectify.enabled else "",
        "config": to_toml(config),
        "config_hash": config_hash(config),
        "inputs_hash": pseudo_inputs_hash(config),
        "rectified": config.rectify.enabled,
        "guide": config.rectify.guide,
        "weight_mode": config.rectify.weight_mode,
        "tta": tta_description(config),
        **pseudo_resume_settings(config),
    }


def _describe_run(
    outcome: RectifyOutcome, config: Config, round_index: int, labeled_share: dict[str, float]
) -> None:
    """Add to the quality report the run's settings, thresholds and speed."""
    settings = RectifySettings.of(config)
    outcome.report.update(
        images_total=outcome.images, guide_exclude=list(settings.guide_exclude),
        thresholds={"margin": settings.margin, "p_min": settings.p_min,
                    "cisc_min": settings.cisc_min, "conf_min": settings.conf_min},
        round=round_index, file=str(outcome.path), images_per_second=outcome.images_per_second,
        seconds=outcome.seconds, computed_this_run=outcome.computed, tta=tta_description(config),
        guide=config.rectify.guide, weight_mode=config.rectify.weight_mode,
        labeled_share=labeled_share,
    )  # fmt: skip



def _run(
    stream: Iterator[tuple[dict[str, torch.Tensor], Any]],
    store: Callable[[Any], None],
    settings: RectifySettings,
    todo: np.ndarray,
    source_round: int,
) -> tuple[int, float]:
    """Threshold each computed batch and hand it to the writer thread; (images computed, seconds)."""
    background = BackgroundWriter(store, WRITER_QUEUE_BYTES, name="pseudo-writer")
    started = time.perf_counter()
    computed, total = 0, int(todo.sum())
    try:
        with progress_bar(RateColumn("img")) as bar, torch.inference_mode():
            task = bar.add_task(f"rectify for round {source_round + 1}", total=total)
            for batch, signals in stream:
                label = pseudo_labels(signals, settings, batch["mask"])
                positions = batch["index"].numpy()  # split positions
                item = (positions, batch["sizes"].numpy(), host_arrays(signals, label), batch["mask"].numpy())
                background.put(item, item[3].nbytes + sum(array.nbytes for array in item[2].values()))
                fresh = int(todo[positions].sum())
                computed += fresh
                bar.advance(task, fresh)
                if preemption.requested() and computed < total:  # the writer empties its queue below
                    raise preemption.Preempted("stopped")
    finally:
        if background.thread.is_alive():
            background.close()
    return computed, time.perf_counter() - started


def _store(
    writer: PseudoWriter,
    progress: QualityProgress,
    todo: np.ndarray,
    weight_mode: str,
    calibration: np.ndarray | None,
    item: tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], np.ndarray],
    *,
    with_masks: bool,
) -> None:
    """Writer-thread side: crop each image to do out of its batch, write it, and score it unless
    the saved report totals already hold it."""
    positions, images = [], []
    for position, crop, truth in cropped_images(*item, with_masks=with_masks):
        if not todo[position]:
            continue
        image = PseudoImage(
            label=crop["label"],
            raw_label=crop["raw_label"],
            confidence=crop["confidence"],
            cisc=crop["cisc"],
            weight=crop[f"weight_{weight_mode}"],
            guides=crop["guide_positions"],
            reliability=float(crop["reliability"]),
        )
        positions.append(position)
        images.append(image)
        if not progress.covered[position]:
            signals = report_signals(crop, calibration) if truth is not None else {}
            progress.add(image.raw_label, image.label, image.weight, image.reliability, signals, truth,
                         crop["queries"])  # fmt: skip
    writer.write(positions, images)
    progress.cover(positions)
