"""A prototype index on disk: `round<N>.faiss` (the CPU FAISS index) beside `round<N>.json` (format,
version, what each vector is, and the metadata); both written atomically, and checked when read."""

import json
from pathlib import Path

import faiss
import numpy as np

from cisctool.errors import InputError, first_line
from cisctool.method.index import INDEX_FORMAT, INDEX_VERSION, PrototypeIndex
from cisctool.store.atomic import atomic_write, atomic_write_json


def save_index(prototype_index: PrototypeIndex, index_path: Path, meta_path: Path) -> None:
    """Write `.faiss` and `.json` atomically (JSON last: its presence marks a whole pair)."""
    atomic_write(index_path, lambda tmp: faiss.write_index(prototype_index.index, str(tmp)))
    atomic_write_json(
        meta_path,
        {
            **prototype_index.metadata,
            "image_ids": prototype_index.image_ids,
            "rows": prototype_index.rows.tolist(),
            "classes": prototype_index.classes.tolist(),
            "areas": prototype_index.areas.tolist(),
        },
    )


def load_index(index_path: Path, meta_path: Path) -> PrototypeIndex:
    """Read a saved index; missing, corrupt or foreign files give a one-line InputError."""
    for path in (index_path, meta_path):
        if not path.is_file():
            raise InputError(f"{path}: index file not found (run `cisctool index build`)")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{meta_path}: not valid JSON ({error})") from None
    if meta.get("format") != INDEX_FORMAT:
        raise InputError(f"{meta_path}: not a cisctool index metadata file")
    if meta.get("version") != INDEX_VERSION:
        raise InputError(
            f"{meta_path}: index format version {meta.get('version')}; this cisctool reads {INDEX_VERSION} "
            "(rebuild it with `cisctool index build`)"
        )
    try:
        index = faiss.read_index(str(index_path))
    except RuntimeError as error:
        raise InputError(f"{index_path}: cannot read FAISS index ({first_line(error)})") from None
    if index.ntotal != len(meta["classes"]):
        raise InputError(
            f"{index_path}: holds {index.ntotal} vectors but {meta_path.name} describes {len(meta['classes'])}"
        )
    arrays = {key: meta.pop(key) for key in ("image_ids", "rows", "classes", "areas")}
    return PrototypeIndex(
        index, arrays["image_ids"], np.asarray(arrays["rows"], dtype=np.int64),
        np.asarray(arrays["classes"], dtype=np.int64), np.asarray(arrays["areas"], dtype=np.float32), meta,
    )  # fmt: skip
