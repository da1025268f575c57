"""FAISS inner-product index of labeled-image class prototypes, searched within a class in one call.

Vector i is one present class of one labeled image; its FAISS id is i, and
`rows[i]` / `classes[i]` / `areas[i]` say which labeled image, which class and
how much of the image it covers. Prototypes are L2-normalised, so inner
product = cosine.

Class-restricted search without a call per class: each stored vector is the
prototype followed by its class one-hot scaled by CLASS_TAG (width C), and a
query carries its own class the same way, so inner product = cosine +
CLASS_TAG² when the classes agree and cosine otherwise. With CLASS_TAG² = 4 > 2
(the widest cosine gap) every same-class vector outranks every other one: one
`search` over a whole batch of queries returns same-class hits first (exact for
Flat; IVF's coarse clusters become class-pure, so a small nprobe finds the
query's class). Hits of another class (a class with fewer than k vectors) are
dropped and reported as id −1.
"""

import math
import time
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np

from cisctool.errors import InputError, first_line

INDEX_FORMAT = "cisctool-index"
INDEX_VERSION = 2
CLASS_TAG = 2.0


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
    *,
    use_gpu: bool = False,
) -> PrototypeIndex:
    """Index N×D prototypes with any FAISS factory string; IVF is trained on the prototypes.

    With `use_gpu` and a GPU build of faiss, training and adding run on the GPUs;
    the returned index is a CPU copy, so saved files load anywhere.
    """
    width = int(classes.max()) + 1 if len(classes) else 1
    vectors = tag_with_class(prototypes, classes, width)
    count, dim = prototypes.shape
    started = time.perf_counter()
    try:
        index = faiss.index_factory(dim + width, factory, faiss.METRIC_INNER_PRODUCT)
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
        "class_tag_width": width,
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


def tag_with_class(vectors: np.ndarray, classes: np.ndarray, width: int) -> np.ndarray:
    """N×D vectors → N×(D+width): the class one-hot × CLASS_TAG appended (classes ≥ width get none)."""
    tags = np.zeros((len(vectors), width), dtype=np.float32)
    inside = classes < width
    tags[np.flatnonzero(inside), classes[inside]] = CLASS_TAG
    return np.ascontiguousarray(np.concatenate([np.asarray(vectors, dtype=np.float32), tags], axis=1))


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


def _search_parameters(prototype_index: PrototypeIndex) -> faiss.SearchParameters | None:
    """The index type's own speed/recall knob (IVF nprobe, HNSW efSearch)."""
    index = prototype_index.index
    if _ivf_of(index) is not None:
        return faiss.SearchParametersIVF(nprobe=prototype_index.metadata["nprobe"])
    if isinstance(index, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(efSearch=prototype_index.metadata["ef_search"])
    return None


def search_by_class(
    prototype_index: PrototypeIndex, queries: np.ndarray, query_classes: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k among the vectors of each query's own class, for all queries in one FAISS call.

    queries Q×D (L2-normalised), query_classes Q → (scores Q×k float32 cosines, vector ids Q×k int64);
    id −1 (score −inf) where the class has fewer than k labeled vectors.
    """
    scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    ids = np.full((len(queries), k), -1, dtype=np.int64)
    if len(queries) == 0:
        return scores, ids
    width = prototype_index.metadata["class_tag_width"]
    tagged = tag_with_class(queries, np.asarray(query_classes, dtype=np.int64), width)
    found_scores, found_ids = prototype_index.index.search(tagged, k, params=_search_parameters(prototype_index))
    same_class = (found_ids >= 0) & (prototype_index.classes[np.maximum(found_ids, 0)] == query_classes[:, None])
    ids[same_class] = found_ids[same_class]
    scores[same_class] = found_scores[same_class] - CLASS_TAG**2
    return scores, ids


AUTO_FLAT_LIMIT = 20_000
RECALL_SAMPLE = 1000
RECALL_TARGET = 0.95


def auto_factory(count: int) -> str:
    """`index.factory = "auto"`: exact Flat up to AUTO_FLAT_LIMIT vectors, else IVF with ~4·√N lists."""
    if count <= AUTO_FLAT_LIMIT:
        return "Flat"
    lists = 2 ** round(math.log2(4 * math.sqrt(count)))
    return f"IVF{lists},Flat"


def recall_at_1(prototype_index: PrototypeIndex, vectors: np.ndarray) -> float:
    """recall@1 of class-restricted search against exact search, leave-one-out on a sample of the
    index's own vectors: each sampled vector asks for its nearest *other* same-class vector (asking
    for itself would be found trivially in its own IVF list)."""
    sample = np.random.default_rng(0).choice(len(vectors), min(RECALL_SAMPLE, len(vectors)), replace=False)
    queries, query_classes = vectors[sample], prototype_index.classes[sample]
    exact = build_index(vectors, prototype_index.rows, prototype_index.classes, prototype_index.areas, [], "Flat")
    expected = _first_other(search_by_class(exact, queries, query_classes, 2)[1], sample)
    found = _first_other(search_by_class(prototype_index, queries, query_classes, 2)[1], sample)
    return float((found == expected).mean())


def _first_other(ids: np.ndarray, own: np.ndarray) -> np.ndarray:
    """Per row, the first hit that is not the query's own id (−1 if none)."""
    other = (ids != own[:, None]) & (ids >= 0)
    return np.where(other.any(axis=1), ids[np.arange(len(ids)), np.argmax(other, axis=1)], -1)


def tune_nprobe(prototype_index: PrototypeIndex, vectors: np.ndarray) -> float:
    """Smallest power-of-two nprobe reaching RECALL_TARGET (kept in the metadata); returns its recall."""
    lists = _ivf_of(prototype_index.index).nlist
    nprobe, recall = 1, 0.0
    while True:
        prototype_index.metadata["nprobe"] = nprobe
        recall = recall_at_1(prototype_index, vectors)
        if recall >= RECALL_TARGET or nprobe >= lists:
            return recall
        nprobe *= 2


def stored_vectors(prototype_index: PrototypeIndex) -> np.ndarray:
    """All N×D prototypes back from the index, class tags removed (guides are means of hits)."""
    ivf = _ivf_of(prototype_index.index)
    if ivf is not None:
        ivf.make_direct_map()
    tagged = prototype_index.index.reconstruct_n(0, prototype_index.index.ntotal)
    return np.ascontiguousarray(tagged[:, : prototype_index.metadata["dim"]])


