"""How much does rectification cost on top of plain inference, and against the official per-image loop?

    python benchmarks/bench_rectify.py [--size demo|voc] [--images 500] [--batch-size 16] [--scale 1] [--repeats 3]
                                       [--device cpu|cuda] [--stub-forward] [--skip-rss] [--set KEY=VALUE]

`--size demo`: N unlabeled demo images (96–128 px; `--scale` upscales them) and a demo model trained
for `--train-steps`. `--size voc`: N images of a synthetic set at VOC's sizes (benchmarks/voc_data.py,
500×375 JPEG) and DeepLabV3+ on `--backbone` at output stride 16, trained for `--train-steps` (0: the
untrained model, whose predictions hold fewer classes an image than a trained one's). No masks: no
quality report. In one run ((a) and (b) `--repeats` times, interleaved, best of each):
  (a) plain batched inference: rectify's own loader (the same batches, workers and padding), model
      and views (the config's TTA), argmax, nothing written;
  (b) `rectify` as the CLI runs it (signals, guides, CISC maps, weights, HDF5 written);
  (c) a per-image reimplementation of the official loop (the same views): one image at a time at its
      own size, a Python loop over its classes, one index search per class, CISC map and weight in
      numpy, one HDF5 write per image; `--repeats` passes over the same images, best of them, every
      pass's rate recorded (the first meets each image size for the first time, the later ones not).
(a) and (b) start their clocks alike: once the loader's workers are started, before the first batch.
Prints images/s of each and the ratios b/a (target ≥ 0.9) and b/c (target ≥ 5) — with a/c,
the most b/c can be when rectify costs nothing beyond the forward pass — then the
peak RSS of (b), and of (a) for comparison, during the work (set-up excluded), each in a
fresh process at N and at 8N images (target: growth of (b) ≤ 10 %; `--skip-rss` leaves it out),
and writes a JSON record to benchmarks/results/.

With `--stub-forward`, also (d): `rectify` with the model's forward replaced by its outputs
replayed from memory (recorded in one untimed pass): what rectify does besides the
forward, i.e. the most images/s it can reach once a GPU makes the forward nearly free.
"""

import argparse
import functools
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from rich.table import Table
from torch import nn
from torch.utils.data import DataLoader

from cisctool.cli.options import parse_setting
from cisctool.config import Config, load_config, with_overrides
from cisctool.console import console, set_verbosity
from cisctool.data.datasets import InferenceDataset, pad_collate
from cisctool.data.demo import make_demo
from cisctool.data.splits import split_entries
from cisctool.data.workers import loader_workers
from cisctool.method.index import search_by_class, stored_vectors
from cisctool.method.signals import RectifySettings, fixed_batches, predict
from cisctool.steps import rectify as rectify_module
from cisctool.steps.index import ensure_round_index, open_round_index
from cisctool.steps.rectify import image_shapes, rectify_round
from cisctool.steps.signal_stream import _loader as rectify_loader  # (a) reads what (b) reads
from cisctool.steps.signal_stream import guided_model
from cisctool.steps.train import train_round
from cisctool.store.layout import RunLayout
from cisctool.store.pseudo_labels import PseudoImage, PseudoLabels, PseudoWriter

from records import progress, write_record
from voc_data import ensure_round0_model, ensure_voc_like

ROOT = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("demo", "voc"), default="demo")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of (a) and (b), interleaved, and passes of (c); best of each")
    parser.add_argument("--scale", type=int, default=1,
                        help="--size demo: upscale the 96–128 px demo images (4 gives 384–512 px)")
    parser.add_argument("--backbone", default="resnet101", choices=("resnet50", "resnet101"), help="--size voc")
    parser.add_argument("--train-steps", type=int, default=150, help="round-0 steps (predictions look like shapes)")
    parser.add_argument("--official-images", type=int, default=0, help="(c) on the first K images (0: all N)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--stub-forward", action="store_true", help="also time rectify with the forward replayed")
    parser.add_argument("--skip-rss", action="store_true", help="leave out the peak-RSS runs at N and 8N images")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--workdir", type=Path, default=ROOT / "work" / "bench_rectify")
    parser.add_argument("--rss-child", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--rss-of", choices=("rectify", "plain"), default="rectify", help=argparse.SUPPRESS)
    args = parser.parse_args()
    set_verbosity(-1)
    config = _prepare(args)
    if args.rss_child:
        _rss_child(config, args)
        return
    progress(f"prepared {args.images} {args.size} images, round-0 model and index")
    split_config = with_overrides(config, {"data.unlabeled": f"splits/images_{args.images}.txt"})
    figures = _throughput(split_config, args)
    if not args.skip_rss:
        figures.update(_rss_figures(args))
    console.quiet = False
    console.print(_table(figures))
    console.print(f"wrote {write_record(f'rectify-{args.size}', {'figures': figures}, args.device)}")


def _throughput(config: Config, args: argparse.Namespace) -> dict:
    """(a), (b), (c) and (d) on the same N images, and the ratios."""
    plain, rectify, end_to_end = 0.0, 0.0, 0.0
    for _ in range(args.repeats):  # interleaved, best of each: the machine's noise hits both alike
        plain = max(plain, _plain_inference(config, args.device))
        started = time.perf_counter()
        outcome = rectify_round(config, 1, args.device, force=True)
        end_to_end = max(end_to_end, args.images / (time.perf_counter() - started))
        rectify = max(rectify, outcome.images_per_second)
        progress(f"(a) plain {plain:.1f} img/s, (b) rectify {rectify:.1f} img/s (best so far)")
    with PseudoLabels(outcome.path) as stored:
        guided = float(np.mean((stored.guides >= 0).sum(axis=1)))
    official_passes = _official_loop(config, args.device, args.repeats, args.official_images or args.images)
    official = max(official_passes)
    progress(f"(c) official-style loop {official:.1f} img/s (passes {[round(rate, 2) for rate in official_passes]})")
    stub = _stub_forward_rectify(config, args.device, args.repeats) if args.stub_forward else None
    if stub is not None:
        progress(f"(d) rectify with the forward replayed {stub:.1f} img/s")
    return {
        "size": args.size, "images": args.images, "image_sides": _image_sides(config),
        "backbone": config.model.backbone, "overrides": args.overrides, "batch_size": args.batch_size,
        "repeats": args.repeats, "workers": loader_workers(min(config.train.workers, 4), args.device),
        "tta_scales": list(RectifySettings.of(config).tta_scales),
        "tta_flip": RectifySettings.of(config).tta_flip, "amp": config.train.amp and args.device.startswith("cuda"),
        "guided_classes_per_image": guided,
        "plain_images_per_second": plain, "rectify_images_per_second": rectify,
        "rectify_end_to_end_images_per_second": end_to_end,
        "official_loop_images": min(args.official_images or args.images, args.images),
        "official_loop_images_per_second": official, "official_loop_passes_images_per_second": official_passes,
        "ratio_rectify_vs_plain": rectify / plain, "ratio_rectify_vs_official": rectify / official,
        "ratio_plain_vs_official": plain / official, "rectify_stub_forward_images_per_second": stub,
    }  # fmt: skip


def _rss_figures(args: argparse.Namespace) -> dict:
    """Peak RSS of (b) and of (a) at N and 8N images, each in a fresh process."""
    counts = (args.images, 8 * args.images)
    rss = {count: _child_rss(count, "rectify") for count in counts}
    plain_rss = {count: _child_rss(count, "plain") for count in counts}
    progress(f"peak RSS KiB, rectify {rss}, plain {plain_rss}")
    return {
        "peak_rss_kib": {str(count): value for count, value in rss.items()},
        "rss_growth": rss[8 * args.images] / rss[args.images] - 1,
        "plain_peak_rss_kib": {str(count): value for count, value in plain_rss.items()},
        "plain_rss_growth": plain_rss[8 * args.images] / plain_rss[args.images] - 1,
    }


def _rss_child(config: Config, args: argparse.Namespace) -> None:
    """In a fresh process: print the peak RSS (KiB) of (b) or (a) over `--rss-child` images."""
    child_config = with_overrides(config, {"data.unlabeled": f"splits/images_{args.rss_child}.txt"})
    _reset_peak_rss()  # the peak of the work itself, not of the set-up
    if args.rss_of == "rectify":
        rectify_round(child_config, 1, args.device, force=True)
    else:
        _plain_inference(child_config, args.device)
    print(_peak_rss_kib())


def _prepare(args: argparse.Namespace) -> Config:
    """N and 8N unlabeled images (image-only splits of both), a round-0 model and its index."""
    overrides = {**dict(parse_setting(item) for item in args.overrides), "workdir": str(args.workdir),
                 "train.max_steps": args.train_steps, "rectify.batch_size": args.batch_size}  # fmt: skip
    if args.size == "voc":
        data = args.workdir / f"voc-{args.images}"
        overrides = {"name": f"bench-voc-{args.images}-{args.backbone}-{args.train_steps}", **overrides}
        config = ensure_voc_like(data, 32, 8 * args.images, args.backbone, overrides)
        if not args.train_steps:
            ensure_round0_model(config)
    else:
        data = args.workdir / f"data-{args.images}-x{args.scale}"
        if not data.exists():  # made aside and renamed, so an interrupted run starts over
            partial = data.with_name(data.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            make_demo(partial, num_unlabeled=8 * args.images)
            _upscale(partial, args.scale)
            partial.rename(data)
        overrides = {"name": f"bench-{args.images}-x{args.scale}", "train.workers": 1, **overrides}
        config = load_config(data / "cisctool.toml", overrides)
    for count in (args.images, 8 * args.images):
        lines = (data / "splits/unlabeled.txt").read_text().split("\n")[:count]
        (data / f"splits/images_{count}.txt").write_text("\n".join(line.split()[0] for line in lines) + "\n")
    if not RunLayout.of(config).model(0).is_file():
        train_round(config, 0, args.device)
    ensure_round_index(config, 0, args.device)
    return config


def _upscale(data: Path, scale: int) -> None:
    """Every demo image (bilinear) and mask (nearest) `scale`× larger, in place."""
    if scale == 1:
        return
    paths = [(path, Image.BILINEAR) for path in (data / "images").glob("*.png")]
    paths += [(path, Image.NEAREST) for path in (data / "masks").glob("*.png")]
    for path, resample in paths:
        with Image.open(path) as image:
            image.load()
        image.resize((image.width * scale, image.height * scale), resample).save(path)


def _image_sides(config: Config) -> list[int]:
    """The shortest and longest image side of the split."""
    sides = image_shapes(_entries(config))
    return [int(sides.min()), int(sides.max())]


def _entries(config: Config) -> list:
    return split_entries(config, "unlabeled")


@torch.inference_mode()
def _plain_inference(config: Config, device: str) -> float:
    """(a): rectify's loader (its batches, workers and padding), model and views (the config's TTA),
    probabilities + argmax to the host. The clock starts as rectify's does: workers started, no batch yet."""
    model, _ = guided_model(config, RunLayout.of(config).model(0), None, device)
    settings = RectifySettings.of(config)
    entries = _entries(config)
    batches = iter(rectify_loader(config, entries, fixed_batches(len(entries), config.rectify.batch_size), device,
                                  with_masks=False))  # fmt: skip
    amp = config.train.amp and device.startswith("cuda")
    started, count = time.perf_counter(), 0
    for batch in batches:
        with torch.autocast(device_type="cuda", enabled=amp):
            images = batch["image"].to(device).contiguous(memory_format=torch.channels_last)
            predict(model, images, settings.tta_scales, flip=settings.tta_flip)[0].argmax(dim=1).cpu()
        count += len(batch["index"])
    return count / (time.perf_counter() - started)


def _official_loop(config: Config, device: str, passes: int, limit: int) -> list[float]:
    """(c): images/s of each of `passes` passes over the first `limit` images, one image at a time."""
    layout = RunLayout.of(config)
    prototype_index, _ = open_round_index(config, 0)
    model, _ = guided_model(config, layout.model(0), None, device)
    entries = _entries(config)[:limit]
    loader = DataLoader(
        InferenceDataset(entries, config.data.num_classes, config.data.ignore_index, with_masks=False),
        batch_size=1, num_workers=loader_workers(min(config.train.workers, 4), device),
        collate_fn=functools.partial(pad_collate, ignore_index=config.data.ignore_index),
    )  # each image at its own size, as the official code; rectify's workers  # fmt: skip
    vectors = stored_vectors(prototype_index)
    path = layout.round_dir(1) / "official_loop.h5"
    rates = []
    for _ in range(passes):
        writer = PseudoWriter.create(path, [entry.id for entry in entries], image_shapes(entries),
                                     config.data.num_classes, {"round": 1})  # fmt: skip
        batches = iter(loader)
        started = time.perf_counter()
        for batch in batches:
            image = _official_image(config, model, prototype_index, vectors, batch["image"].to(device))
            writer.write([int(batch["index"][0])], [image])
        rates.append(len(entries) / (time.perf_counter() - started))
        writer.close()
        path.unlink()
    return rates


@torch.inference_mode()
def _official_image(
    config: Config, model: nn.Module, prototype_index: object, vectors: np.ndarray, image: torch.Tensor
) -> PseudoImage:
    """One image as the official loop labels it: per class a numpy prototype, a search, a CISC map, a weight."""
    settings = RectifySettings.of(config)
    probabilities, features = predict(model, image, settings.tta_scales, flip=settings.tta_flip)
    confidence, label = (value.cpu().numpy() for value in probabilities[0].max(dim=0))
    features = features[0].float().cpu().numpy()  # D×h×w
    height, width = label.shape
    low = np.asarray(F.interpolate(torch.from_numpy(label[None, None].astype(np.float32)),
                                   size=features.shape[1:], mode="nearest")[0, 0]).astype(np.int64)  # fmt: skip
    weight, cisc = np.ones_like(confidence), np.full_like(confidence, np.nan)
    guides = np.full(config.data.num_classes, -1, dtype=np.int32)
    classes = [cls for cls in np.unique(label) if cls not in set(config.rectify.guide_exclude)
               and (label == cls).mean() >= config.index.min_area]  # fmt: skip
    rng = np.random.default_rng(0)
    for cls in classes:  # the official loop: one class at a time
        region = low == cls
        if not region.any():
            continue
        prototype = features[:, region].sum(axis=1) / (region.sum() + 5e-4)
        prototype /= np.linalg.norm(prototype) + 1e-12
        _, ids = search_by_class(prototype_index, prototype[None], np.array([cls]), 1)
        if ids[0, 0] < 0:
            continue
        guides[cls] = prototype_index.rows[ids[0, 0]]
        unit = features / (np.linalg.norm(features, axis=0, keepdims=True) + 1e-12)
        similarity = np.tensordot(vectors[ids[0, 0]], unit, axes=1)[None, None]
        similarity = F.interpolate(torch.from_numpy(similarity.astype(np.float32)), size=(height, width),
                                   mode="bilinear", align_corners=False)[0, 0].numpy()  # fmt: skip
        cisc[label == cls] = similarity[label == cls]
        if rng.random() < 1.0 / len(classes):  # the official weight: one class per image
            weight = 1.0 - np.abs((label == cls).astype(np.float32) - np.clip(similarity, 0, 1))
    return PseudoImage(label.astype(np.uint8), label.astype(np.uint8), confidence, cisc, weight, guides, float("nan"))


class ReplayedForward(nn.Module):
    """The model's outputs replayed by input shape: rectify's forward taken out (d)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.outputs: dict[tuple[int, ...], object] = {}

    def forward(self, images: torch.Tensor) -> object:
        key = tuple(images.shape)
        if key not in self.outputs:
            self.outputs[key] = self.model(images)
        return self.outputs[key]


def _stub_forward_rectify(config: Config, device: str, repeats: int) -> float:
    """(d): images/s of `rectify` whose forward is replayed (best of `repeats` after one recording pass)."""
    replayed: dict[str, ReplayedForward] = {}

    def guided_replay(*args: object, **kwargs: object) -> tuple[nn.Module, object]:
        model, source = guided_model(*args, **kwargs)
        return replayed.setdefault("model", ReplayedForward(model)), source

    original = rectify_module.guided_model
    rectify_module.guided_model = guided_replay
    try:
        rectify_round(config, 1, device, force=True)  # records every batch shape's outputs
        return max(rectify_round(config, 1, device, force=True).images_per_second for _ in range(repeats))
    finally:
        rectify_module.guided_model = original


def _reset_peak_rss() -> None:
    """Linux: restart the peak-RSS count (VmHWM) at the current RSS."""
    clear_refs = Path("/proc/self/clear_refs")
    if clear_refs.exists():
        clear_refs.write_text("5")


def _peak_rss_kib() -> int:
    """VmHWM where Linux has it (reset by `_reset_peak_rss`), else the process's lifetime peak."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _child_rss(count: int, what: str) -> int:
    """Peak RSS (KiB) of `rectify` or of plain inference over `count` images, in a fresh process."""
    command = [sys.executable, __file__, *sys.argv[1:], "--rss-child", str(count), "--rss-of", what]
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    return int(completed.stdout.strip().splitlines()[-1])


def _table(figures: dict) -> Table:
    low, high = figures["image_sides"]
    table = Table(title=f"rectify throughput, {figures['images']} {figures['size']} images of {low}–{high} px a "
                        f"side, {figures['backbone']}, batch {figures['batch_size']}, "
                        f"{figures['workers']} loader worker(s)")  # fmt: skip
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("(a) plain batched inference img/s", f"{figures['plain_images_per_second']:.1f}")
    table.add_row("(b) rectify img/s (loop; end to end)",
                  f"{figures['rectify_images_per_second']:.1f}; {figures['rectify_end_to_end_images_per_second']:.1f}")
    table.add_row("(c) official per-image loop img/s, best of passes",
                  f"{figures['official_loop_images_per_second']:.1f}")
    table.add_row("[bold]b / a (target ≥ 0.9)", f"[bold]{figures['ratio_rectify_vs_plain']:.2f}")
    table.add_row("[bold]b / c (target ≥ 5)", f"[bold]{figures['ratio_rectify_vs_official']:.2f}")
    table.add_row("a / c (the most b / c can be here)", f"{figures['ratio_plain_vs_official']:.2f}")
    if figures["rectify_stub_forward_images_per_second"] is not None:
        table.add_row("(d) rectify with the forward replayed img/s (the ceiling on a GPU)",
                      f"{figures['rectify_stub_forward_images_per_second']:.1f}")
    if "peak_rss_kib" not in figures:
        return table
    for count, value in figures["peak_rss_kib"].items():
        plain = figures["plain_peak_rss_kib"][count]
        table.add_row(f"peak RSS of (b); of (a), at {count} images", f"{value / 1024:.0f}; {plain / 1024:.0f} MiB")
    table.add_row("[bold]RSS growth of (b) N → 8N (target ≤ 10 %)", f"[bold]{100 * figures['rss_growth']:.1f} %")
    table.add_row("RSS growth of (a) N → 8N", f"{100 * figures['plain_rss_growth']:.1f} %")
    return table


if __name__ == "__main__":
    main()
