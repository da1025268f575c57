"""Per-pixel datasets joined over shard files with HDF5 virtual datasets: the pixels stay where the shards wrote them.

Every shard file has the whole file's layout (all images' offsets) and holds
one contiguous range of images, so the pixels of images [a, b) sit at
offsets[a]:offsets[b] in both the shard and the joined file: each per-pixel
dataset is one mapping per shard, and so is each per-image one (rows [a, b));
ids, shapes and offsets, the same in every shard, map from the first. The
joined file holds no data of its own, and joining takes the same time for any
number of images. Source names are the shard files' names
alone, which HDF5 resolves from the joined file's own folder, so the folder
can be moved or mounted elsewhere as a whole.

HDF5 reads a source it cannot open as fill values, silently. So the joined
file records each shard's name, image range and fingerprint (SHA-256 of its
per-image CRCs and done flags over that range), and `open_sources` refuses,
in one line, a file whose mapped sources are missing, unreadable or changed.
A shard recomputed to the same values keeps its fingerprint: it reads the same.
"""

import bisect
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np

from cisctool.errors import InputError, first_line

SOURCES_ATTR = "virtual_sources"


def fingerprint(handle: h5py.File, start: int, stop: int) -> str:
    """SHA-256 of images [start, stop)'s CRCs (`checksum`) and `done` flags: what a changed shard changes."""
    digest = hashlib.sha256(np.ascontiguousarray(handle["checksum"][start:stop], dtype="<u4").tobytes())
    digest.update(np.ascontiguousarray(handle["done"][start:stop], dtype=bool).tobytes())
    return digest.hexdigest()


def map_datasets(
    out: h5py.File, sources: Sequence[h5py.File], ranges: Sequence[tuple[int, int]], pixels: Mapping[str, np.dtype],
    per_image: Sequence[str], shared: Sequence[str],
) -> None:  # fmt: skip
    """Virtual datasets in `out`: each of `pixels` and `per_image` with shard i's range (of pixels, of
    images) mapped from shard i's file, each of `shared` (the same in every shard) from the first;
    and the sources recorded (`SOURCES_ATTR`) for `open_sources`. Nothing is copied: the time is
    the same for any number of images."""
    offsets = sources[0]["offsets"]
    names = [Path(handle.filename).name for handle in sources]
    bounds = [(int(offsets[start]), int(offsets[stop])) for start, stop in ranges]
    for name in [*pixels, *per_image]:
        spans = bounds if name in pixels else ranges
        template = sources[0][name]
        layout = h5py.VirtualLayout(shape=template.shape, dtype=template.dtype)
        for file_name, (low, high) in zip(names, spans, strict=True):
            if high > low:
                layout[low:high] = h5py.VirtualSource(file_name, name, shape=template.shape)[low:high]
        out.create_virtual_dataset(name, layout, fillvalue=template.fillvalue)
    for name in shared:
        template = sources[0][name]
        layout = h5py.VirtualLayout(shape=template.shape, dtype=template.dtype)
        layout[...] = h5py.VirtualSource(names[0], name, shape=template.shape)
        out.create_virtual_dataset(name, layout)
    described = [
        {"file": file_name, "images": [start, stop], "fingerprint": fingerprint(handle, start, stop)}
        for file_name, handle, (start, stop) in zip(names, sources, ranges, strict=True)
    ]
    out.attrs[SOURCES_ATTR] = json.dumps(described)


def is_virtual(handle: h5py.File) -> bool:
    """Whether any dataset of the file reads from other files."""
    return any(isinstance(item, h5py.Dataset) and item.is_virtual for item in handle.values())


class SourceFiles:
    """The shard files a joined file maps, checked and open: each image's pixels read straight from its shard.

    Every image sits in one shard, so a read of one image's pixels is a read of
    one source dataset at the place the file's own mapping names. HDF5 reading
    through the virtual dataset gives the same values, but maps the selection
    onto the sources on every call, which costs as much as a small image's read.
    """

    def __init__(self, path: Path, handle: h5py.File, remedy: str, cache_bytes: int, direct: Sequence[str]) -> None:
        self.files: dict[str, h5py.File] = {}
        self.maps: dict[str, tuple[list[int], list[int], list[h5py.Dataset], list[int]]] = {}
        mapped = {
            name: handle[name].virtual_sources()
            for name, item in handle.items()
            if isinstance(item, h5py.Dataset) and item.is_virtual
        }
        try:
            self._open(path, handle, {source.file_name for sources in mapped.values() for source in sources},
                       remedy, cache_bytes)  # fmt: skip
            for name in (name for name in direct if name in mapped):
                ordered = sorted(mapped[name], key=lambda source: source.vspace.get_select_bounds()[0][0])
                bounds = [source.vspace.get_select_bounds() for source in ordered]
                self.maps[name] = (
                    [int(low[0]) for low, _ in bounds],
                    [int(high[0]) + 1 for _, high in bounds],
                    [self.files[source.file_name][source.dset_name] for source in ordered],
                    [int(source.src_space.get_select_bounds()[0][0]) for source in ordered],
                )
        except BaseException:
            self.close()
            raise

    def _open(self, path: Path, handle: h5py.File, names: set[str], remedy: str, cache_bytes: int) -> None:
        """Open every mapped file once it is found there, readable and as merged (`fingerprint`)."""
        recorded = {entry["file"]: entry for entry in json.loads(handle.attrs.get(SOURCES_ATTR, "[]"))}
        if unrecorded := sorted(names - set(recorded)):
            raise InputError(f"{path}: reads from {unrecorded[0]}, which its merge did not record; {remedy}")
        cache = {"rdcc_nbytes": max(cache_bytes // max(len(names), 1), 1 << 20)}  # the whole file's share
        for name in sorted(names):
            source = Path(name) if Path(name).is_absolute() else path.parent / name
            if not source.is_file():
                raise InputError(f"{source}: missing; {path.name} reads its pixels from it ({remedy})")
            try:
                self.files[name] = h5py.File(source, "r", **cache)
                found = fingerprint(self.files[name], *recorded[name]["images"])
            except (OSError, KeyError, ValueError) as error:
                raise InputError(
                    f"{source}: unreadable ({first_line(error)}); {path.name} reads its pixels from it"
                ) from None
            if found != recorded[name]["fingerprint"]:
                raise InputError(f"{source}: changed since {path.name} was merged from it; {remedy}")

    def read(self, name: str, start: int, stop: int) -> np.ndarray | None:
        """Pixels [start, stop) of dataset `name` from the one source holding them; None if none holds all."""
        if name not in self.maps or stop <= start:
            return None
        starts, stops, datasets, sources = self.maps[name]
        slot = bisect.bisect_right(starts, start) - 1
        if slot < 0 or stop > stops[slot]:
            return None
        shift = sources[slot] - starts[slot]
        return datasets[slot][start + shift : stop + shift]

    def close(self) -> None:
        for opened in self.files.values():
            opened.close()
        self.files.clear()


def open_sources(
    path: Path, handle: h5py.File, remedy: str, cache_bytes: int, direct: Sequence[str]
) -> SourceFiles | None:
    """The checked, open sources of a joined file (None for a file without virtual datasets), with the
    datasets `direct` read straight from them; refuses, in one line, sources that are missing,
    unreadable or changed since the merge; `remedy` says how to make the file again."""
    return SourceFiles(path, handle, remedy, cache_bytes, direct) if is_virtual(handle) else None
