"""Shard files joined by virtual datasets: read as the whole file, from anywhere the folder goes, never as fill values."""

import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from cisctool.errors import InputError
from cisctool.store.pseudo_labels import PIXEL_DTYPES, PseudoLabels, PseudoWriter, join_shards
from cisctool.store.virtual import SOURCES_ATTR, is_virtual

from store.test_pseudo_labels import ATTRS, random_image

SHAPES = np.array([[40, 30], [17, 90], [64, 64], [5, 5], [80, 20], [33, 33], [48, 50]])
RANGES = [(0, 2), (2, 5), (5, 7)]


def write(path: Path, images: list, positions: range) -> None:
    ids = [f"img{index}" for index in range(len(SHAPES))]
    writer = PseudoWriter.create(path, ids, SHAPES, 3, ATTRS)
    writer.write(list(positions), [images[index] for index in positions])
    writer.close()


@pytest.fixture
def run(tmp_path: Path) -> tuple[Path, list]:
    """A folder with three shard files and the file a single process writes (elsewhere)."""
    rng = np.random.default_rng(5)
    images = [random_image(rng, int(height), int(width)) for height, width in SHAPES]
    folder = tmp_path / "run/round1"
    for index, (start, stop) in enumerate(RANGES):
        write(folder / f"pseudo.shard{index}of3.h5", images, range(start, stop))
    write(tmp_path / "whole.h5", images, range(len(SHAPES)))
    return folder, images


def join(folder: Path) -> Path:
    shards = [PseudoLabels(folder / f"pseudo.shard{index}of3.h5", require_complete=False) for index in range(3)]
    try:
        join_shards(folder / "pseudo.h5", shards, RANGES)
    finally:
        for stored in shards:
            stored.close()
    return folder / "pseudo.h5"


def arrays(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as handle:
        return {name: handle[name][:] for name in handle}


def test_the_joined_file_holds_every_value_of_the_whole_file_and_copies_nothing(run, tmp_path: Path):
    folder, images = run
    path = join(folder)
    whole, joined = arrays(tmp_path / "whole.h5"), arrays(path)
    assert joined.keys() == whole.keys()
    for name in whole:
        assert np.array_equal(joined[name], whole[name], equal_nan=whole[name].dtype.kind == "f"), name
    with h5py.File(path, "r") as handle:
        assert is_virtual(handle) and all(handle[name].is_virtual for name in PIXEL_DTYPES)
        assert [len(handle[name].virtual_sources()) for name in PIXEL_DTYPES] == [3] * len(PIXEL_DTYPES)
        assert {source.file_name for source in handle["label"].virtual_sources()} == {
            f"pseudo.shard{index}of3.h5" for index in range(3)
        }  # relative names: resolved from the joined file's folder
        assert all(handle[name].is_virtual for name in handle)  # per-image rows too, one mapping a shard
        assert len(handle["guides"].virtual_sources()) == 3 and len(handle["ids"].virtual_sources()) == 1
    with PseudoLabels(path) as stored:
        assert stored.done.all() and stored.attrs["checkpoint_sha256"] == ATTRS["checkpoint_sha256"]
        assert SOURCES_ATTR in stored.attrs
        for index, expected in enumerate(images):
            assert np.array_equal(stored.image(index).weight, expected.weight)


def test_a_moved_run_folder_still_reads_from_any_working_directory(run, tmp_path: Path, monkeypatch):
    folder, images = run
    join(folder)
    moved = tmp_path / "elsewhere/mounted"
    moved.parent.mkdir()
    shutil.move(folder.parent, moved)
    monkeypatch.chdir(tmp_path / "elsewhere")
    with PseudoLabels(moved / "round1/pseudo.h5") as stored:
        assert np.array_equal(stored.pixels("label", 6), images[6].label)
        assert np.array_equal(stored.pixels("confidence", 0), images[0].confidence)


def test_a_deleted_shard_is_named_never_read_as_zeros(run):
    folder, _ = run
    path = join(folder)
    (folder / "pseudo.shard1of3.h5").unlink()
    with h5py.File(path, "r") as handle:  # what HDF5 alone would hand out: the fill value
        assert not handle["label"][int(handle["offsets"][2]) : int(handle["offsets"][5])].any()
    with pytest.raises(InputError, match=r"pseudo.shard1of3.h5: missing; pseudo.h5 reads its pixels from it") as caught:
        PseudoLabels(path)
    assert "\n" not in str(caught.value) and "--merge --force" in str(caught.value)


def test_a_shard_changed_after_the_merge_is_refused_and_one_recomputed_alike_is_not(run):
    folder, images = run
    path = join(folder)
    shard = folder / "pseudo.shard2of3.h5"
    write(shard, images, range(5, 7))  # recomputed to the same values: reads the same
    with PseudoLabels(path) as stored:
        assert np.array_equal(stored.pixels("cisc", 5), images[5].cisc)
    rng = np.random.default_rng(9)
    changed = [*images[:5], *(random_image(rng, int(height), int(width)) for height, width in SHAPES[5:])]
    write(shard, changed, range(5, 7))
    with pytest.raises(InputError, match="pseudo.shard2of3.h5: changed since pseudo.h5 was merged from it"):
        PseudoLabels(path)
    shard.write_bytes(b"not hdf5")
    with pytest.raises(InputError, match="pseudo.shard2of3.h5: unreadable"):
        PseudoLabels(path)


def test_the_joined_file_keeps_its_size_whatever_the_number_of_images(run, tmp_path: Path):
    folder, images = run
    small = os.path.getsize(join(folder))
    ids = [f"img{index}" for index in range(700)]  # a hundred times the images, in the same three shards
    shapes = np.tile(SHAPES, (100, 1))  # image i is shaped as SHAPES[i % 7]
    ranges = [(0, 200), (200, 500), (500, 700)]
    many = tmp_path / "many"
    for index, (start, stop) in enumerate(ranges):
        writer = PseudoWriter.create(many / f"pseudo.shard{index}of3.h5", ids, shapes, 3, ATTRS)
        writer.write(list(range(start, stop)), [images[position % 7] for position in range(start, stop)])
        writer.close()
    shards = [PseudoLabels(many / f"pseudo.shard{index}of3.h5", require_complete=False) for index in range(3)]
    join_shards(many / "pseudo.h5", shards, ranges)
    for stored in shards:
        stored.close()
    assert os.path.getsize(many / "pseudo.h5") == small
    with PseudoLabels(many / "pseudo.h5") as stored:
        assert stored.ids == ids and np.array_equal(stored.pixels("label", 699), images[699 % 7].label)
