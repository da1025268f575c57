"""Split files: which images (and masks) make the labeled, unlabeled and val sets.

Two line formats, as ST++/UniMatch and VOC users have them:
- `img_rel [mask_rel]`: paths relative to `data.root`; the mask is optional
  for the unlabeled split (used only for quality reports there);
- a bare id: VOC's `JPEGImages/<id>.jpg` and `SegmentationClass/<id>.png`
  (or `SegmentationClassAug/<id>.png` where that exists).
The image id is the image file's stem.
"""

import os
from array import array
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

import numpy as np

from cisctool.config import Config
from cisctool.errors import InputError

SplitName = Literal["labeled", "unlabeled", "val"]
T = TypeVar("T")


class SplitEntry:
    """One image of a split; `mask` is None when the split line names none.

    The paths are held as strings relative to one shared root string and become `Path`s when read:
    a split of 100k images held as absolute `Path` objects took about 0.6 KB an image, the largest
    part of rectify's memory at that size.
    """

    __slots__ = ("id", "_root", "_image", "_mask")

    def __init__(
        self, id: str, image: str | os.PathLike[str], mask: str | os.PathLike[str] | None, root: str = ""
    ) -> None:
        self.id = id
        self._root = root
        self._image = os.fspath(image)
        self._mask = None if mask is None else os.fspath(mask)

    @property
    def image(self) -> Path:
        return Path(self._root, self._image)

    @property
    def mask(self) -> Path | None:
        return None if self._mask is None else Path(self._root, self._mask)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SplitEntry) and self._resolved() == other._resolved()

    def __hash__(self) -> int:
        return hash(self._resolved())

    def __repr__(self) -> str:
        return f"SplitEntry(id={self.id!r}, image={str(self.image)!r}, mask={self._mask and str(self.mask)!r})"

    def __reduce__(self) -> tuple[Any, ...]:  # to loader workers, as the strings
        return (SplitEntry, (self.id, self._image, self._mask, self._root))

    def _resolved(self) -> tuple[str, str, str | None]:
        return (self.id, str(self.image), None if self.mask is None else str(self.mask))


class _PackedSequence(Sequence[T]):
    """Indexing for the packed sequences: a slice gives a list, a negative position counts from the end,
    and `_item` reads one item at a position in range."""

    __slots__ = ()

    @overload
    def __getitem__(self, position: int) -> T: ...
    @overload
    def __getitem__(self, position: slice) -> list[T]: ...
    def __getitem__(self, position: int | slice) -> T | list[T]:
        if isinstance(position, slice):
            return [self._item(item) for item in range(*position.indices(len(self)))]
        if not -len(self) <= position < len(self):
            raise IndexError(position)
        return self._item(position % len(self))

    def _item(self, position: int) -> T:
        raise NotImplementedError


class PackedStrings(_PackedSequence[str]):
    """Strings packed into one UTF-8 buffer and an offsets array: about their bytes plus 8 an item,
    where a list of str objects takes some 60 bytes an item more."""

    __slots__ = ("_buffer", "_offsets")

    def __init__(self, texts: Iterable[str] = ()) -> None:
        self._buffer, self._offsets = bytearray(), array("q", [0])
        for text in texts:
            self.append(text)

    def append(self, text: str) -> None:
        self._buffer += text.encode()
        self._offsets.append(len(self._buffer))

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def _item(self, position: int) -> str:
        return self._buffer[self._offsets[position] : self._offsets[position + 1]].decode()

    def hashes(self) -> np.ndarray:
        """Python's hash of each string (equal strings, equal hashes): duplicates found by sorting."""
        return np.fromiter((hash(text) for text in self), dtype=np.int64, count=len(self))


class SplitEntries(_PackedSequence[SplitEntry]):
    """A split's entries, packed (ids, image and mask paths as `PackedStrings`; an empty mask
    string means none): a split of 100k images in about 5 MB where SplitEntry objects took 23 MB,
    in every rectify shard and loader worker. Indexing gives a `SplitEntry`; `ids` is the ids alone."""

    __slots__ = ("ids", "_images", "_masks", "_root")

    def __init__(self, entries: Iterable[SplitEntry], root: str = "") -> None:
        """`entries` all under `root` (as `read_split` makes them), packed one at a time."""
        self.ids, self._images, self._masks = PackedStrings(), PackedStrings(), PackedStrings()
        self._root = root
        for entry in entries:
            if entry._root != root:
                raise ValueError(f"{entry!r} is not under {root!r}")
            self.ids.append(entry.id)
            self._images.append(entry._image)
            self._masks.append(entry._mask or "")

    def __len__(self) -> int:
        return len(self.ids)

    def _item(self, position: int) -> SplitEntry:
        mask = self._masks[position]
        return SplitEntry(self.ids[position], self._images[position], mask or None, self._root)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SplitEntries({len(self)} images under {self._root!r})"


def read_split(split_file: Path, root: Path, *, masks_required: bool) -> SplitEntries:
    """Parse a split file into entries, checking the format, emptiness and duplicate ids."""
    if not root.is_dir():
        raise InputError(f"{root}: data root folder not found")
    root_text = os.fspath(root)
    entries = SplitEntries(_checked_entries(split_file, root, root_text, masks_required), root_text)
    if not entries:
        raise InputError(f"{split_file}: split is empty")
    _refuse_duplicate_ids(split_file, entries.ids)
    return entries


def _checked_entries(split_file: Path, root: Path, root_text: str, masks_required: bool) -> Iterator[SplitEntry]:
    """The split's entries a line at a time, refusing a missing mask where masks are required."""
    for number, fields in _split_lines(split_file):
        entry = _parse_line(split_file, number, fields, root, root_text)
        if masks_required and entry.mask is None:
            raise InputError(f"{split_file}:{number}: no mask given for {entry.id!r}")
        yield entry


def _refuse_duplicate_ids(split_file: Path, ids: PackedStrings) -> None:
    """Name the first line whose id an earlier line has: ids compared by hash, then by text (no set of
    a million strings)."""
    hashes = ids.hashes()
    order = np.argsort(hashes, kind="stable")  # equal hashes stay in split order
    later = np.sort(order[1:][hashes[order][1:] == hashes[order][:-1]])  # a hash some earlier id has
    for position in later.tolist():
        earlier = (int(other) for other in np.flatnonzero(hashes[:position] == hashes[position]))
        first = next((other for other in earlier if ids[other] == ids[position]), None)
        if first is not None:
            numbers = [number for number, _ in _split_lines(split_file)]
            raise InputError(
                f"{split_file}:{numbers[position]}: duplicate image id {ids[position]!r} (first on line {numbers[first]})"
            )


def split_entries(config: Config, split: SplitName, *, masks_required: bool | None = None) -> SplitEntries:
    """The config's `labeled`, `unlabeled` or `val` split; masks are required for labeled and val
    (training and scoring read them), optional for unlabeled, unless `masks_required` says otherwise."""
    required = split != "unlabeled" if masks_required is None else masks_required
    return read_split(config.data_root / getattr(config.data, split), config.data_root, masks_required=required)


def _split_lines(split_file: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each line that names an image, a line at a time (no copy of the file)."""
    try:
        with open(split_file, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                fields = line.split()
                if fields and not fields[0].startswith("#"):
                    yield number, fields
    except FileNotFoundError:
        raise InputError(f"{split_file}: split file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{split_file}: cannot read split file ({error})") from None


def _parse_line(split_file: Path, number: int, fields: list[str], root: Path, root_text: str) -> SplitEntry:
    if len(fields) > 2:
        raise InputError(
            f"{split_file}:{number}: expected 'image [mask]' or a bare id, got {len(fields)} fields"
        )
    if len(fields) == 2:
        return SplitEntry(Path(fields[0]).stem, fields[0], fields[1], root_text)
    token = fields[0]
    if "/" in token or "." in Path(token).name:
        return SplitEntry(Path(token).stem, token, None, root_text)
    return SplitEntry(token, f"JPEGImages/{token}.jpg", _voc_mask(root, token), root_text)


def _voc_mask(root: Path, image_id: str) -> str | None:
    """VOC's mask of `image_id`, relative to `root`: SegmentationClass, else SegmentationClassAug."""
    for folder in ("SegmentationClass", "SegmentationClassAug"):
        relative = f"{folder}/{image_id}.png"
        if (root / relative).exists():
            return relative
    return None
