from pathlib import Path

import h5py
import numpy as np
import pytest

from cisctool.errors import InputError
from cisctool.store.pseudo_labels import PseudoImage, PseudoLabels, PseudoWriter, partial_path

ATTRS = {"round": 1, "ignore_index": 255, "class_names": ["a", "b", "c"], "checkpoint_sha256": "x" * 64}


def random_image(rng: np.random.Generator, height: int, width: int) -> PseudoImage:
    return PseudoImage(
        label=rng.integers(0, 3, (height, width)).astype(np.uint8),
        raw_label=rng.integers(0, 3, (height, width)).astype(np.uint8),
        confidence=rng.random((height, width)).astype(np.float16),
        cisc=rng.random((height, width)).astype(np.float16),
        weight=rng.random((height, width)).astype(np.float16),
        guides=np.array([-1, 4, 7], dtype=np.int32),
        reliability=float(rng.random()),
    )


@pytest.mark.parametrize("compression", ["lzf", "gzip", "none"])
def test_ragged_images_round_trip_in_any_write_order(tmp_path: Path, compression: str):
    rng = np.random.default_rng(0)
    shapes = np.array([[5, 7], [300, 260], [1, 1], [64, 3]])
    images = [random_image(rng, int(h), int(w)) for h, w in shapes]
    path = tmp_path / "pseudo.h5"
    writer = PseudoWriter.create(path, ["a", "b", "c", "d"], shapes, 3, ATTRS, compression)
    writer.write([2, 0], [images[2], images[0]])
    assert writer.pending().tolist() == [1, 3]
    writer.write([3, 1], [images[3], images[1]])
    writer.close()
    with PseudoLabels(path) as stored:
        assert stored.ids == ["a", "b", "c", "d"] and len(stored) == 4
        assert stored.attrs["round"] == 1 and stored.attrs["class_names"] == ["a", "b", "c"]
        for index, expected in enumerate(images):
            got = stored.image(index)
            for name in ("label", "raw_label", "confidence", "cisc", "weight", "guides"):
                assert np.array_equal(getattr(got, name), getattr(expected, name)), name
            assert got.reliability == pytest.approx(expected.reliability)


def test_unfinished_file_is_refused_and_resumable(tmp_path: Path):
    rng = np.random.default_rng(1)
    shapes = np.array([[4, 4], [6, 2]])
    path = tmp_path / "pseudo.partial.h5"
    writer = PseudoWriter.create(path, ["a", "b"], shapes, 3, ATTRS)
    writer.write([1], [random_image(rng, 6, 2)])
    writer.close()
    with pytest.raises(InputError, match="unfinished .1/2 images done"):
        PseudoLabels(path)
    started = PseudoWriter.resumable(path, ATTRS, ["a", "b"])
    assert {key: started.attrs[key] for key in ATTRS} == ATTRS  # what the file was started with
    reopened = PseudoWriter.reopen(path, started.done)
    assert reopened.pending().tolist() == [0]
    reopened.close()
    with pytest.raises(InputError, match="another checkpoint_sha256"):
        PseudoWriter.resumable(path, {**ATTRS, "checkpoint_sha256": "y" * 64}, ["a", "b"])
    with pytest.raises(InputError, match="other images"):
        PseudoWriter.resumable(path, ATTRS, ["a", "z"])


def test_foreign_other_version_and_truncated_files_are_refused(tmp_path: Path):
    path = tmp_path / "pseudo.h5"
    writer = PseudoWriter.create(path, ["a"], np.array([[2, 2]]), 3, ATTRS)
    writer.write([0], [random_image(np.random.default_rng(2), 2, 2)])
    writer.close()
    with h5py.File(path, "r+") as handle:
        handle.attrs["version"] = 2
    with pytest.raises(InputError, match="version 2; this cisctool reads 1"):
        PseudoLabels(path)
    with h5py.File(path, "r+") as handle:
        handle.attrs["format"] = "something-else"
    with pytest.raises(InputError, match="not a cisctool pseudo-label file"):
        PseudoLabels(path)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(path.read_bytes()[:600])
    with pytest.raises(InputError, match="not a readable HDF5 file"):
        PseudoLabels(truncated)
    with pytest.raises(InputError, match="not found"):
        PseudoLabels(tmp_path / "missing.h5")


def test_partial_name_sits_beside_the_final_one():
    assert partial_path(Path("runs/x/round1/pseudo.h5")) == Path("runs/x/round1/pseudo.partial.h5")


def test_reopening_recomputes_done_images_whose_values_were_damaged(tmp_path: Path):
    rng = np.random.default_rng(3)
    shapes = np.array([[8, 8], [8, 8], [8, 8]])
    path = tmp_path / "pseudo.partial.h5"
    writer = PseudoWriter.create(path, ["a", "b", "c"], shapes, 3, ATTRS)
    writer.write([0, 1], [random_image(rng, 8, 8), random_image(rng, 8, 8)])
    writer.close()
    with h5py.File(path, "r+") as handle:  # as a killed write can leave a shared chunk
        handle["label"][70:72] = 200
    done = PseudoWriter.resumable(path, ATTRS, ["a", "b", "c"]).done
    assert np.flatnonzero(~done).tolist() == [1, 2]  # image 1 (pixels 64–127) is recomputed, image 0 kept
    PseudoWriter.reopen(path, done).close()
    with h5py.File(path, "r") as handle:
        assert handle["done"][:].tolist() == done.tolist()


def test_a_chunk_that_no_longer_decompresses_is_cleared_and_its_images_rewritten(tmp_path: Path):
    """As a write killed mid-chunk leaves it: HDF5 would read the chunk before writing into it, and fail."""
    rng = np.random.default_rng(4)
    shapes = np.array([[100, 100]] * 8)  # 80 000 pixels: two chunks, image 6 straddles them
    images = [random_image(rng, 100, 100) for _ in range(8)]
    path = tmp_path / "pseudo.partial.h5"
    writer = PseudoWriter.create(path, list("abcdefgh"), shapes, 3, ATTRS)
    writer.write(list(range(7)), images[:7])
    writer.close()
    with h5py.File(path, "r") as handle:
        chunk = handle["confidence"].id.get_chunk_info(1)  # pixels 65 536…, held by images 6 and 7
    with open(path, "r+b") as raw:
        raw.seek(chunk.byte_offset)
        raw.write(b"\xff" * chunk.size)
    done = PseudoWriter.resumable(path, ATTRS, list("abcdefgh")).done
    assert np.flatnonzero(~done).tolist() == [6, 7]
    writer = PseudoWriter.reopen(path, done)
    writer.write([6, 7], images[6:])
    writer.close()
    with PseudoLabels(path) as stored:
        for index, expected in enumerate(images):
            assert np.array_equal(stored.pixels("confidence", index), expected.confidence), index
