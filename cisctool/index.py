"""FAISS inner-product index of labeled-image class prototypes, with class-restricted search.

Vector i is one present class of one labeled image; its FAISS id is i, and
`rows[i]` / `classes[i]` / `areas[i]` say which labeled image, which class and
how much of the image it covers. Prototypes are L2-normalised, so inner
product = cosine. A query carries a class and is searched among that class's
vectors only (`IDSelectorBatch`), with one FAISS call per class present in a
batch of queries, never one per query.
"""

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from cisctool.errors import InputError, first_line
from cisctool.runs import atomic_write, atomic_write_json

INDEX_FORMAT = "cisctool-index"
INDEX_VERSION = 1


@dataclass
class PrototypeIndex:
    """A CPU FAISS index plus what each vector is; `metadata` is saved beside it as JSON."""

    index: faiss.Index
    image_ids: list[str]
    rows: np.ndarray
    classes: np.ndarray
    areas: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    def vectors_per_class(self, num_classes: int) -> np.ndarray:
        return np.bincount(self.classes, minlength=num_classes)


def build_index(
    prototypes: np.ndarray,
    rows: np.ndarray,
    classes: np.ndarray,
    areas: np.ndarray,
    image_ids: list[str],
    factory: str = "Flat",
    nprobe: int = 16,
    ef_search: int = 128,
    use_gpu: bool = False,
) -> PrototypeIndex:
    """Index N×D prototypes with any FAISS factory string; IVF is trained on the prototypes.

    With `use_gpu` and a GPU build of faiss, training and adding run on the GPUs;
    the returned index is a CPU copy (class-restricted selectors search it there).
    """
    vectors = np.ascontiguousarray(prototypes, dtype=np.float32)
    count, dim = vectors.shape
    started = time.perf_counter()
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as error:
        raise InputError(f"index.factory = {factory!r}: FAISS rejects it ({first_line(error)})") from None
    lists = getattr(_ivf_of(index), "nlist", 0)
    if lists and count < lists:
        raise InputError(
            f"index.factory = {factory!r}: {lists} inverted lists need at least {lists} "
            f"prototypes to train on, but there are {count}; use Flat or fewer lists"
        )
    on_gpu = gpu_count() > 0 and use_gpu
    if on_gpu:  # train and add on the GPUs, keep a CPU copy: saved files load anywhere
        index = faiss.index_cpu_to_all_gpus(index)
    if not index.is_trained:
        index.train(vectors)
    index.add(vectors)
    if on_gpu:
        index = faiss.index_gpu_to_cpu(index)
    metadata = {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "factory": factory,
        "dim": dim,
        "vectors": count,
        "nprobe": nprobe,
        "ef_search": ef_search,
        "build_seconds": time.perf_counter() - started,
        "built_on_gpu": bool(on_gpu),
    }
    return PrototypeIndex(
        index, list(image_ids), rows.astype(np.int64), classes.astype(np.int64),
        areas.astype(np.float32), metadata,
    )  # fmt: skip


def gpu_count() -> int:
    """GPUs this faiss can use (0 for faiss-cpu, which lacks the call)."""
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def resolve_use_gpu(setting: str) -> bool:
    """`index.use_gpu`: "auto" = when faiss sees a GPU; "true" insists; "false" never."""
    if setting == "true" and gpu_count() == 0:
        raise InputError("index.use_gpu = true, but the installed faiss sees no GPU (install .[gpu])")
    return setting != "false" and gpu_count() > 0


def _ivf_of(index: faiss.Index) -> Any:
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def _search_parameters(prototype_index: PrototypeIndex, ids: np.ndarray) -> faiss.SearchParameters:
    """Parameters restricting a search to `ids`, with the index type's own speed/recall knob."""
    selector = faiss.IDSelectorBatch(ids)
    index = prototype_index.index
    if _ivf_of(index) is not None:
        return faiss.SearchParametersIVF(sel=selector, nprobe=prototype_index.metadata["nprobe"])
    if isinstance(index, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(sel=selector, efSearch=prototype_index.metadata["ef_search"])
    return faiss.SearchParameters(sel=selector)


def search_by_class(
    prototype_index: PrototypeIndex, queries: np.ndarray, query_classes: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k among the vectors of each query's own class.

    queries Q×D (L2-normalised), query_classes Q → (scores Q×k float32, vector ids Q×k int64);
    id −1 (score −inf) where the class has fewer than k labeled vectors.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    ids = np.full((len(queries), k), -1, dtype=np.int64)
    for cls in np.unique(query_classes):
        members = np.flatnonzero(prototype_index.classes == cls)
        if members.size == 0:
            continue
        chosen = np.flatnonzero(query_classes == cls)
        params = _search_parameters(prototype_index, members.astype(np.int64))
        found_scores, found_ids = prototype_index.index.search(queries[chosen], k, params=params)
        valid = found_ids >= 0
        scores[chosen] = np.where(valid, found_scores, -np.inf)
        ids[chosen] = found_ids
    return scores, ids


def stored_vectors(prototype_index: PrototypeIndex) -> np.ndarray:
    """All N×D vectors back from the index (guides are means of hits; IVF needs its direct map)."""
    ivf = _ivf_of(prototype_index.index)
    if ivf is not None:
        ivf.make_direct_map()
    return prototype_index.index.reconstruct_n(0, prototype_index.index.ntotal)


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
    if meta.get("format") != INDEX_FORMAT or meta.get("version") != INDEX_VERSION:
        raise InputError(f"{meta_path}: not a cisctool index metadata file of version {INDEX_VERSION}")
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
