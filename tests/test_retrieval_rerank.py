"""Soft label re-ranking (2021 winner) and bridged distances (2021 5th place) against a
hand-worked 3-query, 5-index, 6-train example, brute-force references written here, and the
invariants each rule states about relevant images that leave the top of the ranking."""

from __future__ import annotations

import numpy as np
import pytest

from landmarks.errors import DataError
from landmarks.inference.bridged import (
    BridgedRerank,
    bridged_rerank_through_train,
    confidences,
    landmark_distances,
)
from landmarks.inference.descriptors import Descriptors
from landmarks.inference.predict import predict_retrieval
from landmarks.inference.soft_rerank import (
    landmark_scores,
    soft_label_rerank,
    soft_rerank_through_train,
)

# --- the hand-worked example -------------------------------------------------------------------
# Four dimensions; every coordinate is 0, 0.6, 0.8 or 1, so every similarity is a product sum
# that can be checked by eye. Landmarks A = 10, B = 20, C = 30.
TRAIN = np.array(
    [
        [1.0, 0.0, 0.0, 0.0],  # t0  A
        [0.6, 0.8, 0.0, 0.0],  # t1  A
        [0.0, 1.0, 0.0, 0.0],  # t2  B
        [0.0, 0.8, 0.6, 0.0],  # t3  B
        [0.0, 0.0, 1.0, 0.0],  # t4  C
        [0.0, 0.0, 0.0, 1.0],  # t5  C
    ],
    np.float32,
)
TRAIN_LANDMARKS = np.array([10, 10, 20, 20, 30, 30])
QUERIES = np.array(
    [
        [0.8, 0.0, 0.0, 0.6],  # q0
        [0.0, 0.6, 0.8, 0.0],  # q1
        [0.0, 0.0, 0.0, 1.0],  # q2
    ],
    np.float32,
)
INDEX = np.array(
    [
        [0.6, 0.8, 0.0, 0.0],  # x0
        [0.8, 0.0, 0.6, 0.0],  # x1
        [0.0, 0.8, 0.6, 0.0],  # x2
        [0.0, 0.0, 0.8, 0.6],  # x3
        [0.6, 0.0, 0.0, 0.8],  # x4
    ],
    np.float32,
)
# Similarities to the train images (t0 .. t5) and the nearest one:
#   q0: .8  .48  0   0   0   .6    -> t0: A      q1: 0  .48 .6 .96 .8  0   -> t3: B
#   q2: 0   0    0   0   0   1     -> t5: C
#   x0: .6  1    .8  .64 0   0     -> t1: A, score 1.0
#   x1: .8  .48  0   .36 .6  0     -> t0: A, score 0.8
#   x2: 0   .64  .8  1   .6  0     -> t3: B, score 1.0
#   x3: 0   0    0   .48 .8  .6    -> t4: C, score 0.8
#   x4: .6  .36  0   0   0   .8    -> t5: C, score 0.8
# Direct similarities (x0 .. x4) and the direct order (equal similarities: lower row first):
#   q0: .48 .64 0   .36 .96   -> x4 x1 x0 x3 x2
#   q1: .48 .48 .96 .64 0     -> x2 x3 x0 x1 x4
#   q2: 0   0   0   .6  .8    -> x4 x3 x0 x1 x2


def _hand_worked(backend="numpy"):
    return Descriptors([QUERIES]), Descriptors([INDEX]), Descriptors([TRAIN])


def test_direct_order_of_the_example():
    queries, index, _ = _hand_worked()
    ranked = predict_retrieval(queries, index, backend="numpy")
    np.testing.assert_array_equal(ranked, [[4, 1, 0, 3, 2], [2, 3, 0, 1, 4], [4, 3, 0, 1, 2]])


def test_soft_rerank_hand_worked():
    queries, index, train = _hand_worked()
    rerank = soft_rerank_through_train(queries, index, train, TRAIN_LANDMARKS, k=1, backend="numpy")
    np.testing.assert_array_equal(rerank.query_landmarks, [10, 20, 30])
    np.testing.assert_array_equal(rerank.index_landmarks, [10, 10, 20, 30, 30])
    np.testing.assert_allclose(rerank.index_scores, [1.0, 0.8, 1.0, 0.8, 0.8], atol=1e-6)
    ranked = predict_retrieval(queries, index, backend="numpy", rerank=rerank, candidates=5)
    # s' = s + 1 x score on a landmark match, s - 0.1 x score otherwise:
    #   q0 (A): x4 C .96-.08 = .88   x1 A .64+.8 = 1.44   x0 A .48+1 = 1.48
    #           x3 C .36-.08 = .28   x2 B 0-.1 = -.1                     -> x0 x1 x4 x3 x2
    #   q1 (B): x2 B .96+1 = 1.96    x3 C .64-.08 = .56   x0 A .48-.1 = .38
    #           x1 A .48-.08 = .40   x4 C 0-.08 = -.08                   -> x2 x3 x1 x0 x4
    #   q2 (C): x4 C .8+.8 = 1.6     x3 C .6+.8 = 1.4     x0 A -.1   x1 A -.08   x2 B -.1
    #           (x0 and x2 tie at -.1: the direct order, x0 first)       -> x4 x3 x1 x0 x2
    np.testing.assert_array_equal(ranked, [[0, 1, 4, 3, 2], [2, 3, 1, 0, 4], [4, 3, 1, 0, 2]])


def test_soft_rerank_values_and_unknown_landmarks():
    similarities = np.array([[0.9, 0.5, 0.4]], np.float32)
    rows = np.array([[0, 1, 2]])
    # candidate 0 has no landmark (-1): unchanged .9; 1 matches: .5 + 2 x .3 = 1.1;
    # 2 differs: .4 - .5 x .6 = .1 (bonus 2, penalty .5 to make the arithmetic visible)
    scores, ranked = soft_label_rerank(
        similarities, rows, [7], [-1, 7, 8], [0.9, 0.3, 0.6], bonus=2.0, penalty=0.5, k=3
    )
    np.testing.assert_array_equal(ranked, [[1, 0, 2]])
    np.testing.assert_allclose(scores, [[1.1, 0.9, 0.1]], atol=1e-6)
    # a query without a landmark changes nothing; a negative score is clipped at 0
    _, ranked = soft_label_rerank(similarities, rows, [-1], [7, 7, 8], [0.9, 0.3, 0.6], k=3)
    np.testing.assert_array_equal(ranked, rows)
    scores, _ = soft_label_rerank(similarities, rows, [7], [7, 7, 7], [-0.5, 0.0, 0.0], k=1)
    np.testing.assert_allclose(scores, [[0.9]], atol=1e-6)
    with pytest.raises(DataError, match="bonus and penalty"):
        soft_label_rerank(similarities, rows, [7], [7, 7, 8], [1, 1, 1], penalty=-1.0)
    with pytest.raises(DataError, match="3 scores for 2"):
        soft_label_rerank(similarities, rows, [7], [7, 7], [1, 1, 1])


def test_landmark_scores_take_the_best_neighbour_of_the_voted_landmark():
    similarities = np.array([[0.9, 0.7, 0.6], [0.5, 0.4, 0.3]], np.float32)
    rows = np.array([[0, 1, 2], [2, 1, 0]])
    # train rows 0, 1, 2 are landmarks 5, 6, 6; image 0 voted 6 -> its best 6-neighbour is .7;
    # image 1 voted -1 -> 0
    np.testing.assert_allclose(
        landmark_scores(similarities, rows, np.array([5, 6, 6]), np.array([6, -1])), [0.7, 0.0]
    )


# Bridged distances of the example (d = 1 - s, train_k = 6, landmark_k = 2, bonus 0.5):
#   q0: d to t0..t5 = .2 .52 1 1 1 .4   A mean(.2,.52) = .36  C mean(1,.4) = .7  B 1
#       -> A .36-.5 = -.14, C .7, B 1
#   q1: 1 .52 .4 .04 .2 1      B .22 -> -.28, C .6, A .76
#   q2: 1 1 1 1 1 0            C .5 -> 0, A 1, B 1 (tie: lower landmark id first)
#   x0: .4 0 .2 .36 1 1        A .2 -> -.3, B .28, C 1
#   x1: .2 .52 1 .64 .4 1      A .36 -> -.14, C .7, B .82
#   x2: 1 .36 .2 0 .4 1        B .1 -> -.4, A .68, C .7
#   x3: 1 1 1 .52 .2 .4        C .3 -> -.2, B .76, A 1
#   x4: .4 .64 1 1 1 .2        A .52 -> .02, C .6, B 1
QUERY_LISTS = (
    [[10, 30, 20], [20, 30, 10], [30, 10, 20]],
    [[-0.14, 0.7, 1], [-0.28, 0.6, 0.76], [0, 1, 1]],
)
INDEX_LISTS = (
    [[10, 20, 30], [10, 30, 20], [20, 10, 30], [30, 20, 10], [10, 30, 20]],
    [[-0.3, 0.28, 1], [-0.14, 0.7, 0.82], [-0.4, 0.68, 0.7], [-0.2, 0.76, 1], [0.02, 0.6, 1]],
)


def test_landmark_distances_hand_worked():
    queries, index, train = _hand_worked()
    rerank = bridged_rerank_through_train(
        queries, index, train, TRAIN_LANDMARKS, train_k=6, backend="numpy"
    )
    # 5 landmarks asked, 3 exist: the last two columns are empty (-1, +inf)
    for ids, distances, (want_ids, want) in [
        (rerank.query_ids, rerank.query_distances, QUERY_LISTS),
        (rerank.index_ids, rerank.index_distances, INDEX_LISTS),
    ]:
        np.testing.assert_array_equal(ids[:, :3], want_ids)
        np.testing.assert_allclose(distances[:, :3], want, atol=1e-6)
        assert (ids[:, 3:] == -1).all() and np.isinf(distances[:, 3:]).all()


def test_bridged_rerank_hand_worked():
    queries, index, train = _hand_worked()
    rerank = bridged_rerank_through_train(
        queries, index, train, TRAIN_LANDMARKS, train_k=6, backend="numpy"
    )
    ranked = predict_retrieval(queries, index, backend="numpy", rerank=rerank, candidates=5)
    # bridged(q, x) = min over shared landmarks of max(d(q, l), d(x, l)); confidences 1 - d;
    # final = (direct^3 + bridged^3) / 2:
    #   q0: bridged x0 -.14 (A)  x1 -.14 (A)  x2 .68 (A)  x3 .7 (C)  x4 .02 (A)
    #       final x0 (.48^3 + 1.14^3)/2 = .796   x1 (.64^3 + 1.14^3)/2 = .872
    #             x2 (0 + .32^3)/2 = .016   x3 (.36^3 + .3^3)/2 = .037   x4 (.96^3 + .98^3)/2 = .913
    #       -> x4 x1 x0 x3 x2 (the direct order: the bridges agree with it)
    #   q1: bridged x0 .28 (B)  x1 .7 (C)  x2 -.28 (B)  x3 .6 (C)  x4 .6 (C)
    #       final x0 (.48^3 + .72^3)/2 = .242   x1 (.48^3 + .3^3)/2 = .069
    #             x2 (.96^3 + 1.28^3)/2 = 1.491   x3 (.64^3 + .4^3)/2 = .163   x4 (0 + .4^3)/2 = .032
    #       -> x2 x0 x3 x1 x4 (x0 passes x3 through landmark B)
    #   q2: bridged x0 1  x1 .7  x2 .7  x3 0 (C)  x4 .6 (C)
    #       final x0 0   x1 (0 + .3^3)/2 = .0135   x2 .0135   x3 (.6^3 + 1)/2 = .608
    #             x4 (.8^3 + .4^3)/2 = .288   (x1, x2 tie; equal direct 0: lower row first)
    #       -> x3 x4 x1 x2 x0
    np.testing.assert_array_equal(ranked, [[4, 1, 0, 3, 2], [2, 0, 3, 1, 4], [3, 4, 1, 2, 0]])


def test_bridged_inverse_confidence_and_clipping():
    # 1 - d: 1.14, .3, 0 (clipped from -.5), 0 (no bridge); 1/d with d floored at 1e-3
    np.testing.assert_allclose(
        confidences([-0.14, 0.7, 1.5, np.inf]), [1.14, 0.3, 0.0, 0.0], atol=1e-6
    )
    np.testing.assert_allclose(
        confidences([-0.14, 0.5, 2.0, np.inf], "inverse"), [1000.0, 2.0, 0.5, 0.0], rtol=1e-6
    )
    with pytest.raises(DataError, match="bridged_confidence"):
        confidences([0.1], "log")


# --- brute-force references and invariants on clustered random data ------------------------------


def _clustered(seed, landmarks=12, train=120, index=80, queries=25, dim=16, noise=0.6):
    """Images around landmark centres: (train, train landmark ids, index, index landmark ids,
    queries, query landmark ids), all L2-normalised."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((landmarks, dim))

    def images(count):
        ids = rng.integers(0, landmarks, count)
        vectors = centres[ids] + noise * rng.standard_normal((count, dim))
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32), ids

    (t, t_ids), (x, x_ids), (q, q_ids) = images(train), images(index), images(queries)
    return t, t_ids + 100, x, x_ids + 100, q, q_ids + 100


def _reference_landmark_lists(vectors, train, train_landmarks, train_k, landmark_k, keep, bonus):
    """Steps A1-A3 with loops: [(landmark, distance), ...] nearest first, per image."""
    lists = []
    for vector in vectors:
        sims = train @ vector
        nearest = np.argsort(-sims, kind="stable")[:train_k]
        by_landmark = {}
        for row in nearest:
            by_landmark.setdefault(int(train_landmarks[row]), []).append(1.0 - sims[row])
        means = sorted((np.mean(sorted(d)[:landmark_k]), lm) for lm, d in by_landmark.items())
        chosen = [(lm, mean) for mean, lm in means[:keep]]
        chosen[0] = (chosen[0][0], chosen[0][1] - bonus)
        lists.append(chosen)
    return lists


def _reference_bridged_order(queries, index, query_lists, index_lists, k):
    """Steps A4-C over every index image, with loops: the top-k rows per query."""
    ranked = []
    for q in range(len(queries)):
        finals = []
        for x in range(len(index)):
            direct = float(queries[q] @ index[x])
            through = [
                max(dq, dx) for lq, dq in query_lists[q] for lx, dx in index_lists[x] if lq == lx
            ]
            bridge = max(1.0 - min(through), 0.0) if through else 0.0
            finals.append((-(max(direct, 0.0) ** 3 + bridge**3) / 2, -direct, x))
        ranked.append([x for _, _, x in sorted(finals)[:k]])
    return np.array(ranked)


def test_bridged_equals_the_brute_force_reference_when_every_image_is_a_candidate():
    train, train_landmarks, index, _, queries, _ = _clustered(0)
    rerank = bridged_rerank_through_train(
        Descriptors([queries]),
        Descriptors([index]),
        Descriptors([train]),
        train_landmarks,
        train_k=30,
        backend="numpy",
    )
    want_q = _reference_landmark_lists(queries, train, train_landmarks, 30, 2, 5, 0.5)
    want_x = _reference_landmark_lists(index, train, train_landmarks, 30, 2, 5, 0.5)
    for ids, distances, want in [
        (rerank.query_ids, rerank.query_distances, want_q),
        (rerank.index_ids, rerank.index_distances, want_x),
    ]:
        for row, expected in enumerate(want):
            np.testing.assert_array_equal(ids[row, : len(expected)], [lm for lm, _ in expected])
            np.testing.assert_allclose(
                distances[row, : len(expected)], [d for _, d in expected], atol=1e-5
            )
    ranked = predict_retrieval(
        queries, index, k=10, backend="numpy", rerank=rerank, candidates=len(index)
    )
    np.testing.assert_array_equal(
        ranked, _reference_bridged_order(queries, index, want_q, want_x, 10)
    )


def test_bridged_candidates_beyond_the_direct_top_k_all_have_a_bridge():
    train, train_landmarks, index, _, queries, _ = _clustered(1)
    q, x = Descriptors([queries]), Descriptors([index])
    rerank = bridged_rerank_through_train(
        q, x, Descriptors([train]), train_landmarks, backend="numpy"
    )
    ranked = predict_retrieval(q, x, k=20, backend="numpy", rerank=rerank, candidates=5)
    direct = np.argsort(-(queries @ index.T), axis=1, kind="stable")[:, :5]
    for row in range(len(queries)):
        shared = set(rerank.query_ids[row][rerank.query_ids[row] >= 0])
        for image in set(ranked[row]) - set(direct[row]):  # found through a landmark only
            assert shared & set(rerank.index_ids[image]), (row, image)
    assert len({tuple(r) for r in ranked}) > 1 and all(len(set(r)) == 20 for r in ranked)


def test_bridged_outranks_an_image_only_with_a_higher_direct_or_bridged_confidence():
    train, train_landmarks, index, _, queries, _ = _clustered(2)
    q, x = Descriptors([queries]), Descriptors([index])
    rerank = bridged_rerank_through_train(
        q, x, Descriptors([train]), train_landmarks, backend="numpy"
    )
    k = 10
    ranked = predict_retrieval(q, x, k=k, backend="numpy", rerank=rerank, candidates=len(index))
    direct = queries @ index.T
    for row in range(len(queries)):
        through = np.full(len(index), np.inf)
        for lq, dq in zip(rerank.query_ids[row], rerank.query_distances[row], strict=True):
            if lq < 0:
                continue
            hit = rerank.index_ids == lq
            candidate = np.where(hit, np.maximum(dq, rerank.index_distances), np.inf).min(axis=1)
            through = np.minimum(through, candidate)
        c_bridge = np.maximum(1.0 - through, 0.0)
        top_direct = np.argsort(-direct[row], kind="stable")[:k]
        for dropped in set(top_direct) - set(ranked[row]):
            for above in ranked[row]:
                assert (
                    direct[row, above] >= direct[row, dropped] - 1e-6
                    or c_bridge[above] >= c_bridge[dropped] - 1e-6
                ), (row, dropped, above)


def test_soft_rerank_drops_a_relevant_top_image_only_for_a_match_or_a_higher_similarity():
    """The rule's stated reason: a candidate of the query's landmark leaves the top k only when
    k others score higher, each of the query's landmark or of a higher direct similarity."""
    train, train_landmarks, index, _, queries, _ = _clustered(3, noise=0.9)
    q, x = Descriptors([queries]), Descriptors([index])
    rerank = soft_rerank_through_train(
        q, x, Descriptors([train]), train_landmarks, k=3, backend="numpy"
    )
    k = 10
    ranked = predict_retrieval(q, x, k=k, backend="numpy", rerank=rerank, candidates=40)
    direct = queries @ index.T
    dropped_any = False
    for row in range(len(queries)):
        landmark = rerank.query_landmarks[row]
        top_direct = np.argsort(-direct[row], kind="stable")[:k]
        for dropped in set(top_direct) - set(ranked[row]):
            if rerank.index_landmarks[dropped] != landmark:
                continue
            dropped_any = True
            for above in ranked[row]:
                assert (
                    rerank.index_landmarks[above] == landmark
                    or direct[row, above] > direct[row, dropped]
                ), (row, dropped, above)
    assert dropped_any  # this draw does drop relevant candidates, so the check above ran


def test_bridged_inputs_are_checked():
    with pytest.raises(DataError, match="landmark_k and landmarks"):
        landmark_distances(np.zeros((1, 2)), np.zeros((1, 2), int), np.array([1, 2]), landmark_k=0)
    queries, index, train = _hand_worked()
    with pytest.raises(DataError, match="bridged_confidence"):
        bridged_rerank_through_train(queries, index, train, TRAIN_LANDMARKS, confidence="log")
    rerank = bridged_rerank_through_train(queries, index, train, TRAIN_LANDMARKS, backend="numpy")
    lists = (rerank.query_ids, rerank.query_distances, rerank.index_ids, rerank.index_distances)
    bad = BridgedRerank(*lists, power=0.0)
    with pytest.raises(DataError, match="bridged_power"):
        predict_retrieval(queries, index, backend="numpy", rerank=bad)
