"""Bridged query -> landmark -> index distances for retrieval (2021 Google Landmark Retrieval,
5th place).

Source: github.com/kumar-shubham-ml/5th-Place-Solution-to-Google-Landmark-Retrieval-2021,
README "Post-Processing", parts A-C. With d = 1 - s the cosine distance, as implemented:

  A1. every test and index image y takes its `train_k` (300) nearest train images b by the
      penalised similarity s(y, b) - p(b) (the non-landmark penalty, when a set is given);
  A2. d(y, l) = the mean distance of y's `landmark_k` (2) nearest train images of landmark l
      among them;
  A3. y keeps its `landmarks` (5) nearest landmarks L(y); the nearest gets the bonus:
      d(y, l_1) - `bonus` (0.5);
  A4. bridged(q, x) = min over l in L(q) & L(x) of max(d(q, l), d(x, l)); no shared landmark,
      no bridge;
  B.  direct(q, x) = 1 - s(q, x) on the query-expanded / DB-augmented vectors (the README applies
      DBA here: set query_expansion_alpha > 0 for it);
  C.  confidences c = conf(d), 0 without a bridge; final(q, x) = (c_direct^p + c_bridged^p) / 2
      with p = `power` (3; the p-th root of this power mean would not change the order); the
      100 highest final scores, ties to the higher direct similarity, then the lower index row.

Candidates of a query q: its direct top-K (config.rerank_candidates) and, for each landmark l
in L(q), the 100 index images x with l in L(x) and the smallest d(x, l): exactly the images that
can enter the top 100 by the bridged distance through l. Each candidate is scored with its exact
direct similarity and its exact bridged distance.

Choices where the source is ambiguous or silent (named):
  - conf: the repository's first README (2021) says confidence = 1 - distance and a sum of
    cubes; its rewritten README (2023, quoted by issue 14) says 1 / distance and a power average.
    Sum and mean of cubes give the same order. 1/d is undefined at d <= 0, which the 0.5 bonus
    gives to every image whose nearest landmark is closer than 0.5 (s > 0.5 on average over
    its 2 nearest train images: the best matches), so "one_minus" (1 - d) is the default;
    "inverse" (1/d) floors d at MIN_DISTANCE, so those images tie at the top confidence
    (ordered by their direct similarity). Confidences are clipped at 0 so that any power p
    keeps the order.
  - a landmark with fewer than landmark_k of y's train_k neighbours: the mean of those present;
  - train images of a negative landmark id (non-landmark classes) never bridge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from landmarks.errors import DataError

CONFIDENCES = ("one_minus", "inverse")
MIN_DISTANCE = 1e-3  # "inverse": distances are floored here before 1/d
CHUNK_ROWS = 8192  # images per step of the train search (A1)
SCORE_ELEMENTS = 1 << 22  # query x candidate x landmark x landmark comparisons per step (A4)


def landmark_distances(
    similarities, rows, train_landmarks, *, landmark_k: int = 2, landmarks: int = 5, bonus=0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Steps A2-A3 for images with train neighbours rows [N, t] (similarities [N, t], penalised
    when the penalty is on; train_landmarks int [T]).

    Returns (landmark ids int64 [N, L], -1 = none; distances float32 [N, L], +inf = none), each
    row's nearest landmark first (bonus subtracted), ties to the lower landmark id.
    """
    similarities = np.asarray(similarities, np.float32)
    rows = np.asarray(rows, np.int64)
    if similarities.shape != rows.shape or similarities.ndim != 2:
        raise DataError(f"landmark_distances: similarities {similarities.shape}, rows {rows.shape}")
    if landmark_k < 1 or landmarks < 1:
        raise DataError(
            f"bridged: landmark_k and landmarks must be >= 1, got {landmark_k}, {landmarks}"
        )
    images, neighbours = rows.shape
    owner = np.repeat(np.arange(images), neighbours)
    landmark = np.asarray(train_landmarks, np.int64)[rows].ravel()
    distance = (1.0 - similarities).ravel()
    keep = landmark >= 0
    owner, landmark, distance = owner[keep], landmark[keep], distance[keep]
    order = np.lexsort((distance, landmark, owner))
    owner, landmark, distance = owner[order], landmark[order], distance[order]
    # groups of (image, landmark), each sorted by distance; rank = position inside the group
    starts = np.ones(owner.shape, bool)
    starts[1:] = (owner[1:] != owner[:-1]) | (landmark[1:] != landmark[:-1])
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    rank = np.arange(owner.shape[0]) - first[group]
    nearest = rank < landmark_k
    counts = np.bincount(group[nearest], minlength=first.shape[0])
    sums = np.bincount(group[nearest], weights=distance[nearest], minlength=first.shape[0])
    group_owner, group_landmark = owner[first], landmark[first]
    group_distance = (sums / np.maximum(counts, 1)).astype(np.float32)
    # each image's `landmarks` nearest groups
    order = np.lexsort((group_landmark, group_distance, group_owner))
    group_owner = group_owner[order]
    image_start = np.searchsorted(group_owner, np.arange(images))
    position = np.arange(group_owner.shape[0]) - image_start[group_owner]
    kept = position < landmarks
    ids = np.full((images, landmarks), -1, np.int64)
    distances = np.full((images, landmarks), np.inf, np.float32)
    ids[group_owner[kept], position[kept]] = group_landmark[order][kept]
    distances[group_owner[kept], position[kept]] = group_distance[order][kept]
    distances[:, 0] -= np.float32(bonus)
    return ids, distances


def bridged_distances(query_ids, query_distances, index_ids, index_distances, rows) -> np.ndarray:
    """Step A4 for the candidates rows [Q, C] (index rows, -1 = none) of each query: float32
    [Q, C], +inf where the query and the candidate share no landmark (or rows is -1).
    query_ids/query_distances [Q, L] and index_ids/index_distances [N, L] from
    landmark_distances."""
    rows = np.asarray(rows, np.int64)
    safe = np.maximum(rows, 0)
    candidate_ids = index_ids[safe]  # [Q, C, L]
    candidate_distances = index_distances[safe]
    shared = (query_ids[:, None, :, None] == candidate_ids[:, :, None, :]) & (
        query_ids[:, None, :, None] >= 0
    )
    through = np.maximum(query_distances[:, None, :, None], candidate_distances[:, :, None, :])
    best = np.where(shared, through, np.inf).min(axis=(2, 3))
    return np.where(rows >= 0, best, np.inf).astype(np.float32)


def bridged_candidates(query_ids, index_ids, index_distances, per_landmark: int) -> np.ndarray:
    """For each query landmark l, the `per_landmark` index rows with l among their landmarks and
    the smallest d(x, l) (ties: lower row): int64 [Q, L * per_landmark], -1 = none."""
    landmarks = index_ids.shape[1]
    landmark = index_ids.ravel()
    distance = index_distances.ravel()
    row = np.repeat(np.arange(index_ids.shape[0]), landmarks)
    keep = landmark >= 0
    landmark, distance, row = landmark[keep], distance[keep], row[keep]
    order = np.lexsort((row, distance, landmark))
    landmark, row = landmark[order], row[order]
    known, first = np.unique(landmark, return_index=True)
    group = np.searchsorted(known, landmark)
    rank = np.arange(landmark.shape[0]) - first[group]
    kept = rank < per_landmark
    table = np.full((known.shape[0] + 1, per_landmark), -1, np.int64)  # last row: "not found"
    table[group[kept], rank[kept]] = row[kept]
    position = np.searchsorted(known, query_ids)
    position = np.minimum(position, max(known.shape[0] - 1, 0))
    found = (query_ids >= 0) & (known.shape[0] > 0)
    if known.shape[0]:
        found &= known[position] == query_ids
    position = np.where(found, position, known.shape[0])
    return table[position].reshape(query_ids.shape[0], -1)


def confidences(distances, kind: str = "one_minus") -> np.ndarray:
    """conf(d) of step C, clipped at 0 (+inf distance -> 0)."""
    distances = np.asarray(distances, np.float32)
    if kind == "one_minus":
        values = 1.0 - distances
    elif kind == "inverse":
        values = 1.0 / np.maximum(distances, MIN_DISTANCE)
    else:
        raise DataError(f"bridged_confidence must be one of {', '.join(CONFIDENCES)}, got {kind!r}")
    return np.where(np.isfinite(distances), np.maximum(values, 0.0), 0.0).astype(np.float32)


@dataclass(frozen=True)
class BridgedRerank:
    """Steps A4-C as predict_retrieval's `rerank`: the landmark lists of the queries and of the
    index images (landmark_distances), the final power and the confidence kind."""

    query_ids: np.ndarray
    query_distances: np.ndarray
    index_ids: np.ndarray
    index_distances: np.ndarray
    power: float = 3.0
    confidence: str = "one_minus"

    def __call__(self, similarities, rows, queries, index, k: int) -> np.ndarray:
        if self.power <= 0:
            raise DataError(f"bridged_power must be > 0, got {self.power}")
        landmarks = self.query_ids.shape[1]
        width = rows.shape[1] + landmarks * k
        step = max(1, SCORE_ELEMENTS // (width * landmarks * landmarks))
        ranked = np.empty((rows.shape[0], k), np.int64)
        for start in range(0, rows.shape[0], step):
            chunk = slice(start, start + step)
            ranked[chunk] = self._rank(
                similarities[chunk], rows[chunk], queries.take(chunk), index, chunk, k
            )
        return ranked

    def _rank(self, direct_similarities, direct_rows, queries, index, chunk, k):
        bridged_rows = bridged_candidates(
            self.query_ids[chunk], self.index_ids, self.index_distances, k
        )
        candidates = np.concatenate([direct_rows, bridged_rows], axis=1)
        direct = np.concatenate(
            [
                np.asarray(direct_similarities, np.float32),
                queries.pair_similarities(index, bridged_rows),
            ],
            axis=1,
        )
        bridged = bridged_distances(
            self.query_ids[chunk],
            self.query_distances[chunk],
            self.index_ids,
            self.index_distances,
            candidates,
        )
        power = np.float32(self.power)
        final = 0.5 * (
            confidences(1.0 - direct, self.confidence) ** power
            + confidences(bridged, self.confidence) ** power
        )
        # a row found twice (directly and through a landmark) counts once, with its direct
        # similarity from the search (stable sort: the direct column comes first); -1 never ranks
        order = np.argsort(candidates, axis=1, kind="stable")
        candidates = np.take_along_axis(candidates, order, 1)
        final = np.take_along_axis(final, order, 1)
        direct = np.take_along_axis(direct, order, 1)
        repeated = np.zeros(candidates.shape, bool)
        repeated[:, 1:] = candidates[:, 1:] == candidates[:, :-1]
        final = np.where(repeated | (candidates < 0), -np.inf, final)
        best = np.lexsort((candidates, -direct, -final), axis=1)[:, :k]
        return np.take_along_axis(candidates, best, 1)


def bridged_rerank_through_train(
    queries,
    index,
    train,
    train_landmarks,
    *,
    train_k: int = 300,
    landmark_k: int = 2,
    landmarks: int = 5,
    bonus: float = 0.5,
    power: float = 3.0,
    confidence: str = "one_minus",
    backend: str = "tf",
    penalties=None,
) -> BridgedRerank:
    """Steps A1-A3 for the queries and the index images (Descriptors) against `train`
    (Descriptors, landmark ids train_landmarks [T], optional non-landmark penalties)."""
    if confidence not in CONFIDENCES:
        raise DataError(
            f"bridged_confidence must be one of {', '.join(CONFIDENCES)}, got {confidence!r}"
        )

    def lists(images):
        found = [
            landmark_distances(
                *images.take(slice(start, start + CHUNK_ROWS)).search(
                    train, min(int(train_k), len(train)), backend=backend, penalties=penalties
                ),
                train_landmarks,
                landmark_k=landmark_k,
                landmarks=landmarks,
                bonus=bonus,
            )
            for start in range(0, len(images), CHUNK_ROWS)
        ]
        return tuple(np.concatenate(parts) for parts in zip(*found, strict=True))

    query_ids, query_distances = lists(queries)
    index_ids, index_distances = lists(index)
    return BridgedRerank(query_ids, query_distances, index_ids, index_distances, power, confidence)
