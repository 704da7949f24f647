"""GAP, mAP@100 and top-1 on hand-worked cases; solution readers; the evaluate command."""

from __future__ import annotations

import pytest
from cli_helpers import evaluate, last_json

from landmarks.errors import DataError
from landmarks.metrics import (
    global_average_precision,
    mean_average_precision,
    read_recognition_solution,
    read_retrieval_solution,
    top1_accuracy,
)

# --- GAP -------------------------------------------------------------------------------------

RECOGNITION_SOLUTION = {
    "q1": [10],
    "q2": [20],
    "q3": [30, 31],
    "q4": [],  # non-landmark query
    "q5": [50],  # will have no prediction
}
RECOGNITION_PREDICTIONS = {
    "zz": (1, 0.95),  # not in the solution: not scored, takes no rank
    "q3": (31, 0.6),
    "q2": (21, 0.7),
    "q4": (40, 0.8),
    "q1": (10, 0.9),
    "q5": None,
}


def test_gap_hand_worked():
    # M = 4 queries with a landmark (q1, q2, q3, q5). Sorted by confidence:
    #   rank 1  q1 0.9  correct  -> correct=1, P = 1/1
    #   rank 2  q4 0.8  wrong (non-landmark query)
    #   rank 3  q2 0.7  wrong
    #   rank 4  q3 0.6  correct (31 is one of 30, 31) -> correct=2, P = 2/4
    #   q5: no prediction -> nothing, but counted in M.
    # GAP = (1 + 0.5) / 4 = 0.375
    assert global_average_precision(RECOGNITION_PREDICTIONS, RECOGNITION_SOLUTION) == pytest.approx(
        0.375
    )


def test_gap_equal_confidences_keep_the_given_order():
    solution = {"a": [1], "b": [2]}
    # a first: rank 1 wrong, rank 2 correct -> (1/2) / 2 = 0.25
    assert global_average_precision({"a": (9, 0.5), "b": (2, 0.5)}, solution) == 0.25
    # b first: rank 1 correct -> (1/1) / 2 = 0.5
    assert global_average_precision({"b": (2, 0.5), "a": (9, 0.5)}, solution) == 0.5


def test_gap_without_landmark_queries_is_an_error():
    with pytest.raises(DataError, match="M = 0"):
        global_average_precision({"a": (1, 1.0)}, {"a": []})


def test_top1_hand_worked():
    # landmark queries q1, q2, q3, q5; correct: q1 and q3 -> 2/4
    assert top1_accuracy(RECOGNITION_PREDICTIONS, RECOGNITION_SOLUTION) == 0.5


# --- mAP@100 --------------------------------------------------------------------------------


def test_map_hand_worked_with_duplicates_and_missing_query():
    solution = {"q1": ["a", "b", "c"], "q2": ["x"], "q3": ["m", "n"]}
    predictions = {
        # rank 1 a correct (1/1); rank 2 z; rank 3 a again: takes the rank, scores nothing;
        # rank 4 b correct (2/4). AP = (1 + 0.5) / min(3, 100) = 0.5
        "q1": ["a", "z", "a", "b"],
        # rank 2 x correct (1/2). AP = 0.5 / 1 = 0.5
        "q2": ["y", "x"],
        # q3 missing: AP = 0
        "other": ["a"],  # not in the solution: ignored
    }
    # mAP = (0.5 + 0.5 + 0) / 3
    assert mean_average_precision(predictions, solution) == pytest.approx(1 / 3)


def test_map_only_the_first_100_count_and_the_divisor_is_capped_at_100():
    relevant = [f"g{i}" for i in range(150)]
    # 99 wrong ids, then g0 at rank 100 and g1 at rank 101 (beyond the cut).
    ranked = [f"w{i}" for i in range(99)] + ["g0", "g1"]
    # AP = (1/100) / min(150, 100) = 0.0001
    assert mean_average_precision({"q": ranked}, {"q": relevant}) == pytest.approx(1e-4)
    # Only the hit at rank 101: AP = 0
    late = [f"w{i}" for i in range(100)] + ["t"]
    assert mean_average_precision({"q": late}, {"q": ["t"]}) == 0.0


def test_map_at_k_uses_k():
    # k = 1: only rank 1 counts. q: [b, a] vs {a, b}: rank 1 b correct -> 1 / min(2, 1) = 1
    assert mean_average_precision({"q": ["b", "a"]}, {"q": ["a", "b"]}, k=1) == 1.0
    # k = 2: (1/1 + 2/2) / 2 = 1; with a wrong id first: (1/2) / 2 = 0.25
    assert mean_average_precision({"q": ["z", "a"]}, {"q": ["a", "b"]}, k=2) == 0.25


def test_map_rejects_a_solution_query_without_relevant_images():
    with pytest.raises(DataError, match="'q'"):
        mean_average_precision({}, {"q": []})


# --- solution files and the evaluate command -----------------------------------------------


def _write(path, text):
    path.write_text(text)
    return str(path)


RECOGNITION_CSV = (
    "id,landmarks,Usage\n"
    "q1,10,Public\n"
    "q2,20,Private\n"
    "q3,30 31,Public\n"
    "q4,,Private\n"
    "q5,50,Private\n"
    "q6,60,Ignored\n"
)


def test_recognition_solution_usage_selection(tmp_path):
    path = _write(tmp_path / "sol.csv", RECOGNITION_CSV)
    assert read_recognition_solution(path, "all") == {
        "q1": [10],
        "q2": [20],
        "q3": [30, 31],
        "q4": [],
        "q5": [50],
    }
    assert read_recognition_solution(path, "public") == {"q1": [10], "q3": [30, 31]}
    assert read_recognition_solution(path, "private") == {"q2": [20], "q4": [], "q5": [50]}


@pytest.mark.parametrize(
    "text, message",
    [
        ("id,landmarks\nq1,1\n", "header must be id,landmarks,Usage"),
        ("id,landmarks,Usage\nq1,1,Public\nq1,2,Public\n", "line 3: id 'q1' appears twice"),
        ("id,landmarks,Usage\nq1,abc,Public\n", "line 2: landmarks must be integers"),
        ("id,landmarks,Usage\nq1,1,Secret\n", "line 2: Usage must be"),
        ("id,landmarks,Usage\nq1,1\n", "line 2: expected 3 fields"),
    ],
)
def test_bad_solution_files_name_the_line(tmp_path, text, message):
    path = _write(tmp_path / "sol.csv", text)
    with pytest.raises(DataError, match=message):
        read_recognition_solution(path)


def test_retrieval_solution_skips_ignored_and_rejects_empty(tmp_path):
    path = _write(tmp_path / "sol.csv", "id,images,Usage\nq1,a b,Public\nq2,,Ignored\n")
    assert read_retrieval_solution(path) == {"q1": ["a", "b"]}
    bad = _write(tmp_path / "bad.csv", "id,images,Usage\nq1,,Public\n")
    with pytest.raises(DataError, match="line 2"):
        read_retrieval_solution(bad)


def test_evaluate_recognition_json_last_line(tmp_path, capsys):
    solution = _write(tmp_path / "sol.csv", RECOGNITION_CSV)
    submission = _write(
        tmp_path / "sub.csv",
        "id,landmarks\nq1,10 0.9\nq2,21 0.7\nq3,31 0.6\nq4,40 0.8\nq5,\nq6,60 1.0\n",
    )
    assert evaluate("recognition", submission, solution, "--json") == 0
    scores = last_json(capsys)
    # Same case as test_gap_hand_worked (q6 is Ignored): GAP 0.375, 5 queries scored.
    assert scores["gap"] == pytest.approx(0.375)
    assert scores["queries"] == 5 and scores["landmark_queries"] == 4
    # Public only: q1 (rank 1, correct) and q3 (rank 2, correct): (1 + 1) / 2 = 1
    evaluate("recognition", submission, solution, "--usage", "public", "--json")
    assert last_json(capsys)["gap"] == 1.0


def test_evaluate_retrieval_json_and_bad_submission(tmp_path, capsys):
    solution = _write(tmp_path / "sol.csv", "id,images,Usage\nq1,a b,Public\nq2,x,Private\n")
    submission = _write(tmp_path / "sub.csv", "id,images\nq1,b z a\nq2,\n")
    assert evaluate("retrieval", submission, solution, "--json") == 0
    scores = last_json(capsys)
    # q1: (1/1 + 2/3) / 2 = 5/6; q2: 0 -> mAP = 5/12
    assert scores == {"map@100": pytest.approx(5 / 12), "queries": 2, "predicted": 2, "unscored": 0}
    broken = _write(tmp_path / "broken.csv", "id,images\nq1," + " ".join(["a"] * 101) + "\n")
    assert evaluate("retrieval", broken, solution) == 2
    assert "line 2: 101 images" in capsys.readouterr().err
