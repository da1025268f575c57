"""Per-pixel datasets joined over shard files with HDF5 virtual datasets: the pixels stay where the shards wrote them.

Every shard file has the whole file's layout (all images' offsets) and holds
one contiguous range of images, so the pixels of images [a, b) sit at
offsets[a]:offsets[b] in both the shard and the joined file: each per-pixel
dataset is one mapping per shard. Source names are the shard files' names
alone, which HDF5 resolves from the joined file's own folder, so the folder
can be moved or mounted elsewhere as a whole.

HDF5 reads a source it cannot open as fill values, silently. So the joined
file records each shard's name, image range and fingerprint (SHA-256 of its
per-image CRCs and done flags over that range), and `check_sources` refuses,
in one line, a file whose mapped sources are missing, unreadable or changed.
A shard recomputed to the same values keeps its fingerprint: it reads the same.
"""

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


def map_pixels(
    out: h5py.File, sources: Sequence[h5py.File], ranges: Sequence[tuple[int, int]], dtypes: Mapping[str, np.dtype]
) -> None:
    """One virtual dataset per name of `dtypes` in `out`, each shard's pixel range mapped from its file,
    and the sources recorded (`SOURCES_ATTR`) for `check_sources`."""
    offsets = sources[0]["offsets"][:]
    total = int(offsets[-1])
    for name, dtype in dtypes.items():
        layout = h5py.VirtualLayout(shape=(total,), dtype=dtype)
        for handle, (start, stop) in zip(sources, ranges, strict=True):
            low, high = int(offsets[start]), int(offsets[stop])
            if high > low:
                layout[low:high] = h5py.VirtualSource(Path(handle.filename).name, name, shape=(total,))[low:high]
        out.create_virtual_dataset(name, layout, fillvalue=0)
    described = [
        {"file": Path(handle.filename).name, "images": [start, stop], "fingerprint": fingerprint(handle, start, stop)}
        for handle, (start, stop) in zip(sources, ranges, strict=True)
    ]
    out.attrs[SOURCES_ATTR] = json.dumps(described)


def is_virtual(handle: h5py.File) -> bool:
    """Whether any dataset of the file reads from other files."""
    return any(isinstance(item, h5py.Dataset) and item.is_virtual for item in handle.values())


def check_sources(path: Path, handle: h5py.File, remedy: str) -> None:
    """Refuse (one line) a joined file whose mapped sources are not all there, readable and as merged;
    `remedy` says how to make it again. A file without virtual datasets passes."""
    mapped = {
        source.file_name
        for item in handle.values()
        if isinstance(item, h5py.Dataset) and item.is_virtual
        for source in item.virtual_sources()
    }
    if not mapped:
        return
    recorded = {entry["file"]: entry for entry in json.loads(handle.attrs.get(SOURCES_ATTR, "[]"))}
    if unrecorded := sorted(mapped - set(recorded)):
        raise InputError(f"{path}: reads from {unrecorded[0]}, which its merge did not record; {remedy}")
    for name in sorted(mapped):
        source = Path(name) if Path(name).is_absolute() else path.parent / name
        entry = recorded[name]
        if not source.is_file():
            raise InputError(f"{source}: missing; {path.name} reads its pixels from it ({remedy})")
        try:
            with h5py.File(source, "r") as opened:
                found = fingerprint(opened, *entry["images"])
        except (OSError, KeyError, ValueError) as error:
            raise InputError(f"{source}: unreadable ({first_line(error)}); {path.name} reads its pixels from it") from None
        if found != entry["fingerprint"]:
            raise InputError(f"{source}: changed since {path.name} was merged from it; {remedy}")
