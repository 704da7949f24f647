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

Verbose mode (`python -m landmarks --verbose ...`, i.e. LANDMARKS_VERBOSE=1, which worker
processes inherit) leaves TensorFlow's logging and Python's warnings as they are.
"""

from __future__ import annotations

import contextlib
import os
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
