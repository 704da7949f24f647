"""Kaggle submission files: write (atomically, validated first), validate, read.

Recognition: `id,landmarks` with landmarks = "<landmark_id> <confidence>" or empty.
Retrieval:   `id,images` with up to 100 space-separated index ids (a repeated id is allowed
             and scores once, as on Kaggle).
Errors name the file and the line (the header is line 1).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Collection, Iterable, Sequence

import numpy as np

from landmarks.errors import DataError

MAX_RETRIEVED = 100
RECOGNITION_COLUMNS = ("id", "landmarks")
RETRIEVAL_COLUMNS = ("id", "images")


# --- reading ----------------------------------------------------------------------------------


def read_csv_columns(path: str, columns: Sequence[str]) -> dict[str, list[str]]:
    """The named columns of a CSV file as lists of strings (header must be exactly `columns`)."""
    return _parse_csv(_read_text(path), columns, path)


def _read_text(path: str) -> str:
    from landmarks.io_utils import read_text

    try:
        return read_text(path)
    except FileNotFoundError as error:
        raise DataError(f"file not found: {path}") from error


def _parse_csv(text: str, columns: Sequence[str], source: str) -> dict[str, list[str]]:
    """Rows of a CSV text whose header must be `columns`. Lines may end in \\n, \\r\\n or \\r
    (old Mac exports); a malformed line (a field over csv's 131,072 characters, a stray quote)
    is a DataError naming `source` and the line."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        return _read_rows(reader, columns, source)
    except csv.Error as error:
        raise DataError(
            f"{source}: line {reader.line_num}: not a readable CSV row ({error})"
        ) from error


def _read_rows(reader, columns: Sequence[str], source: str) -> dict[str, list[str]]:
    header = next(reader, None)
    if header is None:
        raise DataError(f"{source}: empty file, expected the header {','.join(columns)}")
    if [name.strip() for name in header] != list(columns):
        raise DataError(f"{source}: header must be {','.join(columns)}, got {','.join(header)}")
    table: dict[str, list[str]] = {name: [] for name in columns}
    for row in reader:
        if not row:
            continue
        if len(row) != len(columns):
            raise DataError(
                f"{source}: line {reader.line_num}: expected {len(columns)} fields, got {len(row)}"
            )
        for name, value in zip(columns, row, strict=True):
            table[name].append(value.strip())
    return table


def _parse_predictions(text: str, columns: tuple[str, str], source: str, parse) -> dict:
    """{id: parse(value)} of a two-column submission text, checking every row."""
    table = _parse_csv(text, columns, source)
    predictions: dict = {}
    for number, (query, value) in enumerate(zip(table[columns[0]], table[columns[1]], strict=True)):
        where = f"{source}: line {number + 2}"
        _check_id(query, predictions, where)
        predictions[query] = parse(value, where)
    return predictions


def read_recognition_submission(path: str) -> dict[str, tuple[int, float] | None]:
    """`id,landmarks` -> {id: (landmark_id, confidence) or None}, validating every row."""
    return _parse_predictions(_read_text(path), RECOGNITION_COLUMNS, path, _parse_recognition)


def read_retrieval_submission(path: str) -> dict[str, list[str]]:
    """`id,images` -> {id: [index ids]}, validating every row."""
    return _parse_predictions(_read_text(path), RETRIEVAL_COLUMNS, path, _parse_retrieval)


def _check_id(query: str, seen: Collection[str], where: str) -> None:
    if not query:
        raise DataError(f"{where}: empty id")
    if query in seen:
        raise DataError(f"{where}: id {query!r} appears more than once")


def _parse_recognition(value: str, where: str) -> tuple[int, float] | None:
    tokens = value.split()
    if not tokens:
        return None
    if len(tokens) != 2:
        raise DataError(f"{where}: landmarks must be '<landmark_id> <confidence>', got {value!r}")
    try:
        landmark = int(tokens[0])
        confidence = float(tokens[1])
    except ValueError as error:
        raise DataError(
            f"{where}: landmarks must be '<integer id> <number>', got {value!r}"
        ) from error
    if not math.isfinite(confidence):
        raise DataError(f"{where}: confidence is not a finite number: {value!r}")
    return landmark, confidence


def _parse_retrieval(value: str, where: str) -> list[str]:
    images = value.split()
    if len(images) > MAX_RETRIEVED:
        raise DataError(f"{where}: {len(images)} images, at most {MAX_RETRIEVED} allowed")
    return images


# --- validation -------------------------------------------------------------------------------


def validate_recognition_submission(
    path: str, expected_ids: Iterable[str]
) -> dict[str, tuple[int, float] | None]:
    """Check columns, formats and that every expected id appears exactly once; returns the
    parsed predictions."""
    predictions = read_recognition_submission(path)
    _check_coverage(path, predictions, expected_ids)
    return predictions


def validate_retrieval_submission(
    path: str, expected_ids: Iterable[str], index_ids: Iterable[str] | None = None
) -> dict[str, list[str]]:
    """Check columns, formats (<= 100 ids), every expected id exactly once and, when
    `index_ids` is given, that every listed image is a known index id."""
    predictions = read_retrieval_submission(path)
    _check_coverage(path, predictions, expected_ids)
    if index_ids is not None:
        _check_known_images(path, predictions, index_ids)
    return predictions


def _check_known_images(path: str, predictions: dict, index_ids: Iterable[str]) -> None:
    known = set(index_ids)
    for number, (query, images) in enumerate(predictions.items()):
        unknown = [image for image in images if image not in known]
        if unknown:
            raise DataError(
                f"{path}: line {number + 2}: query {query!r} lists unknown index id {unknown[0]!r}"
            )


def _check_coverage(path: str, predictions: dict, expected_ids: Iterable[str]) -> None:
    expected = list(expected_ids)
    expected_set = set(expected)
    for number, query in enumerate(predictions):
        if query not in expected_set:
            raise DataError(f"{path}: line {number + 2}: unknown id {query!r}")
    missing = [query for query in expected if query not in predictions]
    if missing:
        raise DataError(f"{path}: {len(missing)} expected ids are missing, e.g. {missing[0]!r}")


# --- writing ----------------------------------------------------------------------------------


def format_recognition_rows(ids, landmark_ids, confidences) -> list[tuple[str, str]]:
    """(id, "<landmark_id> <confidence>" or "" when landmark_id < 0) per query."""
    ids = [str(query) for query in ids]
    landmark_ids = np.asarray(landmark_ids)
    confidences = np.asarray(confidences, dtype=np.float64)
    if not (len(ids) == landmark_ids.shape[0] == confidences.shape[0]):
        raise DataError(
            f"recognition submission: {len(ids)} ids, {landmark_ids.shape[0]} landmarks, "
            f"{confidences.shape[0]} confidences"
        )
    rows = []
    for number, (query, landmark, confidence) in enumerate(
        zip(ids, landmark_ids, confidences, strict=True)
    ):
        if landmark < 0:
            rows.append((query, ""))
            continue
        if not math.isfinite(confidence):
            raise DataError(
                f"recognition submission: row {number} ({query}): confidence {confidence}"
            )
        rows.append((query, f"{int(landmark)} {confidence:.7g}"))
    return rows


def write_recognition_submission(
    path: str, ids, landmark_ids, confidences, *, expected_ids: Iterable[str] | None = None
) -> None:
    """Write `id,landmarks` atomically after validating it (expected_ids default: `ids`)."""
    rows = format_recognition_rows(ids, landmark_ids, confidences)
    text = _to_csv(RECOGNITION_COLUMNS, rows)
    expected = list(expected_ids) if expected_ids is not None else [row[0] for row in rows]
    predictions = _parse_predictions(text, RECOGNITION_COLUMNS, path, _parse_recognition)
    _check_coverage(path, predictions, expected)
    _write(path, text)


def write_retrieval_submission(
    path: str,
    ids,
    ranked_index_ids: Sequence[Sequence[str]],
    *,
    expected_ids: Iterable[str] | None = None,
    index_ids: Iterable[str] | None = None,
) -> None:
    """Write `id,images` (first MAX_RETRIEVED ids of each ranking) atomically after validating."""
    ids = [str(query) for query in ids]
    if len(ids) != len(ranked_index_ids):
        raise DataError(f"retrieval submission: {len(ids)} ids, {len(ranked_index_ids)} rankings")
    rows = [
        (query, " ".join(str(image) for image in ranking[:MAX_RETRIEVED]))
        for query, ranking in zip(ids, ranked_index_ids, strict=True)
    ]
    text = _to_csv(RETRIEVAL_COLUMNS, rows)
    predictions = _parse_predictions(text, RETRIEVAL_COLUMNS, path, _parse_retrieval)
    _check_coverage(path, predictions, list(expected_ids) if expected_ids is not None else ids)
    if index_ids is not None:
        _check_known_images(path, predictions, index_ids)
    _write(path, text)


def _to_csv(header: Sequence[str], rows: Iterable[tuple[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _write(path: str, text: str) -> None:
    from landmarks.io_utils import write_text_atomic

    write_text_atomic(path, text)
