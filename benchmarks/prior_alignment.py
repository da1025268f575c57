"""Would aligning the pseudo labels' classes to the labeled masks' shares make them better?

    cd benchmarks/work
    python ../prior_alignment.py --config aerial/cisctool.toml [--set key=value] \
        cmp/runs/aerial-compare-s0-suponly/round0/model.pt ...

A thin class can shrink in the pseudo labels round by round (aerial's `road`, which `rectify`
warns about). For each model: the unlabeled images' class probabilities P with the config's TTA
(`rectify.tta_scales`, `rectify.tta_flip`), then the raw pseudo label argmax P against variants
that shift each class's log-probability by a bias b_c before the argmax:
  - distribution alignment (ReMixMatch's, applied once over the whole set):
    b_c = τ · log(π_c / p̄_c), π the labeled masks' class shares, p̄ the mean of P over the
    unlabeled pixels, τ ∈ {0.5, 1};
  - share matching: b found by fixed-point steps so that argmax's class shares equal π, and
    half of that b.
Scored against the unlabeled images' true masks (mIoU and per-class IoU). Writes a JSON record.
"""

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from cisctool.cli.options import parse_setting
from cisctool.config import Config, load_config, with_overrides
from cisctool.data.check import labeled_class_shares
from cisctool.data.datasets import InferenceDataset, pad_collate
from cisctool.data.splits import split_entries
from cisctool.method.prior_alignment import alignment_factors
from cisctool.method.signals import predict
from cisctool.report.confusion import ConfusionMatrix
from cisctool.store.checkpoints import load_inference_model

from records import progress, write_record

BATCH = 16
MATCH_STEPS = 30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("models", type=Path, nargs="+", help="round-0 model.pt files (one per seed)")
    args = parser.parse_args()
    config = with_overrides(load_config(args.config), dict(parse_setting(item) for item in args.overrides))
    prior = np.array([labeled_class_shares(config)[name] for name in config.class_names])
    results = {str(path): _score(config, path, prior) for path in args.models}
    _print(config, results)
    payload = {"config": str(args.config), "overrides": args.overrides, "labeled_share": prior.tolist(),
               "tta_scales": list(config.rectify.tta_scales), "tta_flip": config.rectify.tta_flip,
               "models": results}  # fmt: skip
    print(f"wrote {write_record('prior-alignment', payload)}")


def _score(config: Config, path: Path, prior: np.ndarray) -> dict[str, dict[str, object]]:
    """{variant: {"miou", "iou", "share"}} for one model's pseudo labels of the unlabeled images."""
    log_p, truth = _unlabeled_log_probabilities(config, path)
    num_classes = config.data.num_classes
    mean_prediction = np.exp(log_p).mean(axis=1)
    biases = {"argmax": np.zeros(num_classes)}
    for tau in (0.5, 1.0):
        biases[f"alignment τ={tau}"] = np.log(alignment_factors(prior, mean_prediction, tau))  # rectify's factors
    matched = _share_matching_bias(log_p, prior)
    biases["share matching"] = matched
    biases["half share matching"] = matched / 2
    scores = {name: _iou(np.argmax(log_p + bias[:, None], axis=0), truth, num_classes) for name, bias in biases.items()}
    progress(f"{path}: " + ", ".join(f"{name} {score['miou']:.2f}" for name, score in scores.items()))
    return {"soft_marginal": mean_prediction.tolist(), **scores}


def _unlabeled_log_probabilities(config: Config, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """C×N log-probabilities of every scored unlabeled pixel (config's TTA) and its N true classes."""
    model, _ = load_inference_model(path, expected=config)
    model.eval()
    entries = split_entries(config, "unlabeled", masks_required=True)
    dataset = InferenceDataset(entries, config.data.num_classes, config.data.ignore_index, with_masks=True)
    scales, flip = tuple(config.rectify.tta_scales), config.rectify.tta_flip
    columns, truths = [], []
    with torch.inference_mode():
        for start in range(0, len(dataset), BATCH):
            batch = pad_collate([dataset[i] for i in range(start, min(start + BATCH, len(dataset)))],
                                config.data.ignore_index, size_divisor=32)  # fmt: skip
            probabilities, _ = predict(model, batch["image"], scales, flip=flip)
            scored = batch["mask"] != config.data.ignore_index
            columns.append(probabilities.permute(1, 0, 2, 3)[:, scored].clamp_min(1e-8).log().numpy())
            truths.append(batch["mask"][scored].numpy())
    return np.concatenate(columns, axis=1), np.concatenate(truths)


def _share_matching_bias(log_p: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Per-class biases under which argmax gives each class about its labeled share."""
    bias = np.zeros(len(prior))
    for _ in range(MATCH_STEPS):
        share = np.bincount(np.argmax(log_p + bias[:, None], axis=0), minlength=len(prior)) / log_p.shape[1]
        bias += 0.5 * np.log(np.maximum(prior, 1e-6) / np.maximum(share, 1e-6))
    return bias


def _iou(label: np.ndarray, truth: np.ndarray, num_classes: int) -> dict[str, object]:
    confusion = ConfusionMatrix(num_classes)
    confusion.update_numpy(label, truth)
    share = np.bincount(label, minlength=num_classes) / len(label)
    return {"miou": confusion.mean_iou() * 100, "iou": [value * 100 for value in confusion.iou()],
            "share": (share * 100).tolist()}  # fmt: skip


def _print(config: Config, results: dict[str, dict[str, dict]]) -> None:
    """Per variant: mIoU minus argmax per model, mean ± std and the models where it is up; the
    weakest class of the argmax labels, with its IoU per variant."""
    variants = [name for name in next(iter(results.values())) if name != "soft_marginal"]
    weakest = int(np.argmin(np.mean([r["argmax"]["iou"] for r in results.values()], axis=0)))
    table = Table(title=f"raw pseudo mIoU − argmax; IoU of {config.class_names[weakest]} (the weakest class)")
    for column in ("variant", *(Path(p).parent.parent.name for p in results), "mean ± std (up)",
                   f"{config.class_names[weakest]} IoU"):  # fmt: skip
        table.add_column(column)
    for name in variants:
        gains = [r[name]["miou"] - r["argmax"]["miou"] for r in results.values()]
        spread = statistics.stdev(gains) if len(gains) > 1 else 0.0
        weak = statistics.mean(r[name]["iou"][weakest] for r in results.values())
        table.add_row(name, *(f"{g:+.2f}" for g in gains),
                      f"{statistics.mean(gains):+.2f} ± {spread:.2f} ({sum(g > 0 for g in gains)}/{len(gains)})",
                      f"{weak:.1f}")  # fmt: skip
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
