"""Where JAX's CPU time goes in EfficientNets, and what landmarks.layers.DepthwiseConv2D wins
back: Keras' DepthwiseConv2D 3x3, landmarks' DepthwiseConv2D 3x3 and a Conv2D 1x1 on the same
input [8, 64, 64, 96], compiled (tf.function on TensorFlow, jax.jit on JAX), forward alone and
forward + gradients (of the input and the kernel).

The backend is fixed per process: run it once per backend. Each run prints one JSON object with
the milliseconds of each layer and, as the ratio, `keras_over_landmarks_*`: Keras' layer time
over landmarks' (> 1: ours is faster; 1.0 on TensorFlow, where ours is Keras' code).

    KERAS_BACKEND=tensorflow .venv/bin/python bench/depthwise.py
    KERAS_BACKEND=jax .venv/bin/python bench/depthwise.py
"""

from __future__ import annotations

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from landmarks.layers import DepthwiseConv2D  # noqa: E402

REPEATS = 20


def _compiled(model, with_gradients: bool):
    """A function of images that runs `model` (and its gradients), blocking until done."""
    if keras.backend.backend() == "jax":
        import jax

        values = [variable.value for variable in model.trainable_variables]

        def loss(trainable, x):
            return (model.stateless_call(trainable, [], x)[0] ** 2).sum()

        call = jax.jit(jax.grad(loss, (0, 1)) if with_gradients else lambda v, x: loss(v, x))
        return lambda x: jax.block_until_ready(call(values, x))
    import tensorflow as tf

    @tf.function
    def call(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = tf.reduce_sum(model(x) ** 2)
        if with_gradients:
            return tape.gradient(value, [x, *model.trainable_variables])
        return value

    return lambda x: tf.nest.map_structure(lambda t: t.numpy(), call(x))


def milliseconds(layer, images: np.ndarray, with_gradients: bool) -> float:
    """Mean milliseconds of one compiled call of `layer` on `images`."""
    model = keras.Sequential([keras.Input(images.shape[1:]), layer])
    run = _compiled(model, with_gradients)
    run(images)  # compile
    start = time.perf_counter()
    for _ in range(REPEATS):
        run(images)
    return round((time.perf_counter() - start) / REPEATS * 1000, 2)


def main() -> None:
    images = np.random.default_rng(0).normal(size=(8, 64, 64, 96)).astype("float32")
    result = {"backend": keras.backend.backend()}
    for mode, with_gradients in (("forward", False), ("train", True)):
        layers = {
            "keras_depthwise3x3": keras.layers.DepthwiseConv2D(3, padding="same"),
            "landmarks_depthwise3x3": DepthwiseConv2D(3, padding="same"),
            "conv1x1": keras.layers.Conv2D(96, 1),
        }
        for name, layer in layers.items():
            result[f"{name}_{mode}_ms"] = milliseconds(layer, images, with_gradients)
        result[f"keras_over_landmarks_{mode}"] = round(
            result[f"keras_depthwise3x3_{mode}_ms"] / result[f"landmarks_depthwise3x3_{mode}_ms"], 2
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
