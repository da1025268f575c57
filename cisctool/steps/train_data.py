"""TODO docstring."""

import hashlib
import json
import math
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from cisctool.config import Config, to_dict
from cisctool.data.datasets import PairSettings, PseudoLabeledDataset, SeededSampler
from cisctool.data.splits import read_split
from cisctool.data.workers import exit_with_parent
from cisctool.errors import InputError
from cisctool.method.pseudo_training import select_rows
from cisctool.steps.distributed import Processes
from cisctool.store.atomic import sha256_file
from cisctool.store.layout import RunLayout
from cisctool.store.pseudo_labels import PseudoLabels, partial_path

# Settings that may change between a run and its resume without changing the result.
RESUME_FREE_KEYS = {"workers", "log_every", "amp", "channels_last", "checkpoint_every"}


# Settings of rounds ≥ 1 only: round 0 does not depend on them.
LATER_ROUND_KEYS = {"pseudo_batch_size", "round_max_steps", "round_epochs", "round_lr", "init"}


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


def training_signature(config: Config, round_index: int = 0, world: int = 1) -> str:
    """Hash of every setting that changes the trained weights (not workers, logging, device)."""
    values = to_dict(config)
    ignored = RESUME_FREE_KEYS | (set() if round_index else LATER_ROUND_KEYS)
    train = {key: value for key, value in values["train"].items() if key not in ignored}
    relevant = {"data": values["data"], "model": values["model"], "train": train,
                "min_area": values["index"]["min_area"], "round": round_index,
                "guide_exclude": values["rectify"]["guide_exclude"]}  # fmt: skip
    if round_index:
        relevant["schedule"] = [values["rectify"]["select"], values["rectify"]["ratio"]]
    if world > 1:  # the total batch, and so the sample stream, depends on the number of processes
        relevant["world"] = world
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def pair_settings(config: Config) -> PairSettings:
    """How training images are drawn and augmented, from the config."""
    return PairSettings(
        num_classes=config.data.num_classes,
        ignore_index=config.data.ignore_index,
        crop_size=config.train.crop_size,
        scale_range=(config.train.scale_min, config.train.scale_max),
        min_area=config.index.min_area,
        excluded_classes=config.rectify.guide_exclude,
    )


def total_steps_of(config: Config, dataset_size: int, round_index: int = 0, pseudo_images: int = 0) -> int:
    """Round 0: `train.max_steps` if set, else epochs × pair-batches per pass over the labeled set.
    Rounds ≥ 1: `train.round_max_steps` when set, else `round_epochs` passes over the round's
    `pseudo_images` (selected pseudo-labeled images) when set, else as round 0."""
    if round_index > 0 and config.train.round_max_steps > 0:
        return config.train.round_max_steps
    if round_index > 0 and config.train.round_epochs > 0:
        per_step = config.train.pseudo_batch_size or config.train.batch_size
        return max(math.ceil(config.train.round_epochs * pseudo_images / per_step), 1)
    if config.train.max_steps > 0:
        return config.train.max_steps
    pairs = max(config.train.batch_size // 2, 1)
    return config.train.epochs * max(dataset_size // pairs, 1)


@dataclass
class PseudoStream:
    """Round ≥ 1's pseudo-labeled images: the loader and what the signature must cover."""

    loader: DataLoader
    images: int
    selected: int
    fingerprint: str


def _pseudo_stream(
    config: Config, round_index: int, settings: PairSettings, start: int, total: int,
    processes: Processes = Processes(),
) -> PseudoStream:
    """Open and check round N's pseudo.h5, pick the schedule's images, and stream them from `start`."""
    layout = RunLayout.of(config)
    previous = layout.model(round_index - 1)
    if not previous.is_file():
        raise InputError(f"{previous}: no model for round {round_index - 1}; train round {round_index - 1} first")
    unlabeled = read_split(config.data_root / config.data.unlabeled, config.data_root, masks_required=False)
    pseudo_path = layout.pseudo(round_index)
    if not pseudo_path.exists() and partial_path(pseudo_path).exists():
        raise InputError(
            f"{partial_path(pseudo_path)}: unfinished; finish it with `cisctool rectify --round {round_index} --resume`"
        )
    with PseudoLabels(pseudo_path) as stored:
        check_pseudo_file(stored, config, round_index, sha256_file(previous), {entry.id for entry in unlabeled})
        rows = select_rows(stored.reliability, round_index, config.rectify.select, config.rectify.ratio)
        images = len(stored)
        fingerprint = json.dumps(
            [stored.attrs.get(key) for key in ("checkpoint_sha256", "index_sha256", "config_hash")]
        )
    batch = config.train.pseudo_batch_size or config.train.batch_size
    dataset = PseudoLabeledDataset(pseudo_path, unlabeled, rows.tolist(), settings)
    world = processes.world
    sampler = SeededSampler(
        len(rows), config.train.seed + 7919 * round_index, start * batch * world, total * batch * world,
        processes.rank, world,
    )  # fmt: skip
    loader = DataLoader(  # its own generator: creating it must not draw from the global RNG (resume)
        dataset, batch_size=batch, sampler=sampler, num_workers=config.train.workers, drop_last=True,
        worker_init_fn=exit_with_parent(),
        generator=torch.Generator().manual_seed(config.train.seed + 7919 * round_index),
    )  # fmt: skip
    fingerprint += hashlib.sha256(rows.tobytes()).hexdigest()
    return PseudoStream(loader, images, len(rows), fingerprint)
