"""Where a notebook runs (Kaggle, Colab or a local machine) and how it reads attached data.

Notebooks call `detect_environment()` once, after their parameters cell, and pass their
input paths through `Environment.input_path`: on a Kaggle TPU a folder under /kaggle/input/
becomes the GCS path of that dataset (`kaggle_datasets.KaggleDatasets`, when the module is
there), which the TPU can read directly; everywhere else the path is kept and checked to exist.
Detection reads environment variables and device files only: it imports neither TensorFlow
nor the Kaggle packages.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

from landmarks.errors import DataError

KAGGLE_INPUT = "/kaggle/input"
KAGGLE_WORKING = "/kaggle/working"


@dataclass(frozen=True)
class Environment:
    """The platform ("kaggle", "colab" or "local"), its accelerator ("tpu", "gpu" or "cpu"),
    and its writable working folder."""

    platform: str
    accelerator: str
    working_dir: str

    def input_path(self, path: str) -> str:
        """`path`, readable from this machine's accelerator.

        On a Kaggle TPU, /kaggle/input/<dataset>/rest becomes gs://<bucket>/rest when
        KaggleDatasets knows the dataset; gs:// paths are kept as they are; a local path that
        does not exist raises DataError naming it and the platform.
        """
        if "://" in path:
            return path
        if self.platform == "kaggle" and self.accelerator == "tpu":
            gcs = kaggle_gcs_path(path)
            if gcs:
                return gcs
        if not os.path.exists(path):
            raise DataError(
                f"{path}: not found on this {self.platform} machine; attach the dataset "
                "or set the path in the notebook's parameters cell"
            )
        return path

    def __str__(self) -> str:
        return f"{self.platform} ({self.accelerator}), working folder {self.working_dir}"


def detect_environment(environ: dict | None = None) -> Environment:
    """The Environment this process runs in, from environment variables and device files."""
    env = os.environ if environ is None else environ
    if env.get("KAGGLE_KERNEL_RUN_TYPE") or env.get("KAGGLE_URL_BASE"):
        platform, working = "kaggle", KAGGLE_WORKING
    elif env.get("COLAB_RELEASE_TAG") or env.get("COLAB_GPU") is not None:
        platform, working = "colab", "/content"
    else:
        platform, working = "local", "output"
    return Environment(platform, _accelerator(env), working)


def kaggle_gcs_path(path: str) -> str | None:
    """The gs:// path of /kaggle/input/<dataset>/rest through KaggleDatasets, or None when the
    path is not under /kaggle/input, the module is missing, or the dataset is unknown to it."""
    prefix = KAGGLE_INPUT + "/"
    if not path.startswith(prefix) or importlib.util.find_spec("kaggle_datasets") is None:
        return None
    dataset, _, rest = path[len(prefix) :].partition("/")
    from kaggle_datasets import KaggleDatasets

    try:
        bucket = KaggleDatasets().get_gcs_path(dataset)
    except Exception:  # a private dataset, or a TPU VM that reads the mounted files
        return None
    return f"{bucket.rstrip('/')}/{rest}" if rest else bucket


def _accelerator(env) -> str:
    """ "tpu" (a TPU address or a TPU VM's device files), "gpu" (an NVIDIA device) or "cpu"."""
    if any(env.get(key) for key in ("TPU_NAME", "COLAB_TPU_ADDR", "TPU_ACCELERATOR_TYPE")):
        return "tpu"
    if os.path.exists("/dev/accel0") or os.path.exists("/dev/vfio/0"):
        return "tpu"
    if os.path.exists("/dev/nvidia0") and env.get("CUDA_VISIBLE_DEVICES", "0") not in ("", "-1"):
        return "gpu"
    return "cpu"
