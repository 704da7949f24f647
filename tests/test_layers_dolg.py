"""DOLG layers: shared layer checks, numpy references, orthogonality and spatial equivariance."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from layer_helper import run_layer_test

from landmarks.layers import (
    DOLGHead,
    LocalBranch,
    MultiAtrous,
    OrthogonalFusion,
    SpatialAttention2D,
)

EVAL = {"training": False}

pytestmark = pytest.mark.backends


def numpy_fusion(local: np.ndarray, global_: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Reference loop: per sample and position, remove the projection on the global vector."""
    b, h, w, c = local.shape
    out = np.zeros((b, h, w, 2 * c))
    for i in range(b):
        g = global_[i].astype(np.float64)
        for y in range(h):
            for x in range(w):
                v = local[i, y, x].astype(np.float64)
                out[i, y, x, :c] = g
                out[i, y, x, c:] = v - (v @ g) / max(g @ g, eps) * g
    return out


def test_layer_checks_multi_atrous():
    run_layer_test(
        MultiAtrous, {"filters": 8, "dilations": [1, 2]}, (2, 6, 5, 4), (2, 6, 5, 8), call_kwargs={}
    )


def test_layer_checks_spatial_attention():
    run_layer_test(SpatialAttention2D, {"filters": 6}, (2, 5, 4, 3), (2, 5, 4, 6), call_kwargs=EVAL)


def test_layer_checks_local_branch():
    run_layer_test(
        LocalBranch,
        {"filters": 8, "dilations": [1, 3]},
        (2, 6, 6, 5),
        (2, 6, 6, 8),
        call_kwargs=EVAL,
    )


def test_layer_checks_orthogonal_fusion():
    run_layer_test(
        OrthogonalFusion, {}, [(2, 3, 4, 6), (2, 6)], (2, 3, 4, 12), expect_weights=False
    )


def test_layer_checks_dolg_head():
    run_layer_test(
        DOLGHead,
        {"local_dim": 8, "embedding_dim": 5, "dilations": [1, 2], "dropout": 0.1},
        [(2, 4, 4, 6), (2, 2, 2, 10)],
        (2, 5),
        call_kwargs=EVAL,
    )


def test_orthogonal_fusion_matches_numpy_and_is_orthogonal():
    rng = np.random.default_rng(3)
    local = rng.standard_normal((3, 4, 5, 16)).astype("float32")
    global_ = rng.standard_normal((3, 16)).astype("float32")
    out = keras.ops.convert_to_numpy(OrthogonalFusion()([local, global_]))
    np.testing.assert_allclose(out, numpy_fusion(local, global_), atol=1e-5)
    orthogonal = out[..., 16:]
    cos = np.einsum("bhwc,bc->bhw", orthogonal, global_) / (
        np.linalg.norm(orthogonal, axis=-1) * np.linalg.norm(global_, axis=-1)[:, None, None]
    )
    assert np.max(np.abs(cos)) < 1e-5
    # the global half is the global vector at every position (broadcast, not reshaped)
    np.testing.assert_array_equal(
        out[..., :16], np.broadcast_to(global_[:, None, None], (3, 4, 5, 16))
    )


def test_orthogonal_fusion_zero_global_vector_is_safe():
    local = np.ones((1, 2, 2, 3), "float32")
    out = keras.ops.convert_to_numpy(OrthogonalFusion()([local, np.zeros((1, 3), "float32")]))
    np.testing.assert_array_equal(out[..., 3:], local)
    assert np.all(out[..., :3] == 0)


def test_spatial_attention_matches_numpy():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 4, 5)).astype("float32")
    layer = SpatialAttention2D(6)
    layer.build(x.shape)
    # non-trivial batch-norm statistics so that the reference must apply them
    gamma, beta = rng.uniform(0.5, 2, 6), rng.standard_normal(6)
    mean, var = rng.standard_normal(6), rng.uniform(0.5, 2, 6)
    layer.bn.set_weights([w.astype("float32") for w in (gamma, beta, mean, var)])
    out = keras.ops.convert_to_numpy(layer(x, training=False))

    kernel = layer.conv.get_weights()[0][0, 0]  # (5, 6)
    att_kernel, att_bias = layer.attention_conv.get_weights()
    f = x.astype(np.float64) @ kernel
    f = (f - mean) / np.sqrt(var + layer.bn.epsilon) * gamma + beta
    att = np.log1p(np.exp(np.maximum(f, 0) @ att_kernel[0, 0] + att_bias))  # (2,3,4,1)
    expected = f / np.linalg.norm(f, axis=-1, keepdims=True) * att
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    # each position is normalised on its own: output norms equal the per-position attention
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), att[..., 0], rtol=1e-4)


@pytest.mark.parametrize("dilations", [[1, 2], [6, 12, 18]])
def test_local_branch_is_translation_equivariant_and_not_constant(dilations):
    """Zero padding equals the zero background when the content stays inside the map, so
    shifting the content shifts the output exactly (for every dilation; the image-pool mean is
    unchanged because the same values are summed over the same area)."""
    rng = np.random.default_rng(6)
    size, shift = 14, (3, 2)
    x = np.zeros((1, size, size, 4), "float32")
    x[0, 3:8, 2:7] = rng.standard_normal((5, 5, 4))
    moved = np.roll(x, shift, axis=(1, 2))  # content only moves within the zero background
    assert np.abs(moved).sum() == pytest.approx(np.abs(x).sum())

    layer = LocalBranch(8, dilations)
    out = keras.ops.convert_to_numpy(layer(x, training=False))
    out_moved = keras.ops.convert_to_numpy(layer(moved, training=False))
    dy, dx = shift
    np.testing.assert_allclose(out_moved[:, dy:, dx:], out[:, : size - dy, : size - dx], atol=1e-5)
    # the map is not pooled away: positions differ a lot
    per_position = out.reshape(-1, 8)
    assert np.std(per_position, axis=0).max() > 1e-2 * np.abs(per_position).max()


def test_multi_atrous_centre_tap_shortcut_equals_the_dilated_conv():
    """A map no larger than the dilation takes the centre-tap path; it must equal Conv2D."""
    layer = MultiAtrous(8, [2, 6])
    x = np.random.default_rng(8).standard_normal((2, 5, 6, 4)).astype("float32")
    layer(x)
    from landmarks.layers.dolg import _atrous_branch

    for conv, rate in zip(layer.atrous, layer.dilations, strict=True):
        np.testing.assert_allclose(_atrous_branch(conv, rate, x), conv(x), atol=1e-5)
    # the whole layer equals the same layer traced for an unknown size (native convs only); JAX
    # traces every shape as static, so this part is TensorFlow's alone
    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    dynamic = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, 4))])
    np.testing.assert_allclose(dynamic(x), layer(x), atol=1e-5)


def test_multi_atrous_accepts_any_spatial_size():
    layer = MultiAtrous(8, [1, 2])
    inputs = keras.Input((None, None, 4))
    model = keras.Model(inputs, layer(inputs))
    for h, w in [(3, 5), (7, 2)]:
        out = model(np.ones((2, h, w, 4), "float32"))
        assert tuple(out.shape) == (2, h, w, 8)


def test_dolg_head_two_sizes_and_uses_the_local_map():
    head = DOLGHead(local_dim=8, embedding_dim=6, dilations=[1, 2])
    rng = np.random.default_rng(7)
    for s in (4, 6):
        f16 = rng.standard_normal((2, s, s, 5)).astype("float32")
        f32 = rng.standard_normal((2, s // 2, s // 2, 7)).astype("float32")
        out = keras.ops.convert_to_numpy(head([f16, f32], training=False))
        assert out.shape == (2, 6)
        changed = keras.ops.convert_to_numpy(head([f16 * 2 + 1, f32], training=False))
        assert np.abs(changed - out).max() > 1e-4
