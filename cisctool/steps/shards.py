"""`cisctool rectify --merge`: join the shard files of `rectify --shard I/N` into one `pseudo.h5`.

Under torchrun, `rectify` shards by rank and rank 0 merges by itself, the same way.

Shard i holds the i-th of N contiguous runs of the fixed batches, computed
exactly as a single process computes them, so the merged file holds the same
values in every dataset as a single-process run. Merging checks that all N
shards are present and finished, that each holds exactly its own images
(complete and disjoint), and that all were made from the same model, index,
settings and batch size. The merged file reads every dataset from the shard
files in place (HDF5 virtual datasets, one mapping per shard:
`store/virtual.py`), so merging takes a moment whatever the split's size;
`copy` writes a self-contained file instead, every pixel copied, to ship it
without its shards.
"""

import json
import os
import re
from pathlib import Path

import numpy as np

from cisctool.config import Config
from cisctool.data.check import labeled_class_shares
from cisctool.errors import InputError
from cisctool.method.signals import fixed_batches
from cisctool.staleness import PSEUDO_RESUME_ATTRS
from cisctool.steps.evaluate import score_pseudo_labels
from cisctool.store.atomic import atomic_write_json
from cisctool.store.layout import RunLayout
from cisctool.store.pseudo_labels import IDS_HASH, PseudoLabels, PseudoWriter, join_shards, partial_path

SHARD_NAME = re.compile(r"\.shard(\d+)of(\d+)\.h5$")


def find_shards(final_path: Path) -> list[Path]:
    """The N shard files of `final_path`, in shard order; missing or mixed counts are errors."""
    found = {}
    for path in final_path.parent.glob(f"{final_path.stem}.shard*of*.h5"):
        match = SHARD_NAME.search(path.name)
        if match and ".partial" not in path.name:
            found[(int(match.group(1)), int(match.group(2)))] = path
    if not found:
        raise InputError(f"{final_path.parent}: no finished shard files {final_path.stem}.shard<i>of<n>.h5 to merge")
    counts = {count for _, count in found}
    if len(counts) > 1:
        raise InputError(f"{final_path.parent}: shard files of different counts {sorted(counts)}; keep one set")
    count = counts.pop()
    missing = [index for index in range(count) if (index, count) not in found]
    if missing:
        raise InputError(f"{shard_path(final_path, missing[0], count)}: shard missing (run `rectify --shard {missing[0]}/{count}`)")
    return [found[(index, count)] for index in range(count)]


def merge_shards(config: Config, round_index: int, compression: str = "lzf", *, force: bool = True,
                 copy: bool = False) -> Path:  # fmt: skip
    """Check and join the shards of round N into `pseudo.h5` (virtual; `copy`: every pixel copied,
    with `compression`); returns its path."""
    final_path = RunLayout.of(config).pseudo(round_index)
    if final_path.exists() and not force:
        raise InputError(f"{final_path}: already exists; pass --force to replace it")
    paths = find_shards(final_path)
    shards = [PseudoLabels(path, require_complete=False) for path in paths]
    work_path = partial_path(final_path)
    try:
        ranges = _checked_ranges(shards, round_index)
        work_path.unlink(missing_ok=True)
        if copy:
            _copy_shards(work_path, shards, ranges, compression)
        else:
            join_shards(work_path, shards, ranges)
    finally:
        for stored in shards:
            stored.close()
    os.replace(work_path, final_path)
    return final_path


def _checked_ranges(shards: list[PseudoLabels], round_index: int) -> list[tuple[int, int]]:
    """Each shard's image range, once every shard is of one making and holds exactly its own images, done."""
    first = shards[0]
    batch_size = int(first.attrs["batch_size"])
    ranges = []
    for index, stored in enumerate(shards):
        for key in PSEUDO_RESUME_ATTRS:
            if stored.attrs.get(key) != first.attrs.get(key):
                raise InputError(f"{stored.path}: made with another {key} than {first.path.name}")
        if not _same_images(stored, first):
            raise InputError(f"{stored.path}: covers other images than {first.path.name}")
        start, stop = shard_range(len(stored), batch_size, (index, len(shards)))
        expected = np.zeros(len(stored), dtype=bool)
        expected[start:stop] = True
        foreign, missing = int((stored.done & ~expected).sum()), int((expected & ~stored.done).sum())
        if foreign:
            raise InputError(
                f"{stored.path}: overlaps other shards: holds {foreign} images that are not shard "
                f"{index}/{len(shards)}'s (cut with another batch size or count?); remove it and rerun that shard"
            )
        if missing:
            raise InputError(
                f"{stored.path}: unfinished: {missing} of its {int(expected.sum())} images not done; "
                f"recompute it with `cisctool rectify --round {round_index} --shard {index}/{len(shards)} --force`"
            )
        ranges.append((start, stop))
    return ranges


def _same_images(stored: PseudoLabels, first: PseudoLabels) -> bool:
    """The same ids (compared by their hash where both files hold it) and image sizes."""
    if IDS_HASH in stored.attrs and IDS_HASH in first.attrs:
        same_ids = stored.attrs[IDS_HASH] == first.attrs[IDS_HASH]
    else:  # files written before the hash was kept
        same_ids = stored.ids == first.ids
    return same_ids and np.array_equal(stored.shapes, first.shapes)


def _copy_shards(
    work_path: Path, shards: list[PseudoLabels], ranges: list[tuple[int, int]], compression: str
) -> None:
    """A self-contained file: every image of every shard written again, one fixed batch at a time."""
    first = shards[0]
    batch_size = int(first.attrs["batch_size"])
    attrs = {key: value for key, value in first.attrs.items() if key not in ("format", "version", "num_classes")}
    writer = PseudoWriter.create(work_path, first.ids, first.shapes, int(first.attrs["num_classes"]), attrs, compression)
    try:
        for stored, (start, stop) in zip(shards, ranges, strict=True):
            for batch in fixed_batches(stop - start, batch_size):
                positions = [start + position for position in batch]
                writer.write(positions, [stored.image(position) for position in positions])
    finally:
        writer.close()


def merge_and_report(
    config: Config, round_index: int, compression: str, *, force: bool, copy: bool = False
) -> tuple[Path, dict]:
    """Merge the shards, then score the merged file (`pseudo_quality.json`) from its stored signals."""
    path = merge_shards(config, round_index, compression, force=force, copy=copy)
    report = {**score_pseudo_labels(config, round_index), "labeled_share": labeled_class_shares(config)}
    with PseudoLabels(path) as merged:  # the factors and thresholds the shards applied, as an unsharded report
        for key in ("prior_alignment", "adaptive_thresholds"):  # absent in files made before the key existed
            if described := merged.attrs.get(key):
                report[key] = json.loads(described)
    atomic_write_json(RunLayout.of(config).pseudo_quality(round_index), report)
    return path, report


def shard_path(final_path: Path, index: int, count: int) -> Path:
    """Where shard i of n of `pseudo.h5` is written."""
    return final_path.with_name(f"{final_path.stem}.shard{index}of{count}{final_path.suffix}")


def shard_batches(count: int, batch_size: int, shard: tuple[int, int] | None) -> list[range]:
    """The fixed batches of a split that shard (i, n) computes: the i-th of n contiguous runs of them,
    as even as whole batches allow (all without a shard)."""
    batches = fixed_batches(count, batch_size)
    if shard is None:
        return batches
    index, shards = shard
    return batches[len(batches) * index // shards : len(batches) * (index + 1) // shards]


def shard_range(count: int, batch_size: int, shard: tuple[int, int]) -> tuple[int, int]:
    """The split positions [start, stop) of shard (i, n)'s batches (start = stop for a shard without any)."""
    batches = shard_batches(count, batch_size, shard)
    if not batches:
        start = min(len(fixed_batches(count, batch_size)) * shard[0] // shard[1] * batch_size, count)
        return start, start
    return batches[0][0], batches[-1][-1] + 1
