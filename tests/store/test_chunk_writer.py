from pathlib import Path

import h5py
import numpy as np
import pytest

from cisctool.store import chunk_writer
from cisctool.store.chunk_writer import ChunkEncoder, ChunkWriter

FILTERS = {"lzf": {"compression": "lzf", "shuffle": True}, "gzip": {"compression": "gzip", "shuffle": True},
           "gzip-plain": {"compression": "gzip"}, "none": {}}  # fmt: skip


def parts_of(values: np.ndarray, cuts: list[int]) -> list[np.ndarray]:
    return np.split(values, cuts)


@pytest.mark.parametrize("filters", list(FILTERS))
@pytest.mark.parametrize("dtype", [np.uint8, np.float16])
def test_slices_read_back_exactly_whatever_their_chunk_alignment(tmp_path: Path, filters: str, dtype: type):
    rng = np.random.default_rng(0)
    length, chunk = 1000, 64
    values = (rng.integers(0, 4, length) if dtype == np.uint8 else np.round(rng.random(length), 2)).astype(dtype)
    with h5py.File(tmp_path / "x.h5", "w") as handle:
        dataset = handle.create_dataset("x", shape=(length,), dtype=dtype, chunks=(chunk,), **FILTERS[filters])
        writer = ChunkWriter(threads=2)
        # slices that start and end inside chunks, on chunk edges, span many chunks, and end the dataset
        for start, stop, cuts in [(0, 10, [3]), (10, 200, [54, 118]), (200, 256, []), (256, 700, [5, 300]),
                                  (700, 1000, [1, 299])]:  # fmt: skip
            writer.write([(dataset, start, parts_of(values[start:stop], cuts))])
        writer.close()
        direct = [dataset.id.get_chunk_info(index) for index in range(dataset.id.get_num_chunks())]
    with h5py.File(tmp_path / "x.h5", "r") as handle:
        np.testing.assert_array_equal(handle["x"][:], values)
    assert len(direct) == -(-length // chunk)


def test_whole_chunks_are_encoded_as_hdf5_itself_would_decode_them(tmp_path: Path):
    rng = np.random.default_rng(1)
    values = rng.random(4096).astype(np.float16)
    with h5py.File(tmp_path / "x.h5", "w") as handle:
        ours = handle.create_dataset("ours", shape=(4096,), dtype=np.float16, chunks=(1024,), **FILTERS["gzip"])
        theirs = handle.create_dataset("theirs", shape=(4096,), dtype=np.float16, chunks=(1024,), **FILTERS["gzip"])
        ChunkWriter(threads=2).write([(ours, 0, [values])])
        theirs[:] = values
        # the same zlib at the same level over the same shuffled bytes: byte-identical chunks
        assert ours.id.read_direct_chunk((1024,)) == theirs.id.read_direct_chunk((1024,))


def test_a_chunk_lzf_cannot_shrink_is_stored_without_it_as_h5py_does(tmp_path: Path):
    incompressible = np.random.default_rng(2).integers(0, 256, 4096).astype(np.uint8)
    with h5py.File(tmp_path / "x.h5", "w") as handle:
        dataset = handle.create_dataset("x", shape=(4096,), dtype=np.uint8, chunks=(4096,), **FILTERS["lzf"])
        ChunkWriter(threads=1).write([(dataset, 0, [incompressible])])
        assert dataset.id.get_chunk_info(0).filter_mask == 0b10  # filter 1 (lzf) skipped, shuffle (0) applied
    with h5py.File(tmp_path / "x.h5", "r") as handle:
        np.testing.assert_array_equal(handle["x"][:], incompressible)


def test_without_h5pys_lzf_codec_the_slice_goes_through_hdf5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(chunk_writer, "LZF_COMPRESS", None)
    values = np.arange(3000, dtype=np.float16)
    with h5py.File(tmp_path / "x.h5", "w") as handle:
        dataset = handle.create_dataset("x", shape=(3000,), dtype=np.float16, chunks=(512,), **FILTERS["lzf"])
        assert not ChunkEncoder(dataset).encodable
        ChunkWriter(threads=2).write([(dataset, 0, [values[:1000], values[1000:]])])
    with h5py.File(tmp_path / "x.h5", "r") as handle:
        np.testing.assert_array_equal(handle["x"][:], values)


def test_a_pipeline_with_any_other_filter_is_left_to_hdf5(tmp_path: Path):
    with h5py.File(tmp_path / "x.h5", "w") as handle:
        dataset = handle.create_dataset("x", shape=(100,), dtype=np.float16, chunks=(10,), fletcher32=True)
        assert not ChunkEncoder(dataset).encodable
        ChunkWriter(threads=1).write([(dataset, 3, [np.ones(50, dtype=np.float16)])])
        np.testing.assert_array_equal(dataset[3:53], np.ones(50, dtype=np.float16))
