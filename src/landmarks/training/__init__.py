"""Training on TPU, GPU or CPU: `train(config)` (the `train` command).

Modules, one job each:
  plan           check a config against its records; batch sizes, steps (TrainingPlan)
  devices        the distribution strategy of this machine (DeviceSetup)
  precision      the precision policy and XLA for the device kind
  optimization   warmup-cosine schedule, optimizers with a backbone multiplier, the loss
  checkpoints    per-epoch checkpoints, resume, init_from, atomic model saves
  callbacks      history.csv, validation GAP, NaN stop
  trainer        train(config): the above, in order

Importing this package does not import TensorFlow or Keras; `train` does when it runs.
"""

from __future__ import annotations

from landmarks.training.plan import SHAPE_KEYS, TrainingPlan, check_config
from landmarks.training.trainer import backbone_variables, train

__all__ = [
    "SHAPE_KEYS",
    "TrainingPlan",
    "backbone_variables",
    "check_config",
    "train",
]
