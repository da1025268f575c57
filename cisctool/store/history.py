"""What a run folder says about each of its rounds, read back for the HTML report.

Everything comes from files the other commands already write: `metrics.json`
(steps, loss, val scores), `pseudo_quality.json` (the pseudo-label report) and
`train.log` (the losses every `train.log_every` steps). A missing or unreadable
file leaves its part empty: a report of a run still in progress shows what exists.
"""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cisctool.store.layout import RunLayout

# "step 20/600 loss 1.2345 ce 1.0000 consistency 0.2345 pseudo 0.0000 lr 1.000e-02", as train.py writes it
LOG_LINE = re.compile(r"^step (\d+)/\d+ loss (\S+)((?: [a-z_]+ \S+)*?) lr \S+$")
PSEUDO_LINE = re.compile(r"^pseudo-labeled images: (\d+) of (\d+)")


@dataclass
class RoundHistory:
    """One round's recorded results (missing parts empty)."""

    round_index: int
    metrics: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, Any] = field(default_factory=dict)
    losses: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # name → [(step, value)]
    pseudo_images: tuple[int, int] | None = None  # rounds ≥ 1: (trained on, in the file)
    has_pseudo: bool = False

    @property
    def val(self) -> dict[str, Any]:
        return self.metrics.get("val") or {}


def read_history(layout: RunLayout) -> list[RoundHistory]:
    """Rounds 0, 1, … for as long as their folders exist."""
    rounds = []
    while layout.round_dir(len(rounds)).is_dir():
        index = len(rounds)
        rounds.append(
            RoundHistory(
                index,
                metrics=read_json(layout.metrics(index)),
                quality=read_json(layout.pseudo_quality(index)),
                losses=read_losses(layout.train_log(index)),
                pseudo_images=_pseudo_images(layout.train_log(index)),
                has_pseudo=layout.pseudo(index).is_file(),
            )
        )
    return rounds


def read_losses(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Loss curves from a train.log: `loss` (the total) and each named part, by step.

    A resumed run appends to the log and repeats the steps after its last
    checkpoint; the later line of a step wins, as its values made the model.
    """
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    by_step: dict[int, dict[str, float]] = {}
    for line in lines:
        match = LOG_LINE.match(line)
        if match is None:
            continue
        parts = match.group(3).split()
        values = {"loss": float(match.group(2))}
        values.update((name, float(value)) for name, value in zip(parts[::2], parts[1::2]))
        by_step[int(match.group(1))] = values
    curves: dict[str, list[tuple[int, float]]] = {}
    for step in sorted(by_step):
        for name, value in by_step[step].items():
            curves.setdefault(name, []).append((step, value))
    return curves


def _pseudo_images(path: Path) -> tuple[int, int] | None:
    """(trained on, in the file) from the first line train.log writes in rounds ≥ 1."""
    try:
        with open(path) as log:
            match = PSEUDO_LINE.match(log.readline())
    except OSError:
        return None
    return (int(match.group(1)), int(match.group(2))) if match else None


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file a step wrote (metrics, a quality report); {} while it is missing or unreadable, as in a
    run still in progress."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
