"""Retrieval re-ranking: alpha query expansion, database-side augmentation, label re-ranking.

alpha-QE (Radenovic et al.): a query q with its n nearest index vectors x_1..x_n (similarities
s_1..s_n) becomes q' = normalise(q + sum_j max(s_j, 0)^alpha x_j). DBA applies the same to every
index vector with its own n nearest index vectors (itself excluded, so the vector keeps weight 1).

Hard label re-ranking (the "sort step" of Yokoo et al., 1st place Google Landmark Retrieval
2019, arXiv 2003.11211; the 2021 winner's soft version is landmarks.inference.soft_rerank): the
landmark of the query and of each retrieved index image is predicted through their nearest
TRAIN images (the recognition vote); retrieved index images whose predicted landmark equals the
query's move ahead of the others, each group keeping its similarity order. Queries or index
images predicted as "no landmark" (-1) never match.
"""

from __future__ import annotations

import numpy as np

from landmarks.errors import DataError
from landmarks.inference.search import knn


def expand(
    vectors, pool, similarities, indices, alpha: float, *, chunk_size: int = 8192
) -> np.ndarray:
    """normalise(v + sum_j max(s_j, 0)^alpha * pool[indices_j]) for every row v of `vectors`.

    vectors: float [R, D]; pool: float [N, D]; similarities, indices: [R, n] neighbours of each
    row in `pool`. Returns float32 [R, D], L2-normalised rows.
    """
    vectors = np.asarray(vectors, np.float32)
    pool = np.asarray(pool, np.float32)
    similarities = np.asarray(similarities, np.float32)
    indices = np.asarray(indices)
    if similarities.shape != indices.shape or similarities.shape[0] != vectors.shape[0]:
        raise DataError(
            f"expand: {vectors.shape[0]} vectors, similarities {similarities.shape}, "
            f"indices {indices.shape}"
        )
    if alpha < 0:
        raise DataError(f"query_expansion_alpha must be >= 0, got {alpha}")
    weights = np.maximum(similarities, 0.0) ** np.float32(alpha)
    expanded = np.empty_like(vectors)
    for start in range(0, vectors.shape[0], chunk_size):  # bounds pool[indices] to a chunk
        rows = slice(start, start + chunk_size)
        expanded[rows] = vectors[rows] + np.einsum("rn,rnd->rd", weights[rows], pool[indices[rows]])
    return expanded / np.maximum(np.linalg.norm(expanded, axis=1, keepdims=True), 1e-12)


def query_expansion(queries, index, *, alpha: float, k: int, backend: str = "auto") -> np.ndarray:
    """alpha-QE of `queries` [Q, D] with their k nearest rows of `index` [N, D]."""
    k = min(int(k), np.asarray(index).shape[0])
    if k < 1:
        return np.asarray(queries, np.float32)
    similarities, indices = knn(queries, index, k, backend=backend)
    return expand(queries, index, similarities, indices, alpha)


def database_augmentation(index, *, alpha: float, k: int, backend: str = "auto") -> np.ndarray:
    """DBA: every index row expanded with its k nearest OTHER index rows. Returns [N, D]."""
    index = np.asarray(index, np.float32)
    k = min(int(k), index.shape[0] - 1)
    if k < 1:
        return index
    similarities, indices = knn(index, index, k + 1, backend=backend)
    similarities, indices = _drop_self(similarities, indices)
    return expand(index, index, similarities, indices, alpha)


def _drop_self(similarities, indices):
    """Remove each row's own index from its neighbour list (or the last column when absent,
    e.g. when an exact duplicate outranked it)."""
    rows = np.arange(indices.shape[0])[:, None]
    is_self = indices == rows
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), indices.shape[1] - 1)
    keep = np.ones(indices.shape, bool)
    keep[np.arange(indices.shape[0]), drop] = False
    shape = (indices.shape[0], indices.shape[1] - 1)
    return similarities[keep].reshape(shape), indices[keep].reshape(shape)


def label_rerank(indices, query_landmarks, index_landmarks) -> np.ndarray:
    """Reorder each row of `indices` [Q, k] (similarity order): index rows whose predicted
    landmark (index_landmarks [N]) equals the query's (query_landmarks [Q]; -1 = none) first,
    then the rest, both in their original order. Returns int64 [Q, k]."""
    indices = np.asarray(indices, np.int64)
    query_landmarks = np.asarray(query_landmarks, np.int64)
    index_landmarks = np.asarray(index_landmarks, np.int64)
    if query_landmarks.shape != (indices.shape[0],):
        raise DataError(
            f"label_rerank: {query_landmarks.shape[0]} query landmarks for {indices.shape[0]} rows"
        )
    match = (index_landmarks[indices] == query_landmarks[:, None]) & (query_landmarks[:, None] >= 0)
    order = np.argsort(~match, axis=1, kind="stable")
    return np.take_along_axis(indices, order, axis=1)
