"""How good are pseudo labels, and which per-pixel signal tells right from wrong.

Streaming and memory-bounded: per-image updates into confusion matrices and
fixed-bin histograms, so the report over 100k images costs what one image
costs. AUROC comes from 1000-bin histograms of each signal on right and wrong
pixels, pooled and per predicted class (then averaged over classes that have
both), which is what the design's prototype findings compare. The pooled ROC
curve is kept as ROC_POINTS + 1 points per signal, enough to draw it in the
HTML report without the histograms.
Without ground-truth masks: class histogram, mean weight, reliability spread.
Every total is a count (weights as integer multiples of 2^-24, exact for the
stored float16), so totals added in any order, or saved and restored
(`state`, `restore`), give the same report.
"""

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from cisctool.report.confusion import ConfusionMatrix

SHRINK_RATIO = 0.5  # a class under half its labeled share of the pixels is named
SHRINK_MIN_SHARE = 0.001  # classes rarer than this in the labeled masks are not
BINS = 1000
ROC_POINTS = 50
WEIGHT_UNIT = 2.0**-24  # float16 weights are whole multiples of it
COUNTERS = ("images", "pixels", "scored_pixels", "weight_units", "dropped", "dropped_wrong", "relabeled",
            "relabeled_right_before", "relabeled_right_after")  # fmt: skip


def histogram_auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """AUROC = P(score of a right pixel > score of a wrong one), ties count half; from bin counts."""
    positives, negatives = positive.sum(), negative.sum()
    if positives == 0 or negatives == 0:
        return math.nan
    below = np.cumsum(negative) - negative
    return float((positive * (below + 0.5 * negative)).sum() / (positives * negatives))


@dataclass
class SignalHistograms:
    """Per predicted class, histograms over [0, 1] of a signal on right (0) and wrong (1) pixels."""

    num_classes: int
    counts: np.ndarray = field(init=False)
    undefined: int = 0

    def __post_init__(self) -> None:
        self.counts = np.zeros((self.num_classes, 2, BINS), dtype=np.int64)

    def add(self, values: np.ndarray, predicted: np.ndarray, right: np.ndarray) -> None:
        """values, predicted, right: flat arrays over valid pixels; NaN values are counted apart."""
        defined = ~np.isnan(values)
        self.undefined += int((~defined).sum())
        bins = np.clip((values[defined] * BINS).astype(np.int64), 0, BINS - 1)
        codes = (predicted[defined] * 2 + (~right[defined])) * BINS + bins
        self.counts += np.bincount(codes, minlength=self.counts.size).reshape(self.counts.shape)

    def pooled_auroc(self) -> float:
        pooled = self.counts.sum(axis=0)
        return histogram_auroc(pooled[0], pooled[1])

    def pooled_roc(self) -> dict[str, list[float]] | None:
        """(FPR, TPR) of "right if signal ≥ t" at ROC_POINTS + 1 thresholds from 1 down to 0.

        Right pixels are the positives, as for the AUROC; None without both kinds.
        """
        pooled = self.counts.sum(axis=0)
        if pooled[0].sum() == 0 or pooled[1].sum() == 0:
            return None
        at_or_above = np.cumsum(pooled[:, ::-1], axis=1)[:, ::-1]  # 2×BINS: pixels in bin ≥ b
        edges = np.linspace(BINS, 0, ROC_POINTS + 1).round().astype(np.int64)
        rates = np.concatenate([at_or_above, np.zeros((2, 1), dtype=np.int64)], axis=1)[:, edges]
        rates = rates / pooled.sum(axis=1, keepdims=True)
        return {"fpr": [round(float(v), 4) for v in rates[1]], "tpr": [round(float(v), 4) for v in rates[0]]}

    def class_mean_auroc(self) -> float:
        values = [histogram_auroc(item[0], item[1]) for item in self.counts]
        defined = [value for value in values if not math.isnan(value)]
        return float(np.mean(defined)) if defined else math.nan


class QualityAccumulator:
    """Everything the quality report needs, added image by image."""

    def __init__(self, class_names: list[str], ignore_index: int, signal_names: list[str]) -> None:
        self.class_names, self.ignore_index = class_names, ignore_index
        num_classes = len(class_names)
        self.raw = ConfusionMatrix(num_classes, ignore_index)
        self.rectified = ConfusionMatrix(num_classes, ignore_index)
        self.signals = {name: SignalHistograms(num_classes) for name in signal_names}
        self.label_pixels = np.zeros(num_classes + 1, dtype=np.int64)  # last bin = dropped
        self.weight_units = 0
        self.pixels = 0
        self.scored_pixels = 0
        self.dropped = self.dropped_wrong = 0
        self.relabeled = self.relabeled_right_before = self.relabeled_right_after = 0
        self.images = 0
        self.reliabilities: list[float] = []

    def add(
        self,
        raw: np.ndarray,
        label: np.ndarray,
        weight: np.ndarray,
        reliability: float,
        signals: dict[str, np.ndarray],
        truth: np.ndarray | None,
    ) -> None:
        """One image: H×W raw and rectified labels, weight, signals by name; truth H×W or None."""
        ignore = self.ignore_index
        self.images += 1
        self.reliabilities.append(reliability)
        self.pixels += raw.size
        self.weight_units += int(np.rint(weight.astype(np.float64) / WEIGHT_UNIT).sum())
        kept = label != ignore
        self.label_pixels += np.bincount(
            np.where(kept, label, len(self.class_names)).ravel().astype(np.int64),
            minlength=len(self.label_pixels),
        )
        if truth is None:
            return
        valid = truth != ignore
        self.scored_pixels += int(valid.sum())
        self.raw.update_numpy(raw[valid], truth[valid])
        self.rectified.update_numpy(label[valid & kept], truth[valid & kept])
        right = raw[valid] == truth[valid]
        dropped = ~kept[valid]
        self.dropped += int(dropped.sum())
        self.dropped_wrong += int((dropped & ~right).sum())
        changed = kept[valid] & (label[valid] != raw[valid])
        self.relabeled += int(changed.sum())
        self.relabeled_right_before += int((changed & right).sum())
        self.relabeled_right_after += int((changed & (label[valid] == truth[valid])).sum())
        predicted = raw[valid].astype(np.int64)
        for name, values in signals.items():
            self.signals[name].add(values[valid].astype(np.float32), predicted, right)

    def state(self) -> dict[str, np.ndarray]:
        """Every total as arrays, for `restore` in a later process."""
        state = {
            "raw": self.raw.matrix.numpy(),
            "rectified": self.rectified.matrix.numpy(),
            "label_pixels": self.label_pixels,
            "reliabilities": np.asarray(self.reliabilities, dtype=np.float64),
            "counters": np.asarray([getattr(self, name) for name in COUNTERS], dtype=np.int64),
            "undefined": np.asarray([signal.undefined for signal in self.signals.values()], dtype=np.int64),
        }
        state.update({f"signal:{name}": histograms.counts for name, histograms in self.signals.items()})
        return state

    def restore(self, state: dict[str, np.ndarray]) -> None:
        """Continue from `state()` of an accumulator with the same classes and signals (ValueError if not)."""
        expected = self.state()
        shapes_differ = any(state[key].shape != expected[key].shape for key in expected if key != "reliabilities")
        if state.keys() != expected.keys() or shapes_differ:
            raise ValueError("saved quality totals are of other classes or signals")
        self.raw.matrix = torch.from_numpy(state["raw"].astype(np.int64))
        self.rectified.matrix = torch.from_numpy(state["rectified"].astype(np.int64))
        self.label_pixels = state["label_pixels"].astype(np.int64)
        self.reliabilities = state["reliabilities"].tolist()
        for name, value in zip(COUNTERS, state["counters"].tolist(), strict=True):
            setattr(self, name, value)
        for (name, signal), undefined in zip(self.signals.items(), state["undefined"].tolist(), strict=True):
            signal.counts, signal.undefined = state[f"signal:{name}"].astype(np.int64), undefined

    def report(self) -> dict[str, object]:
        """Plain-JSON summary; `with_masks` says whether the mIoU/AUROC parts exist."""
        reliabilities = np.asarray(self.reliabilities, dtype=np.float64)
        defined = reliabilities[~np.isnan(reliabilities)]
        names = [*self.class_names, "(dropped)"]
        summary: dict[str, object] = {
            "images": self.images,
            "with_masks": self.scored_pixels > 0,
            "mean_weight": self.weight_units * WEIGHT_UNIT / max(self.pixels, 1),
            "label_share": {
                name: float(count) / max(self.pixels, 1) for name, count in zip(names, self.label_pixels)
            },
            "reliability": {
                "images_without_evidence": int(np.isnan(reliabilities).sum()),
                "quantiles": {
                    f"{q:.2f}": float(np.quantile(defined, q)) if defined.size else None
                    for q in (0.1, 0.25, 0.5, 0.75, 0.9)
                },
            },
        }
        if self.scored_pixels == 0:
            return summary
        valid = max(self.scored_pixels, 1)
        summary.update(
            raw_miou=self.raw.mean_iou(),
            rectified_miou=self.rectified.mean_iou(),
            raw_accuracy=self.raw.pixel_accuracy(),
            rectified_accuracy=self.rectified.pixel_accuracy(),
            raw_per_class_iou=_json_floats(self.raw.iou()),
            rectified_per_class_iou=_json_floats(self.rectified.iou()),
            dropped_fraction=self.dropped / valid,
            dropped_that_were_wrong=self.dropped_wrong / self.dropped if self.dropped else None,
            relabeled_fraction=self.relabeled / valid,
            relabeled_right_before=self.relabeled_right_before / self.relabeled if self.relabeled else None,
            relabeled_right_after=self.relabeled_right_after / self.relabeled if self.relabeled else None,
            auroc={
                name: {
                    "pooled": _json_float(histograms.pooled_auroc()),
                    "class_mean": _json_float(histograms.class_mean_auroc()),
                    "undefined_pixels": histograms.undefined / valid,
                }
                for name, histograms in self.signals.items()
            },
            roc={name: histograms.pooled_roc() for name, histograms in self.signals.items()},
        )
        return summary


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else value


def _json_floats(values: list[float]) -> list[float | None]:
    return [_json_float(value) for value in values]


def shrinking_classes(report: dict) -> list[str]:
    """Classes holding under SHRINK_RATIO of their labeled share of the pixels in the pseudo labels, as
    "name 0.9 % (labeled 2.0 %)": a round trained on them learns the class smaller still."""
    labeled = report.get("labeled_share") or {}
    pseudo = report.get("label_share") or {}
    return [
        f"{name} {100 * pseudo[name]:.1f} % (labeled {100 * share:.1f} %)"
        for name, share in labeled.items()
        if share >= SHRINK_MIN_SHARE and name in pseudo and pseudo[name] < SHRINK_RATIO * share
    ]


def shrink_message(classes: list[str], what: str) -> str:
    """The warning for `shrinking_classes`."""
    return (
        f"{what} give {', '.join(classes)} of the pixels, under half the share of the labeled masks: either "
        "the unlabeled images hold less of it, or the model under-segments it and each round trained on these "
        "labels shrinks it further (for a thin class see `cisctool data check`'s resolution ceilings; "
        "`train.pseudo_class_balance = 1` gives each class its labeled share of the pseudo loss)"
    )
