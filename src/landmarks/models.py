"""Backbone and head registries, and `build_model(config) -> (train_model, embed_model)`.

    image float32 [B,H,W,3] in [0,255]      (H, W any multiples of 32)
      │
      ▼  backbone (its own preprocessing inside)            BACKBONES[config.backbone](config)
    {"stride4": .., "stride8": .., "stride16": [B,H/16,W/16,C16], "stride32": [B,H/32,W/32,C32]}
      │
      ▼  head                                               HEADS[config.head](config, features)
    embedding [B, embedding_dim]  ─▶ L2 normalise (float32) ─▶ embed_model output
      │
      ▼  SubCenterArcFace([embedding, label])  (scalar or per-class dynamic margins)
    logits float32 [B, num_classes]                          ─▶ train_model output

Extension points (other modules add entries; names are what `config.backbone` / `config.head`
accept):

* `BACKBONES[name] = builder`, `builder(config) -> keras.Model`. The model takes the raw image
  (float32 [B,H,W,3] in [0,255], input shape (None, None, 3)) and does its own preprocessing;
  its output is a dict of feature maps keyed "stride4", "stride8", "stride16", "stride32" (at
  least "stride16" and "stride32"; extra keys are allowed). For a flat functional network,
  `feature_taps(network, preprocessing)` builds that model, finding the taps from output shapes.
  Weights: use `resolve_weights(config)` and `load_weights_file(network, path)`.
* `HEADS[name] = builder`, `builder(config, features) -> embedding | HeadOutput`, where
  `features` is the backbone's dict of symbolic maps and `embedding` a symbolic [B, D] tensor
  (not normalised). Returning `HeadOutput(embedding, auxiliary={"stage1": e1, ...})` trains each
  auxiliary embedding with its own sub-center ArcFace; train_model then outputs a dict of logits
  {"embedding": .., "stage1": .., ...}; embed_model always outputs the main embedding.
* `BACKBONE_ADAPTERS[head_name] = adapter`, `adapter(config, backbone) -> backbone`: for a head
  that also changes the backbone (FBSD feeds its suppressed maps forward inside the backbone);
  the returned model keeps the contract above and is named "backbone".
* `register_backbone(name)` / `register_head(name)` are decorator forms of the above. Modules
  that register at import time are listed in `EXTENSION_MODULES`, imported at the end of this
  module, so that `BACKBONES` is complete as soon as `landmarks.models` is imported.

The nested backbone model is named "backbone" (training gives it its own learning rate).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Callable, Mapping, Sequence

import keras
import numpy as np

from landmarks.config import Config
from landmarks.errors import ConfigError
from landmarks.layers import DOLGHead, GeM, SubCenterArcFace, dynamic_margins

BackboneBuilder = Callable[[Config], keras.Model]
BACKBONES: dict[str, BackboneBuilder] = {}
HEADS: dict[str, Callable] = {}
BACKBONE_ADAPTERS: dict[str, Callable[[Config, keras.Model], keras.Model]] = {}
STRIDES = (4, 8, 16, 32)
WEIGHTS_OPTIONS = (None, "imagenet", "noisy-student")

# Modules imported at the end of this file that register more backbones/heads.
EXTENSION_MODULES: tuple[str, ...] = ("landmarks.fbsd_head", "landmarks.conformer_backbones")

# Size of the probe image used to measure each layer's stride (never run, only traced).
_PROBE = 256


@dataclasses.dataclass
class HeadOutput:
    """What a head builder may return instead of a bare embedding tensor.

    embedding: symbolic [B, D], the retrieval descriptor (normalised by build_model).
    auxiliary: name -> symbolic [B, D_i] embeddings each trained with its own ArcFace classifier.
    """

    embedding: keras.KerasTensor
    auxiliary: dict[str, keras.KerasTensor] = dataclasses.field(default_factory=dict)


def register_backbone(name: str):
    def decorate(builder):
        BACKBONES[name] = builder
        return builder

    return decorate


def register_head(name: str):
    def decorate(builder):
        HEADS[name] = builder
        return builder

    return decorate


# --- build_model ------------------------------------------------------------------------------


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


# --- weights ----------------------------------------------------------------------------------


def resolve_weights(config: Config) -> str | None:
    """None, "imagenet", "noisy-student" (efn_* only) or an existing weights file path."""
    weights = config.weights
    if weights in (None, "", "none", "None"):
        return None
    if weights == "noisy-student" and not config.backbone.startswith("efn_"):
        raise ConfigError(
            f"weights: 'noisy-student' exists only for the efn_* backbones, not {config.backbone!r}"
        )
    if weights in WEIGHTS_OPTIONS:
        return weights
    import tensorflow as tf

    if not tf.io.gfile.exists(weights):
        raise ConfigError(
            f"weights: file not found: {weights} (expected None, 'imagenet', 'noisy-student' "
            "or the path of a backbone weights file)"
        )
    return weights


def load_weights_file(network: keras.Model, path: str) -> None:
    """Load a backbone weights file (.h5 / .weights.h5, e.g. an offline copy of the ImageNet or
    noisy-student `notop` file) into `network`; ConfigError naming the file when it does not fit."""
    local = path
    if "://" in path:  # gs:// etc.: Keras reads local files only
        import tempfile

        import tensorflow as tf

        local = os.path.join(tempfile.mkdtemp(), os.path.basename(path))
        tf.io.gfile.copy(path, local)
    try:
        network.load_weights(local)
    except Exception as error:  # noqa: BLE001 - any failure means the file does not fit
        raise ConfigError(f"weights: cannot load {path} into {network.name}: {error}") from error


# --- taps -------------------------------------------------------------------------------------


def find_stride_taps(network: keras.Model, strides: Sequence[int] = STRIDES) -> dict[int, str]:
    """Name of the layer that gives each stride's feature map: the stage output.

    Strides are measured by tracing the network on a symbolic _PROBE x _PROBE image: a layer is
    at stride s when its output is (_PROBE/s) x (_PROBE/s) spatially. No layer names are
    hard-coded, so any flat functional CNN works. Missing strides are left out.

    The tap at stride s is the LAST RESIDUAL JUNCTION (an `Add` layer) at that stride, i.e. the
    output of the stage's last block, as timm's `features_only` gives it and as the 2021
    winning DOLG tapped it. Layers after it at the same stride belong to the next stage (in
    EfficientNet, block6a's 1x1 expansion to 672 channels in B0): tapping them would feed the
    local branch 6x more channels for no new information. A stride without a residual junction
    (e.g. a plain CNN, or the final map of EfficientNet after its 1x1 head conv) takes its last
    layer; the largest stride always takes its last layer, the network's final map.
    """
    layers = [layer for layer in network.layers[1:] if len(layer.output.shape) == 4]
    probe = keras.Model(network.inputs, [layer.output for layer in layers])
    specs = probe.compute_output_spec(keras.KerasTensor((1, _PROBE, _PROBE, 3)))
    last_layer, last_junction = {}, {}
    for layer, spec in zip(layers, specs, strict=True):
        height, width = spec.shape[1:3]
        for stride in strides:
            if height * stride == _PROBE and width * stride == _PROBE:
                last_layer[stride] = layer.name
                if isinstance(layer, keras.layers.Add):
                    last_junction[stride] = layer.name
    deepest = max(last_layer, default=None)
    return {
        stride: name if stride == deepest else last_junction.get(stride, name)
        for stride, name in last_layer.items()
    }


def feature_taps(
    network: keras.Model,
    preprocessing: Sequence[keras.layers.Layer] = (),
    name: str = "backbone",
) -> keras.Model:
    """Wrap a functional CNN into the backbone contract: image [0,255] -> {"strideS": map}."""
    taps = find_stride_taps(network)
    missing = [s for s in (16, 32) if s not in taps]
    if missing:
        raise ConfigError(f"backbone {network.name}: no layer at stride {missing}")
    extractor = keras.Model(
        network.inputs,
        {f"stride{s}": network.get_layer(taps[s]).output for s in sorted(taps)},
        name=f"{network.name}_taps",
    )
    image = keras.Input((None, None, 3), dtype="float32", name="image")
    x = image
    for layer in preprocessing:
        x = layer(x)
    return keras.Model(image, extractor(x), name=name)


# --- backbones --------------------------------------------------------------------------------


def _keras_application(constructor_name: str) -> BackboneBuilder:
    """keras.applications EfficientNet(V2): preprocessing ([0,255] -> model range) is built in."""

    def build(config: Config) -> keras.Model:
        weights = resolve_weights(config)
        constructor = getattr(keras.applications, constructor_name)
        network = constructor(
            include_top=False,
            weights="imagenet" if weights == "imagenet" else None,
            input_shape=(None, None, 3),
        )
        if weights not in WEIGHTS_OPTIONS:
            load_weights_file(network, weights)
        return feature_taps(network)

    return build


# The efficientnet package's models expect "torch" preprocessing: x/255, then ImageNet mean/std.
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


def _efn_application(variant: str) -> BackboneBuilder:
    """The `efficientnet` package (noisy-student weights), made Keras-3 clean.

    The package builds swish as a closure over `keras.backend.sigmoid` (gone in Keras 3) and
    drop-connect as a closure-defined `FixedDropout`: neither runs nor serialises. The built
    network is therefore cloned with those layers replaced by Keras built-ins of the same
    names (the "silu" activation, `Dropout(noise_shape=(None, 1, 1, 1))`), weights copied
    by layer name.
    """

    def build(config: Config) -> keras.Model:
        import efficientnet.keras as efn

        weights = resolve_weights(config)
        network = getattr(efn, f"EfficientNet{variant}")(
            include_top=False,
            weights=weights if weights in ("imagenet", "noisy-student") else None,
            input_shape=(None, None, 3),
        )
        if weights not in WEIGHTS_OPTIONS:
            load_weights_file(network, weights)
        network = _keras3_clone(network)
        preprocessing = [
            keras.layers.Rescaling(1.0 / 255.0, name="scale_0_1"),
            keras.layers.Normalization(
                mean=list(_TORCH_MEAN), variance=[s * s for s in _TORCH_STD], name="imagenet_norm"
            ),
        ]
        return feature_taps(network, preprocessing)

    return build


def _is_package_swish(activation) -> bool:
    return callable(activation) and getattr(activation, "__module__", "").startswith("efficientnet")


def _keras3_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    """Clone function: a fresh copy of `layer`, with Keras built-ins for the package's closures."""
    if type(layer).__name__ == "FixedDropout":
        return keras.layers.Dropout(layer.rate, noise_shape=(None, 1, 1, 1), name=layer.name)
    config = layer.get_config()
    if _is_package_swish(getattr(layer, "activation", None)):
        config["activation"] = "silu"
    return type(layer).from_config(config)


def _keras3_clone(network: keras.Model) -> keras.Model:
    """Clone `network` through `_keras3_layer`, then copy every layer's weights by name."""
    clone = keras.models.clone_model(network, clone_function=_keras3_layer)
    for layer in clone.layers:
        if layer.weights:
            layer.set_weights(network.get_layer(layer.name).get_weights())
    return clone


for _index in range(8):
    BACKBONES[f"efficientnet_b{_index}"] = _keras_application(f"EfficientNetB{_index}")
    BACKBONES[f"efn_b{_index}"] = _efn_application(f"B{_index}")
for _variant in ("B0", "B1", "B2", "B3", "S", "M", "L"):
    BACKBONES[f"efficientnetv2_{_variant.lower()}"] = _keras_application(
        f"EfficientNetV2{_variant}"
    )


# --- heads ------------------------------------------------------------------------------------


@register_head("dolg")
def dolg_head(config: Config, features: Mapping[str, keras.KerasTensor]) -> keras.KerasTensor:
    """DOLG: local branch on stride 16, GeM global branch on stride 32, orthogonal fusion."""
    head = DOLGHead(
        local_dim=config.local_dim,
        embedding_dim=config.embedding_dim,
        dilations=config.dilations,
        gem_p=config.gem_p,
        dropout=config.dropout,
        name="dolg_head",
    )
    return head([features["stride16"], features["stride32"]])


@register_head("gem")
def gem_head(config: Config, features: Mapping[str, keras.KerasTensor]) -> keras.KerasTensor:
    """Global-only ablation: GeM on the stride-32 map, dropout, Dense to the embedding."""
    pooled = GeM(config.gem_p, name="gem")(features["stride32"])
    return _neck(config, pooled)


@register_head("avg")
def average_head(config: Config, features: Mapping[str, keras.KerasTensor]) -> keras.KerasTensor:
    """Backbone-only baseline: global average pooling, dropout, Dense to the embedding."""
    pooled = keras.layers.GlobalAveragePooling2D(name="average_pool")(features["stride32"])
    return _neck(config, pooled)


def _neck(config: Config, pooled: keras.KerasTensor) -> keras.KerasTensor:
    x = keras.layers.Dropout(config.dropout, name="neck_dropout")(pooled)
    return keras.layers.Dense(config.embedding_dim, name="neck")(x)


for _module in EXTENSION_MODULES:
    importlib.import_module(_module)
