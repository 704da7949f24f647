"""Small file helpers that work on local paths and gs:// alike (through tf.io.gfile when needed),
and a zip extraction that keeps members inside their folder.

Writes go to a temporary name beside the target and are renamed when complete, so a killed
process never leaves a half-written file under the final name.
"""

from __future__ import annotations

import os
import shutil
import uuid
import zipfile
from pathlib import Path

from landmarks.errors import DataError


def _is_remote(path: str) -> bool:
    return "://" in path


def read_text(path: str) -> str:
    """Whole file as text; FileNotFoundError when it does not exist."""
    if _is_remote(path):
        import tensorflow as tf

        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(path)
        with tf.io.gfile.GFile(path, "r") as handle:
            return handle.read()
    with open(path, encoding="utf-8") as handle:
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


def extract_zip(archive: Path, out_dir: Path) -> None:
    """Extract `archive` into `out_dir`, refusing members that would land outside it."""
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
