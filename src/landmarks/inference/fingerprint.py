"""What made a set of embeddings: the model file and the settings that change the vectors.

    {"model_sha256": <sha256 of the embed model file's bytes>,
     "image_size": 512, "tta_flip": false, "tta_scales": [1.0]}

`export --train-embeddings` stores it in the exported train.npz (landmarks.inference.embedding,
key "fingerprint"); `infer` reuses attached train embeddings only when theirs equals the
fingerprint of the model and settings it runs with, and says which differ otherwise.

Not part of it (they change the vectors by rounding only): the batch size, the precision
policy, the device, and `embed_dtype` (float16 storage).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from landmarks.errors import DataError

EMBEDDING_SETTINGS = ("image_size", "tta_flip", "tta_scales")
_CHUNK = 1 << 22  # bytes read at a time while hashing


def file_sha256(path: str) -> str:
    """Hex sha256 of a local or gs:// file's bytes."""
    import tensorflow as tf

    digest = hashlib.sha256()
    with tf.io.gfile.GFile(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def model_fingerprint(model_path: str, config) -> dict:
    """The fingerprint of embeddings made with the model file `model_path` under `config`."""
    fingerprint = {"model_sha256": file_sha256(model_path)}
    for key in EMBEDDING_SETTINGS:
        value = getattr(config, key)
        fingerprint[key] = [float(v) for v in value] if isinstance(value, list) else value
    return fingerprint


def read_fingerprint(path: str) -> dict | None:
    """The fingerprint stored in an embeddings .npz, or None when it has none; only that
    member of the archive is read."""
    import tensorflow as tf

    try:
        with tf.io.gfile.GFile(path, "rb") as handle:
            with np.load(handle, allow_pickle=False) as archive:
                if "fingerprint" not in archive.files:
                    return None
                return json.loads(str(archive["fingerprint"]))
    except (ValueError, OSError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not an embeddings file ({error})") from error


def differences(expected: dict, found: dict | None) -> list[str]:
    """What differs between two fingerprints, one phrase each ([] when they match)."""
    if found is None:
        return ["it has no fingerprint"]
    changed = []
    for key in sorted(set(expected) | set(found)):
        if expected.get(key) != found.get(key):
            if key == "model_sha256":
                changed.append("another model file")
            else:
                changed.append(f"{key} {found.get(key)!r}, not {expected.get(key)!r}")
    return changed
