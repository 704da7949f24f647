"""build_model: three backbone families, two input sizes, saving, training, errors, precision."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from layer_helper import gradients
from model_helpers import small_config

from landmarks.errors import ConfigError
from landmarks.models.build import build_model
from landmarks.models.registry import BACKBONES, HEADS, HeadOutput
from landmarks.models.taps import feature_taps, find_stride_taps

COUNTS = [1, 2, 4, 8, 60]
SIZES = (64, 96)


def images(size: int, batch: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (batch, size, size, 3)).astype("float32")


@pytest.fixture(scope="module")
def b0_models():
    keras.utils.set_random_seed(0)
    return build_model(small_config(), class_counts=COUNTS)


def _check_embed_and_logits(train_model, embed_model, size, num_classes=5, dim=32):
    x = images(size)
    embedding = keras.ops.convert_to_numpy(embed_model(x))
    assert embedding.shape == (2, dim) and embedding.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, rtol=1e-5)
    logits = train_model({"image": x, "label": np.array([0, 4], "int32")})
    assert tuple(logits.shape) == (2, num_classes)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(logits)))
    return embedding


@pytest.mark.backends
@pytest.mark.parametrize("size", SIZES)
def test_efficientnet_b0_runs_at_two_sizes(b0_models, size):
    _check_embed_and_logits(*b0_models, size)


def test_backbone_taps_are_the_stage_outputs(b0_models):
    train_model, _ = b0_models
    backbone = train_model.get_layer("backbone")
    features = backbone(images(64))
    assert {k: tuple(v.shape[1:3]) for k, v in features.items()} == {
        "stride4": (16, 16),
        "stride8": (8, 8),
        "stride16": (4, 4),
        "stride32": (2, 2),
    }
    network = keras.applications.EfficientNetB0(
        include_top=False, weights=None, input_shape=(None, None, 3)
    )
    # Hand-checked in the EfficientNet-B0 graph: stage 5 (blocks 5a-5c, 112 channels) ends the
    # stride-16 maps with the residual add of block 5c; block6a then expands to 672 channels at
    # stride 16 before its strided depthwise conv. top_activation (1280) is the final map.
    taps = find_stride_taps(network)
    assert taps == {
        4: "block2b_add",
        8: "block3b_add",
        16: "block5c_add",
        32: "top_activation",
    }
    assert network.get_layer(taps[16]).output.shape[-1] == 112


def test_dynamic_margins_reach_the_classifier(b0_models):
    train_model, _ = b0_models
    f = np.array(COUNTS, float) ** -0.25
    expected = 0.05 + 0.45 * (f - f.min()) / (f.max() - f.min())
    np.testing.assert_allclose(train_model.get_layer("arcface").margin, expected, rtol=1e-6)
    scalar, _ = build_model(small_config(backbone="efficientnet_b0", dynamic_margins=False), COUNTS)
    assert scalar.get_layer("arcface").margin == pytest.approx(0.3)


def test_embed_and_train_models_share_weights(b0_models):
    train_model, embed_model = b0_models
    train_ids = {id(v) for v in train_model.weights}
    assert all(id(v) in train_ids for v in embed_model.weights)


@pytest.mark.backends
def test_keras_file_round_trip_gives_identical_outputs(b0_models, tmp_path):
    train_model, embed_model = b0_models
    x = images(96, seed=3)
    embed_model.save(tmp_path / "embed.keras")
    train_model.save(tmp_path / "train.keras")
    loaded_embed = keras.saving.load_model(tmp_path / "embed.keras")
    loaded_train = keras.saving.load_model(tmp_path / "train.keras")
    np.testing.assert_allclose(loaded_embed(x), embed_model(x), atol=1e-6)
    batch = {"image": x, "label": np.array([1, 3], "int32")}
    np.testing.assert_allclose(loaded_train(batch), train_model(batch), atol=1e-5)


def test_one_optimizer_step_lowers_the_loss(b0_models):
    """TensorFlow only: on JAX the whole B0-DOLG backward pass compiles for ~150 s on 2 cores,
    and training on JAX is covered by tests/test_jax_devices.py (the same losses on 1 and 8
    devices) and tests/test_callbacks.py."""
    train_model, _ = b0_models
    batch = {"image": images(64, batch=4, seed=5), "label": np.array([0, 1, 2, 4], "int32")}
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer = keras.optimizers.Adam(1e-4)

    def loss_value():
        return loss_fn(batch["label"], train_model(batch, training=True))

    before = float(loss_value())
    grads = gradients(
        train_model, batch, lambda logits: loss_fn(batch["label"], logits), training=True
    )
    assert all(g is not None and np.isfinite(g).all() for g in grads)
    optimizer.apply_gradients(zip(grads, train_model.trainable_variables, strict=True))
    assert float(loss_value()) < before


@pytest.mark.parametrize("backbone", ["efficientnetv2_b0", "efn_b0"])
def test_other_backbone_families_at_two_sizes(backbone, tmp_path):
    train_model, embed_model = build_model(small_config(backbone=backbone))
    for size in SIZES:
        _check_embed_and_logits(train_model, embed_model, size)
    x = images(64, seed=9)
    embed_model.save(tmp_path / "embed.keras")
    loaded = keras.saving.load_model(tmp_path / "embed.keras")
    np.testing.assert_allclose(loaded(x), embed_model(x), atol=1e-6)
    if backbone == "efn_b0":
        # the package's own preprocessing ("torch" mode) is what the model applies inside
        from efficientnet.keras import preprocess_input

        backbone_model = train_model.get_layer("backbone")
        inside = backbone_model.get_layer("imagenet_norm")(backbone_model.get_layer("scale_0_1")(x))
        np.testing.assert_allclose(inside, preprocess_input(x.copy()), rtol=1e-5, atol=1e-5)


def test_errors_name_the_setting(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown backbone 'resnet50'.*efficientnet_b0.*efn_b7"):
        build_model(small_config(backbone="resnet50"))
    with pytest.raises(ConfigError, match=r"image_size: 100 is not a positive multiple of 32"):
        build_model(small_config(image_size=100))
    with pytest.raises(ConfigError, match=r"unknown head 'nope'"):
        build_model(small_config(head="nope"))
    with pytest.raises(ConfigError, match=r"num_classes: 0"):
        build_model(small_config(num_classes=0))
    missing = tmp_path / "no_such.weights.h5"
    with pytest.raises(ConfigError, match=f"file not found: {missing}"):
        build_model(small_config(weights=str(missing)))
    with pytest.raises(ConfigError, match="noisy-student"):
        build_model(small_config(weights="noisy-student"))
    with pytest.raises(ConfigError, match="class_counts has 3 entries"):
        build_model(small_config(), class_counts=[1, 2, 3])
    for name in ("efficientnet_b7", "efficientnetv2_s", "efficientnetv2_l", "efn_b3"):
        assert name in BACKBONES


def test_weights_file_is_loaded_into_the_backbone(tmp_path):
    keras.utils.set_random_seed(11)
    network = keras.applications.EfficientNetB0(
        include_top=False, weights=None, input_shape=(None, None, 3)
    )
    path = tmp_path / "b0_notop.weights.h5"
    network.save_weights(path)
    _, embed_model = build_model(small_config(weights=str(path), head="gem"))
    x = images(64, seed=2)
    features = embed_model.get_layer("backbone")(x)
    np.testing.assert_allclose(features["stride32"], network(x), atol=1e-5)
    broken = tmp_path / "broken.weights.h5"
    broken.write_bytes(b"not an h5 file")
    with pytest.raises(ConfigError, match=f"cannot load {broken}"):
        build_model(small_config(weights=str(broken), head="gem"))


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_gives_float32_unit_embeddings(policy):
    previous = keras.config.dtype_policy()
    try:
        keras.config.set_dtype_policy(policy)
        train_model, embed_model = build_model(small_config(), class_counts=COUNTS)
        embedding = _check_embed_and_logits(train_model, embed_model, 64)
        assert np.all(np.isfinite(embedding))
        assert all(v.dtype == "float32" for v in train_model.trainable_variables)
    finally:
        keras.config.set_dtype_policy(previous)


# --- the extension points, with a tiny backbone so that these tests stay fast ----------------


def tiny_backbone(config):
    image = keras.Input((None, None, 3))
    x = image
    for i, width in enumerate((4, 8, 8, 16, 16)):
        x = keras.layers.Conv2D(width, 3, strides=2, padding="same", name=f"down{i}")(x)
        x = keras.layers.Conv2D(width, 1, activation="relu", name=f"mix{i}")(x)
    network = keras.Model(image, x, name="tiny")
    return feature_taps(network, [keras.layers.Rescaling(1 / 255.0, name="scale")])


def test_registered_backbone_and_gem_head(monkeypatch):
    monkeypatch.setitem(BACKBONES, "tiny", tiny_backbone)
    train_model, embed_model = build_model(small_config(backbone="tiny", head="gem"))
    assert train_model.get_layer("gem") is not None
    taps = find_stride_taps(train_model.get_layer("backbone").get_layer("tiny_taps"))
    assert taps == {4: "mix1", 8: "mix2", 16: "mix3", 32: "mix4"}
    for size in SIZES:
        _check_embed_and_logits(train_model, embed_model, size)


def test_head_with_auxiliary_embeddings_trains_one_classifier_each(monkeypatch):
    def two_level_head(config, features):
        stage = keras.layers.GlobalAveragePooling2D(name="stage_pool")(features["stride16"])
        main = keras.layers.GlobalAveragePooling2D(name="main_pool")(features["stride32"])
        dense = keras.layers.Dense(config.embedding_dim, name="main_neck")
        return HeadOutput(dense(main), {"stage16": stage})

    monkeypatch.setitem(BACKBONES, "tiny", tiny_backbone)
    monkeypatch.setitem(HEADS, "two_level", two_level_head)
    train_model, embed_model = build_model(small_config(backbone="tiny", head="two_level"))
    logits = train_model({"image": images(64), "label": np.array([0, 1], "int32")})
    assert sorted(logits) == ["embedding", "stage16"]
    assert all(tuple(v.shape) == (2, 5) for v in logits.values())
    assert tuple(embed_model(images(64)).shape) == (2, 32)


def batchnorm_layers(model):
    """Every BatchNormalization inside `model`, custom layers' attributes included."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


class NormedConv(keras.layers.Layer):
    """A custom layer holding its BatchNorm as an attribute (as the Conformer blocks do)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(8, 3, strides=4, padding="same", name="down")
        self.norm = keras.layers.BatchNormalization(name="inner_bn")

    def call(self, inputs, training=None):
        return self.norm(self.conv(inputs), training=training)


def normed_backbone(config):
    """Tiny backbone with a BatchNorm at the top level and one inside a custom layer."""
    image = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, strides=4, padding="same", name="stem")(image)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = NormedConv(name="block")(x)
    x = keras.layers.Conv2D(8, 1, strides=2, name="top")(x)
    network = keras.Model(image, x, name="normed")
    return feature_taps(network, [keras.layers.Rescaling(1 / 255.0, name="scale")])


@pytest.mark.backends
@pytest.mark.parametrize("freeze", [False, True])
def test_freeze_batchnorm_fixes_statistics_but_trains_the_rest(monkeypatch, freeze):
    monkeypatch.setitem(BACKBONES, "normed", normed_backbone)
    train_model, _ = build_model(
        small_config(backbone="normed", head="gem", freeze_batchnorm=freeze)
    )
    backbone = train_model.get_layer("backbone")
    norms = batchnorm_layers(backbone)
    assert sorted(n.name for n in norms) == ["inner_bn", "stem_bn"]
    before = {n.name: [w.numpy().copy() for w in n.weights] for n in norms}
    stem_kernel = train_model.get_layer("backbone").get_layer("normed_taps").get_layer("stem")
    kernel_before = stem_kernel.kernel.numpy().copy()
    train_model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    batch = {"image": images(64, batch=4), "label": np.array([0, 1, 2, 3], "int32")}
    train_model.train_on_batch(batch, batch["label"])
    changed = {
        n.name: any(
            not np.array_equal(a, w.numpy()) for a, w in zip(before[n.name], n.weights, strict=True)
        )
        for n in norms
    }
    assert changed == {"inner_bn": not freeze, "stem_bn": not freeze}
    assert not np.array_equal(kernel_before, stem_kernel.kernel.numpy())


@pytest.mark.backends
def test_batchnorm_momentum_reaches_every_batchnorm(monkeypatch):
    monkeypatch.setitem(BACKBONES, "normed", normed_backbone)
    train_model, _ = build_model(small_config(backbone="normed", batchnorm_momentum=0.9))
    norms = batchnorm_layers(train_model)
    # stem_bn, inner_bn in the backbone and the DOLG spatial attention's BatchNorm in the head
    assert len(norms) == 3 and all(n.momentum == 0.9 for n in norms)
    taps = train_model.get_layer("backbone").get_layer("normed_taps")
    x = images(64, batch=4)
    stem = keras.Model(taps.inputs, taps.get_layer("stem").output)(x / 255.0)
    batch_mean = keras.ops.convert_to_numpy(keras.ops.mean(stem, axis=(0, 1, 2)))
    train_model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    labels = np.array([0, 1, 2, 3], "int32")
    train_model.train_on_batch({"image": x, "label": labels}, labels)
    # moving_mean starts at 0: after one step it is (1 - momentum) * the batch mean
    moving_mean = taps.get_layer("stem_bn").moving_mean.numpy()
    np.testing.assert_allclose(moving_mean, 0.1 * batch_mean, rtol=1e-4, atol=1e-6)
