"""landmarks.layers.DepthwiseConv2D against a numpy depthwise convolution written out loop by
loop, and its gradients against Keras' own layer, on both backends (on JAX on this CPU it runs
its shifted multiply-adds, on TensorFlow Keras' code)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from layer_helper import gradients, run_layer_test

from landmarks.layers import DepthwiseConv2D

pytestmark = pytest.mark.backends


def numpy_depthwise(x, kernel, bias, stride, dilation, padding):
    """x [B, H, W, C], kernel [kh, kw, C, M] -> [B, H', W', C * M], float64, by definition."""
    batch, height, width, channels = x.shape
    kh, kw, _, multiplier = kernel.shape
    spans = [(k - 1) * dilation + 1 for k in (kh, kw)]
    if padding == "same":
        outs = [-(-height // stride), -(-width // stride)]
        totals = [
            max((o - 1) * stride + s - n, 0)
            for o, s, n in zip(outs, spans, (height, width), strict=True)
        ]
        pads = [(t // 2, t - t // 2) for t in totals]
    else:
        outs = [(n - s) // stride + 1 for n, s in zip((height, width), spans, strict=True)]
        pads = [(0, 0), (0, 0)]
    padded = np.pad(x.astype(np.float64), ((0, 0), pads[0], pads[1], (0, 0)))
    out = np.zeros((batch, outs[0], outs[1], channels * multiplier))
    for r in range(outs[0]):
        for q in range(outs[1]):
            for c in range(channels):
                for m in range(multiplier):
                    total = np.zeros(batch)
                    for i in range(kh):
                        for j in range(kw):
                            pixel = padded[
                                :, r * stride + i * dilation, q * stride + j * dilation, c
                            ]
                            total += pixel * kernel[i, j, c, m]
                    out[:, r, q, c * multiplier + m] = total + (
                        0 if bias is None else bias[c * multiplier + m]
                    )
    return out


CASES = [  # kernel, stride, dilation, multiplier, padding, input H x W
    (3, 1, 1, 1, "same", (9, 8)),
    (3, 2, 1, 1, "same", (8, 8)),  # even size at stride 2: one row of padding, at the bottom
    (5, 2, 1, 1, "same", (9, 7)),
    (3, 1, 2, 2, "same", (7, 7)),
    (3, 2, 1, 2, "valid", (9, 8)),
]


@pytest.mark.parametrize("kernel,stride,dilation,multiplier,padding,size", CASES)
def test_matches_the_definition(kernel, stride, dilation, multiplier, padding, size):
    rng = np.random.default_rng(kernel + stride + multiplier)
    x = rng.standard_normal((2, *size, 3)).astype("float32")
    layer = DepthwiseConv2D(
        kernel, strides=stride, dilation_rate=dilation, depth_multiplier=multiplier,
        padding=padding, use_bias=True, bias_initializer="random_normal",
    )  # fmt: skip
    out = keras.ops.convert_to_numpy(layer(x))
    weights = [np.asarray(w) for w in layer.get_weights()]
    expected = numpy_depthwise(x, weights[0], weights[1], stride, dilation, padding)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_gradients_equal_keras_own_layer():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 10, 10, 4)).astype("float32")
    ours = DepthwiseConv2D(3, strides=2, padding="same", use_bias=False)
    theirs = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False)
    ours.build(x.shape)
    theirs.build(x.shape)
    theirs.set_weights(ours.get_weights())

    def loss(y):
        return keras.ops.sum(keras.ops.square(y))

    np.testing.assert_allclose(
        gradients(ours, x, loss)[0], gradients(theirs, x, loss)[0], rtol=1e-4, atol=1e-4
    )


def test_layer_checks():
    run_layer_test(
        DepthwiseConv2D,
        {"kernel_size": 3, "strides": 2, "padding": "same", "use_bias": False},
        (2, 8, 8, 5),
        (2, 4, 4, 5),
        expect_weights=True,
    )


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="the shifted form is JAX's")
def test_on_jax_on_a_cpu_no_convolution_is_traced():
    import jax

    layer = DepthwiseConv2D(3, padding="same", use_bias=False)
    x = np.ones((1, 6, 6, 2), "float32")
    layer.build(x.shape)
    kernel = [layer.kernel.value]
    traced = str(jax.make_jaxpr(lambda k: layer.stateless_call(k, [], x)[0])(kernel))
    assert jax.default_backend() == "cpu"
    assert "conv_general_dilated" not in traced and "mul" in traced
    reference = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False)
    reference.build(x.shape)
    assert "conv_general_dilated" in str(
        jax.make_jaxpr(lambda k: reference.stateless_call(k, [], x)[0])([reference.kernel.value])
    )
