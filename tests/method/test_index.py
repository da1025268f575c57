import numpy as np
import pytest

from cisctool.errors import InputError
from cisctool.method.index import build_index, search_by_class
from cisctool.store.index_files import load_index, save_index

NUM_CLASSES, DIM = 5, 32


def clustered_prototypes(count: int, seed: int = 0):
    """Unit vectors around per-class centres, each tagged with a labeled-image row and a class."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(NUM_CLASSES * 4, DIM))
    cluster = rng.integers(0, len(centres), count)
    vectors = centres[cluster] + 0.3 * rng.normal(size=(count, DIM))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    classes = cluster % NUM_CLASSES
    rows = rng.integers(0, count // 2, count)
    return vectors.astype(np.float32), rows, classes, rng.random(count).astype(np.float32)


def nearby_queries(vectors, classes, count: int, seed: int):
    """Queries near the indexed data (as unlabeled prototypes are near labeled ones)."""
    rng = np.random.default_rng(seed)
    chosen = rng.integers(0, len(vectors), count)
    queries = vectors[chosen] + 0.2 * rng.normal(size=(count, vectors.shape[1]))
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return queries.astype(np.float32), classes[chosen]


def brute_force(vectors, classes, queries, query_classes, k):
    ids = np.full((len(queries), k), -1)
    for q, (query, cls) in enumerate(zip(queries, query_classes, strict=True)):
        members = np.flatnonzero(classes == cls)
        order = members[np.argsort(-(vectors[members] @ query), kind="stable")][:k]
        ids[q, : len(order)] = order
    return ids


def test_flat_class_restricted_search_equals_brute_force():
    vectors, rows, classes, areas = clustered_prototypes(2000)
    index = build_index(vectors, rows, classes, areas, [f"img{i}" for i in range(1000)], "Flat")
    queries, query_classes = nearby_queries(vectors, classes, 64, seed=1)
    scores, ids = search_by_class(index, queries, query_classes, k=3)
    assert np.array_equal(ids, brute_force(vectors, classes, queries, query_classes, 3))
    assert (classes[ids] == query_classes[:, None]).all()
    np.testing.assert_allclose(scores[:, 0], np.sum(vectors[ids[:, 0]] * queries, axis=1), rtol=1e-5)


def test_ivf_recall_at_1_against_exact_search():
    vectors, rows, classes, areas = clustered_prototypes(20000)
    index = build_index(vectors, rows, classes, areas, [], "IVF64,Flat", nprobe=16)
    queries, query_classes = nearby_queries(vectors, classes, 500, seed=2)
    _, ids = search_by_class(index, queries, query_classes, k=1)
    exact = brute_force(vectors, classes, queries, query_classes, 1)
    assert (ids[:, 0] == exact[:, 0]).mean() >= 0.95


def test_missing_class_and_short_classes_are_reported_not_crashed():
    vectors, rows, classes, areas = clustered_prototypes(50)
    classes[:] = 0
    classes[0] = 1  # class 1 has one vector, class 2 none
    index = build_index(vectors, rows, classes, areas, [], "Flat")
    scores, ids = search_by_class(index, vectors[:2], np.array([1, 2]), k=2)
    assert ids[0, 0] == 0 and ids[0, 1] == -1 and np.isneginf(scores[0, 1])
    assert (ids[1] == -1).all()
    assert index.vectors_per_class(3).tolist() == [49, 1, 0]


def test_save_load_round_trip_and_bad_files(tmp_path):
    vectors, rows, classes, areas = clustered_prototypes(300)
    index = build_index(vectors, rows, classes, areas, ["a", "b"], "HNSW32")
    index.metadata["checkpoint_sha256"] = "abc"
    save_index(index, tmp_path / "r0.faiss", tmp_path / "r0.json")
    loaded = load_index(tmp_path / "r0.faiss", tmp_path / "r0.json")
    assert loaded.image_ids == ["a", "b"] and loaded.metadata["checkpoint_sha256"] == "abc"
    assert np.array_equal(loaded.rows, rows) and np.array_equal(loaded.classes, classes)
    original = search_by_class(index, vectors[:10], classes[:10], 2)[1]
    assert np.array_equal(search_by_class(loaded, vectors[:10], classes[:10], 2)[1], original)

    with pytest.raises(InputError, match="missing.faiss: index file not found"):
        load_index(tmp_path / "missing.faiss", tmp_path / "r0.json")
    (tmp_path / "bad.faiss").write_bytes(b"garbage")
    with pytest.raises(InputError, match="bad.faiss: cannot read FAISS index"):
        load_index(tmp_path / "bad.faiss", tmp_path / "r0.json")


def test_bad_factories_are_clear_errors():
    vectors, rows, classes, areas = clustered_prototypes(100)
    with pytest.raises(InputError, match="FAISS rejects it"):
        build_index(vectors, rows, classes, areas, [], "NotAnIndex")
    with pytest.raises(InputError, match="256 inverted lists need at least 256 prototypes"):
        build_index(vectors, rows, classes, areas, [], "IVF256,Flat")


def test_gpu_setting_is_resolved_against_what_faiss_sees(monkeypatch):
    import cisctool.method.index as index_module
    from cisctool.method.index import resolve_use_gpu

    monkeypatch.setattr(index_module, "gpu_count", lambda: 0)
    assert resolve_use_gpu("auto") is False and resolve_use_gpu("false") is False
    with pytest.raises(InputError, match="index.use_gpu = true, but the installed faiss sees no GPU"):
        resolve_use_gpu("true")
    monkeypatch.setattr(index_module, "gpu_count", lambda: 2)
    assert resolve_use_gpu("auto") is True and resolve_use_gpu("false") is False
    vectors, rows, classes, areas = clustered_prototypes(100)
    monkeypatch.setattr(index_module, "gpu_count", lambda: 0)
    built = build_index(vectors, rows, classes, areas, [], "Flat", use_gpu=True)
    assert built.metadata["built_on_gpu"] is False  # asked, but this faiss has no GPU: CPU build


def test_auto_picks_flat_for_small_sets_and_tunes_ivf_to_the_recall_target():
    from cisctool.method.index import RECALL_TARGET, auto_factory, recall_at_1, tune_nprobe

    assert auto_factory(5000) == "Flat" and auto_factory(120_000) == "IVF1024,Flat"
    vectors, rows, classes, areas = clustered_prototypes(20000)
    index = build_index(vectors, rows, classes, areas, [], "IVF128,Flat")
    recall = tune_nprobe(index, vectors)
    nprobe = index.metadata["nprobe"]
    assert recall >= RECALL_TARGET and recall == recall_at_1(index, vectors)
    if nprobe > 1:  # the chosen nprobe is the smallest power of two that reaches the target
        index.metadata["nprobe"] = nprobe // 2
        assert recall_at_1(index, vectors) < RECALL_TARGET


def test_one_search_call_serves_queries_of_many_classes(monkeypatch):
    vectors, rows, classes, areas = clustered_prototypes(500)
    index = build_index(vectors, rows, classes, areas, [], "Flat")
    calls = []
    original = index.index.search
    monkeypatch.setattr(index.index, "search", lambda *a, **k: calls.append(1) or original(*a, **k))
    queries, query_classes = nearby_queries(vectors, classes, 40, seed=3)
    assert len(set(query_classes.tolist())) == NUM_CLASSES
    search_by_class(index, queries, query_classes, 2)
    assert len(calls) == 1


def test_an_index_of_the_previous_format_asks_for_a_rebuild(tmp_path):
    import json

    vectors, rows, classes, areas = clustered_prototypes(50)
    save_index(build_index(vectors, rows, classes, areas, [], "Flat"), tmp_path / "r.faiss", tmp_path / "r.json")
    meta = json.loads((tmp_path / "r.json").read_text())
    (tmp_path / "r.json").write_text(json.dumps({**meta, "version": 1}))
    with pytest.raises(InputError, match="version 1; this cisctool reads 2 .rebuild it"):
        load_index(tmp_path / "r.faiss", tmp_path / "r.json")
