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
from training_helpers import STEPS, checkpoint_numbers, tiny

from landmarks.cli import main
from landmarks.errors import DataError
from landmarks.training.checkpoints import (
    NonFiniteWeights,
    RunCheckpoint,
    read_index,
    save_keras_atomic,
)

pytestmark = pytest.mark.usefixtures("tiny_bn_registered")


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
    train(tiny(mini_records, out, epochs=2, stop_after_epochs=1), verbose=0)
    run_dir, folder = out / "run", out / "run" / "checkpoints"
    good_index = (folder / "checkpoint.json").read_text()
    good_model = (run_dir / "embed_model.keras").read_bytes()

    diverging = tiny(mini_records, out, epochs=2, learning_rate=1.0e30, clip_norm=0.0)
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

    train(tiny(mini_records, out, epochs=2), verbose=0)  # the advice followed: from epoch 1
    assert f"resumed from {folder / 'ckpt-1.h5'}: epoch 1 done, step {STEPS}" in (
        capsys.readouterr().out
    )
    assert checkpoint_numbers(run_dir) == [1, 2] and _all_finite(folder / "ckpt-2.h5")
    assert _history_epochs(run_dir) == [1, 2]


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


# --- D2: the checkpoint index -----------------------------------------------------------------

DAMAGED_INDEXES = {
    "no kept": '{"latest": "ckpt-2.h5", "finished_epochs": 2, "step": 4}',
    "a JSON int": "42",
    "not JSON": '{"latest": "ckpt-2.h5", "finish',
    "latest not kept": '{"latest": "ckpt-2.h5", "finished_epochs": 2, "step": 4, "kept": []}',
    "latest not its epoch": '{"latest": "ckpt-9.h5", "finished_epochs": 2, "step": 4, '
    '"kept": ["ckpt-9.h5"]}',
}


@pytest.mark.parametrize("kind", sorted(DAMAGED_INDEXES))
def test_a_damaged_index_is_named_and_no_checkpoint_is_deleted(
    mini_records, tmp_path, capsys, kind
):
    config = tiny(mini_records, tmp_path / "out")
    config_path = tmp_path / "c.yaml"
    config.save(str(config_path))
    folder = tmp_path / "out" / "run" / "checkpoints"
    folder.mkdir(parents=True)
    for name in ("ckpt-1.h5", "ckpt-2.h5", "ckpt-3.h5"):
        (folder / name).write_bytes(name.encode())
    (folder / "checkpoint.json").write_text(DAMAGED_INDEXES[kind])
    status, out, error = _run(capsys, "train", "--config", config_path)
    assert status == 2 and error.count("\n") == 1, error
    assert error.startswith(f"error: {folder / 'checkpoint.json'}: damaged checkpoint index (")
    assert "training on" not in out
    assert sorted(p.name for p in folder.iterdir()) == [
        "checkpoint.json", "ckpt-1.h5", "ckpt-2.h5", "ckpt-3.h5",
    ]  # fmt: skip
    assert not (tmp_path / "out" / "run" / "config.yaml").exists()


def test_leftovers_are_only_what_a_killed_save_left(tmp_path):
    """Unlisted checkpoints older than the index's latest are not a killed save's: kept."""
    for name in ("ckpt-1.h5", "ckpt-2.h5", "ckpt-3.h5", "ckpt-3.h5.tmp-0a1b2c3d", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    index = {"latest": "ckpt-2.h5", "finished_epochs": 2, "step": 8, "kept": ["ckpt-2.h5"]}
    (tmp_path / "checkpoint.json").write_text(json.dumps(index))
    removed = RunCheckpoint(str(tmp_path), None, None).remove_leftovers()
    assert removed == ["ckpt-3.h5", "ckpt-3.h5.tmp-0a1b2c3d"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint.json", "ckpt-1.h5", "ckpt-2.h5", "notes.txt",
    ]  # fmt: skip


# --- settings: finite floats, float() spellings, expansion, ensemble and image sizes ----------


def _alias_bomb(levels: int = 9) -> str:
    """A YAML list of a few hundred bytes that expands to 9**levels values."""
    lists = ["&l0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for level in range(1, levels):
        lists.append(f"&l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    return "[" + ", ".join(lists) + "]"


def _train_config(mini_records, tmp_path, text: str = "") -> Path:
    """A tiny run's config file, with `text` appended (YAML)."""
    path = tmp_path / "c.yaml"
    tiny(mini_records, tmp_path / "out").save(str(path))
    path.write_text(path.read_text() + text)
    return path


@pytest.mark.parametrize(
    "setting, message",
    [
        ("recognition_threshold=.nan", "recognition_threshold: expected a finite number, got nan"),
        ("learning_rate=.nan", "learning_rate: expected a finite number, got nan"),
        ("learning_rate=-.inf", "learning_rate: expected a finite number, got -inf"),
        ("learning_rate=1e999", "learning_rate: expected a finite number, got '1e999'"),
        ("tta_scales=[1, nan]", "tta_scales[1]: expected a finite number, got 'nan'"),
        ("learning_rate=-1e-3", "learning_rate: must be > 0, got -0.001"),
        ("weight_decay=-1", "weight_decay: must be >= 0, got -1.0"),
        ("image_size=8192", "config: image_size must be an integer from 32 to 4096 px, got 8192"),
        ("ensemble=[{image_size: 64}]", "ensemble[0]: model_path (the member's embed_model"),
        ("ensemble=[{model_path: m.keras, image_size: 65536}]", "ensemble[0]: image_size must"),
        (
            "ensemble=[{model_path: m.keras, tta_scales: [200]}]",
            "image_size 64 x tta_scale 200 is 12800 px, more than 4096",
        ),
    ],
)
def test_a_bad_setting_is_refused_before_the_run_folder_is_written(
    mini_records, tmp_path, capsys, setting, message
):
    """The run folder of an earlier run: its config.yaml is neither rewritten nor deleted."""
    config_path = _train_config(mini_records, tmp_path)
    run_dir = tmp_path / "out" / "run"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("the earlier run's settings\n")
    status, out, error = _run(capsys, "train", "--config", config_path, "--set", setting)
    assert status == 2 and error.count("\n") == 1 and message in error, error
    assert "training on" not in out
    assert (run_dir / "config.yaml").read_text() == "the earlier run's settings\n"


def test_float_keys_take_what_python_float_reads(tmp_path):
    from landmarks.config import Config

    path = tmp_path / "c.yaml"
    path.write_text("learning_rate: 1e-3\nmin_learning_rate: 5E-6\n")
    config = Config.load(str(path), ["weight_decay=1e-4", "tta_scales=[1, 1.5e0]", "gem_p=3"])
    assert (config.learning_rate, config.min_learning_rate) == (0.001, 5e-6)
    assert (config.weight_decay, config.tta_scales, config.gem_p) == (1e-4, [1.0, 1.5], 3.0)
    assert isinstance(config.gem_p, float)
    with pytest.raises(ValueError, match="learning_rate: expected a number, got 'fast'"):
        config.apply_overrides(["learning_rate=fast"])


def test_an_alias_bomb_is_refused_before_it_expands(mini_records, tmp_path, capsys):
    bomb = f"ensemble: {_alias_bomb()}\n"
    assert len(bomb) < 800  # 9**9 = 387,420,489 values once expanded
    config_path = _train_config(mini_records, tmp_path, bomb)
    status, out, error = _run(capsys, "train", "--config", config_path)
    assert status == 2 and "training on" not in out
    assert error == (
        f"error: {config_path}: expands to more than 100000 values (nested YAML aliases?); "
        "write the values out instead\n"
    )
    assert not (tmp_path / "out").exists()
    status, _, error = _run(
        capsys, "train", "--config", _train_config(mini_records, tmp_path),
        "--set", f"ensemble={_alias_bomb()}",
    )  # fmt: skip
    assert status == 2 and error.startswith("error: --set ensemble: expands to more than")


def test_a_self_containing_alias_is_refused(tmp_path):
    from landmarks.config import Config

    path = tmp_path / "c.yaml"
    path.write_text("ensemble: &loop [*loop]\n")
    with pytest.raises(ValueError, match="expands to more than 100000 values"):
        Config.load(str(path))


def test_adamw_without_weight_decay_builds():
    """weight_decay 0 with AdamW: Keras' AdamW refuses None, which 0 used to become."""
    from landmarks.training.optimization import make_optimizer, make_schedule

    optimizer = make_optimizer("adamw", make_schedule(0.01, 20, 2, 0.0), weight_decay=0.0,
                               clip_norm=0.0)  # fmt: skip
    assert optimizer.weight_decay == 0.0


def test_an_embedding_pass_that_drops_every_image_says_so(
    mini_records, tiny_models, tmp_path, capsys
):
    """Every test photo fails to decode: not "the dataset is empty", but which split, how many
    images and at which sizes, as one line."""
    data_dir = tmp_path / "data"
    for image_id in ("0a1", "0b2", "0c3"):
        photo = data_dir / "test" / "0" / image_id[1] / image_id[2] / f"{image_id}.jpg"
        photo.parent.mkdir(parents=True)
        photo.write_bytes(b"\xff\xd8 not really a JPEG")
    config = tmp_path / "c.yaml"
    config.write_text(
        f"data_dir: {data_dir}\nrecords_dir: {mini_records}\noutput_dir: {tmp_path / 'out'}\n"
        f"model_path: {tiny_models[0]}\nimage_size: 64\n"
    )
    out = tmp_path / "s.csv"
    status, _, error = _run(
        capsys, "infer", "--config", config, "--task", "retrieval", "--out", out
    )
    assert status == 2 and error.count("\n") == 1, error
    assert error.startswith("error: test: no image embedded of 3 ")
    assert "failed to decode or to resize to image_size 64 x tta_scales [1.0]" in error
    assert not out.exists()


# --- failing file systems: one line naming the folder or file ---------------------------------


def _refuse_writes_under(monkeypatch, folder: Path, code: int) -> None:
    """os.makedirs and os.open fail with `code` (e.g. EROFS: a read-only mount) below
    `folder`, as the kernel would; tests run as root, which file modes do not stop."""
    import os

    def refusing(real):
        def call(path, *args, **kwargs):
            if str(path).startswith(str(folder)):
                raise OSError(code, os.strerror(code), str(path))
            return real(path, *args, **kwargs)

        return call

    monkeypatch.setattr(os, "makedirs", refusing(os.makedirs))
    monkeypatch.setattr(os, "open", refusing(os.open))


def _earlier_run(folder: Path, history: str) -> Path:
    """A run folder as `resume_from` finds it: config.yaml, history.csv, a checkpoint."""
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.yaml").write_text("run_name: run\n")
    (folder / "history.csv").write_text(history)
    (folder / "checkpoints" / "ckpt-1.h5").write_bytes(b"x")
    return folder


def test_resume_from_into_a_read_only_output_dir(mini_records, tmp_path, capsys, monkeypatch):
    import errno

    source = _earlier_run(tmp_path / "attached", "epoch,step\n1,4\n")
    config_path = _train_config(mini_records, tmp_path)
    _refuse_writes_under(monkeypatch, tmp_path / "out", errno.EROFS)
    status, _, error = _run(
        capsys, "train", "--config", config_path, "--set", f"resume_from={source}"
    )
    assert status == 2 and error == (
        f"error: {tmp_path / 'out' / 'run'}: cannot be the run folder (Read-only file system); "
        "set output_dir and run_name to a writable place\n"
    )


def test_a_run_name_too_long_for_the_file_system(mini_records, tmp_path, capsys):
    config_path = _train_config(mini_records, tmp_path)
    status, _, error = _run(
        capsys, "train", "--config", config_path, "--set", "run_name=" + "r" * 300
    )
    assert status == 2 and error.count("\n") == 1
    assert error.startswith(
        f"error: {tmp_path / 'out' / ('r' * 300)}: cannot be the run folder (File name too long)"
    )


def test_a_resume_from_history_that_is_not_a_history(mini_records, tmp_path, capsys):
    source = _earlier_run(tmp_path / "attached", "epoch,step\n1,4\nthree,8\n")
    config_path = _train_config(mini_records, tmp_path)
    status, _, error = _run(
        capsys, "train", "--config", config_path, "--set", f"resume_from={source}"
    )
    assert status == 2 and error == (
        f"error: {source / 'history.csv'}: line 3: epoch 'three' is not a whole number >= 1\n"
    )
    assert [p.name for p in (tmp_path / "out" / "run").iterdir()] == [".run.lock"]  # no copy


def test_a_full_disk_while_checkpointing(mini_records, tmp_path, monkeypatch):
    """The second checkpoint meets a full disk (h5py's own error, as a 64 KiB tmpfs gives it):
    one line naming it and the checkpoint kept; no history row, no model for that epoch."""
    import errno

    from landmarks.training.trainer import train

    real_file, calls = h5py.File, []

    def full_on_the_second_write(name, mode="r", *args, **kwargs):
        if mode == "w":
            calls.append(name)
            if len(calls) == 2:
                Path(name).write_bytes(b"the part that fitted")
                raise OSError(errno.ENOSPC, "Can't synchronously write data (file write failed:\n"
                              "errno = 28, error message = 'No space left on device')")  # fmt: skip
        return real_file(name, mode, *args, **kwargs)

    monkeypatch.setattr(h5py, "File", full_on_the_second_write)
    config = tiny(mini_records, tmp_path / "out", epochs=2)
    folder = Path(config.run_dir) / "checkpoints"
    with pytest.raises(DataError) as caught:
        train(config, verbose=0)
    assert str(caught.value) == (
        f"{folder / 'ckpt-2.h5'}: cannot write (No space left on device); the last good "
        f"checkpoint {folder / 'ckpt-1.h5'} (epoch 1) is kept"
    )
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.json", "ckpt-1.h5"]
    assert checkpoint_numbers(Path(config.run_dir)) == [1]
    assert _history_epochs(Path(config.run_dir)) == [1]
    assert not (Path(config.run_dir) / "embed_model.keras").exists()
