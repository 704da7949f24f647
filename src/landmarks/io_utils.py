"""Small file helpers that work on local paths and gs:// alike (through tf.io.gfile when needed),
and a zip extraction that keeps members inside their folder.

Writes go to a temporary name beside the target and are renamed when complete, so a killed
process never leaves a half-written file under the final name.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# errno values of a write the disk or the mount refused (not of a bad path or a missing file)
WRITE_REFUSED = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


def _is_remote(path: str) -> bool:
    return "://" in path


def read_text(path: str) -> str:
    """Whole file as UTF-8 text, without a leading byte-order mark (as spreadsheet programs on
    Windows write one). FileNotFoundError when it does not exist; DataError naming the path for
    a folder or a file that is not UTF-8 text (a binary file given by mistake)."""
    from landmarks.errors import DataError

    if _is_remote(path):
        import tensorflow as tf

        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(path)
        if tf.io.gfile.isdir(path):
            raise DataError(f"{path}: is a folder, not a file")
        with tf.io.gfile.GFile(path, "rb") as handle:
            data = handle.read()
    else:
        if os.path.isdir(path):
            raise DataError(f"{path}: is a folder, not a file")
        with open(path, "rb") as handle:
            data = handle.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path}: not a UTF-8 text file (byte {error.start} is 0x{data[error.start]:02x}); "
            "is it the right file?"
        ) from error


def read_json_object(path: str, advice: str) -> dict:
    """A JSON object file (a build's manifest, mini-landmarks.json...); FileNotFoundError when
    absent, DataError naming it and `advice` when it is cut off, not JSON, or not an object."""
    import json

    from landmarks.errors import DataError

    text = read_text(path)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(
            f"{path}: not valid JSON, cut off or damaged ({error.msg} at line {error.lineno}); "
            f"{advice}"
        ) from error
    if not isinstance(value, dict):
        raise DataError(f"{path}: expected a JSON object, got {json.dumps(value)[:40]}; {advice}")
    return value


def read_bytes(path: str) -> bytes:
    """Whole file as bytes; FileNotFoundError when it does not exist."""
    if _is_remote(path):
        import tensorflow as tf

        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(path)
        with tf.io.gfile.GFile(path, "rb") as handle:
            return handle.read()
    with open(path, "rb") as handle:
        return handle.read()


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    if _is_remote(path):
        import tensorflow as tf

        with tf.io.gfile.GFile(tmp, "wb") as handle:
            handle.write(data)
        tf.io.gfile.rename(tmp, path, overwrite=True)
        return
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text_atomic(path: str, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


@contextmanager
def write_refusals_reported(target: str, advice: str = "") -> Iterator[None]:
    """Inside the block, a write that the file system refuses (full disk, quota, read-only
    mount, no permission: WRITE_REFUSED, or TensorFlow's ResourceExhausted / PermissionDenied
    for its own file writes) becomes one DataError: "`target`: cannot write (reason)" and
    `advice`. Callers write to temporary names, so nothing is left half-written under a final
    name; other errors pass through unchanged."""
    from landmarks.errors import DataError

    try:
        yield
    except Exception as error:
        reason = _refusal(error)
        if reason is None:
            raise
        raise DataError(f"{target}: cannot write ({reason}){advice}") from error


def _refusal(error: Exception) -> str | None:
    """Why the file system refused a write (its strerror), or None when `error` is not that."""
    if isinstance(error, OSError) and error.errno in WRITE_REFUSED:
        return error.strerror or os.strerror(error.errno)
    tf = sys.modules.get("tensorflow")  # only TensorFlow's own writes raise its errors
    refused = (tf.errors.ResourceExhaustedError, tf.errors.PermissionDeniedError) if tf else ()
    if isinstance(error, refused):
        return error.message.rsplit("; ", 1)[-1] or type(error).__name__
    return None


def check_writable_folder(path: str, what: str) -> None:
    """DataError naming `what` (e.g. "--out") unless `path` is, or can be made, a folder this
    process can write: not a file, not under a file, on a writable file system. The check
    creates the folder and writes and removes a probe file in it, so read-only mounts (Kaggle's
    /kaggle/input) are caught even for root. gs:// and other remote paths are not checked
    (their writes fail with clear errors of their own)."""
    problem = _folder_problem(path)
    if problem:
        from landmarks.errors import DataError

        raise DataError(f"{what} {path}: {problem}")


def check_writable_file(path: str, what: str) -> None:
    """DataError naming `what` and `path` unless a file can be written at `path`: it is not a
    folder and its folder passes check_writable_folder. Nothing is written at `path` itself."""
    from landmarks.errors import DataError

    if _is_remote(path):
        return
    if os.path.isdir(path):
        raise DataError(f"{what} {path}: is a folder; give a file name, e.g. {path}/submission.csv")
    problem = _folder_problem(os.path.dirname(os.path.abspath(path)))
    if problem:
        raise DataError(f"{what} {path}: {problem}")


def _folder_problem(path: str) -> str | None:
    """Why no file can be written in the folder `path` (made if missing), or None."""
    if _is_remote(path):
        return None
    if os.path.isfile(path):
        return "is a file, not a folder"
    ancestor = os.path.abspath(path)
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        return f"{ancestor} is a file, so no folder can be made under it"
    probe = os.path.join(path, f".write-probe-{uuid.uuid4().hex[:8]}")
    try:
        os.makedirs(path, exist_ok=True)
        with open(probe, "wb"):
            pass
        os.remove(probe)
    except OSError as error:
        return f"cannot write there ({error.strerror})"
    return None


def extract_zip(archive: Path, out_dir: Path) -> None:
    """Extract `archive` into `out_dir`, refusing members that would land outside it."""
    from landmarks.errors import DataError

    root = out_dir.resolve()
    try:
        with zipfile.ZipFile(archive) as handle:
            for member in handle.infolist():
                target = (root / member.filename).resolve()
                if target != root and root not in target.parents:
                    raise DataError(
                        f"{archive}: member {member.filename!r} points outside {out_dir}"
                    )
                if member.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_name(target.name + ".partial")
                with handle.open(member) as source, open(partial, "wb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)
                os.replace(partial, target)
    except zipfile.BadZipFile as error:
        raise DataError(f"{archive}: not a valid zip archive ({error})") from error
