"""`pseudo.h5` (format "cisctool-pseudo", version 1): rectified pseudo labels of any image sizes in one file.

Row i of the file is the image at split position i of the unlabeled split.
Per-pixel arrays of all images are concatenated (image i owns pixels
offsets[i]:offsets[i+1], row-major H×W), chunked and compressed; `done[i]`
is set only after image i's data is written, and the file is flushed after
every batch, so a killed run resumes from the `done` flags. While incomplete
the file lives under a temporary name (`pseudo.partial.h5`) and is renamed to
`pseudo.h5` once every image is done: a file under the final name is whole.

HDF5 is not crash-safe: a process killed inside a write can leave chunks an
earlier, flushed batch shares damaged. So each image also gets a CRC32 of its
stored values (`/checksum`, beyond the documented datasets), and reopening an unfinished file
re-reads every done image and recomputes those whose values no longer match
(or no longer read at all); a chunk that no longer decompresses is replaced
before anything writes into it. Nor is HDF5 safe against a full disk, so
writing stops, with ENOSPC, while DISK_HEADROOM is still free.

A file that another live process keeps open and locked is named as such, with
that process: wait for it or stop it; the file itself is fine.

A file joined from shard files (`rectify --merge`, `join_shards`) reads every
dataset from the shards beside it (virtual datasets, `store/virtual.py`);
`PseudoLabels` checks those sources when it opens it and reads it as it reads
a file written whole.
"""

import errno
import functools
import hashlib
import os
import shutil
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from cisctool import faults
from cisctool.config import Compression, choices
from cisctool.errors import InputError, first_line, is_disk_full
from cisctool.store.chunk_writer import ChunkWriter
from cisctool.store.locks import held_file_message
from cisctool.store.virtual import SOURCES_ATTR, SourceFiles, map_datasets, open_sources

PSEUDO_FORMAT = "cisctool-pseudo"
PSEUDO_VERSION = 1
PIXEL_DTYPES = {
    "label": np.uint8,
    "raw_label": np.uint8,
    "confidence": np.float16,
    "cisc": np.float16,
    "weight": np.float16,
}
PIXEL_CHUNK = 1 << 16
# HDF5 keeps a chunk cache per dataset. Reads are random (training): a large one
# saves decompressions. Writes are sequential: a chunk is written whole once, so
# the cache only needs the partly written chunk at a batch's end; a large one
# would just fill with finished chunks and grow the process with the file.
READ_CACHE_BYTES = 64 << 20
WRITE_CACHE = {"rdcc_nbytes": 2 << 20, "rdcc_w0": 1.0}  # w0 = 1: evict finished chunks first
COMPRESSIONS: tuple[str, ...] = choices(Compression)
# Byte-shuffling before compression groups the float16 signals' high bytes: on the demo
# the file shrank 24 % and lzf spent less time on the nearly incompressible low bytes.
SHUFFLE = True
PIXEL_BYTES = sum(np.dtype(dtype).itemsize for dtype in PIXEL_DTYPES.values())
# The per-image arrays beside ids, shapes and offsets: each shard's rows, when shards are joined.
PER_IMAGE = ("guides", "reliability", "checksum", "done")
# HDF5 is not safe against a full disk: a write or close that meets ENOSPC can leave a
# file that no longer opens, or crashes the library. So writing stops while this much
# (plus the batch's uncompressed size) is still free: enough to close the file whole.
DISK_HEADROOM = 16 << 20


IDS_HASH = "ids_sha256"  # shards of one split compare it, not a million ids
IDS_SLICE = 8192  # ids written to a new file this many at a time


def ids_hash(ids: Sequence[str]) -> str:
    """SHA-256 of the image ids in order, joined by newlines (hashed id by id: no joined copy)."""
    digest = hashlib.sha256()
    for position, image_id in enumerate(ids):
        digest.update((f"\n{image_id}" if position else image_id).encode())
    return digest.hexdigest()


@dataclass
class PseudoImage:
    """One image's rectified pseudo label and the signals behind it (H×W arrays)."""

    label: np.ndarray
    raw_label: np.ndarray
    confidence: np.ndarray
    cisc: np.ndarray
    weight: np.ndarray
    guides: np.ndarray  # C: per class index, the guide's labeled position, −1 = none
    reliability: float  # the image's score for the reliable part, lower = more reliable


def partial_path(final_path: Path) -> Path:
    """Where an unfinished `pseudo.h5` lives until every image is done."""
    return final_path.with_name(final_path.stem + ".partial" + final_path.suffix)


def open_file(path: Path, mode: str, problem: str, **options: Any) -> h5py.File:
    """h5py.File, or an InputError: `problem` (with `{error}`) for a bad file, the holder for a locked one."""
    try:
        return h5py.File(path, mode, **options)
    except OSError as error:
        if "unable to lock file" in str(error):
            raise InputError(held_file_message(path)) from None
        raise InputError(f"{path}: {problem.format(error=first_line(error))}") from None


@dataclass(frozen=True)
class ResumePoint:
    """Where an unfinished pseudo-label file continues: the images done, and the attrs it was started with."""

    done: np.ndarray
    attrs: dict[str, Any]


class PseudoWriter:
    """Writes images into a pre-sized file in any order; each `write` ends with a flush.

    Whole chunks are encoded on `threads` workers (`ChunkWriter`).
    """

    def __init__(self, handle: h5py.File, threads: int | None = None) -> None:
        self.handle = handle
        self.offsets = handle["offsets"][:]
        self.done = handle["done"][:]
        self.chunks = ChunkWriter(threads)

    @classmethod
    def create(
        cls,
        path: Path,
        ids: Sequence[str],
        shapes: np.ndarray,
        num_classes: int,
        attrs: dict[str, Any],
        compression: str = "lzf",
        threads: int | None = None,
    ) -> "PseudoWriter":
        """A new file for `ids` with image sizes `shapes` (N×2 H, W); attrs: round, class names, hashes of model, index and config."""
        if compression not in COMPRESSIONS:
            raise InputError(f"compression {compression!r}: use one of {', '.join(COMPRESSIONS)}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(f"{path}: cannot create the pseudo-label file ({first_line(error)})") from None
        handle = open_file(path, "w", "cannot create the pseudo-label file ({error})", **WRITE_CACHE)
        count = len(ids)
        pixels = shapes[:, 0].astype(np.int64) * shapes[:, 1]
        offsets = np.concatenate([[0], np.cumsum(pixels)]).astype(np.int64)
        stored_ids = handle.create_dataset("ids", shape=(count,), dtype=h5py.string_dtype())
        for start in range(0, count, IDS_SLICE):  # a slice at a time: no second copy of a million ids
            stored_ids[start : start + IDS_SLICE] = list(ids[start : start + IDS_SLICE])
        handle.create_dataset("shapes", data=shapes.astype(np.int32))
        handle.create_dataset("offsets", data=offsets)
        total = max(int(offsets[-1]), 1)
        options = {} if compression == "none" else {"compression": compression, "shuffle": SHUFFLE}
        for name, dtype in PIXEL_DTYPES.items():
            handle.create_dataset(
                name, shape=(int(offsets[-1]),), dtype=dtype, chunks=(min(PIXEL_CHUNK, total),), **options
            )
        # fill values, not arrays: nothing the size of the split is built to say "not written yet"
        handle.create_dataset("guides", shape=(count, num_classes), dtype=np.int32, fillvalue=-1)
        handle.create_dataset("reliability", shape=(count,), dtype=np.float32, fillvalue=np.nan)
        handle.create_dataset("checksum", shape=(count,), dtype=np.uint32, fillvalue=0)
        handle.create_dataset("done", shape=(count,), dtype=bool, fillvalue=False)
        handle.attrs.update({"format": PSEUDO_FORMAT, "version": PSEUDO_VERSION, "num_classes": num_classes,
                             **attrs, IDS_HASH: ids_hash(ids)})  # fmt: skip
        handle.flush()
        return cls(handle, threads)

    @staticmethod
    def resumable(path: Path, expected: dict[str, Any], ids: Sequence[str]) -> ResumePoint:
        """The `done` flags an unfinished file can resume from: its attrs (checkpoint, index, config)
        and ids must match, and done images whose values fail their checksum count as not done.
        The file's attrs come back too: what it was started with, which a resumed run reuses.

        Reads only: the file is opened for writing later (`reopen`), once the loader's workers exist.
        """
        problem = "unfinished pseudo-label file is unreadable ({error}); rerun without --resume to start over"
        with open_file(path, "r", problem) as handle:
            _check_header(path, handle)
            for key, value in expected.items():
                if _plain(handle.attrs.get(key)) != _plain(value):
                    raise InputError(
                        f"{path}: was started with another {key}; rerun without --resume to start over"
                    )
            if [text.decode() for text in handle["ids"][:]] != list(ids):
                raise InputError(f"{path}: was started for other images; rerun without --resume")
            return ResumePoint(_intact(handle), {key: _plain(value) for key, value in handle.attrs.items()})

    @classmethod
    def reopen(cls, path: Path, done: np.ndarray, threads: int | None = None) -> "PseudoWriter":
        """Continue an unfinished file from `done` (from `resumable`), storing those flags first."""
        handle = open_file(path, "r+", "unfinished pseudo-label file is unreadable ({error})", **WRITE_CACHE)
        if not np.array_equal(handle["done"][:], done):
            handle["done"][:] = done
        _clear_unreadable_chunks(handle, np.flatnonzero(~done))
        handle.flush()
        return cls(handle, threads)

    def pending(self) -> np.ndarray:
        """Split positions of the images not yet done."""
        return np.flatnonzero(~self.done)

    def write(self, positions: Sequence[int], images: Sequence[PseudoImage]) -> None:
        """Store images at their split positions, mark them done, flush; a full disk is the
        OSError ENOSPC of this file, raised before HDF5 meets it while DISK_HEADROOM is left.

        Consecutive positions are written as one slice per dataset: a compressed
        chunk is then encoded once, not once per image that touches it.
        """
        needed = sum(image.label.size for image in images) * PIXEL_BYTES + DISK_HEADROOM
        if shutil.disk_usage(Path(self.handle.filename).parent).free < needed:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.handle.filename)
        try:
            self._write(positions, images)
        except OSError as error:
            if is_disk_full(error) and not error.filename:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.handle.filename) from error
            raise

    def _write(self, positions: Sequence[int], images: Sequence[PseudoImage]) -> None:
        handle = self.handle
        order = np.argsort(np.asarray(positions, dtype=np.int64), kind="stable")
        ordered = np.asarray(positions, dtype=np.int64)[order]
        breaks = np.flatnonzero(np.diff(ordered) != 1) + 1
        for run in np.split(np.arange(len(ordered)), breaks):
            if run.size == 0:
                continue
            first, last = int(ordered[run[0]]), int(ordered[run[-1]])
            start = int(self.offsets[first])
            members = [images[order[slot]] for slot in run]
            checksums = self.chunks.map(checksum, members)  # beside the chunks' encoding
            self.chunks.write([
                (handle[name], start, [getattr(image, name).reshape(-1).astype(dtype, copy=False) for image in members])
                for name, dtype in PIXEL_DTYPES.items()
            ])  # fmt: skip
            handle["guides"][first : last + 1] = np.stack([image.guides for image in members])
            handle["reliability"][first : last + 1] = [image.reliability for image in members]
            handle["checksum"][first : last + 1] = list(checksums)
        faults.reached("pseudo-write")
        self.done[ordered] = True
        handle["done"][ordered] = True
        handle.flush()

    def close(self) -> None:
        self.chunks.close()
        self.handle.close()


def join_shards(path: Path, shards: Sequence["PseudoLabels"], ranges: Sequence[tuple[int, int]]) -> None:
    """A file at `path` holding shard i's images ranges[i] (contiguous, together every image) as virtual
    datasets over the shard files beside it (`store/virtual.py`): nothing copied. It reads as a file
    written whole, value for value; the attrs are the shards'."""
    first = shards[0].handle
    with open_file(path, "w", "cannot create the pseudo-label file ({error})") as out:
        map_datasets(out, [stored.handle for stored in shards], ranges, PIXEL_DTYPES, PER_IMAGE,
                     ("ids", "shapes", "offsets"))  # fmt: skip
        out.attrs.update({key: value for key, value in first.attrs.items() if key != SOURCES_ATTR})


def stored_image(handle: h5py.File, offsets: np.ndarray, position: int) -> PseudoImage:
    """The image at split `position` of an open pseudo-label file, as written."""
    start, stop = int(offsets[position]), int(offsets[position + 1])
    shape = tuple(handle["shapes"][position])
    arrays = {name: handle[name][start:stop].reshape(shape) for name in PIXEL_DTYPES}
    guides, reliability = handle["guides"][position], float(handle["reliability"][position])
    return PseudoImage(**arrays, guides=guides, reliability=reliability)


def _intact(handle: h5py.File) -> np.ndarray:
    """The file's `done` flags, less the images whose stored values fail their checksum (or fail to read)."""
    done, offsets = handle["done"][:], handle["offsets"][:]
    for position in np.flatnonzero(done):
        try:
            stored = checksum(stored_image(handle, offsets, int(position)))
            done[position] = stored == int(handle["checksum"][position])
        except (OSError, ValueError, KeyError):
            done[position] = False
    return done


def _clear_unreadable_chunks(handle: h5py.File, pending: np.ndarray) -> None:
    """Replace with zeros every chunk that a pending image touches and that no longer decompresses.

    HDF5 reads a chunk before writing part of it, so a chunk a killed write
    left damaged would fail every later write into it; the done images it held
    failed their checksum and are pending again.
    """
    offsets = handle["offsets"][:]
    starts, stops = offsets[pending], offsets[pending + 1]
    starts, stops = starts[stops > starts], stops[stops > starts]
    for name in PIXEL_DTYPES:
        dataset = handle[name]
        chunk = dataset.chunks[0]
        marks = np.zeros(-(-dataset.shape[0] // chunk) + 1, dtype=np.int64)
        np.add.at(marks, starts // chunk, 1)
        np.add.at(marks, (stops - 1) // chunk + 1, -1)
        for index in np.flatnonzero(np.cumsum(marks)[:-1] > 0):
            span = slice(int(index) * chunk, min((int(index) + 1) * chunk, dataset.shape[0]))
            try:
                dataset[span]
            except OSError:  # stored raw (every filter bit set): nothing of the damaged chunk is read
                unfiltered = (1 << dataset.id.get_create_plist().get_nfilters()) - 1
                zeros = np.zeros(chunk, dataset.dtype).tobytes()
                dataset.id.write_direct_chunk((span.start,), zeros, unfiltered)


def checksum(image: PseudoImage) -> int:
    """CRC32 of an image's values as stored (dtype-cast), guides and reliability."""
    crc = 0
    for name, dtype in PIXEL_DTYPES.items():
        crc = zlib.crc32(np.ascontiguousarray(getattr(image, name), dtype=dtype).tobytes(), crc)
    crc = zlib.crc32(np.ascontiguousarray(image.guides, dtype=np.int32).tobytes(), crc)
    return zlib.crc32(np.float32(image.reliability).tobytes(), crc)


def _plain(value: Any) -> Any:
    """attrs come back as numpy scalars/arrays: compare them as Python values."""
    if isinstance(value, np.ndarray):
        return [_plain(item) for item in value.tolist()]
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _check_header(path: Path, handle: h5py.File) -> None:
    if handle.attrs.get("format") != PSEUDO_FORMAT:
        raise InputError(f"{path}: not a cisctool pseudo-label file")
    version = _plain(handle.attrs.get("version"))
    if version != PSEUDO_VERSION:
        raise InputError(f"{path}: pseudo-label file version {version}; this cisctool reads {PSEUDO_VERSION}")


class PseudoLabels:
    """Read-only view of a finished `pseudo.h5`; refuses foreign, other-version or unfinished files."""

    def __init__(self, path: Path, *, require_complete: bool = True) -> None:
        self.path = path
        if not path.is_file():
            raise InputError(f"{path}: pseudo-label file not found (run `cisctool rectify`)")
        self.handle = open_file(path, "r", "not a readable HDF5 file ({error})", rdcc_nbytes=READ_CACHE_BYTES)
        self.sources: SourceFiles | None = None  # a joined file's shard files (`store/virtual.py`)
        # Kept open: reopening a dataset for every image would drop its chunk cache and decompress
        # the image's chunks again on every read.
        self.datasets: dict[str, h5py.Dataset] = {}
        try:
            _check_header(path, self.handle)
            round_index = _plain(self.handle.attrs.get("round"))
            remedy = f"merge again: `cisctool rectify --round {round_index} --merge --force`"
            self.sources = open_sources(path, self.handle, remedy, READ_CACHE_BYTES, list(PIXEL_DTYPES))
            self.done = self.handle["done"][:]
            if require_complete and not self.done.all():
                raise InputError(
                    f"{path}: unfinished ({int(self.done.sum())}/{len(self.done)} images done); "
                    "finish it with `cisctool rectify --resume`"
                )
            self.images = int(self.handle["ids"].shape[0])
            self.shapes = self.handle["shapes"][:]
            self.offsets = self.handle["offsets"][:]
            self.reliability = self.handle["reliability"][:]
            self.guides = self.handle["guides"][:]
        except KeyError as error:
            self.close()
            raise InputError(f"{path}: dataset {error} missing; the file is damaged") from None
        except InputError:
            self.close()
            raise
        self.attrs = {key: _plain(value) for key, value in self.handle.attrs.items()}

    def __len__(self) -> int:
        return self.images

    @functools.cached_property
    def ids(self) -> list[str]:
        """Image ids in file order (read when first asked for: a million of them take a while)."""
        return [text.decode() for text in self.handle["ids"][:]]

    def pixels(self, name: str, position: int) -> np.ndarray:
        """One per-pixel array (`label`, `raw_label`, `confidence`, `cisc`, `weight`) of the image at split
        `position`, H×W."""
        start, stop = int(self.offsets[position]), int(self.offsets[position + 1])
        direct = self.sources.read(name, start, stop) if self.sources is not None else None
        if direct is None and name not in self.datasets:
            self.datasets[name] = self.handle[name]
        values = self.datasets[name][start:stop] if direct is None else direct
        return values.reshape(tuple(self.shapes[position]))

    def image(self, position: int) -> PseudoImage:
        arrays = {name: self.pixels(name, position) for name in PIXEL_DTYPES}
        reliability = float(self.reliability[position])
        return PseudoImage(**arrays, guides=self.guides[position], reliability=reliability)

    def close(self) -> None:
        if self.sources is not None:
            self.sources.close()
        self.handle.close()

    def __enter__(self) -> "PseudoLabels":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
