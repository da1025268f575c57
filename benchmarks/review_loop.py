"""What a corrected image buys: a simulated annotator corrects the first N images of the review queue or N
random ones, then round 1 trains on them; val mIoU gained per 100 corrected images.

    python benchmarks/review_loop.py --kinds shapes aerial --seeds 0 1 2 --fractions 0.1

Per benchmark and seed it reuses (or makes) the run of benchmarks/review_efficiency.py: round 0 and
round 1's pseudo labels, the generated config unchanged. Arms, each training round 1 from the same
round-0 model and pseudo labels (a copy of the run folder per arm, under the CPU lock):
- none: no image corrected (CISC-R's round 1 as it is);
- tool K: `cisctool export --format labelstudio --worst N` (N = K of the unlabeled images), each
  task's annotation drawn from the image's true mask (the annotator), `cisctool data import`, and
  round 1 trains with `data.labeled` = the imported split;
- random K: the same for N images drawn at random (seeded).
Reports, per arm: the wrong pseudo-labelled pixels in the corrected images per image looked at, and
round 1's val mIoU against `none`, per 100 corrected images. Writes a JSON record.
"""

import argparse
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from cisctool.config import Config, load_config
from cisctool.data.labelstudio import FROM_NAME, TO_NAME, rle_encode
from cisctool.data.masks import read_mask
from cisctool.data.splits import read_split
from cisctool.method.review import REVIEW_SCORE, images_at
from cisctool.report.review import true_wrong_pixels
from cisctool.store.history import read_history
from cisctool.store.layout import RunLayout
from cisctool.store.pseudo_labels import PseudoLabels

from records import progress, write_record
from review_efficiency import CISCTOOL, LOCK, WORK, data_folder, ensure_round, settings


def arm_settings(kind: str, seed: int, arm: str, split: str | None) -> dict[str, object]:
    """The seed's run settings under the arm's own run name (and labeled split)."""
    values = {**settings(kind, seed), "name": f"{kind}-s{seed}-{arm}"}
    return {**values, "data.labeled": split} if split else values


def command(kind: str, values: dict[str, object], *words: str) -> list[str]:
    flags = [item for key, value in values.items() for item in ("--set", f"{key}={json.dumps(value)}")]
    return [str(CISCTOOL), "-q", "--config", str(data_folder(kind) / "cisctool.toml"), *flags, *words]


def annotator_export(config: Config, image_ids: list[str], path: Path) -> None:
    """A Label Studio export whose annotations are the images' true masks: the simulated person."""
    root = config.data_root
    masks = {entry.id: entry.mask for entry in read_split(root / config.data.unlabeled, root, masks_required=True)}
    tasks = []
    for number, image_id in enumerate(image_ids, start=1):
        truth = read_mask(masks[image_id])
        height, width = truth.shape
        results = [
            {"id": f"c{cls}", "type": "brushlabels", "from_name": FROM_NAME, "to_name": TO_NAME,
             "original_width": width, "original_height": height, "image_rotation": 0,
             "value": {"format": "rle", "rle": rle_encode(truth == cls), "brushlabels": [config.class_names[cls]]}}
            for cls in np.unique(truth).tolist() if cls < config.data.num_classes
        ]  # fmt: skip
        tasks.append({"id": number, "data": {"cisctool_id": image_id}, "annotations": [{"id": number, "result": results}]})
    path.write_text(json.dumps(tasks))


def prepare_arm(kind: str, seed: int, arm: str, image_ids: list[str], base: Config) -> dict[str, object]:
    """The arm's run folder (round 0 and round 1's pseudo labels copied) and, for corrections, its split."""
    values = arm_settings(kind, seed, arm, None)
    layout, base_layout = RunLayout.of(load_config(data_folder(kind) / "cisctool.toml", values)), RunLayout.of(base)
    if not layout.round_dir(0).is_dir():
        shutil.copytree(base_layout.round_dir(0), layout.round_dir(0))
        layout.round_dir(1).mkdir(parents=True)
        for item in base_layout.round_dir(1).glob("pseudo*"):
            shutil.copy2(item, layout.round_dir(1) / item.name)
    if not image_ids:
        return values
    folder = WORK / kind / "annotator" / values["name"]
    folder.mkdir(parents=True, exist_ok=True)
    _same_queue(folder / "queue.txt", image_ids)
    annotator_export(base, image_ids, folder / "export.json")
    split = f"splits/review-{values['name']}.txt"
    subprocess.run(
        command(kind, values, "data", "import", "--format", "labelstudio", str(folder / "export.json"),
                "--out", str(data_folder(kind) / split)),
        check=True,
    )  # fmt: skip
    return arm_settings(kind, seed, arm, split)


def _same_queue(path: Path, image_ids: list[str]) -> None:
    """Remember the arm's corrected images; a reused arm corrected for another queue (say, before the
    review score changed) would report a stale round 1, so it stops and names the folder to remove."""
    if path.is_file() and path.read_text().split() != image_ids:
        raise SystemExit(f"{path.parent}: made for another queue; remove it and the arm's run folder")
    path.write_text("\n".join(image_ids) + "\n")


def train_round_1(kind: str, values: dict[str, object]) -> float:
    """Round 1 trained (under the CPU lock) unless done; its val mIoU in %."""
    config = load_config(data_folder(kind) / "cisctool.toml", values)
    history = read_history(RunLayout.of(config))
    if len(history) < 2 or not history[1].val:
        started = time.perf_counter()
        subprocess.run(["flock", LOCK, *command(kind, values, "train", "--round", "1")], check=True)
        progress(f"{values['name']}: round 1 trained in {time.perf_counter() - started:.0f} s")
        history = read_history(RunLayout.of(config))
    return 100 * float(history[1].val["mean_iou"])


def tool_queue(kind: str, base: Config, count: int, folder: Path) -> list[str]:
    """The first `count` ids of `cisctool export --worst` (the tool's own queue, read from its tasks file)."""
    tasks_file = folder / f"worst-{count}.json"
    subprocess.run(command(kind, settings_of(base), "export", "--round", "1", "--format", "labelstudio",
                           "--worst", str(count), "--out", str(tasks_file)), check=True)  # fmt: skip
    return [task["data"]["cisctool_id"] for task in json.loads(tasks_file.read_text())]


def settings_of(config: Config) -> dict[str, object]:
    return {"workdir": str(config.workdir), "train.seed": config.train.seed, "name": config.name}


def run_seed(kind: str, seed: int, fractions: list[float]) -> dict[str, object]:
    base = ensure_round(kind, seed, 1)
    with PseudoLabels(RunLayout.of(base).pseudo(1)) as stored:
        ids = list(stored.ids)
        root = base.data_root
        masks = {e.id: e.mask for e in read_split(root / base.data.unlabeled, root, masks_required=True)}
        wrong = dict(zip(ids, true_wrong_pixels(stored, masks, base.data.ignore_index).tolist()))
    figures: dict[str, object] = {"none": {"val_miou": train_round_1(kind, prepare_arm(kind, seed, "none", [], base))}}
    folder = WORK / kind / "annotator"
    folder.mkdir(parents=True, exist_ok=True)
    for fraction in fractions:
        count = images_at(fraction, len(ids))
        rng = np.random.default_rng(1000 + seed)
        orders = {"tool": tool_queue(kind, base, count, folder),
                  "random": [ids[i] for i in rng.choice(len(ids), size=count, replace=False)]}  # fmt: skip
        for order, chosen in orders.items():
            arm = f"{order}{round(100 * fraction)}"
            miou = train_round_1(kind, prepare_arm(kind, seed, arm, chosen, base))
            found = sum(wrong[image_id] for image_id in chosen)
            gain = miou - figures["none"]["val_miou"]
            figures[arm] = {"images": count, "val_miou": miou, "gain": gain, "gain_per_100": 100 * gain / count,
                            "wrong_found": found, "wrong_per_image": found / count,
                            "share_of_wrong": found / max(sum(wrong.values()), 1)}  # fmt: skip
            progress(f"{kind} seed {seed} {arm}: {found / count:.0f} wrong px per image, val mIoU {miou:.2f} "
                     f"({gain:+.2f}, {100 * gain / count:+.2f} per 100 images)")  # fmt: skip
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", nargs="+", default=["shapes", "aerial"], choices=["shapes", "aerial"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.05, 0.10])
    args = parser.parse_args()
    load = {"start": os.getloadavg()}
    runs = {kind: {} for kind in args.kinds}
    for seed in args.seeds:
        for kind in args.kinds:
            runs[kind][str(seed)] = run_seed(kind, seed, args.fractions)
    summary = {}
    for kind, seeds in runs.items():
        arms = [arm for arm in next(iter(seeds.values())) if arm != "none"]
        summary[kind] = {
            arm: {f"{key}_{stat}": float(reduce([seeds[s][arm][key] for s in seeds]))
                  for key in ("gain", "gain_per_100", "wrong_per_image", "share_of_wrong")
                  for stat, reduce in (("mean", np.mean), ("std", np.std))}
            for arm in arms
        }  # fmt: skip
        for arm, row in summary[kind].items():
            print(f"{kind} {arm}: {row['wrong_per_image_mean']:.0f} wrong px per image looked at, val mIoU "
                  f"{row['gain_mean']:+.2f} ± {row['gain_std']:.2f} ({row['gain_per_100_mean']:+.2f} ± "
                  f"{row['gain_per_100_std']:.2f} per 100 images), {len(seeds)} seeds")  # fmt: skip
    payload = {"seeds": args.seeds, "fractions": args.fractions, "review_score": REVIEW_SCORE,
               "std": "population (ddof 0) over the seeds", "runs": runs, "summary": summary,
               "loadavg": load | {"end": os.getloadavg()}}  # fmt: skip
    print(f"wrote {write_record('review-loop', payload)}")


if __name__ == "__main__":
    main()
