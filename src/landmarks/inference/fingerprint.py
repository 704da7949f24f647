"""What made a set of embeddings: the model file and the settings that change the vectors.

    {"model_sha256": <sha256 of the embed model file's bytes>,
     "image_size": 512, "tta_flip": false, "tta_scales": [1.0]}

`export --train-embeddings` stores it in the exported train.npz (landmarks.inference.embedding,
key "fingerprint"); `infer` reuses attached train embeddings (config.train_embeddings) only when
theirs equals the fingerprint of the model and settings it runs with, and says which differ
otherwise (`attached_train_embeddings`). The run folder's own embedding cache
(landmarks.inference.cache) extends it with the stored dtype and the images' identity.

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


def embedding_fingerprint(model_sha256: str, config) -> dict:
    """The fingerprint of embeddings made by the model file of digest `model_sha256` under
    `config` (its EMBEDDING_SETTINGS)."""
    fingerprint = {"model_sha256": model_sha256}
    for key in EMBEDDING_SETTINGS:
        value = getattr(config, key)
        fingerprint[key] = [float(v) for v in value] if isinstance(value, list) else value
    return fingerprint


def read_fingerprint(path: str) -> dict | None:
    """The fingerprint stored in an embeddings .npz, or None when it has none; only that
    member of the archive is read. DataError naming the file when it is not an .npz, is cut
    off, or its fingerprint is not a JSON object."""
    import tensorflow as tf

    from landmarks.inference.embedding import NPZ_ERRORS

    try:
        with tf.io.gfile.GFile(path, "rb") as handle:
            with np.load(handle, allow_pickle=False) as archive:
                if "fingerprint" not in archive.files:
                    return None
                fingerprint = json.loads(str(archive["fingerprint"]))
    except NPZ_ERRORS as error:  # json.JSONDecodeError is a ValueError
        raise DataError(f"{path}: not an embeddings file, or cut off ({error})") from error
    if not isinstance(fingerprint, dict):
        raise DataError(
            f"{path}: its fingerprint is not a JSON object but {json.dumps(fingerprint)[:60]}; "
            "export the train embeddings again"
        )
    return fingerprint


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


def attached_train_embeddings(path: str, expected: dict, log=print):
    """The embeddings at `path` (an export's embeddings/train.npz) when their fingerprint equals
    `expected`, else None (the train records are then embedded). Logs which, and why."""
    import tensorflow as tf

    from landmarks.inference.embedding import load_embeddings

    if not tf.io.gfile.exists(path):
        log(f"train: no attached embeddings at {path}; embedding the train records")
        return None
    changed = differences(expected, read_fingerprint(path))
    if changed:
        log(
            f"train: the attached embeddings {path} were made otherwise ({'; '.join(changed)}); "
            "embedding the train records"
        )
        return None
    train = load_embeddings(path)
    log(f"train: reusing {len(train)} attached embeddings from {path} (fingerprint matches)")
    return train
