"""GeM pooling against a numpy reference, NaN safety, and the shared layer checks."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from layer_helper import gradients, run_layer_test

from landmarks.layers import GeM

pytestmark = pytest.mark.backends


def numpy_gem(x: np.ndarray, p: float, eps: float) -> np.ndarray:
    clamped = np.maximum(x.astype(np.float64), eps)
    return np.mean(clamped**p, axis=(1, 2)) ** (1.0 / p)


def test_gem_layer_checks():
    run_layer_test(GeM, {"p": 3.0}, (2, 5, 7, 6), (2, 6), expect_weights=True)


def test_gem_matches_numpy_reference_including_negatives():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4, 5, 8)).astype("float32")  # half the values are negative
    for p in (1.0, 3.0, 4.5):
        out = keras.ops.convert_to_numpy(GeM(p=p)(x))
        np.testing.assert_allclose(out, numpy_gem(x, p, 1e-6), rtol=1e-5, atol=1e-6)


def test_gem_p_is_trainable_and_gradients_are_finite_on_zeros():
    layer = GeM()
    x = np.zeros((2, 3, 3, 4), "float32")
    x[0, 0, 0, 0] = 2.0
    out = layer(x)
    grads = gradients(layer, x, keras.ops.sum)
    assert [w.name for w in layer.trainable_weights] == ["p"]
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(out)))
    assert np.isfinite(float(grads[0])) and float(grads[0]) != 0.0
    assert GeM(trainable=False).trainable_weights == []


def test_gem_stays_float32_under_bfloat16():
    previous = keras.config.dtype_policy()
    try:
        keras.config.set_dtype_policy("mixed_bfloat16")
        layer = GeM(p=3.0)
        x = np.abs(np.random.default_rng(2).standard_normal((2, 4, 4, 3))).astype("float32")
        out = layer(x)
        assert keras.backend.standardize_dtype(out.dtype) == "float32"
        # input autocast to bf16 loses ~3 digits; the pooling math itself is float32
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(out), numpy_gem(x, 3.0, 1e-6), rtol=1e-2
        )
    finally:
        keras.config.set_dtype_policy(previous)
