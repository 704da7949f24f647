"""Conformer layers and backbones: numpy references for the FCUs, layer checks, shapes, presets."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from layer_helper import run_layer_test
from model_helpers import assert_reloads_the_same

from landmarks.layers.conformer import (
    CONFORMER_PRESETS,
    CONFORMER_TAPS,
    ClassToken,
    ConvBottleneck,
    ConvTransBlock,
    FCUDown,
    FCUUp,
    TransformerBlock,
    conformer_backbone,
)

_erf = np.vectorize(math.erf)


def _gelu(v):
    return 0.5 * v * (1.0 + _erf(v / math.sqrt(2.0)))


@pytest.mark.backends
def test_fcu_down_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 6, 3)).astype("float32")
    tokens = rng.standard_normal((2, 1 + 6, 5)).astype("float32")
    layer = FCUDown(embed_dim=5, stride=2)
    layer.build([x.shape, tokens.shape])
    kernel, bias = rng.standard_normal((3, 5)), rng.standard_normal(5)
    gamma, beta = rng.standard_normal(5), rng.standard_normal(5)
    layer.project.set_weights([kernel.reshape(1, 1, 3, 5), bias])
    layer.norm.set_weights([gamma, beta])
    out = np.asarray(layer([x, tokens]))

    projected = x @ kernel + bias  # [2, 4, 6, 5]
    expected = np.empty((2, 7, 5))
    for n in range(2):
        expected[n, 0] = tokens[n, 0]  # the class token is kept
        for i in range(2):
            for j in range(3):
                v = projected[n, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].mean(axis=(0, 1))
                v = (v - v.mean()) / np.sqrt(v.var() + 1e-6) * gamma + beta
                expected[n, 1 + 3 * i + j] = _gelu(v)  # row-major patch order
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.backends
def test_fcu_up_matches_numpy():
    rng = np.random.default_rng(1)
    tokens = rng.standard_normal((2, 1 + 2 * 3, 4)).astype("float32")
    reference = np.zeros((2, 8, 12, 9), "float32")  # only its shape matters: grid 2 x 3, stride 4
    layer = FCUUp(filters=3, stride=4)
    layer.build([tokens.shape, reference.shape])
    kernel, bias = rng.standard_normal((4, 3)), rng.standard_normal(3)
    bn = [
        rng.standard_normal(3),
        rng.standard_normal(3),
        rng.standard_normal(3),
        rng.random(3) + 0.5,
    ]
    layer.project.set_weights([kernel.reshape(1, 1, 4, 3), bias])
    layer.bn.set_weights(bn)
    out = np.asarray(layer([tokens, reference], training=False))

    expected = np.empty((2, 8, 12, 3))
    for n in range(2):
        for r in range(8):
            for c in range(12):
                v = tokens[n, 1 + 3 * (r // 4) + c // 4] @ kernel + bias  # class token dropped
                v = (v - bn[2]) / np.sqrt(bn[3] + 1e-6) * bn[0] + bn[1]
                expected[n, r, c] = np.maximum(v, 0.0)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.backends
def test_transformer_block_attention_matches_numpy():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 3, 4)).astype("float32")
    layer = TransformerBlock(num_heads=2, mlp_ratio=1.0)
    layer.build(x.shape)
    wqkv, bqkv = rng.standard_normal((4, 12)) * 0.5, rng.standard_normal(12) * 0.1
    layer.qkv.set_weights([wqkv, bqkv])
    out = np.asarray(layer.attention(x))

    q, k, v = np.split(x[0] @ wqkv + bqkv, 3, axis=-1)  # [3, 4] each; heads are column pairs
    heads = []
    for h in range(2):
        cols = slice(2 * h, 2 * h + 2)
        scores = q[:, cols] @ k[:, cols].T / math.sqrt(2)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        heads.append(weights / weights.sum(-1, keepdims=True) @ v[:, cols])
    proj_kernel, proj_bias = layer.proj.get_weights()
    expected = np.concatenate(heads, axis=-1) @ proj_kernel + proj_bias
    np.testing.assert_allclose(out[0], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.backends
def test_conv_bottleneck_layer_checks():
    run_layer_test(
        ConvBottleneck,
        {"filters": 8, "strides": 2, "projection": True},
        (2, 8, 8, 4),
        [(2, 4, 4, 8), (2, 4, 4, 2)],
        atol=1e-5,
    )
    run_layer_test(
        ConvBottleneck,
        {"filters": 8},
        [(2, 4, 4, 8), (2, 4, 4, 2)],
        [(2, 4, 4, 8), (2, 4, 4, 2)],
        atol=1e-5,
    )


def test_conv_bottleneck_rejects_width_change_without_projection():
    with pytest.raises(ValueError, match="needs 8 input channels"):
        ConvBottleneck(8).build((1, 4, 4, 4))
    with pytest.raises(ValueError, match="multiple of 4"):
        ConvBottleneck(6)


@pytest.mark.backends
def test_fcu_layer_checks():
    run_layer_test(FCUDown, {"embed_dim": 6, "stride": 2}, [(2, 4, 4, 3), (2, 5, 6)], (2, 5, 6))
    run_layer_test(FCUUp, {"filters": 3, "stride": 2}, [(2, 5, 6), (2, 4, 4, 7)], (2, 4, 4, 3))


@pytest.mark.backends
def test_transformer_layer_checks():
    run_layer_test(TransformerBlock, {"num_heads": 2}, (2, 5, 8), (2, 5, 8), atol=1e-5)
    run_layer_test(ClassToken, {}, (2, 4, 8), (2, 5, 8))


def test_conv_trans_block_layer_checks():
    run_layer_test(
        ConvTransBlock,
        {
            "filters": 8,
            "patch_stride": 2,
            "strides": 2,
            "projection": True,
            "num_heads": 2,
            "last_fusion": True,
        },  # fmt: skip
        [(2, 8, 8, 4), (2, 5, 6)],
        [(2, 2, 2, 8), (2, 5, 6)],
        atol=1e-4,
        rtol=1e-4,
    )


@pytest.mark.parametrize(
    "preset,paper_params,channels", [("conformer_ti", 23.5e6, 256), ("conformer_s", 37.7e6, 1024)]
)
def test_presets_match_the_paper(preset, paper_params, channels):
    """Parameter counts of the paper's Table 1 once its two 1000-class classifiers
    (CNN: channels -> 1000, transformer: LayerNorm + 384 -> 1000) are added back."""
    model = conformer_backbone(**CONFORMER_PRESETS[preset])
    classifiers = (channels + 1) * 1000 + (384 + 1) * 1000 + 2 * 384
    assert abs(model.count_params() + classifiers - paper_params) < 0.05e6
    assert model.output["stride32"].shape[-1] == channels


@pytest.mark.parametrize("size", [64, 96])
def test_backbone_maps_at_every_stride(size):
    model = conformer_backbone(base_channels=8, embed_dim=12, depth=6, num_heads=2, stem_channels=8)
    outputs = model(np.random.default_rng(0).random((2, size, size, 3), "float32"))
    assert sorted(outputs) == sorted(f"stride{s}" for s in CONFORMER_TAPS)
    for stride, width in zip(CONFORMER_TAPS, (8, 16, 32, 32), strict=True):
        assert tuple(outputs[f"stride{stride}"].shape) == (2, size // stride, size // stride, width)


@pytest.mark.parametrize("depth", [10, 3])
def test_backbone_rejects_bad_depth(depth):
    with pytest.raises(ValueError, match="multiple of 3 and at least 6"):
        conformer_backbone(depth=depth)


# --- backbone: conformer_ti through build_model ---------------------------------------------


@pytest.mark.slow
def test_conformer_ti_dolg_training_lowers_the_loss(tmp_path):
    """The paper's Conformer-Ti under the DOLG head: embeddings at two sizes, a few training
    steps on one batch lower the loss, and the embedding model survives a .keras round trip."""
    from landmarks.config import Config
    from landmarks.models.build import build_model

    keras.utils.set_random_seed(0)
    config = Config.from_dict(
        {
            "backbone": "conformer_ti",
            "head": "dolg",
            "num_classes": 4,
            "image_size": 64,
            "local_dim": 32,
            "embedding_dim": 16,
            "arcface_k": 1,
            "dynamic_margins": False,
        }  # fmt: skip
    )
    train_model, embed_model = build_model(config)
    assert train_model.get_layer("backbone").get_layer("conformer_ti").count_params() > 20e6
    rng = np.random.default_rng(0)
    for size in (64, 96):
        embeddings = np.asarray(
            embed_model(rng.uniform(0, 255, (2, size, size, 3)).astype("float32"))
        )
        assert embeddings.shape == (2, 16)
        np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)

    batch = {
        "image": rng.uniform(0, 255, (8, 64, 64, 3)).astype("float32"),
        "label": np.array([0, 1, 2, 3] * 2, "int32"),
    }
    train_model.compile(
        optimizer=keras.optimizers.Adam(1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        run_eagerly=True,  # a few steps: tracing the graph would cost more than it saves
    )
    losses = [float(train_model.train_on_batch(batch, batch["label"])) for _ in range(5)]
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0], losses

    images = rng.uniform(0, 255, (2, 96, 96, 3)).astype("float32")
    assert_reloads_the_same(embed_model, images, tmp_path / "embed_model.keras", atol=1e-5)


def test_conformer_has_no_imagenet_weights():
    from landmarks.config import Config
    from landmarks.errors import ConfigError
    from landmarks.models.registry import BACKBONES

    with pytest.raises(ConfigError, match="weights: no 'imagenet' weights"):
        BACKBONES["conformer_s"](
            Config.from_dict({"backbone": "conformer_s", "weights": "imagenet"})
        )
