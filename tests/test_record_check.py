"""Damaged records are named (shard, position, id, TensorFlow's reason) wherever they are read:
directly, while embedding for `infer`, and while training. Issue 16 B1 (reader side) and W6."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cli_helpers import infer
from records_helpers import jpeg_bytes, picture, random_scan_data, replace_image_in_shard

from landmarks.data.record_check import find_bad_record
from landmarks.data.tfrecords import list_shards

CORRUPT = random_scan_data(jpeg_bytes(picture(48, 32)))


@pytest.fixture
def records(mini_records, tmp_path) -> Path:
    """A private copy of the mini-landmarks train records (64 px, 2 train shards)."""
    return Path(shutil.copytree(mini_records, tmp_path / "records"))


def test_sound_records_have_no_problem(mini_records):
    assert find_bad_record(list_shards(str(mini_records), "train")) is None


def test_an_image_that_does_not_decode_is_named(records):
    shards = list_shards(str(records), "train")
    bad_id = replace_image_in_shard(Path(shards[1]), 3, CORRUPT)
    problem = find_bad_record(shards)
    assert problem.startswith(f"{shards[1]}: record 3 (id {bad_id}) holds an image that does not")
    assert "Invalid JPEG data" in problem and "prepare" in problem


def test_a_truncated_shard_is_named_with_the_offset(records):
    shards = list_shards(str(records), "train")
    data = Path(shards[0]).read_bytes()
    Path(shards[0]).write_bytes(data[: len(data) // 2])
    problem = find_bad_record(shards)
    assert problem.startswith(f"{shards[0]}: unreadable after record ")
    assert "truncated record at" in problem


def _pooling_config(tmp_path, data_dir, records_dir) -> Path:
    """A config (written to tmp_path) that embeds with a model without weights: global average
    pooling of the 32-px image."""
    import keras

    model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.GlobalAveragePooling2D()])
    model.save(str(tmp_path / "embed.keras"))
    config = tmp_path / "c.yaml"
    config.write_text(
        f"data_dir: {data_dir}\nrecords_dir: {records_dir}\noutput_dir: {tmp_path}\n"
        f"model_path: {tmp_path / 'embed.keras'}\nimage_size: 32\nbatch_size: 64\n"
    )
    return config


@pytest.mark.parametrize("damage", ["image", "truncation"])
def test_infer_names_a_bad_record(records, mini_landmarks, tmp_path, capsys, damage):
    """The train records are read to embed the recognition index: the error names the shard
    and, for an image that does not decode, the record (W6: a truncated shard, the offset)."""
    shards = list_shards(str(records), "holdout")
    if damage == "image":
        bad_id = replace_image_in_shard(Path(shards[0]), 0, CORRUPT)
    else:
        data = Path(shards[0]).read_bytes()
        Path(shards[0]).write_bytes(data[: len(data) - 100])
    out = tmp_path / "s.csv"
    assert infer(_pooling_config(tmp_path, mini_landmarks, records), out) == 2
    error = capsys.readouterr().err
    if damage == "image":
        assert f"{shards[0]}: record 0 (id {bad_id})" in error and "does not decode" in error
    else:
        assert f"{shards[0]}: unreadable after record " in error and "truncated record at" in error
    assert not out.exists()


def test_an_unreadable_test_photo_gets_an_empty_prediction(
    mini_landmarks, mini_records, tmp_path, capsys
):
    """A broken file in the test folder must not fail a Kaggle rerun: it is named on the
    console and its query is submitted with an empty prediction."""
    import pandas as pd

    from landmarks.data.gldv2 import image_path

    data = tmp_path / "competition"
    shutil.copytree(mini_landmarks / "test", data / "test")
    test_ids = sorted(p.stem for p in (data / "test").rglob("*.jpg"))
    broken = test_ids[5]
    Path(image_path(str(data), "test", broken)).write_bytes(CORRUPT)
    out = tmp_path / "s.csv"
    assert infer(_pooling_config(tmp_path, data, mini_records), out) == 0
    assert "1 test image(s) could not be read and are left out" in capsys.readouterr().out
    submission = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert sorted(submission["id"]) == test_ids
    predicted = dict(zip(submission["id"], submission["landmarks"], strict=True))
    assert predicted[broken] == "" and predicted[test_ids[0]] != ""


@pytest.mark.slow
def test_training_names_a_record_that_does_not_decode(records, tmp_path, capsys, monkeypatch):
    from training_helpers import tiny_bn_backbone

    from landmarks.cli import main
    from landmarks.models.registry import BACKBONES

    monkeypatch.setitem(BACKBONES, "tiny_bn", tiny_bn_backbone)
    shards = list_shards(str(records), "train")
    bad_id = replace_image_in_shard(Path(shards[0]), 7, CORRUPT)
    config = tmp_path / "c.yaml"
    config.write_text(
        f"records_dir: {records}\noutput_dir: {tmp_path}\nimage_size: 32\nbatch_size: 8\n"
        "backbone: tiny_bn\nhead: gem\nembedding_dim: 16\naugment: none\nepochs: 1\n"
        "validate_every: 0\n"
    )
    assert main(["train", "--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert f"{shards[0]}: record 7 (id {bad_id})" in error and "does not decode" in error
