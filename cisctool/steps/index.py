"""`cisctool index build / info`: embed every labeled image's present classes with a round's model.

Prototypes come from the ground-truth masks: one batched forward,
then masked average pooling of the decoder features for every class at once.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cisctool.config import Config, config_hash
from cisctool.console import progress_bar
from cisctool.data.datasets import load_pair
from cisctool.data.masks import read_image
from cisctool.data.splits import split_entries
from cisctool.data.transforms import normalize
from cisctool.data.workers import inference_loader
from cisctool.errors import InputError
from cisctool.method.guides import GuideHit
from cisctool.method.index import (
    PrototypeIndex,
    auto_factory,
    build_index,
    recall_at_1,
    resolve_use_gpu,
    search_by_class,
    tune_nprobe,
)
from cisctool.method.prototypes import class_areas, class_prototypes, present_classes
from cisctool.report.pictures import blend, colorize, save_panels
from cisctool.staleness import index_settings
from cisctool.store.atomic import sha256_file
from cisctool.store.checkpoints import load_inference_model
from cisctool.store.index_files import load_index, save_index
from cisctool.store.layout import RunLayout


@dataclass
class LabeledPrototypes:
    """N present (image, class) prototypes of the labeled split."""

    vectors: np.ndarray  # N×D, L2-normalised
    rows: np.ndarray  # N, labeled-image row
    classes: np.ndarray  # N
    areas: np.ndarray  # N, fraction of the image's valid pixels
    image_ids: list[str]


@torch.inference_mode()
def labeled_prototypes(config: Config, model: torch.nn.Module, device: str) -> LabeledPrototypes:
    """Run the model over the labeled split and pool each present class (≥ index.min_area)."""
    entries = split_entries(config, "labeled")
    num_classes, ignore = config.data.num_classes, config.data.ignore_index
    loader = inference_loader(entries, num_classes, ignore, device, with_masks=True, workers=config.train.workers,
                              batch_size=config.rectify.batch_size)  # fmt: skip
    model.eval().to(device)
    parts: list[tuple[np.ndarray, ...]] = []
    with progress_bar() as bar:
        task = bar.add_task("labeled prototypes", total=len(entries))
        for batch in loader:
            masks = batch["mask"].to(device)
            features = model(batch["image"].to(device)).features
            prototypes, _ = class_prototypes(features, masks, num_classes, ignore)
            areas = class_areas(masks, num_classes, ignore)
            image_slot, cls = torch.nonzero(present_classes(areas, config.index.min_area), as_tuple=True)
            parts.append((
                prototypes[image_slot, cls].cpu().numpy(),
                batch["index"][image_slot.cpu()].numpy(),
                cls.cpu().numpy(),
                areas[image_slot, cls].cpu().numpy(),
            ))  # fmt: skip
            bar.advance(task, len(batch["index"]))
    vectors, rows, classes, areas = (np.concatenate(column) for column in zip(*parts, strict=True))
    return LabeledPrototypes(vectors, rows, classes, areas, [entry.id for entry in entries])


def build_round_index(
    config: Config, round_index: int, device: str, factory: str | None = None
) -> PrototypeIndex:
    """Build and save `indexes/<name>/round<N>.{faiss,json}`; recall@1 (None for Flat) in its metadata."""
    layout = RunLayout.of(config)
    model_path = layout.model(round_index)
    if not model_path.is_file():
        raise InputError(f"{model_path}: no model for round {round_index} (run `cisctool train` first)")
    model, _ = load_inference_model(model_path, expected=config)
    prototypes = labeled_prototypes(config, model, device)
    requested = factory or config.index.factory
    factory = auto_factory(len(prototypes.vectors)) if requested == "auto" else requested
    prototype_index = build_index(
        prototypes.vectors, prototypes.rows, prototypes.classes, prototypes.areas,
        prototypes.image_ids, factory, use_gpu=resolve_use_gpu(config.index.use_gpu),
    )  # fmt: skip
    if factory == "Flat":
        recall = None
    elif requested == "auto":
        recall = tune_nprobe(prototype_index, prototypes.vectors)
    else:
        recall = recall_at_1(prototype_index, prototypes.vectors)
    prototype_index.metadata.update(
        round=round_index,
        checkpoint=str(model_path),
        checkpoint_sha256=sha256_file(model_path),
        config_hash=config_hash(config),
        num_classes=config.data.num_classes,
        class_names=list(config.class_names),
        min_area=config.index.min_area,
        recall_at_1=recall,
    )
    save_index(prototype_index, *layout.index_files(round_index))
    return prototype_index


def open_round_index(config: Config, round_index: int) -> tuple[PrototypeIndex, bool]:
    """Load round N's index; the bool says whether it is stale (its model changed since)."""
    layout = RunLayout.of(config)
    prototype_index = load_index(*layout.index_files(round_index))
    model_path = layout.model(round_index)
    stale = not model_path.is_file() or sha256_file(model_path) != prototype_index.metadata.get(
        "checkpoint_sha256"
    )
    return prototype_index, stale


def current_round_index(config: Config, round_index: int) -> PrototypeIndex | None:
    """Round N's saved index when it exists, is not stale and holds the config's `staleness.INDEX` keys
    (factory, min_area); None when it must be (re)built."""
    try:
        prototype_index, stale = open_round_index(config, round_index)
    except InputError:
        return None
    meta = prototype_index.metadata
    same = all(meta.get(key) == value for key, value in index_settings(config).items())
    return prototype_index if same and not stale else None


def ensure_round_index(config: Config, round_index: int, device: str) -> PrototypeIndex:
    """The current index of round N, built first when missing, stale or made with other settings."""
    return current_round_index(config, round_index) or build_round_index(config, round_index, device)


@torch.inference_mode()
def query_image(
    config: Config, round_index: int, image_path: Path, k: int, device: str
) -> tuple[list[GuideHit], np.ndarray, np.ndarray]:
    """Predict an image, pool its predicted classes, and retrieve top-k guides per present class.

    Returns the hits, the image H×W×3 and its prediction H×W.
    """
    prototype_index, stale = open_round_index(config, round_index)
    index_path = RunLayout.of(config).index_files(round_index)[0]
    if stale:
        raise InputError(f"{index_path}: stale (round {round_index}'s model changed); rebuild it")
    model, _ = load_inference_model(RunLayout.of(config).model(round_index), expected=config)
    image = read_image(image_path)
    output = model.eval().to(device)(normalize(image)[None].to(device))
    prediction = output.logits.argmax(dim=1)
    num_classes, ignore = config.data.num_classes, config.data.ignore_index
    prototypes, _ = class_prototypes(output.features, prediction, num_classes, ignore)
    areas = class_areas(prediction, num_classes, ignore)[0]
    present = torch.nonzero(present_classes(areas, config.index.min_area)).flatten().cpu().numpy()
    scores, ids = search_by_class(
        prototype_index, prototypes[0, present].cpu().numpy(), present, k
    )
    hits = [
        GuideHit(int(cls), float(areas[cls]), rank, int(prototype_index.rows[ids[slot, rank]]),
                 prototype_index.image_ids[prototype_index.rows[ids[slot, rank]]], float(scores[slot, rank]))
        for slot, cls in enumerate(present) for rank in range(k) if ids[slot, rank] >= 0
    ]  # fmt: skip
    return hits, image, prediction[0].cpu().numpy().astype(np.uint8)


def save_guide_picture(
    config: Config, hits: list[GuideHit], image: np.ndarray, prediction: np.ndarray, path: Path
) -> None:
    """PNG: the image, its prediction, and each class's top guide with that class highlighted."""
    entries = split_entries(config, "labeled")
    panels = [image, colorize(prediction)]
    for hit in (hit for hit in hits if hit.rank == 0):
        guide_image, guide_mask = load_pair(entries[hit.row], config.data.num_classes, config.data.ignore_index)
        panels.append(blend(guide_image, guide_mask, highlight=hit.cls))
    save_panels(path, panels)
