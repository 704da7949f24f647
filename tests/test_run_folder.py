"""A run folder has one owner (issue 16 B3), and a failed run's leftovers do not block a new
config (issue 16 W10)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from landmarks.config import Config
from landmarks.errors import ConfigError
from landmarks.training.run_lock import (
    LOCK_NAME,
    STALE_AFTER_S,
    RunFolderBusy,
    is_stale,
    run_folder_lock,
)
from landmarks.training.trainer import _check_resume_compatible

HOLD = """
import sys, time
from landmarks.training.run_lock import run_folder_lock
with run_folder_lock(sys.argv[1], method=sys.argv[2]):
    print("held", flush=True)
    time.sleep(120)
"""


def _holder(run_dir, method="flock") -> subprocess.Popen:
    """A process that holds the lock of `run_dir` until it is killed."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir), method], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "held"
    return process


@pytest.mark.parametrize("method", ["flock", "heartbeat"])
def test_a_second_run_stops_at_once_naming_the_holder_until_the_holder_is_killed(tmp_path, method):
    run_dir = tmp_path / "run"
    holder = _holder(run_dir, method)
    try:
        with pytest.raises(RunFolderBusy) as error, run_folder_lock(str(run_dir), method=method):
            pass
        message = str(error.value)
        assert f"{run_dir} is in use by another training run (pid {holder.pid} on host" in message
        assert "choose another run_name" in message
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the holder was killed: its lock is not left behind for ever
    with run_folder_lock(str(run_dir), method=method) as mine:
        on_disk = json.loads((run_dir / LOCK_NAME).read_text())
        assert on_disk["pid"] == os.getpid() == mine["pid"]


def test_train_refuses_a_held_folder_and_leaves_its_files_alone(mini_records, tmp_path, capsys):
    from landmarks.cli import main

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("image_size: 64\n")
    config = tmp_path / "c.yaml"
    config.write_text(f"records_dir: {mini_records}\noutput_dir: {tmp_path}\nimage_size: 32\n")
    holder = _holder(run_dir)
    try:
        assert main(["train", "--config", str(config)]) == 2
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert f"pid {holder.pid}" in capsys.readouterr().err
    assert (run_dir / "config.yaml").read_text() == "image_size: 64\n"


def test_heartbeat_staleness():
    now = time.time()
    here, elsewhere = socket.gethostname(), "another-host"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    assert is_stale({"host": here, "pid": dead_pid, "heartbeat": now})
    assert not is_stale({"host": here, "pid": os.getpid(), "heartbeat": now})
    assert not is_stale({"host": elsewhere, "pid": 1, "heartbeat": now - 10})
    assert is_stale({"host": elsewhere, "pid": 1, "heartbeat": now - STALE_AFTER_S - 1})


def test_a_stale_heartbeat_lock_is_taken_over_and_a_live_one_is_not(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    lock = run_dir / LOCK_NAME
    fresh = {"host": "another-host", "pid": 1, "heartbeat": time.time(), "started": "s"}
    lock.write_text(json.dumps(fresh))
    with pytest.raises(RunFolderBusy, match="pid 1 on host another-host"):
        with run_folder_lock(str(run_dir), method="heartbeat"):
            pass
    lock.write_text(json.dumps({**fresh, "heartbeat": time.time() - STALE_AFTER_S - 5}))
    with run_folder_lock(str(run_dir), method="heartbeat"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()  # removed when the run ends


def _fake_checkpoint(run_dir) -> None:
    """What landmarks.training.checkpoints.read_index needs to see a checkpoint: its index."""
    folder = run_dir / "checkpoints"
    folder.mkdir(parents=True)
    index = {"latest": "ckpt-1.h5", "finished_epochs": 1, "step": 4, "kept": ["ckpt-1.h5"]}
    (folder / "checkpoint.json").write_text(json.dumps(index))


def test_only_checkpoints_tie_a_run_folder_to_its_shapes(tmp_path):
    """W10: a run that failed before its first checkpoint left only config.yaml; a retry with
    other shapes may start. Once there are checkpoints, other shapes are refused."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    Config.from_dict({"embedding_dim": 256}).save(str(run_dir / "config.yaml"))
    retry = Config.from_dict({"embedding_dim": 512})
    _check_resume_compatible(retry, str(run_dir))  # no checkpoint: no objection
    _fake_checkpoint(run_dir)
    with pytest.raises(ConfigError, match="embedding_dim 256 -> 512.*cannot be resumed"):
        _check_resume_compatible(retry, str(run_dir))
