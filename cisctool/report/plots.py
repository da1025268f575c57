"""The HTML report's figures, drawn with matplotlib's Agg backend (no display needed) as PNG files.

Each function draws one figure from plain values and writes it to `path`; the
report decides which exist.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display, no GUI toolkit
import matplotlib.pyplot as plt
import numpy as np

from cisctool.report.numbers import percent
from cisctool.store.history import RoundHistory

DPI = 100
plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False})


def _save(figure: plt.Figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def iou_bars(rounds: list[RoundHistory], class_names: list[str], path: Path) -> None:
    """Grouped bars of per-class IoU %: val IoU of every trained round, then (when the unlabeled
    masks exist) the rectified pseudo labels' IoU of every pseudo-label round."""
    val = [(f"round {r.round_index}", r.val["per_class_iou"]) for r in rounds if r.val.get("per_class_iou")]
    pseudo = [
        (f"round {r.round_index}", dict(zip(class_names, r.quality["rectified_per_class_iou"])))
        for r in rounds
        if r.quality.get("rectified_per_class_iou")
    ]
    panels = [("val IoU % per class", val)]
    if pseudo:
        panels.append(("pseudo-label IoU % per class (rectified, vs unlabeled masks)", pseudo))
    figure, axes = plt.subplots(len(panels), 1, figsize=(8, 2.6 * len(panels)), squeeze=False)
    positions = np.arange(len(class_names))
    for axis, (title, series) in zip(axes[:, 0], panels):
        width = 0.8 / max(len(series), 1)
        for slot, (label, scores) in enumerate(series):
            values = [percent(scores.get(name)) for name in class_names]
            axis.bar(
                positions + (slot - (len(series) - 1) / 2) * width,
                values,
                width,
                label=label,
                color=plt.cm.tab10(slot % 10),
            )
        crowded = len(class_names) > 8
        axis.set_xticks(
            positions, class_names, rotation=30 if crowded else 0, ha="right" if crowded else "center"
        )
        axis.set_ylim(0, 100)
        axis.set_title(title)
        if series:
            axis.legend(ncols=min(len(series), 6), fontsize=8, loc="upper right")
        else:
            axis.text(0.5, 0.5, "no round evaluated on val yet", ha="center", transform=axis.transAxes)
    _save(figure, path)


def roc_curves(
    roc: dict[str, dict[str, list[float]] | None], auroc: dict[str, dict], title: str, path: Path
) -> None:
    """ROC of each per-pixel signal at telling right from wrong pseudo-label pixels (pooled AUROC in the legend)."""
    figure, axis = plt.subplots(figsize=(5.2, 4.4))
    axis.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1)
    drawn = [(name, points) for name, points in roc.items() if points]
    for slot, (name, points) in enumerate(drawn):
        score = auroc.get(name, {}).get("pooled")
        label = f"{name} ({score:.3f})" if score is not None else name
        axis.plot(
            points["fpr"],
            points["tpr"],
            label=label,
            linewidth=1.3,
            color=plt.cm.tab10(slot % 10),
            linestyle="-" if slot < 10 else ":",
        )
    axis.set_xlabel("false positive rate (wrong pixels kept)")
    axis.set_ylabel("true positive rate (right pixels kept)")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_title(title)
    axis.legend(fontsize=7, loc="lower right", title="signal (AUROC)", title_fontsize=7)
    _save(figure, path)


def reliability_histogram(reliability: np.ndarray, title: str, path: Path) -> None:
    """Histogram of the images' reliability scores (lower = more reliable); NaN counted in the title."""
    figure, axis = plt.subplots(figsize=(5.2, 3.2))
    defined = reliability[~np.isnan(reliability)]
    if defined.size:
        axis.hist(defined, bins=min(40, max(5, defined.size // 5)), color=plt.cm.viridis(0.35))
        axis.axvline(float(np.median(defined)), color="0.2", linestyle="--", linewidth=1, label="median")
        axis.legend(fontsize=8)
    missing = int(np.isnan(reliability).sum())
    axis.set_xlabel("reliability (BCE of S_ŷ towards 1; lower = more reliable)")
    axis.set_ylabel("images")
    axis.set_title(title + (f"; {missing} without evidence" if missing else ""))
    _save(figure, path)


def loss_curves(rounds: list[RoundHistory], path: Path) -> None:
    """One panel per trained round: the total loss and each part logged in train.log, by step."""
    trained = [r for r in rounds if r.losses]
    figure, axes = plt.subplots(
        1, max(len(trained), 1), figsize=(3.4 * max(len(trained), 1) + 0.6, 2.8), squeeze=False, sharey=True
    )
    for axis, history in zip(axes[0], trained):
        for slot, (name, points) in enumerate(history.losses.items()):
            values = np.asarray(points, dtype=np.float64)
            if name != "loss" and not np.any(values[:, 1]):
                continue  # a part that is off (consistency 0, round 0's pseudo) draws nothing
            axis.plot(
                values[:, 0],
                values[:, 1],
                label=name,
                linewidth=1.6 if name == "loss" else 1.0,
                color="0.1" if name == "loss" else plt.cm.tab10(slot),
            )
        axis.set_title(f"round {history.round_index}")
        axis.set_xlabel("step")
        axis.legend(fontsize=7)
    axes[0][0].set_ylabel("loss")
    if not trained:
        axes[0][0].text(0.5, 0.5, "no train.log yet", ha="center", transform=axes[0][0].transAxes)
    _save(figure, path)


def review_efficiency_curve(tool: np.ndarray, oracle: np.ndarray, title: str, path: Path) -> None:
    """Share of all wrong pixels found against the share of images looked at: the tool's order, random
    order (the diagonal) and the oracle's (true error counts); 10 % of the images marked."""
    figure, axis = plt.subplots(figsize=(5.2, 3.6))
    looked = np.linspace(0.0, 100.0, len(tool))
    axis.plot(looked, 100 * oracle, color="0.55", linestyle="--", linewidth=1.2, label="oracle (true errors)")
    axis.plot(looked, 100 * tool, color=plt.cm.viridis(0.35), linewidth=1.8, label="review order (cisctool)")
    axis.plot([0, 100], [0, 100], color="0.7", linestyle=":", linewidth=1.2, label="random order")
    axis.axvline(10.0, color="0.3", linewidth=0.8)
    axis.set_xlabel("images looked at (%)")
    axis.set_ylabel("wrong pixels found (%)")
    axis.set_xlim(0, 100)
    axis.set_ylim(0, 100)
    axis.set_title(title)
    axis.legend(fontsize=8, loc="lower right")
    _save(figure, path)
