"""What the model tests share, written once: the small model config they build (5 classes, 32-d
embedding, local branch 64, dilations 1-3 so that small images fit) and the .keras round trip."""

from __future__ import annotations

import numpy as np

from landmarks.config import Config


def small_config(**overrides) -> Config:
    """A small DOLG config (EfficientNet-B0 unless `backbone` is given), with `overrides`."""
    values = {
        "backbone": "efficientnet_b0",
        "num_classes": 5,
        "embedding_dim": 32,
        "local_dim": 64,
        "dilations": [1, 2, 3],
        **overrides,
    }
    return Config.from_dict(values)


def assert_reloads_the_same(embed_model, images, path, atol: float) -> None:
    """Save `embed_model` to `path` (.keras), load it back, and check it embeds `images` as the
    original does, within `atol`."""
    import keras

    embed_model.save(str(path))
    loaded = keras.saving.load_model(str(path))
    np.testing.assert_allclose(
        np.asarray(loaded(images)), np.asarray(embed_model(images)), atol=atol
    )
