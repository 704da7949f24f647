"""Recognition by retrieval: vote over the nearest train images, with the non-landmark penalty.

Voting: a query's top-k train neighbours vote for their landmarks with their similarity; a
landmark's vote is the SUM of the similarities of its neighbours among the k; the prediction is
the landmark with the largest vote and its confidence is that vote. Equal votes go to the
landmark whose best neighbour ranks first. Index images with a negative landmark id (e.g.
non-landmark photos added to the index) vote for "no landmark": if they win, the prediction is -1.

Non-landmark penalty (Henkel & Singer, 1st place Google Landmark Recognition 2020, kept in their
2021 winning solution): every train (index) image b gets a penalty p(b) = the mean of its top-N
cosine similarities to a set of non-landmark photos; the query-train similarity used for the
search and for the votes is s(q, b) - p(b). Train images that look like generic non-landmark
photos (people, food, interiors) are pushed down, so queries that are not landmarks collect low
votes and sink to the end of the GAP ranking. The penalty is applied before the top-k search by
appending one column: [q, 1] . [b, -p(b)] = s(q, b) - p(b), which works with every knn back end.
"""

from __future__ import annotations

import numpy as np

from landmarks.errors import DataError
from landmarks.inference.search import knn


def recognize(
    similarities,
    indices,
    index_landmark_ids,
    *,
    min_confidence: float | None = None,
    chunk_size: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """Landmark and confidence per query by summed-similarity votes of its neighbours.

    similarities: float [Q, k] (descending per row); indices: int [Q, k] rows of the index;
    index_landmark_ids: int [N] landmark id of each index row (negative = non-landmark).
    min_confidence: predictions whose vote is below it become -1 (no prediction).
    Returns (landmark_ids int64 [Q], -1 = no landmark; confidences float32 [Q]).
    """
    similarities = np.asarray(similarities, dtype=np.float32)
    indices = np.asarray(indices)
    landmark_ids = np.asarray(index_landmark_ids)
    if similarities.ndim != 2 or similarities.shape != indices.shape:
        raise DataError(
            f"recognize: similarities {similarities.shape} and indices {indices.shape} "
            "must be equal 2-D shapes [queries, k]"
        )
    if not np.issubdtype(indices.dtype, np.integer):
        raise DataError(f"recognize: indices must be integers, got {indices.dtype}")
    if landmark_ids.ndim != 1 or not np.issubdtype(landmark_ids.dtype, np.integer):
        raise DataError("recognize: index_landmark_ids must be a 1-D integer array")
    if indices.size and (indices.min() < 0 or indices.max() >= landmark_ids.shape[0]):
        raise DataError(
            f"recognize: indices must lie in [0, {landmark_ids.shape[0]}), "
            f"got {indices.min()}..{indices.max()}"
        )
    num_queries = similarities.shape[0]
    predicted = np.full(num_queries, -1, np.int64)
    confidence = np.zeros(num_queries, np.float32)
    if similarities.shape[1] == 0:
        return predicted, confidence
    neighbour_landmarks = landmark_ids[indices].astype(np.int64)
    for start in range(0, num_queries, chunk_size):
        stop = start + chunk_size
        labels = neighbour_landmarks[start:stop]
        sims = similarities[start:stop]
        # votes[q, i] = sum of the similarities of the neighbours j with the landmark of i.
        same = labels[:, :, None] == labels[:, None, :]
        votes = np.einsum("qij,qj->qi", same, sims, dtype=np.float32)
        best = np.argmax(votes, axis=1)  # first maximum = landmark with the best-ranked neighbour
        rows = np.arange(labels.shape[0])
        predicted[start:stop] = labels[rows, best]
        confidence[start:stop] = votes[rows, best]
    predicted[predicted < 0] = -1
    if min_confidence is not None:
        predicted[confidence < min_confidence] = -1
    return predicted, confidence


def non_landmark_penalties(
    index_vectors, non_landmark_vectors, top_n: int = 5, *, backend: str = "auto"
) -> np.ndarray:
    """p(b) = mean of the top-N similarities of each index row to the non-landmark set.

    index_vectors: float [N, D]; non_landmark_vectors: float [M, D] (L2-normalised);
    top_n is capped at M. Returns float32 [N].
    """
    non_landmark_vectors = np.asarray(non_landmark_vectors)
    if non_landmark_vectors.ndim != 2 or non_landmark_vectors.shape[0] == 0:
        raise DataError("non-landmark penalty: the non-landmark set is empty")
    if top_n < 1:
        raise DataError(f"non_landmark_top_n must be >= 1, got {top_n}")
    top_n = min(int(top_n), non_landmark_vectors.shape[0])
    values, _ = knn(index_vectors, non_landmark_vectors, top_n, backend=backend)
    return values.mean(axis=1).astype(np.float32)


def penalised_knn(
    queries, index, penalties, k: int, *, backend: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """knn by s(q, b) - penalties[b]: (penalised similarities float32 [Q, k], indices int64)."""
    queries = np.asarray(queries, dtype=np.float32)
    index = np.asarray(index, dtype=np.float32)
    penalties = np.asarray(penalties, dtype=np.float32)
    if penalties.shape != (index.shape[0],):
        raise DataError(
            f"penalised_knn: {penalties.shape} penalties for an index of {index.shape[0]} rows"
        )
    ones = np.ones((queries.shape[0], 1), np.float32)
    return knn(
        np.concatenate([queries, ones], axis=1),
        np.concatenate([index, -penalties[:, None]], axis=1),
        k,
        backend=backend,
    )
