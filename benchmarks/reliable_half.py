"""How much better are the pseudo labels of the reliable half than those of the rest?

    python benchmarks/reliable_half.py --config benchmarks/work/shapes/cisctool.toml \\
        benchmarks/work/compare/runs/demo-compare-s0-now/round1/pseudo.h5 ...

For each pseudo-label file: the images that `rectify.select = "reliable"` trains round 1 on (the
`rectify.ratio` lowest reliability scores) and the others, scored against the unlabeled images'
true masks — mIoU (over classes present in that part) and pixel accuracy of the raw labels.
This is what CISC's image-level score buys the schedule.
"""

import argparse
from pathlib import Path

import numpy as np

from cisctool.config import load_config
from cisctool.data.masks import read_mask
from cisctool.data.splits import read_split
from cisctool.method.pseudo_training import select_rows
from cisctool.store.pseudo_labels import PseudoLabels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("files", type=Path, nargs="+")
    args = parser.parse_args()
    config = load_config(args.config)
    classes, root = config.data.num_classes, Path(config.data.root)
    masks = {entry.id: entry.mask for entry in read_split(root / config.data.unlabeled, root, masks_required=True)}
    for path in args.files:
        with PseudoLabels(path) as stored:
            chosen = np.zeros(len(stored), dtype=bool)
            chosen[select_rows(stored.reliability, 1, "reliable", config.rectify.ratio)] = True
            confusion = np.zeros((2, classes, classes), dtype=np.int64)
            for index, image_id in enumerate(stored.ids):
                truth = read_mask(masks[image_id]).astype(np.int64)
                label = stored.pixels("raw_label", index).astype(np.int64)
                valid = truth < classes
                pairs = truth[valid] * classes + label[valid]
                confusion[int(chosen[index])] += np.bincount(pairs, minlength=classes**2).reshape(classes, classes)
        reliable, rest = _scores(confusion[1]), _scores(confusion[0])
        print(f"{path}: reliable half mIoU {reliable[0]:.2f} accuracy {reliable[1]:.2f} | "
              f"rest mIoU {rest[0]:.2f} accuracy {rest[1]:.2f}")  # fmt: skip


def _scores(confusion: np.ndarray) -> tuple[float, float]:
    """(mIoU over the classes the masks hold, pixel accuracy), in %."""
    right = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - right
    present = confusion.sum(1) > 0
    return 100 * float((right[present] / union[present]).mean()), 100 * float(right.sum() / confusion.sum())


if __name__ == "__main__":
    main()
