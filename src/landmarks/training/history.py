"""history.csv of a run folder: its columns and its one reader, which validates what it reads.

One row per checkpointed epoch (landmarks.training.callbacks.HistoryCSV writes it):
    epoch (1-based), step, loss, learning_rate, backbone_learning_rate, val_gap (may be empty).
"""

from __future__ import annotations

import csv
import io

from landmarks.errors import DataError

HISTORY_COLUMNS = ("epoch", "step", "loss", "learning_rate", "backbone_learning_rate", "val_gap")


def read_history(path: str) -> list[dict]:
    """Rows of the history.csv at `path` (local or gs://), as parse_history gives them; []
    when there is none."""
    from landmarks.io_utils import read_text

    try:
        text = read_text(path)
    except FileNotFoundError:
        return []
    return parse_history(text, path)


def parse_history(text: str, path: str) -> list[dict]:
    """The rows of a history.csv `text` (string values), checked: DataError naming `path` and
    the line when an epoch is not a whole number >= 1 or a val_gap is neither empty nor a
    number, or when the CSV itself cannot be read."""
    try:
        rows = list(csv.DictReader(io.StringIO(text)))
    except csv.Error as error:
        raise DataError(f"{path}: not a history table ({error})") from error
    for line, row in enumerate(rows, start=2):
        epoch, val_gap = row.get("epoch"), row.get("val_gap")
        if not (isinstance(epoch, str) and epoch.strip().isdigit() and int(epoch) >= 1):
            raise DataError(f"{path}: line {line}: epoch {epoch!r} is not a whole number >= 1")
        if val_gap and not _is_number(val_gap):
            raise DataError(f"{path}: line {line}: val_gap {val_gap!r} is not a number")
    return rows


def last_epoch(rows: list[dict]) -> int:
    """The last epoch of parse_history rows (0 when there are none)."""
    return max((int(row["epoch"]) for row in rows), default=0)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
