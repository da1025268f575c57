"""The ceiling that pseudo-label quality sets: round 1 trained on the unlabeled images' true masks.

    python benchmarks/oracle_pseudo.py --config benchmarks/work/shapes/cisctool.toml \\
        --compare-workdir benchmarks/work/compare --arm cisc --seeds 0 1 2 3 4

`cisctool compare` must have run the arm first (its runs are read, never changed). For each seed,
the `oracle` run continues that seed's shared round 0 and trains round 1 exactly as the arm's
round 1 did — the same pseudo-labeled images (the arm's reliability scores choose them), the
same steps, rate and sample stream — but on the true masks of those images with weight 1.
`oracle − arm` at round 1 is what perfect rectification could add with this training recipe;
`oracle − round 0` is the most any pseudo labels could give it. `--select all` trains on every
unlabeled image instead; `--set KEY=VALUE` (TOML value) changes the oracle's training alone, to
see what moves the ceiling. Prints the paired differences and writes a JSON record.
"""

import argparse
import json
import shutil
import statistics
import tomllib
from pathlib import Path

import numpy as np
import torch

from cisctool.cli.options import parse_setting
from cisctool.config import Config, load_config
from cisctool.console import console, set_verbosity
from cisctool.data.masks import read_mask
from cisctool.data.splits import split_entries
from cisctool.steps.train import train_and_evaluate
from cisctool.store.layout import RunLayout
from cisctool.store.pseudo_labels import PseudoLabels, PseudoWriter

from records import write_record


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--compare-workdir", type=Path, required=True)
    parser.add_argument("--arm", default="cisc")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--select", choices=["reliable", "all"], default="reliable")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--workdir", type=Path, default=Path(__file__).resolve().parent / "work" / "oracle")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    set_verbosity(-1)
    name = tomllib.loads(args.config.read_text()).get("name", "default")
    overrides = dict(parse_setting(item) for item in args.overrides)
    tag = "".join(f"-{key.split('.')[-1]}{value}" for key, value in overrides.items())
    rows = []
    for seed in args.seeds:
        common = {"train.seed": seed, "rectify.select": args.select}
        shared = load_config(
            args.config,
            {
                **common,
                "workdir": str(args.compare_workdir.resolve()),
                "name": f"{name}-compare-s{seed}-suponly",
            },
        )
        arm = load_config(
            args.config,
            {
                **common,
                "workdir": str(args.compare_workdir.resolve()),
                "name": f"{name}-compare-s{seed}-{args.arm}",
            },
        )
        oracle = load_config(
            args.config,
            {
                **common,
                **overrides,
                "workdir": str(args.workdir.resolve()),
                "name": f"{name}-oracle-{args.arm}-{args.select}{tag}-s{seed}",
            },
        )
        rows.append(_seed_row(seed, shared, arm, oracle, args.device))
        console.quiet = False
        console.print(
            f"seed {seed}: "
            + ", ".join(f"{key} {value:.2f}" for key, value in rows[-1].items() if key != "seed")
        )
        console.quiet = True
    console.quiet = False
    summary = {
        key: _paired(rows, key) for key in ("oracle_minus_arm", "oracle_minus_round0", "arm_minus_round0")
    }
    for key, text in summary.items():
        console.print(f"{key}: {text}")
    out = write_record(
        f"oracle-pseudo-{name}",
        {
            "config": str(args.config),
            "arm": args.arm,
            "select": args.select,
            "overrides": overrides,
            "seeds": args.seeds,
            "rows": rows,
            "summary": summary,
        },
        args.device,
    )
    console.print(f"wrote {out}")


def _seed_row(seed: int, shared: Config, arm: Config, oracle: Config, device: str) -> dict[str, float]:
    """Train the oracle's round 1 (unless done) and read the three val mIoUs of the seed."""
    source, target = RunLayout.of(shared), RunLayout.of(oracle)
    if not target.metrics(1).is_file():
        target.round_dir(0).mkdir(parents=True, exist_ok=True)
        for name in ("model.pt", "metrics.json"):
            shutil.copy2(source.round_dir(0) / name, target.round_dir(0) / name)
        _write_true_labels(oracle, RunLayout.of(arm).pseudo(1), target.pseudo(1))
        train_and_evaluate(oracle, device, 1)
    round0, arm_round1, oracle_round1 = _val(source, 0), _val(RunLayout.of(arm), 1), _val(target, 1)
    return {
        "seed": seed,
        "round0": round0,
        "arm_round1": arm_round1,
        "oracle_round1": oracle_round1,
        "oracle_minus_arm": oracle_round1 - arm_round1,
        "oracle_minus_round0": oracle_round1 - round0,
        "arm_minus_round0": arm_round1 - round0,
    }


def _write_true_labels(config: Config, arm_file: Path, out: Path) -> None:
    """A copy of the arm's pseudo-label file whose labels are the true masks, weight 1 (reliability kept)."""
    entries = split_entries(config, "unlabeled", masks_required=True)
    with PseudoLabels(arm_file) as stored:
        if [entry.id for entry in entries] != stored.ids:
            raise SystemExit(f"{arm_file}: its images are not the unlabeled split's")
        attrs = {
            key: value
            for key, value in stored.attrs.items()
            if key not in ("format", "version", "num_classes")
        }
        writer = PseudoWriter.create(out, stored.ids, stored.shapes, config.data.num_classes, attrs)
        try:
            for index, entry in enumerate(entries):
                image = stored.image(index)
                truth = read_mask(entry.mask).astype(np.uint8)
                image.label, image.raw_label = truth, truth
                image.weight = np.ones_like(image.weight)
                writer.write([index], [image])
        finally:
            writer.close()


def _val(layout: RunLayout, round_index: int) -> float:
    return 100 * json.loads(layout.metrics(round_index).read_text())["val"]["mean_iou"]


def _paired(rows: list[dict[str, float]], key: str) -> str:
    values = [row[key] for row in rows]
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return (
        f"{statistics.fmean(values):+.2f} ± {std:.2f} ({sum(v > 0 for v in values)}/{len(values)} seeds > 0)"
    )


if __name__ == "__main__":
    main()
