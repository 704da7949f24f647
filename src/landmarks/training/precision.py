"""Precision policy and XLA for the device kind.

Precision "auto" is mixed_bfloat16 on TPU, mixed_float16 on GPU and float32 on CPU. XLA
("jit_compile" auto): on TensorFlow on for TPU only (on this project's CPUs TensorFlow's XLA
makes training ~5x slower); on JAX always on (JAX without jit runs op by op).
"""

from __future__ import annotations

from landmarks.errors import ConfigError

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


AUTO_PRECISION = {"tpu": "mixed_bfloat16", "gpu": "mixed_float16", "cpu": "float32"}


def resolve_precision(setting: str, kind: str) -> str:
    """The Keras dtype policy name for `setting` ("auto" or a policy name) on device `kind`."""
    if setting == "auto":
        return AUTO_PRECISION[kind]
    if setting not in PRECISIONS:
        raise ConfigError(f"precision: {setting!r} is not one of auto, {', '.join(PRECISIONS)}")
    if setting == "mixed_float16" and kind == "tpu":
        raise ConfigError("precision: mixed_float16 is not supported on TPU; use mixed_bfloat16")
    return setting


def resolve_jit_compile(setting: str, kind: str, backend: str = "tensorflow") -> bool:
    """XLA on or off: "auto" means on for TPU only (TensorFlow) or always (JAX); "true"/"false"
    force it (TPU always compiles)."""
    value = str(setting).lower()
    if value == "auto":
        return backend == "jax" or kind == "tpu"
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        if kind == "tpu":
            raise ConfigError(
                "jit_compile: false is impossible on TPU (TPU programs are always XLA)"
            )
        return False
    raise ConfigError(f"jit_compile: {setting!r} is not one of auto, true, false")
