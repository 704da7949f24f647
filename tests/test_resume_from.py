"""Continuing a run in a new session from a read-only copy of its folder (`resume_from`).

These tests copy hand-made run folders (any files: the copy does not read checkpoints). A real
training run killed after its first epoch and continued from a read-only copy of its folder (as
Kaggle attaches a dataset) is tests/test_training.py's killed-run test, which shares its one
killed run with the in-place resume.
"""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import pytest
from fs_helpers import files_under
from training_helpers import read_only as _read_only
from training_helpers import snapshot as _snapshot

from landmarks.errors import ConfigError
from landmarks.training import resume_from
from landmarks.training.resume_from import continue_from

HISTORY = "epoch,step,loss\n" + "".join(f"{e},{4 * e},1.0\n" for e in range(1, 10))


def _history(epochs: int) -> str:
    return "\n".join(HISTORY.splitlines()[: epochs + 1]) + "\n"


def _run_folder(folder: Path, epochs: int = 2) -> Path:
    """A run folder as `train` leaves it (file contents are placeholders)."""
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "checkpoint").write_text(f'model_checkpoint_path: "ckpt-{epochs}"\n')
    (folder / "checkpoints" / f"ckpt-{epochs}.index").write_bytes(os.urandom(64))
    (folder / "config.yaml").write_text("run_name: run\n")
    (folder / "history.csv").write_text(_history(epochs))
    (folder / "embed_model.keras").write_bytes(os.urandom(256))
    (folder / ".run.lock").write_text('{"pid": 1}')  # the killed session's lock
    (folder / "dataset-metadata.json").write_text("{}")  # from publishing it
    (folder / "embeddings").mkdir()
    (folder / "embeddings" / "test.npz").write_bytes(b"cache")
    return folder


def test_a_read_only_run_folder_is_copied_into_an_empty_working_folder(tmp_path):
    source = _run_folder(tmp_path / "input" / "run", epochs=2)
    _read_only(source)
    before = _snapshot(source)
    run_dir = tmp_path / "working" / "run"
    account = continue_from(str(source), str(run_dir), log=lambda _: None)

    assert "copied 5 files" in account and "epoch 2" in account
    copied = files_under(run_dir)
    assert copied == [
        "checkpoints/checkpoint",
        "checkpoints/ckpt-2.index",
        "config.yaml",
        "embed_model.keras",
        "history.csv",
    ]
    for name in copied:
        assert (run_dir / name).read_bytes() == (source / name).read_bytes()
        assert (run_dir / name).stat().st_mode & stat.S_IWUSR, f"{name} is not writable"
    (run_dir / "checkpoints" / "ckpt-3.index").write_bytes(b"")  # the folder takes new files
    assert _snapshot(source) == before


def test_a_working_folder_with_checkpoints_is_kept(tmp_path):
    source = _run_folder(tmp_path / "input" / "run", epochs=2)
    run_dir = _run_folder(tmp_path / "working" / "run", epochs=3)
    before = _snapshot(run_dir)
    account = continue_from(str(source), str(run_dir), log=lambda _: None)
    assert "already holds checkpoints (epoch 3)" in account
    assert _snapshot(run_dir) == before


def test_a_working_folder_behind_the_source_is_an_error(tmp_path):
    source = _run_folder(tmp_path / "input" / "run", epochs=4)
    run_dir = _run_folder(tmp_path / "working" / "run", epochs=1)
    with pytest.raises(ConfigError, match=r"at epoch 1, behind .*input/run at epoch 4"):
        continue_from(str(source), str(run_dir))


def test_a_folder_that_failed_before_its_first_checkpoint_is_filled(tmp_path):
    source = _run_folder(tmp_path / "input" / "run", epochs=2)
    run_dir = tmp_path / "working" / "run"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("written by a run that died at once\n")
    (run_dir / ".run.lock").write_text("held by this session")
    continue_from(str(source), str(run_dir), log=lambda _: None)
    assert (run_dir / "config.yaml").read_text() == "run_name: run\n"
    assert (run_dir / ".run.lock").read_text() == "held by this session"


def test_a_copy_killed_half_way_leaves_no_checkpoints_and_is_redone(tmp_path, monkeypatch):
    source = _run_folder(tmp_path / "input" / "run", epochs=2)
    run_dir = tmp_path / "working" / "run"
    copies = []
    real_copy = resume_from._copy

    def dying_copy(path, target):
        if len(copies) == 3:
            raise KeyboardInterrupt("session ended")
        copies.append(path)
        real_copy(path, target)

    monkeypatch.setattr(resume_from, "_copy", dying_copy)
    with pytest.raises(KeyboardInterrupt):
        continue_from(str(source), str(run_dir))
    assert not (run_dir / "checkpoints").exists()
    monkeypatch.setattr(resume_from, "_copy", real_copy)
    continue_from(str(source), str(run_dir), log=lambda _: None)
    assert (run_dir / "checkpoints" / "ckpt-2.index").exists()
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".resume-")]


def test_a_zipped_sub_folder_is_extracted(tmp_path):
    source = tmp_path / "input" / "run"
    source.mkdir(parents=True)
    (source / "config.yaml").write_text("run_name: run\n")
    with zipfile.ZipFile(source / "checkpoints.zip", "w") as archive:
        archive.writestr("checkpoint", 'model_checkpoint_path: "ckpt-1"\n')
        archive.writestr("ckpt-1.index", "index")
    run_dir = tmp_path / "working" / "run"
    continue_from(str(source), str(run_dir), log=lambda _: None)
    assert (run_dir / "checkpoints" / "ckpt-1.index").read_text() == "index"
    assert not (run_dir / "checkpoints.zip").exists()


def test_bad_sources_and_destinations_are_named(tmp_path):
    with pytest.raises(ConfigError, match="resume_from: .*absent not found"):
        continue_from(str(tmp_path / "absent"), str(tmp_path / "run"))
    (tmp_path / "records").mkdir()
    (tmp_path / "records" / "train-00000-of-00001.tfrec").write_bytes(b"")
    with pytest.raises(ConfigError, match="records is not a run folder"):
        continue_from(str(tmp_path / "records"), str(tmp_path / "run"))
    with pytest.raises(ConfigError, match="gs://bucket/run is remote"):
        continue_from(str(tmp_path / "records"), "gs://bucket/run")
