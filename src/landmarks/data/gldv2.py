"""The Google Landmarks v2 folder layout: image tables, label maps, stratified holdout.

Layout: `train.csv` (id,landmark_id) with each image at `train/<id[0]>/<id[1]>/<id[2]>/<id>.jpg`;
`test/` and `index/` hold images in the same a/b/c sub-folders, without a CSV. Tables have the
columns id (str), path (str) and landmark_id (int64, -1 = unknown); see landmarks.data.tables.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from landmarks.data import tables
from landmarks.errors import ConfigError, DataError

SPLITS = ("train", "test", "index")


def image_path(data_dir: str, split: str, image_id: str) -> str:
    """`<data_dir>/<split>/<a>/<b>/<c>/<id>.jpg` for an id of at least three characters."""
    return "/".join(
        [data_dir.rstrip("/"), split, image_id[0], image_id[1], image_id[2], f"{image_id}.jpg"]
    )


def read_train_table(data_dir: str) -> pd.DataFrame:
    """DataFrame(id, path, landmark_id) of `<data_dir>/train.csv`, in file order.

    Raises DataError for a missing file or column, a landmark_id that is not an integer >= 0
    (or overflows int64), an id that is not one path component of letters, digits, '_' or '-'
    (e.g. "../../outside/secret"), shorter than three characters (it has no a/b/c folder) or
    repeated, naming the rows.
    """
    csv_path = "/".join([data_dir.rstrip("/"), "train.csv"])
    frame = tables.read_csv(csv_path)
    tables.require_columns(frame, ["id", "landmark_id"], csv_path)
    ids = frame["id"].astype(str).str.strip()
    tables.check_ids(ids, csv_path, pattern=tables.LAYOUT_ID)
    short = np.flatnonzero((ids.str.len() < 3).to_numpy())
    if len(short):
        rows = [f"row {i + 2} ({ids.iloc[i]!r})" for i in short]
        raise DataError(
            f"{csv_path}: ids need at least 3 characters for the a/b/c folders: {tables.summarize(rows)}"
        )
    labels = tables.integer_labels(frame["landmark_id"], "landmark_id", csv_path)
    paths = pd.Series([image_path(data_dir, "train", i) for i in ids])
    tables.check_inside(paths, data_dir, csv_path)  # holds by the id rule; kept as a guard
    return pd.DataFrame({"id": ids.to_numpy(), "path": paths.to_numpy(), "landmark_id": labels})


def list_split_images(data_dir: str, split: str) -> pd.DataFrame:
    """DataFrame(id, path, landmark_id=-1) of every .jpg under `<data_dir>/<split>/`, sorted by id.

    For split "train" this reads train.csv instead (the labels live there).
    """
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if split == "train":
        return read_train_table(data_dir)
    folder = "/".join([data_dir.rstrip("/"), split])
    paths = _walk_jpegs(folder)
    if not paths:
        raise DataError(f"{folder}: no .jpg images found")
    ids = pd.Series([os.path.splitext(os.path.basename(p))[0] for p in paths])
    repeated = ids[ids.duplicated(keep=False)]
    if len(repeated):
        named = [
            f"{i!r} at {p}"
            for i, p in zip(repeated, np.asarray(paths)[repeated.index], strict=True)
        ]
        raise DataError(f"{folder}: duplicate image ids: {tables.summarize(named)}")
    table = pd.DataFrame({"id": ids, "path": paths, "landmark_id": tables.UNKNOWN_LABEL})
    return table.sort_values("id", kind="stable").reset_index(drop=True)


def _walk_jpegs(folder: str) -> list[str]:
    if "://" in folder:
        import tensorflow as tf

        if not tf.io.gfile.isdir(folder):
            raise DataError(f"{folder}: folder not found")
        walker = tf.io.gfile.walk(folder)
        join = lambda root, name: f"{root.rstrip('/')}/{name}"  # noqa: E731
    else:
        if not os.path.isdir(folder):
            raise DataError(f"{folder}: folder not found")
        walker = os.walk(folder)
        join = os.path.join
    found = []
    for root, _dirs, files in walker:
        found.extend(join(root, f) for f in files if f.lower().endswith((".jpg", ".jpeg")))
    return found


def build_label_map(landmark_ids: np.ndarray, min_images: int = 1) -> pd.DataFrame:
    """Contiguous labels for the classes with at least `min_images` images.

    Args:
        landmark_ids: int [N], one entry per image.
        min_images: classes with fewer images get no label.
    Returns:
        DataFrame(landmark_id, label, count) sorted by landmark_id, label = 0..C-1,
        count = images of the class in `landmark_ids`.
    """
    if min_images < 1:
        raise ConfigError(f"min_images must be >= 1, got {min_images}")
    classes, counts = np.unique(np.asarray(landmark_ids, np.int64), return_counts=True)
    keep = counts >= min_images
    classes, counts = classes[keep], counts[keep]
    return pd.DataFrame(
        {
            "landmark_id": classes,
            "label": np.arange(len(classes), dtype=np.int64),
            "count": counts.astype(np.int64),
        }
    )


def stratified_holdout(
    table: pd.DataFrame, fraction: float, seed: int = 0, *, label_column: str = "landmark_id"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split `table` per class into (train, holdout).

    Each class with n images gives floor(n * fraction) randomly chosen images (seeded) to the
    holdout; a class where that is 0 (too few images) stays whole in train, so every holdout
    class also has training images. Row order inside each part follows `table`.
    """
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"holdout fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0 or table.empty:
        return table, table.iloc[:0]
    rng = np.random.default_rng(seed)
    labels = table[label_column].to_numpy()
    held = np.zeros(len(table), bool)
    order = np.argsort(labels, kind="stable")
    starts = np.flatnonzero(np.r_[True, labels[order][1:] != labels[order][:-1]])
    for start, stop in zip(starts, np.r_[starts[1:], len(order)], strict=True):
        rows = order[start:stop]
        n_hold = int(np.floor(len(rows) * fraction))
        if n_hold:
            held[rng.choice(rows, size=n_hold, replace=False)] = True
    return table[~held], table[held]
