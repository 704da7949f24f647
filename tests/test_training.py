"""Training on mini-landmarks records: config errors, loss going down, run folder, and a run
killed with SIGKILL that resumes at the right epoch with its schedule position intact and ends
with the uninterrupted run's losses and validation GAP."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from training_helpers import (
    STEPS,
    checkpoint_numbers,
    history_differences,
    read_history,
    read_only,
    snapshot,
    tiny,
    train_command,
    train_until_first_checkpoint_then_kill,
)

from landmarks.cli import main
from landmarks.config import Config
from landmarks.errors import ConfigError

pytestmark = pytest.mark.usefixtures("tiny_bn_registered")


@pytest.fixture(scope="module")
def records(mini_records) -> Path:
    """mini-landmarks train records: 64 px, holdout 0.2, 2 shards (shared session fixture)."""
    return Path(mini_records)


# A resumed run against the uninterrupted one, in another process on the same machine: the
# same kernels on the same batches, so only a change of float32 summation order could differ.
RESUME_LOSS_RTOL = 1e-6


def reference_lr(step: int, config: Config) -> float:
    """Warmup + cosine, written out by hand (see landmarks.training.optimization.make_schedule)."""
    total = config.epochs * STEPS
    warmup = round(config.warmup_epochs * STEPS)
    peak, floor = config.learning_rate, config.min_learning_rate
    if step < warmup:
        return floor + (peak - floor) * step / warmup
    progress = (min(step, total) - warmup) / (total - warmup)
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * progress))


# --- configuration errors, found before any model is built --------------------------------


def test_unknown_backbone_is_named(tmp_path):
    from landmarks.training.plan import check_config

    with pytest.raises(ConfigError, match="backbone: unknown 'resnet9'"):
        check_config(tiny(tmp_path, tmp_path, backbone="resnet9"))


def test_image_size_must_be_a_multiple_of_32(tmp_path):
    from landmarks.training.plan import check_config

    with pytest.raises(ConfigError, match="image_size: 100 is not a positive multiple of 32"):
        check_config(tiny(tmp_path, tmp_path, image_size=100))


def test_crop_area_min_is_checked_before_the_model_is_built(tmp_path):
    from landmarks.training.plan import check_config

    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError, match="crop_area_min must be in"):
            check_config(tiny(tmp_path, tmp_path, crop_area_min=bad))


def test_global_batch_must_divide_by_the_replicas(records, tmp_path):
    from landmarks.training.plan import check_config

    with pytest.raises(ConfigError, match="global_batch_size: 10 is not divisible by the 4"):
        check_config(tiny(records, tmp_path, global_batch_size=10), replicas=4)
    plan = check_config(tiny(records, tmp_path, global_batch_size=10), replicas=2)
    assert (plan.per_replica_batch, plan.global_batch) == (5, 10)


def test_plan_gives_each_jax_process_its_shards_and_batch_share(records, tmp_path):
    from landmarks.training.plan import check_config

    config = tiny(records, tmp_path, global_batch_size=16)
    plans = [check_config(config, replicas=8, processes=2, process_index=p) for p in (0, 1)]
    assert [plan.process_files for plan in plans] == [[f] for f in plans[0].train_files]
    assert [(plan.global_batch, plan.process_batch) for plan in plans] == [(16, 8), (16, 8)]
    with pytest.raises(ConfigError, match=r"records_dir: 2 training shards .* by 4 processes"):
        check_config(config, replicas=8, processes=4, process_index=0)


def test_missing_records_name_the_folder_and_pattern(tmp_path):
    from landmarks.training.plan import check_config

    empty = tmp_path / "no-records"
    empty.mkdir()
    with pytest.raises(ConfigError) as error:
        check_config(tiny(empty, tmp_path))
    assert str(empty) in str(error.value) and "train-NNNNN-of-NNNNN.tfrec" in str(error.value)


def test_missing_holdout_records_are_named(records, tmp_path):
    from landmarks.training.plan import check_config

    with pytest.raises(ConfigError, match="holdout_split: no records .*valid-NNNNN"):
        check_config(tiny(records, tmp_path, validate_every=1, holdout_split="valid"))


def test_labels_outside_num_classes_are_refused(records, tmp_path):
    from landmarks.training.plan import check_config

    with pytest.raises(
        # the 37 landmarks of mini-landmarks' train split (12 of 49 are left out of it)
        ConfigError,
        match=r"num_classes: 10, but .*label_map.csv has labels 0\.\.36",
    ):
        check_config(tiny(records, tmp_path, num_classes=10))


def test_plan_reads_classes_and_examples_from_the_records(records, mini_landmarks, tmp_path):
    from landmarks.training.plan import check_config

    plan = check_config(tiny(records, tmp_path, steps_per_epoch=0, batch_size=16))
    train_csv = pd.read_csv(mini_landmarks / "train.csv")
    assert plan.num_classes == train_csv["landmark_id"].nunique()
    held = sum(1 for _ in _records_in(plan.holdout_files)) if plan.holdout_files else 0
    assert plan.train_examples + held <= len(train_csv)
    assert int(plan.class_counts.sum()) == plan.train_examples
    assert plan.steps_per_epoch == plan.train_examples // 16


def test_epochs_hold_whole_executions_of_steps(records, tmp_path):
    """Keras runs `steps_per_execution` steps at a time, so an epoch of 4 steps at 3 per
    execution would run 6: one pass is rounded down to whole executions, and a set
    steps_per_epoch that is not a multiple is refused."""
    from landmarks.training.plan import check_config

    one_pass = check_config(tiny(records, tmp_path, steps_per_epoch=0)).train_examples // 8
    for per_execution in (1, 3, 7):
        config = tiny(records, tmp_path, steps_per_epoch=0, steps_per_execution=per_execution)
        steps = check_config(config).steps_per_epoch
        assert steps % per_execution == 0 and one_pass - per_execution < steps <= one_pass
    with pytest.raises(ConfigError, match=r"steps_per_epoch: 4 is not a multiple of "):
        check_config(tiny(records, tmp_path, steps_per_epoch=4, steps_per_execution=3))
    with pytest.raises(ConfigError, match=r"steps_per_execution: 1000 is more than the \d+ "):
        check_config(tiny(records, tmp_path, steps_per_epoch=0, steps_per_execution=1000))


def _records_in(files):
    import tensorflow as tf

    return tf.data.TFRecordDataset(files)


def test_cli_prints_a_config_error_in_one_line(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"records_dir": str(tmp_path), "image_size": 256}))
    status = main(["train", "--config", str(path), "--set", "image_size=100"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert err[-1].startswith("error: image_size: 100")


# --- real training --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(records, tmp_path_factory):
    from landmarks.training.trainer import train

    out = tmp_path_factory.mktemp("train")
    config = tiny(records, out, epochs=3, validate_every=3, holdout_split="holdout")
    run_dir = Path(train(config, verbose=0))
    return config, run_dir


@pytest.mark.slow
def test_a_few_steps_lower_the_loss(trained_run):
    _, run_dir = trained_run
    losses = [float(row["loss"]) for row in read_history(run_dir)]
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert losses[-1] < losses[0]


@pytest.mark.slow
def test_run_folder_holds_model_config_history_and_curves(trained_run):
    import keras

    config, run_dir = trained_run
    for name in ("embed_model.keras", "best_embed_model.keras", "config.yaml", "curves.png"):
        assert (run_dir / name).stat().st_size > 0, name
    saved = Config.load(str(run_dir / "config.yaml"))
    assert saved.num_classes == 37 and saved.image_size == config.image_size

    rows = read_history(run_dir)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert [int(r["step"]) for r in rows] == [STEPS, 2 * STEPS, 3 * STEPS]
    for row in rows:
        expected = reference_lr(int(row["step"]), config)
        assert float(row["learning_rate"]) == pytest.approx(expected, rel=1e-4)
        assert float(row["backbone_learning_rate"]) == pytest.approx(
            expected * config.backbone_lr_multiplier, rel=1e-4
        )
    assert [r["val_gap"] != "" for r in rows] == [False, False, True]  # validate_every=3
    assert 0.0 <= float(rows[-1]["val_gap"]) <= 1.0

    model = keras.saving.load_model(run_dir / "embed_model.keras")
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    vectors = np.asarray(model(images))
    assert vectors.shape == (2, 64)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def assert_same_results(rows: list[dict], reference: list[dict]) -> None:
    """history.csv rows with the steps, losses (to RESUME_LOSS_RTOL) and validation GAP of the
    uninterrupted run's: the resumed epochs trained on the same batches from the same state."""
    assert [r["epoch"] for r in rows] == [r["epoch"] for r in reference]
    assert history_differences(rows, reference, loss_rtol=RESUME_LOSS_RTOL) == []


def _saved_step_and_epochs(checkpoint: Path) -> tuple[int, int]:
    """The optimizer's iterations (its first variable) and the finished epochs of a checkpoint
    file, read with h5py."""
    import h5py

    with h5py.File(checkpoint, "r") as handle:
        iterations = handle["optimizer/0"]
        assert iterations.attrs["path"].endswith("/iteration")
        return int(iterations[()]), int(handle.attrs["finished_epochs"])


@pytest.mark.slow
def test_killed_run_resumes_in_place_and_from_a_read_only_copy(
    records, trained_run, tmp_path, capsys
):
    """SIGKILL after the first checkpoint; the same command resumes at the right epoch and
    learning-rate step, and ends with the losses and validation GAP of the uninterrupted run
    (`trained_run`, the same config); a new session continues the killed run from a read-only
    copy, with the same results again."""
    epochs = 3
    config = tiny(records, tmp_path / "out", epochs=epochs, validate_every=3)
    config_path = tmp_path / "run.yaml"
    config.save(str(config_path))
    run_dir = Path(config.run_dir)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")

    killed_at = train_until_first_checkpoint_then_kill(config_path, run_dir)
    assert 1 <= killed_at < epochs, "the run finished before it could be killed"
    attached = tmp_path / "input" / "previous-session"  # the killed session, published
    shutil.copytree(run_dir, attached)
    read_only(attached)
    before = snapshot(attached)

    second = subprocess.run(
        train_command(config_path), env=env, capture_output=True, text=True, timeout=600
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"epoch {killed_at} done, step {killed_at * STEPS}" in second.stdout

    rows = read_history(run_dir)
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    assert [int(r["step"]) for r in rows] == [STEPS * e for e in range(1, epochs + 1)]
    for row in rows:
        assert float(row["learning_rate"]) == pytest.approx(
            reference_lr(int(row["step"]), config), rel=1e-4
        )
    assert _saved_step_and_epochs(run_dir / "checkpoints" / f"ckpt-{epochs}.h5") == (
        epochs * STEPS,
        epochs,
    )
    assert checkpoint_numbers(run_dir) == [epochs - 1, epochs]  # the last two are kept
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "checkpoint.json",
        f"ckpt-{epochs - 1}.h5",
        f"ckpt-{epochs}.h5",
    ]
    assert (run_dir / "embed_model.keras").exists()
    assert_same_results(rows, read_history(trained_run[1]))

    # the same killed run, continued in a new session from its read-only copy (resume_from)
    from landmarks.training.trainer import train

    session2 = tiny(
        records, tmp_path / "session2", epochs=epochs, validate_every=3, resume_from=str(attached)
    )
    continued = Path(train(session2, verbose=0))
    printed = capsys.readouterr().out
    assert "copied" in printed and str(attached) in printed
    assert f"epoch {killed_at} done, step {killed_at * STEPS}" in printed
    assert [int(r["step"]) for r in read_history(continued)] == [
        STEPS * e for e in range(1, epochs + 1)
    ]
    assert checkpoint_numbers(continued) == [epochs - 1, epochs]
    assert_same_results(read_history(continued), read_history(trained_run[1]))
    assert (continued / "embed_model.keras").is_file()
    assert snapshot(attached) == before  # the attached copy is never written


@pytest.mark.slow
def test_next_stage_starts_from_the_previous_runs_weights_at_another_size(trained_run, tmp_path):
    """Staged training: init_from a finished run, at 96 px instead of 64, with a fresh schedule."""
    import keras

    from landmarks.training.trainer import train

    previous, previous_dir = trained_run
    config = tiny(
        Path(previous.records_dir), tmp_path, image_size=96, epochs=1, steps_per_epoch=1,
        learning_rate=1e-9, min_learning_rate=0.0, warmup_epochs=0, init_from=str(previous_dir),
    )  # fmt: skip
    run_dir = Path(train(config, verbose=0))
    assert [int(r["step"]) for r in read_history(run_dir)] == [1]  # its own schedule from 0
    before = keras.saving.load_model(previous_dir / "embed_model.keras")
    after = keras.saving.load_model(run_dir / "embed_model.keras")
    for a, b in zip(before.trainable_weights, after.trainable_weights, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


# --- presets --------------------------------------------------------------------------------

PRESETS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", PRESETS, ids=[p.name for p in PRESETS])
def test_presets_are_small_and_valid(path):
    from landmarks.models.registry import BACKBONES
    from landmarks.models.weights import resolve_weights

    values = yaml.safe_load(path.read_text())
    defaults = Config().to_dict()
    assert [k for k in values if values[k] == defaults[k]] == [], "repeats a default"
    config = Config.load(str(path))
    assert config.backbone in BACKBONES
    assert config.image_size % 32 == 0
    resolve_weights(config)  # a known weights option for that backbone


@pytest.mark.parametrize(
    "path", [p for p in PRESETS if p.name.startswith(("tpu_", "gpu_"))], ids=lambda p: p.name
)
def test_every_accelerator_preset_number_names_its_source(path):
    """[R] the 2021 winner's recipe, [L] the EfficientNet-Lite builder, [own] our choice."""
    for line in path.read_text().splitlines():
        if line and not line.startswith(("#", " ")):
            assert any(tag in line for tag in ("[R]", "[L]", "[own]")), line
