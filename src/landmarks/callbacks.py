"""Keras callbacks of a training run: checkpoint/resume, history.csv, validation GAP, NaN stop.

Run folder (config.run_dir):
    checkpoints/ckpt-N.*, checkpoints/checkpoint   every epoch: model weights, optimizer state
                                                    (slots and `iterations`, hence the schedule
                                                    position) and the number of finished epochs
    history.csv       epoch, step, loss, learning_rate, backbone_learning_rate, val_gap
    best_embed_model.keras   embedding model of the epoch with the best validation GAP

Order matters at the end of an epoch: validation (adds val_gap) -> history row -> checkpoint.
A kill between the history row and the checkpoint leaves a row that the resumed run rewrites.
"""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
import tempfile

import keras
import numpy as np

from landmarks.errors import ConfigError, LandmarksError
from landmarks.io_utils import write_text_atomic

HISTORY_COLUMNS = ("epoch", "step", "loss", "learning_rate", "backbone_learning_rate", "val_gap")
KEEP_CHECKPOINTS = 2


class TrainingDivergedError(LandmarksError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


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


def read_history(path: str) -> list[dict]:
    """Rows of an existing history.csv (strings), or [] when there is none."""
    if not _exists(path):
        return []
    from landmarks.io_utils import read_text

    return list(csv.DictReader(io.StringIO(read_text(path))))


class HistoryCSV(keras.callbacks.Callback):
    """Rewrites history.csv atomically after each epoch: one row per finished epoch.

    Columns: epoch (1-based), step (optimizer iterations at the end of the epoch), loss (mean
    training loss of the epoch), learning_rate (head rate the schedule gives at `step`),
    backbone_learning_rate (that times the multiplier), val_gap (empty when not validated).
    On resume, rows of epochs after the restored checkpoint are dropped.
    """

    def __init__(
        self,
        path: str,
        schedule,
        backbone_multiplier: float,
        *,
        start_epoch: int,
        enabled: bool = True,
    ):
        super().__init__()
        self.path = path
        self.schedule = schedule
        self.backbone_multiplier = backbone_multiplier
        self.enabled = enabled
        self.rows = [r for r in read_history(path) if int(r["epoch"]) <= start_epoch]

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        step = int(self.model.optimizer.iterations.numpy())
        rate = float(keras.ops.convert_to_numpy(self.schedule(step)))
        val_gap = logs.get("val_gap")
        self.rows.append(
            {
                "epoch": epoch + 1,
                "step": step,
                "loss": f"{float(logs.get('loss', float('nan'))):.6f}",
                "learning_rate": f"{rate:.8g}",
                "backbone_learning_rate": f"{rate * self.backbone_multiplier:.8g}",
                "val_gap": "" if val_gap is None else f"{float(val_gap):.6f}",
            }
        )
        if self.enabled:
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(self.rows)
            write_text_atomic(self.path, buffer.getvalue())


class StopOnNaN(keras.callbacks.Callback):
    """Stops training at the first NaN/inf batch loss and remembers where (TerminateOnNaN + info)."""

    def __init__(self):
        super().__init__()
        self.stopped_at: tuple[int, int] | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.stopped_at = (self._epoch + 1, batch)
            self.model.stop_training = True

    def raise_if_stopped(self, checkpoint_dir: str) -> None:
        if self.stopped_at is not None:
            epoch, batch = self.stopped_at
            raise TrainingDivergedError(
                f"loss became NaN/inf in epoch {epoch} (batch {batch}); the last good checkpoint "
                f"in {checkpoint_dir} is kept. Lower learning_rate or set clip_norm, then rerun "
                "to resume from it."
            )


class ValidationGAP(keras.callbacks.Callback):
    """Every `every` epochs: GAP of kNN recognition of holdout images against train images.

    Embeds the holdout subset (queries) and the training subset (index) that the two dataset
    factories give with `embed_model` (a callable image batch -> embeddings), votes over the `k` nearest index images
    (landmarks.inference.knn + recognize) and scores with landmarks.metrics GAP. Adds
    `val_gap` to the epoch logs. When GAP improves on the best so far (`best_so_far`, read from
    history.csv on resume), saves `save_model` (the Keras embedding model) to `best_path`
    (chief only).
    """

    def __init__(
        self,
        embed_model,
        make_query_dataset,
        make_index_dataset,
        *,
        every: int,
        k: int,
        best_path: str,
        save_model=None,
        best_so_far: float = -1.0,
        is_chief: bool = True,
    ):
        super().__init__()
        self.embed_model = embed_model
        self.save_model = save_model if save_model is not None else embed_model
        self.make_query_dataset = make_query_dataset
        self.make_index_dataset = make_index_dataset
        self.every = every
        self.k = k
        self.best_path = best_path
        self.best = best_so_far
        self.is_chief = is_chief
        self._index = None

    def evaluate(self) -> float:
        from landmarks.inference import embed, knn, recognize
        from landmarks.metrics import global_average_precision

        queries = embed(self.embed_model, self.make_query_dataset())
        index = embed(self.embed_model, self.make_index_dataset())
        k = min(self.k, len(index.ids))
        similarities, neighbours = knn(queries.vectors, index.vectors, k)
        predicted, confidences = recognize(similarities, neighbours, np.asarray(index.labels))
        predictions = {
            str(qid): (int(label), float(conf))
            for qid, label, conf in zip(queries.ids, predicted, confidences, strict=True)
        }
        solution = {
            str(qid): {int(label)} for qid, label in zip(queries.ids, queries.labels, strict=True)
        }
        return float(global_average_precision(predictions, solution))

    def on_epoch_end(self, epoch, logs=None):
        if self.every <= 0 or (epoch + 1) % self.every:
            return
        gap = self.evaluate()
        if logs is not None:
            logs["val_gap"] = gap
        print(f"epoch {epoch + 1}: validation GAP {gap:.4f}", flush=True)
        if gap > self.best:
            self.best = gap
            if self.is_chief:
                save_keras_atomic(self.save_model, self.best_path)


def compiled_embedder(embed_model, strategy):
    """`embed_model` as one traced call per batch shape, run on the strategy's first replica.

    Calling the Keras model eagerly dispatches op by op (slow; on TPU very slow); this traces
    the forward pass once per batch shape. Every replica gets the same batch and the first
    replica's result is used, so no collective is needed.
    Returns a callable (images float32 [B,S,S,3], training=False) -> float32 [B, D].
    """
    import tensorflow as tf

    @tf.function
    def forward(images):
        return strategy.run(lambda x: embed_model(x, training=False), args=(images,))

    def call(images, training=False):
        return strategy.experimental_local_results(forward(images))[0]

    return call


def save_keras_atomic(model, path: str) -> None:
    """`model.save(path)` through a temporary .keras name and a rename (local or gs://)."""
    import tensorflow as tf

    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-{name}")
    model.save(tmp)
    tf.io.gfile.rename(tmp, path, overwrite=True)
