"""The one shared test helper for Keras layers: `run_layer_test` (and `gradients`), on either
Keras backend (`make test` runs the layer tests on TensorFlow and on JAX).

Every layer test of the project goes through it, so that each layer is checked the same way:

1. it is registered serializable under the `landmarks>` package;
2. `build(input_shape)` creates every weight (calling it afterwards adds none);
3. the output has the expected shape (eagerly and symbolically through `keras.Input`);
4. `get_config` -> `from_config` with the same weights gives identical outputs;
5. a functional model around it survives a `.keras` save and load with identical outputs;
6. optionally the layer also runs with `training=True` (shape kept, finite outputs);
7. under the `mixed_float16` and `mixed_bfloat16` global policies a freshly made layer keeps its
   variables in float32, returns finite outputs of a sensible dtype (the compute dtype or
   float32), and the global policy is restored afterwards, even when a check fails;
8. optionally (`float32_reference`) the float32 islands: under each mixed policy the output equals
   a float64 numpy reference computed from the inputs rounded to the compute dtype (as Keras
   autocasts them), to `reference_rtol` before the output's own rounding to its dtype. Math done
   in bfloat16 (8 significant bits) or float16 misses that bound by orders of magnitude.

Inputs are either shapes (one tuple, or a list of tuples for a layer called on a list) from
which float32 standard-normal arrays are drawn, or explicit arrays (`input_data`), e.g. for
integer labels. Multi-input layers are called `layer([a, b])` (Keras merge-layer convention), or
`layer(a, b)` with `inputs_as_list=False`.
"""

from __future__ import annotations

import inspect
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence

import keras
import ml_dtypes
import numpy as np

MIXED_POLICIES = ("mixed_float16", "mixed_bfloat16")


def gradients(layer, inputs, loss: Callable, **call_kwargs) -> list[np.ndarray]:
    """numpy gradients of `loss(layer(inputs, **call_kwargs))` (a scalar) with respect to
    `layer.trainable_variables`, on whichever backend Keras runs: a tf.GradientTape, or
    jax.grad of the layer's `stateless_call` (jitted: op by op it takes minutes on a CNN)."""
    if keras.backend.backend() == "jax":
        import jax

        frozen = [v.value for v in layer.non_trainable_variables]

        def value(trainable):
            outputs, _ = layer.stateless_call(trainable, frozen, inputs, **call_kwargs)
            return loss(outputs)

        grads = jax.jit(jax.grad(value))([v.value for v in layer.trainable_variables])
        return [np.asarray(g) for g in grads]
    import tensorflow as tf

    with tf.GradientTape() as tape:
        value = loss(layer(inputs, **call_kwargs))
    grads = tape.gradient(value, layer.trainable_variables)
    return [None if g is None else g.numpy() for g in grads]


def run_layer_test(
    layer_cls: type,
    init_kwargs: Mapping | None = None,
    input_shape: tuple | Sequence[tuple] | None = None,
    expected_output_shape: tuple | Sequence[tuple] | Mapping | None = None,
    *,
    input_data: np.ndarray | Sequence[np.ndarray] | None = None,
    call_kwargs: Mapping | None = None,
    inputs_as_list: bool = True,
    check_training: bool = True,
    mixed_precision: bool = True,
    mixed_output_dtype: str | None = None,
    expect_weights: bool | None = None,
    atol: float = 1e-6,
    rtol: float = 1e-6,
    seed: int = 0,
    package: str = "landmarks",
    extra_check: Callable | None = None,
    float32_reference: Callable | None = None,
    reference_rtol: float = 1e-5,
    reference_atol: float = 1e-6,
):
    """Run the standard layer checks; return `(layer, outputs)` of the float32 run for more tests.

    Args:
        layer_cls: the layer class.
        init_kwargs: constructor arguments.
        input_shape: full shape(s) including the batch dimension, e.g. `(2, 8, 8, 16)` or
            `[(2, 8, 8, 16), (2, 16)]`. Ignored when `input_data` is given.
        expected_output_shape: the output shape (a tuple; a list of tuples or a dict of tuples
            for several outputs); `None` entries match any size.
        input_data: explicit input array(s) (their dtypes are kept: int labels stay int).
        call_kwargs: extra keyword arguments of every call (e.g. `{"training": False}`).
        inputs_as_list: call `layer([a, b])` (True) or `layer(a, b)` (False) for several inputs.
        check_training: also call with `training=True` when `call` accepts `training`.
        mixed_precision: run the mixed_float16 / mixed_bfloat16 checks.
        mixed_output_dtype: the required output dtype under mixed policies ("float32" for
            layers that return logits/norms); None accepts the compute dtype or float32.
        expect_weights: True/False to require that the layer has / has no weights.
        atol, rtol: tolerance of the round-trip comparisons (same weights, same inputs).
        seed: seed of the random inputs.
        package: the `register_keras_serializable` package the layer must be registered in.
        extra_check: `f(layer, inputs, outputs)` run after the float32 checks.
        float32_reference: `f(layer, inputs) -> expected` (float64 numpy, one array or a list
            like the outputs) of a float32 island: called under each mixed policy with the
            freshly made layer and the inputs rounded to the compute dtype.
        reference_rtol, reference_atol: its tolerance, |output - expected| <= atol + rtol
            |expected| before the output's rounding to its own dtype.
    """
    init_kwargs = dict(init_kwargs or {})
    call_kwargs = dict(call_kwargs or {})
    inputs = _make_inputs(input_shape, input_data, seed)
    shapes = [tuple(x.shape) for x in inputs]

    _check_registered(layer_cls, package)

    layer = layer_cls(**init_kwargs)
    layer.build(shapes if len(shapes) > 1 else shapes[0])
    assert layer.built, f"{layer_cls.__name__}.build did not mark the layer built"
    weights_after_build = len(layer.weights)
    outputs = _call(layer, inputs, inputs_as_list, call_kwargs)
    assert len(layer.weights) == weights_after_build, (
        f"{layer_cls.__name__} created weights in call(); create them in build()"
    )
    if expect_weights is not None:
        assert bool(layer.weights) == expect_weights, (
            f"{layer_cls.__name__} has {len(layer.weights)} weights, expected_weights={expect_weights}"
        )
    _check_shapes(outputs, expected_output_shape, "eager output")
    _check_finite(outputs, "float32 output")

    symbolic = _symbolic_call(layer_cls(**init_kwargs), inputs, inputs_as_list, call_kwargs)
    if expected_output_shape is not None:
        _check_shapes(symbolic, _with_free_batch(expected_output_shape), "symbolic output")

    _check_from_config(layer, inputs, outputs, inputs_as_list, call_kwargs, atol, rtol)
    _check_keras_file(layer, inputs, outputs, inputs_as_list, call_kwargs, atol, rtol)

    if check_training and _accepts_training(layer):
        trained = _call(layer, inputs, inputs_as_list, {**call_kwargs, "training": True})
        _check_shapes(trained, expected_output_shape, "training=True output")
        _check_finite(trained, "training=True output")

    if extra_check is not None:
        extra_check(layer, inputs, outputs)

    if mixed_precision:
        for policy in MIXED_POLICIES:
            _check_mixed(
                layer_cls,
                init_kwargs,
                inputs,
                shapes,
                inputs_as_list,
                call_kwargs,
                policy,
                expected_output_shape,
                mixed_output_dtype,
                float32_reference,
                (reference_rtol, reference_atol),
            )
    return layer, outputs


# --- pieces -----------------------------------------------------------------------------------


def _make_inputs(input_shape, input_data, seed) -> list[np.ndarray]:
    if input_data is not None:
        if isinstance(input_data, (list, tuple)):
            return [np.asarray(x) for x in input_data]
        return [np.asarray(input_data)]
    if input_shape is None:
        raise ValueError("run_layer_test needs input_shape or input_data")
    rng = np.random.default_rng(seed)
    shapes = input_shape if isinstance(input_shape[0], (list, tuple)) else [input_shape]
    return [rng.standard_normal(tuple(s)).astype("float32") for s in shapes]


def _call(layer, inputs, inputs_as_list, call_kwargs):
    if len(inputs) == 1:
        return layer(inputs[0], **call_kwargs)
    if inputs_as_list:
        return layer(list(inputs), **call_kwargs)
    return layer(*inputs, **call_kwargs)


def _symbolic_inputs(inputs):
    return [keras.Input(shape=x.shape[1:], dtype=str(x.dtype)) for x in inputs]


def _symbolic_call(layer, inputs, inputs_as_list, call_kwargs):
    return _call(layer, _symbolic_inputs(inputs), inputs_as_list, call_kwargs)


def _flatten(outputs) -> list:
    if isinstance(outputs, Mapping):
        return [outputs[k] for k in sorted(outputs)]
    if isinstance(outputs, (list, tuple)):
        return list(outputs)
    return [outputs]


def _with_free_batch(expected):
    if isinstance(expected, Mapping):
        return {k: (None, *v[1:]) for k, v in expected.items()}
    if expected and isinstance(expected[0], (list, tuple)):
        return [(None, *s[1:]) for s in expected]
    return (None, *expected[1:])


def _check_shapes(outputs, expected, what):
    if expected is None:
        return
    if isinstance(expected, Mapping):
        assert isinstance(outputs, Mapping), f"{what}: expected a dict of outputs"
        assert set(outputs) == set(expected), (
            f"{what}: keys {sorted(outputs)} != {sorted(expected)}"
        )
        pairs = [(k, outputs[k], expected[k]) for k in sorted(expected)]
    elif expected and isinstance(expected[0], (list, tuple)):
        flat = _flatten(outputs)
        assert len(flat) == len(expected), f"{what}: {len(flat)} outputs, expected {len(expected)}"
        pairs = [(i, o, e) for i, (o, e) in enumerate(zip(flat, expected, strict=True))]
    else:
        pairs = [(0, outputs, expected)]
    for key, out, exp in pairs:
        shape = tuple(out.shape)
        ok = len(shape) == len(exp) and all(
            e is None or s == e for s, e in zip(shape, exp, strict=False)
        )
        assert ok, f"{what} {key}: shape {shape}, expected {tuple(exp)}"


def _check_finite(outputs, what):
    for i, out in enumerate(_flatten(outputs)):
        values = keras.ops.convert_to_numpy(keras.ops.cast(out, "float32"))
        assert np.all(np.isfinite(values)), f"{what} {i}: non-finite values"


def _assert_same(actual, expected, atol, rtol, what):
    for i, (a, e) in enumerate(zip(_flatten(actual), _flatten(expected), strict=True)):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(a),
            keras.ops.convert_to_numpy(e),
            atol=atol,
            rtol=rtol,
            err_msg=f"{what}: output {i} differs",
        )


def _check_registered(layer_cls, package):
    name = keras.saving.get_registered_name(layer_cls)
    assert name.startswith(f"{package}>"), (
        f"{layer_cls.__name__} is not registered with "
        f"@keras.saving.register_keras_serializable(package={package!r}) (got {name!r})"
    )


def _check_from_config(layer, inputs, outputs, inputs_as_list, call_kwargs, atol, rtol):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    shapes = [tuple(x.shape) for x in inputs]
    clone.build(shapes if len(shapes) > 1 else shapes[0])
    clone.set_weights(layer.get_weights())
    assert clone.get_config() == config, "get_config differs after from_config"
    _assert_same(
        _call(clone, inputs, inputs_as_list, call_kwargs),
        outputs,
        atol,
        rtol,
        "from_config round trip",
    )


def _check_keras_file(layer, inputs, outputs, inputs_as_list, call_kwargs, atol, rtol):
    symbolic = _symbolic_inputs(inputs)
    model_symbolic = symbolic if len(symbolic) > 1 else symbolic[0]
    model = keras.Model(model_symbolic, _call(layer, symbolic, inputs_as_list, call_kwargs))
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "layer.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
    model_inputs = inputs if len(inputs) > 1 else inputs[0]
    _assert_same(loaded(model_inputs), outputs, atol, rtol, ".keras round trip")


def _accepts_training(layer) -> bool:
    return "training" in inspect.signature(layer.call).parameters


def _check_mixed(
    layer_cls,
    init_kwargs,
    inputs,
    shapes,
    inputs_as_list,
    call_kwargs,
    policy,
    expected_output_shape,
    mixed_output_dtype,
    float32_reference=None,
    reference_tolerance=(1e-5, 1e-6),
):
    previous = keras.config.dtype_policy()
    try:
        keras.config.set_dtype_policy(policy)
        layer = layer_cls(**init_kwargs)
        layer.build(shapes if len(shapes) > 1 else shapes[0])
        outputs = _call(layer, inputs, inputs_as_list, call_kwargs)
        compute = keras.config.dtype_policy().compute_dtype
        for variable in layer.weights:
            assert variable.dtype == "float32", (
                f"{policy}: variable {variable.path} is {variable.dtype}, expected float32"
            )
        allowed = {mixed_output_dtype} if mixed_output_dtype else {compute, "float32"}
        for i, out in enumerate(_flatten(outputs)):
            dtype = keras.backend.standardize_dtype(out.dtype)
            if dtype.startswith(("int", "uint", "bool")):
                continue
            assert dtype in allowed, f"{policy}: output {i} is {dtype}, expected {sorted(allowed)}"
        _check_shapes(outputs, expected_output_shape, f"{policy} output")
        _check_finite(outputs, f"{policy} output")
        if float32_reference is not None:
            rounded = [round_to(x, compute) if _is_float(x) else x for x in inputs]
            expected = float32_reference(layer, rounded)
            for i, (out, exp) in enumerate(zip(_flatten(outputs), _flatten(expected), strict=True)):
                assert_correctly_rounded(
                    out, exp, *reference_tolerance, f"{policy} output {i} vs float32 reference"
                )
    finally:
        keras.config.set_dtype_policy(previous)
    assert keras.config.dtype_policy().name == previous.name


def _is_float(array: np.ndarray) -> bool:
    return np.issubdtype(np.asarray(array).dtype, np.floating)


def round_to(values: np.ndarray, dtype: str) -> np.ndarray:
    """`values` rounded to `dtype` ("bfloat16", "float16", "float32"; nearest, ties to even, as
    the backends' casts) and returned as float64."""
    numpy_dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    return np.asarray(values, np.float64).astype(numpy_dtype).astype(np.float64)


def assert_correctly_rounded(actual, expected, rtol: float, atol: float, what: str) -> None:
    """`actual` (a tensor of some float dtype) is `expected` (float64) up to atol + rtol
    |expected| and then rounded to `actual`'s dtype: it lies between the roundings of
    expected -/+ that tolerance (rounding is monotonic)."""
    dtype = keras.backend.standardize_dtype(actual.dtype)
    actual = np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(actual, "float32")), np.float64)
    expected = np.asarray(expected, np.float64)
    tolerance = atol + rtol * np.abs(expected)
    low, high = round_to(expected - tolerance, dtype), round_to(expected + tolerance, dtype)
    outside = (actual < low) | (actual > high)
    if outside.any():
        error = np.abs(actual - expected)[outside].max()
        raise AssertionError(
            f"{what}: {int(outside.sum())} of {outside.size} values differ from the reference "
            f"by more than {rtol:g} relative + {atol:g} (before rounding to {dtype}); largest "
            f"difference {error:.3g}"
        )
