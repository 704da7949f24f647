"""Score a submission file against a Kaggle solution file (the `evaluate` command)."""

from __future__ import annotations

from landmarks.errors import ConfigError
from landmarks.metrics import (
    global_average_precision,
    mean_average_precision,
    read_recognition_solution,
    read_retrieval_solution,
    top1_accuracy,
)
from landmarks.submission import read_recognition_submission, read_retrieval_submission


def evaluate_files(task: str, submission_path: str, solution_path: str, *, usage: str = "all"):
    """Scores of a submission: recognition {"gap", "top1", "queries", "landmark_queries",
    "predicted", "unscored"}; retrieval {"map@100", "queries", "predicted", "unscored"}.

    `queries` counts the solution rows scored (Ignored rows and rows outside `usage` are left
    out); `predicted` how many of them the submission has a row for (a missing query scores 0);
    `unscored` the submission rows whose id is not among them."""
    if task == "recognition":
        solution = read_recognition_solution(solution_path, usage)
        predictions = read_recognition_submission(submission_path)
        scores = {
            "gap": global_average_precision(predictions, solution),
            "top1": top1_accuracy(predictions, solution),
            "queries": len(solution),
            "landmark_queries": sum(1 for truth in solution.values() if truth),
        }
    elif task == "retrieval":
        solution = read_retrieval_solution(solution_path, usage)
        predictions = read_retrieval_submission(submission_path)
        scores = {
            "map@100": mean_average_precision(predictions, solution, k=100),
            "queries": len(solution),
        }
    else:
        raise ConfigError(f"task must be recognition or retrieval, got {task!r}")
    scores["predicted"] = sum(1 for query in solution if query in predictions)
    scores["unscored"] = sum(1 for query in predictions if query not in solution)
    return scores


def coverage_notes(scores: dict) -> list[str]:
    """Plain-language lines for a submission that does not cover the solution exactly, e.g.
    "157 solution queries, 0 predicted: the 157 missing ones score 0"."""
    notes = []
    missing = scores["queries"] - scores["predicted"]
    if missing:
        notes.append(
            f"{scores['queries']} solution queries, {scores['predicted']} predicted: the "
            f"{missing} missing ones score 0"
        )
    if scores["unscored"]:
        notes.append(
            f"{scores['unscored']} submission ids are not among the solution's scored queries "
            "(not scored; another test set, or Ignored/other-usage rows?)"
        )
    return notes
