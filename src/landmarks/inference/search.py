"""Exact (and optionally approximate) k-nearest-neighbour search by inner product.

For L2-normalised vectors the inner product is the cosine similarity, so `knn` returns the k
most similar index rows of every query, most similar first.

Back ends:
  "tf"          exact: chunked TensorFlow matmul + top_k (landmarks.inference.knn_tf). Extra memory is
                bounded by query_chunk x index_chunk similarities (plus the running top-k and,
                on a GPU/TPU, the index kept on the device), so a 761k-row index and 117k
                queries never need a [Q, N] matrix. Runs wherever TensorFlow places it.
                precision="bfloat16" screens in bfloat16 and re-scores what the screen keeps
                in float32 (the same result, faster on CPUs with AVX512_BF16/AMX; keeps a
                bfloat16 copy of the index); "auto" picks it there and float32 elsewhere.
  "jax"         exact: chunked jnp matmul (HIGHEST precision) + lax.top_k on the default JAX
                device, the index kept there (landmarks.inference.knn_jax); the TPU's search.
  "numpy"       exact: chunked numpy matmul + argpartition (the reference of the benchmark).
  "faiss"       exact: faiss.IndexFlatIP (CPU).
  "faiss-ivf"   approximate: faiss.IndexIVFFlat (inner product), `nlist` cells, `nprobe` probed.
  "faiss-hnsw"  approximate: faiss.IndexHNSWFlat (inner product), graph with `hnsw_m` links.

"auto" picks per machine (`resolve_backend`): on a GPU/TPU the accelerator's own matmul ("jax"
when Keras runs on JAX, as landmarks.backend sets KERAS_BACKEND, else "tf"); on a CPU "tf" where
its bfloat16 screen runs natively (AVX512_BF16 or AMX with oneDNN on: 0.68x faiss' time in
bench/knn.py) and "faiss" elsewhere (about 2.5x faster than tf on an AMD EPYC without bf16),
or "tf" when faiss is not installed. docs/benchmarks.md gives the measurements and the CPU of
each.

Ties: with "tf", "jax" and "numpy", equal similarities are ordered by ascending index row (the lower row
comes first), across chunk boundaries too. faiss does not specify the order of exact ties.
"""

from __future__ import annotations

import math
import os

import numpy as np

from landmarks.errors import DataError

BACKENDS = ("auto", "tf", "jax", "numpy", "faiss", "faiss-ivf", "faiss-hnsw")
PRECISIONS = ("auto", "float32", "bfloat16")  # of the "tf" back end


def resolve_backend(backend: str) -> str:
    """`backend`, with "auto" made the fastest exact back end of this machine: the accelerator's
    matmul ("jax" on the JAX backend, else "tf") when there is a GPU/TPU, else `cpu_backend()`."""
    if backend != "auto":
        return backend
    from landmarks.inference import knn_tf

    if os.environ.get("KERAS_BACKEND") == "jax":
        import jax

        if jax.default_backend() != "cpu":
            return "jax"
    elif knn_tf.on_accelerator():
        return "tf"
    return cpu_backend()


def cpu_backend() -> str:
    """The faster exact back end on this CPU: "tf" when its bfloat16 screen runs natively
    (`knn_tf.bfloat16_is_fast`), else "faiss" if it is installed, else "tf"."""
    from landmarks.inference import knn_tf

    if knn_tf.bfloat16_is_fast():
        return "tf"
    try:
        import faiss  # noqa: F401
    except ImportError:
        return "tf"
    return "faiss"


def knn(
    queries,
    index,
    k: int,
    *,
    backend: str = "auto",
    chunk_size: int = 1024,
    index_chunk_size: int = 8192,
    precision: str = "auto",
    nlist: int | None = None,
    nprobe: int = 16,
    hnsw_m: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """The `k` index rows with the largest inner product with each query.

    queries: float [Q, D]; index: float [N, D] (float16/float32/float64; computed in float32).
    k: 1 <= k <= N. chunk_size: queries per step; index_chunk_size: index rows per step ("tf",
    "jax", "numpy"); peak extra memory is about chunk_size * index_chunk_size * 4 bytes (32 MiB by
    default; raise both on a GPU/TPU). precision ("tf"): "float32", "bfloat16" (a bfloat16
    screen whose kept rows are re-scored in float32; see landmarks.inference.knn_tf) or "auto".
    nlist/nprobe: IVF cells and cells probed (nlist default 4*sqrt(N)); hnsw_m: HNSW links.
    Returns (similarities float32 [Q, k] descending per row, indices int64 [Q, k] into `index`).
    """
    queries = _as_matrix(queries, "queries")
    index = _as_matrix(index, "index")
    if queries.shape[1] != index.shape[1]:
        raise DataError(
            f"knn: queries have dimension {queries.shape[1]} but the index has {index.shape[1]}"
        )
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise DataError(f"knn: k must be a positive integer, got {k!r}")
    if k > index.shape[0]:
        raise DataError(f"knn: k={k} is larger than the index ({index.shape[0]} rows)")
    if precision not in PRECISIONS:  # checked whichever back end "auto" picks on this machine
        raise DataError(
            f"knn: unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}"
        )
    if chunk_size < 1 or index_chunk_size < 1:
        raise DataError(f"knn: chunk sizes must be >= 1, got {chunk_size}, {index_chunk_size}")
    k = int(k)
    backend = resolve_backend(backend)
    if queries.shape[0] == 0:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    if backend == "tf":
        return _knn_tf(queries, index, k, chunk_size, index_chunk_size, precision)
    if backend == "jax":
        from landmarks.inference import knn_jax

        return knn_jax.search(queries, index, k, chunk_size, index_chunk_size)
    if backend == "numpy":
        return _knn_numpy(queries, index, k, chunk_size, index_chunk_size)
    if backend in ("faiss", "faiss-ivf", "faiss-hnsw"):
        return _knn_faiss(queries, index, k, backend, nlist, nprobe, hnsw_m)
    raise DataError(f"knn: unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def _as_matrix(values, name: str) -> np.ndarray:
    """float32 C-contiguous [R, D] copy-free when possible; clear errors otherwise."""
    array = np.asarray(values)
    if array.ndim != 2:
        raise DataError(f"knn: {name} must be a 2-D array [rows, dim], got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"knn: {name} must be floating point, got dtype {array.dtype}")
    if array.shape[1] == 0:
        raise DataError(f"knn: {name} has dimension 0")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        row = int(np.nonzero(~np.isfinite(array).all(axis=1))[0][0])
        raise DataError(f"knn: {name} row {row} contains NaN or infinity")
    return array


# --- TensorFlow ---------------------------------------------------------------------------------


def _knn_tf(queries, index, k, chunk_size, index_chunk_size, precision):
    from landmarks.inference import knn_tf

    if precision == "auto":
        precision = (
            "bfloat16" if knn_tf.bfloat16_is_fast() and not knn_tf.on_accelerator() else "float32"
        )
    if precision == "bfloat16":
        return knn_tf.search_screened(queries, index, k, chunk_size, index_chunk_size)
    return knn_tf.search_float32(queries, index, k, chunk_size, index_chunk_size)


# --- numpy --------------------------------------------------------------------------------------


def _knn_numpy(queries, index, k, chunk_size, index_chunk_size):
    num_queries = queries.shape[0]
    out_values = np.empty((num_queries, k), np.float32)
    out_indices = np.empty((num_queries, k), np.int64)
    for start in range(0, num_queries, chunk_size):
        chunk = queries[start : start + chunk_size]
        best_values = np.zeros((chunk.shape[0], 0), np.float32)
        best_indices = np.zeros((chunk.shape[0], 0), np.int64)
        for offset in range(0, index.shape[0], index_chunk_size):
            scores = chunk @ index[offset : offset + index_chunk_size].T
            chunk_k = min(k, scores.shape[1])
            if chunk_k < scores.shape[1]:
                part = np.argpartition(-scores, chunk_k - 1, axis=1)[:, :chunk_k]
            else:
                part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
            values = np.concatenate([best_values, np.take_along_axis(scores, part, 1)], axis=1)
            indices = np.concatenate([best_indices, part + offset], axis=1)
            # Sort by similarity descending, then by index row ascending (ties: lower row first).
            order = np.lexsort((indices, -values), axis=1)[:, :k]
            best_values = np.take_along_axis(values, order, 1)
            best_indices = np.take_along_axis(indices, order, 1)
        out_values[start : start + chunk.shape[0]] = best_values
        out_indices[start : start + chunk.shape[0]] = best_indices
    return out_values, out_indices


# --- faiss --------------------------------------------------------------------------------------


def _knn_faiss(queries, index, k, backend, nlist, nprobe, hnsw_m):
    import faiss

    dim = index.shape[1]
    if backend == "faiss":
        searcher = faiss.IndexFlatIP(dim)
    elif backend == "faiss-ivf":
        cells = nlist or max(1, int(4 * math.sqrt(index.shape[0])))
        cells = min(cells, index.shape[0])
        quantizer = faiss.IndexFlatIP(dim)
        searcher = faiss.IndexIVFFlat(quantizer, dim, cells, faiss.METRIC_INNER_PRODUCT)
        searcher.train(index)
        searcher.nprobe = min(nprobe, cells)
    else:
        searcher = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        searcher.hnsw.efSearch = max(searcher.hnsw.efSearch, 2 * k)
    searcher.add(index)
    values, indices = searcher.search(queries, k)
    return values.astype(np.float32, copy=False), indices.astype(np.int64, copy=False)
