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


def _gem_reference(layer, inputs):
    return numpy_gem(inputs[0], float(keras.ops.convert_to_numpy(layer.p)), layer.eps)


def test_gem_layer_checks_and_float32_math_under_mixed_precision():
    run_layer_test(
        GeM,
        {"p": 3.0},
        (2, 5, 7, 6),
        (2, 6),
        expect_weights=True,
        mixed_output_dtype="float32",
        float32_reference=_gem_reference,
    )


@keras.saving.register_keras_serializable(package="landmarks")
class _ComputeDtypeGeM(GeM):
    """Wrong GeM for the control below: pools in the compute dtype (bfloat16/float16)."""

    def call(self, inputs):
        p = keras.ops.cast(self.p, inputs.dtype)
        pooled = keras.ops.mean(keras.ops.power(keras.ops.maximum(inputs, self.eps), p), (1, 2))
        return keras.ops.cast(keras.ops.power(pooled, 1.0 / p), "float32")


def test_the_float32_reference_check_rejects_gem_math_in_the_compute_dtype():
    """Test of the test: the same check fails when the pooling is done in bfloat16/float16."""
    with pytest.raises(AssertionError, match="float32 reference"):
        run_layer_test(
            _ComputeDtypeGeM, {"p": 3.0}, (2, 5, 7, 6), (2, 6), float32_reference=_gem_reference
        )


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
