"""stacks/: one pinned package list per runtime users have, read by stacks/run_stack.py
(`make test-stacks`, not part of `make test`); here only the files and the driver's decisions."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

STACKS = Path(__file__).resolve().parents[1] / "stacks"
FILES = sorted(STACKS.glob("*.txt"))


def _driver():
    spec = importlib.util.spec_from_file_location("run_stack", STACKS / "run_stack.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_runtime_has_a_stack():
    assert {p.stem for p in FILES} >= {"colab-tpu", "kaggle-gpu", "kaggle-tpu-vm", "project"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_a_stack_is_pinned_and_cites_its_source_and_date(path):
    stack = _driver().read_stack(path.stem)
    assert re.fullmatch(r"3\.\d+", stack["python"])
    assert stack["backend"] in ("jax", "tensorflow")
    text = path.read_text()
    assert re.search(r"\b20\d\d-\d\d\b", text), "no date"
    requirements = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert requirements
    for line in requirements:
        assert line.startswith("-r ") or re.fullmatch(r"[A-Za-z0-9_.-]+==[\w.]+", line), line
    if stack["backend"] == "jax":  # the replica's choice, said (no TPU here to decide it)
        assert "KERAS_BACKEND=jax" in text


def test_colab_tpu_stack_has_no_tensorflow_and_python_3_13():
    stack = _driver().read_stack("colab-tpu")
    text = (STACKS / "colab-tpu.txt").read_text()
    assert stack["python"] == "3.13" and stack["backend"] == "jax"
    assert not re.search(r"^tensorflow", text, re.M)
    assert {"jax==0.7.2", "keras==3.13.2", "protobuf==7.35.1"} <= set(text.splitlines())


def test_a_replaced_package_is_reported_and_a_kept_one_is_not():
    driver = _driver()
    before = {"jax": "0.7.2", "keras": "3.13.2", "numpy": "2.1.3"}
    after = {"jax": "0.7.2", "keras": "3.15.1", "numpy": "2.1.3", "tensorflow-cpu": "2.21.0"}
    assert driver.replaced(before, after) == ["keras 3.13.2 -> 3.15.1"]
    assert driver.replaced(before, dict(before)) == []
    assert driver.replaced({"jax": "0.7.2"}, {}) == ["jax 0.7.2 -> None"]


def test_an_unknown_stack_or_python_is_a_one_line_error(monkeypatch):
    driver = _driver()
    with pytest.raises(SystemExit, match="no-such.txt: no such stack .*colab-tpu"):
        driver.read_stack("no-such")
    monkeypatch.setenv("PYTHON_2_1", sys.executable)  # a Python, but not 2.1
    monkeypatch.setattr(driver.os.path, "expanduser", lambda path: "/nonexistent" + path[1:])
    with pytest.raises(SystemExit, match="no Python 2.1 found .*set PYTHON_2_1"):
        driver.find_python("2.1")
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    monkeypatch.setenv(f"PYTHON_{version.replace('.', '_')}", sys.executable)
    assert driver.find_python(version) == sys.executable
