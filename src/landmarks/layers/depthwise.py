"""A depthwise convolution that JAX runs fast on a CPU.

XLA's CPU code for a depthwise convolution (a grouped convolution, one group per channel) is
7-9x slower than TensorFlow's, and EfficientNets are built of them. Written instead as a sum of
kh x kw shifted copies of the (padded) input, each times one row of the kernel, it is a single
fused elementwise loop for XLA. On [8, 64, 64, 96] on this CPU that is 22x faster for the layer
alone, jitted, and 9x faster with gradients (`bench/depthwise.py`). The outputs are the same to
the last bit at stride 1. Elsewhere (TensorFlow, or JAX on a GPU or TPU, whose XLA has native
depthwise kernels) the layer is Keras' own.
"""

from __future__ import annotations

import keras
from keras import ops


def _jax_on_cpu() -> bool:
    if keras.backend.backend() != "jax":
        return False
    import jax

    return jax.default_backend() == "cpu"


def _padding(size: int, kernel: int, stride: int, dilation: int, padding: str) -> tuple:
    """(before, after, output size) of one spatial axis, as Keras' "same"/"valid" define them."""
    span = (kernel - 1) * dilation + 1
    if padding == "valid":
        return 0, 0, (size - span) // stride + 1
    out = -(-size // stride)  # ceil
    total = max((out - 1) * stride + span - size, 0)
    return total // 2, total - total // 2, out


@keras.saving.register_keras_serializable(package="landmarks")
class DepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """`keras.layers.DepthwiseConv2D` (same arguments, weights and outputs) that computes
    itself as shifted multiply-adds when Keras runs on JAX on a CPU.

    Input [B, H, W, C] -> output [B, H', W', C * depth_multiplier], H' and W' by `padding` and
    `strides` as in Keras. The shifted form covers channels_last with any kernel size, stride,
    dilation and depth multiplier; channels_first uses Keras' own code on every backend.
    """

    def call(self, inputs):
        if self.data_format != "channels_last" or not _jax_on_cpu():
            return super().call(inputs)
        kernel_h, kernel_w = self.kernel_size
        stride_h, stride_w = self.strides
        dilation_h, dilation_w = self.dilation_rate
        top, bottom, out_h = _padding(inputs.shape[1], kernel_h, stride_h, dilation_h, self.padding)
        left, right, out_w = _padding(inputs.shape[2], kernel_w, stride_w, dilation_w, self.padding)
        padded = ops.pad(inputs, ((0, 0), (top, bottom), (left, right), (0, 0)))
        channels = inputs.shape[-1]
        kernel = ops.convert_to_tensor(self.kernel)  # [kh, kw, C, M], in the compute dtype
        if self.depth_multiplier > 1:  # output channel c * M + m reads input channel c
            padded = ops.repeat(padded, self.depth_multiplier, axis=-1)
        kernel = ops.reshape(kernel, (kernel_h, kernel_w, channels * self.depth_multiplier))
        outputs = None
        for i in range(kernel_h):
            for j in range(kernel_w):
                row, column = i * dilation_h, j * dilation_w
                window = padded[
                    :,
                    row : row + (out_h - 1) * stride_h + 1 : stride_h,
                    column : column + (out_w - 1) * stride_w + 1 : stride_w,
                    :,
                ]
                term = window * kernel[i, j]
                outputs = term if outputs is None else outputs + term
        if self.use_bias:
            outputs = outputs + self.bias
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs
