"""The console: TensorFlow's C++ start-up lines stay off it (main process and record-writer
workers) unless `--verbose` brings them back."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A C++ log line of TensorFlow/absl ("I0000 00:00:... cudart_stub.cc:31] ..."), or absl's notice.
NATIVE_LOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:|absl::InitializeLog", re.MULTILINE)


def _run(arguments: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    for name in ("TF_CPP_MIN_LOG_LEVEL", "LANDMARKS_VERBOSE"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, *arguments], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.fixture(scope="module")
def tensorflow_is_noisy() -> bool:
    """Whether a plain `import tensorflow` prints C++ lines on this machine."""
    return bool(NATIVE_LOG.search(_run(["-c", "import tensorflow"]).stderr))


def _prepare(mini_landmarks, out: Path, *flags: str) -> subprocess.CompletedProcess:
    command = ["-m", "landmarks", *flags, "prepare", "--data-dir", str(mini_landmarks)]
    command += ["--split", "index", "--out", str(out), "--workers", "2", "--image-size", "64"]
    command += ["--shards", "2", "--quiet"]
    return _run(command)


@pytest.mark.slow
def test_prepare_with_two_workers_prints_only_its_own_lines(mini_landmarks, tmp_path):
    result = _prepare(mini_landmarks, tmp_path / "records")
    assert result.returncode == 0, result.stderr
    assert not NATIVE_LOG.search(result.stderr), result.stderr
    assert "index" in result.stdout


@pytest.mark.slow
def test_verbose_brings_the_native_lines_back(mini_landmarks, tmp_path, tensorflow_is_noisy):
    if not tensorflow_is_noisy:
        pytest.skip("TensorFlow prints no C++ start-up lines on this machine")
    result = _prepare(mini_landmarks, tmp_path / "records", "--verbose")
    assert result.returncode == 0, result.stderr
    assert NATIVE_LOG.search(result.stderr)


def test_an_error_raised_during_a_quiet_import_still_shows(tmp_path):
    (tmp_path / "tensorflow.py").write_text("raise ImportError('broken tensorflow')\n")
    code = "from landmarks.console import import_tensorflow; import_tensorflow()"
    env_path = f"{tmp_path}{os.pathsep}{REPO / 'src'}"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": env_path, "LANDMARKS_VERBOSE": "0"},
        timeout=120,
    )
    assert result.returncode == 1
    assert "ImportError: broken tensorflow" in result.stderr


@pytest.mark.parametrize(
    ("backend", "package"),
    [("jax", "tensorflow-cpu>=2.19,<2.22"), ("tensorflow", "tensorflow>=2.19,<2.22")],
)
def test_a_command_without_tensorflow_says_what_to_install_in_one_line(tmp_path, backend, package):
    """Colab's TPU runtime has no TensorFlow: one `error:` line, no traceback."""
    code = (
        "import sys; sys.modules['tensorflow'] = None\n"  # as if it were not installed
        "from landmarks.cli import main\n"
        f"sys.exit(main(['--backend', '{backend}', 'prepare', '--data-dir', '{tmp_path}', "
        f"'--out', '{tmp_path / 'records'}']))"
    )
    result = _run(["-c", code])
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: TensorFlow is not installed")
    assert f"pip install '{package}'" in lines[0]
    assert not (tmp_path / "records").exists()


# What XLA's runtime writes to descriptor 2 on a slow JAX compile and at the first jit-compiled
# augmentation (the lines as jaxlib 0.10 and TensorFlow 2.21 print them), between two lines of
# the program's own and a progress bar's partial updates.
XLA_NOISE = (
    "E1203 14:02:11.123456   4242 slow_operation_alarm.cc:73] \n"
    "********************************\n"
    "[Compiling module jit_train_step] Very slow compile? If you want to file a bug, run with "
    "envvar XLA_FLAGS=--xla_dump_to=/tmp/foo and attach the results.\n"
    "********************************\n"
    "E1203 14:04:15.000001   4242 slow_operation_alarm.cc:140] The operation took 2m4.1s\n"
    "I0000 00:00:1764770531.1 4242 device_compiler.h:188] Compiled cluster using XLA!  This "
    "line is logged at most once for the lifetime of the process.\n"
)
NATIVE_WRITER = f"""
import os, sys, time
from landmarks.console import native_noise_filtered
with native_noise_filtered():
    os.write(2, b"before\\n")
    os.write(2, {XLA_NOISE.encode()!r})
    os.write(2, b"step 1/2\\r")
    time.sleep(0.5)
    os.write(2, b"step 2/2\\r")
    print("warning: kept", file=sys.stderr)
    os.write(2, b"after\\n")
os.write(2, b"restored\\n")
"""


@pytest.mark.parametrize("verbose", ["0", "1"])
def test_xla_compile_alarms_are_left_out_unless_verbose(verbose):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "LANDMARKS_VERBOSE": verbose}
    result = subprocess.run(
        [sys.executable, "-c", NATIVE_WRITER], capture_output=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    err = result.stderr.decode()
    own = "before\n" + ("" if verbose == "0" else XLA_NOISE)
    assert err == own + "step 1/2\rstep 2/2\rwarning: kept\nafter\nrestored\n"


def test_a_fatal_abort_inside_the_filter_still_shows_its_last_line():
    """The filter is a process: what this one wrote before os.abort() reaches the console."""
    code = (
        "import os\nfrom landmarks.console import native_noise_filtered\n"
        "with native_noise_filtered():\n"
        "    os.write(2, b'F1203 check failed: the last words\\n')\n    os.abort()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "LANDMARKS_VERBOSE": "0"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, timeout=60)
    assert result.returncode != 0
    assert b"F1203 check failed: the last words" in result.stderr
