"""Schedule, optimizers with a backbone learning-rate multiplier, clipping and the loss,
each against a formula written here (numpy), on tiny Keras models, on both backends."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from landmarks.errors import ConfigError
from landmarks.training.optimization import ArcFaceCrossEntropy, make_optimizer, make_schedule

pytestmark = pytest.mark.backends


def reference_lr(step, peak, total, warmup, floor):
    """The documented schedule, by hand."""
    if step < warmup:
        return floor + (peak - floor) * step / warmup
    step = min(step, total)
    progress = (step - warmup) / (total - warmup)
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * progress))


@pytest.mark.parametrize("warmup", [0, 5])
def test_schedule_matches_hand_formula(warmup):
    peak, total, floor = 1e-3, 40, 1e-5
    schedule = make_schedule(peak, total, warmup, floor)
    for step in [0, 1, 3, 4, 5, 6, 17, 39, 40, 55]:
        got = float(keras.ops.convert_to_numpy(schedule(step)))
        assert got == pytest.approx(reference_lr(step, peak, total, warmup, floor), rel=1e-5)


def test_schedule_rejects_bad_rates():
    with pytest.raises(ConfigError, match="learning_rate"):
        make_schedule(0.0, 10, 1, 0.0)
    with pytest.raises(ConfigError, match="min_learning_rate"):
        make_schedule(1e-3, 10, 1, 1e-2)


def _tiny_model(seed=0):
    """A nested 'backbone' sub-model followed by a head layer: x [B,4] -> logits [B,3]."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    backbone = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5)], name="backbone")
    head = keras.layers.Dense(3, name="head")
    return keras.Model(inputs, head(backbone(inputs))), backbone, head


def _numpy_gradients(weights, x, y):
    """Gradients of the mean cross-entropy of the linear model (x W1 + b1) W2 + b2, by hand."""
    w1, b1, w2, b2 = (w.astype(np.float64) for w in weights)
    hidden = x @ w1 + b1
    logits = hidden @ w2 + b2
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    d_logits = (probabilities - np.eye(logits.shape[1])[y]) / len(x)
    d_hidden = d_logits @ w2.T
    return [x.T @ d_hidden, d_hidden.sum(0), hidden.T @ d_logits, d_logits.sum(0)]


def _one_fit_step(model, optimizer, x, y):
    model.compile(optimizer=optimizer, loss=ArcFaceCrossEntropy())
    before = [v.numpy().copy() for v in model.trainable_variables]
    grads = _numpy_gradients(before, x, y)
    model.fit(x, y, batch_size=len(x), epochs=1, verbose=0, shuffle=False)
    after = [v.numpy() for v in model.trainable_variables]
    return before, grads, after


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(8, 4)).astype("float32"), rng.integers(0, 3, 8).astype("int32")


def _first_step_with_multiplier(kind, lr, multiplier, weight_decay=0.0):
    """One fit step of the tiny model under make_optimizer(kind, lr, backbone multiplier): per
    trainable variable (weights before, numpy gradient, weights after, its rate multiplier)."""
    model, backbone, _ = _tiny_model()
    optimizer = make_optimizer(
        kind,
        lr,
        weight_decay=weight_decay,
        clip_norm=0.0,
        backbone_variables=backbone.trainable_variables,
        backbone_lr_multiplier=multiplier,
    )
    before, grads, after = _one_fit_step(model, optimizer, *_data())
    backbone_ids = {id(v) for v in backbone.trainable_variables}
    scales = [multiplier if id(v) in backbone_ids else 1.0 for v in model.trainable_variables]
    return zip(before, grads, after, scales, strict=True)


def test_sgd_backbone_moves_at_multiplier_times_the_rate():
    lr, multiplier = 0.1, 0.25
    for w0, g, w1, scale in _first_step_with_multiplier("sgd", lr, multiplier):
        # first momentum step: v = -lr * g, w += v
        np.testing.assert_allclose(w1, w0 - lr * scale * g, rtol=1e-5, atol=1e-7)


def test_adamw_scales_rate_and_decoupled_decay_of_the_backbone():
    lr, multiplier, decay = 0.01, 0.1, 0.5
    for w0, g, w1, scale in _first_step_with_multiplier("adamw", lr, multiplier, decay):
        rate = lr * scale
        decayed = w0 - rate * decay * w0  # decoupled decay first, then the Adam step
        # first Adam step, Keras form: rate * sqrt(1 - b2) / (1 - b1) * m / (sqrt(v) + eps)
        # with m = (1 - b1) g, v = (1 - b2) g^2  ->  rate * g / (|g| + eps / sqrt(1 - b2))
        expected = decayed - rate * g / (np.abs(g) + 1e-7 / math.sqrt(1 - 0.999))
        np.testing.assert_allclose(w1, expected, rtol=1e-4, atol=1e-6)


def test_global_norm_clipping_bounds_the_step():
    model, _, _ = _tiny_model()
    lr, clip = 1.0, 1e-3
    optimizer = make_optimizer("sgd", lr, weight_decay=0.0, clip_norm=clip)
    x, y = _data()
    before, grads, after = _one_fit_step(model, optimizer, x, y)
    global_norm = math.sqrt(sum(float((g**2).sum()) for g in grads))
    assert global_norm > clip
    for w0, g, w1 in zip(before, grads, after, strict=True):
        np.testing.assert_allclose(w1, w0 - lr * g * clip / global_norm, rtol=1e-4, atol=1e-9)


def test_optimizer_settings_are_checked():
    with pytest.raises(ConfigError, match="optimizer"):
        make_optimizer("adam", 0.1, weight_decay=0.0, clip_norm=0.0)
    with pytest.raises(ConfigError, match="clip_norm"):
        make_optimizer("sgd", 0.1, weight_decay=0.0, clip_norm=-1.0)


def _log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def test_loss_is_float32_cross_entropy_of_the_logits():
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=5, size=(6, 7)).astype("float32")
    labels = rng.integers(0, 7, 6)
    expected = -_log_softmax(logits.astype("float64"))[np.arange(6), labels].mean()
    got = ArcFaceCrossEntropy()(labels, keras.ops.cast(logits, "float16"))
    assert keras.backend.standardize_dtype(got.dtype) == "float32"
    assert float(got) == pytest.approx(expected, rel=5e-3)  # float16 logits, float32 loss
    got32 = ArcFaceCrossEntropy()(labels, logits)
    assert float(got32) == pytest.approx(expected, rel=1e-5)


def test_label_smoothing_uses_smoothed_one_hot_targets():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(5, 4)).astype("float32")
    labels = rng.integers(0, 4, 5)
    eps = 0.2
    targets = np.full((5, 4), eps / 4)
    targets[np.arange(5), labels] += 1 - eps
    expected = -(targets * _log_softmax(logits.astype("float64"))).sum(axis=1).mean()
    got = ArcFaceCrossEntropy(label_smoothing=eps)(labels, logits)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ConfigError, match="label_smoothing"):
        ArcFaceCrossEntropy(label_smoothing=1.0)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_multiplier_holds_under_mixed_precision_and_loss_scaling(policy):
    """GPU/TPU policies: under mixed_float16 Keras wraps the optimizer in LossScaleOptimizer."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        model, backbone, head = _tiny_model()
        optimizer = make_optimizer(
            "adamw", 0.01, weight_decay=0.1, clip_norm=1.0,
            backbone_variables=backbone.trainable_variables, backbone_lr_multiplier=0.0,
        )  # fmt: skip
        x, y = _data()
        model.compile(optimizer=optimizer, loss=ArcFaceCrossEntropy())
        frozen = [v.numpy().copy() for v in backbone.trainable_variables]
        moving = [v.numpy().copy() for v in head.trainable_variables]
        model.fit(x, y, batch_size=4, epochs=1, verbose=0)
        if policy == "mixed_float16":
            assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        for variable, before in zip(backbone.trainable_variables, frozen, strict=True):
            np.testing.assert_array_equal(variable.numpy(), before)
        assert any(
            np.abs(v.numpy() - b).max() > 0
            for v, b in zip(head.trainable_variables, moving, strict=True)
        )
        assert int(optimizer.iterations.numpy()) == 2
    finally:
        keras.mixed_precision.set_global_policy("float32")
