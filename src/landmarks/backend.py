"""The one place that chooses the Keras backend (jax or tensorflow), before Keras is imported.

Keras fixes its backend when it is first imported (from KERAS_BACKEND), so `select_backend` must
run before anything imports keras: `python -m landmarks` calls it first (`--backend`), and the
notebooks call it in their first cell that imports the package.

Decision (`decide_backend`), first rule that applies:

1. an explicit choice, `--backend jax|tensorflow` (or `select_backend("jax")`);
2. otherwise KERAS_BACKEND from the environment, when set (`--backend auto` skips this rule);
3. otherwise auto:
   - a TPU VM (Kaggle's ISTPUVM=1, TPU_ACCELERATOR_TYPE, or the chips' device files /dev/accel*
     or /dev/vfio/*) whose TensorFlow cannot drive the TPU (the `tensorflow-tpu` distribution
     is not installed; Kaggle's TPU image ships tensorflow-cpu 2.20) and with JAX installed:
     jax (Keras 3 on JAX is then the only way to use the TPU);
   - anything else, a TPU node reached over the network (TPU_NAME, COLAB_TPU_ADDR) included:
     tensorflow.

Nothing here initialises a device (one process alone may hold a TPU): the decision reads
environment variables, device file names and installed package metadata only.
"""

from __future__ import annotations

import glob
import importlib.metadata
import importlib.util
import os
import sys
from dataclasses import dataclass

from landmarks.errors import ConfigError

BACKENDS = ("jax", "tensorflow")
CHOICES = ("auto", *BACKENDS)
TPU_DEVICE_FILES = ("/dev/accel*", "/dev/vfio/[0-9]*")
# TensorFlow for the JAX backend, where it only reads the records (tf.data): the CPU build, in
# pyproject.toml's `jax` extra range (what Kaggle's TPU image ships; Colab's TPU image has none).
TENSORFLOW_ON_JAX = "tensorflow-cpu>=2.19,<2.22"
TENSORFLOW_ON_TENSORFLOW = "tensorflow>=2.19,<2.22"


def tensorflow_requirement(backend: str) -> str:
    """The TensorFlow distribution and range to install for Keras `backend`."""
    return TENSORFLOW_ON_JAX if backend == "jax" else TENSORFLOW_ON_TENSORFLOW


@dataclass(frozen=True)
class BackendDecision:
    """The backend ("jax" or "tensorflow") and why, e.g. "auto: TPU VM, no tensorflow-tpu"."""

    backend: str
    reason: str

    def __str__(self) -> str:
        return f"{self.backend} ({self.reason})"


@dataclass(frozen=True)
class Machine:
    """What the auto rule looks at: environment variables, TPU device files, installed
    distributions (names as pip knows them, lower case)."""

    environ: dict
    device_files: tuple
    installed: frozenset

    @classmethod
    def this_one(cls) -> Machine:
        files = tpu_device_files()
        names = ("tensorflow-tpu", "jax", "libtpu", "libtpu-nightly")
        return cls(dict(os.environ), files, frozenset(n for n in names if _installed(n)))


def tpu_device_files() -> tuple:
    """The TPU chips' device files of this host (TPU_DEVICE_FILES), sorted; () elsewhere."""
    return tuple(sorted(path for pattern in TPU_DEVICE_FILES for path in glob.glob(pattern)))


def tpu_vm_signs(environ, device_files: tuple) -> list[str]:
    """What says this host is a TPU VM (its chips are local devices): Kaggle's ISTPUVM=1,
    TPU_ACCELERATOR_TYPE, the first chip's device file; [] on any other machine (a TPU node,
    reached over the network through TPU_NAME or COLAB_TPU_ADDR, included)."""
    signs = []
    if environ.get("ISTPUVM") == "1":
        signs.append("ISTPUVM=1")
    if environ.get("TPU_ACCELERATOR_TYPE"):
        signs.append(f"TPU_ACCELERATOR_TYPE={environ['TPU_ACCELERATOR_TYPE']}")
    if device_files:
        signs.append(device_files[0])
    return signs


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def decide_backend(requested: str | None = None, machine: Machine | None = None) -> BackendDecision:
    """The backend for `requested` ("jax", "tensorflow", "auto" or None) on `machine` (default:
    this one; "" is None); see the module docstring. ConfigError for an unknown name."""
    machine = machine or Machine.this_one()
    requested = requested or None
    if requested is not None and requested not in CHOICES:
        raise ConfigError(f"--backend: {requested!r} is not one of {', '.join(CHOICES)}")
    if requested in BACKENDS:
        return BackendDecision(requested, "--backend")
    from_env = machine.environ.get("KERAS_BACKEND", "").strip()
    if requested is None and from_env:
        if from_env not in BACKENDS:
            raise ConfigError(
                f"KERAS_BACKEND={from_env}: landmarks runs on {' or '.join(BACKENDS)}; "
                "unset it or use --backend"
            )
        return BackendDecision(from_env, "KERAS_BACKEND")
    return _auto(machine)


def _auto(machine: Machine) -> BackendDecision:
    signs = tpu_vm_signs(machine.environ, machine.device_files)
    if not signs:
        return BackendDecision("tensorflow", "auto: no TPU VM")
    where = f"TPU VM ({', '.join(signs)})"
    if "tensorflow-tpu" in machine.installed:
        return BackendDecision("tensorflow", f"auto: {where}, tensorflow-tpu installed")
    if "jax" not in machine.installed:
        return BackendDecision(
            "tensorflow", f"auto: {where}, but JAX is not installed (the TPU stays unused)"
        )
    return BackendDecision("jax", f"auto: {where}, TensorFlow without TPU support")


def select_backend(requested: str | None = None, machine: Machine | None = None) -> BackendDecision:
    """Decide the backend and set KERAS_BACKEND for the Keras import to come.

    When Keras is already imported with another backend, ConfigError says so (a notebook must
    restart its kernel, a script choose before `import keras`). Returns the decision.
    """
    decision = decide_backend(requested, machine)
    if "keras" in sys.modules:
        current = sys.modules["keras"].backend.backend()
        if current != decision.backend:
            raise ConfigError(
                f"backend: Keras is already imported with the {current} backend, so it cannot "
                f"switch to {decision.backend}; choose the backend before importing keras "
                "(in a notebook: restart the kernel and run the backend cell first)"
            )
    os.environ["KERAS_BACKEND"] = decision.backend
    if decision.backend == "jax" and importlib.util.find_spec("jax") is None:
        raise ConfigError("backend jax: JAX is not installed (pip install jax, or jax[tpu])")
    return decision


def current_backend() -> str:
    """The backend of the imported Keras ("jax" or "tensorflow"); imports Keras if needed."""
    import keras

    return keras.backend.backend()
