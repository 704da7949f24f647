"""Soft label re-ranking of retrieval candidates: the 2021 Google Landmark Retrieval winner's rule.

Source: C. Henkel, "Efficient large-scale image retrieval with deep feature orthogonality and
Hybrid-Swin-Transformers", arXiv 2110.03786, whose retrieval post-processing refines the hard
re-ranking of Yokoo et al. 2019 (landmarks.inference.rerank.label_rerank); the rule is taken
from the author's own statement of it in the competition write-up
(kaggle.com/c/landmark-retrieval-2021/discussion/277099, "Post-processing"):

    score(q, x) = cossim(q, x) + 1   * cossim(x, train)   if the labels of q and x match
    score(q, x) = cossim(q, x) - 0.1 * cossim(x, train)   if they do not

Steps as implemented:
  1. candidates: each query's top-K index images x by the direct similarity s(q, x) (after QE/DBA
     when they are on); K = config.rerank_candidates (default 750);
  2. labels: the query and every index image get a landmark from their knn_k nearest train
     images (the recognition vote of landmarks.inference.recognition, with the non-landmark
     penalty and recognition_threshold when set); the index image's score c(x) is its largest
     similarity to a train image of that landmark (the write-up's cossim(index, train));
  3. s'(q, x) = s(q, x) + bonus * c(x) if landmark(x) == landmark(q), else s(q, x) - penalty * c(x)
     (bonus 1.0, penalty 0.1: the write-up's values);
  4. re-sort by s' (equal s' keep the direct order) and keep the top 100.

Choices where the sources are silent: the landmark is the knn_k vote (with knn_k = 1, the
nearest train image's landmark, as "cosine similarity to train images" reads most literally);
c(x) is clipped at 0 (a negative, penalised similarity would turn the bonus into a penalty); a
query or candidate without a landmark (-1: under recognition_threshold, or a non-landmark train
class) gets neither bonus nor penalty; the query's own score does not enter the rule.

What the rule can do to a relevant candidate that was in the top 100: a candidate of the query's
landmark only rises (its bonus is >= 0), so it leaves the top 100 only when 100 others score
higher, each either also of the query's landmark or of a higher direct similarity; a candidate
of another landmark sinks by at most penalty * c(x) <= penalty.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from landmarks.errors import DataError
from landmarks.inference.recognition import recognize


def landmark_scores(similarities, rows, train_landmarks, landmarks) -> np.ndarray:
    """c(y) = the largest of y's neighbour similarities whose train image has landmarks[y];
    0 where landmarks[y] is -1 or no neighbour has it.

    similarities: float [N, k] and rows: int [N, k], y's train neighbours; train_landmarks: int
    [T]; landmarks: int [N]. Returns float32 [N].
    """
    similarities = np.asarray(similarities, np.float32)
    neighbour_landmarks = np.asarray(train_landmarks)[np.asarray(rows)]
    landmarks = np.asarray(landmarks)
    same = (neighbour_landmarks == landmarks[:, None]) & (landmarks[:, None] >= 0)
    best = np.where(same, similarities, -np.inf).max(axis=1, initial=-np.inf)
    return np.where(np.isfinite(best), best, 0.0).astype(np.float32)


def soft_label_rerank(
    similarities,
    rows,
    query_landmarks,
    index_landmarks,
    index_scores,
    *,
    bonus: float = 1.0,
    penalty: float = 0.1,
    k: int = 100,
) -> tuple[np.ndarray, np.ndarray]:
    """Step 3 and 4 above for candidates `rows` [Q, K] (direct similarity order) with
    similarities [Q, K]; query_landmarks [Q], index_landmarks [N] (-1 = none), index_scores [N].
    Returns (scores s' float32 [Q, min(k, K)] descending, rows int64 [Q, min(k, K)])."""
    similarities = np.asarray(similarities, np.float32)
    rows = np.asarray(rows, np.int64)
    query_landmarks = np.asarray(query_landmarks, np.int64)
    index_landmarks = np.asarray(index_landmarks, np.int64)
    index_scores = np.asarray(index_scores, np.float32)
    if similarities.shape != rows.shape or query_landmarks.shape != (rows.shape[0],):
        raise DataError(
            f"soft_label_rerank: similarities {similarities.shape}, rows {rows.shape} and "
            f"{query_landmarks.shape[0]} query landmarks"
        )
    if index_scores.shape != index_landmarks.shape:
        raise DataError(
            f"soft_label_rerank: {index_scores.shape[0]} scores for "
            f"{index_landmarks.shape[0]} index landmarks"
        )
    if bonus < 0 or penalty < 0:
        raise DataError(f"soft re-ranking: bonus and penalty must be >= 0, got {bonus}, {penalty}")
    candidate_landmarks = index_landmarks[rows]
    weight = np.maximum(index_scores[rows], 0.0)
    known = (candidate_landmarks >= 0) & (query_landmarks[:, None] >= 0)
    match = known & (candidate_landmarks == query_landmarks[:, None])
    shift = np.where(match, bonus * weight, np.where(known, -penalty * weight, 0.0))
    scores = similarities + shift.astype(np.float32)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)


@dataclass(frozen=True)
class SoftLabelRerank:
    """The soft re-ranking as predict_retrieval's `rerank`: query_landmarks [Q], index_landmarks
    [N] (-1 = none) and index_scores [N] from the train images (see soft_rerank_through_train)."""

    query_landmarks: np.ndarray
    index_landmarks: np.ndarray
    index_scores: np.ndarray
    bonus: float = 1.0
    penalty: float = 0.1

    def __call__(self, similarities, rows, queries, index, k: int) -> np.ndarray:
        _, ranked = soft_label_rerank(
            similarities,
            rows,
            self.query_landmarks,
            self.index_landmarks,
            self.index_scores,
            bonus=self.bonus,
            penalty=self.penalty,
            k=k,
        )
        return ranked


def soft_rerank_through_train(
    queries,
    index,
    train,
    train_landmarks,
    *,
    k: int,
    backend: str = "tf",
    penalties=None,
    threshold: float | None = None,
    bonus: float = 1.0,
    penalty: float = 0.1,
) -> SoftLabelRerank:
    """Step 2 above: landmarks of the queries and of the index images, and the index images'
    scores, from their k nearest rows of `train` (Descriptors, with landmark ids
    train_landmarks [T] and the optional non-landmark penalties)."""
    k = min(int(k), len(train))
    query_sims, query_rows = queries.search(train, k, backend=backend, penalties=penalties)
    query_landmarks, _ = recognize(
        query_sims, query_rows, train_landmarks, min_confidence=threshold
    )
    index_sims, index_rows = index.search(train, k, backend=backend, penalties=penalties)
    index_landmarks, _ = recognize(
        index_sims, index_rows, train_landmarks, min_confidence=threshold
    )
    scores = landmark_scores(index_sims, index_rows, train_landmarks, index_landmarks)
    return SoftLabelRerank(query_landmarks, index_landmarks, scores, bonus, penalty)
