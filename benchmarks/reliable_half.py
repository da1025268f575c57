"""How much better are the pseudo labels of the reliable half than those of the rest?

    python benchmarks/reliable_half.py --config benchmarks/work/shapes/cisctool.toml \\
        benchmarks/work/compare/runs/demo-compare-s0-now/round1/pseudo.h5 ...

For each pseudo-label file: the images that `rectify.select = "reliable"` trains round 1 on (the
`rectify.ratio` lowest reliability scores) and the others, scored against the unlabeled images'
true masks — mIoU and pixel accuracy of the raw labels, as the quality report scores them.
This is what CISC's image-level score buys the schedule.
"""

import argparse
from pathlib import Path

import numpy as np

from cisctool.config import load_config
from cisctool.data.masks import read_mask
from cisctool.data.splits import read_split
from cisctool.method.pseudo_training import select_rows
from cisctool.report.confusion import ConfusionMatrix
from cisctool.store.pseudo_labels import PseudoLabels


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("files", type=Path, nargs="+")
    args = parser.parse_args()
    config = load_config(args.config)
    classes, root = config.data.num_classes, config.data_root
    masks = {
        entry.id: entry.mask for entry in read_split(root / config.data.unlabeled, root, masks_required=True)
    }
    for path in args.files:
        with PseudoLabels(path) as stored:
            chosen = np.zeros(len(stored), dtype=bool)
            chosen[select_rows(stored.reliability, 1, "reliable", config.rectify.ratio)] = True
            parts = {
                True: ConfusionMatrix(classes, config.data.ignore_index),
                False: ConfusionMatrix(classes, config.data.ignore_index),
            }
            for index, image_id in enumerate(stored.ids):
                parts[bool(chosen[index])].update_numpy(
                    stored.pixels("raw_label", index), read_mask(masks[image_id])
                )
        reliable, rest = (_scores(parts[key]) for key in (True, False))
        print(f"{path}: reliable half {reliable} | rest {rest}")


def _scores(confusion: ConfusionMatrix) -> str:
    return f"mIoU {100 * confusion.mean_iou():.2f} accuracy {100 * confusion.pixel_accuracy():.2f}"


if __name__ == "__main__":
    main()
