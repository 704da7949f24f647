"""Submission writers (atomic, validated) and the validator's rejection of each malformed case."""

from __future__ import annotations

import numpy as np
import pytest

from landmarks.errors import DataError
from landmarks.submission import (
    read_recognition_submission,
    validate_recognition_submission,
    validate_retrieval_submission,
    write_recognition_submission,
    write_retrieval_submission,
)


def test_recognition_round_trip_with_empty_prediction(tmp_path):
    path = str(tmp_path / "sub.csv")
    write_recognition_submission(path, ["a", "b", "c"], [7, -1, 12], [0.5, 0.9, 1.25])
    assert open(path).read() == "id,landmarks\na,7 0.5\nb,\nc,12 1.25\n"
    assert validate_recognition_submission(path, ["c", "b", "a"]) == {
        "a": (7, 0.5),
        "b": None,
        "c": (12, 1.25),
    }


def test_retrieval_round_trip_keeps_the_first_100(tmp_path):
    path = str(tmp_path / "sub.csv")
    index_ids = [f"i{n}" for n in range(120)]
    write_retrieval_submission(path, ["q1", "q2"], [index_ids, ["i3", "i1"]], index_ids=index_ids)
    parsed = validate_retrieval_submission(path, ["q1", "q2"], index_ids)
    assert parsed == {"q1": index_ids[:100], "q2": ["i3", "i1"]}


def test_a_failed_write_leaves_the_old_file_untouched(tmp_path):
    path = tmp_path / "sub.csv"
    path.write_text("id,landmarks\nold,1 1.0\n")
    with pytest.raises(DataError, match=r"row 1 \(b\)"):
        write_recognition_submission(str(path), ["a", "b"], [1, 2], [0.5, np.nan])
    with pytest.raises(DataError, match="'a' appears more than once"):
        write_recognition_submission(str(path), ["a", "a"], [1, 2], [0.5, 0.6])
    with pytest.raises(DataError, match="missing"):
        write_recognition_submission(str(path), ["a"], [1], [0.5], expected_ids=["a", "b"])
    with pytest.raises(DataError, match="unknown"):
        write_retrieval_submission(str(path), ["a"], [["x"]], index_ids=["y"])
    assert path.read_text() == "id,landmarks\nold,1 1.0\n"
    assert [p.name for p in tmp_path.iterdir()] == ["sub.csv"]  # no temporary left behind


@pytest.mark.parametrize(
    "text, message",
    [
        ("id,landmark\na,1 0.5\nb,\n", "header must be id,landmarks"),
        ("id,landmarks\na,1 0.5\n", "1 expected ids are missing, e.g. 'b'"),
        ("id,landmarks\na,1 0.5\nb,\nb,\n", "line 4: id 'b' appears more than once"),
        ("id,landmarks\na,1 0.5\nb,\nc,\n", "line 4: unknown id 'c'"),
        ("id,landmarks\na,1\nb,\n", "line 2: landmarks must be '<landmark_id> <confidence>'"),
        ("id,landmarks\na,1 0.5 3\nb,\n", "line 2: landmarks must be"),
        ("id,landmarks\na,x 0.5\nb,\n", "line 2: landmarks must be '<integer id> <number>'"),
        ("id,landmarks\na,1 high\nb,\n", "line 2: landmarks must be '<integer id> <number>'"),
        ("id,landmarks\na,1 nan\nb,\n", "line 2: confidence is not a finite number"),
        ("id,landmarks\na,1 inf\nb,\n", "line 2: confidence is not a finite number"),
        ("id,landmarks\na,1 0.5,extra\nb,\n", "line 2: expected 2 fields"),
        ("id,landmarks\n,1 0.5\nb,\n", "line 2: empty id"),
        ("", "empty file"),
    ],
)
def test_recognition_validator_rejects(tmp_path, text, message):
    path = tmp_path / "sub.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        validate_recognition_submission(str(path), ["a", "b"])


@pytest.mark.parametrize(
    "text, message",
    [
        ("id,landmarks\na,i1\n", "header must be id,images"),
        ("id,images\na,i1\n", "expected ids are missing, e.g. 'b'"),
        ("id,images\na,i1\nb,\nx,\n", "line 4: unknown id 'x'"),
        ("id,images\na,i1 i9\nb,\n", "line 2: query 'a' lists unknown index id 'i9'"),
        ("id,images\na," + " ".join(["i1"] * 101) + "\nb,\n", "line 2: 101 images, at most 100"),
    ],
)
def test_retrieval_validator_rejects(tmp_path, text, message):
    path = tmp_path / "sub.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        validate_retrieval_submission(str(path), ["a", "b"], ["i1", "i2"])


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match="file not found: .*nope.csv"):
        read_recognition_submission(str(tmp_path / "nope.csv"))
