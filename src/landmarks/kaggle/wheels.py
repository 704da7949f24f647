"""Wheels for notebooks that run with the internet off: the `landmarks` wheel and a wheelhouse
of its requirements for Kaggle's Python.

    build_package_wheel(out_dir)      landmarks-<version>-py3-none-any.whl, built from a copy of
                                      the sources in a temporary folder (nothing is written into
                                      the source tree: no build/, no *.egg-info)
    build_wheelhouse(out_dir, ...)    `pip download` of binary wheels of the requirements (and
                                      their dependencies) for Kaggle's Python and manylinux tags,
                                      plus the landmarks wheel
    publish_package(slug)             the landmarks wheel alone, published as a Kaggle dataset

The requirements default to the pinned list shipped inside the package
(landmarks/requirements.txt, the repository's requirements.txt), so the commands work from any
folder; another file can be given by path.

Kaggle's notebook images (assumption, 2026): CPython 3.12 (3.11 on older images) on x86_64 Linux
with glibc 2.35. pip's `--platform` takes one tag literally: `manylinux_2_28_x86_64` alone
refuses a wheel tagged only `manylinux_2_17` (matplotlib), `manylinux2014_x86_64` alone refuses
one tagged only `manylinux_2_28` (numpy). So every tag that glibc 2.35 accepts is passed, from
manylinux_2_35 down to manylinux_2_17 and its alias manylinux2014 (which pip extends to
manylinux2010 and manylinux1).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from importlib import resources
from pathlib import Path

from landmarks.errors import ConfigError, DataError, LandmarksError
from landmarks.io_utils import write_text_atomic

KAGGLE_PYTHON_VERSIONS = ("3.12", "3.11")  # the first is the default
KAGGLE_GLIBC_MINOR = 35  # glibc 2.35
KAGGLE_PLATFORMS = (
    *(f"manylinux_2_{minor}_x86_64" for minor in range(KAGGLE_GLIBC_MINOR, 16, -1)),
    "manylinux2014_x86_64",
)
# What a source checkout holds that the wheel is built from (copied to a temporary folder).
_PROJECT_FILES = ("pyproject.toml", "README.md", "LICENSE")
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")


def shipped_requirements() -> Path:
    """The pinned runtime requirements shipped inside the package (landmarks/requirements.txt)."""
    path = Path(str(resources.files("landmarks") / "requirements.txt"))
    if not path.is_file():
        raise DataError(f"{path}: the requirements shipped with landmarks are missing")
    return path


def read_requirements(path: str | Path) -> list[str]:
    """The requirement lines of a requirements file (comments and blank lines left out)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError) as error:
        raise DataError(f"{path}: requirements file not found") from error
    lines = [line.split(" #")[0].strip() for line in text.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def project_name(requirement: str) -> str:
    """Normalised project name of a requirement line ("Foo_bar[x]==1" -> "foo-bar")."""
    name = re.split(r"[\s<>=!~;\[@]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def project_root() -> Path:
    """The source checkout of `landmarks` (holding pyproject.toml), for building its wheel."""
    root = Path(__file__).resolve().parents[3]
    if not (root / "pyproject.toml").is_file():
        raise ConfigError(
            f"landmarks at {Path(__file__).resolve().parents[1]} is not a source checkout (no "
            f"pyproject.toml in {root}): build its wheel from a checkout, or leave the package "
            "out (--no-package) and copy a landmarks wheel in yourself"
        )
    return root


def build_package_wheel(out_dir: str, project: str | None = None) -> Path:
    """Build the landmarks wheel (no dependencies) into `out_dir`; returns the wheel's path.

    The sources (pyproject.toml, README.md, LICENSE, src/) are copied to a temporary folder and
    the wheel is built there, so the checkout stays as it is.
    """
    from landmarks.kaggle.client import pip_command, run_tool

    source = Path(project) if project else project_root()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.glob("landmarks-*.whl"))
    with tempfile.TemporaryDirectory(prefix="landmarks-wheel-") as staging:
        for name in _PROJECT_FILES:
            if (source / name).is_file():
                shutil.copyfile(source / name, Path(staging) / name)
        shutil.copytree(source / "src", Path(staging) / "src", ignore=_IGNORED)
        run_tool(
            [*pip_command(), "wheel", "--no-deps", "--wheel-dir", str(out), staging],
            what="pip wheel landmarks",
        )
    wheels = sorted(out.glob("landmarks-*.whl"), key=lambda p: p.stat().st_mtime)
    if not wheels:
        raise LandmarksError(f"pip wheel wrote no landmarks-*.whl into {out}")
    new = [w for w in wheels if w not in before]
    return (new or wheels)[-1]


def build_wheelhouse(
    out_dir: str,
    requirements: str | None = None,
    *,
    python_version: str = KAGGLE_PYTHON_VERSIONS[0],
    platforms: tuple[str, ...] = KAGGLE_PLATFORMS,
    skip: tuple[str, ...] = (),
    include_package: bool = True,
) -> Path:
    """Download binary wheels of `requirements` (default: the shipped ones) and their
    dependencies for Kaggle's Python into `out_dir`, plus the landmarks wheel, for notebooks
    that run with the internet off (landmarks.kaggle.install installs from it).

    python_version: "3.12" or "3.11". platforms: pip platform tags, every one accepted (see the
    module docstring). skip: projects left out (e.g. tensorflow, which Kaggle's image has).
    The requirements actually used are written to `out_dir`/requirements.txt, which marks the
    folder as a full wheelhouse. Returns the folder.
    """
    from landmarks.kaggle.client import pip_command, run_tool

    if python_version not in KAGGLE_PYTHON_VERSIONS:
        raise ConfigError(
            f"--python-version {python_version}: expected one of "
            f"{', '.join(KAGGLE_PYTHON_VERSIONS)} (Kaggle's images run CPython 3.12, older ones 3.11)"
        )
    if not platforms or any(not re.fullmatch(r"[a-z0-9_]+", tag) for tag in platforms):
        raise ConfigError(f"--platform: expected pip platform tags, got {list(platforms)}")
    source = Path(requirements) if requirements else shipped_requirements()
    lines = read_requirements(source)
    skipped = {project_name(name) for name in skip}
    unknown = skipped - {project_name(line) for line in lines}
    if unknown:
        raise ConfigError(f"--skip {', '.join(sorted(unknown))}: not in {source}")
    kept = [line for line in lines if project_name(line) not in skipped]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if kept:
        command = [*pip_command(), "download", "--dest", str(out), "--only-binary=:all:"]
        command += ["--implementation", "cp", "--python-version", python_version]
        for tag in platforms:
            command += ["--platform", tag]
        run_tool([*command, *kept], what="pip download")
    if include_package:
        build_package_wheel(str(out))
    write_text_atomic(str(out / "requirements.txt"), "".join(f"{line}\n" for line in kept))
    return out


def publish_package(slug: str, staging: str = "output/kaggle/package", **options) -> str:
    """Build the landmarks wheel alone into `staging` (older landmarks wheels there are removed)
    and publish that folder as the dataset `slug`; `options` as for
    landmarks.kaggle.client.publish_dataset. Returns the dataset id."""
    from landmarks.kaggle.client import publish_dataset

    for old in Path(staging).glob("landmarks-*.whl"):
        old.unlink()
    print(f"built {build_package_wheel(staging)}")
    return publish_dataset(staging, slug, **options)
