"""The two prediction recipes: recognition by voting over train neighbours, retrieval by ranking
the index (with optional query expansion / DBA, then a re-ranking of the candidates).

Queries, train and index are float [N, D] arrays or Descriptors (one or more ensemble members,
landmarks.inference.descriptors); with several members every step below runs on each member's
own vectors and the searches score a pair by the members' weighted mean similarity.
"""

from __future__ import annotations

import numpy as np

from landmarks.inference.descriptors import as_descriptors
from landmarks.inference.recognition import recognize
from landmarks.inference.rerank import database_augmentation, label_rerank, query_expansion

RETRIEVAL_K = 100


def predict_recognition(
    queries,
    train,
    train_landmark_ids,
    *,
    k: int = 10,
    backend: str = "auto",
    penalties=None,
    threshold: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Landmark id (-1 = none) and confidence per query by voting over its k nearest train
    images; similarities are s(q, b) - penalties[b] when `penalties` are given ([N], or [M, N]
    per member; see landmarks.inference.recognition.non_landmark_penalties).

    queries: [Q, D] or Descriptors; train: [N, D] or Descriptors; train_landmark_ids: int [N].
    Returns (int64 [Q], float32 [Q]).
    """
    queries, train = as_descriptors(queries), as_descriptors(train)
    k = min(int(k), len(train))
    similarities, indices = queries.search(train, k, backend=backend, penalties=penalties)
    return recognize(similarities, indices, train_landmark_ids, min_confidence=threshold)


def predict_retrieval(
    queries,
    index,
    *,
    k: int = RETRIEVAL_K,
    backend: str = "auto",
    expansion_alpha: float = 0.0,
    expansion_k: int = 2,
    query_landmarks=None,
    index_landmarks=None,
    rerank=None,
    candidates: int = RETRIEVAL_K,
) -> np.ndarray:
    """Rows of `index` ranked for each query: int64 [Q, min(k, N)].

    expansion_alpha > 0: database augmentation of the index, then alpha query expansion of the
    queries, each with `expansion_k` neighbours. query_landmarks [Q] / index_landmarks [N]
    (predicted landmark ids, -1 = none): when both are given, hard label re-ranking.
    rerank: called as rerank(similarities [Q, K], rows [Q, K], queries, index, k) -> rows
    [Q, k] on each query's direct top K = max(k, candidates) (capped at N), e.g.
    landmarks.inference.soft_rerank.SoftLabelRerank or landmarks.inference.bridged.BridgedRerank.
    """
    queries, index = as_descriptors(queries), as_descriptors(index)
    if expansion_alpha > 0 and expansion_k > 0:  # results kept in each part's dtype
        index = index.map_parts(
            lambda part: database_augmentation(
                part, alpha=expansion_alpha, k=expansion_k, backend=backend
            ).astype(part.dtype, copy=False)
        )
        queries = queries.map_parts(
            lambda part, pool: query_expansion(
                part, pool, alpha=expansion_alpha, k=expansion_k, backend=backend
            ).astype(part.dtype, copy=False),
            index,
        )
    k = min(k, len(index))
    depth = min(max(k, candidates), len(index)) if rerank is not None else k
    similarities, ranked = queries.search(index, depth, backend=backend)
    if rerank is not None:
        return rerank(similarities, ranked, queries, index, k)
    if query_landmarks is not None and index_landmarks is not None:
        ranked = label_rerank(ranked, query_landmarks, index_landmarks)
    return ranked
