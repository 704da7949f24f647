"""Why JAX trains EfficientNets slowly on this CPU: one depthwise 3x3 and one 1x1 convolution,
forward only, compiled (tf.function on TensorFlow, jax.jit on JAX), same input [8, 64, 64, 96].

The backend is fixed per process: run it once per backend; each run prints one JSON object
{"backend", "depthwise3x3_ms", "conv1x1_ms"}; the ratio of the two runs is the answer.

    KERAS_BACKEND=tensorflow .venv/bin/python bench/depthwise.py
    KERAS_BACKEND=jax .venv/bin/python bench/depthwise.py
"""

from __future__ import annotations

import json
import time

import keras
import numpy as np

REPEATS = 20


def forward_ms(layer, images: np.ndarray) -> float:
    """Mean milliseconds of one compiled forward call of `layer` on `images`."""
    model = keras.Sequential([keras.Input(images.shape[1:]), layer])
    if keras.backend.backend() == "jax":
        import jax

        call = jax.jit(lambda values, x: model.stateless_call(values, [], x)[0])
        values = [variable.value for variable in model.trainable_variables]

        def run():
            call(values, images).block_until_ready()
    else:
        import tensorflow as tf

        call = tf.function(lambda x: model(x))

        def run():
            call(images).numpy()

    run()  # compile
    start = time.perf_counter()
    for _ in range(REPEATS):
        run()
    return (time.perf_counter() - start) / REPEATS * 1000


def main() -> None:
    images = np.random.default_rng(0).normal(size=(8, 64, 64, 96)).astype("float32")
    result = {
        "backend": keras.backend.backend(),
        "depthwise3x3_ms": round(
            forward_ms(keras.layers.DepthwiseConv2D(3, padding="same"), images), 2
        ),
        "conv1x1_ms": round(forward_ms(keras.layers.Conv2D(96, 1), images), 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
