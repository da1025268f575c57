"""Which review score sends people to the wrong pseudo-labelled pixels first?

    python benchmarks/review_efficiency.py --kinds shapes aerial --seeds 0 1 2 3 4

For each benchmark (`cisctool data make-demo [--kind aerial]`, its generated config unchanged) and
seed (`train.seed`), round 0 is trained, indexed and rectified into round 1's pseudo labels (each
seed's commands under `flock /tmp/cisctool-cpu.lock`; run folders under benchmarks/work/review/,
reused when there). Every candidate score of `cisctool/method/review.py` orders the images; its
review efficiency is the share of all wrong pseudo-labelled pixels (against the unlabeled split's
true masks) in the first 5, 10 and 20 % of images, next to random order (k %) and the oracle
(true error counts). Writes a JSON record with every seed's figures and, per score, the lowest
ratio to the oracle at 10 % over the seeds (the choice needs ≥ 0.8 on every seed of both).

Beside the candidates, a ceiling that no tool can reach: `calibrated_ceiling` is the expected
count of wrong pixels, Σ P(wrong | predicted class, confidence bin), with the error rates fitted on
the very masks it is scored against (20 confidence bins of 0.05). It tells whether calibrating
the confidence better, per class (on val, say), could lift the order, or whether what is left
lies in images whose errors the pixel confidences do not foretell.
"""

import argparse
import os
import subprocess
import time
from pathlib import Path

import numpy as np

from cisctool.config import Config, load_config
from cisctool.data.masks import read_mask
from cisctool.data.splits import read_split
from cisctool.method.review import CANDIDATES, REVIEW_SCORE, efficiency, oracle_efficiency, random_efficiency
from cisctool.report.review import all_candidate_scores, true_wrong_pixels
from cisctool.store.layout import RunLayout
from cisctool.store.pseudo_labels import PseudoLabels

from records import progress, write_record

BENCHMARKS = Path(__file__).resolve().parent
WORK = BENCHMARKS / "work/review"
CISCTOOL = Path(os.sys.executable).parent / "cisctool"
LOCK = "/tmp/cisctool-cpu.lock"
CEILING = "calibrated_ceiling"  # not a candidate: fitted on the masks it is scored against
SCORED = (*CANDIDATES, CEILING)
BIN, BINS = 0.05, 20  # the ceiling's confidence bins


def data_folder(kind: str) -> Path:
    """The benchmark's data and generated config (made once)."""
    folder = BENCHMARKS / "work" / kind
    if not (folder / "cisctool.toml").is_file():
        subprocess.run([str(CISCTOOL), "-q", "data", "make-demo", "--kind", kind, str(folder)], check=True)
    return folder


def settings(kind: str, seed: int) -> dict[str, object]:
    """The overrides of one seed's run: its own workdir and name, nothing else changed."""
    return {"workdir": str(WORK / kind), "train.seed": seed, "name": f"{kind}-s{seed}"}


def cli(kind: str, seed: int, *words: str) -> list[str]:
    flags = [item for key, value in settings(kind, seed).items() for item in ("--set", f"{key}={value!r}")]
    flags = [flag.replace("'", '"') for flag in flags]
    return [str(CISCTOOL), "-q", "--config", str(data_folder(kind) / "cisctool.toml"), *flags, *words]


def ensure_round(kind: str, seed: int, round_index: int) -> Config:
    """Round `round_index`'s pseudo labels of this seed's run, made under the CPU lock where missing."""
    config = load_config(data_folder(kind) / "cisctool.toml", settings(kind, seed))
    if RunLayout.of(config).pseudo(round_index).is_file():
        return config
    steps = []
    for previous in range(round_index):  # rounds before: train, index, (rectify the next) as `run` would
        if not RunLayout.of(config).model(previous).is_file():
            steps.append(cli(kind, seed, "train", "--round", str(previous)))
        steps.append(cli(kind, seed, "index", "build", "--round", str(previous)))
        steps.append(cli(kind, seed, "rectify", "--round", str(previous + 1)))
    script = " && ".join(" ".join(f"'{word}'" for word in step) for step in steps)
    started = time.perf_counter()
    subprocess.run(["flock", LOCK, "bash", "-c", script], check=True)
    progress(f"{kind} seed {seed}: rounds up to {round_index}'s pseudo labels in {time.perf_counter() - started:.0f} s")
    return config


def measure(config: Config, round_index: int) -> dict[str, object]:
    """Every candidate's shares of the wrong pixels, the random and oracle shares, and the ratios at 10 %."""
    root = config.data_root
    masks = {entry.id: entry.mask for entry in read_split(root / config.data.unlabeled, root, masks_required=True)}
    with PseudoLabels(RunLayout.of(config).pseudo(round_index)) as stored:
        scores = all_candidate_scores(stored, config.data.ignore_index)
        wrong = true_wrong_pixels(stored, masks, config.data.ignore_index)
        scores[CEILING] = calibrated_ceiling(stored, masks, config.data.ignore_index, config.data.num_classes)
    oracle = oracle_efficiency(wrong)
    shares = {name: efficiency(scores[name], wrong) for name in SCORED}
    return {
        "images": int(len(wrong)),
        "wrong_pixels": int(wrong.sum()),
        "random": random_efficiency(len(wrong)),
        "oracle": oracle,
        "scores": shares,
        "ratio_at_10": {name: shares[name]["0.10"] / oracle["0.10"] for name in SCORED},
        "spearman_with_wrong": {name: _spearman(scores[name], wrong) for name in SCORED},
    }


def calibrated_ceiling(stored: PseudoLabels, masks: dict[str, Path], ignore: int, classes: int) -> np.ndarray:
    """Σ P(wrong | predicted class, confidence bin) per image, the rates fitted on these masks (a ceiling)."""
    cells, wrongs = [], []
    for index, image_id in enumerate(stored.ids):
        label, truth = stored.pixels("label", index), read_mask(masks[image_id])
        kept = label != ignore
        bins = np.minimum((stored.pixels("confidence", index)[kept].astype(np.float64) / BIN).astype(int), BINS - 1)
        cells.append(label[kept].astype(int) * BINS + bins)
        wrongs.append(np.where(truth[kept] == ignore, np.nan, label[kept] != truth[kept]))
    cell, wrong = np.concatenate(cells), np.concatenate(wrongs)
    counted = ~np.isnan(wrong)
    totals = np.bincount(cell[counted], minlength=classes * BINS)
    rate = np.bincount(cell[counted], weights=wrong[counted], minlength=classes * BINS) / np.maximum(totals, 1)
    return np.array([rate[image_cells].sum() for image_cells in cells])


def _spearman(scores: np.ndarray, wrong: np.ndarray) -> float:
    """Rank correlation of a score with the true error counts (NaN scores ranked last)."""
    ranks = np.argsort(np.argsort(np.nan_to_num(scores, nan=-np.inf), kind="stable"), kind="stable")
    truth = np.argsort(np.argsort(wrong, kind="stable"), kind="stable")
    return float(np.corrcoef(ranks, truth)[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", nargs="+", default=["shapes", "aerial"], choices=["shapes", "aerial"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--rounds", nargs="+", type=int, default=[1])
    args = parser.parse_args()
    load = {"start": os.getloadavg()}
    runs: dict[str, dict[str, dict[str, object]]] = {}
    for seed in args.seeds:
        for kind in args.kinds:
            for round_index in args.rounds:
                config = ensure_round(kind, seed, round_index)
                figures = measure(config, round_index)
                runs.setdefault(f"{kind} round {round_index}", {})[str(seed)] = figures
                ratios = figures["ratio_at_10"]
                progress(f"{kind} seed {seed} round {round_index}: at 10 % oracle {figures['oracle']['0.10']:.3f}; "
                         + ", ".join(f"{name} {figures['scores'][name]['0.10']:.3f} ({ratios[name]:.2f}x)"
                                     for name in SCORED))  # fmt: skip
    summary = {
        benchmark: {
            name: {
                "min_ratio_at_10": min(seeds[s]["ratio_at_10"][name] for s in seeds),
                "mean_share_at_10": float(np.mean([seeds[s]["scores"][name]["0.10"] for s in seeds])),
                "mean_oracle_at_10": float(np.mean([seeds[s]["oracle"]["0.10"] for s in seeds])),
            }
            for name in SCORED
        }
        for benchmark, seeds in runs.items()
    }
    for benchmark, table in summary.items():
        for name, row in table.items():
            print(f"{benchmark}: {name:20s} mean share at 10 % {row['mean_share_at_10']:.3f} "
                  f"(oracle {row['mean_oracle_at_10']:.3f}); lowest ratio over seeds {row['min_ratio_at_10']:.2f}")  # fmt: skip
    chosen_passes = all(table[REVIEW_SCORE]["min_ratio_at_10"] >= 0.8 for table in summary.values())
    load["end"] = os.getloadavg()
    payload = {"seeds": args.seeds, "rounds": args.rounds, "runs": runs, "summary": summary,
               "chosen": REVIEW_SCORE, "chosen_at_least_0.8_of_oracle_every_seed": chosen_passes,
               "loadavg": load}  # fmt: skip
    print(f"wrote {write_record('review-efficiency', payload)}")


if __name__ == "__main__":
    main()
