import numpy as np
import pytest

from cisctool.method.guides import GuideSource, mix_hash, official_slots
from cisctool.method.index import build_index


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def source_parts():
    """10 labeled images; class 1 in all, class 2 in images 0–2, class 3 in none."""
    rng = np.random.default_rng(0)
    rows = np.concatenate([np.arange(10), np.arange(3)])
    classes = np.concatenate([np.ones(10, int), np.full(3, 2)])
    vectors = unit(rng.random((13, 8)))
    index = build_index(vectors, rows, classes, np.ones(13), [f"img{row}" for row in range(10)])
    return index, vectors, rows, classes


def test_nearest_guides_are_the_mean_of_the_top_k_same_class_vectors(source_parts):
    index, vectors, rows, classes = source_parts
    source = GuideSource(index, 4, "nearest", topk=2, seed=0)
    queries = unit(np.random.default_rng(1).random((3, 8)))
    query_classes = np.array([1, 2, 3])
    guides = source.choose(queries, query_classes, np.arange(3), np.full(3, -1))
    for slot in range(2):
        members = np.flatnonzero(classes == query_classes[slot])
        top = members[np.argsort(-(vectors[members] @ queries[slot]))[:2]]
        assert guides.labeled_positions[slot] == rows[top[0]]
        np.testing.assert_allclose(guides.vectors[slot], unit(vectors[top].sum(0, keepdims=True))[0], atol=1e-6)
    assert guides.guided.tolist() == [True, True, False] and guides.labeled_positions[2] == -1
    assert not guides.fallback.any()


def test_an_image_is_never_its_own_guide(source_parts):
    index, vectors, *_ = source_parts
    own_positions = np.array([4, 0, 1])
    for mode in ("nearest", "random"):
        source = GuideSource(index, 4, mode, topk=1, seed=3)
        # the query is the image's own prototype: nearest would pick itself if allowed
        guides = source.choose(vectors[[4, 10, 11]], np.array([1, 2, 2]), np.arange(3), own_positions)
        assert (guides.labeled_positions != own_positions).all() and guides.guided.all()


def test_random_guides_are_deterministic_per_image_and_class_and_spread(source_parts):
    index, *_ = source_parts
    source = GuideSource(index, 4, "random", topk=1, seed=0)
    positions = np.arange(200)
    queries = np.zeros((200, 8), np.float32)
    unlabeled = np.full(200, -1)
    first = source.choose(queries, np.ones(200, int), positions, unlabeled).labeled_positions
    again = source.choose(queries[::-1], np.ones(200, int), positions[::-1], unlabeled).labeled_positions
    assert np.array_equal(first, again[::-1])
    assert set(first.tolist()) == set(range(10))  # every labeled image of the class gets drawn


def test_official_slot_is_one_guided_slot_or_none():
    source_slots = np.array([[True, False, True], [False, False, False], [False, True, False]])
    chosen = official_slots(source_slots, np.arange(3), seed=0)
    assert chosen[1] == -1 and chosen[2] == 1 and chosen[0] in (0, 2)


def test_mix_hash_is_deterministic_and_mixes():
    values = mix_hash(np.uint64(0), np.arange(1000), np.uint64(5))
    assert np.array_equal(values, mix_hash(np.uint64(0), np.arange(1000), np.uint64(5)))
    assert len(np.unique(values % np.uint64(10))) == 10
