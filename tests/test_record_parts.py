"""A build split over two notebooks (two folders), joined: the same records as one build."""

from __future__ import annotations

import json
import shutil

import pytest

from landmarks.data.record_parts import join_record_parts
from landmarks.data.tfrecords import list_shards, prepare
from landmarks.errors import ConfigError, DataError

# The options of the session's mini_records build (tests/conftest.py).
OPTIONS = dict(num_shards=2, image_size=64, holdout=0.2, seed=0, progress=False)


@pytest.fixture(scope="module")
def parts(mini_landmarks, tmp_path_factory):
    """Task 0 and task 1 of 2, each in its own read-only folder, as two Kaggle datasets."""
    root = tmp_path_factory.mktemp("parts")
    folders = []
    for task in (0, 1):
        folder = root / f"part{task}"
        manifest = prepare(
            str(mini_landmarks), "train", str(folder), num_tasks=2, task_index=task, **OPTIONS
        )
        assert manifest["complete"] is False  # the other task's shards are not here
        folders.append(folder)
    return folders


def test_joined_parts_are_the_one_folder_build(parts, mini_records, tmp_path):
    joined = join_record_parts([str(p) for p in parts], str(tmp_path / "records"))
    manifest = json.loads((tmp_path / "records" / "manifest.json").read_text())
    single = json.loads((mini_records / "manifest.json").read_text())
    for split in ("train", "holdout"):
        assert manifest["splits"][split] == single["splits"][split]
        for path in list_shards(joined, split):
            name = path.rsplit("/", 1)[1]
            assert (tmp_path / "records" / name).is_symlink()
            assert (tmp_path / "records" / name).read_bytes() == (mini_records / name).read_bytes()
    assert (tmp_path / "records" / "label_map.csv").read_text() == (
        mini_records / "label_map.csv"
    ).read_text()


def test_a_missing_part_is_named(parts, tmp_path):
    with pytest.raises(DataError, match="missing task"):
        join_record_parts([str(parts[0])], str(tmp_path / "records"))
    with pytest.raises(DataError, match="not a part of a records build"):
        join_record_parts([str(tmp_path)], str(tmp_path / "records"))
    with pytest.raises(ConfigError, match="must be local"):
        join_record_parts(["gs://bucket/part0"], str(tmp_path / "records"))


def test_a_shard_missing_from_a_part_is_named(parts, tmp_path):
    broken = tmp_path / "part1"
    shutil.copytree(parts[1], broken)
    next(broken.glob("*.tfrec")).unlink()
    with pytest.raises(DataError, match="missing or incomplete; rerun its task"):
        join_record_parts([str(parts[0]), str(broken)], str(tmp_path / "records"))
