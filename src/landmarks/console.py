"""What the console shows: the project's own lines and progress bars, not library start-up noise.

While TensorFlow loads and probes its devices, its C++ runtime writes straight to the process's
stderr (file descriptor 2): absl's "All log messages before absl::InitializeLog() is called are
written to STDERR", "Could not find cuda drivers on your machine", "failed call to cuInit" on a
machine without a GPU, CPU-feature and oneDNN notices. TF_CPP_MIN_LOG_LEVEL does not reach the
lines logged before absl is initialised, so `import_tensorflow()` imports TensorFlow and lists
its devices with descriptor 2 pointed at /dev/null, then restores it. An import that fails
still raises its exception (exceptions are raised, not printed); TensorFlow not installed at
all (Colab's TPU runtime has none) is a LandmarksError naming what to install for the backend. Every process that imports
TensorFlow first through this function stays quiet: the CLI's own, and the forkserver of the
TFRecord writers (landmarks.data.shard_writer).

Later, while a model compiles and trains, XLA's C++ runtime still writes a few lines of its own
that TF_CPP_MIN_LOG_LEVEL=2 lets through (JAX's and TensorFlow's XLA alike): the slow-compile
alarm ("Very slow compile? If you want to file a bug..." framed by lines of asterisks, logged
at ERROR level by slow_operation_alarm.cc when a compilation takes minutes, which it does on a
CPU) and "Compiled cluster using XLA! This line is logged at most once..." (the jit-compiled
augmentation). `native_noise_filtered()`, around the train/infer/demo commands, sends
descriptor 2 through a small filter process that drops those lines (NATIVE_NOISE) and passes
everything else through as it comes, partial lines (progress bars) included. A process, not a
thread: it drains the pipe to the end even when this one aborts, so a fatal error's last lines
still show.

Verbose mode (`python -m landmarks --verbose ...`, i.e. LANDMARKS_VERBOSE=1, which worker
processes inherit) leaves TensorFlow's logging, XLA's lines and Python's warnings as they are.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

from landmarks.backend import tensorflow_requirement
from landmarks.errors import LandmarksError

VERBOSE_ENV = "LANDMARKS_VERBOSE"


def set_verbose(verbose: bool) -> None:
    """Choose verbose or quiet mode for this process and the processes it starts. Quiet mode
    also keeps TensorFlow's later C++ logging to warnings and errors (TF_CPP_MIN_LOG_LEVEL 2,
    unless set already); verbose mode shows all of it (level 0)."""
    os.environ[VERBOSE_ENV] = "1" if verbose else "0"
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def is_verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"


def import_tensorflow():
    """`import tensorflow`, with its C++ start-up lines silenced unless verbose; returns it.

    LandmarksError (one line: the package to install) when TensorFlow is not installed."""
    try:
        if is_verbose() or "tensorflow" in sys.modules:
            import tensorflow as tf

            return tf
        with _stderr_to_devnull():
            import tensorflow as tf

            tf.config.list_physical_devices()  # the CUDA probe logs here, on first use
    except ModuleNotFoundError as error:
        if error.name != "tensorflow":
            raise
        backend = os.environ.get("KERAS_BACKEND") or "tensorflow"
        raise LandmarksError(
            f"TensorFlow is not installed and this command needs it (tf.data reads the "
            f"records, also on {backend}): pip install '{tensorflow_requirement(backend)}'"
        ) from None
    return tf


@contextlib.contextmanager
def _stderr_to_devnull():
    """Point file descriptor 2 (C++ and Python stderr alike) at /dev/null for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# Lines of XLA's runtime that quiet mode drops (see the module docstring): the slow-compile
# alarm's log lines, its message and its frame of asterisks; TensorFlow's once-per-process note.
NATIVE_NOISE = rb"slow_operation_alarm|Very slow compile\?|^\*{8,}\s*$|Compiled cluster using XLA!"
# The filter process: stdin (this process's descriptor 2) to stdout (the real stderr), line
# by line without the NATIVE_NOISE lines; a partial line (a progress bar's "\r" update) goes
# through when nothing more arrives within 0.1 s.
_FILTER = r"""
import os, re, select, sys
noise = re.compile(sys.argv[1].encode(), re.M)
pending = b""
def emit(data):
    os.write(1, b"".join(p for p in re.split(rb"(?<=[\r\n])", data) if p and not noise.search(p)))
while True:
    ready = select.select([0], [], [], 0.1 if pending else None)[0]
    if not ready:
        emit(pending); pending = b""; continue
    chunk = os.read(0, 65536)
    if not chunk:
        break
    pending += chunk
    cut = max(pending.rfind(b"\n"), pending.rfind(b"\r")) + 1
    emit(pending[:cut]); pending = pending[cut:]
emit(pending)
"""


@contextlib.contextmanager
def native_noise_filtered():
    """Descriptor 2 through the NATIVE_NOISE filter for the block (quiet mode only; verbose
    mode, or a descriptor 2 that cannot be duplicated, runs the block unfiltered)."""
    if is_verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", _FILTER, NATIVE_NOISE.decode()],
            stdin=subprocess.PIPE,
            stdout=saved,
            stderr=saved,
        )
    except OSError:
        os.close(saved)
        yield
        return
    os.dup2(process.stdin.fileno(), 2)
    process.stdin.close()  # descriptor 2 (and the processes started below) hold the pipe now
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)  # longer only while a worker still holds the pipe
