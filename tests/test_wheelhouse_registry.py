"""A real wheelhouse: `kaggle wheelhouse` against the package registry for a small requirement
set, then the notebooks' offline install from it in a fresh virtual environment.

The fresh environment reads no pip configuration (PIP_CONFIG_FILE=/dev/null) and installs with
--no-index, so everything it gets comes from the wheelhouse; PYTHONPATH is cleared so that it
imports the installed landmarks wheel, not these sources.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from landmarks.cli import main

# Small projects with compiled (pyyaml) and pure (tqdm) wheels, pinned as requirements.txt pins.
REQUIREMENTS = "pyyaml==6.0.4\ntqdm==4.70.1\n"
LOCAL_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def _isolated_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k != "PYTHONPATH"}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(command: list[str], **options) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, **options)
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout


@pytest.mark.slow
def test_wheelhouse_from_the_registry_installs_offline_in_a_fresh_venv(tmp_path, monkeypatch):
    requirements = tmp_path / "requirements-small.txt"
    requirements.write_text(REQUIREMENTS)
    wheels = tmp_path / "wheels"
    monkeypatch.chdir(tmp_path)  # not the repository: the command must not need it

    # Kaggle's default Python (3.12): binary wheels for cp312 are found under the manylinux tags.
    small = ["--requirements", str(requirements)]
    assert (
        main(["kaggle", "wheelhouse", "--out", str(tmp_path / "w312"), "--no-package", *small]) == 0
    )
    assert len(list((tmp_path / "w312").glob("pyyaml-6.0.4-cp312-cp312-manylinux*.whl"))) == 1

    # This machine's Python (3.11, accepted), so that the fresh venv can install from it.
    command = ["kaggle", "wheelhouse", "--out", str(wheels), *small]
    assert main([*command, "--python-version", LOCAL_PYTHON]) == 0
    names = sorted(p.name for p in wheels.iterdir())
    assert any(n.startswith("landmarks-0.1.0-py3-none-any") for n in names), names
    assert any(n.startswith(f"pyyaml-6.0.4-cp{LOCAL_PYTHON.replace('.', '')}") for n in names)
    assert any(n.startswith("tqdm-4.70.1-") for n in names), names
    assert (wheels / "requirements.txt").read_text() == REQUIREMENTS
    assert not (Path(__file__).resolve().parents[1] / "build").exists()

    venv = tmp_path / "fresh"
    _run([sys.executable, "-m", "venv", str(venv)])
    python = str(venv / "bin" / "python")
    env = _isolated_env()
    offline = ["-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(wheels)]
    # The image already has pyyaml; the install cell puts landmarks in, then what is missing.
    _run([python, *offline, "pyyaml==6.0.4"], env=env)
    _run([python, *offline, "--no-deps", "landmarks"], env=env)
    printed = _run(
        [
            python,
            "-c",
            "import sys; from landmarks.kaggle.install import install_missing; "
            "print(install_missing(sys.argv[1], sys.argv[2]))",
            str(wheels),
            str(requirements),
        ],
        env=env,
        cwd=tmp_path,
    )
    assert "present, kept as they are (pyyaml 6.0.4" in printed
    assert "['tqdm==4.70.1']" in printed and "(--no-index)" in printed
    located = _run(
        [python, "-c", "import landmarks, tqdm, yaml; print(landmarks.__file__, tqdm.__version__)"],
        env=env,
        cwd=tmp_path,
    )
    assert str(venv) in located and "4.70.1" in located
