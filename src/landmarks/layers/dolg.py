"""DOLG head layers (Yang et al., ICCV 2021): local branch, orthogonal fusion, the whole head.

Shapes are channels-last. Every layer takes any spatial size (nothing is tied to the image
size); norms and projections are computed in float32 under mixed precision.

    stride-16 map ─▶ MultiAtrous ─▶ SpatialAttention2D ─▶ f_l (B,h,w,L) ──┐
                                                                           ├─▶ OrthogonalFusion
    stride-32 map ─▶ GeM ─▶ Dense(L) ─────────────────────▶ f_g (B,L) ─────┘   (B,h,w,2L)
                                                    mean over positions ─▶ Dropout ─▶ Dense(D)
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from landmarks.layers.gem import GeM


def _sublayer_kwargs(layer: keras.layers.Layer, name: str) -> dict:
    """Sub-layers follow the parent's dtype policy (mixed precision) and get stable names."""
    return {"dtype": layer.dtype_policy, "name": name}


def _atrous_branch(conv: keras.layers.Conv2D, rate: int, inputs):
    """`conv(inputs)` for a 3x3 'same' conv of dilation `rate`; the centre tap alone when the
    static map is no larger than `rate` (identical result: the other taps read only zeros)."""
    height, width = inputs.shape[1], inputs.shape[2]
    if height is None or width is None or rate < height or rate < width:
        return conv(inputs)
    kernel = ops.cast(conv.kernel[1, 1], inputs.dtype)  # (C_in, C_out)
    return ops.matmul(inputs, kernel) + ops.cast(conv.bias, inputs.dtype)


class _AtrousLayer(keras.layers.Layer):
    """What MultiAtrous and LocalBranch share: (B, H, W, C) -> (B, H, W, filters), configured by
    `filters`, the 3x3 branches' `dilations` and their `branch_filters` (default
    filters // (len(dilations) + 1)); a subclass makes its sub-layers in `_make_sublayers`."""

    def __init__(
        self,
        filters: int,
        dilations: Sequence[int] = (6, 12, 18),
        branch_filters: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.dilations = [int(d) for d in dilations]
        self.branch_filters = int(branch_filters or max(1, filters // (len(self.dilations) + 1)))
        self._make_sublayers()

    def _make_sublayers(self) -> None:
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        return (*input_shape[:3], self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "dilations": self.dilations,
            "branch_filters": self.branch_filters,
        }


@keras.saving.register_keras_serializable(package="landmarks")
class MultiAtrous(_AtrousLayer):
    """Atrous spatial pyramid: (B, H, W, C) -> (B, H, W, filters), same spatial layout.

    One 3x3 convolution per dilation rate ('same' padding, so every position keeps its own
    output), plus an image-pool branch (spatial mean -> 1x1 conv -> ReLU) broadcast back to the
    input's *dynamic* H x W; the branches are concatenated and projected by a 1x1 conv + ReLU.
    Nothing but the image-pool branch pools the map.

    When the (static) map is no larger than a dilation rate, every off-centre tap of that
    branch reads only zero padding, so the branch is computed exactly as its centre tap (a
    1x1 product): TensorFlow's CPU dilated convolution pads the map to the dilation's extent
    and would otherwise spend most of its time on zeros.

    Args:
        filters: output channels.
        dilations: dilation rates of the 3x3 branches.
        branch_filters: channels of each branch; default filters // (len(dilations) + 1).
    """

    def _make_sublayers(self) -> None:
        self.atrous = [
            keras.layers.Conv2D(
                self.branch_filters,
                3,
                padding="same",
                dilation_rate=rate,
                **_sublayer_kwargs(self, f"atrous_{rate}"),
            )
            for rate in self.dilations
        ]
        self.pool_conv = keras.layers.Conv2D(
            self.branch_filters, 1, activation="relu", **_sublayer_kwargs(self, "image_pool")
        )
        self.project = keras.layers.Conv2D(
            self.filters, 1, activation="relu", **_sublayer_kwargs(self, "project")
        )

    def build(self, input_shape):
        for conv in self.atrous:
            conv.build(input_shape)
        self.pool_conv.build((input_shape[0], 1, 1, input_shape[-1]))
        branches = self.branch_filters * (len(self.dilations) + 1)
        self.project.build((*input_shape[:3], branches))

    def call(self, inputs):
        branches = [
            _atrous_branch(conv, rate, inputs)
            for conv, rate in zip(self.atrous, self.dilations, strict=True)
        ]
        pooled = self.pool_conv(ops.mean(inputs, axis=(1, 2), keepdims=True))
        shape = ops.shape(inputs)
        branches.append(
            ops.broadcast_to(pooled, (shape[0], shape[1], shape[2], self.branch_filters))
        )
        return self.project(ops.concatenate(branches, axis=-1))


@keras.saving.register_keras_serializable(package="landmarks")
class SpatialAttention2D(keras.layers.Layer):
    """DOLG spatial attention: (B, H, W, C) -> (B, H, W, filters), same spatial layout.

    f = BN(conv1x1(x)); output = (f / |f|) * softplus(conv1x1_to_1(ReLU(f))), where |f| is the
    L2 norm of each position's channel vector (never across positions or the batch), and the
    attention is one non-negative scalar per position. Norm and softplus are float32.
    """

    def __init__(self, filters: int, eps: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.eps = float(eps)
        self.conv = keras.layers.Conv2D(
            self.filters, 1, use_bias=False, **_sublayer_kwargs(self, "conv")
        )
        self.bn = keras.layers.BatchNormalization(**_sublayer_kwargs(self, "bn"))
        self.attention_conv = keras.layers.Conv2D(1, 1, **_sublayer_kwargs(self, "attention"))

    def build(self, input_shape):
        self.conv.build(input_shape)
        mapped = (*input_shape[:3], self.filters)
        self.bn.build(mapped)
        self.attention_conv.build(mapped)

    def call(self, inputs, training=None):
        features = self.bn(self.conv(inputs), training=training)
        attention = ops.softplus(ops.cast(self.attention_conv(ops.relu(features)), "float32"))
        features32 = ops.cast(features, "float32")
        norm = ops.sqrt(ops.sum(ops.square(features32), axis=-1, keepdims=True))
        normalized = features32 / ops.maximum(norm, self.eps)
        return ops.cast(normalized * attention, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:3], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "eps": self.eps}


@keras.saving.register_keras_serializable(package="landmarks")
class LocalBranch(_AtrousLayer):
    """DOLG local branch = MultiAtrous then SpatialAttention2D: (B,H,W,C) -> (B,H,W,filters)."""

    def _make_sublayers(self) -> None:
        self.multi_atrous = MultiAtrous(
            self.filters,
            self.dilations,
            self.branch_filters,
            **_sublayer_kwargs(self, "multi_atrous"),
        )
        self.attention = SpatialAttention2D(self.filters, **_sublayer_kwargs(self, "attention"))

    def build(self, input_shape):
        self.multi_atrous.build(input_shape)
        self.attention.build((*input_shape[:3], self.filters))

    def call(self, inputs, training=None):
        return self.attention(self.multi_atrous(inputs), training=training)


@keras.saving.register_keras_serializable(package="landmarks")
class OrthogonalFusion(keras.layers.Layer):
    """`[local (B,H,W,C), global (B,C)] -> (B,H,W,2C)`.

    Channels [:C] are the global vector f_g broadcast to every position; channels [C:] are, per
    position, the local vector minus its projection on f_g:
    f_l - (f_l . f_g / max(|f_g|^2, eps)) f_g, so they are orthogonal to f_g (exactly when
    |f_g|^2 > eps; a zero f_g gives f_l unchanged rather than NaN). Float32 math.
    """

    def __init__(self, eps: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.eps = float(eps)

    def build(self, input_shape):
        local_shape, global_shape = input_shape
        if local_shape[-1] != global_shape[-1]:
            raise ValueError(
                f"OrthogonalFusion: local channels {local_shape[-1]} != global {global_shape[-1]}"
            )

    def call(self, inputs):
        local, global_ = inputs
        local = ops.cast(local, "float32")
        global_ = ops.cast(global_, "float32")[:, None, None, :]  # (B,1,1,C)
        squared_norm = ops.sum(ops.square(global_), axis=-1, keepdims=True)
        dot = ops.sum(local * global_, axis=-1, keepdims=True)  # (B,H,W,1)
        orthogonal = local - dot / ops.maximum(squared_norm, self.eps) * global_
        broadcast_global = ops.broadcast_to(global_, ops.shape(local))
        fused = ops.concatenate([broadcast_global, orthogonal], axis=-1)
        return ops.cast(fused, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        local_shape, _ = input_shape
        channels = None if local_shape[-1] is None else 2 * local_shape[-1]
        return (*local_shape[:3], channels)

    def get_config(self):
        return {**super().get_config(), "eps": self.eps}


@keras.saving.register_keras_serializable(package="landmarks")
class DOLGHead(keras.layers.Layer):
    """The DOLG head: `[stride16 (B,h,w,C16), stride32 (B,h/2,w/2,C32)] -> (B, embedding_dim)`.

    Local branch on the stride-16 map; GeM (trainable p) + Dense(local_dim) on the stride-32
    map; orthogonal fusion; mean over positions (the mean keeps the orthogonal part orthogonal,
    unlike GeM, which would clamp its negative values); dropout; Dense neck to the embedding
    (not normalised: the model L2-normalises it in float32).
    """

    def __init__(
        self,
        local_dim: int = 512,
        embedding_dim: int = 512,
        dilations: Sequence[int] = (6, 12, 18),
        gem_p: float = 3.0,
        dropout: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.local_dim = int(local_dim)
        self.embedding_dim = int(embedding_dim)
        self.dilations = [int(d) for d in dilations]
        self.gem_p = float(gem_p)
        self.dropout_rate = float(dropout)
        self.local_branch = LocalBranch(
            self.local_dim, self.dilations, **_sublayer_kwargs(self, "local_branch")
        )
        self.gem = GeM(self.gem_p, **_sublayer_kwargs(self, "gem"))
        self.global_dense = keras.layers.Dense(
            self.local_dim, **_sublayer_kwargs(self, "global_dense")
        )
        self.fusion = OrthogonalFusion(**_sublayer_kwargs(self, "fusion"))
        self.dropout = keras.layers.Dropout(self.dropout_rate, **_sublayer_kwargs(self, "dropout"))
        self.neck = keras.layers.Dense(self.embedding_dim, **_sublayer_kwargs(self, "neck"))

    def build(self, input_shape):
        local_shape, global_shape = input_shape
        batch = global_shape[0]
        self.local_branch.build(local_shape)
        self.gem.build(global_shape)
        self.global_dense.build((batch, global_shape[-1]))
        self.fusion.build([(*local_shape[:3], self.local_dim), (batch, self.local_dim)])
        self.neck.build((batch, 2 * self.local_dim))

    def call(self, inputs, training=None):
        stride16, stride32 = inputs
        local = self.local_branch(stride16, training=training)
        global_ = self.global_dense(self.gem(stride32))
        fused = self.fusion([local, global_])
        pooled = ops.mean(fused, axis=(1, 2))
        return self.neck(self.dropout(pooled, training=training))

    def compute_output_shape(self, input_shape):
        return (input_shape[1][0], self.embedding_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "local_dim": self.local_dim,
            "embedding_dim": self.embedding_dim,
            "dilations": self.dilations,
            "gem_p": self.gem_p,
            "dropout": self.dropout_rate,
        }
