"""Small file helpers that work on local paths and gs:// alike (through tf.io.gfile when needed).

Writes go to a temporary name beside the target and are renamed when complete, so a killed
process never leaves a half-written file under the final name.
"""

from __future__ import annotations

import os
import uuid


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
