"""EfficientNet backbones: keras.applications B0-B7 / V2, and the `efficientnet` package (efn_*).

Both are cloned once built, with every `keras.layers.DepthwiseConv2D` replaced by
`landmarks.layers.DepthwiseConv2D` (the same layer, weights copied, but fast on JAX on a CPU).
"""

from __future__ import annotations

import keras

from landmarks.config import Config
from landmarks.layers.depthwise import DepthwiseConv2D
from landmarks.models.registry import BACKBONES, BackboneBuilder
from landmarks.models.taps import feature_taps
from landmarks.models.weights import WEIGHTS_OPTIONS, load_weights_file, resolve_weights


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
        return feature_taps(_clone(network))

    return build


# The efficientnet package's models expect "torch" preprocessing: x/255, then ImageNet mean/std.
_TORCH_MEAN = (0.485, 0.456, 0.406)


_TORCH_STD = (0.229, 0.224, 0.225)


def _efn_application(variant: str) -> BackboneBuilder:
    """The `efficientnet` package (noisy-student weights), made Keras-3 clean.

    The package builds swish as a closure over `keras.backend.sigmoid` (gone in Keras 3) and
    drop-connect as a closure-defined `FixedDropout`: neither runs nor serialises. The clone
    replaces those layers by Keras built-ins of the same names (the "silu" activation,
    `Dropout(noise_shape=(None, 1, 1, 1))`).
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
        network = _clone(network)
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


def _cloned_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    """Clone function: a fresh copy of `layer`; landmarks' DepthwiseConv2D for Keras' one, and
    Keras built-ins for the `efficientnet` package's closures."""
    if type(layer).__name__ == "FixedDropout":
        return keras.layers.Dropout(layer.rate, noise_shape=(None, 1, 1, 1), name=layer.name)
    config = layer.get_config()
    if _is_package_swish(getattr(layer, "activation", None)):
        config["activation"] = "silu"
    if type(layer) is keras.layers.DepthwiseConv2D:
        return DepthwiseConv2D.from_config(config)
    return type(layer).from_config(config)


def _clone(network: keras.Model) -> keras.Model:
    """Clone `network` through `_cloned_layer`, then copy every layer's weights by name."""
    clone = keras.models.clone_model(network, clone_function=_cloned_layer)
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
