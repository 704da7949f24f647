"""`build_model(config) -> (train_model, embed_model)`: backbone + head + sub-center ArcFace;
`build_backbone_gem(config)`: the backbone's own GeM descriptor, the baseline a head must beat."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from landmarks.config import Config
from landmarks.errors import ConfigError
from landmarks.layers import GeM, SubCenterArcFace, dynamic_margins
from landmarks.models.registry import BACKBONE_ADAPTERS, BACKBONES, HEADS, HeadOutput
from landmarks.models.weights import resolve_weights


def build_model(config: Config, class_counts: Sequence[int] | None = None):
    """Build `(train_model, embed_model)` sharing weights.

    train_model: {"image": float32 [B,H,W,3] in [0,255], "label": int32 [B]} -> float32 logits
        [B, num_classes] (scale * cos with the margin on the target class), or a dict of such
        logits when the head has auxiliary embeddings.
    embed_model: image float32 [B,H,W,3] in [0,255] -> float32 [B, embedding_dim], L2-normalised.

    Per-class margins `dynamic_margins(class_counts, margin_low, margin_high)` are used when
    `config.dynamic_margins` is true and `class_counts` (images per class label) is given;
    otherwise the scalar `arcface_margin`. Raises ConfigError for bad settings.
    """
    validate_model_config(config)
    margin = _margins(config, class_counts)

    image = keras.Input((None, None, 3), dtype="float32", name="image")
    backbone = BACKBONES[config.backbone](config)
    if config.head in BACKBONE_ADAPTERS:
        backbone = BACKBONE_ADAPTERS[config.head](config, backbone)
    if config.freeze_batchnorm:
        freeze_batchnorm(backbone)
    features = backbone(image)
    head = HEADS[config.head](config, features)
    if not isinstance(head, HeadOutput):
        head = HeadOutput(head)
    normalize = keras.layers.UnitNormalization(axis=-1, dtype="float32", name="embedding")
    embedding = normalize(head.embedding)
    embed_model = keras.Model(image, embedding, name="embed_model")

    label = keras.Input((), dtype="int32", name="label")

    def classifier(name, tensor):
        layer = SubCenterArcFace(
            config.num_classes,
            k=config.arcface_k,
            scale=config.arcface_scale,
            margin=margin,
            name=name,
        )
        return layer([tensor, label])

    logits = classifier("arcface", embedding)
    if head.auxiliary:
        outputs = {"embedding": logits}
        for key, tensor in head.auxiliary.items():
            unit = keras.layers.UnitNormalization(axis=-1, dtype="float32", name=f"{key}_unit")
            outputs[key] = classifier(f"arcface_{key}", unit(tensor))
        logits = outputs
    train_model = keras.Model({"image": image, "label": label}, logits, name="train_model")
    if config.batchnorm_momentum is not None:
        for layer in _batchnorms(train_model):
            layer.momentum = config.batchnorm_momentum
    return train_model, embed_model


def build_backbone_gem(config: Config) -> keras.Model:
    """The backbone alone (its `weights`, no head, nothing trained): GeM with exponent
    `config.gem_p` over its stride-32 map, L2-normalised.

    image float32 [B,H,W,3] in [0,255] -> float32 [B, C32] (1280 for EfficientNet-B0/Lite).
    Raises ConfigError for an unknown backbone or unusable weights.
    """
    validate_model_config(config)
    image = keras.Input((None, None, 3), dtype="float32", name="image")
    features = BACKBONES[config.backbone](config)(image)
    pooled = GeM(config.gem_p, name="gem")(features["stride32"])
    embedding = keras.layers.UnitNormalization(axis=-1, dtype="float32", name="embedding")(pooled)
    return keras.Model(image, embedding, name="backbone_gem")


def _batchnorms(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """Every BatchNormalization inside `model`, nested models and custom layers' attributes too."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def freeze_batchnorm(model: keras.Model) -> int:
    """Make every BatchNormalization inside `model` (nested layers too) non-trainable.

    Keras runs a non-trainable BatchNormalization in inference mode: it normalises with its
    moving statistics, never updates them, and its scale/offset stay fixed. The usual choice
    when fine-tuning with small per-replica batches, and for training a randomly initialised
    backbone briefly (the demo): its moving statistics would otherwise lag far behind the batch
    statistics it trains with. Returns how many layers were frozen.
    """
    layers = _batchnorms(model)
    for layer in layers:
        layer.trainable = False
    return len(layers)


def validate_model_config(config: Config) -> None:
    """ConfigError naming the key for an unknown backbone/head, a bad size or class count."""
    if config.backbone not in BACKBONES:
        raise ConfigError(
            f"backbone: unknown backbone {config.backbone!r}; known: {', '.join(sorted(BACKBONES))}"
        )
    if config.head not in HEADS:
        raise ConfigError(f"head: unknown head {config.head!r}; known: {', '.join(sorted(HEADS))}")
    if config.image_size <= 0 or config.image_size % 32:
        raise ConfigError(
            f"image_size: {config.image_size} is not a positive multiple of 32 "
            f"(try {max(32, round(config.image_size / 32) * 32)})"
        )
    if config.num_classes <= 0:
        raise ConfigError(
            f"num_classes: {config.num_classes}; the training model needs the number of classes "
            "(training reads it from the label map beside the records)"
        )
    resolve_weights(config)


def _margins(config: Config, class_counts):
    if not config.dynamic_margins or class_counts is None:
        return config.arcface_margin
    counts = np.asarray(class_counts).reshape(-1)
    if counts.size != config.num_classes:
        raise ConfigError(
            f"num_classes: {config.num_classes}, but class_counts has {counts.size} entries"
        )
    return dynamic_margins(counts, config.margin_low, config.margin_high)
