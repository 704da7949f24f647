"""The two prediction recipes: recognition by voting over train neighbours, retrieval by ranking
the index (with optional query expansion / DBA and label re-ranking)."""

from __future__ import annotations

import numpy as np

from landmarks.inference.recognition import penalised_knn, recognize
from landmarks.inference.rerank import database_augmentation, label_rerank, query_expansion
from landmarks.inference.search import knn

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
    images; similarities are s(q, b) - penalties[b] when `penalties` [N] are given (see
    landmarks.inference.recognition.non_landmark_penalties).

    queries: float32 [Q, D]; train: float32 [N, D]; train_landmark_ids: int [N].
    Returns (int64 [Q], float32 [Q]).
    """
    k = min(int(k), np.asarray(train).shape[0])
    if penalties is not None:
        similarities, indices = penalised_knn(queries, train, penalties, k, backend=backend)
    else:
        similarities, indices = knn(queries, train, k, backend=backend)
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
) -> np.ndarray:
    """Rows of `index` [N, D] ranked for each query [Q, D]: int64 [Q, min(k, N)].

    expansion_alpha > 0: database augmentation of the index, then alpha query expansion of the
    queries, each with `expansion_k` neighbours. query_landmarks [Q] / index_landmarks [N]
    (predicted landmark ids, -1 = none): when both are given, label re-ranking.
    """
    index = np.asarray(index, np.float32)
    queries = np.asarray(queries, np.float32)
    if expansion_alpha > 0 and expansion_k > 0:
        index = database_augmentation(index, alpha=expansion_alpha, k=expansion_k, backend=backend)
        queries = query_expansion(
            queries, index, alpha=expansion_alpha, k=expansion_k, backend=backend
        )
    _, ranked = knn(queries, index, min(k, index.shape[0]), backend=backend)
    if query_landmarks is not None and index_landmarks is not None:
        ranked = label_rerank(ranked, query_landmarks, index_landmarks)
    return ranked
