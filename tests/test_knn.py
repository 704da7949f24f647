"""knn against a brute-force numpy reference written here (full similarity matrix + sort)."""

from __future__ import annotations

import numpy as np
import pytest

from landmarks.errors import DataError
from landmarks.inference import knn


def _unit(rows: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _brute_force(queries, index, k):
    """Full [Q, N] similarity matrix in float64, sorted by similarity desc, then row asc."""
    scores = queries.astype(np.float64) @ index.astype(np.float64).T
    rows = np.broadcast_to(np.arange(index.shape[0]), scores.shape)
    order = np.lexsort((rows, -scores), axis=1)[:, :k]
    return np.take_along_axis(scores, order, 1), order


QUERIES = _unit(23, 16, seed=1)
INDEX = _unit(50, 16, seed=2)


@pytest.mark.parametrize("backend", ["tf", "numpy", "faiss"])
@pytest.mark.parametrize("k", [1, 5, 50])
def test_matches_brute_force_across_chunk_boundaries(backend, k):
    # 23 queries in chunks of 7 and 50 index rows in chunks of 13: every chunk edge is uneven.
    values, indices = knn(QUERIES, INDEX, k, backend=backend, chunk_size=7, index_chunk_size=13)
    expected_values, expected_indices = _brute_force(QUERIES, INDEX, k)
    assert values.dtype == np.float32 and indices.dtype == np.int64
    assert values.shape == indices.shape == (23, k)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(values, expected_values, atol=1e-5)


@pytest.mark.parametrize("backend", ["tf", "numpy"])
def test_default_chunks_and_float16_input(backend):
    values, indices = knn(QUERIES.astype(np.float16), INDEX.astype(np.float16), 3, backend=backend)
    expected_values, expected_indices = _brute_force(
        QUERIES.astype(np.float16).astype(np.float32),
        INDEX.astype(np.float16).astype(np.float32),
        3,
    )
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(values, expected_values, atol=1e-5)


@pytest.mark.parametrize("backend", ["tf", "numpy"])
def test_ties_go_to_the_lower_row_even_across_index_chunks(backend):
    # Rows 1, 4 and 9 are the same vector; with index chunks of 3 they sit in chunks 0, 1, 3.
    index = _unit(10, 4, seed=3)
    index[4] = index[1]
    index[9] = index[1]
    query = index[1:2].copy()
    _, indices = knn(query, index, 3, backend=backend, index_chunk_size=3)
    np.testing.assert_array_equal(indices, [[1, 4, 9]])


def test_ivf_probing_every_cell_is_exact_and_hnsw_finds_most_neighbours():
    queries, index = _unit(40, 8, seed=4), _unit(400, 8, seed=5)
    _, expected = _brute_force(queries, index, 5)
    _, ivf = knn(queries, index, 5, backend="faiss-ivf", nlist=8, nprobe=8)
    np.testing.assert_array_equal(ivf, expected)
    _, hnsw = knn(queries, index, 5, backend="faiss-hnsw")
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(hnsw, expected, strict=True)])
    assert recall >= 0.9


def test_no_queries_gives_empty_results():
    values, indices = knn(np.zeros((0, 16), np.float32), INDEX, 2)
    assert values.shape == indices.shape == (0, 2)


@pytest.mark.parametrize(
    "queries, index, k, backend, message",
    [
        (QUERIES, INDEX, 51, "tf", "larger than the index"),
        (QUERIES, INDEX, 0, "tf", "positive integer"),
        (QUERIES, INDEX, 2.0, "tf", "positive integer"),
        (QUERIES[:, :8], INDEX, 2, "tf", "dimension 8"),
        (QUERIES[0], INDEX, 2, "tf", "2-D"),
        (QUERIES.astype(np.int32), INDEX, 2, "tf", "floating point"),
        (QUERIES, np.where(np.arange(50)[:, None] == 7, np.nan, INDEX), 2, "tf", "row 7"),
        (QUERIES, INDEX, 2, "annoy", "unknown backend"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_error(queries, index, k, backend, message):
    with pytest.raises(DataError, match=message):
        knn(queries, index, k, backend=backend)
