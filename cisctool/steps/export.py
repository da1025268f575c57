"""`cisctool export`: a round's pseudo labels as palette PNGs, or as tasks for an annotation tool.

The PNGs are what ST++ and UniMatch read as pseudo masks: `<id>.png`, palette
index = class, 255 = ignore (dropped pixels). With `overlay`, `overlay/<id>.png`
shows the image, the image blended with the rectified label, the raw label,
the CISC map S_ŷ (grey where the class had no guide) and the loss weight.
`labelstudio` and `cvat` write one file a person can correct the labels in
(`labelstudio.py`, `cvat.py`), in review order: highest review score first
(the expected number of wrong pixels, `report/review.py`); `worst` keeps the
first K of that queue.
"""

import json
import os
from pathlib import Path

from cisctool.config import Config
from cisctool.console import progress_bar
from cisctool.data.cvat import write_zip
from cisctool.data.labelstudio import labeling_config, prediction_task
from cisctool.data.masks import read_image, write_mask
from cisctool.data.splits import SplitEntry, split_entries
from cisctool.errors import InputError
from cisctool.method.review import review_order
from cisctool.report.pictures import class_colours, save_overlay
from cisctool.report.review import review_queue, review_scores
from cisctool.store.atomic import atomic_write, atomic_write_text
from cisctool.store.layout import RunLayout
from cisctool.store.pseudo_labels import PseudoLabels


def review_rows(stored: PseudoLabels, worst: int | None, ignore_index: int) -> list[int]:
    """The images to export as PNGs: the first `worst` of the review queue, or all in split order."""
    return review_queue(stored, ignore_index, worst) if worst else list(range(len(stored)))


def unlabeled_entries(config: Config, stored: PseudoLabels) -> dict[str, SplitEntry]:
    """The unlabeled split by image id; every image of the pseudo-label file must be in it."""
    entries = split_entries(config, "unlabeled")
    by_id = {entry.id: entry for entry in entries}
    missing = [image_id for image_id in stored.ids if image_id not in by_id]
    if missing:
        raise InputError(
            f"{stored.path}: image {missing[0]!r} is not in the unlabeled split {config.data.unlabeled}; "
            "the file belongs to another config"
        )
    return by_id


def export_pseudo_labels(
    config: Config, round_index: int, file_format: str, out: Path, *, overlay: bool = False,
    limit: int | None = None, worst: int | None = None,
) -> int:  # fmt: skip
    """Round N's pseudo labels as PNGs in the folder `out`, or as one Label Studio / CVAT file `out`;
    returns the image count. `overlay` and `limit` apply to PNGs."""
    if out.is_dir() != (file_format == "png") and out.exists():
        raise InputError(f"{out}: is a {'folder' if out.is_dir() else 'file'}; --format {file_format} writes "
                         f"{'a folder of masks' if file_format == 'png' else 'one file'}")  # fmt: skip
    if file_format == "png":
        return export_round(config, round_index, out, overlay=overlay, limit=limit, worst=worst)
    return export_for_review(config, round_index, file_format, out, worst)


def export_round(
    config: Config, round_index: int, out: Path, *, overlay: bool = False, limit: int | None = None,
    worst: int | None = None,
) -> int:  # fmt: skip
    """Write the PNGs for round N's pseudo labels (the first `worst` of the review queue, then the first
    `limit`, when given); returns the count."""
    with PseudoLabels(RunLayout.of(config).pseudo(round_index)) as stored:
        entries = unlabeled_entries(config, stored)
        rows = review_rows(stored, worst, config.data.ignore_index)[:limit]
        out.mkdir(parents=True, exist_ok=True)
        with progress_bar() as bar:
            task = bar.add_task(f"export round {round_index}", total=len(rows))
            for index in rows:
                image_id = stored.ids[index]
                label = stored.pixels("label", index)
                atomic_write(out / f"{image_id}.png", lambda tmp: write_mask(tmp, label, fmt="PNG"))
                if overlay:
                    save_overlay(stored, index, read_image(entries[image_id].image), out / "overlay" / f"{image_id}.png")
                bar.advance(task)
    return len(rows)


def export_for_review(
    config: Config, round_index: int, file_format: str, out: Path, worst: int | None = None
) -> int:
    """Round N's pseudo labels as a Label Studio tasks JSON (with its labeling config beside it,
    `<stem>.label_config.xml`) or a CVAT Segmentation mask 1.1 zip, highest review score first (the first
    `worst` only, when given); returns the image count."""
    class_names = list(config.class_names)
    with PseudoLabels(RunLayout.of(config).pseudo(round_index)) as stored, progress_bar() as bar:
        entries = unlabeled_entries(config, stored)
        scores = review_scores(stored, config.data.ignore_index)
        description = f"export round {round_index} to {file_format}"
        rows = bar.track(review_order(scores)[:worst].tolist(), description=description)
        items = ((index, stored.ids[index], stored.pixels("label", index)) for index in rows)
        if file_format == "cvat":
            labels = ((image_id, label) for _, image_id, label in items)
            return write_zip(out, labels, class_names, config.data.ignore_index)
        tasks = [
            prediction_task(
                image_id, _relative(entries[image_id].image, config), label, float(scores[index]),
                float(stored.reliability[index]), class_names, round_index,
            )
            for index, image_id, label in items
        ]
    atomic_write_text(out, json.dumps(tasks) + "\n")
    atomic_write_text(label_config_path(out), labeling_config(class_names, class_colours(len(class_names))))
    return len(tasks)


def _relative(path: Path, config: Config) -> str:
    return Path(os.path.relpath(path, config.data_root)).as_posix()


def label_config_path(tasks_path: Path) -> Path:
    """Where the Label Studio labeling config goes, beside the tasks file."""
    return tasks_path.with_name(tasks_path.stem + ".label_config.xml")


