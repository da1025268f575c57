"""Can the training loaders keep a GPU fed at VOC size, and with how many workers?

    python benchmarks/bench_loader.py [--workers 1,2,4,8] [--items 16] [--backbone resnet101]

No model: `cisctool train`'s own loaders (`labeled_loader`, `pseudo_loader`) over a synthetic set at
VOC's sizes (benchmarks/voc_data.py: 500×375 JPEG, crop 321, 8 labeled + 8 pseudo-labelled images
a step, pseudo labels and weights read from a real pseudo.h5). Measured in one run:
  - one core, in this process: seconds an image spends in each stage (JPEG decode, mask read,
    HDF5 reads, augmentation) and the whole `__getitem__` of each dataset: images/s per worker;
  - the loaders with 0 (main process), then each of `--workers` worker processes: images/s
    delivered, and round 1's two loaders zipped as training zips them (steps/s);
  - the arithmetic: workers (cores) a GPU host needs at the step rate a GPU reaches (estimated
    from the step's FLOPs, benchmarks/step_flops.py; or measured, `--gpu-record` of
    `bench_train.py --size voc`).
Loaders get the workers asked for, as on a GPU host (on a CPU `loader_workers` would leave them
only the cores torch's threads do not use). Worker processes beyond the machine's cores share them:
past that point the figures measure the cores, not the workers.
"""

import argparse
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from rich.table import Table

from cisctool.config import Config, with_overrides
from cisctool.console import console, set_verbosity
from cisctool.data.datasets import LabeledPairDataset, PseudoLabeledDataset
from cisctool.data.masks import read_image, read_mask
from cisctool.data.splits import split_entries
from cisctool.data.transforms import pseudo_transform, train_transform
from cisctool.steps import train_data
from cisctool.steps.distributed import Processes
from cisctool.store.pseudo_labels import PseudoLabels

from records import progress, write_record
from step_flops import estimated_step_rates, training_flops_per_image
from voc_data import ensure_round1_pseudo, ensure_voc_like

ROOT = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2,4,8", help="comma-separated worker counts")
    parser.add_argument("--items", type=int, default=16, help="dataset items timed on one core")
    parser.add_argument("--batches", type=int, default=6,
                        help="batches timed per worker count (at least 8 a worker: prefetched batches weigh little)")
    parser.add_argument("--backbone", default="resnet101", choices=("resnet50", "resnet101"))
    parser.add_argument("--labeled", type=int, default=32)
    parser.add_argument("--unlabeled", type=int, default=64)
    parser.add_argument("--gpu-record", type=Path,
                        help="a `bench_train.py --size voc` record from a GPU: its minimal loop's steps/s")
    parser.add_argument("--workdir", type=Path, default=ROOT / "work" / "bench_loader")
    args = parser.parse_args()
    set_verbosity(-1)
    torch.set_num_threads(1)  # the stages on one core, as a worker; the main process only receives
    config = ensure_voc_like(args.workdir / f"data-{args.labeled}-{args.unlabeled}", args.labeled, args.unlabeled,
                             args.backbone, {"workdir": str(args.workdir), "name": "bench-loader"})  # fmt: skip
    ensure_round1_pseudo(config)
    selection = train_data.select_pseudo_labels(config, 1)
    labeled = LabeledPairDataset(
        split_entries(config, "labeled"),
        train_data.pair_settings(config),
    )  # fmt: skip
    stages = stage_seconds(config, labeled, selection, args.items)
    progress(f"one core: {stages}")
    per_worker = {name: 1 / stages[f"{name} item, per image"] for name in ("labeled", "pseudo")}
    rates = {}
    for workers in [0, *(int(item) for item in args.workers.split(","))]:
        rates[str(workers)] = loader_rates(config, labeled, selection, workers, max(args.batches, 8 * workers))
        progress(f"{workers} worker(s): {rates[str(workers)]}")
    figures = {
        "backbone": args.backbone, "crop_size": config.train.crop_size,
        "labeled_images_per_step": train_data.labeled_batch_size(config, 1),
        "pseudo_images_per_step": train_data.pseudo_batch_size(config),
        "cores": len(os.sched_getaffinity(0)), "stage_seconds_per_image": stages,
        "images_per_second_per_worker": per_worker, "loaders": rates,
        "workers_needed": workers_needed(config, per_worker, args.gpu_record),
    }  # fmt: skip
    console.quiet = False
    console.print(_table(figures))
    console.print(f"wrote {write_record('loader', {'figures': figures})}")


def stage_seconds(
    config: Config, labeled: LabeledPairDataset, selection: train_data.PseudoSelection, items: int
) -> dict[str, float]:
    """Mean seconds per image of each loading stage, and of each dataset's whole item, on this core."""
    settings = train_data.pair_settings(config)
    rng = np.random.default_rng(0)
    entries = labeled.entries[:items]
    timings: dict[str, list[float]] = {}

    def timed(name: str, work, *values):
        started = time.perf_counter()
        result = work(*values)
        timings.setdefault(name, []).append(time.perf_counter() - started)
        return result

    with PseudoLabels(selection.path) as stored:
        for position, entry in zip(selection.positions[:items].tolist(), entries, strict=False):
            image = timed("decode JPEG", read_image, entry.image)
            mask = timed("read mask PNG", read_mask, entry.mask)
            timed("labeled augmentation (scale, normalise, crop, flip)", train_transform, image, mask, rng,
                  settings.crop_size, settings.scale_range, settings.ignore_index)  # fmt: skip
            label = timed("HDF5 label read", stored.pixels, "label", position)
            weight = timed("HDF5 weight read", stored.pixels, "weight", position).astype(np.float32)
            timed("pseudo augmentation (scale, strong colour, normalise, crop, flip)", pseudo_transform, image,
                  label, weight, rng, settings.crop_size, settings.scale_range, settings.ignore_index)  # fmt: skip
    pseudo = _pseudo_dataset(config, selection)
    for index in range(min(items, len(labeled))):
        timed("labeled item, per image", lambda key: labeled[key], (index, index))  # a pair: two images
    for index in range(min(items, len(pseudo))):
        timed("pseudo item, per image", lambda key: pseudo[key], (index, index))
    means = {name: float(np.mean(values)) for name, values in timings.items()}
    means["labeled item, per image"] /= 2
    return means


def _pseudo_dataset(config: Config, selection: train_data.PseudoSelection) -> PseudoLabeledDataset:
    positions = selection.positions.tolist()
    return PseudoLabeledDataset(lambda: PseudoLabels(selection.path), selection.unlabeled, positions,
                                train_data.pair_settings(config))  # fmt: skip


@contextmanager
def uncapped_workers() -> Iterator[None]:
    """Training loaders with the workers asked for, as `loader_workers` gives them on a GPU host."""
    original = train_data.loader_workers
    train_data.loader_workers = lambda requested, device: requested
    try:
        yield
    finally:
        train_data.loader_workers = original


def loader_rates(
    config: Config, labeled: LabeledPairDataset, selection: train_data.PseudoSelection, workers: int, batches: int
) -> dict[str, float]:
    """Images/s of each loader and round-1 steps/s of both zipped, `workers` each; the clock starts once
    the batches prefetched during the workers' start are taken, so it measures the steady rate."""
    config = with_overrides(config, {"train.workers": workers})
    skip = 2 * workers + 1  # DataLoader's prefetch: 2 batches a worker, filled while the first is made
    total = skip + batches

    def build() -> dict[str, object]:
        with uncapped_workers():
            return {
                "labeled": train_data.labeled_loader(config, 1, labeled, 0, total, Processes(), "cpu"),
                "pseudo": train_data.pseudo_loader(config, 1, selection, 0, total, Processes(), "cpu"),
            }

    figures = {}
    for name, loader in build().items():
        images_a_batch = loader.batch_size * (2 if name == "labeled" else 1)  # labeled batches hold pairs
        figures[f"{name} images/s"] = _steady_rate(iter(loader), batches, skip) * images_a_batch
    both = zip(*(iter(loader) for loader in build().values()))
    figures["round 1 steps/s (both loaders)"] = _steady_rate(both, batches, skip)
    return figures


def _steady_rate(batches: Iterator[object], count: int, skip: int) -> float:
    """Batches/s over `count` batches after the first `skip` (those the workers prefetched while starting)."""
    for _ in range(skip):
        next(batches)
    started = time.perf_counter()
    for _ in range(count):
        next(batches)
    return count / (time.perf_counter() - started)


def workers_needed(config: Config, per_worker: dict[str, float], gpu_record: Path | None) -> dict[str, object]:
    """Worker processes (one core each) the two loaders need at each GPU step rate: estimated from the
    step's FLOPs at the assumed effective rates, and measured where a GPU record is given."""
    labeled_images, pseudo_images = train_data.labeled_batch_size(config, 1), train_data.pseudo_batch_size(config)
    flops_per_step = training_flops_per_image(config) * (labeled_images + pseudo_images)
    step_rates = {f"estimated at {name}": rate for name, rate in estimated_step_rates(flops_per_step).items()}
    if gpu_record is not None:
        figures = json.loads(gpu_record.read_text())["figures"]
        step_rates[f"measured: {gpu_record.name} minimal loop round 1"] = figures["steps_per_second"]["minimal_round1"]
    cores_per_step = labeled_images / per_worker["labeled"] + pseudo_images / per_worker["pseudo"]
    return {
        "training_flops_per_step": flops_per_step,
        "worker_seconds_per_step": cores_per_step,
        "at": {name: {"steps_per_second": rate, "images_per_second": rate * (labeled_images + pseudo_images),
                      "workers": rate * cores_per_step} for name, rate in step_rates.items()},
    }  # fmt: skip


def _table(figures: dict) -> Table:
    table = Table(title=f"training loaders at VOC size (500×375 JPEG, crop {figures['crop_size']}), "
                        f"{figures['cores']} cores: images/s")  # fmt: skip
    for column in ("workers", "labeled", "pseudo-labelled", "round 1 steps/s"):
        table.add_column(column, justify="right")
    for workers, rates in figures["loaders"].items():
        table.add_row(workers, *(f"{value:.1f}" for value in rates.values()))
    per_worker = figures["images_per_second_per_worker"]
    table.add_row("one core, per worker", f"{per_worker['labeled']:.1f}", f"{per_worker['pseudo']:.1f}", "")
    for name, need in figures["workers_needed"]["at"].items():
        table.add_row(f"needed {name}", "", "",
                      f"{need['steps_per_second']:.1f} steps/s: {need['workers']:.0f} workers")
    return table


if __name__ == "__main__":
    main()
