"""One training run of tests/test_cross_backend.py, on either backend (on JAX, on however many
CPU devices XLA_FLAGS --xla_force_host_platform_device_count=N simulates); its config is also
the one tests/jax_processes_worker.py runs for tests/test_jax_devices.py.

Run as `python tests/jax_devices_worker.py RECORDS_DIR OUTPUT_DIR [STOP_AFTER_EPOCHS]`. Trains (or
resumes) OUTPUT_DIR/run through landmarks.training.train with the tests' tiny_bn backbone
(tests/training_helpers.py; its BatchNorm exercises batch statistics over a sharded batch), a
GeM head, a global batch of 16, 3 epochs of 4 steps, and a validation GAP every epoch.
"""

from __future__ import annotations

import sys

from training_helpers import register_tiny_bn

from landmarks.config import Config
from landmarks.training.trainer import train


def config(records_dir: str, output_dir: str, stop_after_epochs: int = 0) -> Config:
    return Config.from_dict(
        {
            "records_dir": records_dir,
            "output_dir": output_dir,
            "backbone": "tiny_bn",
            "head": "gem",
            "embedding_dim": 32,
            "image_size": 64,
            "global_batch_size": 16,
            "batch_size": 32,  # the validation embedding batch (45 images: 32 + 13, padded)
            "augment": "none",
            "steps_per_epoch": 4,
            "epochs": 3,
            "stop_after_epochs": stop_after_epochs,
            "learning_rate": 3e-3,
            "warmup_epochs": 0.5,
            "validate_every": 1,
            "validation_queries": 16,
            "validation_index": 45,
        }
    )


if __name__ == "__main__":
    register_tiny_bn()
    stop_after = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    train(config(sys.argv[1], sys.argv[2], stop_after), verbose=2)
