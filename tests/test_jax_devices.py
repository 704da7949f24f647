"""DataParallel on a simulated 8-device machine (XLA_FLAGS on the CPU): the same losses as one
device for the same global batch, checkpoints, a SIGKILL, and a resume on 4 devices."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("jax_devices_worker.py")
STEPS = 4
# One device and eight see the same global batches; GSPMD all-reduces the BatchNorm statistics
# and the gradients, so only the float32 summation order differs.
LOSS_RTOL = 1e-4

pytestmark = [
    pytest.mark.backends,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("KERAS_BACKEND") != "jax",
        reason="JAX devices: runs in the KERAS_BACKEND=jax pass of make test",
    ),
]


def _command(records: Path, out: Path) -> list[str]:
    return [sys.executable, str(WORKER), str(records), str(out)]


def _env(devices: int) -> dict:
    env = dict(os.environ, KERAS_BACKEND="jax", CUDA_VISIBLE_DEVICES="")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _history(out: Path) -> list[dict]:
    with open(out / "run" / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _committed(out: Path) -> bool:
    return (out / "run" / "checkpoints" / "checkpoint.json").exists()


def test_eight_devices_match_one_and_resume_on_four_after_a_kill(mini_records, tmp_path):
    one = tmp_path / "one"
    single = subprocess.run(
        _command(mini_records, one), env=_env(1), capture_output=True, text=True, timeout=600
    )
    assert single.returncode == 0, single.stderr[-3000:]
    assert "training on cpu x1 (jax, one device)" in single.stdout

    eight = tmp_path / "eight"
    first = subprocess.Popen(
        _command(mini_records, eight),
        env=_env(8),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 400
    while not _committed(eight):
        assert first.poll() is None, "the 8-device run ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 400 s"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    output = first.communicate()[0]
    assert first.returncode == -signal.SIGKILL
    assert "training on cpu x8 (jax, DataParallel), float32, global batch 16" in output

    reference, parallel = _history(one), _history(eight)
    assert len(parallel) >= 1 and len(parallel) < 3, "the run finished before it was killed"
    for row, expected in zip(parallel, reference, strict=False):
        assert float(row["loss"]) == pytest.approx(float(expected["loss"]), rel=LOSS_RTOL)
        assert float(row["val_gap"]) == pytest.approx(float(expected["val_gap"]), abs=1e-6)
    index = json.loads((eight / "run" / "checkpoints" / "checkpoint.json").read_text())
    killed_at = index["finished_epochs"]

    resumed = subprocess.run(
        _command(mini_records, eight), env=_env(4), capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "training on cpu x4 (jax, DataParallel)" in resumed.stdout
    assert f"epoch {killed_at} done, step {killed_at * STEPS}" in resumed.stdout
    rows = _history(eight)
    assert [int(r["step"]) for r in rows] == [STEPS, 2 * STEPS, 3 * STEPS]
    assert [r["learning_rate"] for r in rows] == [r["learning_rate"] for r in reference]
    for name in ("embed_model.keras", "best_embed_model.keras", "curves.png", "config.yaml"):
        assert (eight / "run" / name).stat().st_size > 0, name


def test_backbone_multiplier_under_data_parallel_on_four_devices():
    """Multiplier 0 freezes the backbone (decay included) while the head trains, with the
    variables replicated over 4 devices and each batch split across them."""
    result = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("multiplier_worker.py"))],
        env=_env(4),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    values = json.loads(result.stdout.strip().splitlines()[-1])
    assert values["setup"] == "cpu x4 (jax, DataParallel)"
    assert values["iterations"] == 8
    assert values["backbone_change"] == 0.0
    assert values["head_change"] > 1e-3
