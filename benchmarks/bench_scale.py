"""Does rectify stay flat as the unlabeled split grows? The curve to 100k images, in shards, then merged.

    python benchmarks/bench_scale.py [--sizes 10000 30000 100000] [--shards 4] [--side 32] [--batch-size 64]

A tiny model (round 0 trained for `--train-steps` on a small generated labeled set, its index
built) rectifies N small unlabeled images, `--side` px square: `--distinct` generated images,
each reached through N / distinct symbolic links, so making the split costs seconds (the
decode of every image is still paid, each time). For each N, in a fresh process:
  - the N images in `--shards` shards, one after the other (`rectify --shard i/n`), TTA off, no
    masks (no quality report): seconds per image, and the process's peak RSS after them;
  - `rectify --merge` (virtual datasets) and `--merge --copy`: seconds and the merged file's
    bytes, beside the shards' bytes;
  - the round's training reads of pseudo labels (`label` and `weight` of `--reads` images in
    the pseudo loader's seeded random order), from the virtual file and from the copied one,
    alternating `--repeats` times, best of each: images/s, and apart the seconds to open each
    (once per loader worker; a joined file's sources are checked then);
  - the labeled prototypes' index at N vectors (synthetic, as bench_index: `index build
    --factory auto`, IVF tuned to recall@1 ≥ 0.95): build seconds and class-restricted searches/s.
Then the demo (`cisctool demo`'s data: 500 unlabeled images, 96–128 px; tiny model) in 4 shards
and merged: the merged file's bytes against its shards'. Writes a JSON record to
benchmarks/results/ (bench name "scale").
"""

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from cisctool.config import Config, load_config, with_overrides
from cisctool.console import console, set_verbosity
from cisctool.data.datasets import SeededSampler
from cisctool.data.demo import make_demo
from cisctool.method.index import auto_factory, build_index, search_by_class, tune_nprobe
from cisctool.steps.index import ensure_round_index
from cisctool.steps.rectify import rectify_round
from cisctool.steps.shards import merge_shards, shard_path
from cisctool.steps.train import train_round
from cisctool.store.layout import RunLayout
from cisctool.store.pseudo_labels import PseudoLabels

from bench_index import synthetic_prototypes
from records import progress, write_record

ROOT = Path(__file__).resolve().parent
SEARCH_BATCH = 48  # 16 images × 3 classes, as rectify searches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--side", type=int, default=32)
    parser.add_argument("--distinct", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--train-steps", type=int, default=40)
    parser.add_argument("--reads", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=ROOT / "work" / "bench_scale")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process measuring one size
    args = parser.parse_args()
    set_verbosity(-1)
    if args.one:
        print(json.dumps(_measure(args, args.one)))
        return
    _prepare(args)
    rows = []
    for size in args.sizes:
        command = [sys.executable, __file__, *sys.argv[1:], "--one", str(size)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        progress(json.dumps(rows[-1]))
    demo = _demo_merge(args)
    progress(json.dumps(demo))
    first, last = rows[0], rows[-1]
    ratios = {
        "seconds_per_image_last_over_first": last["seconds_per_image"] / first["seconds_per_image"],
        "peak_rss_last_over_first": last["peak_rss_bytes"] / first["peak_rss_bytes"],
        "virtual_merge_seconds_last_over_first": last["merge_virtual_seconds"] / first["merge_virtual_seconds"],
        "read_rate_virtual_over_copy": [row["read_virtual_per_second"] / row["read_copy_per_second"] for row in rows],
    }
    figures = {"sizes": args.sizes, "shards": args.shards, "side": args.side, "distinct_images": args.distinct,
               "batch_size": args.batch_size, "train_steps": args.train_steps, "reads": args.reads,
               "repeats": args.repeats, "rows": rows, "ratios": ratios, "demo": demo}  # fmt: skip
    console.quiet = False
    console.print_json(json.dumps({"rows": rows, "ratios": ratios}))
    console.print(f"wrote {write_record('scale', {'figures': figures})}")


def _config(args: argparse.Namespace) -> Config:
    data = args.workdir / "data"
    overrides = {
        "workdir": str(args.workdir), "name": "scale", "model.backbone": "tiny", "model.pretrained": "",
        "train.max_steps": args.train_steps, "train.crop_size": 64, "train.batch_size": 8, "train.workers": 0,
        "rectify.tta": False, "rectify.batch_size": args.batch_size,
    }  # fmt: skip
    return load_config(data / "cisctool.toml", overrides)


def _prepare(args: argparse.Namespace) -> None:
    """The generated data (labeled set, `distinct` small unlabeled images), round 0 and its index, once."""
    data = args.workdir / "data"
    if not (data / "cisctool.toml").is_file():
        shutil.rmtree(data, ignore_errors=True)
        make_demo(data, seed=3, num_labeled=16, num_unlabeled=args.distinct, num_val=4)
    small = data / f"small-{args.side}"
    if not small.is_dir():
        small.mkdir()
        sources = [line.split()[0] for line in (data / "splits/unlabeled.txt").read_text().splitlines()]
        for index, source in enumerate(sources):
            with Image.open(data / source) as image:
                image.convert("RGB").resize((args.side, args.side), Image.BILINEAR).save(small / f"{index}.png")
    config = _config(args)
    if not RunLayout.of(config).model(0).is_file():
        train_round(config, 0, "cpu")
    ensure_round_index(config, 0, "cpu")


def _demo_merge(args: argparse.Namespace) -> dict:
    """The default demo's unlabeled split in `--shards` shards, merged: its bytes beside the shards'."""
    data = args.workdir / "demo"
    if not (data / "cisctool.toml").is_file():
        make_demo(data)
    overrides = {"workdir": str(args.workdir / "demo-run"), "model.backbone": "tiny", "model.pretrained": "",
                 "train.max_steps": args.train_steps, "train.workers": 0, "rectify.tta": False}  # fmt: skip
    config = load_config(data / "cisctool.toml", overrides)
    if not RunLayout.of(config).model(0).is_file():
        train_round(config, 0, "cpu")
    ensure_round_index(config, 0, "cpu")
    shutil.rmtree(RunLayout.of(config).round_dir(1), ignore_errors=True)
    for index in range(args.shards):
        rectify_round(config, 1, "cpu", shard=(index, args.shards))
    final = RunLayout.of(config).pseudo(1)
    shards = sum(shard_path(final, index, args.shards).stat().st_size for index in range(args.shards))
    merge_shards(config, 1)
    with PseudoLabels(final) as stored:
        images = len(stored)
    return {"images": images, "shard_bytes": shards, "merged_virtual_bytes": final.stat().st_size,
            "merged_over_shards": final.stat().st_size / shards}  # fmt: skip


def _split(args: argparse.Namespace, size: int) -> Path:
    """A split of `size` ids, each a link to one of the distinct small images."""
    data = args.workdir / "data"
    folder = data / f"links-{args.side}-{size}"
    if not folder.is_dir():
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        for index in range(size):
            os.symlink(data / f"small-{args.side}" / f"{index % args.distinct}.png", partial / f"u{index:07d}.png")
        partial.rename(folder)
    split = data / f"splits/scale_{args.side}_{size}.txt"
    split.write_text("".join(f"{folder.name}/u{index:07d}.png\n" for index in range(size)))
    return split


def _measure(args: argparse.Namespace, size: int) -> dict:
    """One size, in this (fresh) process."""
    config = with_overrides(_config(args), {"data.unlabeled": str(_split(args, size).relative_to(args.workdir / "data"))})
    round_dir = RunLayout.of(config).round_dir(1)
    shutil.rmtree(round_dir, ignore_errors=True)
    started = time.perf_counter()
    for index in range(args.shards):
        rectify_round(config, 1, "cpu", shard=(index, args.shards))
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    final = RunLayout.of(config).pseudo(1)
    shard_bytes = sum(shard_path(final, index, args.shards).stat().st_size for index in range(args.shards))
    row = {"images": size, "rectify_seconds": seconds, "seconds_per_image": seconds / size,
           "peak_rss_bytes": peak, "shard_bytes": shard_bytes}  # fmt: skip
    copied = final.with_name("pseudo.copy.h5")
    for copy in (True, False):
        started = time.perf_counter()
        merge_shards(config, 1, copy=copy)
        row[f"merge_{'copy' if copy else 'virtual'}_seconds"] = time.perf_counter() - started
        row[f"merged_{'copy' if copy else 'virtual'}_bytes"] = final.stat().st_size
        if copy:
            final.rename(copied)
    best = {"virtual": (math.inf, 0.0), "copy": (math.inf, 0.0)}
    for _ in range(args.repeats):  # alternating, best of each
        for arm, path in (("virtual", final), ("copy", copied)):
            opened, rate = _read_rate(path, size, args.reads)
            best[arm] = (min(best[arm][0], opened), max(best[arm][1], rate))
    for arm, (opened, rate) in best.items():
        row.update({f"open_{arm}_seconds": opened, f"read_{arm}_per_second": rate})
    row.update(_index_times(size))
    return row


def _read_rate(path: Path, size: int, reads: int) -> tuple[float, float]:
    """(seconds to open, images/s) of the pseudo loader's reads (label and weight) in its seeded random
    order: a worker opens the file once (a joined file's sources checked then), then reads all round."""
    order = list(SeededSampler(size, 0, 0, reads))
    started = time.perf_counter()
    with PseudoLabels(path) as stored:
        opened = time.perf_counter() - started
        started = time.perf_counter()
        for row, _ in order:
            stored.pixels("label", row)
            stored.pixels("weight", row)
        return opened, reads / (time.perf_counter() - started)


def _index_times(count: int) -> dict:
    """Build (auto factory, tuned) and class-restricted search of `count` labeled prototypes (256-d, 21 classes)."""
    vectors, labels = synthetic_prototypes(count, 256, 21, seed=21)
    queries, query_classes = synthetic_prototypes(SEARCH_BATCH * 20, 256, 21, seed=21)
    started = time.perf_counter()
    factory = auto_factory(count)
    prototype_index = build_index(vectors, np.arange(count), labels, np.ones(count), [], factory)
    if factory != "Flat":
        tune_nprobe(prototype_index, vectors)
    build = time.perf_counter() - started
    started = time.perf_counter()
    for start in range(0, len(queries), SEARCH_BATCH):
        search_by_class(prototype_index, queries[start : start + SEARCH_BATCH], query_classes[start : start + SEARCH_BATCH], 1)
    return {"index_factory": factory, "index_build_seconds": build,
            "index_searches_per_second": len(queries) / (time.perf_counter() - started)}  # fmt: skip


if __name__ == "__main__":
    main()
