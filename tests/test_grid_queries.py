"""The rule that picks the retrieval grid's queries, on a hand-made submission."""

from __future__ import annotations

from landmarks.demo_flow import choose_grid_queries

# Queries q1..q6 rank index images; relevant images per query (q7 is not scored: Ignored).
RANKED = {
    "q1": ["a", "b", "c", "d", "e"],  # a relevant at #1: hit
    "q2": ["x", "x2", "x3", "x4", "b"],  # b relevant at #5: hit
    "q3": ["x", "x2", "x3", "x4", "x5", "c"],  # c at #6: miss
    "q4": ["y", "y2", "y3", "y4", "y5"],  # miss
    "q5": ["d", "x", "x", "x", "x"],  # hit
    "q6": ["z", "z", "z", "z", "z"],  # miss
    "q7": ["a"],
}
RELEVANT = {"q1": ["a"], "q2": ["b"], "q3": ["c"], "q4": ["w"], "q5": ["d"], "q6": ["v"]}
TOP = {"q1": 0.9, "q2": 0.5, "q3": 0.8, "q4": 0.3, "q5": 0.7, "q6": 0.95, "q7": 1.0}


def test_half_hits_half_misses_evenly_spaced_by_confidence():
    # hits by top similarity: q1 0.9, q5 0.7, q2 0.5; misses: q6 0.95, q3 0.8, q4 0.3.
    assert choose_grid_queries(RANKED, RELEVANT, 4, TOP) == ["q1", "q2", "q6", "q4"]
    # 3 rows: 2 hits (rounded up: the ends of the list), 1 miss (the most confident).
    assert choose_grid_queries(RANKED, RELEVANT, 3, TOP) == ["q1", "q2", "q6"]
    assert choose_grid_queries(RANKED, RELEVANT, 6, TOP) == ["q1", "q5", "q2", "q6", "q3", "q4"]


def test_one_kind_fills_in_for_the_other_and_ids_order_without_similarities():
    only_hits = {q: RELEVANT[q] for q in ("q1", "q2", "q5")}
    assert choose_grid_queries(RANKED, only_hits, 4) == ["q1", "q2", "q5"]
    with_one_miss = {q: RELEVANT[q] for q in ("q1", "q2", "q5", "q4")}
    assert choose_grid_queries(RANKED, with_one_miss, 4) == ["q1", "q2", "q5", "q4"]
