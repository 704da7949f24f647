"""SubCenterArcFace and dynamic_margins against independent numpy references."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from layer_helper import run_layer_test

from landmarks.errors import DataError
from landmarks.layers import SubCenterArcFace, dynamic_margins

pytestmark = pytest.mark.backends


def numpy_arcface(emb, centers, num_classes, k, scale, margins, labels=None):
    """Reference written from the definitions: centers (D, N*k), margins per class (N,)."""
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    w = centers / np.linalg.norm(centers, axis=0, keepdims=True)
    cos = (e @ w).reshape(len(emb), num_classes, k).max(axis=2)
    if labels is None:
        return scale * cos
    out = cos.copy()
    for row, label in enumerate(labels):
        m = margins[label]
        c = cos[row, label]
        theta = math.acos(np.clip(c, -1, 1))
        if theta + m <= math.pi:
            out[row, label] = math.cos(theta + m)
        else:
            out[row, label] = c - math.sin(m) * m
    return scale * out


def _layer_with_centers(num_classes, k, margin, dim, seed=0):
    layer = SubCenterArcFace(num_classes, k=k, scale=30.0, margin=margin)
    layer.build((None, dim))
    centers = np.random.default_rng(seed).standard_normal((dim, num_classes * k)).astype("float32")
    layer.set_weights([centers])
    return layer, centers


def _arcface_reference(layer, inputs):
    """numpy_arcface from the fresh layer's sub-centres, with or without labels."""
    centers = np.asarray(keras.ops.convert_to_numpy(layer.sub_centers), np.float64)
    margins = np.broadcast_to(np.asarray(layer.margin, np.float64), (layer.num_classes,))
    labels = inputs[1] if len(inputs) > 1 else None
    return numpy_arcface(
        inputs[0], centers, layer.num_classes, layer.k, layer.scale, margins, labels
    )


def test_arcface_layer_checks_with_and_without_labels():
    emb = np.random.default_rng(0).standard_normal((4, 8)).astype("float32")
    labels = np.array([0, 2, 1, 4], "int32")
    kwargs = {"num_classes": 5, "k": 3, "margin": [0.1, 0.2, 0.3, 0.4, 0.5]}
    for input_data in ([emb, labels], emb):
        # float32 math on bfloat16/float16-rounded embeddings: logits (scale 30) within 3e-5
        run_layer_test(
            SubCenterArcFace,
            kwargs,
            input_data=input_data,
            expected_output_shape=(4, 5),
            mixed_output_dtype="float32",
            float32_reference=_arcface_reference,
            reference_rtol=1e-6,
            reference_atol=3e-5,
        )


@pytest.mark.parametrize("margin", [0.3, "per_class"])
def test_arcface_matches_numpy(margin):
    num_classes, k, dim = 6, 3, 16
    margins = (
        np.linspace(0.05, 0.5, num_classes) if margin == "per_class" else np.full(num_classes, 0.3)
    )
    layer_margin = list(margins) if margin == "per_class" else 0.3
    layer, centers = _layer_with_centers(num_classes, k, layer_margin, dim)
    rng = np.random.default_rng(5)
    emb = rng.standard_normal((8, dim)).astype("float32")
    labels = rng.integers(0, num_classes, 8).astype("int32")
    with_labels = keras.ops.convert_to_numpy(layer([emb, labels]))
    expected = numpy_arcface(emb, centers, num_classes, k, 30.0, margins, labels)
    np.testing.assert_allclose(with_labels, expected, atol=2e-4)
    without = keras.ops.convert_to_numpy(layer(emb))
    np.testing.assert_allclose(
        without, numpy_arcface(emb, centers, num_classes, k, 30.0, margins), atol=2e-4
    )
    # the margin only ever lowers the target logit
    rows = np.arange(8)
    assert np.all(with_labels[rows, labels] < without[rows, labels])


def test_arcface_fallback_when_theta_plus_margin_exceeds_pi():
    # One class, one sub-centre along e0; embeddings at angles with theta + m < pi and > pi.
    margin = 0.5
    layer = SubCenterArcFace(1, k=1, scale=1.0, margin=margin)
    layer.build((None, 2))
    layer.set_weights([np.array([[1.0], [0.0]], "float32")])
    thetas = np.array([1.0, 2.5, 2.8, 3.0])  # pi - m = 2.64: the last two take the fallback
    emb = np.stack([np.cos(thetas), np.sin(thetas)], axis=1).astype("float32")
    out = keras.ops.convert_to_numpy(layer([emb, np.zeros(4, "int32")]))[:, 0]
    expected = [
        math.cos(1.0 + margin),
        math.cos(2.5 + margin),
        math.cos(2.8) - math.sin(margin) * margin,
        math.cos(3.0) - math.sin(margin) * margin,
    ]
    np.testing.assert_allclose(out, expected, atol=1e-5)
    # the fallback keeps phi decreasing in theta (no jump upwards after pi - m)
    assert np.all(np.diff(out) < 0)


def test_arcface_sub_centres_take_the_max():
    layer = SubCenterArcFace(2, k=2, scale=1.0, margin=0.0)
    layer.build((None, 2))
    # class 0: centres e0 and -e0; class 1: centres e1 and -e1
    layer.set_weights([np.array([[1, -1, 0, 0], [0, 0, 1, -1]], "float32")])
    out = keras.ops.convert_to_numpy(layer(np.array([[-3.0, 0.0]], "float32")))
    np.testing.assert_allclose(out, [[1.0, 0.0]], atol=1e-6)


def test_arcface_rejects_wrong_number_of_margins():
    with pytest.raises(ValueError, match="3 margins for 4 classes"):
        SubCenterArcFace(4, margin=[0.1, 0.2, 0.3])


def test_dynamic_margins_hand_worked_example():
    # counts 1, 16, 81, 10000 -> n^-1/4 = 1, 0.5, 1/3, 0.1; span 0.9
    # margin = 0.05 + 0.45 * (f - 0.1) / 0.9  -> 0.5, 0.25, 0.1667, 0.05
    margins = dynamic_margins([1, 16, 81, 10000], low=0.05, high=0.5)
    np.testing.assert_allclose(
        margins, [0.5, 0.25, 0.05 + 0.45 * (1 / 3 - 0.1) / 0.9, 0.05], rtol=1e-6
    )
    assert margins.dtype == np.float32


def test_dynamic_margins_equal_counts_and_bad_counts():
    np.testing.assert_allclose(dynamic_margins([7, 7, 7], low=0.1, high=0.3), [0.2, 0.2, 0.2])
    with pytest.raises(DataError, match="class 1 has count 0"):
        dynamic_margins([3, 0, 2])
    with pytest.raises(DataError, match="empty"):
        dynamic_margins([])
