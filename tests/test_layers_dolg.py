"""DOLG layers: shared layer checks, numpy references, orthogonality and spatial equivariance."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from layer_helper import run_layer_test
from test_gem import numpy_gem

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


def _numpy_batch_norm(x: np.ndarray, bn) -> np.ndarray:
    """Inference-mode batch norm from the layer's weights (gamma, beta, moving mean, variance)."""
    gamma, beta, mean, var = bn.get_weights()
    return (x - mean) / np.sqrt(var + bn.epsilon) * gamma + beta


def numpy_conv(x: np.ndarray, conv, dilation: int = 1) -> np.ndarray:
    """A 'same' 3x3 (dilated) or 1x1 convolution from the layer's kernel and bias, by taps:
    out[y, x] = sum_{i,j} x_padded[y + i*d, x + j*d] @ kernel[i, j] + bias."""
    kernel, bias = conv.get_weights()
    size = kernel.shape[0]
    pad = dilation * (size // 2)
    b, h, w, _ = x.shape
    padded = np.pad(x.astype(np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out = np.zeros((b, h, w, kernel.shape[-1])) + bias
    for i in range(size):
        for j in range(size):
            tap = padded[:, i * dilation : i * dilation + h, j * dilation : j * dilation + w]
            out += tap @ kernel[i, j]
    return out


def numpy_multi_atrous(x: np.ndarray, layer) -> np.ndarray:
    """Branches (3x3 dilated convs; image pool: mean -> 1x1 conv -> ReLU, broadcast), concat,
    1x1 projection + ReLU."""
    branches = [
        numpy_conv(x, conv, rate) for conv, rate in zip(layer.atrous, layer.dilations, strict=True)
    ]
    pooled = np.maximum(numpy_conv(x.mean(axis=(1, 2), keepdims=True), layer.pool_conv), 0)
    branches.append(np.broadcast_to(pooled, (*x.shape[:3], pooled.shape[-1])))
    return np.maximum(numpy_conv(np.concatenate(branches, axis=-1), layer.project), 0)


def numpy_spatial_attention(x: np.ndarray, layer) -> np.ndarray:
    """f = BN(conv1x1(x)); f / |f| (per position) * softplus(conv1x1(ReLU(f)))."""
    f = _numpy_batch_norm(x.astype(np.float64) @ layer.conv.get_weights()[0][0, 0], layer.bn)
    att_kernel, att_bias = layer.attention_conv.get_weights()
    att = np.log1p(np.exp(np.maximum(f, 0) @ att_kernel[0, 0] + att_bias))
    return f / np.linalg.norm(f, axis=-1, keepdims=True) * att


def numpy_dolg_head(stride16: np.ndarray, stride32: np.ndarray, head) -> np.ndarray:
    """The DOLG head (inference) composed in float64 from its sub-layers' weights: local branch,
    GeM + Dense, orthogonal fusion, MEAN over positions, Dense neck (dropout is off)."""
    local_branch = head.local_branch
    local = numpy_spatial_attention(
        numpy_multi_atrous(stride16, local_branch.multi_atrous), local_branch.attention
    )
    dense_kernel, dense_bias = head.global_dense.get_weights()
    p = float(keras.ops.convert_to_numpy(head.gem.p))
    global_ = numpy_gem(stride32, p, head.gem.eps) @ dense_kernel + dense_bias
    fused = numpy_fusion(local, global_)
    neck_kernel, neck_bias = head.neck.get_weights()
    return fused.mean(axis=(1, 2)) @ neck_kernel + neck_bias


def _randomised_head(seed: int, head_cls: type = DOLGHead) -> DOLGHead:
    """A built DOLG head whose biases, batch-norm statistics and GeM p are all non-trivial, so
    that a reference that skips any of them is caught."""
    head = head_cls(local_dim=8, embedding_dim=6, dilations=[1, 2, 6])
    head.build([(2, 5, 5, 4), (2, 3, 3, 7)])
    rng = np.random.default_rng(seed)
    for variable in head.weights:
        shape = tuple(variable.shape)
        if variable.path.endswith("moving_variance"):
            value = rng.uniform(0.5, 2.0, shape)
        elif variable.path.endswith("/p"):
            value = np.float32(2.5)
        else:
            value = 0.5 * rng.standard_normal(shape)
        variable.assign(np.asarray(value, "float32"))
    return head


def assert_head_matches_numpy(head) -> None:
    """The head's eval output on a 5x5 stride-16 map (dilation 6 takes the centre-tap path) and
    a 3x3 stride-32 map equals the numpy composition at 1e-5."""
    rng = np.random.default_rng(11)
    stride16 = rng.standard_normal((2, 5, 5, 4)).astype("float32")
    stride32 = rng.standard_normal((2, 3, 3, 7)).astype("float32")
    out = keras.ops.convert_to_numpy(head([stride16, stride32], training=False))
    expected = numpy_dolg_head(stride16, stride32, head)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_layer_checks_multi_atrous():
    run_layer_test(
        MultiAtrous, {"filters": 8, "dilations": [1, 2]}, (2, 6, 5, 4), (2, 6, 5, 8), call_kwargs={}
    )


def _attention_island_reference(layer, inputs):
    """The float32 island of SpatialAttention2D: per-position norm, softplus and product, on
    the layer's own 1x1 convolutions and batch norm (which run in the compute dtype)."""
    features = layer.bn(layer.conv(inputs[0]), training=False)
    logits = layer.attention_conv(keras.ops.relu(features))
    f, a = (
        np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(t, "float32")), np.float64)
        for t in (features, logits)
    )
    norm = np.maximum(np.linalg.norm(f, axis=-1, keepdims=True), layer.eps)
    return f / norm * np.log1p(np.exp(a))


def test_layer_checks_spatial_attention():
    run_layer_test(
        SpatialAttention2D,
        {"filters": 6},
        (2, 5, 4, 3),
        (2, 5, 4, 6),
        call_kwargs=EVAL,
        float32_reference=_attention_island_reference,
    )


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
        OrthogonalFusion,
        {},
        [(2, 3, 4, 6), (2, 6)],
        (2, 3, 4, 12),
        expect_weights=False,
        float32_reference=lambda layer, inputs: numpy_fusion(*inputs),
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

    expected = numpy_spatial_attention(x, layer)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    # each position is normalised on its own: output norms equal the per-position attention
    f = _numpy_batch_norm(x.astype(np.float64) @ layer.conv.get_weights()[0][0, 0], layer.bn)
    att_kernel, att_bias = layer.attention_conv.get_weights()
    att = np.log1p(np.exp(np.maximum(f, 0) @ att_kernel[0, 0] + att_bias))[..., 0]
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), att, rtol=1e-4)


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


def test_dolg_head_equals_the_numpy_composition_of_its_sub_layers():
    assert_head_matches_numpy(_randomised_head(seed=12))


class _SumPooledHead(DOLGHead):
    """Wrong head: sums the fused map over positions instead of averaging it."""

    def call(self, inputs, training=None):
        local = self.local_branch(inputs[0], training=training)
        fused = self.fusion([local, self.global_dense(self.gem(inputs[1]))])
        return self.neck(keras.ops.sum(fused, axis=(1, 2)))


class _GeMPooledHead(DOLGHead):
    """Wrong head: GeM over the fused map (clamps the orthogonal part's negative values)."""

    def call(self, inputs, training=None):
        local = self.local_branch(inputs[0], training=training)
        fused = self.fusion([local, self.global_dense(self.gem(inputs[1]))])
        return self.neck(self.gem(fused))


@pytest.mark.parametrize("wrong_head", [_SumPooledHead, _GeMPooledHead])
def test_the_numpy_head_check_rejects_a_wrong_pooling(wrong_head):
    """Test of the test: the same check fails a head that pools the fused map otherwise."""
    with pytest.raises(AssertionError):
        assert_head_matches_numpy(_randomised_head(seed=12, head_cls=wrong_head))


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
