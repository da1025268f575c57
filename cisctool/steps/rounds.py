"""`cisctool run --rounds R`: every step of every round in order, skipping what is done.

train 0 → index 0 → rectify 1 → train 1 → index 1 → rectify 2 → train 2 …

A step is skipped when its outputs exist and were made from the current
settings and inputs: a training whose last.pt is complete with the same
signature (settings + pseudo-label file), an index whose checkpoint hash,
factory and min_area match, a pseudo.h5 whose model, index and settings
hashes match. A step left unfinished (killed) is resumed; a step whose
outputs came from other settings is redone from scratch.
"""

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cisctool.config import Config
from cisctool.console import console, warn
from cisctool.errors import InputError
from cisctool.report.confusion import collapse_message
from cisctool.steps.index import build_round_index, current_round_index
from cisctool.staleness import PSEUDO_CURRENT_ATTRS
from cisctool.steps.rectify import pseudo_file_attributes, rectify_round
from cisctool.steps.train import train_and_evaluate, training_status
from cisctool.store.history import read_json
from cisctool.store.layout import RunLayout
from cisctool.store.pseudo_labels import PseudoLabels, partial_path


@dataclass
class RoundRow:
    """One round's line of the summary table (mIoUs in [0, 1], NaN = not measured)."""

    round_index: int
    raw_miou: float = math.nan
    rectified_miou: float = math.nan
    val_miou: float = math.nan
    collapsed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def run_rounds(config: Config, rounds: int, device: str) -> list[RoundRow]:
    """Rounds 0…R; returns one row per round."""
    layout = RunLayout.of(config)
    rows = []
    for round_index in range(rounds + 1):
        row = RoundRow(round_index)
        started = time.perf_counter()
        if round_index > 0:
            if config.rectify.enabled:
                _step(row, f"index {round_index - 1}", lambda: build_round_index(config, round_index - 1, device),
                      done=current_round_index(config, round_index - 1) is not None)  # fmt: skip
            _step(row, f"rectify {round_index}", lambda: _rectify(config, round_index, device),
                  done=_pseudo_current(config, round_index))  # fmt: skip
            quality = read_json(layout.pseudo_quality(round_index))
            row.raw_miou = quality.get("raw_miou", math.nan)
            row.rectified_miou = quality.get("rectified_miou", math.nan)
        status = training_status(config, round_index)
        _step(row, f"train {round_index}", lambda: train_and_evaluate(config, device, round_index, resume=status == "partial"),
              done=status == "finished")  # fmt: skip
        val = read_json(layout.metrics(round_index)).get("val") or {}
        row.val_miou = val.get("mean_iou", math.nan)
        row.collapsed = val.get("collapsed_classes", [])
        row.seconds = time.perf_counter() - started
        rows.append(row)
        if row.collapsed and round_index < rounds:
            warn(collapse_message(row.collapsed, f"round {round_index}'s model"))
    return rows


def _step(row: RoundRow, name: str, action: Any, *, done: bool) -> None:
    if done:
        row.skipped.append(name)
        console.print(f"[dim]{name}: up to date, skipped")
        return
    console.print(f"[bold]{name}")
    action()
    row.ran.append(name)


def _pseudo_current(config: Config, round_index: int) -> bool:
    """pseudo.h5 exists, is whole, and came from the current model, index and settings."""
    layout = RunLayout.of(config)
    path = layout.pseudo(round_index)
    if not path.is_file() or not layout.pseudo_quality(round_index).is_file():
        return False
    return _made_from_current_inputs(path, config, round_index, require_complete=True)


def _made_from_current_inputs(path: Path, config: Config, round_index: int, *, require_complete: bool) -> bool:
    """A readable pseudo file (whole, or unfinished) whose model, index and settings hashes are the current ones."""
    try:
        with PseudoLabels(path, require_complete=require_complete) as stored:
            expected = pseudo_file_attributes(config, round_index)
            return all(stored.attrs.get(key) == expected[key] for key in PSEUDO_CURRENT_ATTRS)
    except InputError:
        return False


def _rectify(config: Config, round_index: int, device: str) -> None:
    """Resume an unfinished file of the same inputs; otherwise start it over."""
    path = RunLayout.of(config).pseudo(round_index)
    unfinished = partial_path(path)
    resume = unfinished.exists() and _made_from_current_inputs(unfinished, config, round_index, require_complete=False)
    rectify_round(config, round_index, device, resume=resume, force=True)
