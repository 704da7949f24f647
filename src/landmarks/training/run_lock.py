"""One training process per run folder: a lock held from the first check to the last write.

Two `train` runs into one folder at once would both write config.yaml, history.csv and
checkpoints, and both "finish". `run_folder_lock(run_dir)` makes the second stop at once with an
error naming the folder and the holder (host, pid, start time, command line).

A killed run must not leave the folder locked forever:
  local folders   an exclusive `flock` on run_dir/.run.lock: the kernel releases it when the
                  holder dies, SIGKILL included, so a lock is never stale.
  gs:// folders   (no flock there) the lock file names its holder and a heartbeat the holder
                  rewrites every HEARTBEAT_S seconds; it is stale, and taken over, when the
                  holder was on this host and its process is gone, or when its heartbeat is
                  older than STALE_AFTER_S. The file is removed when the run ends.
The lock file's content is informative only; for local folders it stays behind, unlocked.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator

from landmarks.errors import DataError, LandmarksError

LOCK_NAME = ".run.lock"
HEARTBEAT_S = 60.0
STALE_AFTER_S = 600.0
METHODS = ("auto", "flock", "heartbeat")


class RunFolderBusy(LandmarksError):
    """The run folder is held by another training run."""


@contextlib.contextmanager
def run_folder_lock(run_dir: str, *, method: str = "auto") -> Iterator[dict]:
    """Hold run_dir's lock for the body; RunFolderBusy when another live run holds it,
    DataError naming run_dir when the folder or its lock file cannot be made.

    method: "flock" (local folders), "heartbeat" (any folder, what gs:// uses) or "auto".
    Yields the holder record written to the lock file.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "auto":
        method = "heartbeat" if "://" in run_dir else "flock"
    holder = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(sys.argv)[:300],
        "token": uuid.uuid4().hex,
    }
    locker = _flock if method == "flock" else _heartbeat_lock
    with locker(run_dir, holder):
        yield holder


def describe(holder: dict) -> str:
    """'pid 123 on host h, started 2026-12-01 10:00:00: python -m landmarks train ...'."""
    if not holder:
        return "holder unknown"
    return (
        f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started "
        f"{holder.get('started', '?')}: {holder.get('command', '?')}"
    )


def _busy(run_dir: str, holder: dict) -> RunFolderBusy:
    return RunFolderBusy(
        f"run_name: {run_dir} is in use by another training run ({describe(holder)}); wait for "
        "it to finish or stop it, or choose another run_name"
    )


@contextlib.contextmanager
def _flock(run_dir: str, holder: dict) -> Iterator[None]:
    import fcntl

    path = os.path.join(run_dir, LOCK_NAME)
    try:
        os.makedirs(run_dir, exist_ok=True)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:  # a read-only mount, a full disk, a name too long, ...
        if error.errno is None:
            raise
        raise DataError(
            f"{run_dir}: cannot be the run folder ({os.strerror(error.errno)}); set output_dir "
            "and run_name to a writable place"
        ) from error
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(run_dir, _read_holder(path)) from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, json.dumps(holder).encode("utf-8"))
        os.fsync(descriptor)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


def _read_holder(path: str) -> dict:
    from landmarks.io_utils import read_text

    try:
        value = json.loads(read_text(path))
    except (FileNotFoundError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def is_stale(holder: dict, *, now: float | None = None) -> bool:
    """Whether a heartbeat lock's holder is gone: its process ended on this host, or its
    heartbeat (seconds since the epoch) is older than STALE_AFTER_S."""
    now = time.time() if now is None else now
    if holder.get("host") == socket.gethostname() and not _process_alive(holder.get("pid")):
        return True
    return now - float(holder.get("heartbeat", 0.0)) > STALE_AFTER_S


def _process_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


@contextlib.contextmanager
def _heartbeat_lock(run_dir: str, holder: dict) -> Iterator[None]:
    import tensorflow as tf

    from landmarks.io_utils import write_text_atomic

    tf.io.gfile.makedirs(run_dir)
    path = f"{run_dir.rstrip('/')}/{LOCK_NAME}"
    current = _read_holder(path)
    if current and not is_stale(current):
        raise _busy(run_dir, current)

    def beat() -> None:
        write_text_atomic(path, json.dumps({**holder, "heartbeat": time.time()}))

    beat()
    if _read_holder(path).get("token") != holder["token"]:  # another run wrote at the same time
        raise _busy(run_dir, _read_holder(path))
    stop = threading.Event()

    def keep_beating() -> None:
        while not stop.wait(HEARTBEAT_S):
            beat()

    thread = threading.Thread(target=keep_beating, name="run-lock-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        if _read_holder(path).get("token") == holder["token"]:
            tf.io.gfile.remove(path)
