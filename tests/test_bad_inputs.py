"""Bad input to evaluate, infer, train and the config: one line `error: ...` naming the thing,
exit status 2, nothing half-written (issue 16 W1-W4, W7-W9 and the nearest-key hint).

The record builder's bad inputs are in test_records_bad_inputs.py, damaged records in
test_record_check.py, run-folder ownership in test_run_folder.py; all use the mini-landmarks
fixtures of conftest.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from landmarks.cli import main

RECOGNITION = "id,landmarks,Usage\nq1,10,Public\nq2,20,Private\nq3,,Public\n"


def _run(capsys, *args) -> tuple[int, str, str]:
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _evaluate(capsys, submission, solution, *extra):
    return _run(
        capsys, "evaluate", "--task", "recognition", "--submission", submission, "--solution",
        solution, *extra,
    )  # fmt: skip


@pytest.fixture
def solution(tmp_path) -> Path:
    path = tmp_path / "solution.csv"
    path.write_text(RECOGNITION)
    return path


def test_a_binary_file_or_a_folder_as_submission(tmp_path, solution, capsys):  # W1
    binary = tmp_path / "model.keras"
    binary.write_bytes(bytes(range(128, 256)) * 4)
    status, _, error = _evaluate(capsys, binary, solution)
    assert (
        status == 2
        and error
        == f"error: {binary}: not a UTF-8 text file (byte 0 is 0x80); is it the right file?\n"
    )
    status, _, error = _evaluate(capsys, tmp_path, solution)
    assert status == 2 and error == f"error: {tmp_path}: is a folder, not a file\n"


def test_a_byte_order_mark_is_read_through(tmp_path, capsys):  # W2
    bom = "\ufeff"
    submission = tmp_path / "s.csv"
    submission.write_text(f"{bom}id,landmarks\nq1,10 0.9\nq2,20 0.8\nq3,\n", encoding="utf-8")
    solution = tmp_path / "sol.csv"
    solution.write_text(bom + RECOGNITION, encoding="utf-8")
    status, out, _ = _evaluate(capsys, submission, solution, "--json")
    assert status == 0 and json.loads(out.splitlines()[-1])["gap"] == 1.0


def test_missing_and_foreign_predictions_are_said(tmp_path, solution, capsys):  # W3
    header_only = tmp_path / "empty.csv"
    header_only.write_text("id,landmarks\n")
    status, out, _ = _evaluate(capsys, header_only, solution, "--json")
    assert status == 0
    assert "note: 3 solution queries, 0 predicted: the 3 missing ones score 0" in out
    scores = json.loads(out.splitlines()[-1])
    assert scores["gap"] == 0.0 and scores["predicted"] == 0
    foreign = tmp_path / "foreign.csv"
    foreign.write_text("id,landmarks\nx1,10 0.9\nq1,10 0.5\n")
    status, out, _ = _evaluate(capsys, foreign, solution)
    assert "3 solution queries, 1 predicted" in out
    assert "note: 1 submission ids are not among the solution's scored queries" in out
    assert "gap: 0.500000" in out  # q1 right at rank 1 of the 2 landmark queries: 1/2


def _unwritable(tmp_path) -> Path:
    """A folder path the OS refuses to create or write: root ignores file modes, so for root a
    path under /sys (the kernel refuses new entries there), else a folder without write rights."""
    import os

    if os.geteuid() == 0:
        return Path("/sys/landmarks-test-out")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder / "out"


@pytest.mark.parametrize("case", ["file", "under-a-file", "unwritable"])
def test_prepare_out_that_cannot_be_a_folder(mini_landmarks, tmp_path, capsys, case):  # W4
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    out = {"file": a_file, "under-a-file": a_file / "records", "unwritable": _unwritable(tmp_path)}
    status, _, error = _run(
        capsys, "prepare", "--data-dir", mini_landmarks, "--split", "test", "--out", out[case],
        "--quiet",
    )  # fmt: skip
    expected = {
        "file": f"error: records folder (--out) {a_file}: is a file, not a folder\n",
        "under-a-file": f"error: records folder (--out) {a_file / 'records'}: {a_file} is a file, "
        "so no folder can be made under it\n",
        "unwritable": f"error: records folder (--out) {out['unwritable']}: cannot write there (",
    }
    assert status == 2 and error.startswith(expected[case])


def test_a_shard_missing_from_the_folder_is_named_before_training(
    mini_records, tmp_path, capsys
):  # W7
    records = Path(shutil.copytree(mini_records, tmp_path / "records"))
    manifest = json.loads((records / "manifest.json").read_text())
    lost = manifest["splits"]["train"]["shards"][1]["file"]
    (records / lost).unlink()
    config = tmp_path / "c.yaml"
    config.write_text(f"records_dir: {records}\noutput_dir: {tmp_path}\n")
    status, out, error = _run(capsys, "train", "--config", config)
    assert status == 2
    assert f"manifest.json lists 2 train shards but 1 are missing ({lost})" in error
    assert "training on" not in out  # stopped before anything was built


@pytest.fixture
def infer_config(mini_landmarks, mini_records, tmp_path) -> Path:
    config = tmp_path / "c.yaml"
    config.write_text(
        f"data_dir: {mini_landmarks}\nrecords_dir: {mini_records}\noutput_dir: {tmp_path}\n"
        "image_size: 32\n"
    )
    return config


@pytest.mark.parametrize("kind", ["yaml", "text", "truncated", "folder"])
def test_a_model_path_that_is_not_a_keras_model(infer_config, tmp_path, capsys, kind):  # W8
    import keras

    path = tmp_path / {"yaml": "config.yaml", "folder": "run"}.get(kind, "embed_model.keras")
    if kind == "yaml":
        path.write_text("image_size: 64\n")
    elif kind == "text":
        path.write_text("not a model\n")
    elif kind == "folder":
        path.mkdir()
    else:
        model = keras.Sequential(
            [keras.Input((None, None, 3)), keras.layers.GlobalAveragePooling2D()]
        )
        model.save(str(path))
        path.write_bytes(path.read_bytes()[:300])
    out = tmp_path / "s.csv"
    status, _, error = _run(
        capsys, "infer", "--config", infer_config, "--task", "retrieval", "--out", out,
        "--set", f"model_path={path}",
    )  # fmt: skip
    assert status == 2 and "not found" not in error.lower()
    assert f"model_path {path}: " in error
    assert {"yaml": "not a Keras model file;", "text": "not a Keras model file;",
            "truncated": "(it starts like one: truncated?)", "folder": "is a folder"}[kind] in error  # fmt: skip
    assert not out.exists()


@pytest.mark.parametrize("kind", ["folder", "unwritable"])
def test_infer_out_is_checked_before_embedding(infer_config, tmp_path, capsys, kind):  # W9
    folder = tmp_path / "submissions"
    folder.mkdir()
    out = folder if kind == "folder" else _unwritable(tmp_path) / "s.csv"
    status, printed, error = _run(
        capsys, "infer", "--config", infer_config, "--task", "retrieval", "--out", out
    )
    assert status == 2 and "embedding" not in printed
    expected = {
        "folder": f"error: submission (--out) {out}: is a folder; give a file name",
        "unwritable": f"error: submission (--out) {out}: cannot write there (",
    }
    assert error.startswith(expected[kind])


def test_unknown_key_suggests_the_nearest(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("epoch: 3\n")
    status, _, error = _run(capsys, "train", "--config", config)
    assert status == 2 and "unknown config key 'epoch' (did you mean epochs?)" in error
