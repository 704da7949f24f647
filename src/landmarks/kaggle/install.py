"""Install what a notebook needs on a Kaggle image, leaving the image's own packages in place.

The notebooks' install cell first puts the `landmarks` wheel in from the attached wheels
dataset (`pip install --no-index --no-deps --find-links WHEELS_DIR landmarks`: never from the
registry, where another project could hold the name), then calls `install_missing(WHEELS_DIR)`:

- a requirement this Python already has, at any version, or has through another distribution
  of the same module (PROVIDED_BY: tensorflow-cpu for tensorflow, opencv-python for
  opencv-python-headless...), is kept as it is (Kaggle's TensorFlow, Keras, JAX, numpy...): it
  is listed, never upgraded or downgraded;
- the missing ones are installed at their pinned versions, under a constraints file that pins
  the PROTECTED packages (the accelerator stack: TensorFlow, Keras, JAX, libtpu, numpy,
  protobuf...) that are installed to their versions, so that pip stops with an error rather
  than replace one of them; the other packages may move (pinning every present one made
  keras' own h5py 3.16 a constraint that tensorflow 2.21, h5py<3.15, cannot meet);
- TensorFlow missing where JAX is the Keras backend (Colab's TPU runtime ships no TensorFlow):
  `tensorflow-cpu` in the range the code supports (TENSORFLOW_ON_JAX) is installed instead of
  the pinned GPU build, and pip picks the newest release that the held protobuf and numpy
  allow (TensorFlow only reads the records through tf.data there);
- a failed install raises LandmarksError quoting pip's reason (its "conflict is caused by"
  lines and errors), pip's output having streamed to the console as it ran;
- from the wheels folder alone (`--no-index`, internet off) when it is a full wheelhouse
  (`kaggle wheelhouse` wrote requirements.txt into it), else from the registry (internet on),
  with the folder as an extra source.

The requirements are those shipped with the package (landmarks/requirements.txt) or a file
given by path.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from landmarks.backend import TENSORFLOW_ON_JAX, decide_backend
from landmarks.errors import LandmarksError
from landmarks.kaggle.wheels import project_name, read_requirements, shipped_requirements

# Packages of the accelerator stack that an install must never replace, when present.
PROTECTED = (
    "tensorflow",
    "tensorflow-cpu",
    "tensorflow-tpu",
    "keras",
    "jax",
    "jaxlib",
    "libtpu",
    "numpy",
    "protobuf",
    "ml-dtypes",
    "torch",
)

WHEELHOUSE_MARK = "requirements.txt"  # written by `kaggle wheelhouse` once it is complete
# Distributions that provide the same import as a requirement: one of them installed counts as
# the requirement present (Kaggle's TPU image has tensorflow-cpu, its GPU image opencv-python;
# a second OpenCV or TensorFlow beside them would shadow or break the first).
PROVIDED_BY = {
    "tensorflow": ("tensorflow-cpu", "tensorflow-tpu", "tensorflow-gpu", "tf-nightly"),
    "opencv-python-headless": (
        "opencv-python",
        "opencv-contrib-python",
        "opencv-contrib-python-headless",
    ),
    "faiss-cpu": ("faiss-gpu", "faiss-gpu-cu12", "faiss-gpu-cu11", "faiss"),
}


def installed_version(name: str) -> str | None:
    """The installed version of distribution `name` (any spelling), or None."""
    try:
        return importlib.metadata.version(project_name(name))
    except importlib.metadata.PackageNotFoundError:
        return None


def installed_provider(requirement: str) -> tuple[str, str] | None:
    """(distribution, version) installed for `requirement`: itself or one of PROVIDED_BY."""
    name = project_name(requirement)
    for candidate in (name, *PROVIDED_BY.get(name, ())):
        version = installed_version(candidate)
        if version:
            return candidate, version
    return None


def install_missing(
    wheels_dir: str | None = None,
    requirements: str | None = None,
    *,
    log: Callable[[str], None] = print,
    backend: str | None = None,
) -> list[str]:
    """Install the requirements this Python lacks (see the module docstring); returns the
    requirement lines installed (empty when nothing was missing).

    wheels_dir: a folder of wheels (an attached dataset) or None/"" for the registry only.
    backend: the Keras backend to come, "jax", "tensorflow", "auto" or None (KERAS_BACKEND,
    else auto), as `landmarks.backend.decide_backend` decides it. Pip is this
    interpreter's (the kernel's): `python -m pip`.
    """
    from landmarks.kaggle.client import pip_command, run_tool

    lines = read_requirements(requirements or shipped_requirements())
    providers = {line: installed_provider(line) for line in lines}
    missing = [line for line in lines if providers[line] is None]
    present = dict(provider for provider in providers.values() if provider)
    kept = [f"{name} {version}" for name, version in present.items()]
    log(f"requirements: {len(kept)} present, kept as they are ({', '.join(kept) or 'none'})")
    if not missing:
        log("requirements: nothing to install")
        return []
    missing = _tensorflow_for_backend(missing, backend, log)
    folder = wheels_dir if wheels_dir and os.path.isdir(wheels_dir) else None
    offline = folder is not None and Path(folder, WHEELHOUSE_MARK).is_file()
    source = (
        f"the wheelhouse {folder} (--no-index)"
        if offline
        else "the registry" + (f" and {folder}" if folder else "")
    )
    log(f"requirements: installing {', '.join(missing)} from {source}")
    held = {name: installed_version(name) for name in PROTECTED if installed_version(name)}
    with tempfile.TemporaryDirectory(prefix="landmarks-install-") as work:
        constraints = Path(work, "constraints.txt")
        constraints.write_text("".join(f"{n}=={v}\n" for n, v in sorted(held.items())))
        command = [*pip_command(), "install", "--progress-bar", "off"]
        command += ["--no-index"] if offline else []
        command += ["--find-links", folder] if folder else []
        command += ["--constraint", str(constraints), *missing]
        status, output = run_tool(command, check=False, what="pip install")
    if status != 0:
        kept_at = ", ".join(f"{n} {v}" for n, v in sorted(held.items())) or "none"
        raise LandmarksError(
            f"pip install of {', '.join(missing)} from {source} failed (exit status {status}; "
            f"held at their versions: {kept_at}). pip says:\n" + "\n".join(pip_reason(output))
        )
    importlib.invalidate_caches()
    return missing


def _tensorflow_for_backend(
    missing: list[str], backend: str | None, log: Callable[[str], None]
) -> list[str]:
    """`missing` with a missing TensorFlow replaced by TENSORFLOW_ON_JAX when JAX is the
    backend: `backend` ("jax", "tensorflow", "auto" or None) decided as
    landmarks.backend.decide_backend does (None: KERAS_BACKEND, else auto)."""
    if not any(project_name(line) == "tensorflow" for line in missing):
        return missing
    decision = decide_backend(backend)
    if decision.backend != "jax":
        return missing
    log(
        f"requirements: no TensorFlow here and the backend is jax ({decision.reason}): "
        f"{TENSORFLOW_ON_JAX} "
        "instead of the pinned GPU build (TensorFlow only reads the records on JAX)"
    )
    return [TENSORFLOW_ON_JAX if project_name(line) == "tensorflow" else line for line in missing]


def pip_reason(output: str, tail: int = 8) -> list[str]:
    """Why pip failed, from its output: the "The conflict is caused by:" block (up to the
    blank line after it) and every ERROR line; the last `tail` lines when it has neither."""
    lines = output.rstrip().splitlines()
    reason: list[str] = []
    in_conflict = False
    for line in lines:
        if "conflict is caused by" in line:
            in_conflict = True
        elif in_conflict and not line.strip():
            in_conflict = False
        if (in_conflict or line.startswith("ERROR:")) and line not in reason:
            reason.append(line)
    return reason or lines[-tail:]
