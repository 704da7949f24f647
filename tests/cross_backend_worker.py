"""One side of tests/test_cross_backend.py, run with KERAS_BACKEND set to the backend to use.

python tests/cross_backend_worker.py save FOLDER [LOAD_FOLDER OUT.npy]
    build EfficientNet-Lite0-DOLG (weights None, seed 0; the demo's backbone, whose depthwise
    layers run Keras' code on TensorFlow and shifted multiply-adds on JAX on the CPU), move
    every variable (BatchNorm statistics included) off its initial value, save
    FOLDER/embed_model.keras and the embeddings of fixed images as FOLDER/embeddings.npy;
    with LOAD_FOLDER, also load LOAD_FOLDER/embed_model.keras and write its embeddings of the
    same images to OUT.npy
python tests/cross_backend_worker.py load LOAD_FOLDER OUT.npy
"""

from __future__ import annotations

import os
import sys

import keras
import numpy as np

from landmarks.config import Config
from landmarks.inference.forward import compiled_forward

IMAGE_SIZE = 64


def images() -> np.ndarray:
    return (
        np.random.default_rng(3).uniform(0, 255, (4, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    )


def save(folder: str) -> None:
    from landmarks.models.build import build_model

    config = Config.from_dict(
        {
            "backbone": "efficientnet_lite0",
            "weights": None,
            "image_size": IMAGE_SIZE,
            "local_dim": 32,
            "embedding_dim": 32,
            "num_classes": 5,
        }
    )
    keras.utils.set_random_seed(0)
    _, embed_model = build_model(config)
    rng = np.random.default_rng(1)
    # w (1 + 5 % noise) + 0.01 noise: every weight moves, zeros included (biases, BatchNorm
    # means), by little enough that 16 blocks of activations stay finite; variances stay > 0
    moved = []
    for variable in embed_model.weights:
        value = np.asarray(variable.numpy())
        value = value * (1 + 0.05 * rng.standard_normal(value.shape)) + 0.01 * rng.standard_normal(
            value.shape
        )
        moved.append(np.abs(value) + 1e-3 if "variance" in variable.path else value)
    embed_model.set_weights(moved)
    embed_model.save(os.path.join(folder, "embed_model.keras"))
    np.save(os.path.join(folder, "embeddings.npy"), compiled_forward(embed_model)(images()))


def load(folder: str, out: str) -> None:
    import landmarks.models  # noqa: F401  (registers the custom layers)

    model = keras.saving.load_model(os.path.join(folder, "embed_model.keras"), compile=False)
    np.save(out, compiled_forward(model)(images()))


if __name__ == "__main__":
    if sys.argv[1] == "save":
        save(sys.argv[2])
        if len(sys.argv) > 3:
            load(sys.argv[3], sys.argv[4])
    else:
        load(sys.argv[2], sys.argv[3])
