"""`cisctool report`: one static HTML folder that tells a run's story and shows its doubtful pseudo labels.

The folder (`index.html`, `plots/`, `gallery/`) opens from disk in any browser:
no server, no script, nothing fetched from the network. It holds the table of
every round, per-class IoU bars, the loss curves from `train.log`, the ROC
curves of the per-pixel signals and the reliability histogram of one round's
pseudo labels, and a gallery of that round's least reliable images, worst
first, as `export --overlay` draws them. The gallery is capped (`gallery`
images) so that the report stays a few seconds' work on any split size.
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
from cisctool.method.pseudo_training import worst_first
from cisctool.report.pictures import class_colours, save_overlay
from cisctool.report.plots import iou_bars, loss_curves, reliability_histogram, roc_curves
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
            items = _gallery(config, stored, folder, gallery)
            without_evidence = int(np.isnan(stored.reliability).sum())
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
        "val_miou": _percent(history.val.get("mean_iou")),
        "pseudo_images": trained_on,
        "raw_miou": _percent(quality.get("raw_miou")),
        "rectified_miou": _percent(quality.get("rectified_miou")),
        "mean_weight": _number(quality.get("mean_weight"), 3),
        "reliability": _number(median, 3),
        "seconds": _number(metrics.get("train_seconds"), 0),
    }


def _gallery(config: Config, stored: PseudoLabels, folder: Path, size: int) -> list[dict[str, Any]]:
    """Overlays and captions of the `size` least reliable images, worst first."""
    entries = unlabeled_entries(config, stored)
    class_names = list(config.class_names)
    ignore = config.data.ignore_index
    order = worst_first(stored.reliability)[:size]
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
    }
    if mask_path is not None:
        truth = read_mask(mask_path)
        valid = (truth != ignore) & (label != ignore)
        scores["accuracy"] = (
            f"{100 * float((label[valid] == truth[valid]).mean()):.1f}" if valid.any() else "—"
        )
    return scores


def _number(value: float | None, digits: int) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _percent(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{100 * value:.2f}"


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
