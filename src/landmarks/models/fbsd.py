"""`head: fbsd`: the FBSD head (arXiv 2103.02782) on any registered backbone.

FBSD changes the backbone as well as the head: an `FBSM` sits on the last map of each of the
strides 8, 16 and 32 (with 8, 4 and 2 strips, as in the paper); its *boosted* map goes to the
head and its *suppressed* map (best strip damped) replaces the map inside the backbone, so that
the next stage has to look for other parts. `fbsd_backbone` does that rewiring on the backbone
model (`models.BACKBONE_ADAPTERS["fbsd"]`); `fbsd_head` then builds `FBSDHead` over the three
boosted maps and returns the concatenation embedding for kNN plus one auxiliary embedding per
stage, each trained with its own sub-center ArcFace (train_model outputs the dict of logits
{"embedding", "stage1", "stage2", "stage3"}).

Differences from the official code, on purpose: the classifiers are sub-center ArcFace on
L2-normalised embeddings (so the kNN embedding is angular) instead of Linear layers after an ELU,
and the four losses have equal weights (the paper weighs the three stage losses by 2).
"""

from __future__ import annotations

from collections.abc import Mapping

import keras

from landmarks.config import Config
from landmarks.errors import ConfigError
from landmarks.layers.fbsd import FBSM, FBSDHead
from landmarks.models.registry import BACKBONE_ADAPTERS, HeadOutput, register_head

# Strides the head uses and the number of FBSM strips at each (the paper's 8, 4, 2).
FBSD_STRIPS = {8: 8, 16: 4, 32: 2}


def _is_functional(layer) -> bool:
    return isinstance(layer, keras.Model) and hasattr(layer, "_nodes_by_depth")


def _producing_layer(tensor) -> keras.layers.Layer:
    """The innermost layer that computes the symbolic `tensor`, looking through nested
    functional models (the backbone contract wraps the network in one)."""
    history = tensor._keras_history
    operation = history.operation
    if _is_functional(operation):
        return _producing_layer(operation.outputs[history.tensor_index])
    return operation


def stride_tap_layers(backbone: keras.Model) -> dict[int, str]:
    """Names of the layers computing the backbone's "stride8/16/32" maps; ConfigError when a map
    is missing or comes from a layer with several outputs (it could not be replaced)."""
    outputs = backbone.output
    if not isinstance(outputs, Mapping):
        raise ConfigError(
            f"head: fbsd needs a backbone returning a dict of stride maps ({backbone.name})"
        )
    missing = [s for s in FBSD_STRIPS if f"stride{s}" not in outputs]
    if missing:
        raise ConfigError(
            f"head: fbsd needs backbone maps at strides 8, 16 and 32; {backbone.name} has none "
            f"at {missing}"
        )
    names = {}
    for stride in FBSD_STRIPS:
        layer = _producing_layer(outputs[f"stride{stride}"])
        if len(keras.tree.flatten(layer.output)) != 1:
            raise ConfigError(
                f"head: fbsd cannot rewire the stride-{stride} map of {backbone.name}: its layer "
                f"{layer.name!r} has several outputs"
            )
        names[stride] = layer.name
    return names


def fbsd_backbone(config: Config, backbone: keras.Model) -> keras.Model:
    """Rewire `backbone` (image -> {"strideS": map}) with FBSMs; returns image ->
    {"stride8", "stride16", "stride32": boosted maps}, named "backbone", sharing all weights."""
    taps = stride_tap_layers(backbone)
    modules = {
        taps[stride]: (
            stride,
            FBSM(strips, config.fbsd_alpha, config.fbsd_beta, name=f"fbsm{stride}"),
        )
        for stride, strips in FBSD_STRIPS.items()
    }
    boosted = {}

    def call(layer, *args, **kwargs):
        if _is_functional(layer):  # inline nested models so the taps are reachable
            inputs = keras.tree.pack_sequence_as(layer.input, keras.tree.flatten(args[0]))
            inner = keras.models.clone_model(
                layer, input_tensors=inputs, clone_function=lambda x: x, call_function=call
            )
            return inner.output
        output = layer(*args, **kwargs)
        if layer.name not in modules:
            return output
        stride, fbsm = modules[layer.name]
        boosted[stride], suppressed = fbsm(output)
        return suppressed

    rewired = keras.models.clone_model(backbone, clone_function=lambda x: x, call_function=call)
    outputs = {f"stride{s}": boosted[s] for s in sorted(boosted)}
    return keras.Model(rewired.input, outputs, name="backbone")


BACKBONE_ADAPTERS["fbsd"] = fbsd_backbone


@register_head("fbsd")
def fbsd_head(config: Config, features: Mapping[str, keras.KerasTensor]) -> HeadOutput:
    """FBSDHead over the boosted stride-8/16/32 maps: main embedding = concatenation branch."""
    head = FBSDHead(
        mid_channels=config.fbsd_mid_dim,
        part_channels=config.fbsd_part_dim,
        embedding_dim=config.embedding_dim,
        gamma=config.fbsd_gamma,
        name="fbsd_head",
    )
    *stages, concat = head([features["stride8"], features["stride16"], features["stride32"]])
    return HeadOutput(concat, {f"stage{i}": e for i, e in enumerate(stages, start=1)})
