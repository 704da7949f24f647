"""Embeddings of a split: run the embedding model with flip / multi-scale TTA, save and load them.

A view is (scale, flipped). Each view's L2-normalised embedding is summed over the views and the
sum is L2-normalised again, so the result is the normalised mean direction of the views.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from landmarks.errors import DataError

# What numpy raises for an .npz that is not one, or is cut off: read_npz turns them into DataError
NPZ_ERRORS = (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error)


class NothingEmbedded(DataError):
    """The dataset yielded no image: it is empty, or every image failed and was dropped."""


@dataclass
class Embeddings:
    """ids: str [N]; vectors: float32 [N, D], L2-normalised rows; labels: int64 [N] or None
    (the dataset's integer labels, -1 = unknown; None when every label is unknown);
    unreadable: ids of the split whose image could not be read, so they have no vector
    (landmarks.inference.sources; not saved with the vectors)."""

    ids: np.ndarray
    vectors: np.ndarray
    labels: np.ndarray | None = None
    unreadable: tuple[str, ...] = ()

    def __post_init__(self):
        self.ids = np.asarray(self.ids).astype(str)
        self.vectors = np.asarray(self.vectors, dtype=np.float32)
        if self.vectors.ndim != 2 or self.vectors.shape[0] != self.ids.shape[0]:
            raise DataError(
                f"Embeddings: {self.ids.shape[0]} ids but vectors of shape {self.vectors.shape}"
            )
        if self.labels is not None:
            self.labels = np.asarray(self.labels, dtype=np.int64)
            if self.labels.shape != self.ids.shape:
                raise DataError(
                    f"Embeddings: {self.ids.shape[0]} ids but {self.labels.shape[0]} labels"
                )

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def scaled_size(size: int, scale: float, multiple: int = 32) -> int:
    """`size * scale` rounded to the nearest multiple of `multiple` (at least one multiple)."""
    return max(multiple, int(round(size * scale / multiple)) * multiple)


def embed(
    embed_model,
    dataset,
    *,
    tta_flip: bool = False,
    scales: Sequence[float] = (1.0,),
) -> Embeddings:
    """Embed every element of `dataset` with `embed_model`, averaging test-time augmentations.

    embed_model: image float32 [B, H, W, 3] in [0, 255] -> float32 [B, D] (H, W multiples of 32):
        a Keras model (run through landmarks.inference.forward.compiled_forward, on the JAX
        devices or as a tf.function), or any callable of numpy batches.
    dataset: a tf.data.Dataset of batches {"image": float32 [B, S, S, 3], "id": string [B],
        "label": int32 [B]} (as landmarks.data.pipeline.make_embed_dataset gives); each scale s
        then resizes the batch in-graph to scaled_size(S, s) pixels. Or a callable
        `scale -> Dataset` that decodes the images at each scale itself (sharper for scales > 1);
        every scale must then yield the same ids in the same order.
    tta_flip: also embed the left-right mirrored images.
    scales: image scale factors, e.g. (0.7071, 1.0, 1.4142).
    Returns Embeddings (vectors L2-normalised float32 [N, D]); NothingEmbedded when the dataset
    yields no image.
    """
    scales = tuple(float(s) for s in scales)
    if not scales or any(not np.isfinite(s) or s <= 0 for s in scales):
        raise DataError(f"embed: scales must be positive numbers, got {scales!r}")
    embed_model = _as_forward(embed_model)
    total = None
    ids = labels = None
    for scale in scales:
        source = dataset(scale) if callable(dataset) else dataset
        resize = None if callable(dataset) else scale
        view_ids, view_labels, view_sum = _embed_views(embed_model, source, resize, tta_flip)
        if ids is None:
            ids, labels, total = view_ids, view_labels, view_sum
            continue
        if view_ids.shape != ids.shape or not np.array_equal(view_ids, ids):
            raise DataError(f"embed: the dataset for scale {scale} yields different ids")
        total += view_sum
    return Embeddings(ids=ids, vectors=_normalise(total), labels=_known_labels(labels))


def _as_forward(embed_model):
    """A Keras model compiled for inference (once per embed call); other callables as they are."""
    import keras

    if isinstance(embed_model, keras.Model):
        from landmarks.inference.forward import compiled_forward

        return compiled_forward(embed_model)
    return lambda images: embed_model(images, training=False)


def _embed_views(forward, dataset, scale: float | None, tta_flip: bool):
    """Sum over the flip views of the normalised embeddings of one scale: ids, labels, [N, D].
    The batches are resized (tf.image, on the host) and handed to `forward` as numpy arrays."""
    import tensorflow as tf

    def run(images):
        if scale is not None and scale != 1.0:
            size = scaled_size(int(images.shape[1]), scale)
            images = tf.image.resize(images, [size, size], antialias=True)
        return forward(images.numpy())

    ids, labels, vectors = [], [], []
    for batch in dataset:
        if not isinstance(batch, dict) or "image" not in batch or "id" not in batch:
            raise DataError("embed: dataset elements must be dicts with 'image' and 'id'")
        images = tf.cast(batch["image"], tf.float32)
        views = _normalise(np.asarray(run(images), np.float32))
        if tta_flip:
            views = views + _normalise(np.asarray(run(images[:, :, ::-1, :]), np.float32))
        vectors.append(views)
        ids.extend(_decode_ids(batch["id"].numpy()))
        label = batch.get("label")
        count = views.shape[0]
        labels.append(np.full(count, -1) if label is None else label.numpy().astype(np.int64))
    if not vectors:
        raise NothingEmbedded(
            "embed: the dataset yielded no image (it is empty, or every image failed and was dropped)"
        )
    return np.asarray(ids, dtype=str), np.concatenate(labels), np.concatenate(vectors)


def _decode_ids(raw) -> list[str]:
    return [value.decode("utf-8") if isinstance(value, bytes) else str(value) for value in raw]


def _normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    vectors = np.asarray(vectors, np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _known_labels(labels: np.ndarray) -> np.ndarray | None:
    return None if labels is None or (labels < 0).all() else labels


def save_embeddings(
    path: str, embeddings: Embeddings, *, dtype: str = "float32", fingerprint: dict | None = None
) -> None:
    """Write ids, vectors (float32 or float16) and labels to an .npz file, atomically.

    fingerprint: what made the vectors (landmarks.inference.fingerprint), stored beside them as
    a JSON string under the key "fingerprint".
    """
    import json

    from landmarks.io_utils import write_bytes_atomic

    if dtype not in ("float32", "float16"):
        raise DataError(f"save_embeddings: dtype must be float32 or float16, got {dtype!r}")
    buffer = io.BytesIO()
    arrays = {"ids": embeddings.ids, "vectors": embeddings.vectors.astype(dtype)}
    if embeddings.labels is not None:
        arrays["labels"] = embeddings.labels
    if fingerprint is not None:
        arrays["fingerprint"] = np.asarray(json.dumps(fingerprint, sort_keys=True))
    np.savez(buffer, **arrays)
    write_bytes_atomic(path, buffer.getvalue())


def load_embeddings(path: str) -> Embeddings:
    """Read an .npz written by save_embeddings (vectors returned as float32); DataError naming
    the file when it is missing, not such a file, cut off, or its arrays do not match."""
    import tensorflow as tf

    if not tf.io.gfile.exists(path):
        raise DataError(f"embeddings file not found: {path}")
    with tf.io.gfile.GFile(path, "rb") as handle:
        data = handle.read()
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            labels = archive["labels"] if "labels" in archive.files else None
            return Embeddings(ids=archive["ids"], vectors=archive["vectors"], labels=labels)
    except NPZ_ERRORS as error:  # DataError of a mismatch too: it is a ValueError
        raise DataError(f"{path}: not an embeddings file, or cut off ({error})") from error
