"""Conformer layers and backbones: a CNN branch and a transformer branch coupled by FCUs.

Peng et al., "Conformer: Local Features Coupling Global Representations for Visual Recognition"
(arXiv 2105.03889; official PyTorch code pengzhiliang/Conformer). Maps are channels-last
`[B, H, W, C]`; tokens are `[B, 1 + N, E]` with the class token first and the N patch tokens in
row-major order of the patch grid. The official model has no position embedding, so nothing here
is tied to one input size: any side that is a multiple of 32 works.

- `ConvBottleneck`: the ResNet bottleneck of the CNN branch (1x1, 3x3 with stride, 1x1, x4 width
  ratio), optionally adding the transformer's features before the 3x3 conv.
- `FCUDown`: CNN map -> patch tokens (1x1 conv, average pooling to the patch grid, LayerNorm,
  GELU), keeping the class token of the transformer branch.
- `FCUUp`: patch tokens -> CNN map (drop the class token, 1x1 conv, BN, ReLU, nearest upsampling).
- `TransformerBlock`: pre-norm multi-head self-attention + MLP (ViT/DeiT block).
- `ClassToken`: prepends the learned class token.
- `ConvTransBlock`: one Conformer block; `conformer_backbone(...)` stacks the stem, stage 1 and
  the 11 `ConvTransBlock`s of Conformer-Ti/S.
"""

from __future__ import annotations

import keras
from keras import ops

# torch's kaiming_normal_(mode="fan_out", nonlinearity="relu") and trunc_normal_(std=.02).
_CONV_INIT = {"class_name": "VarianceScaling", "config": {"scale": 2.0, "mode": "fan_out",
              "distribution": "untruncated_normal"}}  # fmt: skip
_DENSE_INIT = {"class_name": "TruncatedNormal", "config": {"stddev": 0.02}}


def _conv(filters, kernel_size, dtype, name, strides=1, use_bias=False, padding="same"):
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=use_bias,
        kernel_initializer=keras.initializers.get(_CONV_INIT),
        dtype=dtype,
        name=name,
    )


def _bn(dtype, name):
    # torch BatchNorm2d(eps=1e-6) with momentum 0.1 -> Keras momentum 0.9.
    return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-6, dtype=dtype, name=name)


def _dense(units, dtype, name, use_bias=True):
    return keras.layers.Dense(
        units,
        use_bias=use_bias,
        kernel_initializer=keras.initializers.get(_DENSE_INIT),
        dtype=dtype,
        name=name,
    )


def _layer_norm(dtype, name):
    return keras.layers.LayerNormalization(epsilon=1e-6, dtype=dtype, name=name)


@keras.saving.register_keras_serializable(package="landmarks")
class ConvBottleneck(keras.layers.Layer):
    """Bottleneck block of the CNN branch (the official `ConvBlock`).

    `mid = ReLU(BN(Conv3x3_stride(a + injected)))` with `a = ReLU(BN(Conv1x1(x)))`;
    `out = ReLU(BN(Conv1x1(mid)) + shortcut(x))`, the shortcut being a strided 1x1 conv + BN when
    `projection` is true (needed when the width or resolution changes), else the identity.

    Args:
        filters: output channels; the inner width is `filters // 4`.
        strides: stride of the 3x3 conv (and of the projection).
        projection: use a 1x1 conv + BN shortcut.

    Call: `x [B, H, W, Cin]` or `[x, injected [B, H, W, filters // 4]]` ->
    `[out [B, H/s, W/s, filters], mid [B, H/s, W/s, filters // 4]]`.
    """

    expansion = 4

    def __init__(self, filters: int, strides: int = 1, projection: bool = False, **kwargs):
        super().__init__(**kwargs)
        if filters % self.expansion:
            raise ValueError(f"ConvBottleneck filters must be a multiple of 4, got {filters}")
        self.filters = int(filters)
        self.strides = int(strides)
        self.projection = bool(projection)
        dtype = self.dtype_policy
        mid = self.filters // self.expansion
        self.conv1 = _conv(mid, 1, dtype, "conv1")
        self.bn1 = _bn(dtype, "bn1")
        self.conv2 = _conv(mid, 3, dtype, "conv2", strides=self.strides, padding="valid")
        self.bn2 = _bn(dtype, "bn2")
        self.conv3 = _conv(self.filters, 1, dtype, "conv3")
        self.bn3 = _bn(dtype, "bn3")
        if self.projection:
            self.shortcut_conv = _conv(
                self.filters, 1, dtype, "shortcut_conv", strides=self.strides
            )
            self.shortcut_bn = _bn(dtype, "shortcut_bn")
        elif self.strides != 1:
            raise ValueError("ConvBottleneck with strides > 1 needs projection=True")

    def build(self, input_shape):
        x_shape = input_shape[0] if isinstance(input_shape[0], (list, tuple)) else input_shape
        if not self.projection and x_shape[-1] != self.filters:
            raise ValueError(
                f"ConvBottleneck without projection needs {self.filters} input channels, "
                f"got {x_shape[-1]}"
            )
        mid = self.filters // self.expansion
        self.conv1.build(x_shape)
        self.bn1.build((*x_shape[:-1], mid))
        self.conv2.build((*x_shape[:-1], mid))
        self.bn2.build((x_shape[0], None, None, mid))
        self.conv3.build((x_shape[0], None, None, mid))
        self.bn3.build((x_shape[0], None, None, self.filters))
        if self.projection:
            self.shortcut_conv.build(x_shape)
            self.shortcut_bn.build((x_shape[0], None, None, self.filters))
        self.built = True

    def call(self, inputs, training=None):
        x, injected = inputs if isinstance(inputs, (list, tuple)) else (inputs, None)
        a = ops.relu(self.bn1(self.conv1(x), training=training))
        if injected is not None:
            a = a + injected
        # torch pads the 3x3 conv by 1 on every side (Keras "same" would pad 0/1 at stride 2).
        a = ops.pad(a, ((0, 0), (1, 1), (1, 1), (0, 0)))
        mid = ops.relu(self.bn2(self.conv2(a), training=training))
        out = self.bn3(self.conv3(mid), training=training)
        shortcut = x
        if self.projection:
            shortcut = self.shortcut_bn(self.shortcut_conv(x), training=training)
        return [ops.relu(out + shortcut), mid]

    def compute_output_shape(self, input_shape):
        x_shape = input_shape[0] if isinstance(input_shape[0], (list, tuple)) else input_shape

        def down(size):
            return None if size is None else (size - 1) // self.strides + 1

        spatial = (x_shape[0], down(x_shape[1]), down(x_shape[2]))
        return [(*spatial, self.filters), (*spatial, self.filters // self.expansion)]

    def get_config(self):
        config = super().get_config()
        config.update(
            {"filters": self.filters, "strides": self.strides, "projection": self.projection}
        )
        return config


@keras.saving.register_keras_serializable(package="landmarks")
class FCUDown(keras.layers.Layer):
    """Feature coupling unit, CNN -> transformer.

    1x1 conv to `embed_dim`, average pooling by `stride` (to the patch grid), flatten to tokens
    (row-major), LayerNorm, GELU, and the transformer's class token put back in front.

    Call: `[x [B, H, W, C], tokens [B, 1 + N, E]]` -> `[B, 1 + (H/stride)(W/stride), E]`.
    """

    def __init__(self, embed_dim: int, stride: int, **kwargs):
        super().__init__(**kwargs)
        self.embed_dim = int(embed_dim)
        self.stride = int(stride)
        dtype = self.dtype_policy
        self.project = _conv(self.embed_dim, 1, dtype, "project", use_bias=True)
        self.pool = keras.layers.AveragePooling2D(
            self.stride, self.stride, dtype=dtype, name="pool"
        )
        self.norm = _layer_norm(dtype, "norm")

    def build(self, input_shape):
        x_shape, _ = input_shape
        self.project.build(x_shape)
        self.norm.build((x_shape[0], None, self.embed_dim))
        self.built = True

    def call(self, inputs):
        x, tokens = inputs
        x = self.pool(self.project(x))
        patches = ops.reshape(x, (ops.shape(x)[0], -1, self.embed_dim))
        patches = ops.gelu(self.norm(patches), approximate=False)
        return ops.concatenate([tokens[:, :1], patches], axis=1)

    def compute_output_shape(self, input_shape):
        x_shape, _ = input_shape
        if x_shape[1] is None or x_shape[2] is None:
            return (x_shape[0], None, self.embed_dim)
        count = (x_shape[1] // self.stride) * (x_shape[2] // self.stride)
        return (x_shape[0], 1 + count, self.embed_dim)

    def get_config(self):
        config = super().get_config()
        config.update({"embed_dim": self.embed_dim, "stride": self.stride})
        return config


@keras.saving.register_keras_serializable(package="landmarks")
class FCUUp(keras.layers.Layer):
    """Feature coupling unit, transformer -> CNN.

    Drops the class token, lays the patch tokens out on the patch grid of `reference`
    (`H / stride` x `W / stride`), 1x1 conv to `filters`, BN, ReLU, then nearest upsampling by
    `stride` back to `reference`'s resolution.

    Call: `[tokens [B, 1 + N, E], reference [B, H, W, *]]` -> `[B, H, W, filters]`
    (H and W multiples of `stride`; only `reference`'s shape is used).
    """

    def __init__(self, filters: int, stride: int, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.stride = int(stride)
        dtype = self.dtype_policy
        self.project = _conv(self.filters, 1, dtype, "project", use_bias=True)
        self.bn = _bn(dtype, "bn")

    def build(self, input_shape):
        tokens_shape, reference_shape = input_shape
        self.project.build((tokens_shape[0], None, None, tokens_shape[-1]))
        self.bn.build((tokens_shape[0], None, None, self.filters))
        self.built = True

    def call(self, inputs, training=None):
        tokens, reference = inputs
        height = ops.shape(reference)[1] // self.stride
        width = ops.shape(reference)[2] // self.stride
        grid = ops.reshape(tokens[:, 1:], (ops.shape(tokens)[0], height, width, tokens.shape[-1]))
        grid = ops.relu(self.bn(self.project(grid), training=training))
        if self.stride > 1:
            grid = ops.repeat(ops.repeat(grid, self.stride, axis=1), self.stride, axis=2)
        return grid

    def compute_output_shape(self, input_shape):
        _, reference_shape = input_shape
        return (*reference_shape[:3], self.filters)

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "stride": self.stride})
        return config


@keras.saving.register_keras_serializable(package="landmarks")
class TransformerBlock(keras.layers.Layer):
    """Pre-norm transformer encoder block (ViT/DeiT): `x + MHSA(LN(x))`, then `x + MLP(LN(x))`.

    Args:
        num_heads: attention heads (`E` must be a multiple).
        mlp_ratio: MLP hidden width / E.
        qkv_bias: biases on the query/key/value projection (true in Conformer's presets).

    Call: `[B, T, E]` -> `[B, T, E]`. LayerNorms and the attention softmax run in float32.
    """

    def __init__(self, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.mlp_ratio = float(mlp_ratio)
        self.qkv_bias = bool(qkv_bias)

    def build(self, input_shape):
        dim = input_shape[-1]
        if dim % self.num_heads:
            raise ValueError(
                f"TransformerBlock: width {dim} is not a multiple of {self.num_heads} heads"
            )
        dtype = self.dtype_policy
        self.norm1 = _layer_norm(dtype, "norm1")
        self.qkv = _dense(3 * dim, dtype, "qkv", use_bias=self.qkv_bias)
        self.proj = _dense(dim, dtype, "proj")
        self.norm2 = _layer_norm(dtype, "norm2")
        self.fc1 = _dense(int(dim * self.mlp_ratio), dtype, "fc1")
        self.fc2 = _dense(dim, dtype, "fc2")
        self.norm1.build(input_shape)
        self.qkv.build(input_shape)
        self.proj.build(input_shape)
        self.norm2.build(input_shape)
        self.fc1.build(input_shape)
        self.fc2.build((*input_shape[:-1], int(dim * self.mlp_ratio)))
        self.built = True

    def attention(self, x):
        batch, length, dim = ops.shape(x)[0], ops.shape(x)[1], x.shape[-1]
        head_dim = dim // self.num_heads
        qkv = ops.reshape(self.qkv(x), (batch, length, 3, self.num_heads, head_dim))
        qkv = ops.transpose(qkv, (2, 0, 3, 1, 4))  # [3, B, heads, T, head_dim]
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2)))
        weights = ops.softmax(ops.cast(scores, "float32") * head_dim**-0.5, axis=-1)
        mixed = ops.matmul(ops.cast(weights, v.dtype), v)  # [B, heads, T, head_dim]
        mixed = ops.reshape(ops.transpose(mixed, (0, 2, 1, 3)), (batch, length, dim))
        return self.proj(mixed)

    def call(self, x):
        x = x + self.attention(self.norm1(x))
        return x + self.fc2(ops.gelu(self.fc1(self.norm2(x)), approximate=False))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"num_heads": self.num_heads, "mlp_ratio": self.mlp_ratio, "qkv_bias": self.qkv_bias}
        )
        return config


@keras.saving.register_keras_serializable(package="landmarks")
class ClassToken(keras.layers.Layer):
    """Prepends a learned class token: `[B, N, E]` -> `[B, 1 + N, E]` (init N(0, 0.02) truncated)."""

    def build(self, input_shape):
        self.token = self.add_weight(
            shape=(1, 1, input_shape[-1]),
            initializer=keras.initializers.get(_DENSE_INIT),
            name="token",
        )
        self.built = True

    def call(self, x):
        token = ops.cast(ops.broadcast_to(self.token, (ops.shape(x)[0], 1, x.shape[-1])), x.dtype)
        return ops.concatenate([token, x], axis=1)

    def compute_output_shape(self, input_shape):
        length = None if input_shape[1] is None else input_shape[1] + 1
        return (input_shape[0], length, input_shape[-1])


@keras.saving.register_keras_serializable(package="landmarks")
class ConvTransBlock(keras.layers.Layer):
    """One Conformer block: a CNN bottleneck and a transformer block exchanging features.

    `x, mid = ConvBottleneck(x)`; `tokens = Transformer(FCUDown(mid, tokens) + tokens)`;
    `x = fusion(x, injected=FCUUp(tokens))`, the fusion being another bottleneck (with stride 2
    and a projection for the network's last block, `last_fusion=True`, which takes the CNN branch
    from stride 16 to 32).

    Args:
        filters: CNN output channels; strides / projection: of the first bottleneck.
        patch_stride: ratio of the patch grid to this block's CNN resolution (4, 2, 1 for the
            three stages when patches are 16 px).
        num_heads, mlp_ratio, qkv_bias: of the transformer block.
        last_fusion: see above.

    Call: `[x [B, H, W, Cin], tokens [B, 1 + N, E]]` -> `[x' [B, H', W', filters], tokens']`,
    `H' = H / strides` (halved again when `last_fusion`).
    """

    def __init__(
        self,
        filters: int,
        patch_stride: int,
        strides: int = 1,
        projection: bool = False,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        last_fusion: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.patch_stride = int(patch_stride)
        self.strides = int(strides)
        self.projection = bool(projection)
        self.num_heads = int(num_heads)
        self.mlp_ratio = float(mlp_ratio)
        self.qkv_bias = bool(qkv_bias)
        self.last_fusion = bool(last_fusion)
        dtype = self.dtype_policy
        mid = self.filters // ConvBottleneck.expansion
        self.cnn_block = ConvBottleneck(
            self.filters, self.strides, self.projection, dtype=dtype, name="cnn_block"
        )
        self.fusion_block = ConvBottleneck(
            self.filters,
            2 if self.last_fusion else 1,
            self.last_fusion,
            dtype=dtype,
            name="fusion_block",
        )
        self.trans_block = TransformerBlock(
            self.num_heads, self.mlp_ratio, self.qkv_bias, dtype=dtype, name="trans_block"
        )
        self.expand_block = FCUUp(mid, self.patch_stride, dtype=dtype, name="expand_block")
        self._mid = mid

    def build(self, input_shape):
        x_shape, tokens_shape = input_shape
        embed_dim = tokens_shape[-1]
        self.squeeze_block = FCUDown(
            embed_dim, self.patch_stride, dtype=self.dtype_policy, name="squeeze_block"
        )
        self.cnn_block.build(x_shape)
        out_shape, mid_shape = self.cnn_block.compute_output_shape(x_shape)
        self.squeeze_block.build([mid_shape, tokens_shape])
        self.trans_block.build(tokens_shape)
        self.expand_block.build([tokens_shape, mid_shape])
        self.fusion_block.build([out_shape, mid_shape])
        self.built = True

    def call(self, inputs, training=None):
        x, tokens = inputs
        x, mid = self.cnn_block(x, training=training)
        tokens = self.trans_block(self.squeeze_block([mid, tokens]) + tokens)
        injected = self.expand_block([tokens, mid], training=training)
        x, _ = self.fusion_block([x, injected], training=training)
        return [x, tokens]

    def compute_output_shape(self, input_shape):
        x_shape, tokens_shape = input_shape
        out_shape, _ = self.cnn_block.compute_output_shape(x_shape)
        if self.last_fusion:
            out_shape, _ = self.fusion_block.compute_output_shape(out_shape)
        return [tuple(out_shape), tuple(tokens_shape)]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "patch_stride": self.patch_stride,
                "strides": self.strides,
                "projection": self.projection,
                "num_heads": self.num_heads,
                "mlp_ratio": self.mlp_ratio,
                "qkv_bias": self.qkv_bias,
                "last_fusion": self.last_fusion,
            }
        )
        return config


# Official presets (pengzhiliang/Conformer models.py): 16-px patches, 12 blocks, 6 heads, E = 384;
# the CNN widths are 64 * channel_ratio * (1, 2, 4) over the three stages.
CONFORMER_PRESETS = {
    "conformer_ti": {"channel_ratio": 1, "embed_dim": 384, "depth": 12, "num_heads": 6},
    "conformer_s": {"channel_ratio": 4, "embed_dim": 384, "depth": 12, "num_heads": 6},
}

# Names of the identity layers marking the CNN branch's feature map at each output stride.
CONFORMER_TAPS = {4: "conv_stride4", 8: "conv_stride8", 16: "conv_stride16", 32: "conv_stride32"}


def conformer_backbone(
    channel_ratio: int = 1,
    embed_dim: int = 384,
    depth: int = 12,
    num_heads: int = 6,
    mlp_ratio: float = 4.0,
    base_channels: int = 64,
    stem_channels: int = 64,
    input_shape: tuple = (None, None, 3),
    name: str = "conformer",
) -> keras.Model:
    """Conformer (patch 16) as a functional model: image -> {"strideS": CNN-branch map}.

    The input is an already normalised image `[B, H, W, 3]` (H, W multiples of 32). The CNN
    branch runs at strides 4 (stage 1), 8 (stage 2), 16 (stage 3) and 32 (after the last block's
    strided fusion); the output dict holds the last map at each stride, keyed "stride4" ..
    "stride32", each computed by an identity layer named by `CONFORMER_TAPS`. The transformer
    branch works on 16-px patches plus a class token throughout; it has no position embedding.

    Args:
        channel_ratio: CNN width multiplier (1 for Conformer-Ti, 4 for Conformer-S).
        embed_dim, depth, num_heads, mlp_ratio: the transformer branch (depth a multiple of 3,
            at least 6: one stage-1 block plus depth - 1 ConvTransBlocks over three stages).
        base_channels, stem_channels: 64 in the paper; smaller values only for quick tests.
    """
    if depth % 3 or depth < 6:
        raise ValueError(f"Conformer depth must be a multiple of 3 and at least 6, got {depth}")
    widths = [base_channels * channel_ratio * m for m in (1, 2, 4)]
    image = keras.Input(input_shape, name="image")
    x = keras.layers.ZeroPadding2D(3, name="stem_pad")(image)
    x = _conv(stem_channels, 7, None, "stem_conv", strides=2, padding="valid")(x)
    x = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)  # after ReLU, zero = -inf padding
    base = keras.layers.MaxPooling2D(3, 2, name="stem_pool")(x)  # stride 4

    x, _ = ConvBottleneck(widths[0], 1, True, name="conv_1")(base)
    tokens = _conv(
        embed_dim, 4, None, "trans_patch_conv", strides=4, use_bias=True, padding="valid"
    )(base)
    tokens = keras.layers.Reshape((-1, embed_dim), name="trans_patch_flatten")(tokens)
    tokens = ClassToken(name="cls_token")(tokens)
    tokens = TransformerBlock(num_heads, mlp_ratio, name="trans_1")(tokens)

    per_stage = depth // 3
    block = 2
    maps = {}
    for stage, (width, patch_stride) in enumerate(zip(widths, (4, 2, 1), strict=True)):
        count = per_stage - 1 if stage == 0 else per_stage
        for i in range(count):
            first = stage > 0 and i == 0
            x, tokens = ConvTransBlock(
                width,
                patch_stride,
                strides=2 if first else 1,
                projection=first,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                last_fusion=block == depth,
                name=f"conv_trans_{block}",
            )([x, tokens])
            if block == depth - 1:
                x = maps["stride16"] = keras.layers.Identity(name=CONFORMER_TAPS[16])(x)
            block += 1
        if stage < 2:
            stride = 4 * 2**stage
            x = maps[f"stride{stride}"] = keras.layers.Identity(name=CONFORMER_TAPS[stride])(x)
    maps["stride32"] = keras.layers.Identity(name=CONFORMER_TAPS[32])(x)
    return keras.Model(image, {key: maps[key] for key in sorted(maps)}, name=name)
