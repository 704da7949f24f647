"""Callbacks on tiny Keras models, on both backends: checkpoint round trip, history on resume,
NaN stop, init_from, and the validation GAP on embeddings whose answer is known by construction."""

from __future__ import annotations

import csv

import keras
import numpy as np
import pytest
import tensorflow as tf

from landmarks.errors import ConfigError
from landmarks.training.callbacks import HistoryCSV, StopOnNaN, TrainingDivergedError, ValidationGAP
from landmarks.training.checkpoints import RunCheckpoint, restore_model_weights
from landmarks.training.optimization import ArcFaceCrossEntropy, make_optimizer, make_schedule

pytestmark = pytest.mark.backends


def _model(seed: int, weights_from=None):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    hidden = keras.layers.BatchNormalization()(keras.layers.Dense(6)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    if weights_from:
        restore_model_weights(model, weights_from)
    schedule = make_schedule(0.01, 20, 2, 0.0)
    optimizer = make_optimizer("adamw", schedule, weight_decay=1e-3, clip_norm=1.0)
    model.compile(optimizer=optimizer, loss=ArcFaceCrossEntropy())
    optimizer.build(model.trainable_variables)
    return model, optimizer, schedule


def _data(n=32):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 4)).astype("float32"), rng.integers(0, 3, n).astype("int32")


def test_checkpoint_restores_weights_optimizer_state_and_epoch(tmp_path):
    model, optimizer, _ = _model(0)
    x, y = _data()
    checkpoint = RunCheckpoint(str(tmp_path / "ckpt"), model, optimizer)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[checkpoint])
    assert int(optimizer.iterations.numpy()) == 8

    fresh, fresh_optimizer, _ = _model(1)  # different initial weights
    restored = RunCheckpoint(str(tmp_path / "ckpt"), fresh, fresh_optimizer)
    assert restored.restore_latest() == 2
    assert int(fresh_optimizer.iterations.numpy()) == 8
    for a, b in zip(model.weights, fresh.weights, strict=True):  # includes BN moving stats
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(optimizer.variables, fresh_optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(a.numpy()), np.asarray(b.numpy()))


def test_leftovers_of_a_killed_save_are_removed_and_the_latest_still_restores(tmp_path):
    """A kill during a save leaves a temporary file (killed while writing) or a complete file
    the index does not name yet (killed before the index was rewritten)."""
    model, optimizer, _ = _model(0)
    x, y = _data()
    folder = tmp_path / "ckpt"
    checkpoint = RunCheckpoint(str(folder), model, optimizer)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[checkpoint])
    (folder / "ckpt-3.h5.tmp-0a1b2c3d").write_bytes(b"half an HDF5 file")
    (folder / "ckpt-3.h5").write_bytes((folder / "ckpt-2.h5").read_bytes())
    keep = sorted(p.name for p in folder.iterdir() if p.name in ("ckpt-1.h5", "ckpt-2.h5"))
    fresh, fresh_optimizer, _ = _model(1)
    restored = RunCheckpoint(str(folder), fresh, fresh_optimizer)
    assert restored.remove_leftovers() == ["ckpt-3.h5", "ckpt-3.h5.tmp-0a1b2c3d"]
    assert sorted(p.name for p in folder.iterdir()) == sorted([*keep, "checkpoint.json"])
    assert restored.restore_latest() == 2
    off_chief = RunCheckpoint(str(folder), fresh, fresh_optimizer, is_chief=False)
    (folder / "ckpt-9.h5.tmp-ffffffff").write_bytes(b"x")
    assert off_chief.remove_leftovers() == [] and (folder / "ckpt-9.h5.tmp-ffffffff").exists()


def test_no_checkpoint_means_epoch_zero(tmp_path):
    model, optimizer, _ = _model(0)
    assert RunCheckpoint(str(tmp_path / "none"), model, optimizer).restore_latest() == 0


def test_init_from_loads_weights_only(tmp_path):
    model, optimizer, _ = _model(0)
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    RunCheckpoint(str(tmp_path / "run" / "checkpoints"), model, optimizer).save(1)

    fresh, fresh_optimizer, _ = _model(1, weights_from=str(tmp_path / "run"))
    for a, b in zip(model.weights, fresh.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert int(fresh_optimizer.iterations.numpy()) == 0  # a new stage starts its own schedule
    with pytest.raises(ConfigError, match="init_from: no checkpoint found"):
        _model(2, weights_from=str(tmp_path / "missing"))


def test_history_rows_after_the_checkpoint_are_dropped_on_resume(tmp_path):
    model, _, schedule = _model(0)
    x, y = _data()
    path = str(tmp_path / "history.csv")
    model.fit(x, y, batch_size=8, epochs=3, verbose=0,
              callbacks=[HistoryCSV(path, schedule, 0.5, start_epoch=0)])  # fmt: skip
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["step"] for r in rows] == ["4", "8", "12"]
    step = 8
    assert float(rows[1]["learning_rate"]) == pytest.approx(float(schedule(step)), rel=1e-6)
    assert float(rows[1]["backbone_learning_rate"]) == pytest.approx(
        0.5 * float(rows[1]["learning_rate"]), rel=1e-6
    )

    resumed = HistoryCSV(path, schedule, 0.5, start_epoch=1)  # checkpoint said 1 epoch done
    assert [r["epoch"] for r in resumed.rows] == ["1"]


def test_nan_loss_stops_and_raises_a_clear_error(tmp_path):
    model, _, _ = _model(0)
    x, y = _data()
    x[9] = np.nan  # second batch of 8
    stop = StopOnNaN()
    model.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False, callbacks=[stop])
    assert stop.stopped_at == (1, 1)
    assert int(model.optimizer.iterations.numpy()) == 2
    with pytest.raises(
        TrainingDivergedError,
        match="epoch 1 .batch 1.; no checkpoint is kept.*rerun to start again",
    ):
        stop.raise_if_stopped(str(tmp_path))


def _labelled_images(labels, start_id, shown=None):
    """Images whose constant pixel value encodes the landmark they show (value = 10 * landmark);
    `shown` (default `labels`) is what the pixels show, `labels` the ground truth."""
    labels = np.asarray(labels, dtype="int32")
    shown = labels if shown is None else np.asarray(shown)
    images = np.ones((len(labels), 32, 32, 3), "float32") * (10.0 * shown)[:, None, None, None]
    ids = np.asarray([f"{start_id + i:04d}" for i in range(len(labels))])
    return tf.data.Dataset.from_tensor_slices({"image": images, "id": ids, "label": labels}).batch(
        4
    )


def _label_embedder(num_labels):
    """Embedding = one-hot of the landmark read back from the pixels."""

    def call(images, training=False):
        labels = tf.cast(tf.round(tf.reduce_mean(images, axis=[1, 2, 3]) / 10.0), tf.int32)
        return tf.one_hot(labels, num_labels)

    return call


def test_validation_gap_is_one_when_every_neighbour_is_right(tmp_path):
    index_labels = [0, 1, 2, 3] * 3
    query_labels = [3, 2, 1, 0, 0, 1]
    saved = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    callback = ValidationGAP(
        _label_embedder(4),
        lambda: _labelled_images(query_labels, 1000),
        lambda: _labelled_images(index_labels, 0),
        every=2,
        k=3,
        best_path=str(tmp_path / "best_embed_model.keras"),
        save_model=saved,
    )
    assert callback.evaluate() == pytest.approx(1.0)
    logs = {}
    callback.on_epoch_end(0, logs)  # epoch 1: not a validation epoch
    assert "val_gap" not in logs and not (tmp_path / "best_embed_model.keras").exists()
    callback.on_epoch_end(1, logs)
    assert logs["val_gap"] == pytest.approx(1.0)
    assert (tmp_path / "best_embed_model.keras").exists()


def test_validation_gap_when_half_the_queries_are_recognised_wrongly(tmp_path):
    # Queries labelled 3, 2, 1, 0 whose images show 3, 2, 0, 1: the first two are recognised,
    # the last two get the other landmark. Every confidence ties (3 neighbours at similarity
    # 1), so the stable sort keeps query order: precisions 1/1 and 2/2 at the two right ones,
    # M = 4 landmark queries -> GAP = (1 + 1) / 4.
    callback = ValidationGAP(
        _label_embedder(4),
        lambda: _labelled_images([3, 2, 1, 0], 1000, shown=[3, 2, 0, 1]),
        lambda: _labelled_images([0, 1, 2, 3] * 3, 0),
        every=1,
        k=3,
        best_path=str(tmp_path / "best.keras"),
    )
    assert callback.evaluate() == pytest.approx(0.5)
