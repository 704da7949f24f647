"""knn against a brute-force numpy reference written here (full similarity matrix + sort)."""

from __future__ import annotations

import numpy as np
import pytest

from landmarks.errors import DataError
from landmarks.inference import knn_tf
from landmarks.inference.search import knn

# Each back end, and the "tf" back end in both of its precisions.
SEARCHES = {
    "tf-float32": {"backend": "tf", "precision": "float32"},
    "tf-bfloat16": {"backend": "tf", "precision": "bfloat16"},
    "jax": {"backend": "jax"},
    "numpy": {"backend": "numpy"},
    "faiss": {"backend": "faiss"},
}
EXACT_CHUNKED = ["tf-float32", "tf-bfloat16", "jax", "numpy"]


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


@pytest.mark.parametrize("search", list(SEARCHES))
@pytest.mark.parametrize("k", [1, 5, 50])
def test_matches_brute_force_across_chunk_boundaries(search, k):
    # 23 queries in chunks of 7 and 50 index rows in chunks of 13: every chunk edge is uneven,
    # and 13 rows make groups of knn_tf.GROUP = 16 columns padded ones.
    values, indices = knn(QUERIES, INDEX, k, chunk_size=7, index_chunk_size=13, **SEARCHES[search])
    expected_values, expected_indices = _brute_force(QUERIES, INDEX, k)
    assert values.dtype == np.float32 and indices.dtype == np.int64
    assert values.shape == indices.shape == (23, k)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(values, expected_values, atol=1e-5)


@pytest.mark.parametrize("search", EXACT_CHUNKED)
def test_default_chunks_and_float16_input(search):
    values, indices = knn(
        QUERIES.astype(np.float16), INDEX.astype(np.float16), 3, **SEARCHES[search]
    )
    expected_values, expected_indices = _brute_force(
        QUERIES.astype(np.float16).astype(np.float32),
        INDEX.astype(np.float16).astype(np.float32),
        3,
    )
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(values, expected_values, atol=1e-5)


@pytest.mark.parametrize("search", EXACT_CHUNKED)
def test_ties_go_to_the_lower_row_even_across_index_chunks(search):
    # Rows 1, 4 and 9 are the same vector; with index chunks of 3 they sit in chunks 0, 1, 3.
    index = _unit(10, 4, seed=3)
    index[4] = index[1]
    index[9] = index[1]
    query = index[1:2].copy()
    _, indices = knn(query, index, 3, index_chunk_size=3, **SEARCHES[search])
    np.testing.assert_array_equal(indices, [[1, 4, 9]])


def test_every_exact_back_end_finds_the_same_neighbours_on_a_larger_index():
    queries, index = _unit(300, 64, seed=14), _unit(5000, 64, seed=15)
    _, expected = _brute_force(queries, index, 10)
    for search in ["tf-float32", "tf-bfloat16", "jax", "numpy", "faiss"]:
        _, indices = knn(
            queries, index, 10, chunk_size=128, index_chunk_size=1024, **SEARCHES[search]
        )
        np.testing.assert_array_equal(indices, expected, err_msg=search)


@pytest.mark.parametrize(
    "keras_backend, accelerator, native_bf16, expected",
    [
        ("jax", True, False, "jax"),
        ("tensorflow", True, True, "tf"),
        ("jax", False, True, "tf"),
        ("tensorflow", False, True, "tf"),
        ("jax", False, False, "faiss"),
        ("tensorflow", False, False, "faiss"),
    ],
)
def test_auto_back_end_is_the_accelerator_or_the_faster_one_on_this_cpu(
    monkeypatch, keras_backend, accelerator, native_bf16, expected
):
    import jax

    from landmarks.inference.search import resolve_backend

    monkeypatch.setenv("KERAS_BACKEND", keras_backend)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu" if accelerator else "cpu")
    monkeypatch.setattr(knn_tf, "on_accelerator", lambda: accelerator)
    monkeypatch.setattr(knn_tf, "bfloat16_is_fast", lambda: native_bf16)
    assert resolve_backend("auto") == expected
    assert resolve_backend("numpy") == "numpy"


def test_auto_back_end_on_a_cpu_without_faiss_is_tf(monkeypatch):
    import builtins

    from landmarks.inference.search import cpu_backend

    real_import = builtins.__import__

    def no_faiss(name, *args, **kwargs):
        if name == "faiss":
            raise ImportError("no faiss here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(knn_tf, "bfloat16_is_fast", lambda: False)
    assert cpu_backend() == "faiss"
    monkeypatch.setattr(builtins, "__import__", no_faiss)
    assert cpu_backend() == "tf"


@pytest.mark.parametrize("search", ["tf-float32", "tf-bfloat16", "jax"])
def test_ties_inside_one_group_and_across_groups_of_an_index_chunk(search):
    # 100 rows in one chunk: rows 3, 5 (group 0), 17 (group 1) and 70 (group 4) are one vector,
    # so the per-block top-k over group maxima must still return them in row order.
    index = _unit(100, 8, seed=6)
    for row in (5, 17, 70):
        index[row] = index[3]
    _, indices = knn(index[3:4], index, 4, index_chunk_size=100, **SEARCHES[search])
    np.testing.assert_array_equal(indices, [[3, 5, 17, 70]])


def test_bfloat16_screen_error_stays_within_its_bound():
    # Vectors of mixed norms (0.01 to 100) and signs: every screen score (bfloat16 inputs, as
    # TensorFlow computes it) is within delta + 2u|screen| / (1 - 2u) of the float64 product,
    # the bound that search_screened's thresholds rest on.
    import tensorflow as tf

    rng = np.random.default_rng(7)
    queries = _unit(64, 512, seed=8) * rng.uniform(0.01, 100, (64, 1)).astype(np.float32)
    index = _unit(3000, 512, seed=9) * rng.uniform(0.01, 100, (3000, 1)).astype(np.float32)
    screen = tf.linalg.matmul(
        tf.cast(queries, tf.bfloat16), tf.cast(index, tf.bfloat16), transpose_b=True
    )
    screen = tf.cast(screen, tf.float64).numpy()
    exact = queries.astype(np.float64) @ index.astype(np.float64).T
    query_stats = knn_tf._to_bfloat16(queries)[1].numpy().astype(np.float64)
    index_stats = knn_tf._to_bfloat16(index)[1].numpy().astype(np.float64).max(axis=0)
    delta = knn_tf.screen_error(query_stats, index_stats, 512)
    rounding = 2 * knn_tf.BFLOAT16_UNIT_ROUNDOFF
    bound = delta[:, None] + rounding * np.abs(screen) / (1 - rounding)
    error = np.abs(screen - exact)
    assert (error <= bound).all()
    assert (error / bound).max() > 0.05  # the bound is not vacuous


def test_bfloat16_screen_keeps_near_ties_the_screen_cannot_order():
    # Query 0's 30 nearest rows are within 1e-5 of each other in similarity: float32 orders them,
    # bfloat16 (8 bits) cannot, so all of them must survive the screen to be ordered in float32.
    rng = np.random.default_rng(10)
    index = _unit(400, 32, seed=11)
    near = index[0] + 1e-3 * rng.standard_normal((30, 32)).astype(np.float32)
    index[:30] = near / np.linalg.norm(near, axis=1, keepdims=True)
    queries = np.stack([index[0], index[200]])
    values, indices = knn(queries, index, 5, backend="tf", precision="bfloat16")
    expected_values, expected_indices = _brute_force(queries, index, 5)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(values, expected_values, atol=1e-5)


def test_bfloat16_screen_searches_a_crowded_chunk_in_float32(monkeypatch):
    # Every row is one of two vectors, so the screen keeps all 400 rows of each query: more than
    # the limit of 100 per query, so that query chunk is searched in float32 instead.
    index = np.repeat(_unit(2, 16, seed=12), 200, axis=0)
    queries = _unit(3, 16, seed=13)
    searched = []
    original = knn_tf.search_float32

    def counting_search(queries, index, *args):
        searched.append((len(queries), len(index)))
        return original(queries, index, *args)

    monkeypatch.setattr(knn_tf, "search_float32", counting_search)
    monkeypatch.setattr(knn_tf, "MAX_KEPT_PER_QUERY", 100)
    values, indices = knn(queries, index, 5, backend="tf", precision="bfloat16")
    expected_values, expected_indices = _brute_force(queries, index, 5)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(values, expected_values, atol=1e-5)
    assert searched == [(3, 400)]


def test_screen_that_keeps_too_few_rows_falls_back_to_float32(monkeypatch):
    # A guard against a broken invariant: if a query kept fewer than k rows, its chunk is
    # searched in float32 rather than answered from another query's rows.
    monkeypatch.setattr(
        knn_tf, "_screen_chunk", lambda step, queries, *rest: (np.zeros(1, int), np.zeros(1, int))
    )
    values, indices = knn(QUERIES, INDEX, 3, backend="tf", precision="bfloat16")
    expected_values, expected_indices = _brute_force(QUERIES, INDEX, 3)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(values, expected_values, atol=1e-5)


def test_float32_search_turns_tensor_float_32_off_while_it_runs_and_restores_it(monkeypatch):
    import tensorflow as tf

    seen_during_search = []
    original = knn_tf._search_chunk

    def spy(*args):
        seen_during_search.append(tf.config.experimental.tensor_float_32_execution_enabled())
        return original(*args)

    monkeypatch.setattr(knn_tf, "_search_chunk", spy)
    before = tf.config.experimental.tensor_float_32_execution_enabled()
    try:
        tf.config.experimental.enable_tensor_float_32_execution(True)
        knn(QUERIES, INDEX, 3, backend="tf", chunk_size=10, precision="float32")
        assert seen_during_search == [False, False, False]  # 23 queries in chunks of 10
        assert tf.config.experimental.tensor_float_32_execution_enabled()
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(before)


@pytest.mark.parametrize(
    "flags, onednn, expected",
    [
        ("fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni", None, True),
        ("fpu sse2 avx2 amx_bf16 amx_tile amx_int8", None, True),
        ("fpu sse2 avx2 avx512f avx512_vnni", None, False),  # AVX-512 without bf16
        ("fpu sse2 avx2 amx_bf16", "0", False),  # oneDNN off: TensorFlow emulates bfloat16
    ],
)
def test_bfloat16_detection_reads_the_cpu_flags(tmp_path, monkeypatch, flags, onednn, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: a CPU\nflags\t\t: {flags}\n")
    if onednn is None:
        monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    else:
        monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", onednn)
    assert knn_tf.bfloat16_is_fast(str(cpuinfo)) is expected
    assert knn_tf.bfloat16_is_fast(str(tmp_path / "missing")) is False


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
        (QUERIES, INDEX, 2, {"precision": "float16"}, "unknown precision"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_error(queries, index, k, backend, message):
    options = backend if isinstance(backend, dict) else {"backend": backend}
    with pytest.raises(DataError, match=message):
        knn(queries, index, k, **options)
