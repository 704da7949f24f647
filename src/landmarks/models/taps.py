"""Stride taps: find each stride's stage output of a CNN and wrap it into the backbone contract."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from landmarks.errors import ConfigError

STRIDES = (4, 8, 16, 32)


# Size of the probe image used to measure each layer's stride (never run, only traced).
_PROBE = 256


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
