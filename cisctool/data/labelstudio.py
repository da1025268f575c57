"""Label Studio: pseudo labels out as brush predictions, people's corrected brush masks back in.

A brush mask in Label Studio is the run-length code of its H×W×4 RGBA canvas,
flattened row-major (the `rle` value; the algorithm of thi.ng's rle-pack, as
Label Studio's converter library documents it): a 32-bit value count, 5 bits
of word size − 1, four 4-bit sizes − 1 of the run-length fields, then runs. A
run starts with one bit: 1 = a repeat (2 bits choosing the length field, the
length − 1, one word), 0 = literal words (the same length header, then that
many words). A painted pixel has alpha 255; cisctool paints all four channels.

Exported tasks carry the image's id (`data.cisctool_id`), a local-files URL
relative to `data.root`, the image's review score (`data.review_score`,
Σ(1 − confidence)²; higher = look sooner) and the paper's
reliability (`data.reliability`; lower = more reliable), and one prediction per image: one brush
result per class, `score` = the review score, `model_version` = the round.
Tasks come in review order, so Label Studio's task ids follow it too. The
labeling config they need is written beside them.

An export read back must be finished: every task it holds has a submitted
annotation (Label Studio's default export holds only those).
"""

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, unquote
from xml.sax.saxutils import quoteattr

import numpy as np

from cisctool.errors import InputError

FROM_NAME, TO_NAME = "label", "image"
WORD_BITS = 8
LENGTH_FIELDS = (3, 4, 8, 16)  # bits of a run's length − 1, chosen per run by a 2-bit index
LONGEST_RUN = 1 << LENGTH_FIELDS[-1]
CHANNELS = 4
LOCAL_FILES = "/data/local-files/?d="  # Label Studio's URL for files under its local-files document root


def rle_encode(painted: np.ndarray) -> list[int]:
    """H×W bool → Label Studio's RLE bytes of the RGBA canvas (painted pixels 255 in every channel)."""
    flat = painted.ravel().astype(bool)
    starts = np.flatnonzero(np.concatenate([[True], flat[1:] != flat[:-1]]))
    lengths = np.diff(np.concatenate([starts, [flat.size]])) * CHANNELS
    header = f"{flat.size * CHANNELS:032b}{WORD_BITS - 1:05b}" + "".join(
        f"{size - 1:04b}" for size in LENGTH_FIELDS
    )
    runs = [header]
    for start, length in zip(starts.tolist(), lengths.tolist()):
        word = f"{255 if flat[start] else 0:08b}"
        while length > 0:
            chunk = min(length, LONGEST_RUN)
            field = next(slot for slot, bits in enumerate(LENGTH_FIELDS) if chunk - 1 < 1 << bits)
            runs.append(f"1{field:02b}{chunk - 1:0{LENGTH_FIELDS[field]}b}{word}")
            length -= chunk
    bits = "".join(runs)
    bits += "0" * (-len(bits) % 8)
    return np.packbits(np.frombuffer(bits.encode(), dtype=np.uint8) - ord("0")).tolist()


def rle_decode(rle: Sequence[int], height: int, width: int) -> np.ndarray:
    """Label Studio RLE → H×W bool of the pixels whose alpha is ≥ 128; ValueError if it does not fit."""
    bits = (np.unpackbits(np.asarray(rle, dtype=np.uint8)) + ord("0")).tobytes().decode()
    position = 0

    def read(count: int) -> int:
        nonlocal position
        if position + count > len(bits):
            raise ValueError("RLE ends early")
        value = int(bits[position : position + count], 2)
        position += count
        return value

    total = read(32)
    if total != height * width * CHANNELS:
        raise ValueError(f"RLE holds {total} values, not {height}×{width}×{CHANNELS}")
    word_bits = read(5) + 1
    fields = [read(4) + 1 for _ in range(4)]
    values = np.zeros(total, dtype=np.uint8)
    index = 0
    while index < total:
        repeat = read(1)
        end = min(index + 1 + read(fields[read(2)]), total)
        if repeat:
            values[index:end] = read(word_bits)
        else:
            values[index:end] = [read(word_bits) for _ in range(end - index)]
        index = end
    return values.reshape(height, width, CHANNELS)[:, :, 3] >= 128


def labeling_config(class_names: Sequence[str], colours: Sequence[str]) -> str:
    """The project's labeling config: the image and one brush label per class, in the label colours."""
    labels = "\n".join(
        f"    <Label value={quoteattr(name)} background={quoteattr(colour)}/>"
        for name, colour in zip(class_names, colours)
    )
    return (
        f'<View>\n  <Image name="{TO_NAME}" value="$image" zoom="true"/>\n'
        f'  <BrushLabels name="{FROM_NAME}" toName="{TO_NAME}">\n{labels}\n  </BrushLabels>\n</View>\n'
    )


def prediction_task(
    image_id: str,
    image_path: str,
    label: np.ndarray,
    review_score: float,
    reliability: float,
    class_names: Sequence[str],
    round_index: int,
) -> dict[str, Any]:
    """One task: the image (path relative to data.root) with its H×W pseudo label as brush predictions."""
    height, width = label.shape
    results = [
        {
            "id": f"c{cls}",
            "type": "brushlabels",
            "from_name": FROM_NAME,
            "to_name": TO_NAME,
            "original_width": width,
            "original_height": height,
            "image_rotation": 0,
            "value": {"format": "rle", "rle": rle_encode(label == cls), "brushlabels": [class_names[cls]]},
        }
        for cls in np.unique(label).tolist()
        if cls < len(class_names)
    ]
    score = round(float(review_score), 3)
    data = {
        "image": LOCAL_FILES + quote(image_path),
        "cisctool_id": image_id,
        "review_score": score,
        "reliability": None if math.isnan(reliability) else round(float(reliability), 6),
    }
    return {
        "data": data,
        "predictions": [{"model_version": f"round {round_index}", "score": score, "result": results}],
    }


def read_annotations(path: Path, class_names: Sequence[str], ignore_index: int) -> dict[str, np.ndarray]:
    """Image id → H×W class indices from a Label Studio JSON export (the latest kept annotation of each
    task; unpainted pixels = ignore). A task without a submitted annotation is an error: the review
    is unfinished, and a half-read export would pass for a whole one."""
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: not a readable JSON file ({error})") from None
    if not isinstance(tasks, list) or not all(
        isinstance(task, dict) and isinstance(task.get("data"), dict) for task in tasks
    ):
        raise InputError(f"{path}: not a Label Studio JSON export (expected a list of tasks with `data`)")
    classes = {name: index for index, name in enumerate(class_names)}
    masks: dict[str, np.ndarray] = {}
    unfinished = [
        (task.get("id", number), _image_id(task["data"]))
        for number, task in enumerate(tasks, start=1)
        if not _kept(task)
    ]
    if unfinished:
        number, image_id = unfinished[0]
        raise InputError(
            f"{path}: {len(unfinished)} of {len(tasks)} tasks have no submitted annotation "
            f"(first: task {number}, {image_id}); submit them in Label Studio, or export only annotated tasks"
        )
    for number, task in enumerate(tasks, start=1):
        kept = _kept(task)
        image_id = _image_id(task["data"])
        where = f"{path}: task {task.get('id', number)} ({image_id})"
        if image_id in masks:
            raise InputError(f"{where}: image annotated in two tasks")
        masks[image_id] = _task_mask(kept[-1].get("result") or [], classes, ignore_index, where)
    if not masks:
        raise InputError(f"{path}: no annotated task (export from Label Studio after review)")
    return masks


def _kept(task: dict[str, Any]) -> list[dict[str, Any]]:
    """The task's submitted annotations (skipped ones, `was_cancelled`, do not count)."""
    annotations = task.get("annotations") or []
    return [item for item in annotations if isinstance(item, dict) and not item.get("was_cancelled")]


def _image_id(data: dict[str, Any]) -> str:
    """The id `prediction_task` stored, else the image file's stem."""
    if data.get("cisctool_id"):
        return str(data["cisctool_id"])
    return PurePosixPath(unquote(str(data.get(TO_NAME, ""))).rsplit("=", 1)[-1]).stem


def _task_mask(
    results: Iterable[dict[str, Any]], classes: dict[str, int], ignore_index: int, where: str
) -> np.ndarray:
    """Paint each brush result's class in order (later strokes win); no brush result → error."""
    mask = None
    for result in results:
        if str(result.get("type", "")).lower() != "brushlabels":
            raise InputError(
                f"{where}: result of type {result.get('type')!r}; expected brush masks (brushlabels)"
            )
        value = result.get("value") or {}
        names = value.get("brushlabels") or []
        unknown = [name for name in names if name not in classes]
        if unknown or len(names) != 1:
            problem = (
                f"unknown class name {unknown[0]!r}" if unknown else f"{len(names)} labels on one brush mask"
            )
            raise InputError(f"{where}: {problem} (classes: {', '.join(classes)})")
        try:
            height, width = int(result["original_height"]), int(result["original_width"])
            painted = rle_decode(value["rle"], height, width)
        except (KeyError, TypeError, ValueError, OverflowError) as error:
            raise InputError(f"{where}: unreadable brush mask ({type(error).__name__}: {error})") from None
        if mask is None:
            mask = np.full((height, width), ignore_index, dtype=np.uint8)
        if mask.shape != painted.shape:
            raise InputError(
                f"{where}: brush masks of sizes {mask.shape[1]}×{mask.shape[0]} and {width}×{height}"
            )
        mask[painted] = classes[names[0]]
    if mask is None:
        raise InputError(f"{where}: annotation holds no brush mask")
    return mask
