"""The descriptors of one split, from one or more ensemble members, and exact search over them.

`Descriptors(parts, weights)`: parts[i] is member i's float [N, D_i] matrix (L2-normalised rows,
float32 or float16), weights[i] its weight (normalised here to sum to 1). The similarity of a
query row q and an index row x is the weighted mean of the members' cosine similarities,

    s(q, x) = sum_i w_i <q_i, x_i>          (minus sum_i w_i p_i(x) with the non-landmark penalty)

One part is a single model, or an ensemble concatenated into one vector (see
landmarks.inference.ensemble), searched with one knn call. With several parts ("average"
ensembles) every member searches with its own vectors (and its own penalty), the union of the
members' top-k rows is re-scored with the exact s(q, x) above (a row that one member did not
find gets that member's similarity computed, not 0), and the k best of the union are returned.
Both give the same score to every pair; "average" can miss a pair that no member has in its own
top-k, concatenation cannot.

Memory: the index is searched in slabs of at most SLAB_BYTES of float32 rows (and the queries in
chunks of the same size), so float16 parts are converted to float32 a slab at a time; the slab
results are merged with knn's own order (similarity descending, lower row first on ties).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from landmarks.errors import DataError
from landmarks.inference.recognition import non_landmark_penalties, penalised_knn
from landmarks.inference.search import knn

SLAB_BYTES = 1 << 29  # 512 MiB of float32 rows per knn call (index slab; query chunk alike)
GATHER_BYTES = 1 << 26  # 64 MiB of gathered index rows per step of pair_similarities


class Descriptors:
    """parts: M float matrices [N, D_i] (same N); weights: M positive numbers (default equal)."""

    def __init__(self, parts: Sequence[np.ndarray], weights: Sequence[float] | None = None):
        parts = [np.asarray(part) for part in parts]
        if not parts:
            raise DataError("Descriptors: no parts")
        for part in parts:
            if part.ndim != 2 or not np.issubdtype(part.dtype, np.floating):
                raise DataError(f"Descriptors: parts must be 2-D float arrays, got {part.shape}")
            if part.shape[0] != parts[0].shape[0]:
                raise DataError(
                    f"Descriptors: parts have {part.shape[0]} and {parts[0].shape[0]} rows"
                )
        weights = np.ones(len(parts)) if weights is None else np.asarray(weights, np.float64)
        if weights.shape != (len(parts),) or not (np.isfinite(weights) & (weights > 0)).all():
            raise DataError(f"Descriptors: {len(parts)} positive weights needed, got {weights}")
        self.parts = parts
        self.weights = (weights / weights.sum()).astype(np.float32)

    def __len__(self) -> int:
        return int(self.parts[0].shape[0])

    def take(self, rows) -> Descriptors:
        """The descriptors of `rows` (a slice or an index array) only."""
        return Descriptors([part[rows] for part in self.parts], self.weights)

    def with_parts(self, parts: Sequence[np.ndarray]) -> Descriptors:
        """The same weights over new parts (e.g. each part query-expanded)."""
        return Descriptors(parts, self.weights)

    def map_parts(self, function: Callable, *others: Descriptors) -> Descriptors:
        """function(part_i, other_part_i, ...) for every member i."""
        for other in others:
            if len(other.parts) != len(self.parts):
                raise DataError(f"{len(self.parts)} members against {len(other.parts)}")
        return self.with_parts(
            [function(*parts) for parts in zip(self.parts, *(o.parts for o in others), strict=True)]
        )

    def penalties(
        self, non_landmarks: Descriptors, top_n: int, *, backend: str = "tf"
    ) -> np.ndarray:
        """Each member's non-landmark penalty of every row: float32 [M, N] (see
        landmarks.inference.recognition.non_landmark_penalties)."""
        return np.stack(
            [
                non_landmark_penalties(part, other, top_n, backend=backend)
                for part, other in zip(self.parts, non_landmarks.parts, strict=True)
            ]
        )

    def search(
        self, index: Descriptors, k: int, *, backend: str = "tf", penalties=None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k rows of `index` with the largest s(q, x) for every row q of self.

        penalties: float [M, N] (or [N] for one member): s(q, x) - sum_i w_i penalties[i, x].
        Returns (similarities float32 [Q, k] descending, rows int64 [Q, k]).
        """
        penalties = _penalty_matrix(penalties, index, len(self.parts))
        if not 1 <= k <= len(index):
            raise DataError(f"search: k={k} must lie in [1, {len(index)}] (the index rows)")
        if len(self.parts) == 1:
            return _slabbed_knn(self.parts[0], index.parts[0], k, backend, _row(penalties, 0))
        found = [
            _slabbed_knn(part, other, k, backend, _row(penalties, i))[1]
            for i, (part, other) in enumerate(zip(self.parts, index.parts, strict=True))
        ]
        candidates = np.concatenate(found, axis=1)
        scores = self.pair_similarities(index, candidates, penalties=penalties)
        return _best_distinct(scores, candidates, k)

    def pair_similarities(self, index: Descriptors, rows, *, penalties=None) -> np.ndarray:
        """s(q, index row rows[q, c]) for every query q and column c: float32 [Q, C]
        (rows < 0 score -inf). penalties as in `search`."""
        rows = np.asarray(rows, np.int64)
        if rows.ndim != 2 or rows.shape[0] != len(self):
            raise DataError(f"pair_similarities: rows {rows.shape} for {len(self)} queries")
        penalties = _penalty_matrix(penalties, index, len(self.parts))
        valid = rows >= 0
        safe = np.where(valid, rows, 0)
        total = np.zeros(rows.shape, np.float32)
        for i, (weight, part, other) in enumerate(
            zip(self.weights, self.parts, index.parts, strict=True)
        ):
            step = max(1, GATHER_BYTES // max(1, rows.shape[1] * other.shape[1] * 4))
            for start in range(0, rows.shape[0], step):
                chunk = slice(start, start + step)
                gathered = np.asarray(other[safe[chunk]], np.float32)
                sims = np.einsum("qd,qcd->qc", np.asarray(part[chunk], np.float32), gathered)
                if penalties is not None:
                    sims -= penalties[i][safe[chunk]]
                total[chunk] += weight * sims
        return np.where(valid, total, -np.inf).astype(np.float32)


def as_descriptors(vectors) -> Descriptors:
    """Descriptors unchanged; a float [N, D] array as one part."""
    return vectors if isinstance(vectors, Descriptors) else Descriptors([vectors])


def _penalty_matrix(penalties, index: Descriptors, members: int) -> np.ndarray | None:
    if penalties is None:
        return None
    penalties = np.asarray(penalties, np.float32)
    if penalties.ndim == 1:
        penalties = penalties[None, :]
    if penalties.shape != (members, len(index)):
        raise DataError(
            f"penalties of shape {penalties.shape} for {members} members x {len(index)} rows"
        )
    return penalties


def _row(penalties, member: int):
    return None if penalties is None else penalties[member]


def _slabbed_knn(queries, index, k, backend, penalties):
    """knn (or penalised_knn) of `queries` [Q, D] in `index` [N, D], over query chunks and index
    slabs of at most SLAB_BYTES of float32 each; (similarities [Q, k], rows [Q, k])."""
    rows_per_call = max(k, SLAB_BYTES // (4 * (index.shape[1] + 1)))
    if queries.shape[0] > rows_per_call:
        results = [
            _slabbed_knn(queries[start : start + rows_per_call], index, k, backend, penalties)
            for start in range(0, queries.shape[0], rows_per_call)
        ]
        return tuple(np.concatenate(parts) for parts in zip(*results, strict=True))
    best = None
    for offset in range(0, index.shape[0], rows_per_call):
        slab = slice(offset, offset + rows_per_call)
        slab_k = min(k, index[slab].shape[0])
        if penalties is None:
            values, rows = knn(queries, index[slab], slab_k, backend=backend)
        else:
            values, rows = penalised_knn(
                queries, index[slab], penalties[slab], slab_k, backend=backend
            )
        found = (values, rows + offset)
        best = found if best is None else _merge(best, found, k)
    return best


def _merge(first, second, k):
    """The k best of two (similarities, rows) lists per query: similarity descending, then the
    lower row first (knn's order)."""
    values = np.concatenate([first[0], second[0]], axis=1)
    rows = np.concatenate([first[1], second[1]], axis=1)
    order = np.lexsort((rows, -values), axis=1)[:, :k]
    return np.take_along_axis(values, order, 1), np.take_along_axis(rows, order, 1)


def _best_distinct(scores, candidates, k):
    """The k best distinct candidate rows per query (a row found by several members counts
    once): (scores float32 [Q, k] descending, rows int64 [Q, k]); ties: lower row first."""
    order = np.argsort(candidates, axis=1, kind="stable")
    rows = np.take_along_axis(candidates, order, 1)
    scores = np.take_along_axis(scores, order, 1).copy()
    scores[:, 1:][rows[:, 1:] == rows[:, :-1]] = -np.inf
    best = np.lexsort((rows, -scores), axis=1)[:, :k]
    return np.take_along_axis(scores, best, 1), np.take_along_axis(rows, best, 1)
