"""Image tables: the (id, path, landmark_id) rows that the record writer turns into shards.

A table is a pandas DataFrame with columns `id` (str, unique), `path` (str, local or gs://) and
`landmark_id` (int64; -1 when the label is unknown, e.g. for test images). The GLDv2 folder
reader (landmarks.data.gldv2) is one source of tables; `read_image_table` reads any CSV, so that
other image competitions reuse the same writer.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pandas as pd

from landmarks.errors import DataError

UNKNOWN_LABEL = -1
INT64_MAX = int(np.iinfo(np.int64).max)  # 9223372036854775807
# Ids of the GLDv2 layout name a file and its a/b/c folders: one path component of these
# characters (GLDv2 ids are 16 hex digits). No separators, no dots, so no "..".
LAYOUT_ID = r"[A-Za-z0-9_-]+"
MAX_ROWS_NAMED = 5  # at most this many offending rows are quoted in an error message


def read_csv(path: str) -> pd.DataFrame:
    """A CSV with every column read as text (ids like "000123" keep their zeros)."""
    from landmarks.io_utils import read_text

    try:
        text = read_text(path)
    except FileNotFoundError as error:
        raise DataError(f"{path}: file not found") from error
    try:
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except pd.errors.ParserError as error:
        raise DataError(f"{path}: not a readable CSV: {error}") from error
    except pd.errors.EmptyDataError as error:
        raise DataError(f"{path}: empty file, expected a header row") from error


def require_columns(frame: pd.DataFrame, columns: list[str], source: str) -> None:
    """DataError naming the missing columns and the ones present."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {', '.join(missing)}; "
            f"found {', '.join(map(str, frame.columns)) or 'none'}"
        )


def integer_labels(values: pd.Series, column: str, source: str) -> np.ndarray:
    """int64 labels >= 0, or DataError naming the first rows (1-based, header = row 1) that are
    not integers, are negative (-1 is this pipeline's "no label": a negative landmark id would
    silently become a vote for "no landmark") or do not fit in int64."""
    text = values.astype(str).str.strip()
    valid = text.str.fullmatch(r"\+?\d+")
    if not valid.all():
        rows = [f"row {i + 2} ({text.iloc[i]!r})" for i in np.flatnonzero(~valid.to_numpy())]
        negative = text.str.fullmatch(r"-\d+")
        kind = "negative" if negative[~valid].all() else "not integers"
        raise DataError(
            f"{source}: column {column!r} must hold integer labels >= 0; {kind}: "
            f"{summarize(rows)} (map text or negative labels to integers >= 0 first)"
        )
    too_large = text.str.len() >= len(str(INT64_MAX))  # shorter values fit: no int() for them
    too_large[too_large] = text[too_large].map(lambda value: int(value) > INT64_MAX)
    if too_large.any():
        rows = [f"row {i + 2} ({text.iloc[i]!r})" for i in np.flatnonzero(too_large.to_numpy())]
        raise DataError(
            f"{source}: column {column!r}: labels larger than {INT64_MAX} (int64): {summarize(rows)}"
        )
    return text.astype(np.int64).to_numpy()


def check_unique_ids(ids: pd.Series, source: str, *, what: str = "ids") -> None:
    """DataError naming the repeated ids (or `what` the column holds) and their rows (1-based,
    header = row 1)."""
    repeated = ids[ids.duplicated(keep=False)]
    if len(repeated):
        groups = repeated.groupby(repeated, sort=False).groups
        named = [
            f"{key!r} at rows {', '.join(str(i + 2) for i in rows)}" for key, rows in groups.items()
        ]
        raise DataError(f"{source}: duplicate {what}: {summarize(named)}")


def check_ids(ids: pd.Series, source: str, *, pattern: str = r"[^/\\\x00-\x1f]+") -> None:
    """Ids must be non-empty, unique (they name the examples in records and submissions) and
    match `pattern` (default: no path separators or control characters; the GLDv2 layout
    passes LAYOUT_ID), naming the rows that do not."""
    empty = ids.str.strip() == ""
    if empty.any():
        rows = [f"row {i + 2}" for i in np.flatnonzero(empty.to_numpy())]
        raise DataError(f"{source}: empty id at {summarize(rows)}")
    bad = ~ids.str.fullmatch(pattern) | ids.isin([".", ".."])
    if bad.any():
        rows = [f"row {i + 2} ({ids.iloc[i]!r})" for i in np.flatnonzero(bad.to_numpy())]
        allowed = (
            "letters, digits, '_' and '-' (GLDv2 ids are 16 hex digits)"
            if pattern == LAYOUT_ID
            else "no '/', '\\' or control characters"
        )
        raise DataError(f"{source}: ids are file names: {allowed}; not: {summarize(rows)}")
    check_unique_ids(ids, source)


def check_inside(paths: pd.Series, root: str, source: str) -> None:
    """DataError naming the rows whose path, once '..' and '.' are resolved, is not inside the
    folder `root` (local or gs://; symbolic links are not followed: the rule is about what a
    table may name, not about how the folder is built)."""
    inside = paths.map(lambda path: _is_inside(path, root))
    if not inside.all():
        rows = [f"row {i + 2} ({paths.iloc[i]!r})" for i in np.flatnonzero(~inside.to_numpy())]
        raise DataError(
            f"{source}: image paths must stay inside {root} (pass --image-root to allow another "
            f"folder); outside: {summarize(rows)}"
        )


def read_image_table(
    csv_path: str,
    *,
    image_column: str,
    label_column: str | None = None,
    id_column: str | None = None,
    image_root: str | None = None,
) -> pd.DataFrame:
    """Table from any CSV listing images.

    Args:
        csv_path: the CSV (local or gs://).
        image_column: column of image paths, relative to `image_root` (or absolute); every
            path must stay inside `image_root` (give "/" to allow any local path).
        label_column: column of integer labels; None for unlabelled images (landmark_id -1).
        id_column: column of unique example ids; None = the image file name without extension.
        image_root: folder that relative paths start from; None = the CSV's folder.
    Returns:
        DataFrame(id, path, landmark_id) in the CSV's row order.
    """
    frame = read_csv(csv_path)
    columns = [image_column] + [c for c in (label_column, id_column) if c]
    require_columns(frame, columns, csv_path)
    root = image_root if image_root is not None else os.path.dirname(csv_path) or "."
    paths = frame[image_column].astype(str)
    paths = paths.map(lambda p: p if os.path.isabs(p) or "://" in p else _join(root, p))
    check_inside(paths, root, csv_path)
    if id_column:
        ids = frame[id_column].astype(str)
    else:
        ids = frame[image_column].map(lambda p: os.path.splitext(os.path.basename(p))[0])
    check_ids(ids, csv_path)
    if label_column:
        labels = integer_labels(frame[label_column], label_column, csv_path)
    else:
        labels = np.full(len(frame), UNKNOWN_LABEL, np.int64)
    return pd.DataFrame({"id": ids.to_numpy(), "path": paths.to_numpy(), "landmark_id": labels})


def _is_inside(path: str, root: str) -> bool:
    """Whether `path` lies in the folder `root` once both are normalised (lexically)."""
    import posixpath

    if "://" not in root and "://" not in path:
        base, target = os.path.abspath(root), os.path.abspath(path)
        return os.path.commonpath([base, target]) == base
    scheme = root.partition("://")[0] + "://"
    if not path.startswith(scheme):
        return False
    base = posixpath.normpath("/" + root[len(scheme) :])
    target = posixpath.normpath("/" + path[len(scheme) :])
    return posixpath.commonpath([base, target]) == base


def _join(root: str, relative: str) -> str:
    return f"{root.rstrip('/')}/{relative}" if "://" in root else os.path.join(root, relative)


def summarize(items: list[str]) -> str:
    """Up to MAX_ROWS_NAMED items joined by "; ", then how many more there are."""
    shown = "; ".join(items[:MAX_ROWS_NAMED])
    more = len(items) - MAX_ROWS_NAMED
    return f"{shown}; and {more} more" if more > 0 else shown
