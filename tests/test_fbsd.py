"""FBSD layers (FBSM, FDM, TopKPool, FBSDHead) against numpy references written here."""

from __future__ import annotations

import math

import numpy as np
import pytest
from layer_helper import run_layer_test
from model_helpers import assert_reloads_the_same

from landmarks.layers.fbsd import FBSM, FDM, FBSDHead, TopKPool


def _softmax(v, axis):
    e = np.exp(v - v.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _fbsm_reference(x, kernel, bias, bn, k, alpha, beta):
    """Per image: score map, strips by slicing rows [ceil(iH/k), ceil((i+1)H/k)), softmax over
    the non-empty strips, boost every row by its strip's score, suppress the top strip."""
    gamma, shift, mean, var, eps = bn
    height = x.shape[1]
    bounds = [math.ceil(i * height / k) for i in range(k + 1)]
    strips = [(bounds[i], bounds[i + 1]) for i in range(k) if bounds[i + 1] > bounds[i]]
    boosted, suppressed = np.empty_like(x), np.empty_like(x)
    for n in range(x.shape[0]):
        z = x[n] @ kernel + bias  # [H, W, 1]
        z = np.maximum(gamma * (z - mean) / np.sqrt(var + eps) + shift, 0.0)
        scores = _softmax(np.array([z[a:b].mean() for a, b in strips]), axis=0)
        top = scores.max()
        for (a, b), s in zip(strips, scores, strict=True):
            boosted[n, a:b] = x[n, a:b] + alpha * x[n, a:b] * s
            suppressed[n, a:b] = x[n, a:b] * (beta if s >= top else 1.0)
    return boosted, suppressed


@pytest.mark.backends
@pytest.mark.parametrize("height,strips", [(8, 4), (6, 4), (2, 4), (5, 1)])
def test_fbsm_matches_numpy(height, strips):
    rng = np.random.default_rng(height * 10 + strips)
    x = rng.standard_normal((3, height, 5, 6)).astype("float32")
    layer = FBSM(strips, alpha=0.7, beta=0.3)
    layer.build(x.shape)
    kernel = rng.standard_normal((6, 1)).astype("float32")
    bias = np.array([0.4], "float32")
    layer.score_conv.set_weights([kernel.reshape(1, 1, 6, 1), bias])
    bn = [np.array([v], "float32") for v in (1.3, 0.2, -0.1, 0.8)]
    layer.score_bn.set_weights(bn)
    boosted, suppressed = layer(x, training=False)
    ref_boosted, ref_suppressed = _fbsm_reference(
        x, kernel, bias, (*bn, layer.score_bn.epsilon), strips, 0.7, 0.3
    )
    np.testing.assert_allclose(np.asarray(boosted), ref_boosted, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(suppressed), ref_suppressed, rtol=1e-5, atol=1e-6)


def test_fbsm_suppresses_exactly_one_strip_when_scores_differ():
    x = np.ones((1, 4, 2, 1), "float32")
    x[0, 2:] = 3.0  # the lower strip has the larger response
    layer = FBSM(2, alpha=0.5, beta=0.25)
    layer.build(x.shape)
    layer.score_conv.set_weights([np.ones((1, 1, 1, 1), "float32"), np.zeros(1, "float32")])
    boosted, suppressed = layer(x, training=False)
    # scores: softmax([1, 3] / sqrt(1 + eps)) -> the lower strip wins
    s = _softmax(np.array([1.0, 3.0]) / math.sqrt(1 + layer.score_bn.epsilon), axis=0)
    np.testing.assert_allclose(
        np.asarray(suppressed)[0, :, :, 0], [[1, 1], [1, 1], [0.75] * 2, [0.75] * 2]
    )
    np.testing.assert_allclose(
        np.asarray(boosted)[0, :, 0, 0],
        [1 + 0.5 * s[0]] * 2 + [3 * (1 + 0.5 * s[1])] * 2,
        rtol=1e-5,
    )


def _fdm_reference(x1, x2, scale):
    """Loop over images: M = -cos between positions; x1 gets x2's features weighted by a softmax
    of M over x2's positions, x2 gets x1's weighted by a softmax over x1's positions."""
    out1, out2 = np.empty_like(x1), np.empty_like(x2)
    for n in range(x1.shape[0]):
        a = x1[n].reshape(-1, x1.shape[-1]).astype("float64")
        b = x2[n].reshape(-1, x2.shape[-1]).astype("float64")
        cos = np.array([[u @ v / np.linalg.norm(u) / np.linalg.norm(v) for v in b] for u in a])
        m = -cos  # [S, T]
        to_first = np.stack([_softmax(m[s], axis=0) @ b for s in range(len(a))])
        to_second = np.stack([_softmax(m[:, t], axis=0) @ a for t in range(len(b))])
        out1[n] = scale * to_first.reshape(x1.shape[1:])
        out2[n] = scale * to_second.reshape(x2.shape[1:])
    return out1, out2


@pytest.mark.backends
def test_fdm_matches_numpy():
    rng = np.random.default_rng(1)
    x1 = rng.standard_normal((2, 4, 3, 5)).astype("float32")
    x2 = rng.standard_normal((2, 2, 2, 5)).astype("float32")
    from_x2, from_x1 = FDM(scale=0.5)([x1, x2])
    ref1, ref2 = _fdm_reference(x1, x2, 0.5)
    np.testing.assert_allclose(np.asarray(from_x2), ref1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(from_x1), ref2, rtol=1e-5, atol=1e-6)


def test_fdm_rejects_different_channel_counts():
    with pytest.raises(ValueError, match="equal channel counts"):
        FDM()([np.zeros((1, 2, 2, 3), "float32"), np.zeros((1, 2, 2, 4), "float32")])


@pytest.mark.backends
@pytest.mark.parametrize("size,k", [(4, 5), (2, 5), (3, 1)])
def test_topk_pool_matches_numpy(size, k):
    x = np.random.default_rng(size).standard_normal((2, size, size + 1, 3)).astype("float32")
    flat = x.reshape(2, -1, 3)
    expected = np.sort(flat, axis=1)[:, -min(k, flat.shape[1]) :].mean(axis=1)
    np.testing.assert_allclose(np.asarray(TopKPool(k)(x)), expected, rtol=1e-6, atol=1e-6)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="num_strips"):
        FBSM(0)
    with pytest.raises(ValueError, match="k must be"):
        TopKPool(0)


@pytest.mark.backends
def test_fbsm_layer_checks():
    run_layer_test(FBSM, {"num_strips": 4}, (2, 8, 4, 6), [(2, 8, 4, 6), (2, 8, 4, 6)], atol=1e-5)


@pytest.mark.backends
def test_fdm_layer_checks():
    run_layer_test(
        FDM, {"scale": 0.01}, [(2, 4, 4, 6), (2, 2, 2, 6)], [(2, 4, 4, 6), (2, 2, 2, 6)], atol=1e-5
    )


@pytest.mark.backends
def test_topk_pool_layer_checks():
    run_layer_test(TopKPool, {"k": 3}, (2, 3, 3, 4), (2, 4), expect_weights=False)


def test_fbsd_head_layer_checks():
    run_layer_test(
        FBSDHead,
        {"mid_channels": 8, "part_channels": 12, "embedding_dim": 6, "fdm_scale": 0.01},
        [(2, 8, 8, 5), (2, 4, 4, 7), (2, 2, 2, 9)],
        [(2, 6)] * 4,
        atol=1e-4,
        rtol=1e-4,
    )


# --- head: fbsd through build_model ---------------------------------------------------------

FBSD_TINY = {
    "head": "fbsd",
    "backbone": "efficientnet_b0",
    "num_classes": 4,
    "image_size": 64,
    "embedding_dim": 16,
    "fbsd_mid_dim": 16,
    "fbsd_part_dim": 24,
    "arcface_k": 1,
    "dynamic_margins": False,
    "arcface_margin": 0.1,
}


@pytest.fixture(scope="module")
def fbsd_models():
    import keras

    from landmarks.config import Config
    from landmarks.models.build import build_model

    keras.utils.set_random_seed(0)
    return build_model(Config.from_dict(FBSD_TINY))


@pytest.mark.parametrize("size", [64, 96])
def test_fbsd_model_shapes(fbsd_models, size):
    train_model, embed_model = fbsd_models
    images = np.random.default_rng(size).uniform(0, 255, (2, size, size, 3)).astype("float32")
    embeddings = np.asarray(embed_model(images))
    assert embeddings.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)
    logits = train_model({"image": images, "label": np.array([0, 3], "int32")})
    assert sorted(logits) == ["embedding", "stage1", "stage2", "stage3"]
    assert all(tuple(v.shape) == (2, 4) for v in logits.values())


def test_fbsd_training_lowers_the_loss(fbsd_models):
    import keras

    train_model, _ = fbsd_models
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.uniform(0, 255, (8, 64, 64, 3)).astype("float32"),
        "label": np.array([0, 1, 2, 3] * 2, "int32"),
    }
    targets = {name: batch["label"] for name in train_model.output}
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    train_model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss={name: loss for name in train_model.output},
        run_eagerly=True,  # a few steps: tracing the graph would cost more than it saves
    )
    losses = [float(train_model.train_on_batch(batch, targets)[0]) for _ in range(6)]
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0], losses


def test_fbsd_embed_model_keras_round_trip(fbsd_models, tmp_path):
    _, embed_model = fbsd_models
    images = np.random.default_rng(5).uniform(0, 255, (2, 96, 96, 3)).astype("float32")
    assert_reloads_the_same(embed_model, images, tmp_path / "embed_model.keras", atol=1e-6)


def test_fbsd_backbone_feeds_suppressed_maps_forward():
    """alpha=0, beta=1 makes every FBSM the identity: the rewired backbone then equals the
    original. With beta<1 the stride-8 map is unchanged (alpha=0) but the later maps change,
    because the suppressed stride-8 and stride-16 maps now flow into the next stages."""
    from landmarks.config import Config
    from landmarks.models.fbsd import fbsd_backbone
    from landmarks.models.registry import BACKBONES

    config = Config.from_dict({"fbsd_alpha": 0.0, "fbsd_beta": 1.0})
    backbone = BACKBONES["efficientnet_b0"](config)
    images = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    original = {k: np.asarray(v) for k, v in backbone(images).items()}

    def relative_difference(maps, key):  # untrained maps are tiny: compare to their own scale
        return np.abs(np.asarray(maps[key]) - original[key]).max() / np.abs(original[key]).max()

    identity = fbsd_backbone(config, backbone)(images)
    for key in ("stride8", "stride16", "stride32"):
        assert relative_difference(identity, key) < 1e-5, key
    config.fbsd_beta = 0.2
    suppressed = fbsd_backbone(config, backbone)(images)
    assert relative_difference(suppressed, "stride8") < 1e-5
    for key in ("stride16", "stride32"):
        assert relative_difference(suppressed, key) > 1e-2, key


def test_fbsd_backbone_needs_three_strides():
    import keras

    from landmarks.config import Config
    from landmarks.errors import ConfigError
    from landmarks.models.fbsd import fbsd_backbone

    image = keras.Input((None, None, 3))
    x16 = keras.layers.Conv2D(4, 3, strides=16, padding="same")(image)
    x32 = keras.layers.Conv2D(4, 3, strides=2, padding="same")(x16)
    backbone = keras.Model(image, {"stride16": x16, "stride32": x32})
    with pytest.raises(
        ConfigError, match=r"head: fbsd needs backbone maps at strides 8, 16 and 32"
    ):
        fbsd_backbone(Config(), backbone)
