"""Bad input to training and to the config (issue 20): a diverged run keeps its last good
checkpoint, a damaged checkpoint index deletes nothing, odd settings are refused before anything
is written, and failing file systems give one line `error: ...` naming the file or folder.

The file readers' bad inputs are in test_bad_inputs_files.py, the earlier rounds' in
test_bad_inputs.py and test_records_bad_inputs.py; all use the mini-landmarks fixtures of
conftest.py and the tiny_bn backbone of training_helpers.py.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from training_helpers import STEPS, checkpoint_numbers, tiny, tiny_bn_backbone

from landmarks.cli import main
from landmarks.errors import DataError
from landmarks.training.callbacks import TrainingDivergedError
from landmarks.training.checkpoints import (
    NonFiniteWeights,
    RunCheckpoint,
    read_index,
    save_keras_atomic,
)


@pytest.fixture(scope="module", autouse=True)
def tiny_bn_registered():
    """Backbone `tiny_bn` (training_helpers.tiny's) registered while this module runs."""
    from landmarks.models.registry import BACKBONES

    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(BACKBONES, "tiny_bn", tiny_bn_backbone)
        yield


def _run(capsys, *args) -> tuple[int, str, str]:
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _history_epochs(run_dir: Path) -> list[int]:
    with open(run_dir / "history.csv", newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def _all_finite(checkpoint: Path) -> bool:
    with h5py.File(checkpoint, "r") as handle:
        return all(
            np.isfinite(group[name][()]).all() for group in handle.values() for name in group
        )


def _small_model():
    """A compiled Dense model with a built optimizer: [B, 4] -> [B, 3] logits."""
    from landmarks.training.optimization import ArcFaceCrossEntropy, make_optimizer, make_schedule

    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Dense(6)(inputs)))
    optimizer = make_optimizer(
        "adamw", make_schedule(0.01, 20, 2, 0.0), weight_decay=1e-3, clip_norm=1.0
    )
    model.compile(optimizer=optimizer, loss=ArcFaceCrossEntropy())
    optimizer.build(model.trainable_variables)
    return model, optimizer


# --- D1: divergence -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.backends
def test_a_diverged_run_keeps_its_last_good_checkpoint_and_says_so(mini_records, tmp_path, capsys):
    """The issue's reproduction: one good epoch, then learning_rate 1e30 without clipping."""
    from landmarks.training.trainer import train

    out = tmp_path / "out"
    train(tiny(mini_records, out, stop_after_epochs=1), verbose=0)
    run_dir, folder = out / "run", out / "run" / "checkpoints"
    good_index = (folder / "checkpoint.json").read_text()
    good_model = (run_dir / "embed_model.keras").read_bytes()

    diverging = tiny(mini_records, out, learning_rate=1.0e30, clip_norm=0.0)
    config_path = tmp_path / "diverging.yaml"
    diverging.save(str(config_path))
    status, _, error = _run(capsys, "train", "--config", config_path)
    assert status == 2 and error.count("\n") == 1
    assert error.startswith("error: loss became NaN/inf in epoch 2 (batch ")
    assert f"the last good checkpoint {folder / 'ckpt-1.h5'} (epoch 1) is kept" in error
    assert error.endswith("then rerun to resume from it.\n")
    assert (folder / "checkpoint.json").read_text() == good_index
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.json", "ckpt-1.h5"]
    assert _all_finite(folder / "ckpt-1.h5")
    assert (run_dir / "embed_model.keras").read_bytes() == good_model
    assert _history_epochs(run_dir) == [1]  # no row for the epoch that was not checkpointed

    train(tiny(mini_records, out), verbose=0)  # the advice followed: resumes from epoch 1
    assert f"resumed from {folder / 'ckpt-1.h5'}: epoch 1 done, step {STEPS}" in (
        capsys.readouterr().out
    )
    assert checkpoint_numbers(run_dir) == [2, 3] and _all_finite(folder / "ckpt-3.h5")
    assert _history_epochs(run_dir) == [1, 2, 3]


@pytest.mark.backends
def test_non_finite_weights_are_never_written(tmp_path):
    """Weights that became NaN with a finite loss (the last step of an epoch): the checkpoint
    is refused, training stops, the index keeps the last good one; .keras files alike."""
    model, optimizer = _small_model()
    folder = tmp_path / "checkpoints"
    checkpoint = RunCheckpoint(str(folder), model, optimizer)
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {"loss": 1.0})
    good = (folder / "ckpt-1.h5").read_bytes()
    kernel = model.trainable_weights[0]
    kernel.assign(np.where(np.eye(*kernel.shape) > 0, np.nan, kernel.numpy()))
    checkpoint.on_epoch_end(1, {"loss": 0.9})
    assert model.stop_training
    assert checkpoint.refused.startswith("epoch 2 was not checkpointed (")
    assert f"{kernel.path})" in checkpoint.refused
    assert read_index(str(folder))["latest"] == "ckpt-1.h5"
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.json", "ckpt-1.h5"]
    assert (folder / "ckpt-1.h5").read_bytes() == good

    target = tmp_path / "embed_model.keras"
    target.write_bytes(b"the model of an earlier run")
    with pytest.raises(NonFiniteWeights, match=f"{target}: not written: 1 of its 4 arrays"):
        save_keras_atomic(model, str(target))
    assert target.read_bytes() == b"the model of an earlier run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints", "embed_model.keras"]


def test_an_epoch_cut_short_by_a_nan_loss_is_not_checkpointed(tmp_path):
    model, optimizer = _small_model()
    checkpoint = RunCheckpoint(str(tmp_path), model, optimizer)
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {"loss": float("nan")})
    assert model.stop_training and checkpoint.refused == (
        "epoch 1 was not checkpointed (its loss is nan)"
    )
    assert list(tmp_path.iterdir()) == []
