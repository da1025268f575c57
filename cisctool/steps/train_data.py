"""What a round trains on: the labeled pairs, round N's chosen pseudo-labeled images, the step budget,
and the signature that tells whether a saved training state belongs to exactly these inputs.

Both sample streams are addressed by step (`SeededSampler`), so a loader built
from any step continues exactly where an uninterrupted run would be; each
loader has its own generator, so building one never draws from the global RNG.
"""

import functools
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from cisctool.config import Config
from cisctool.console import progress_bar
from cisctool.data.check import labeled_class_shares
from cisctool.data.datasets import LabeledPairDataset, PairSettings, PseudoLabeledDataset, SeededSampler
from cisctool.data.splits import SplitEntry, split_entries
from cisctool.data.workers import exit_with_parent, loader_workers
from cisctool.errors import InputError
from cisctool.method.prior_alignment import alignment_factors
from cisctool.method.pseudo_training import select_positions
from cisctool.staleness import hashed_values, training_keys
from cisctool.steps.distributed import Processes
from cisctool.store.atomic import sha256_file
from cisctool.store.layout import RunLayout
from cisctool.store.pseudo_labels import PseudoLabels, partial_path

# The pseudo stream's seed is offset by round, so each round draws its own order.
ROUND_SEED_STRIDE = 7919


@dataclass
class PseudoSelection:
    """Round N's checked pseudo-label file and the positions the schedule trains on."""

    path: Path
    unlabeled: list[SplitEntry]
    positions: np.ndarray  # split positions (the file's rows) the schedule chose
    images: int  # in the file
    fingerprint: str  # the file's model, index and config hashes, and the chosen positions
    class_factors: np.ndarray | None = None  # `train.pseudo_class_balance`: class factors of the pixels' loss weights


def check_pseudo_file(
    stored: PseudoLabels, config: Config, round_index: int, previous_model_sha: str, unlabeled_ids: set[str]
) -> None:
    """Refuse pseudo labels of another round, model, class list or unlabeled split."""
    path = stored.path
    attrs = stored.attrs
    if attrs.get("round") != round_index:
        raise InputError(f"{path}: holds pseudo labels for round {attrs.get('round')}, not round {round_index}")
    if attrs.get("checkpoint_sha256") != previous_model_sha:
        raise InputError(
            f"{path}: made with another round-{round_index - 1} model than the current one; "
            f"rerun `cisctool rectify --round {round_index} --force`"
        )
    if list(attrs.get("class_names", [])) != list(config.class_names):
        raise InputError(f"{path}: made for classes {attrs.get('class_names')}; config has {list(config.class_names)}")
    missing = [image_id for image_id in stored.ids if image_id not in unlabeled_ids]
    if missing:
        raise InputError(
            f"{path}: image {missing[0]!r} (and {len(missing) - 1} more) is not in the unlabeled split "
            f"{config.data.unlabeled}; the file belongs to another config"
        )


def select_pseudo_labels(config: Config, round_index: int) -> PseudoSelection:
    """Open and check round N's pseudo.h5 (against round N−1's model and the unlabeled split) and pick
    the schedule's images (`rectify.select`, `rectify.ratio`)."""
    layout = RunLayout.of(config)
    previous = layout.model(round_index - 1)
    if not previous.is_file():
        raise InputError(f"{previous}: no model for round {round_index - 1}; train round {round_index - 1} first")
    unlabeled = split_entries(config, "unlabeled")
    pseudo_path = layout.pseudo(round_index)
    if not pseudo_path.exists() and partial_path(pseudo_path).exists():
        raise InputError(
            f"{partial_path(pseudo_path)}: unfinished; finish it with `cisctool rectify --round {round_index} --resume`"
        )
    with PseudoLabels(pseudo_path) as stored:
        check_pseudo_file(stored, config, round_index, sha256_file(previous), {entry.id for entry in unlabeled})
        select, ratio = config.rectify.select, config.rectify.ratio
        positions = select_positions(stored.reliability, round_index, select, ratio)
        fingerprint = json.dumps(
            [stored.attrs.get(key) for key in ("checkpoint_sha256", "index_sha256", "config_hash")]
        )
        images = len(stored)
    fingerprint += hashlib.sha256(positions.tobytes()).hexdigest()
    return PseudoSelection(pseudo_path, unlabeled, positions, images, fingerprint)


def pseudo_class_factors(config: Config, selection: PseudoSelection) -> np.ndarray:
    """`train.pseudo_class_balance`'s (π_c / q_c)^τ: π the labeled masks' class shares, q each class's
    share of the round's pseudo loss (the stored weights summed per label over the chosen images).
    A class with no labeled or no pseudo-labeled pixels keeps 1, as in the pseudo labels' prior
    alignment. Read by training only, so `status` does not pay for it."""
    num_classes = config.data.num_classes
    loss_mass = np.zeros(num_classes, dtype=np.float64)
    with PseudoLabels(selection.path) as stored, progress_bar() as bar:
        for position in bar.track(selection.positions.tolist(), description="pseudo loss class shares"):
            labels = stored.pixels("label", position).ravel()
            counted = labels < num_classes  # ignore (dropped, padding) counts for nothing in the loss
            weights = stored.pixels("weight", position).ravel()[counted]
            loss_mass += np.bincount(labels[counted], weights=weights, minlength=num_classes)
    labeled = np.array(list(labeled_class_shares(config).values()))
    return alignment_factors(labeled, loss_mass / max(loss_mass.sum(), 1e-12), config.train.pseudo_class_balance)


def training_signature(config: Config, round_index: int, world: int, pseudo: PseudoSelection | None) -> str:
    """Hash of every setting and input that changes the trained weights (not workers, logging, device):
    the data, model and training settings, the number of processes (the total batch, and so the sample
    stream, depends on it) and, for rounds ≥ 1, the schedule and the pseudo-label file's fingerprint."""
    relevant = hashed_values(config, training_keys(config, round_index), ("data", "model", "train"),
                             {"schedule": ("rectify.select", "rectify.ratio")})  # fmt: skip
    relevant["round"] = round_index
    if world > 1:
        relevant["world"] = world
    signature = hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()
    if pseudo is None:
        return signature
    return hashlib.sha256((signature + pseudo.fingerprint).encode()).hexdigest()


def pair_settings(config: Config) -> PairSettings:
    """How training images are drawn and augmented, from the config."""
    return PairSettings(
        num_classes=config.data.num_classes,
        ignore_index=config.data.ignore_index,
        crop_size=config.train.crop_size,
        scale_range=(config.train.scale_min, config.train.scale_max),
        min_area=config.index.min_area,
        guide_exclude=config.rectify.guide_exclude,
    )


def total_steps_of(config: Config, dataset_size: int, round_index: int = 0, pseudo_images: int = 0) -> int:
    """Round 0: `train.max_steps` if set, else epochs × pair-batches per pass over the labeled set.
    Rounds ≥ 1: `train.round_max_steps` when set, else `round_epochs` passes over the round's
    `pseudo_images` (selected pseudo-labeled images) when set, else as round 0."""
    if round_index > 0 and config.train.round_max_steps > 0:
        return config.train.round_max_steps
    if round_index > 0 and config.train.round_epochs > 0:
        return max(math.ceil(config.train.round_epochs * pseudo_images / pseudo_batch_size(config)), 1)
    if config.train.max_steps > 0:
        return config.train.max_steps
    pairs = max(config.train.batch_size // 2, 1)
    return config.train.epochs * max(dataset_size // pairs, 1)


def labeled_batch_size(config: Config, round_index: int) -> int:
    """Labeled images a step: `round_batch_size` in rounds ≥ 1 when set, else `batch_size`."""
    if round_index > 0 and config.train.round_batch_size > 0:
        return config.train.round_batch_size
    return config.train.batch_size


def pseudo_batch_size(config: Config) -> int:
    """Pseudo-labeled images a step in rounds ≥ 1: `pseudo_batch_size`, or `batch_size` when 0."""
    return config.train.pseudo_batch_size or config.train.batch_size


def labeled_loader(
    config: Config, round_index: int, dataset: LabeledPairDataset, start: int, total: int, processes: Processes,
    device: str,
) -> DataLoader:  # fmt: skip
    """Batches of `labeled_batch_size // 2` labeled pairs for steps [start, total) on this rank."""
    pairs = max(labeled_batch_size(config, round_index) // 2, 1)
    sampler = SeededSampler(
        len(dataset), config.train.seed, start * pairs * processes.world, total * pairs * processes.world,
        processes.rank, processes.world,
    )  # fmt: skip
    return _loader(dataset, pairs, sampler, config, config.train.seed, device)


def pseudo_loader(
    config: Config, round_index: int, selection: PseudoSelection, start: int, total: int, processes: Processes,
    device: str,
) -> DataLoader:  # fmt: skip
    """Batches of the selected pseudo-labeled images (strongly augmented) for steps [start, total) on this rank."""
    batch = pseudo_batch_size(config)
    seed = config.train.seed + ROUND_SEED_STRIDE * round_index
    dataset = PseudoLabeledDataset(
        functools.partial(PseudoLabels, selection.path), selection.unlabeled,
        selection.positions.tolist(), pair_settings(config), selection.class_factors,
    )  # fmt: skip
    sampler = SeededSampler(
        len(selection.positions), seed, start * batch * processes.world, total * batch * processes.world,
        processes.rank, processes.world,
    )  # fmt: skip
    return _loader(dataset, batch, sampler, config, seed, device)


def _loader(
    dataset: Dataset, batch_size: int, sampler: SeededSampler, config: Config, seed: int, device: str
) -> DataLoader:
    """Workers that die with their parent, whole batches only, and a generator of its own."""
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=loader_workers(config.train.workers, device),
        worker_init_fn=exit_with_parent(), pin_memory=device.startswith("cuda"), drop_last=True,
        generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip
