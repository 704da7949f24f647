"""Install what a notebook needs on a Kaggle image, leaving the image's own packages in place.

The notebooks' install cell first puts the `landmarks` wheel in from the attached wheels
dataset (`pip install --no-index --no-deps --find-links WHEELS_DIR landmarks`: never from the
registry, where another project could hold the name), then calls `install_missing(WHEELS_DIR)`:

- a requirement this Python already has, at any version, or has through another distribution
  of the same module (PROVIDED_BY: tensorflow-cpu for tensorflow, opencv-python for
  opencv-python-headless...), is kept as it is (Kaggle's TensorFlow, Keras, JAX, numpy...): it
  is listed, never upgraded or downgraded;
- the missing ones are installed at their pinned versions, under a constraints file that pins
  every present requirement and PROTECTED package to its installed version, so that pip stops
  with an error rather than replace one of them to satisfy a dependency;
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
) -> list[str]:
    """Install the requirements this Python lacks (see the module docstring); returns the
    requirement lines installed (empty when nothing was missing).

    wheels_dir: a folder of wheels (an attached dataset) or None/"" for the registry only.
    Pip is this interpreter's (the kernel's): `python -m pip`.
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
    folder = wheels_dir if wheels_dir and os.path.isdir(wheels_dir) else None
    offline = folder is not None and Path(folder, WHEELHOUSE_MARK).is_file()
    source = (
        f"the wheelhouse {folder} (--no-index)"
        if offline
        else "the registry" + (f" and {folder}" if folder else "")
    )
    log(f"requirements: installing {', '.join(missing)} from {source}")
    pins = dict(present)
    pins.update({name: installed_version(name) for name in PROTECTED if installed_version(name)})
    with tempfile.TemporaryDirectory(prefix="landmarks-install-") as work:
        constraints = Path(work, "constraints.txt")
        constraints.write_text("".join(f"{n}=={v}\n" for n, v in sorted(pins.items())))
        command = [*pip_command(), "install", "--quiet"]
        command += ["--no-index"] if offline else []
        command += ["--find-links", folder] if folder else []
        command += ["--constraint", str(constraints), *missing]
        status, output = run_tool(command, check=False, what="pip install")
    if status != 0:
        raise LandmarksError(
            f"pip install of {', '.join(missing)} from {source} failed (exit status {status}; "
            f"the {len(pins)} packages already installed were held at their versions):\n"
            + "\n".join(output.strip().splitlines()[-8:])
        )
    importlib.invalidate_caches()
    return missing
