"""`cisctool report`: one static HTML folder that tells a run's story and shows its doubtful pseudo labels.

The folder (`index.html`, `plots/`, `gallery/`) opens from disk in any browser:
no server, no script, nothing fetched from the network. It holds the table of
every round, per-class IoU bars, the loss curves from `train.log`, the ROC
curves of the per-pixel signals and the reliability histogram of one round's
pseudo labels, how well the review order finds their wrong pixels (against
random and oracle order, where the unlabeled images have masks; else the
estimated wrong pixels, calibrated on val), and a gallery of the images to
review first, as `export --overlay` draws them, in the order `export --worst`
sends them (`report/review.py`). The gallery is capped (`gallery` images) so
that the report stays a few seconds' work on any split size.
The folder is built under a temporary name and swapped into place whole.
"""

import math
import os
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from cisctool import __version__
from cisctool.config import Config, to_toml
from cisctool.console import progress_bar
from cisctool.data.masks import read_image, read_mask
from cisctool.errors import InputError
from cisctool.method.review import images_at, review_order
from cisctool.report.numbers import percent_text
from cisctool.report.pictures import class_colours, save_overlay
from cisctool.report.plots import (
    iou_bars,
    loss_curves,
    reliability_histogram,
    review_efficiency_curve,
    roc_curves,
)
from cisctool.report.review import measure_efficiency, review_scores, true_wrong_pixels
from cisctool.report.review_calibration import val_calibration
from cisctool.steps.export import unlabeled_entries
from cisctool.store.history import RoundHistory, read_history
from cisctool.store.layout import RunLayout
from cisctool.store.pseudo_labels import PseudoLabels

GENERATOR = "cisctool report"  # the <meta name="generator"> that marks a folder this command may replace
TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("cisctool.report", "templates"), autoescape=True, undefined=jinja2.StrictUndefined
)


@dataclass
class ReportOutcome:
    """Where the report went, which round's pseudo labels it shows, and how long it took."""

    path: Path
    pseudo_round: int | None
    gallery: int
    seconds: float


def write_report(
    config: Config, round_index: int | None = None, out: Path | None = None, gallery: int = 60
) -> ReportOutcome:
    """Write the report of the config's run to `out` (default runs/<name>/report/); returns its index.html.

    `round_index` picks whose pseudo labels the ROC curves, histogram and
    gallery show (default: the latest round that has a pseudo.h5).
    """
    started = time.perf_counter()
    layout = RunLayout.of(config)
    history = read_history(layout)
    if not history:
        raise InputError(f"{layout.round_dir(0)}: no rounds yet; run `cisctool train` (or `run`) first")
    pseudo_round = _pseudo_round(layout, history, round_index)
    out = out if out is not None else layout.run_dir / "report"
    _check_replaceable(out)
    work = out.parent / f".{out.name}.{os.getpid()}.tmp"
    shutil.rmtree(work, ignore_errors=True)
    (work / "plots").mkdir(parents=True)
    try:
        context = _context(config, layout, history, pseudo_round, work, gallery)
        html = TEMPLATES.get_template("report.html").render(**context)
        (work / "index.html").write_text(html, encoding="utf-8")
        _swap_in(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ReportOutcome(
        out / "index.html", pseudo_round, len(context["gallery"]), time.perf_counter() - started
    )


def _pseudo_round(layout: RunLayout, history: list[RoundHistory], round_index: int | None) -> int | None:
    if round_index is None:
        rounds = [item.round_index for item in history if item.has_pseudo]
        return rounds[-1] if rounds else None
    if round_index >= len(history) or not history[round_index].has_pseudo:
        raise InputError(
            f"{layout.pseudo(round_index)}: no pseudo labels for round {round_index} (run `cisctool rectify`)"
        )
    return round_index


def _context(
    config: Config,
    layout: RunLayout,
    history: list[RoundHistory],
    pseudo_round: int | None,
    folder: Path,
    gallery: int,
) -> dict[str, Any]:
    """Everything the template shows; draws the plots and gallery pictures into `folder`."""
    class_names = list(config.class_names)
    iou_bars(history, class_names, folder / "plots/iou.png")
    loss_curves(history, folder / "plots/losses.png")
    plots = {"iou": "plots/iou.png", "losses": "plots/losses.png"}
    items: list[dict[str, Any]] = []
    without_evidence = 0
    review: dict[str, Any] = {}
    if pseudo_round is not None:
        quality = history[pseudo_round].quality
        if quality.get("roc"):
            title = f"pixel signals, round {pseudo_round} pseudo labels"
            roc_curves(quality["roc"], quality.get("auroc", {}), title, folder / "plots/roc.png")
            plots["roc"] = "plots/roc.png"
        with PseudoLabels(layout.pseudo(pseudo_round)) as stored:
            reliability_histogram(
                stored.reliability,
                f"round {pseudo_round}: {len(stored)} images",
                folder / "plots/reliability.png",
            )
            plots["reliability"] = "plots/reliability.png"
            scores = review_scores(stored, config.data.ignore_index)
            review = _review(config, layout, stored, scores, pseudo_round, folder)
            items = _gallery(config, stored, scores, review.get("factor"), folder, gallery)
            without_evidence = int(np.isnan(stored.reliability).sum())
            if "curve" in review:
                plots["review"] = review.pop("curve")
    resolved = layout.resolved_config
    return {
        "generator": GENERATOR,
        "version": __version__,
        "name": config.name,
        "created": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "rounds": [_round_row(item) for item in history],
        "pseudo_round": pseudo_round,
        "plots": plots,
        "gallery": items,
        "gallery_cap": gallery,
        "review": review,
        "without_evidence": without_evidence,
        "classes": list(zip(class_names, class_colours(len(class_names)))),
        "config_text": resolved.read_text() if resolved.is_file() else to_toml(config),
        "config_path": str(resolved),
    }


def _round_row(history: RoundHistory) -> dict[str, str]:
    """One line of the run table, formatted."""
    metrics, quality = history.metrics, history.quality
    median = (quality.get("reliability") or {}).get("quantiles", {}).get("0.50")
    pseudo = history.pseudo_images
    trained_on = f"{pseudo[0]} of {pseudo[1]}" if pseudo else f"— of {quality['images']}" if quality else "—"
    return {
        "round": str(history.round_index),
        "steps": str(metrics.get("steps", "—")),
        "final_loss": _number(metrics.get("final_loss"), 4),
        "val_miou": percent_text(history.val.get("mean_iou")),
        "pseudo_images": trained_on,
        "raw_miou": percent_text(quality.get("raw_miou")),
        "rectified_miou": percent_text(quality.get("rectified_miou")),
        "mean_weight": _number(quality.get("mean_weight"), 3),
        "reliability": _number(median, 3),
        "seconds": _number(metrics.get("train_seconds"), 0),
    }


def _review(
    config: Config,
    layout: RunLayout,
    stored: PseudoLabels,
    scores: np.ndarray,
    pseudo_round: int,
    folder: Path,
) -> dict[str, Any]:
    """With masks for every unlabeled image: the review-efficiency curve and its figures at 10 %.
    Without: the calibration of the review score into wrong pixels, on val."""
    entries = unlabeled_entries(config, stored)
    masks = {image_id: entries[image_id].mask for image_id in stored.ids}
    if all(path is not None for path in masks.values()):
        wrong = true_wrong_pixels(stored, masks, config.data.ignore_index)
        measured = measure_efficiency(scores, wrong)
        title = f"round {pseudo_round}: {len(stored)} images, {measured.wrong_total} wrong pixels"
        review_efficiency_curve(measured.tool, measured.oracle, title, folder / "plots/review.png")
        at = {order: shares["0.10"] for order, shares in measured.at.items()}
        return {
            "curve": "plots/review.png",
            "images_at_10": images_at(0.10, len(stored)),
            "tool_10": at["tool"],
            "random_10": at["random"],
            "oracle_10": at["oracle"],
            "ratio_10": measured.ratio_at_10,
        }
    calibration = val_calibration(config, layout.model(pseudo_round - 1))
    return {
        "factor": calibration.factor,
        "val_images": calibration.images,
        "val_estimated": calibration.estimated,
        "val_wrong": calibration.wrong,
        "estimated_total": calibration.factor * float(scores.sum()),
    }


def _gallery(
    config: Config, stored: PseudoLabels, scores: np.ndarray, factor: float | None, folder: Path, size: int
) -> list[dict[str, Any]]:
    """Overlays and captions of the first `size` images of the review queue (highest review score first);
    `factor` (calibrated on val, when the unlabeled images have no masks) turns a score into estimated
    wrong pixels."""
    entries = unlabeled_entries(config, stored)
    class_names = list(config.class_names)
    ignore = config.data.ignore_index
    order = review_order(scores)[:size]
    items = []
    with progress_bar() as bar:
        task = bar.add_task("report gallery", total=len(order))
        for rank, index in enumerate(order.tolist(), start=1):
            image_id = stored.ids[index]
            entry = entries[image_id]
            picture = f"gallery/{rank:04d}.png"
            save_overlay(stored, index, read_image(entry.image), folder / picture)
            items.append(
                {
                    "rank": rank,
                    "id": image_id,
                    "picture": picture,
                    "score": float(scores[index]),
                    "estimated_wrong": None if factor is None else f"{factor * float(scores[index]):.0f}",
                    **_scores(stored, index, class_names, ignore, entry.mask),
                }
            )
            bar.advance(task)
    return items


def _scores(
    stored: PseudoLabels, index: int, class_names: list[str], ignore: int, mask_path: Path | None
) -> dict[str, Any]:
    """The caption of one gallery image: its classes by share and its scores."""
    label = stored.pixels("label", index)
    cisc = stored.pixels("cisc", index).astype(np.float32)
    counts = np.bincount(label[label != ignore].ravel(), minlength=len(class_names))[: len(class_names)]
    classes = [(class_names[c], 100 * counts[c] / label.size) for c in np.argsort(-counts) if counts[c]]
    reliability = float(stored.reliability[index])
    scores = {
        "reliability": reliability,
        "reliability_text": "no evidence" if np.isnan(reliability) else f"{reliability:.3f}",
        "classes": ", ".join(f"{name} {share:.0f}%" for name, share in classes),
        "mean_weight": f"{float(stored.pixels('weight', index).astype(np.float32).mean()):.3f}",
        "mean_confidence": f"{float(stored.pixels('confidence', index).astype(np.float32).mean()):.3f}",
        "mean_cisc": "—" if np.isnan(cisc).all() else f"{float(np.nanmean(cisc)):.3f}",
        "dropped": f"{100 * float((label == ignore).mean()):.1f}",
        "accuracy": None,
        "wrong": None,
    }
    if mask_path is not None:
        truth = read_mask(mask_path)
        valid = (truth != ignore) & (label != ignore)
        scores["accuracy"] = (
            f"{100 * float((label[valid] == truth[valid]).mean()):.1f}" if valid.any() else "—"
        )
        scores["wrong"] = int((label[valid] != truth[valid]).sum())
    return scores


def _number(value: float | None, digits: int) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _check_replaceable(out: Path) -> None:
    """Refuse to replace anything but an empty folder or an earlier report."""
    if not out.exists():
        return
    index = out / "index.html"
    if out.is_dir() and (
        not any(out.iterdir()) or (index.is_file() and GENERATOR in index.read_text(errors="replace")[:2000])
    ):
        return
    raise InputError(f"{out}: exists and is not a cisctool report; choose another --out")


def _swap_in(work: Path, out: Path) -> None:
    """Rename the finished folder into place; an earlier report is moved aside, then removed."""
    old = out.parent / f".{out.name}.{os.getpid()}.old"
    if out.exists():
        os.replace(out, old)
    os.replace(work, out)
    shutil.rmtree(old, ignore_errors=True)
