"""Exact k-nearest-neighbour search by inner product in TensorFlow (the "tf" back end of knn).

Two ways to the same exact answer:

  float32   chunked float32 matmul. Each [query chunk, index chunk] block of similarities is cut
            into groups of GROUP consecutive index rows; the k best groups by their maximum hold
            the block's top-k (a row outside them has k larger or equal group maxima from lower
            rows before it), so top_k runs over group maxima and k*GROUP candidates instead of
            the whole block.
  bfloat16  screen, then re-score. A bfloat16 matmul (about 1.7x the float32 speed on CPUs with
            AVX512_BF16 or AMX) keeps, per query, the rows whose screen score is within twice
            the screen's proven error (`screen_error`) of its running k-th best, and only
            those are re-scored in float32. No row of the true top-k can be dropped, so the result is
            the exact float32 top-k (as in every back end, float32 summation order may move
            scores by ~1e-7); its cost is the screen plus the kept rows.

Ties: equal similarities are ordered by ascending index row (the lower row comes first), across
chunk boundaries too.
"""

from __future__ import annotations

import os

import numpy as np

GROUP = 16  # index rows per group in the per-block top-k
MAX_KEPT_PER_QUERY = 256  # kept rows per query (chunk mean) above which float32 is used
BFLOAT16_UNIT_ROUNDOFF = 2.0**-8  # 8 significant bits
FLOAT32_UNIT_ROUNDOFF = 2.0**-24

_STEPS: dict = {}


def search_float32(queries, index, k, chunk_size, index_chunk_size):
    """Exact top-k of float32 [Q, D] queries against a float32 [N, D] index, 1 <= k <= N.

    Returns (similarities float32 [Q, k] descending per row, indices int64 [Q, k]).
    """
    import tensorflow as tf

    step = _float32_step()
    chunks = _float32_chunks(index, index_chunk_size)
    out_values = np.empty((queries.shape[0], k), np.float32)
    out_indices = np.empty((queries.shape[0], k), np.int64)
    # TensorFloat-32 (on by default on Ampere and later GPUs) would round the matmul inputs to
    # 10 bits; the search turns it off while it runs and restores the setting after.
    tensor_float_32 = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(False)
    try:
        for start in range(0, queries.shape[0], chunk_size):
            chunk = tf.constant(queries[start : start + chunk_size])
            values, indices = _search_chunk(step, chunk, chunks, k)
            out_values[start : start + len(values)] = values
            out_indices[start : start + len(values)] = indices
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(tensor_float_32)
    return out_values, out_indices


def search_screened(queries, index, k, chunk_size, index_chunk_size):
    """search_float32's answer through a bfloat16 screen (see the module docstring).

    Per query, |acc - float32 score| <= delta (`screen_error`) for every row, where acc is the
    float32 sum of the bfloat16 products, and the screen score is acc rounded to bfloat16
    (|screen - acc| <= 2u|acc|, u = 2^-8). While the pass runs, the k largest screen group maxima
    so far, the smallest m, belong to k distinct rows whose float32 scores are >= floor =
    m - 2u|m|/(1 - 2u) - delta, so the k-th best float32 similarity is >= floor. A row scoring
    >= floor in float32 has acc >= a = floor - delta and screen >= a - 2u|a|; rows below that are
    dropped (m only grows), the rest re-scored in float32 and the k best taken. A query chunk
    that keeps more than MAX_KEPT_PER_QUERY rows per query on average (a crowd of
    near-duplicates) is searched in float32 instead. Extra memory: a bfloat16 copy of the index
    (N * D * 2 bytes) and the kept rows. Returns (similarities float32 [Q, k], indices int64
    [Q, k]): the exact float32 top-k, as search_float32 returns it.
    """
    chunks, index_stats = _bfloat16_chunks(index, index_chunk_size)
    step = _screen_step()
    out_values = np.empty((queries.shape[0], k), np.float32)
    out_indices = np.empty((queries.shape[0], k), np.int64)
    for start in range(0, queries.shape[0], chunk_size):
        rows = slice(start, min(start + chunk_size, queries.shape[0]))
        kept = _screen_chunk(step, queries[rows], index_stats, chunks, k)
        found = None if kept is None else _best_of_kept(queries[rows], index, kept, k)
        if found is None:
            found = search_float32(queries[rows], index, k, chunk_size, index_chunk_size)
        out_values[rows], out_indices[rows] = found
    return out_values, out_indices


def screen_error(query_stats: np.ndarray, index_stats: np.ndarray, dim: int) -> np.ndarray:
    """delta [Q] >= |acc - float32 score| for every index row, float64.

    query_stats: [Q, 3] per query (|q|, |bq|, |bq - q|), bq = q rounded to bfloat16 as the
    screen rounds it (`_to_bfloat16`); index_stats: [3] the maxima of the same over the index
    rows. acc, the float32 sum of the D products bq_i by_i, differs from q.y by at most
    |bq - q||by| + |q||by - y| (Cauchy-Schwarz) plus its accumulation error g|bq||by|, g =
    D 2^-24 / (1 - D 2^-24); the float32 score differs from q.y by at most g|q||y|. Plus 1 %
    headroom and D 2^-126 for products flushed to zero.
    """
    gamma = dim * FLOAT32_UNIT_ROUNDOFF
    gamma /= 1.0 - gamma
    norm, rounded, error = (query_stats[:, column] for column in range(3))
    index_norm, index_rounded, index_error = index_stats
    delta = (
        error * index_rounded
        + norm * index_error
        + gamma * rounded * index_rounded
        + gamma * norm * index_norm
    )
    return 1.01 * delta + dim * 2.0**-126


def _to_bfloat16(vectors):
    """(bfloat16 tensor [R, D], float32 [R, 3] (|v|, |bv|, |bv - v|)) of float32 rows; the
    norms are computed in float32 (relative error < D 2^-24, inside screen_error's headroom)."""
    import tensorflow as tf

    if "round" not in _STEPS:

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32)])
        def to_bfloat16(vectors):
            rounded = tf.cast(vectors, tf.bfloat16)
            back = tf.cast(rounded, tf.float32)
            stats = tf.stack(
                [tf.norm(vectors, axis=1), tf.norm(back, axis=1), tf.norm(back - vectors, axis=1)],
                axis=1,
            )
            return rounded, stats

        _STEPS["round"] = to_bfloat16
    return _STEPS["round"](tf.constant(vectors, tf.float32))


def _bfloat16_chunks(index, index_chunk_size):
    """The index as (offset, bfloat16 tensor) chunks, and float64 [3] the maxima over its rows
    of (|y|, |by|, |by - y|)."""
    chunks, maxima = [], np.zeros(3)
    for start in range(0, index.shape[0], index_chunk_size):
        chunk, stats = _to_bfloat16(index[start : start + index_chunk_size])
        maxima = np.maximum(maxima, stats.numpy().max(axis=0))
        chunks.append((start, chunk))
    return chunks, maxima


def _screen_chunk(step, queries, index_stats, chunks, k):
    """(query rows, index rows) int64 [P], [P] that the screen keeps for a chunk of queries;
    None when P exceeds MAX_KEPT_PER_QUERY * len(queries)."""
    import tensorflow as tf

    query_tensor, stats = _to_bfloat16(queries)
    delta = screen_error(stats.numpy().astype(np.float64), index_stats, queries.shape[1])
    delta = tf.constant(delta[:, None], tf.float32)
    best = tf.fill([len(queries), k], float("-inf"))
    limit = MAX_KEPT_PER_QUERY * len(queries)
    found, total = [], 0
    for offset, chunk in chunks:
        best, pairs = step(query_tensor, chunk, best, delta)
        pairs = pairs.numpy()
        total += len(pairs)
        if total > limit:
            return None
        pairs[:, 1] += offset
        found.append(pairs)
    pairs = np.concatenate(found)
    return pairs[:, 0], pairs[:, 1]


def _best_of_kept(queries, index, kept, k):
    """Top-k of each query among its kept rows, by float32 score desc, then row asc; None if a
    query kept fewer than k rows (the screen keeps at least the rows of its final k best group
    maxima, so this guards against a broken invariant rather than an expected case)."""
    order = np.lexsort(kept[::-1])  # by query row, then index row
    query_rows, index_rows = kept[0][order], kept[1][order]
    bounds = np.searchsorted(query_rows, np.arange(len(queries) + 1))
    if (np.diff(bounds) < k).any():
        return None
    scores = np.empty(len(query_rows), np.float32)
    for query, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        scores[start:stop] = index[index_rows[start:stop]] @ queries[query]
    order = np.lexsort((index_rows, -scores, query_rows))
    index_rows, scores = index_rows[order], scores[order]
    take = bounds[:-1, None] + np.arange(k)
    return scores[take], index_rows[take]


def bfloat16_is_fast(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
    """True on CPUs with native bfloat16 dot products (AVX512_BF16 or AMX) when TensorFlow's
    oneDNN kernels are on (TF_ENABLE_ONEDNN_OPTS not "0"); elsewhere a bfloat16 matmul is
    emulated and no faster than float32. Reads the CPU flags from `cpuinfo_path` (Linux's
    /proc/cpuinfo); False when it cannot."""
    if os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0":
        return False
    try:
        with open(cpuinfo_path, encoding="utf-8") as cpuinfo:
            flags = cpuinfo.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def on_accelerator() -> bool:
    """True when TensorFlow sees a GPU or TPU (where the index chunks stay on the device)."""
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


def _float32_chunks(index, index_chunk_size):
    """The index as (offset, chunk) pairs: on a CPU numpy views, converted when used, so the
    extra memory stays within one chunk; on a GPU/TPU tensors, converted once and kept."""
    import tensorflow as tf

    starts = range(0, index.shape[0], index_chunk_size)
    if on_accelerator():
        return [(start, tf.constant(index[start : start + index_chunk_size])) for start in starts]
    return [(start, index[start : start + index_chunk_size]) for start in starts]


def _search_chunk(step, queries, chunks, k):
    """Running top-k of one query chunk over all index chunks: numpy (values, indices)."""
    import tensorflow as tf

    rows = int(queries.shape[0])
    best_values = tf.zeros([rows, 0], tf.float32)
    best_indices = tf.zeros([rows, 0], tf.int64)
    k_tensor = tf.constant(k, tf.int32)
    for offset, chunk in chunks:
        best_values, best_indices = step(
            queries, chunk, best_values, best_indices, tf.constant(offset, tf.int64), k_tensor
        )
    return best_values.numpy(), best_indices.numpy()


def _float32_step():
    """Traced step: top-k of a query chunk against one index chunk, merged with the running
    top-k (whose entries come from lower rows, so ties keep them)."""
    if "float32" not in _STEPS:
        import tensorflow as tf

        matrix = tf.TensorSpec([None, None], tf.float32)

        @tf.function(
            input_signature=[
                matrix,
                matrix,
                matrix,
                tf.TensorSpec([None, None], tf.int64),
                tf.TensorSpec([], tf.int64),
                tf.TensorSpec([], tf.int32),
            ],
            reduce_retracing=True,
        )
        def step(queries, index_chunk, best_values, best_indices, offset, k):
            scores = tf.linalg.matmul(queries, index_chunk, transpose_b=True)
            values, positions = _block_top_k(scores, k)
            values = tf.concat([best_values, values], axis=1)
            indices = tf.concat([best_indices, tf.cast(positions, tf.int64) + offset], axis=1)
            merged, order = tf.math.top_k(values, k=tf.minimum(k, tf.shape(values)[1]))
            return merged, tf.gather(indices, order, batch_dims=1)

        _STEPS["float32"] = step
    return _STEPS["float32"]


def _screen_step():
    """Traced bfloat16 step over one index chunk [C, D] for a query chunk [R, D].

    best: float32 [R, k], the k largest screen group maxima so far; delta: float32 [R, 1]. Returns
    the updated best and int64 [P, 2] (query, column) of the rows whose screen score reaches the
    keep threshold of search_screened, found through the group maxima."""
    if "screen" not in _STEPS:
        import tensorflow as tf

        matrix = tf.TensorSpec([None, None], tf.bfloat16)
        values = tf.TensorSpec([None, None], tf.float32)
        rounding = 2 * BFLOAT16_UNIT_ROUNDOFF

        @tf.function(input_signature=[matrix, matrix, values, values], reduce_retracing=True)
        def step(queries, index_chunk, best, delta):
            scores = tf.linalg.matmul(queries, index_chunk, transpose_b=True)
            grouped, columns = _grouped(scores)
            group_max = tf.cast(tf.reduce_max(grouped, axis=2), tf.float32)
            k = tf.shape(best)[1]
            block_best = tf.math.top_k(group_max, k=tf.minimum(k, tf.shape(group_max)[1])).values
            best = tf.math.top_k(tf.concat([best, block_best], axis=1), k=k).values
            smallest = best[:, -1:]  # [R, 1]
            floor = smallest - rounding * tf.abs(smallest) / (1 - rounding) - delta
            acc_floor = floor - delta
            threshold = acc_floor - rounding * tf.abs(acc_floor)
            hit_groups = tf.where(group_max >= threshold)  # [H, 2] (query, group)
            candidates = tf.cast(tf.gather_nd(grouped, hit_groups), tf.float32)  # [H, GROUP]
            hits = tf.where(candidates >= tf.gather(threshold, hit_groups[:, 0]))  # [P, 2]
            query_rows = tf.gather(hit_groups[:, 0], hits[:, 0])
            index_columns = tf.gather(hit_groups[:, 1], hits[:, 0]) * GROUP + hits[:, 1]
            real = index_columns < tf.cast(columns, tf.int64)  # not the padding of the last group
            pairs = tf.stack([query_rows, index_columns], axis=1)
            return best, tf.boolean_mask(pairs, real)

        _STEPS["screen"] = step
    return _STEPS["screen"]


def _grouped(scores):
    """scores [R, C] padded with -inf to whole groups: ([R, ceil(C / GROUP), GROUP], C)."""
    import tensorflow as tf

    rows, columns = tf.shape(scores)[0], tf.shape(scores)[1]
    groups = (columns + GROUP - 1) // GROUP
    padded = tf.pad(scores, [[0, 0], [0, groups * GROUP - columns]], constant_values=float("-inf"))
    return tf.reshape(padded, [rows, groups, GROUP]), columns


def _block_top_k(scores, k):
    """Top-k (values, int32 columns) of each row of scores [R, C], ties to the lower column,
    through the maxima of groups of GROUP columns (see the module docstring)."""
    import tensorflow as tf

    grouped, columns = _grouped(scores)
    rows, groups = tf.shape(grouped)[0], tf.shape(grouped)[1]
    best_groups = tf.math.top_k(tf.reduce_max(grouped, axis=2), k=tf.minimum(k, groups)).indices
    # Ascending group order keeps candidate positions in column order, so top_k's
    # lower-position-first tie rule is the lower-column-first rule.
    best_groups = tf.sort(best_groups, axis=1)
    candidates = tf.reshape(tf.gather(grouped, best_groups, batch_dims=1), [rows, -1])
    values, picked = tf.math.top_k(candidates, k=tf.minimum(k, columns))
    columns_picked = tf.gather(best_groups, picked // GROUP, batch_dims=1) * GROUP + picked % GROUP
    return values, columns_picked
