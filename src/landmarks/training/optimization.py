"""Learning-rate schedule, optimizers with a backbone learning-rate multiplier, and the loss.

Schedule: linear warmup from `min_learning_rate` to `learning_rate` over `warmup_epochs`, then
cosine decay to `min_learning_rate` at the last step (Keras `CosineDecay` with `warmup_target`);
it is a function of `optimizer.iterations`, so restoring the optimizer restores the position.

Backbone multiplier: the optimizer classes below scale the learning rate (and, as PyTorch
parameter groups do, the decoupled weight decay) of the backbone's variables by
`backbone_lr_multiplier`. Why not the alternatives: scaling the backbone's GRADIENTS does nothing
under Adam (its update is invariant to the gradient scale), and two optimizers
(`keras.optimizers.MultiOptimizer`) clip each group separately and keep two step counters. One
optimizer keeps one `iterations` counter, one global-norm clip, and works unchanged under
`model.fit` on JAX (DataParallel included) and TensorFlow (every `tf.distribute` strategy), and
under the mixed_float16 `LossScaleOptimizer` wrapper.
"""

from __future__ import annotations

import keras

from landmarks.errors import ConfigError

OPTIMIZERS = ("adamw", "sgd")
SGD_MOMENTUM = 0.9


def make_schedule(
    learning_rate: float,
    total_steps: int,
    warmup_steps: int,
    min_learning_rate: float,
) -> keras.optimizers.schedules.LearningRateSchedule:
    """Warmup + cosine schedule, a function of the step (optimizer.iterations, from 0).

    lr(s) = min + (peak - min) * s / W                                  for s < W
    lr(s) = min + (peak - min) * 0.5 * (1 + cos(pi * (s - W) / (T - W))) for W <= s <= T
    lr(s) = min                                                         for s > T
    with peak = learning_rate, min = min_learning_rate, W = warmup_steps, T = total_steps.
    """
    _check_schedule(learning_rate, min_learning_rate)
    warmup_steps = max(0, min(int(warmup_steps), int(total_steps) - 1))
    decay_steps = max(1, int(total_steps) - warmup_steps)
    alpha = min_learning_rate / learning_rate
    if warmup_steps == 0:
        return keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps, alpha=alpha)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=min_learning_rate,
        decay_steps=decay_steps,
        alpha=alpha,
        warmup_target=learning_rate,
        warmup_steps=warmup_steps,
    )


class _BackboneMultiplierMixin:
    """Scales learning rate and decoupled weight decay of chosen variables by one factor.

    Call `set_backbone_variables(variables, multiplier)` before the optimizer is built. The
    choice is made once, in `build`, on the Keras variables themselves (by identity); each
    step then finds a variable's factor through the optimizer's own slot index
    (`_get_variable_index`, the lookup Keras' optimizers use for their moments), so the same
    code holds on JAX (stateless steps) and under every tf.distribute strategy (where a step
    sees the per-replica component of a distributed variable).
    """

    def set_backbone_variables(self, variables, multiplier: float) -> None:
        self._backbone_multiplier = float(multiplier)
        self._backbone_ids = {id(v) for v in variables}

    def build(self, var_list):
        chosen = getattr(self, "_backbone_ids", set())
        multiplier = getattr(self, "_backbone_multiplier", 1.0)
        self._multipliers = [multiplier if id(v) in chosen else 1.0 for v in var_list]
        super().build(var_list)

    def _multiplier_for(self, variable) -> float:
        return self._multipliers[self._get_variable_index(variable)]

    def update_step(self, gradient, variable, learning_rate):
        multiplier = self._multiplier_for(variable)
        if multiplier != 1.0:
            learning_rate = learning_rate * multiplier
        return super().update_step(gradient, variable, learning_rate)

    def _apply_weight_decay(self, variables):
        """Decoupled decay  w <- w - lr * multiplier * weight_decay * w  (per variable group)."""
        if self.weight_decay is None:
            return
        groups: dict[float, list] = {}
        for variable in variables:
            groups.setdefault(self._multiplier_for(variable), []).append(variable)
        for multiplier, members in groups.items():
            if multiplier == 1.0:
                super()._apply_weight_decay(members)
                continue
            original = self.weight_decay
            self.weight_decay = original * multiplier
            try:
                super()._apply_weight_decay(members)
            finally:
                self.weight_decay = original


@keras.saving.register_keras_serializable(package="landmarks")
class BackboneScaledAdamW(_BackboneMultiplierMixin, keras.optimizers.AdamW):
    """AdamW whose backbone variables move at `multiplier` times the scheduled rate."""


@keras.saving.register_keras_serializable(package="landmarks")
class BackboneScaledSGD(_BackboneMultiplierMixin, keras.optimizers.SGD):
    """SGD (momentum 0.9) whose backbone variables move at `multiplier` times the rate.

    Weight decay for SGD is decoupled too (Keras applies `weight_decay` as `w -= lr * wd * w`).
    """


def make_optimizer(
    name: str,
    schedule,
    *,
    weight_decay: float,
    clip_norm: float,
    backbone_variables=(),
    backbone_lr_multiplier: float = 1.0,
):
    """AdamW or SGD(momentum 0.9) on `schedule`, global-norm clipping at `clip_norm` (0 = off).

    Biases, norms' gamma/beta and GeM's p get no weight decay (1-D variables), as usual.
    """
    _check_optimizer(name, weight_decay, clip_norm, backbone_lr_multiplier)
    common = {
        "learning_rate": schedule,
        "weight_decay": weight_decay or None,
        "global_clipnorm": clip_norm or None,
    }
    if name == "adamw":  # Keras' AdamW takes no None: 0 decays by nothing
        optimizer = BackboneScaledAdamW(**{**common, "weight_decay": float(weight_decay)})
    else:
        optimizer = BackboneScaledSGD(momentum=SGD_MOMENTUM, **common)
    optimizer.set_backbone_variables(backbone_variables, backbone_lr_multiplier)
    return optimizer


def exclude_vectors_from_decay(optimizer, variables) -> None:
    """No weight decay on 1-D (and scalar) variables: biases, BN/LN scales, GeM p."""
    optimizer.exclude_from_weight_decay(var_list=[v for v in variables if len(v.shape) <= 1])


@keras.saving.register_keras_serializable(package="landmarks")
class ArcFaceCrossEntropy(keras.losses.Loss):
    """Cross-entropy of (margin-applied, scaled) ArcFace logits against integer labels, in float32.

    y_true: int [B] class labels; y_pred: logits [B, num_classes] in any float dtype (cast to
    float32 first, so that softmax and log run in float32 under mixed precision).
    With `label_smoothing` > 0 the targets are one-hot vectors smoothed as
    (1 - e) * onehot + e / num_classes.
    """

    def __init__(self, label_smoothing: float = 0.0, name: str = "arcface_cross_entropy", **kwargs):
        super().__init__(name=name, dtype="float32", **kwargs)
        _check_label_smoothing(label_smoothing)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        logits = keras.ops.cast(y_pred, "float32")
        labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        if self.label_smoothing == 0.0:
            return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        num_classes = keras.ops.shape(logits)[-1]
        one_hot = keras.ops.one_hot(labels, num_classes, dtype="float32")
        return keras.losses.categorical_crossentropy(
            one_hot, logits, from_logits=True, label_smoothing=self.label_smoothing
        )

    def get_config(self):
        config = super().get_config()
        config.update({"label_smoothing": self.label_smoothing})
        config.pop("dtype", None)
        return config


def check_optimization_settings(config) -> None:
    """ConfigError naming the key for a schedule, optimizer or loss setting that make_schedule,
    make_optimizer or ArcFaceCrossEntropy would refuse: checked before a run writes anything."""
    _check_schedule(config.learning_rate, config.min_learning_rate)
    _check_optimizer(
        config.optimizer, config.weight_decay, config.clip_norm, config.backbone_lr_multiplier
    )
    _check_label_smoothing(config.label_smoothing)


def _check_schedule(learning_rate: float, min_learning_rate: float) -> None:
    if not learning_rate > 0:
        raise ConfigError(f"learning_rate: must be > 0, got {learning_rate}")
    if not 0 <= min_learning_rate <= learning_rate:
        raise ConfigError(
            f"min_learning_rate: must be between 0 and learning_rate ({learning_rate}), "
            f"got {min_learning_rate}"
        )


def _check_optimizer(
    name: str, weight_decay: float, clip_norm: float, backbone_lr_multiplier: float
) -> None:
    if name not in OPTIMIZERS:
        raise ConfigError(f"optimizer: {name!r} is not one of {', '.join(OPTIMIZERS)}")
    if not weight_decay >= 0:
        raise ConfigError(f"weight_decay: must be >= 0, got {weight_decay}")
    if not clip_norm >= 0:
        raise ConfigError(f"clip_norm: must be >= 0 (0 = off), got {clip_norm}")
    if not backbone_lr_multiplier >= 0:
        raise ConfigError(f"backbone_lr_multiplier: must be >= 0, got {backbone_lr_multiplier}")


def _check_label_smoothing(label_smoothing: float) -> None:
    if not 0.0 <= label_smoothing < 1.0:
        raise ConfigError(f"label_smoothing: must be in [0, 1), got {label_smoothing}")
