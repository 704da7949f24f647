"""Backbone multiplier 0 under data parallelism, for tests/test_strategy.py (TensorFlow: a
MirroredStrategy over two logical CPUs) and tests/test_jax_devices.py (JAX: DataParallel over
the CPU devices that XLA_FLAGS simulates). Run as `python tests/multiplier_worker.py` with
KERAS_BACKEND set; prints one JSON line: the setup, optimizer iterations, and the largest change
of a backbone weight and of a head weight after 8 steps of AdamW with weight decay."""

from __future__ import annotations

import json
import os

os.environ["CUDA_VISIBLE_DEVICES"] = ""

import keras  # noqa: E402
import numpy as np  # noqa: E402

from landmarks.training.devices import detect_strategy  # noqa: E402
from landmarks.training.optimization import (  # noqa: E402
    ArcFaceCrossEntropy,
    make_optimizer,
    make_schedule,
)


def parallel_scope():
    """(a context for building and fitting, a description of it)."""
    if keras.backend.backend() == "jax":
        setup = detect_strategy()
        return setup.scope(), str(setup)
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    return strategy.scope(), f"tensorflow MirroredStrategy x{strategy.num_replicas_in_sync}"


def main() -> None:
    scope, description = parallel_scope()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 8)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(8, 4)), 1).astype("int32")
    with scope:
        inputs = keras.Input((8,))
        backbone = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16)], name="backbone")
        head = keras.layers.Dense(4, name="head")
        model = keras.Model(inputs, head(backbone(inputs)))
        optimizer = make_optimizer(
            "adamw",
            make_schedule(0.05, 8, 2, 0.0),
            weight_decay=0.1,
            clip_norm=5.0,
            backbone_variables=backbone.trainable_variables,
            backbone_lr_multiplier=0.0,
        )
        model.compile(optimizer=optimizer, loss=ArcFaceCrossEntropy())
        frozen = [v.numpy().copy() for v in backbone.trainable_variables]
        moving = [v.numpy().copy() for v in head.trainable_variables]
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)

    def change(variables, before):
        return max(
            float(np.abs(v.numpy() - b).max()) for v, b in zip(variables, before, strict=True)
        )

    print(
        json.dumps(
            {
                "setup": description,
                "iterations": int(optimizer.iterations.numpy()),
                "backbone_change": change(backbone.trainable_variables, frozen),
                "head_change": change(head.trainable_variables, moving),
            }
        )
    )


if __name__ == "__main__":
    main()
