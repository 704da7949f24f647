"""FBSD layers: feature boosting/suppression, feature diversification and top-k pooling.

Song & Yang, "Feature Boosting, Suppression, and Diversification for Fine-Grained Visual
Classification" (arXiv 2103.02782; official PyTorch code chaomaer/FBSD). All maps are
channels-last `[B, H, W, C]`; every layer works at any H, W (nothing is tied to one input size).

- `FBSM` splits a map along its height into `num_strips` horizontal strips, scores each strip
  (1x1 conv to one channel, BN, ReLU, mean over the strip), softmaxes the scores over strips and
  returns `(boosted, suppressed)`: `boosted = X + alpha * X * score(strip)` and `suppressed = X`
  with the best-scoring strip multiplied by `beta`. The suppressed map feeds the next backbone
  stage so that it looks for other parts.
- `FDM` exchanges complementary features between two part maps through the negative cosine
  similarity of their positions.
- `TopKPool` is the mean of the `k` largest activations of each channel over positions.
- `FBSDHead` puts them together over three backbone stages (strides 8, 16, 32): per-stage part
  features, pairwise FDM exchange, top-k pooling, and one embedding per stage plus one for the
  concatenation.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="landmarks")
class FBSM(keras.layers.Layer):
    """Feature boosting and suppression over horizontal strips.

    Args:
        num_strips: k, the number of horizontal strips (the paper uses 8, 4, 2 at strides
            8, 16, 32). Row `r` of a map of height `H` belongs to strip `floor(r * k / H)`, so when
            `k` divides `H` the strips are `H / k` contiguous rows each, as in the official code;
            strips left empty (H < k) get no score.
        alpha: boosting strength (0.5 in the paper).
        beta: factor applied to the best strip in the suppressed map (0.5 in the paper).

    Call: `x` float `[B, H, W, C]` -> `[boosted, suppressed]`, both `[B, H, W, C]` in x's dtype.
    Strip scores and their softmax are computed in float32.
    """

    def __init__(self, num_strips: int, alpha: float = 0.5, beta: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        if num_strips < 1:
            raise ValueError(f"FBSM num_strips must be >= 1, got {num_strips}")
        self.num_strips = int(num_strips)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.score_conv = keras.layers.Conv2D(1, 1, dtype=self.dtype_policy, name="score_conv")
        self.score_bn = keras.layers.BatchNormalization(
            momentum=0.9, epsilon=1e-5, dtype=self.dtype_policy, name="score_bn"
        )

    def build(self, input_shape):
        self.score_conv.build(input_shape)
        self.score_bn.build((*input_shape[:-1], 1))
        self.built = True

    def strip_scores(self, x, training=None):
        """Softmax strip scores, float32 `[B, k]`, and the row-to-strip one-hot `[H, k]`."""
        z = ops.relu(self.score_bn(self.score_conv(x), training=training))
        row_means = ops.mean(ops.cast(z[..., 0], "float32"), axis=2)  # [B, H]
        height = ops.shape(x)[1]
        rows = ops.arange(height, dtype="int32")
        strip_of_row = ops.floor_divide(rows * self.num_strips, height)
        assignment = ops.one_hot(strip_of_row, self.num_strips, dtype="float32")  # [H, k]
        counts = ops.sum(assignment, axis=0)  # [k]
        means = ops.matmul(row_means, assignment) / ops.maximum(counts, 1.0)
        logits = ops.where(counts > 0, means, ops.full_like(means, -1e9))
        return ops.softmax(logits, axis=-1), assignment

    def call(self, x, training=None):
        scores, assignment = self.strip_scores(x, training=training)  # [B, k], [H, k]
        row_scores = ops.matmul(scores, ops.transpose(assignment))  # [B, H]
        best = ops.max(scores, axis=-1, keepdims=True)
        strip_factor = ops.where(scores < best, 1.0, self.beta)
        row_factor = ops.matmul(strip_factor, ops.transpose(assignment))  # [B, H]
        row_scores = ops.cast(row_scores[:, :, None, None], x.dtype)
        row_factor = ops.cast(row_factor[:, :, None, None], x.dtype)
        boosted = x + self.alpha * x * row_scores
        suppressed = x * row_factor
        return [boosted, suppressed]

    def compute_output_shape(self, input_shape):
        return [tuple(input_shape), tuple(input_shape)]

    def get_config(self):
        config = super().get_config()
        config.update({"num_strips": self.num_strips, "alpha": self.alpha, "beta": self.beta})
        return config


@keras.saving.register_keras_serializable(package="landmarks")
class FDM(keras.layers.Layer):
    """Feature diversification between two part maps with the same channel count.

    With positions flattened, `A = [B, S, C]` (first map) and `B_ = [B, T, C]` (second map),
    `M = -cos(A_s, B_t)` is `[B, S, T]`. Each position of the second map receives the average of
    the first map's features weighted by `softmax(M)` over the first map's positions (and the other
    way round), i.e. features from the *least* similar positions: the complementary parts.

    Args:
        scale: factor applied to both exchanged maps. The official code uses a fixed
            `round(1 / (28 * 28), 3) = 0.001` and then adds `gamma = 1` times the sum of the
            exchanged maps; the `FBSDHead` does the adding.

    Call: `[x1 [B, H1, W1, C], x2 [B, H2, W2, C]]` -> `[from_x2 [B, H1, W1, C], from_x1
    [B, H2, W2, C]]`: the features the first map receives from the second, and vice versa.
    The similarity and softmax are float32; outputs have the inputs' dtype.
    """

    def __init__(self, scale: float = 0.001, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)

    def build(self, input_shape):
        first, second = input_shape
        if first[-1] is not None and second[-1] is not None and first[-1] != second[-1]:
            raise ValueError(f"FDM needs equal channel counts, got {first[-1]} and {second[-1]}")
        self.built = True

    def call(self, inputs):
        x1, x2 = inputs
        channels = ops.shape(x1)[-1]
        a = ops.cast(ops.reshape(x1, (ops.shape(x1)[0], -1, channels)), "float32")  # [B, S, C]
        b = ops.cast(ops.reshape(x2, (ops.shape(x2)[0], -1, channels)), "float32")  # [B, T, C]
        a_unit = a / ops.maximum(ops.norm(a, axis=-1, keepdims=True), 1e-12)
        b_unit = b / ops.maximum(ops.norm(b, axis=-1, keepdims=True), 1e-12)
        m = -ops.matmul(a_unit, ops.transpose(b_unit, (0, 2, 1)))  # [B, S, T]
        over_first = ops.softmax(m, axis=1)  # weights of x1's positions, per x2 position
        over_second = ops.softmax(m, axis=2)  # weights of x2's positions, per x1 position
        from_x1 = ops.matmul(ops.transpose(over_first, (0, 2, 1)), a)  # [B, T, C]
        from_x2 = ops.matmul(over_second, b)  # [B, S, C]
        from_x2 = ops.reshape(self.scale * from_x2, ops.shape(x1))
        from_x1 = ops.reshape(self.scale * from_x1, ops.shape(x2))
        return [ops.cast(from_x2, x1.dtype), ops.cast(from_x1, x2.dtype)]

    def compute_output_shape(self, input_shape):
        return [tuple(input_shape[0]), tuple(input_shape[1])]

    def get_config(self):
        config = super().get_config()
        config.update({"scale": self.scale})
        return config


@keras.saving.register_keras_serializable(package="landmarks")
class TopKPool(keras.layers.Layer):
    """Mean of the `k` largest values of each channel over all positions.

    Args:
        k: how many positions to average (5 in the paper); a map with fewer than `k` positions
            is averaged over all of them.

    Call: `x [B, H, W, C]` -> `[B, C]` in x's dtype.
    """

    def __init__(self, k: int = 5, **kwargs):
        super().__init__(**kwargs)
        if k < 1:
            raise ValueError(f"TopKPool k must be >= 1, got {k}")
        self.k = int(k)

    def build(self, input_shape):
        self.built = True

    def call(self, x):
        channels = ops.shape(x)[-1]
        flat = ops.reshape(x, (ops.shape(x)[0], -1, channels))
        by_channel = ops.transpose(flat, (0, 2, 1))  # [B, C, H*W]
        positions = ops.shape(by_channel)[-1]
        if isinstance(positions, int):
            k = min(self.k, positions)
        else:
            k = ops.minimum(self.k, positions)
        values, _ = ops.top_k(by_channel, k, sorted=False)
        return ops.mean(values, axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update({"k": self.k})
        return config


def _conv_bn_relu(filters: int, kernel_size: int, dtype, name: str) -> list:
    """Conv (no bias) -> BN -> ReLU, as the official `BasicConv` (BN momentum 0.01 in torch)."""
    return [
        keras.layers.Conv2D(
            filters, kernel_size, padding="same", use_bias=False, dtype=dtype, name=f"{name}_conv"
        ),
        keras.layers.BatchNormalization(
            momentum=0.99, epsilon=1e-5, dtype=dtype, name=f"{name}_bn"
        ),
        keras.layers.ReLU(dtype=dtype, name=f"{name}_relu"),
    ]


def _neck(embedding_dim: int, dtype, name: str) -> list:
    """BN -> Dense(embedding_dim) -> BN: the official classifier up to its last Linear, without
    the ELU, so that the embedding is a signed vector compared by cosine."""
    return [
        keras.layers.BatchNormalization(dtype=dtype, name=f"{name}_bn_in"),
        keras.layers.Dense(embedding_dim, dtype=dtype, name=f"{name}_dense"),
        keras.layers.BatchNormalization(dtype=dtype, name=f"{name}_bn_out"),
    ]


def _run(layers: list, x, training):
    for layer in layers:
        x = (
            layer(x, training=training)
            if isinstance(layer, keras.layers.BatchNormalization)
            else layer(x)
        )
    return x


def _build_sequence(layers: list, shape) -> tuple:
    for layer in layers:
        layer.build(shape)
        shape = layer.compute_output_shape(shape)
    return shape


@keras.saving.register_keras_serializable(package="landmarks")
class FBSDHead(keras.layers.Layer):
    """The FBSD head over three boosted backbone maps (strides 8, 16, 32).

    Per stage i: part map `P_i` = Conv1x1(mid)-BN-ReLU -> Conv3x3(part)-BN-ReLU; then FDM between
    every pair, `P_i <- P_i + gamma * sum_j FDM(P_i, P_j)`; `v_i = TopKPool(P_i)` `[B, part]`;
    stage embedding `e_i = neck_i(v_i)`; concatenated embedding `e = neck(concat(v_1, v_2, v_3))`.

    Args:
        mid_channels: width of the 1x1 reduction (512 in the paper).
        part_channels: width of the part maps (1024 in the paper).
        embedding_dim: size of every embedding.
        gamma: weight of the exchanged features (1 in the paper).
        fdm_scale: FDM's fixed scale (0.001 in the paper's code).
        top_k: k of TopKPool (5 in the paper).

    Call: `[m1 [B, H1, W1, C1], m2 [B, H2, W2, C2], m3 [B, H3, W3, C3]]` -> `[e1, e2, e3, e]`,
    each `[B, embedding_dim]`, not normalised.
    """

    def __init__(
        self,
        mid_channels: int = 512,
        part_channels: int = 1024,
        embedding_dim: int = 512,
        gamma: float = 1.0,
        fdm_scale: float = 0.001,
        top_k: int = 5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.mid_channels = int(mid_channels)
        self.part_channels = int(part_channels)
        self.embedding_dim = int(embedding_dim)
        self.gamma = float(gamma)
        self.fdm_scale = float(fdm_scale)
        self.top_k = int(top_k)
        dtype = self.dtype_policy
        self.part_blocks = [
            _conv_bn_relu(self.mid_channels, 1, dtype, f"part{i}_reduce")
            + _conv_bn_relu(self.part_channels, 3, dtype, f"part{i}_expand")
            for i in (1, 2, 3)
        ]
        self.fdm = FDM(scale=self.fdm_scale, dtype=dtype, name="fdm")
        self.pool = TopKPool(self.top_k, dtype=dtype, name="topk_pool")
        self.stage_necks = [_neck(self.embedding_dim, dtype, f"stage{i}_neck") for i in (1, 2, 3)]
        self.concat_neck = _neck(self.embedding_dim, dtype, "concat_neck")

    def build(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"FBSDHead takes 3 feature maps, got {len(input_shape)}")
        part_shapes = [
            _build_sequence(block, s)
            for block, s in zip(self.part_blocks, input_shape, strict=True)
        ]
        self.fdm.build([part_shapes[0], part_shapes[1]])
        self.pool.build(part_shapes[0])
        for neck in self.stage_necks:
            _build_sequence(neck, (input_shape[0][0], self.part_channels))
        _build_sequence(self.concat_neck, (input_shape[0][0], 3 * self.part_channels))
        self.built = True

    def call(self, inputs, training=None):
        parts = [
            _run(block, x, training) for block, x in zip(self.part_blocks, inputs, strict=True)
        ]
        received = [[], [], []]
        for i, j in ((0, 1), (0, 2), (1, 2)):
            from_j, from_i = self.fdm([parts[i], parts[j]])
            received[i].append(from_j)
            received[j].append(from_i)
        parts = [p + self.gamma * (r[0] + r[1]) for p, r in zip(parts, received, strict=True)]
        pooled = [self.pool(p) for p in parts]
        stage_embeddings = [
            _run(neck, v, training) for neck, v in zip(self.stage_necks, pooled, strict=True)
        ]
        concat = _run(self.concat_neck, ops.concatenate(pooled, axis=-1), training)
        return [*stage_embeddings, concat]

    def compute_output_shape(self, input_shape):
        return [(input_shape[0][0], self.embedding_dim)] * 4

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "mid_channels": self.mid_channels,
                "part_channels": self.part_channels,
                "embedding_dim": self.embedding_dim,
                "gamma": self.gamma,
                "fdm_scale": self.fdm_scale,
                "top_k": self.top_k,
            }
        )
        return config
