"""Generalized-mean (GeM) pooling with a trainable exponent."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="landmarks")
class GeM(keras.layers.Layer):
    """GeM pooling: `(mean_{h,w} max(x, eps)^p)^(1/p)` over the spatial axes.

    Input (B, H, W, C) of any H, W; output float32 (B, C). The math is float32 under mixed
    precision and `p` is a float32 variable that is never autocast. Values are clamped to
    `eps` BEFORE the power, so negative inputs and zeros give no NaN (forward or gradient).
    p = 1 is average pooling; p -> infinity tends to max pooling.

    Args:
        p: initial exponent.
        eps: clamp floor of the input.
        trainable: (Keras) False freezes `p`, the layer's only weight.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.initial_p = float(p)
        self.eps = float(eps)

    def build(self, input_shape):
        self.p = self.add_weight(
            name="p",
            shape=(),
            initializer=keras.initializers.Constant(self.initial_p),
            dtype="float32",
            autocast=False,
        )

    def call(self, inputs):
        x = ops.maximum(ops.cast(inputs, "float32"), self.eps)
        p = ops.cast(self.p, "float32")
        pooled = ops.mean(ops.power(x, p), axis=(1, 2))
        return ops.power(pooled, 1.0 / p)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(self.compute_output_shape(inputs.shape), dtype="float32")

    def get_config(self):
        return {
            **super().get_config(),
            "p": self.initial_p,
            "eps": self.eps,
        }
