"""One process of a training run of tests/test_jax_devices.py: JAX over one or several
processes, each with the CPU devices that XLA_FLAGS (--xla_force_host_platform_device_count=N)
simulates.

Run as `python tests/jax_processes_worker.py RECORDS_DIR OUTPUT_DIR WRITES_LOG` with
KERAS_BACKEND=jax; for several processes also KERAS_DISTRIBUTION_JOB_ADDRESSES,
KERAS_DISTRIBUTION_NUM_PROCESSES and KERAS_DISTRIBUTION_PROCESS_ID, which the trainer hands to
keras.distribution.initialize(). Trains (or resumes) OUTPUT_DIR/run: the run of
tests/jax_devices_worker.py (tiny_bn, global batch 16, 3 epochs of 4 steps, validation every
epoch) without the example shuffle buffer, so that the global batches do not depend on how the
shards are shared out over the processes (see the test). Two more things for the test:

- JAX's coordination timeouts are cut to a few seconds (its defaults: a 100 s heartbeat, a 300 s
  shutdown barrier), so that a killed peer ends this process quickly;
- every write, rename, removal or folder creation this process makes (as Python's audit hooks
  see them) under OUTPUT_DIR is appended to WRITES_LOG, one "event path" per line, so that the
  test can tell which process wrote the run folder.
"""

from __future__ import annotations

import functools
import os
import sys

import jax
from jax_devices_worker import config as devices_run_config
from training_helpers import register_tiny_bn

from landmarks.config import Config
from landmarks.training.trainer import train

HEARTBEAT_TIMEOUT_S = 5
SHUTDOWN_TIMEOUT_S = 10
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
PATH_EVENTS = {"os.rename": 2, "os.replace": 2, "os.remove": 1, "os.mkdir": 1, "os.rmdir": 1}


def config(records_dir: str, output_dir: str) -> Config:
    values = devices_run_config(records_dir, output_dir).to_dict()
    values["shuffle_buffer"] = 0
    return Config.from_dict(values)


def log_writes_under(folder: str, log_path: str) -> None:
    """Append every write event under `folder` to `log_path` (see the module docstring)."""
    folder = os.path.abspath(folder) + os.sep
    log = open(log_path, "a", buffering=1)  # opened before the hook: its writes are not events

    def under(path) -> bool:
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        return isinstance(path, str) and os.path.abspath(path).startswith(folder)

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            writing = any(c in (mode or "") for c in "wax+") or bool((flags or 0) & WRITE_FLAGS)
            if writing and under(path):
                log.write(f"open {path}\n")
        elif event in PATH_EVENTS:
            for path in args[: PATH_EVENTS[event]]:
                if under(path):
                    log.write(f"{event} {path}\n")

    sys.addaudithook(hook)


if __name__ == "__main__":
    jax.distributed.initialize = functools.partial(
        jax.distributed.initialize,
        heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S,
        shutdown_timeout_seconds=SHUTDOWN_TIMEOUT_S,
    )
    register_tiny_bn()
    records, output, writes = sys.argv[1:4]
    log_writes_under(output, writes)
    train(config(records, output), verbose=2)
