"""Exact k-nearest-neighbour search by inner product in JAX (the "jax" back end of knn).

The index is put on the default JAX device once, in chunks of `index_chunk_size` rows; each
query chunk goes through every index chunk with a jitted step (float32 matmul at HIGHEST
precision, so a TPU or a TensorFloat-32 GPU does not round the inputs to bfloat16, then
`lax.top_k`, merged with the running top-k), and only the [Q, k] results come back to the host.

Ties: `lax.top_k` puts the lower position first among equal values; the running top-k (rows of
earlier, lower chunks) comes before the new chunk's candidates in each merge, so equal
similarities are ordered by ascending index row, across chunk boundaries too, as in the tf and
numpy back ends.
"""

from __future__ import annotations

import functools

import numpy as np


def search(queries, index, k, chunk_size, index_chunk_size):
    """Exact top-k of float32 [Q, D] queries against a float32 [N, D] index, 1 <= k <= N.

    Returns (similarities float32 [Q, k] descending per row, indices int64 [Q, k]).
    """
    import jax
    import jax.numpy as jnp

    chunks = [
        (start, jax.device_put(index[start : start + index_chunk_size]))
        for start in range(0, index.shape[0], index_chunk_size)
    ]
    out_values = np.empty((queries.shape[0], k), np.float32)
    out_indices = np.empty((queries.shape[0], k), np.int64)
    for start in range(0, queries.shape[0], chunk_size):
        chunk = jax.device_put(queries[start : start + chunk_size])
        rows = chunk.shape[0]
        best_values = jnp.full((rows, k), -jnp.inf, jnp.float32)
        best_indices = jnp.full((rows, k), -1, jnp.int32)
        for offset, index_chunk in chunks:
            best_values, best_indices = _step(
                chunk, index_chunk, best_values, best_indices, jnp.int32(offset), k
            )
        out_values[start : start + rows] = np.asarray(best_values)
        out_indices[start : start + rows] = np.asarray(best_indices)
    return out_values, out_indices


@functools.cache
def _jitted_step():
    import jax
    import jax.numpy as jnp

    def step(queries, index_chunk, best_values, best_indices, offset, k):
        scores = jnp.matmul(queries, index_chunk.T, precision=jax.lax.Precision.HIGHEST)
        values, positions = jax.lax.top_k(scores, min(k, scores.shape[1]))
        values = jnp.concatenate([best_values, values], axis=1)
        indices = jnp.concatenate([best_indices, positions.astype(jnp.int32) + offset], axis=1)
        merged, order = jax.lax.top_k(values, k)
        return merged, jnp.take_along_axis(indices, order, axis=1)

    return jax.jit(step, static_argnums=5)


def _step(queries, index_chunk, best_values, best_indices, offset, k):
    """Top-k of a query chunk against one index chunk, merged with the running top-k."""
    return _jitted_step()(queries, index_chunk, best_values, best_indices, offset, k)
