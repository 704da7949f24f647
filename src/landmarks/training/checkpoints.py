"""Checkpoints of a run: save every epoch, resume the latest, start a stage from an earlier run,
and save a Keras model atomically.

Run folder (config.run_dir):
    checkpoints/ckpt-N.*, checkpoints/checkpoint   every epoch: model weights, optimizer state
                                                    (slots and `iterations`, hence the schedule
                                                    position) and the number of finished epochs
"""

from __future__ import annotations

import os
import shutil
import tempfile

import keras

from landmarks.errors import ConfigError

KEEP_CHECKPOINTS = 2


def _exists(path: str) -> bool:
    import tensorflow as tf

    return tf.io.gfile.exists(path)


class RunCheckpoint(keras.callbacks.Callback):
    """Saves a `tf.train.Checkpoint` of model + optimizer + finished epochs after every epoch.

    `tf.train.Checkpoint` (rather than `.weights.h5`) because it saves distributed (TPU,
    mirrored) variables and optimizer slots as they are, writes to gs:// directly, and commits a
    checkpoint by rewriting the small `checkpoint` index file last: a kill mid-save leaves the
    previous checkpoint as the latest. In multi-worker training every worker must save (the
    save may run collectives); workers other than the chief write to a temporary folder that is
    deleted right after.
    """

    def __init__(self, directory: str, model, optimizer, *, is_chief: bool = True):
        super().__init__()
        import tensorflow as tf

        self.directory = directory
        self.is_chief = is_chief
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="finished_epochs")
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=self.epoch)

    def latest(self) -> str | None:
        import tensorflow as tf

        return tf.train.latest_checkpoint(self.directory)

    def restore_latest(self) -> int:
        """Restore the latest checkpoint if any; returns the number of finished epochs (0 if none).

        The optimizer must be built first, so that its slot variables are restored at once.
        """
        path = self.latest()
        if path is None:
            return 0
        self.checkpoint.restore(path).assert_existing_objects_matched()
        return int(self.epoch.numpy())

    def save(self, finished_epochs: int) -> str:
        import tensorflow as tf

        self.epoch.assign(finished_epochs)
        # Every worker runs the same save (same collectives); non-chiefs into a scratch folder.
        directory = self.directory if self.is_chief else tempfile.mkdtemp(prefix="landmarks-ckpt-")
        try:
            manager = tf.train.CheckpointManager(
                self.checkpoint, directory, max_to_keep=KEEP_CHECKPOINTS
            )
            return manager.save(checkpoint_number=finished_epochs)
        finally:
            if not self.is_chief:
                shutil.rmtree(directory, ignore_errors=True)

    def on_epoch_end(self, epoch, logs=None):
        self.save(epoch + 1)


def restore_model_weights(model, path: str) -> str:
    """Load only the model weights of a checkpoint (a file prefix or a run folder) into `model`.

    Used to start a stage of staged training from the previous stage's run; the optimizer,
    schedule position and epoch count start afresh. The checkpoint is read into a clone of
    `model` whose weights are then copied: a compiled model tracks its optimizer, and
    `tf.train.Checkpoint` would restore (or, before compile, defer-restore) the previous stage's
    optimizer state and step into it. Returns the checkpoint prefix read.
    """
    import keras
    import tensorflow as tf

    prefix = path
    for folder in (path, os.path.join(path, "checkpoints")):
        found = tf.train.latest_checkpoint(folder) if tf.io.gfile.isdir(folder) else None
        if found:
            prefix = found
            break
    if not _exists(prefix + ".index"):
        raise ConfigError(
            f"init_from: no checkpoint found at {path} (expected a run folder with "
            "checkpoints/, a checkpoints folder, or a checkpoint prefix such as .../ckpt-3)"
        )
    twin = keras.models.clone_model(model)
    try:
        tf.train.Checkpoint(model=twin).restore(
            prefix
        ).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError) as error:
        raise ConfigError(f"init_from: {prefix} does not fit this model: {error}") from error
    model.set_weights(twin.get_weights())
    return prefix


def save_keras_atomic(model, path: str) -> None:
    """`model.save(path)` through a temporary .keras name and a rename (local or gs://)."""
    import tensorflow as tf

    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-{name}")
    model.save(tmp)
    tf.io.gfile.rename(tmp, path, overwrite=True)
