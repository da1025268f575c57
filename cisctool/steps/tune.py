"""`cisctool tune`: choose relabel/drop thresholds by cross-fitting on the labeled images.

The round's own model has seen every labeled image and is near-perfect on
them, so its errors there say nothing about its errors on unlabeled images.
Instead the labeled split is cut into K folds; for each fold a model is
trained on the other K−1 folds (same settings as round 0), an index is built
from those K−1 folds with it, and the held-out fold is pseudo-labelled as if
unlabeled. Every threshold setting is applied to the same held-out signals
and scored against the ground truth, so the choice never touches the
unlabeled masks a quality report is computed on.

Score: mIoU where a dropped pixel counts as missed (a false negative of its
true class, never a false positive), so dropping a wrong pixel helps and
dropping a right one hurts. A family (relabel, drop) is recommended only when
its best setting beats leaving the labels as predicted by MIN_GAIN.
"""

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cisctool.config import Config, with_overrides
from cisctool.console import RateColumn, progress_bar
from cisctool.data.splits import SplitEntry, split_entries
from cisctool.errors import InputError
from cisctool.method.signals import cropped_images, fixed_batches, host_arrays, rectified_labels
from cisctool.report.quality import QualityAccumulator
from cisctool.report.quality_signals import SIGNALS, report_signals
from cisctool.steps.index import ensure_round_index
from cisctool.steps.signal_stream import class_calibration, guided_model, signal_stream
from cisctool.steps.train import train_round
from cisctool.store.atomic import atomic_write_json, atomic_write_text
from cisctool.store.layout import RunLayout

MARGINS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5)
P_MINS = (0.1, 0.2, 0.3)
CISC_MINS = (-1.0, 0.2, 0.3, 0.4, 0.5, 0.6)
CONF_MINS = (0.0, 0.5, 0.7, 0.9)
OFF = {"margin": math.inf, "p_min": 0.2, "cisc_min": -1.0, "conf_min": 0.0}
MIN_GAIN = 0.005  # half a mIoU point: smaller gains are within seed noise on small label sets


def threshold_grid() -> list[dict[str, float]]:
    """Leave-as-is, then relabel settings (drop off), then drop settings (relabel off)."""
    relabel = [{**OFF, "margin": margin, "p_min": p_min} for margin in MARGINS for p_min in P_MINS]
    drop = [
        {**OFF, "cisc_min": cisc_min, "conf_min": conf_min}
        for cisc_min in CISC_MINS for conf_min in CONF_MINS if (cisc_min, conf_min) != (-1.0, 0.0)
    ]  # fmt: skip
    return [dict(OFF), *relabel, *drop]


def family(setting: dict[str, float]) -> str:
    if not math.isinf(setting["margin"]):
        return "relabel"
    if setting["cisc_min"] > -1.0 or setting["conf_min"] > 0.0:
        return "drop"
    return "none"


def miou_dropped_as_missed(matrix: np.ndarray) -> float:
    """C×(C+1) counts (rows truth, last column dropped) → mIoU over classes that occur."""
    true_positive = np.diag(matrix[:, :-1]).astype(np.float64)
    union = matrix.sum(axis=1) + matrix[:, :-1].sum(axis=0) - true_positive
    occurring = union > 0
    return float((true_positive[occurring] / union[occurring]).mean()) if occurring.any() else math.nan


def fold_entries(entries: list[SplitEntry], folds: int, seed: int) -> list[list[int]]:
    """K disjoint folds of the labeled rows, shuffled by seed."""
    order = np.random.default_rng(seed).permutation(len(entries))
    return [sorted(order[fold::folds].tolist()) for fold in range(folds)]


@dataclass
class TuneOutcome:
    """Scores of every threshold setting on the held-out folds, and what is recommended."""

    results: list[dict[str, Any]]
    recommended: dict[str, float]
    signals: dict[str, Any]
    seconds: float
    path: Path


def tune_thresholds(config: Config, device: str, folds: int = 3, max_steps: int | None = None) -> TuneOutcome:
    """Cross-fit K models, score the threshold grid on their held-out folds, write tune.json."""
    entries = split_entries(config, "labeled")
    if folds < 2 or folds > len(entries):
        raise InputError(f"--folds {folds}: need 2 ≤ K ≤ {len(entries)} (the labeled images)")
    started = time.perf_counter()
    layout = RunLayout.of(config)
    grid = threshold_grid()
    num_classes, ignore = config.data.num_classes, config.data.ignore_index
    matrices = np.zeros((len(grid), num_classes, num_classes + 1), dtype=np.int64)
    changed = np.zeros(len(grid), dtype=np.int64)  # scored pixels whose label differs from the raw one
    quality = QualityAccumulator(list(config.class_names), ignore, SIGNALS)
    for fold, held_out in enumerate(fold_entries(entries, folds, config.train.seed)):
        fold_config = _fold_config(config, layout, fold, entries, held_out, max_steps)
        train_round(fold_config, device=device, resume=True)
        prototype_index = ensure_round_index(fold_config, 0, device)
        model, source = guided_model(fold_config, RunLayout.of(fold_config).model(0), prototype_index, device)
        calibration = class_calibration(fold_config, model, source, device)
        held_entries = [entries[row] for row in held_out]
        batches = fixed_batches(len(held_entries), config.rectify.batch_size)
        stream = signal_stream(fold_config, model, source, held_entries, batches, device, with_masks=True)
        with progress_bar(RateColumn("img")) as bar, torch.inference_mode():
            task = bar.add_task(f"fold {fold + 1}/{folds}: score thresholds", total=len(held_entries))
            for batch, signals in stream:
                truth = batch["mask"].to(signals.raw_label.device)
                valid = truth != ignore
                for slot, setting in enumerate(grid):
                    label = rectified_labels(signals, ignore_index=ignore, **setting)
                    predicted = torch.where(label == ignore, num_classes, label)
                    codes = truth[valid] * (num_classes + 1) + predicted[valid]
                    counts = torch.bincount(codes, minlength=num_classes * (num_classes + 1))
                    matrices[slot] += counts.view(num_classes, num_classes + 1).cpu().numpy()
                    changed[slot] += int((label != signals.raw_label)[valid].sum())
                arrays = host_arrays(signals, signals.raw_label)
                host = (batch["index"].numpy(), batch["sizes"].numpy(), arrays, batch["mask"].numpy())
                for _, crop, mask in cropped_images(*host, with_masks=True):
                    quality.add(crop["raw_label"], crop["raw_label"], crop[f"weight_{config.rectify.weight_mode}"],
                                float(crop["reliability"]), report_signals(crop, calibration), mask)  # fmt: skip
                bar.advance(task, len(batch["index"]))
    scored = max(int(matrices[0].sum()), 1)
    results = [
        {**setting, "family": family(setting), "miou": miou_dropped_as_missed(matrix),
         "changed": float(count) / scored}
        for setting, matrix, count in zip(grid, matrices, changed, strict=True)
    ]  # fmt: skip
    recommended = _recommend(results)
    report = quality.report()
    outcome = TuneOutcome(results, recommended, report, time.perf_counter() - started, layout.run_dir / "tune.json")
    atomic_write_json(
        outcome.path,
        {"folds": folds, "images": len(entries), "recommended": _json_setting(recommended),
         "results": [_json_setting(result) for result in results], "signals": report,
         "seconds": outcome.seconds},
    )  # fmt: skip
    return outcome


def _fold_config(
    config: Config, layout: RunLayout, fold: int, entries: list[SplitEntry], held_out: list[int], max_steps: int | None
) -> Config:
    """The config of fold k: trains on the other folds, under runs/<name>/tune-fold<k>/."""
    name = f"{config.name}/tune-fold{fold}"
    fold_dir = layout.run_dir / f"tune-fold{fold}"
    held = set(held_out)
    train_split = fold_dir / "labeled.txt"
    held_split = fold_dir / "held_out.txt"
    lines = {row: f"{entries[row].image.resolve()} {entries[row].mask.resolve()}" for row in range(len(entries))}
    atomic_write_text(train_split, "\n".join(lines[row] for row in range(len(entries)) if row not in held) + "\n")
    atomic_write_text(held_split, "\n".join(lines[row] for row in held_out) + "\n")
    overrides: dict[str, Any] = {
        "name": name, "data.labeled": str(train_split.resolve()), "data.unlabeled": str(held_split.resolve()),
        "data.val": "",
    }  # fmt: skip
    if max_steps is not None:
        overrides["train.max_steps"] = max_steps
    return with_overrides(config, overrides)


def _recommend(results: list[dict[str, Any]]) -> dict[str, float]:
    """Best setting of each family that beats leaving labels as predicted by MIN_GAIN, combined."""
    baseline = results[0]["miou"]
    chosen = dict(OFF)
    for name in ("relabel", "drop"):
        candidates = [result for result in results if result["family"] == name]
        best = max(candidates, key=lambda result: result["miou"])
        if best["miou"] >= baseline + MIN_GAIN:
            keys = ("margin", "p_min") if name == "relabel" else ("cisc_min", "conf_min")
            chosen.update({key: best[key] for key in keys})
    return chosen


def _json_setting(setting: dict[str, Any]) -> dict[str, Any]:
    """inf is not JSON: an unset margin is written as null."""
    return {key: (None if isinstance(value, float) and math.isinf(value) else value) for key, value in setting.items()}
