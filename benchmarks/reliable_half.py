"""How much better are the pseudo labels of the reliable half than those of the rest, by each image score?

    python benchmarks/reliable_half.py --config benchmarks/work/shapes/cisctool.toml \\
        benchmarks/work/compare/runs/demo-compare-s0-now/round1/pseudo.h5 ...

For each pseudo-label file of a CISC-R run: the images that `rectify.select = "reliable"` trains
round 1 on (the `rectify.ratio` lowest scores) and the others, scored against the unlabeled
images' true masks — mIoU of the raw labels, as the quality report scores them — for each
`rectify.reliability` score, recomputed from the stored pixels:
- cisc: the stored score, mean BCE of S_ŷ towards 1 (NaN without guided pixels: chosen last);
- confidence: mean −log confidence (self-training's score);
- cisc+confidence: their sum.
Prints each file's figures and the mean over files, and writes a JSON record.
"""

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch

from cisctool.config import Config, load_config
from cisctool.data.masks import read_mask
from cisctool.data.splits import split_entries
from cisctool.method.cisc import reliability
from cisctool.method.pseudo_training import select_positions
from cisctool.report.confusion import ConfusionMatrix
from cisctool.store.pseudo_labels import PseudoLabels

from records import write_record

SCORES = ("cisc", "confidence", "cisc+confidence")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("files", type=Path, nargs="+")
    args = parser.parse_args()
    config = load_config(args.config)
    masks = {entry.id: entry.mask for entry in split_entries(config, "unlabeled", masks_required=True)}
    figures: dict[str, dict[str, list[float]]] = {score: {"chosen": [], "rest": []} for score in SCORES}
    for path in args.files:
        with PseudoLabels(path) as stored:
            per_image = [_confusion(config, stored.pixels("raw_label", index), read_mask(masks[image_id]))
                         for index, image_id in enumerate(stored.ids)]  # fmt: skip
            confidence = np.array([_mean_nll(stored.pixels("confidence", index)) for index in range(len(stored))])
            cisc = stored.reliability.astype(np.float64)
        scores = {"cisc": cisc, "confidence": confidence, "cisc+confidence": cisc + confidence}
        line = []
        for name, score in scores.items():
            chosen = np.zeros(len(score), dtype=bool)
            chosen[select_positions(score, 1, "reliable", config.rectify.ratio)] = True
            for part, mask in (("chosen", chosen), ("rest", ~chosen)):
                figures[name][part].append(_miou(config, [per_image[i] for i in np.flatnonzero(mask)]))
            line.append(f"{name} {figures[name]['chosen'][-1]:.2f} | {figures[name]['rest'][-1]:.2f}")
        print(f"{path}: reliable half | rest mIoU — " + "; ".join(line))
    for name in SCORES:
        print(f"mean over {len(args.files)} files, {name}: reliable half {statistics.mean(figures[name]['chosen']):.2f}"
              f" | rest {statistics.mean(figures[name]['rest']):.2f}")  # fmt: skip
    print(f"wrote {write_record('reliable-half', {'files': [str(p) for p in args.files], 'miou': figures})}")


def _confusion(config: Config, prediction: np.ndarray, target: np.ndarray) -> ConfusionMatrix:
    matrix = ConfusionMatrix(config.data.num_classes, config.data.ignore_index)
    matrix.update_numpy(prediction, target)
    return matrix


def _miou(config: Config, matrices: list[ConfusionMatrix]) -> float:
    """mIoU % of the images' pixels together (one matrix summed over them, as the quality report scores)."""
    total = ConfusionMatrix(config.data.num_classes, config.data.ignore_index)
    total.matrix = sum((matrix.matrix for matrix in matrices), total.matrix)
    return 100 * total.mean_iou()


def _mean_nll(confidence: np.ndarray) -> float:
    """Self-training's score of one image, by the function rectify stores it with."""
    pixels = torch.from_numpy(confidence.astype(np.float32))[None]
    return float(reliability(pixels, torch.ones_like(pixels, dtype=torch.bool))[0])


if __name__ == "__main__":
    main()
