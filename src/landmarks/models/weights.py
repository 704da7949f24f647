"""Which pretrained weights a config asks for, and loading a backbone weights file."""

from __future__ import annotations

import os

import keras

from landmarks.config import Config
from landmarks.errors import ConfigError

WEIGHTS_OPTIONS = (None, "imagenet", "noisy-student")


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
