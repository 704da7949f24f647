"""Continue a run in a new session from a copy of its folder (`resume_from`, RESUME_FROM in
notebook 02).

A Kaggle session ends after 9 hours (TPU) or 12 hours (GPU), and the next one starts with an
empty /kaggle/working; the previous session's run folder comes back only as an attached dataset,
read-only under /kaggle/input. `continue_from(source, run_dir)` copies that folder's files into
the working run folder, so that `train` resumes its latest checkpoint there (weights, optimizer
state, step, finished epochs) and writes the next ones beside it.

It copies files, whatever the checkpoint format: every file below `source` except the old
session's run lock, a dataset's dataset-metadata.json and the inference cache embeddings/. A
top-level `<name>.zip` (a sub-folder uploaded with `kaggle publish --dir-mode zip`, should the
dataset keep it zipped) is extracted to `<name>/`. Files are written with this process's
permissions (a read-only source gives writable copies) into a staging folder inside run_dir,
then moved into place, checkpoints/ last: a copy killed half-way leaves no checkpoints, so the
next start copies again.

When run_dir already holds checkpoints (the same session, run again), it is kept and the source
is not read; if the source has more epochs in its history.csv, that is an error naming both,
rather than training on from the older state.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from landmarks.errors import ConfigError
from landmarks.io_utils import extract_zip, write_refusals_reported
from landmarks.training.history import last_epoch, read_history

CHECKPOINTS = "checkpoints"
SKIPPED_FILES = (".run.lock", "dataset-metadata.json")
SKIPPED_FOLDERS = ("embeddings",)
STAGING_PREFIX = ".resume-"


def continue_from(source: str, run_dir: str, *, log: Callable[[str], None] = print) -> str:
    """Copy the run folder `source` (local or gs://) into the local `run_dir` unless run_dir
    already holds checkpoints (see the module docstring); returns a one-line account."""
    if "://" in run_dir:
        raise ConfigError(
            f"resume_from: the run folder {run_dir} is remote and outlives the session; resume "
            "it directly (same output_dir and run_name) instead of copying a run into it"
        )
    files = _list_files(source)
    if "config.yaml" not in files:
        raise ConfigError(
            f"resume_from: {source} is not a run folder (no config.yaml); attach the folder that "
            "`train` wrote (output_dir/run_name)"
        )
    there = _epochs(_join(source, "history.csv")) if "history.csv" in files else 0
    _remove_staging(run_dir)
    if _has_checkpoints(run_dir):
        here = _epochs(os.path.join(run_dir, "history.csv"))
        if there > here:
            raise ConfigError(
                f"resume_from: {run_dir} already holds a run at epoch {here}, behind {source} at "
                f"epoch {there}; remove {run_dir} to continue from {source}, or clear resume_from"
            )
        account = f"{run_dir} already holds checkpoints (epoch {here}); {source} not copied"
        log(account)
        return account
    staging = os.path.join(run_dir, f"{STAGING_PREFIX}{uuid.uuid4().hex[:8]}")
    try:
        with write_refusals_reported(run_dir, f"; nothing of {source} was copied in"):
            _stage(source, files, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    entries = sorted(os.listdir(staging), key=lambda name: name == CHECKPOINTS)
    for name in entries:  # checkpoints/ last: its arrival makes the copy resumable
        destination = os.path.join(run_dir, name)
        if os.path.isdir(destination) and not os.path.islink(destination):
            shutil.rmtree(destination)
        os.replace(os.path.join(staging, name), destination)
    os.rmdir(staging)
    account = f"copied {len(files)} files of {source} into {run_dir} (epoch {there} in history.csv)"
    log(account)
    return account


def _stage(source: str, files: list[str], staging: str) -> None:
    """Copy `files` of `source` into the folder `staging`, extracting top-level .zip files."""
    for relative in files:
        target = os.path.join(staging, relative)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        _copy(_join(source, relative), target)
    for archive in [r for r in files if "/" not in r and r.endswith(".zip")]:
        extract_zip(Path(staging, archive), Path(staging, archive[: -len(".zip")]))
        os.remove(os.path.join(staging, archive))


def _list_files(source: str) -> list[str]:
    """Paths below `source`, relative and '/'-separated, less the skipped ones; ConfigError
    when `source` is not a folder."""
    if "://" in source:
        import tensorflow as tf

        if not tf.io.gfile.isdir(source):
            raise ConfigError(f"resume_from: {source} not found (or not a folder)")
        walked = ((folder, names) for folder, _, names in tf.io.gfile.walk(source))
    else:
        if not os.path.isdir(source):
            raise ConfigError(f"resume_from: {source} not found (or not a folder)")
        walked = ((folder, names) for folder, _, names in os.walk(source))
    root = source.rstrip("/")
    found = []
    for folder, names in walked:
        relative_folder = folder.rstrip("/")[len(root) :].strip("/")
        if relative_folder.split("/")[0] in SKIPPED_FOLDERS:
            continue
        for name in names:
            if not relative_folder and name in SKIPPED_FILES:
                continue
            found.append(f"{relative_folder}/{name}" if relative_folder else name)
    return sorted(found)


def _join(source: str, relative: str) -> str:
    return f"{source.rstrip('/')}/{relative}"


def _copy(path: str, target: str) -> None:
    """Bytes only (no permissions): copies of read-only files are writable."""
    if "://" in path:
        import tensorflow as tf

        tf.io.gfile.copy(path, target, overwrite=True)
    else:
        shutil.copyfile(path, target)


def _epochs(history_path: str) -> int:
    """The last epoch in the history.csv at `history_path` (0 when there is none); DataError
    naming the file and line for a row that is not a history row."""
    return last_epoch(read_history(history_path))


def _has_checkpoints(run_dir: str) -> bool:
    folder = os.path.join(run_dir, CHECKPOINTS)
    return os.path.isdir(folder) and any(os.scandir(folder))


def _remove_staging(run_dir: str) -> None:
    """Staging folders left by a copy that was killed."""
    if os.path.isdir(run_dir):
        for entry in os.scandir(run_dir):
            if entry.name.startswith(STAGING_PREFIX) and entry.is_dir():
                shutil.rmtree(entry.path)
