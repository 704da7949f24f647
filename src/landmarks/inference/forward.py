"""A Keras model's inference call, compiled once per batch shape, on either backend.

Calling a Keras model eagerly dispatches op by op (slow; on a TPU very slow). `compiled_forward`
returns a callable (numpy images float32 [B, H, W, 3], training=False) -> numpy float32 [B, D]
(`training` is accepted for the calling convention of landmarks.inference.embed and ignored):

  tensorflow  a tf.function of the model; under a tf.distribute strategy every replica gets the
              same batch and the first replica's result is used (no collective needed);
  jax         a jax.jit of `model.stateless_call` whose batch is split over every local JAX
              device (padded to a multiple of the device count, the padding dropped after)
              and whose weights are replicated on them; the weights are read at every call,
              so a model that is training is embedded with its current weights (under JAX over
              several processes, this process's copy: each process embeds on its own).
"""

from __future__ import annotations

import numpy as np


def compiled_forward(model, strategy=None):
    """`model(images, training=False)` compiled; see the module docstring. `strategy`: the
    tf.distribute strategy of a training run (TensorFlow only; None outside one)."""
    import keras

    if keras.backend.backend() == "jax":
        return _jax_forward(model)
    return _tensorflow_forward(model, strategy)


def _tensorflow_forward(model, strategy):
    import tensorflow as tf

    if strategy is None:
        traced = tf.function(lambda images: model(images, training=False), reduce_retracing=True)
        return lambda images, training=False: np.asarray(traced(images), np.float32)

    @tf.function(reduce_retracing=True)
    def replicated(images):
        return strategy.run(lambda x: model(x, training=False), args=(images,))

    def call(images, training=False):
        return np.asarray(strategy.experimental_local_results(replicated(images))[0], np.float32)

    return call


def _jax_forward(model):
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = jax.local_devices()
    mesh = Mesh(np.asarray(devices), ("batch",))
    replicated = NamedSharding(mesh, PartitionSpec())
    split = NamedSharding(mesh, PartitionSpec("batch"))

    @jax.jit
    def run(trainable, non_trainable, images):
        outputs, _ = model.stateless_call(trainable, non_trainable, images, training=False)
        return outputs

    cache = {}  # ids of the variables' current values -> those values on every device

    def weights():
        values = [v.value for v in model.trainable_variables + model.non_trainable_variables]
        key = tuple(id(value) for value in values)
        if cache.get("key") != key:
            placed = [jax.device_put(_local_copy(value), replicated) for value in values]
            cut = len(model.trainable_variables)
            cache.update(key=key, values=(placed[:cut], placed[cut:]))
        return cache["values"]

    def call(images, training=False):
        images = np.asarray(images, np.float32)
        count = images.shape[0]
        padding = -count % len(devices)
        if padding:
            images = np.concatenate([images, np.zeros((padding, *images.shape[1:]), np.float32)])
        trainable, non_trainable = weights()
        outputs = run(trainable, non_trainable, jax.device_put(images, split))
        return np.asarray(outputs, np.float32)[:count]

    return call


def _local_copy(value):
    """A replicated weight as this process holds it: under JAX over several processes the
    training weights span every process's devices, and the forward runs on this process's
    devices alone (no collective, so the processes need not embed in step)."""
    if getattr(value, "is_fully_addressable", True):
        return value
    return value.addressable_data(0)
