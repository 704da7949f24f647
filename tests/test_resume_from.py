"""Continuing a run in a new session from a read-only copy of its folder (`resume_from`).

The fast tests copy hand-made run folders (any files: the copy does not read checkpoints); the
slow one kills a real training run after its first epoch, makes a read-only copy of its folder
(as Kaggle attaches a dataset), and trains on from it in an empty working folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import zipfile
from pathlib import Path

import pytest
from training_helpers import STEPS, checkpoint_numbers, tiny, train_until_first_checkpoint_then_kill

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


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """relative path -> (sha256, mode) of every file: what a read-only source must keep."""
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _read_only(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def test_a_read_only_run_folder_is_copied_into_an_empty_working_folder(tmp_path):
    source = _run_folder(tmp_path / "input" / "run", epochs=2)
    _read_only(source)
    before = _snapshot(source)
    run_dir = tmp_path / "working" / "run"
    account = continue_from(str(source), str(run_dir), log=lambda _: None)

    assert "copied 5 files" in account and "epoch 2" in account
    copied = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
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


# --- a real run, killed after an epoch, continued from a read-only copy -------------------------


@pytest.mark.slow
def test_a_killed_run_continues_from_a_read_only_copy_in_an_empty_folder(
    mini_records, tmp_path, capsys
):
    from landmarks.training.callbacks import read_history
    from landmarks.training.trainer import train

    epochs = 3
    first = tiny(mini_records, tmp_path / "session1", epochs=epochs)
    config_path = tmp_path / "session1.yaml"
    first.save(str(config_path))
    killed_dir = tmp_path / "session1" / "run"
    killed_at = train_until_first_checkpoint_then_kill(config_path, killed_dir)  # time is up
    assert 1 <= killed_at < epochs

    attached = tmp_path / "input" / "previous-session"
    shutil.copytree(killed_dir, attached)
    _read_only(attached)
    before = _snapshot(attached)

    second = tiny(mini_records, tmp_path / "session2", epochs=epochs, resume_from=str(attached))
    run_dir = Path(train(second, verbose=0))
    printed = capsys.readouterr().out
    assert "copied" in printed and str(attached) in printed
    assert f"epoch {killed_at} done, step {killed_at * STEPS}" in printed
    rows = read_history(str(run_dir / "history.csv"))
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    assert [int(r["step"]) for r in rows] == [STEPS * e for e in range(1, epochs + 1)]
    assert max(checkpoint_numbers(run_dir)) == epochs
    assert (run_dir / "embed_model.keras").is_file()
    assert _snapshot(attached) == before  # the attached copy is never written
