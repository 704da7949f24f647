"""Keras callbacks of a training run: history.csv, validation GAP, NaN stop, and the random
generators' state at each epoch's start.

Run folder (config.run_dir):
    history.csv       epoch, step, loss, learning_rate, backbone_learning_rate, val_gap
    best_embed_model.keras   embedding model of the epoch with the best validation GAP

Order matters at the end of an epoch: validation (adds val_gap) -> history row -> checkpoint
(landmarks.training.checkpoints). A kill between the history row and the checkpoint leaves a row
that the resumed run rewrites; when the checkpoint fails (a full disk) or is refused (NaN/inf),
`train` takes the row back (HistoryCSV.keep_epochs_up_to), so history.csv lists checkpointed
epochs only.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math

import keras
import numpy as np

from landmarks.data.pipeline import mixed_seed
from landmarks.errors import LandmarksError
from landmarks.io_utils import write_refusals_reported, write_text_atomic
from landmarks.training.checkpoints import (
    NonFiniteWeights,
    kept_account,
    read_index,
    save_keras_atomic,
)
from landmarks.training.history import HISTORY_COLUMNS, read_history


class TrainingDivergedError(LandmarksError):
    """The loss or the weights became NaN or infinite; the last good checkpoint is kept."""


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
        self._write()

    def keep_epochs_up_to(self, epoch: int) -> None:
        """Drop the rows after `epoch` (the last checkpointed one) and rewrite the file, when
        there are any. A refused rewrite (the disk that failed the checkpoint is still full)
        is left for the resumed run, which drops those rows too: the error that stopped the
        run is the one to report."""
        kept = [row for row in self.rows if int(row["epoch"]) <= epoch]
        if len(kept) == len(self.rows):
            return
        self.rows = kept
        with contextlib.suppress(LandmarksError):
            self._write()

    def _write(self) -> None:
        if not self.enabled:
            return
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        with write_refusals_reported(self.path):
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

    def raise_if_stopped(self, checkpoint_dir: str, refused: str | None = None) -> None:
        """TrainingDivergedError when the loss became NaN/inf, or when `refused` (why the
        checkpoint callback did not save an epoch, RunCheckpoint.refused) is set; the message
        names the checkpoint a rerun resumes from, as the index of `checkpoint_dir` says."""
        if self.stopped_at is None and refused is None:
            return
        if self.stopped_at is not None:
            epoch, batch = self.stopped_at
            what = f"loss became NaN/inf in epoch {epoch} (batch {batch})"
        else:
            what = "weights became NaN/inf"
        detail = f"; {refused}" if refused else ""
        rerun = "resume from it" if read_index(checkpoint_dir) else "start again"
        raise TrainingDivergedError(
            f"{what}{detail}; {kept_account(checkpoint_dir)}. Lower learning_rate or set "
            f"clip_norm, then rerun to {rerun}."
        )


def seed_generator_states(model) -> list:
    """The state variables of `model`'s random generators (Keras SeedGenerators: Dropout's, the
    backbone's drop-connect): [2] integers each, (seed, counter). They are in `model.variables`
    but not in `model.weights`, so checkpoints do not hold them."""
    weights = {id(weight) for weight in model.weights}
    return [
        variable
        for variable in model.variables
        if id(variable) not in weights and variable.path.endswith("seed_generator_state")
    ]


class EpochRandomness(keras.callbacks.Callback):
    """At the start of epoch e, sets the i-th random generator of `model` to state
    (mixed_seed(seed, e, i), 0): dropout and drop-connect masks are then a function of
    (seed, epoch) like the data (landmarks.data.pipeline.make_train_epochs), so the epochs of
    a run resumed from a checkpoint draw the masks the uninterrupted run drew."""

    def __init__(self, model, seed: int):
        super().__init__()
        self.states = seed_generator_states(model)
        self.seed = int(seed)

    def on_epoch_begin(self, epoch, logs=None):
        for index, state in enumerate(self.states):
            value = [mixed_seed(self.seed, epoch, index), 0]
            state.assign(np.asarray(value, dtype=keras.backend.standardize_dtype(state.dtype)))


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
        from landmarks.inference.embedding import embed
        from landmarks.inference.recognition import recognize
        from landmarks.inference.search import knn
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
        if not gap > self.best:
            return
        if self.is_chief:
            try:
                save_keras_atomic(self.save_model, self.best_path)
            except NonFiniteWeights as error:  # the run stops: its checkpoint is refused too
                print(f"epoch {epoch + 1}: {error}", flush=True)
                return
        self.best = gap
