"""What a prediction made at stride S can score at best, per class, on a config's val masks.

    python benchmarks/stride_ceiling.py --config benchmarks/work/aerial/cisctool.toml --strides 4 8 16

The val-split counterpart of the table `cisctool data check` prints for the labeled masks
(`cisctool.report.resolution`): the masks' true class fractions pooled over S×S blocks (a
perfect stride-S map), upsampled bilinearly and arg-maxed, scored per class.
"""

import argparse
from pathlib import Path

from cisctool.config import load_config
from cisctool.data.masks import read_mask
from cisctool.data.splits import split_entries
from cisctool.report.resolution import resolution_ceilings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--strides", type=int, nargs="+", default=[4, 8, 16])
    args = parser.parse_args()
    config = load_config(args.config)
    masks = (read_mask(entry.mask) for entry in split_entries(config, "val"))
    ceilings = resolution_ceilings(masks, config.data.num_classes, config.data.ignore_index, args.strides)
    print("stride  " + "  ".join(f"{name:>8}" for name in config.class_names))
    for stride in args.strides:
        print(f"{stride:>6}  " + "  ".join(f"{100 * iou:8.1f}" for iou in ceilings[stride]))


if __name__ == "__main__":
    main()
