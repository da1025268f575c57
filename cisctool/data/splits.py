"""Split files: which images (and masks) make the labeled, unlabeled and val sets.

Two line formats, as ST++/UniMatch and VOC users have them:
- `img_rel [mask_rel]`: paths relative to `data.root`; the mask is optional
  for the unlabeled split (used only for quality reports there);
- a bare id: VOC's `JPEGImages/<id>.jpg` and `SegmentationClass/<id>.png`
  (or `SegmentationClassAug/<id>.png` where that exists).
The image id is the image file's stem.
"""

from dataclasses import dataclass
from pathlib import Path

from cisctool.errors import InputError


@dataclass(frozen=True)
class SplitEntry:
    """One image of a split; `mask` is None when the split line names none."""

    id: str
    image: Path
    mask: Path | None


def read_split(split_file: Path, root: Path, *, masks_required: bool) -> list[SplitEntry]:
    """Parse a split file into entries, checking the format, emptiness and duplicate ids."""
    if not root.is_dir():
        raise InputError(f"{root}: data root folder not found")
    try:
        lines = split_file.read_text().splitlines()
    except FileNotFoundError:
        raise InputError(f"{split_file}: split file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{split_file}: cannot read split file ({error})") from None
    entries: list[SplitEntry] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        entry = _parse_line(split_file, number, fields, root)
        if masks_required and entry.mask is None:
            raise InputError(f"{split_file}:{number}: no mask given for {entry.id!r}")
        if entry.id in seen:
            raise InputError(
                f"{split_file}:{number}: duplicate image id {entry.id!r} (first on line {seen[entry.id]})"
            )
        seen[entry.id] = number
        entries.append(entry)
    if not entries:
        raise InputError(f"{split_file}: split is empty")
    return entries


def _parse_line(split_file: Path, number: int, fields: list[str], root: Path) -> SplitEntry:
    if len(fields) > 2:
        raise InputError(
            f"{split_file}:{number}: expected 'image [mask]' or a bare id, got {len(fields)} fields"
        )
    if len(fields) == 2:
        image = root / fields[0]
        return SplitEntry(image.stem, image, root / fields[1])
    token = fields[0]
    if "/" in token or "." in Path(token).name:
        image = root / token
        return SplitEntry(image.stem, image, None)
    return SplitEntry(token, root / "JPEGImages" / f"{token}.jpg", _voc_mask(root, token))


def _voc_mask(root: Path, image_id: str) -> Path | None:
    for folder in ("SegmentationClass", "SegmentationClassAug"):
        candidate = root / folder / f"{image_id}.png"
        if candidate.exists():
            return candidate
    return None
