"""One side of tests/test_cross_backend.py, run with KERAS_BACKEND set to the backend to use.

python tests/cross_backend_worker.py save FOLDER   build EfficientNetB0-DOLG (weights None,
    seed 0), take one AdamW step on a fixed batch, save FOLDER/embed_model.keras and the
    embeddings of fixed images as FOLDER/embeddings.npy
python tests/cross_backend_worker.py load FOLDER OUT.npy   load FOLDER/embed_model.keras and
    write the embeddings of the same images to OUT.npy
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
    from landmarks.training.optimization import ArcFaceCrossEntropy, make_optimizer, make_schedule

    config = Config.from_dict(
        {"image_size": IMAGE_SIZE, "local_dim": 32, "embedding_dim": 32, "num_classes": 5}
    )
    keras.utils.set_random_seed(0)
    train_model, embed_model = build_model(config)
    optimizer = make_optimizer(
        "adamw", make_schedule(1e-3, 10, 0, 0.0), weight_decay=1e-4, clip_norm=10.0
    )
    train_model.compile(optimizer=optimizer, loss=ArcFaceCrossEntropy())
    batch = {"image": images(), "label": np.arange(4, dtype="int32")}
    train_model.train_on_batch(batch, batch["label"])
    embed_model.save(os.path.join(folder, "embed_model.keras"))
    np.save(os.path.join(folder, "embeddings.npy"), compiled_forward(embed_model)(images()))


def load(folder: str, out: str) -> None:
    import landmarks.models  # noqa: F401  (registers the custom layers)

    model = keras.saving.load_model(os.path.join(folder, "embed_model.keras"), compile=False)
    np.save(out, compiled_forward(model)(images()))


if __name__ == "__main__":
    if sys.argv[1] == "save":
        save(sys.argv[2])
    else:
        load(sys.argv[2], sys.argv[3])
