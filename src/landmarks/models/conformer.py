"""`backbone: conformer_ti | conformer_s`: Conformer (arXiv 2105.03889) as a pipeline backbone.

The backbone follows the `models.BACKBONES` contract: raw image float32 [B, H, W, 3] in [0, 255]
-> ImageNet mean/std normalisation (as the official DeiT-style training) -> the Conformer network
-> {"stride4", "stride8", "stride16", "stride32"} maps of its CNN branch, so the DOLG head taps
stride 16 (last map of stage 3) and stride 32 (after the last block's strided fusion), and the
FBSD head strides 8, 16 and 32. The transformer branch is inside the blocks; its class-token
classifier is not used. No pretrained Conformer weights ship with Keras: `weights` may be a
weights file saved from this network (e.g. a converted official checkpoint), else null.
"""

from __future__ import annotations

import keras

from landmarks.config import Config
from landmarks.errors import ConfigError
from landmarks.layers.conformer import CONFORMER_PRESETS, conformer_backbone
from landmarks.models.registry import BACKBONES
from landmarks.models.weights import load_weights_file, resolve_weights

# ImageNet statistics of [0, 1] images (timm/DeiT preprocessing of the official code).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _builder(preset: str):
    def build(config: Config) -> keras.Model:
        weights = resolve_weights(config)
        if weights in ("imagenet", "noisy-student"):
            raise ConfigError(
                f"weights: no {weights!r} weights are available for {preset} in Keras; use null or "
                "the path of a weights file of this network"
            )
        network = conformer_backbone(**CONFORMER_PRESETS[preset], name=preset)
        if weights is not None:
            load_weights_file(network, weights)
        image = keras.Input((None, None, 3), dtype="float32", name="image")
        x = keras.layers.Rescaling(1.0 / 255.0, name="scale_0_1")(image)
        x = keras.layers.Normalization(
            mean=list(IMAGENET_MEAN), variance=[s * s for s in IMAGENET_STD], name="imagenet_norm"
        )(x)
        return keras.Model(image, network(x), name="backbone")

    return build


for _preset in CONFORMER_PRESETS:
    BACKBONES[_preset] = _builder(_preset)
