"""Where a notebook runs (Kaggle, Colab or a local machine) and how it reads attached data.

Notebooks call `detect_environment()` once, after their parameters cell, and pass their
input paths through `Environment.input_path`. On a TPU VM (Kaggle's TPU VM v3-8 / v5e-8 /
v6e-8, Colab's v5e-1 / v6e-1: ISTPUVM=1, TPU_ACCELERATOR_TYPE, or the chips' device files
/dev/accel* or /dev/vfio/N) the attached datasets are mounted files under /kaggle/input, read
from there like on a CPU or GPU. Only a Kaggle TPU node (the TPU reached over the network,
TPU_NAME / COLAB_TPU_ADDR without a TPU VM's signs) reads a folder under /kaggle/input/
through its GCS path (`kaggle_datasets.KaggleDatasets`, when the module is there): the remote
TPU cannot see the notebook's disk. Everywhere the path kept is checked to exist.
Detection reads environment variables and device files only: it imports neither TensorFlow
nor the Kaggle packages.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

from landmarks.backend import tpu_device_files, tpu_vm_signs
from landmarks.errors import DataError

KAGGLE_INPUT = "/kaggle/input"
KAGGLE_WORKING = "/kaggle/working"


@dataclass(frozen=True)
class Environment:
    """The platform ("kaggle", "colab" or "local"), its accelerator ("tpu", "gpu" or "cpu"),
    its writable working folder, and for a TPU whether this host is a TPU VM (the chips are
    local; False: a TPU node reached over the network)."""

    platform: str
    accelerator: str
    working_dir: str
    tpu_vm: bool = False

    def input_path(self, path: str) -> str:
        """`path`, readable from this machine's accelerator.

        On a Kaggle TPU node, /kaggle/input/<dataset>/rest becomes gs://<bucket>/rest when
        KaggleDatasets knows the dataset; on a TPU VM and everywhere else the local path is
        kept; gs:// paths are kept as they are; a local path that does not exist raises
        DataError naming it and the platform.
        """
        if "://" in path:
            return path
        if self.platform == "kaggle" and self.accelerator == "tpu" and not self.tpu_vm:
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
        accelerator = "tpu VM" if self.tpu_vm else self.accelerator
        return f"{self.platform} ({accelerator}), working folder {self.working_dir}"


def detect_environment(
    environ: dict | None = None, device_files: tuple | None = None
) -> Environment:
    """The Environment this process runs in, from environment variables (default os.environ)
    and the TPU chips' device files (default: those of this host)."""
    env = os.environ if environ is None else environ
    files = tpu_device_files() if device_files is None else device_files
    tpu_vm = bool(tpu_vm_signs(env, files))
    if env.get("KAGGLE_KERNEL_RUN_TYPE") or env.get("KAGGLE_URL_BASE"):
        platform, working = "kaggle", KAGGLE_WORKING
    elif env.get("COLAB_RELEASE_TAG") or env.get("COLAB_GPU") is not None:
        platform, working = "colab", "/content"
    else:
        platform, working = "local", "output"
    return Environment(platform, "tpu" if tpu_vm else _accelerator(env), working, tpu_vm)


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
    except Exception:  # a private dataset, or an unknown one
        return None
    return f"{bucket.rstrip('/')}/{rest}" if rest else bucket


def _accelerator(env) -> str:
    """ "tpu" (a TPU node's address), "gpu" (an NVIDIA device) or "cpu", on a host that is not a
    TPU VM."""
    if any(env.get(key) for key in ("TPU_NAME", "COLAB_TPU_ADDR")):
        return "tpu"
    if os.path.exists("/dev/nvidia0") and env.get("CUDA_VISIBLE_DEVICES", "0") not in ("", "-1"):
        return "gpu"
    return "cpu"
