"""Sub-center ArcFace classifier (Deng et al. 2020) with per-class dynamic margins."""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from landmarks.errors import DataError


def dynamic_margins(
    class_counts: Sequence[int] | np.ndarray, low: float = 0.05, high: float = 0.5
) -> np.ndarray:
    """Per-class ArcFace margins of the GLR 2020/2021 winners: linear in normalised n^(-1/4).

    With f_i = n_i^(-1/4) for the image count n_i of class i,
    margin_i = low + (high - low) * (f_i - min f) / (max f - min f):
    the rarest class gets `high`, the most frequent `low`. When every class has the same count
    the rule is undefined (0/0); every class then gets the midpoint (low + high) / 2.

    Returns float32 [num_classes]. Raises DataError for an empty list or a count below 1.
    """
    counts = np.asarray(class_counts, dtype=np.float64).reshape(-1)
    if counts.size == 0:
        raise DataError("dynamic_margins: class_counts is empty")
    bad = np.flatnonzero(~(counts >= 1))
    if bad.size:
        raise DataError(
            f"dynamic_margins: class {int(bad[0])} has count {counts[bad[0]]:g}; every class "
            "needs at least one image"
        )
    f = counts**-0.25
    spread = f.max() - f.min()
    if spread == 0:
        return np.full(counts.shape, (low + high) / 2, dtype=np.float32)
    return (low + (high - low) * (f - f.min()) / spread).astype(np.float32)


@keras.saving.register_keras_serializable(package="landmarks")
class SubCenterArcFace(keras.layers.Layer):
    """Cosine classifier with k sub-centres per class and an additive angular margin.

    `layer([embeddings (B,D), labels (B,) int])` -> float32 (B, num_classes):
        scale * cos(theta_j) for j != label, and scale * phi on the target class, where
        cos(theta_j) = max over the k unit sub-centres of class j of their dot product with the
        unit embedding, and phi = cos(theta + m) when theta + m <= pi, else the usual monotonic
        fallback cos(theta) - m sin(m) (= cos(theta) - sin(pi - m) m), i.e.
        phi = cos(theta+m) if cos(theta) > cos(pi - m) else cos(theta) - sin(pi - m) * m.
        m is the margin of the TARGET class (scalar, or per class).
    `layer(embeddings)` -> scale * cos(theta), no margin (inference, validation).

    Math in float32 (the sub-centre weights are never autocast). Labels must lie in
    [0, num_classes).

    Args:
        num_classes: number of classes.
        k: sub-centres per class.
        scale: logit scale s.
        margin: a float, or a sequence of num_classes floats (e.g. `dynamic_margins(counts)`),
            kept in the config so that it serialises with the model.
    """

    def __init__(
        self,
        num_classes: int,
        k: int = 3,
        scale: float = 30.0,
        margin: float | Sequence[float] = 0.3,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.k = int(k)
        self.scale = float(scale)
        if np.ndim(margin) == 0:
            self.margin = float(margin)
        else:
            self.margin = [float(m) for m in np.asarray(margin).reshape(-1)]
            if len(self.margin) != self.num_classes:
                raise ValueError(
                    f"SubCenterArcFace: {len(self.margin)} margins for {self.num_classes} classes"
                )
        if self.num_classes < 1 or self.k < 1:
            raise ValueError(f"SubCenterArcFace: num_classes={num_classes}, k={k} must be >= 1")

    def build(self, input_shape):
        embedding_shape = (
            input_shape[0] if isinstance(input_shape[0], (list, tuple)) else input_shape
        )
        self.sub_centers = self.add_weight(
            name="sub_centers",
            shape=(embedding_shape[-1], self.num_classes * self.k),
            initializer="glorot_uniform",
            dtype="float32",
            autocast=False,
        )

    def cosine(self, embeddings):
        """cos(theta) float32 (B, num_classes): max over the k sub-centres of each class."""
        embeddings = ops.cast(embeddings, "float32")
        unit = embeddings / ops.maximum(ops.norm(embeddings, axis=-1, keepdims=True), 1e-12)
        centers = ops.cast(self.sub_centers, "float32")
        centers = centers / ops.maximum(ops.norm(centers, axis=0, keepdims=True), 1e-12)
        cos = ops.reshape(ops.matmul(unit, centers), (-1, self.num_classes, self.k))
        return ops.clip(ops.max(cos, axis=-1), -1.0, 1.0)

    def call(self, inputs):
        if isinstance(inputs, (list, tuple)):
            embeddings, labels = inputs
        else:
            embeddings, labels = inputs, None
        cos = self.cosine(embeddings)
        if labels is None:
            return self.scale * cos
        labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
        if isinstance(self.margin, float):
            margin = ops.convert_to_tensor(self.margin, dtype="float32")
        else:
            margins = ops.convert_to_tensor(np.asarray(self.margin, np.float32))
            margin = ops.take(margins, labels)[:, None]  # target-class margin (B,1)
        sin = ops.sqrt(ops.clip(1.0 - ops.square(cos), 1e-7, 1.0))
        cos_plus_margin = cos * ops.cos(margin) - sin * ops.sin(margin)
        threshold = ops.cos(math.pi - margin)
        fallback = cos - ops.sin(math.pi - margin) * margin
        phi = ops.where(cos > threshold, cos_plus_margin, fallback)
        target = ops.one_hot(labels, self.num_classes, dtype="float32")
        return self.scale * (target * phi + (1.0 - target) * cos)

    def compute_output_shape(self, input_shape):
        embedding_shape = (
            input_shape[0] if isinstance(input_shape[0], (list, tuple)) else input_shape
        )
        return (embedding_shape[0], self.num_classes)

    def compute_output_spec(self, inputs):
        embeddings = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        return keras.KerasTensor((embeddings.shape[0], self.num_classes), dtype="float32")

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "k": self.k,
            "scale": self.scale,
            "margin": self.margin,
        }
