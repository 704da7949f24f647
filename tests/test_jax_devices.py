"""DataParallel on simulated CPU devices (XLA_FLAGS), in one process and over two (as on a TPU
pod slice: 4 devices each, JAX's CPU collectives, Keras' KERAS_DISTRIBUTION_* variables): the
same losses and validation GAP as one device for the same global batches, checkpoints, one run
folder written by process 0 alone, a SIGKILL that ends the other process within a bounded time,
and a resume on one process with 4 devices that ends with the one-device run's losses and GAP
(each epoch's batches depend on the seed and the epoch alone, not on where a run resumed).

The same global batches: the worker turns the example shuffle buffer off and the records are 2
shards of equal size. One process interleaves the two shards record by record, so each global
batch of 16 holds the next 8 records of each shard; over two processes each reads one shard
(landmarks.data.pipeline.process_share) and feeds the next 8 of it: the same 16 examples.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from training_helpers import history_differences, read_history

WORKER = Path(__file__).with_name("jax_processes_worker.py")
STEPS = 4
# One device, eight, and two processes of four see the same global batches; GSPMD all-reduces
# the BatchNorm statistics and the gradients, so only the float32 summation order differs.
LOSS_RTOL = 1e-4
# A killed peer is noticed at the survivor's next collective (a broken connection) or, at the
# latest, by JAX's coordination heartbeat, which the worker sets to 5 s: far less than this.
ENDS_WITHIN_S = 120

pytestmark = [
    pytest.mark.backends,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("KERAS_BACKEND") != "jax",
        reason="JAX devices: runs in the KERAS_BACKEND=jax pass of make test",
    ),
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def _env(devices: int, port: int = 0, process: int = 0, processes: int = 1) -> dict:
    env = dict(os.environ, KERAS_BACKEND="jax", CUDA_VISIBLE_DEVICES="")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    for name in ("JOB_ADDRESSES", "NUM_PROCESSES", "PROCESS_ID"):
        env.pop(f"KERAS_DISTRIBUTION_{name}", None)
    if processes > 1:
        env["KERAS_DISTRIBUTION_JOB_ADDRESSES"] = f"localhost:{port}"
        env["KERAS_DISTRIBUTION_NUM_PROCESSES"] = str(processes)
        env["KERAS_DISTRIBUTION_PROCESS_ID"] = str(process)
    return env


def _start(records: Path, out: Path, name: str, env: dict) -> subprocess.Popen:
    """The worker training out/run; its output in out/../<name>.log, its writes in .writes."""
    folder = out.parent
    command = [sys.executable, str(WORKER), str(records), str(out), str(folder / f"{name}.writes")]
    with open(folder / f"{name}.log", "w") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def _finish(process: subprocess.Popen, log: Path) -> str:
    assert process.wait(timeout=600) == 0, log.read_text()[-3000:]
    return log.read_text()


def _kill_after_first_checkpoint(processes: list, out: Path) -> subprocess.Popen:
    """SIGKILL the last of `processes` once out/run has a committed checkpoint; returns it."""
    deadline = time.monotonic() + 500
    while not (out / "run" / "checkpoints" / "checkpoint.json").exists():
        for process in processes:
            assert process.poll() is None, f"{process.args} ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 500 s"
        time.sleep(0.05)
    processes[-1].send_signal(signal.SIGKILL)
    assert processes[-1].wait() == -signal.SIGKILL
    return processes[-1]


def _assert_same_epochs(rows: list[dict], reference: list[dict]) -> None:
    """The epochs of `rows` have the reference's steps, losses (to LOSS_RTOL) and validation
    GAP (to 1e-6)."""
    assert history_differences(rows, reference, loss_rtol=LOSS_RTOL, gap_atol=1e-6) == []


def _assert_killed_early(rows: list[dict]) -> None:
    assert 1 <= len(rows) < 3, "the run finished before it was killed"


def test_eight_devices_and_two_processes_match_one_device_and_resume_after_a_kill(
    mini_records, tmp_path
):
    one = tmp_path / "one"
    log = _finish(_start(mini_records, one, "one", _env(1)), tmp_path / "one.log")
    assert "training on cpu x1 (jax, one device)" in log
    reference = read_history(one / "run")

    eight = tmp_path / "eight"
    _kill_after_first_checkpoint([_start(mini_records, eight, "eight", _env(8))], eight)
    _assert_killed_early(read_history(eight / "run"))
    assert (
        "training on cpu x8 (jax, DataParallel), float32, global batch 16,"
        in (tmp_path / "eight.log").read_text()
    )
    _assert_same_epochs(read_history(eight / "run"), reference)

    two, port = tmp_path / "two", _free_port()
    pair = [_start(mini_records, two, f"two-{p}", _env(4, port, p, 2)) for p in (0, 1)]
    _kill_after_first_checkpoint(pair, two)
    killed = time.monotonic()
    assert pair[0].wait(timeout=ENDS_WITHIN_S + 60) != 0, "process 0 went on without process 1"
    ended_after = time.monotonic() - killed
    print(f"process 0 ended {ended_after:.1f} s after process 1 was killed")  # shown by -s
    assert ended_after < ENDS_WITHIN_S
    assert (
        "training on cpu x8 (jax, DataParallel, 8 devices over 2 processes), float32, "
        "global batch 16 (8 per process)"
    ) in (tmp_path / "two-0.log").read_text()
    _assert_killed_early(read_history(two / "run"))
    _assert_same_epochs(read_history(two / "run"), reference)
    # Process 0 wrote the run folder (history, checkpoint and index, config, best model);
    # process 1 wrote nothing under it, not even a folder.
    chief_writes = (tmp_path / "two-0.writes").read_text()
    for name in ("history.csv", "ckpt-1.h5", "checkpoint.json", "config.yaml", "best_embed"):
        assert name in chief_writes, name
    assert (tmp_path / "two-1.writes").read_text() == ""

    index = json.loads((two / "run" / "checkpoints" / "checkpoint.json").read_text())
    log = _finish(_start(mini_records, two, "resume", _env(4)), tmp_path / "resume.log")
    assert "training on cpu x4 (jax, DataParallel)" in log
    finished = index["finished_epochs"]
    assert f"epoch {finished} done, step {finished * STEPS}" in log
    rows = read_history(two / "run")
    assert [int(r["step"]) for r in rows] == [STEPS, 2 * STEPS, 3 * STEPS]
    assert [r["learning_rate"] for r in rows] == [r["learning_rate"] for r in reference]
    # the resumed epochs trained on the one-device run's batches from its state
    _assert_same_epochs(rows, reference)
    for name in ("embed_model.keras", "best_embed_model.keras", "curves.png", "config.yaml"):
        assert (two / "run" / name).stat().st_size > 0, name


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
