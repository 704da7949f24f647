"""Competition metrics: GAP (recognition), mAP@k (retrieval), top-1 accuracy; solution readers.

Both metrics follow the competitions' reference code (cvdfoundation/google-landmark metrics):

GAP = (1/M) * sum_i P(i) * rel(i) over all predictions sorted by confidence, descending (equal
confidences keep the order of `predictions`), where P(i) is the precision among the first i
predictions and rel(i) is 1 when prediction i is one of its query's landmarks. M is the number of
solution queries with at least one landmark. A prediction on a non-landmark query takes a rank
and is wrong; a query without a prediction scores nothing but still counts in M; predictions for
ids absent from the solution are not scored.

mAP@k = (1/Q) * sum_q AP@k(q) over ALL Q solution queries, AP@k(q) = (1/min(#gt(q), k)) *
sum_{i<=k} P(i) * rel(i), i running over the first k entries of the predicted list; an id that
already appeared earlier in the list takes its rank but scores nothing; a query without a
prediction scores 0.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from landmarks.errors import DataError

USAGES = ("public", "private", "all")


def global_average_precision(
    predictions: Mapping[str, tuple[int, float] | None],
    solution: Mapping[str, Collection[int]],
) -> float:
    """GAP of recognition `predictions` (query id -> (landmark_id, confidence) or None) against
    `solution` (query id -> landmark ids; empty = a non-landmark query)."""
    landmark_queries = sum(1 for truth in solution.values() if len(truth) > 0)
    if landmark_queries == 0:
        raise DataError("GAP: the solution has no query with a landmark (M = 0)")
    scored = [
        (query, prediction)
        for query, prediction in predictions.items()
        if prediction is not None and query in solution
    ]
    scored.sort(key=lambda item: -float(item[1][1]))  # stable: ties keep the given order
    correct = 0
    total = 0.0
    for rank, (query, (landmark, _)) in enumerate(scored, start=1):
        if int(landmark) in solution[query]:
            correct += 1
            total += correct / rank
    return total / landmark_queries


def mean_average_precision(
    predictions: Mapping[str, Sequence[str]],
    solution: Mapping[str, Collection[str]],
    k: int = 100,
) -> float:
    """mAP@k of retrieval `predictions` (query id -> ranked index ids) against `solution`
    (query id -> relevant index ids, each non-empty)."""
    if not solution:
        raise DataError("mAP: the solution has no query")
    if k < 1:
        raise DataError(f"mAP: k must be >= 1, got {k}")
    total = 0.0
    for query, relevant in solution.items():
        if len(relevant) == 0:
            raise DataError(f"mAP: solution query {query!r} has no relevant index image")
        ranked = predictions.get(query) or ()
        relevant = set(relevant)
        seen: set[str] = set()
        correct = 0
        precision_sum = 0.0
        for rank, image in enumerate(list(ranked)[:k], start=1):
            if image in seen:
                continue
            seen.add(image)
            if image in relevant:
                correct += 1
                precision_sum += correct / rank
        total += precision_sum / min(len(relevant), k)
    return total / len(solution)


def top1_accuracy(
    predictions: Mapping[str, tuple[int, float] | None],
    solution: Mapping[str, Collection[int]],
) -> float:
    """Fraction of the solution's landmark queries whose predicted landmark is correct
    (non-landmark queries are left out; a missing prediction is wrong)."""
    queries = [query for query, truth in solution.items() if len(truth) > 0]
    if not queries:
        raise DataError("top-1: the solution has no query with a landmark")
    hits = 0
    for query in queries:
        prediction = predictions.get(query)
        if prediction is not None and int(prediction[0]) in solution[query]:
            hits += 1
    return hits / len(queries)


# --- solution files -------------------------------------------------------------------------


def read_recognition_solution(path: str, usage: str = "all") -> dict[str, list[int]]:
    """`id,landmarks,Usage` -> {id: [landmark ids]} ([] = non-landmark query).

    usage: "public", "private" or "all" (Public and Private); Ignored rows are always left out.
    """
    rows = _read_solution(path, "landmarks", usage)
    solution = {}
    for line, query, value in rows:
        try:
            solution[query] = [int(token) for token in value.split()]
        except ValueError as error:
            raise DataError(
                f"{path}: line {line}: landmarks must be integers, got {value!r}"
            ) from error
    return solution


def read_retrieval_solution(path: str, usage: str = "all") -> dict[str, list[str]]:
    """`id,images,Usage` -> {id: [index ids]}; Ignored rows are left out (see usage above)."""
    solution = {}
    for line, query, value in _read_solution(path, "images", usage):
        if not value.split():
            raise DataError(f"{path}: line {line}: query {query!r} has no relevant images")
        solution[query] = value.split()
    return solution


def _read_solution(path: str, column: str, usage: str) -> list[tuple[int, str, str]]:
    """(file line number, id, value) of the rows whose Usage is selected."""
    from landmarks.submission import read_csv_columns

    if usage not in USAGES:
        raise DataError(f"usage must be one of {', '.join(USAGES)}, got {usage!r}")
    table = read_csv_columns(path, ("id", column, "Usage"))
    wanted = {"public": {"Public"}, "private": {"Private"}, "all": {"Public", "Private"}}[usage]
    rows = []
    seen: set[str] = set()
    for number, (query, value, row_usage) in enumerate(
        zip(table["id"], table[column], table["Usage"], strict=True)
    ):
        line = number + 2
        if row_usage not in ("Public", "Private", "Ignored"):
            raise DataError(
                f"{path}: line {line}: Usage must be Public, Private or Ignored, got {row_usage!r}"
            )
        if query in seen:
            raise DataError(f"{path}: line {line}: id {query!r} appears twice")
        seen.add(query)
        if row_usage in wanted:
            rows.append((line, query, value))
    return rows
