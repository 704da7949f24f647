"""One worker of the two-process MultiWorkerMirroredStrategy test (tests/test_strategy.py).

Run as `python tests/multiworker_worker.py OUT_DIR STEPS` with TF_CONFIG set. Trains a tiny
model (a nested "backbone" sub-model and a head) on synthetic, learnable data through the
project's strategy detection, optimizer (backbone multiplier), loss and checkpoint callback,
then writes OUT_DIR/worker-<index>.json with what the test checks.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from landmarks.training.checkpoints import RunCheckpoint
from landmarks.training.devices import detect_strategy, multi_worker_trainer
from landmarks.training.optimization import ArcFaceCrossEntropy, make_optimizer, make_schedule

GLOBAL_BATCH = 16


def synthetic_dataset(seed: int = 0) -> tf.data.Dataset:
    """x [B,8] normal, y = argmax(x @ W) for a fixed W: a task a linear model can learn."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(512, 8)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(8, 4)), axis=1).astype("int32")
    dataset = (
        tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(GLOBAL_BATCH, drop_remainder=True)
    )
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def main(out_dir: str, steps: int) -> None:
    setup = detect_strategy(allow_tpu=False)
    keras.utils.set_random_seed(0)
    with setup.strategy.scope():
        inputs = keras.Input((8,))
        backbone = keras.Sequential(
            [keras.Input((8,)), keras.layers.Dense(16, activation="relu")], name="backbone"
        )
        model = keras.Model(inputs, keras.layers.Dense(4, name="head")(backbone(inputs)))
        trainer = multi_worker_trainer(model) if setup.multi_worker else model
        schedule = make_schedule(0.5, steps, 2, 0.01)
        optimizer = make_optimizer(
            "sgd",
            schedule,
            weight_decay=1e-4,
            clip_norm=5.0,
            backbone_variables=backbone.trainable_variables,
            backbone_lr_multiplier=0.5,
        )
        trainer.compile(optimizer=optimizer, loss=ArcFaceCrossEntropy())
    checkpoint = RunCheckpoint(
        os.path.join(out_dir, "checkpoints"), model, optimizer, is_chief=setup.is_chief
    )
    with setup.strategy.scope():
        history = trainer.fit(
            synthetic_dataset(),
            epochs=2,
            steps_per_epoch=steps // 2,
            callbacks=[checkpoint],
            verbose=0,
        )
    task = json.loads(os.environ["TF_CONFIG"])["task"]
    weights_sum = float(sum(np.abs(v.numpy()).sum() for v in model.trainable_variables))
    result = {
        "multi_worker_mirrored": isinstance(
            setup.strategy, tf.distribute.MultiWorkerMirroredStrategy
        ),
        "kind": setup.kind,
        "replicas": setup.replicas,
        "workers": setup.workers,
        "is_chief": setup.is_chief,
        "iterations": int(optimizer.iterations.numpy()),
        "losses": [float(v) for v in history.history["loss"]],
        "weights_sum": weights_sum,
    }
    with open(os.path.join(out_dir, f"worker-{task['index']}.json"), "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
