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
    """Scores of a submission: recognition {"gap", "top1", "queries", "landmark_queries"};
    retrieval {"map@100", "queries"}. `queries` counts the solution rows scored (Ignored rows and
    rows outside `usage` are left out); submission rows for other ids are not scored."""
    if task == "recognition":
        solution = read_recognition_solution(solution_path, usage)
        predictions = read_recognition_submission(submission_path)
        return {
            "gap": global_average_precision(predictions, solution),
            "top1": top1_accuracy(predictions, solution),
            "queries": len(solution),
            "landmark_queries": sum(1 for truth in solution.values() if truth),
        }
    if task == "retrieval":
        solution = read_retrieval_solution(solution_path, usage)
        predictions = read_retrieval_submission(submission_path)
        return {
            "map@100": mean_average_precision(predictions, solution, k=100),
            "queries": len(solution),
        }
    raise ConfigError(f"task must be recognition or retrieval, got {task!r}")
