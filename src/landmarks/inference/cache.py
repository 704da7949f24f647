"""Embeddings kept on disk with what made them, reused only while that is unchanged.

`infer` writes each split's embeddings to <folder>/<split>.npz (save_embeddings) and, beside it,
<folder>/<split>.json: the fingerprint, a JSON object of everything the vectors depend on:

    model_sha256 sha256 of the embedding model file's bytes (a copied or re-downloaded model
    image_size,  still matches, a retrained one does not) and the settings that change the
    tta_flip,    vectors: landmarks.inference.fingerprint, the fingerprint an export's train
    tta_scales   embeddings carry
    embed_dtype  the stored dtype
    images       the identity of the image set (landmarks.inference.sources.SplitImages)

A later run reuses the .npz when its fingerprint is equal, so adding an ensemble member embeds
only that member, and embeddings computed elsewhere (e.g. train embeddings uploaded as a Kaggle
dataset with the run folder) are used as they are. The old fingerprint is removed before a new
.npz is written and the new one written after it, so a run killed in between leaves no
fingerprint and the next run embeds again.
"""

from __future__ import annotations

import json
import os

from landmarks.errors import DataError
from landmarks.inference.embedding import Embeddings, load_embeddings, save_embeddings
from landmarks.inference.fingerprint import embedding_fingerprint


def fingerprint(model_sha256: str, config, images_identity: str) -> dict:
    """The fingerprint of embeddings made by the model with the config's image size, TTA and
    saved dtype, of the image set `images_identity`."""
    return {
        **embedding_fingerprint(model_sha256, config),
        "embed_dtype": str(config.embed_dtype),
        "images": images_identity,
    }


def load_cached(npz_path: str, expected: dict, log=print) -> Embeddings | None:
    """The embeddings at npz_path when their fingerprint equals `expected`, else None (logged
    in one line when the .npz is damaged, e.g. cut off by a full disk: it is embedded again)."""
    import tensorflow as tf

    json_path = _fingerprint_path(npz_path)
    if not (tf.io.gfile.exists(json_path) and tf.io.gfile.exists(npz_path)):
        return None
    with tf.io.gfile.GFile(json_path, "r") as handle:
        try:
            stored = json.loads(handle.read())
        except json.JSONDecodeError:
            return None
    if stored != expected:
        return None
    try:
        return load_embeddings(npz_path)
    except DataError as error:
        log(f"{error}; embedding again")
        return None


def save_cached(npz_path: str, fingerprint_: dict, embeddings: Embeddings, dtype: str) -> None:
    """Write the embeddings (vectors in `dtype`) and then their fingerprint, atomically."""
    import tensorflow as tf

    from landmarks.io_utils import write_text_atomic

    json_path = _fingerprint_path(npz_path)
    if tf.io.gfile.exists(json_path):
        tf.io.gfile.remove(json_path)
    save_embeddings(npz_path, embeddings, dtype=dtype)
    write_text_atomic(json_path, json.dumps(fingerprint_, indent=1) + "\n")


def _fingerprint_path(npz_path: str) -> str:
    return os.path.splitext(npz_path)[0] + ".json"
