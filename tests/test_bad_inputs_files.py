"""Damaged, hostile or misplaced files, and folders a command must not destroy (issue 20: D3, D4,
D5 and the file tracebacks): one line `error: ...` naming the file, exit status 2, nothing of the
user's lost. Training's bad inputs (divergence, checkpoints, resume) are in
test_bad_inputs_training.py; the earlier rounds in test_bad_inputs.py and
test_records_bad_inputs.py. All use the mini-landmarks fixtures of conftest.py.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from landmarks.cli import main
from landmarks.data.record_parts import join_record_parts
from landmarks.data.tfrecords import read_label_map
from landmarks.errors import ConfigError, DataError


def _run(capsys, *args) -> tuple[int, str, str]:
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# --- D3: joining record parts into one of the parts -----------------------------------------


@pytest.mark.parametrize("alias", ["same", "link", "dotted"])
def test_joining_parts_into_one_of_them_is_refused_untouched(tmp_path, alias):
    parts = []
    for task in (0, 1):
        part = tmp_path / f"part{task}"
        (part / "_build").mkdir(parents=True)
        (part / f"train-0000{task}-of-00002.tfrec").write_bytes(b"records %d" % task)
        parts.append(part)
    out = {
        "same": parts[0],
        "link": tmp_path / "alias",
        "dotted": tmp_path / "part1" / ".." / "part0",
    }[alias]
    if alias == "link":
        out.symlink_to(parts[0])
    before = sorted(p.name for p in parts[0].iterdir())
    with pytest.raises(ConfigError, match=f"the joined folder {out} is the part {parts[0]}"):
        join_record_parts([str(p) for p in parts], str(out))
    shard = parts[0] / "train-00000-of-00002.tfrec"
    assert not shard.is_symlink() and shard.read_bytes() == b"records 0"
    assert sorted(p.name for p in parts[0].iterdir()) == before


# --- D5: label_map.csv --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rows, message",
    [
        (  # every label listed twice, the second time with other landmark ids
            ["7,0,3", "9,1,2", "107,0,3", "109,1,2"],
            "duplicate labels: 0 at rows 2, 4; 1 at rows 3, 5",
        ),
        (["7,0,3", "7,1,2"], "duplicate landmark_ids: 7 at rows 2, 3"),
        (["7,0,3", "9,2,2"], "labels must be 0..1 (one per row); not: row 3 (2)"),
        (["7,0,3", "9,1,-2"], "column 'count' must hold integer labels >= 0; negative: row 3"),
        (["7,0,3", "9,1,2.5"], "column 'count' must hold integer labels >= 0; not integers: row 3"),
    ],
)
def test_a_label_map_that_is_not_one_row_per_class_is_named(tmp_path, rows, message):
    path = tmp_path / "label_map.csv"
    path.write_text("landmark_id,label,count\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError) as raised:
        read_label_map(str(tmp_path))
    assert str(raised.value).startswith(f"{path}: ") and message in str(raised.value)


def test_a_valid_label_map_reads_in_any_row_order(tmp_path):
    (tmp_path / "label_map.csv").write_text("landmark_id,label,count\n9,1,2\n7,0,3\n")
    table = read_label_map(str(tmp_path))
    assert table.to_dict("list") == {"landmark_id": [9, 7], "label": [1, 0], "count": [2, 3]}


# --- D4: export --out -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, tiny_models, mini_records) -> Path:
    """A finished run folder: a tiny embed_model.keras and the resolved config.yaml."""
    import shutil

    from landmarks.config import Config

    run = tmp_path_factory.mktemp("runs") / "run"
    run.mkdir()
    shutil.copyfile(tiny_models[0], run / "embed_model.keras")
    config = {"records_dir": str(mini_records), "output_dir": str(run.parent), "run_name": "run"}
    Config.from_dict(config).save(str(run / "config.yaml"))
    return run


def _export(capsys, run_folder, out, *extra):
    return _run(capsys, "export", "--run", run_folder, "--out", out, *extra)


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_export_never_replaces_files_that_only_share_an_exports_names(run_folder, tmp_path, capsys):
    out = tmp_path / "model"
    (out / "embeddings").mkdir(parents=True)
    (out / "config.yaml").write_text("mine: 1\n")
    (out / "embeddings" / "precious_results.bin").write_bytes(b"\x00precious")
    before = _tree(out)
    status, _, error = _export(capsys, run_folder, out)
    assert status == 2 and error == (
        f"error: export --out {out}: the folder is not empty and not an earlier export (no "
        "export.json): it holds config.yaml, embeddings, embeddings/precious_results.bin; "
        "export into an empty folder or an earlier export\n"
    )
    assert _tree(out) == before and sorted(os.listdir(tmp_path)) == ["model"]


def test_export_replaces_an_earlier_export_but_not_what_was_added_to_it(
    run_folder, tmp_path, capsys
):
    out = tmp_path / "model"
    assert _export(capsys, run_folder, out)[0] == 0
    (out / "dataset-metadata.json").write_text("{}")  # `kaggle publish` leaves it
    (out / "config.yaml").write_text("edited: 1\n")
    assert _export(capsys, run_folder, out)[0] == 0  # an earlier export: replaced whole
    assert "edited" not in (out / "config.yaml").read_text()
    exported = ["config.yaml", "embed_model.keras", "export.json", "label_map.csv"]
    assert sorted(os.listdir(out)) == exported

    (out / "embeddings").mkdir()
    (out / "embeddings" / "precious_results.bin").write_bytes(b"\x00precious")
    before = _tree(out)
    status, _, error = _export(capsys, run_folder, out)
    assert status == 2 and error.startswith(
        f"error: export --out {out}: an earlier export, but it also holds files no export "
        "wrote: embeddings, embeddings/precious_results.bin; "
    )
    assert _tree(out) == before


def _dead_pid() -> int:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_killed_exports_staging_folder_is_removed_only_when_provably_ours(
    run_folder, tmp_path, capsys
):
    import json
    import socket

    def staging(name: str, pid: int | None) -> Path:
        folder = tmp_path / name
        (folder / "embeddings").mkdir(parents=True)
        (folder / "embeddings" / "train.npz").write_bytes(b"\x00" * 4096)
        if pid is not None:
            mark = {"landmarks_export": 1, "files": [], "host": socket.gethostname(), "pid": pid}
            (folder / "export.json").write_text(json.dumps(mark))
        return folder

    killed = staging(".model.export-0123abcd", _dead_pid())
    running = staging(".model.export-4567abcd", os.getpid())  # an export still at work
    unmarked = staging(".model.export-89abcdef", None)  # not provably ours
    other = staging(".other.export-0123abcd", _dead_pid())  # another export's
    status, out, _ = _export(capsys, run_folder, tmp_path / "model")
    assert status == 0
    assert f"removed {killed}: left by an export that was stopped before it finished" in out
    assert not killed.exists()
    assert running.exists() and unmarked.exists() and other.exists()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_export_that_the_disk_refuses_keeps_the_earlier_export(
    run_folder, tmp_path, capsys, monkeypatch, code
):
    from landmarks.inference import export

    out = tmp_path / "model"
    assert _export(capsys, run_folder, out)[0] == 0
    before = _tree(out)

    def refused(*_args, **_kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(export, "_write_mark", refused)  # the first write into the staging folder
    status, _, error = _export(capsys, run_folder, out)
    assert status == 2 and error == (
        f"error: export --out {out}: cannot write ({os.strerror(code)}); an earlier export "
        "there is left as it was\n"
    )
    assert _tree(out) == before and sorted(os.listdir(tmp_path)) == ["model"]


@pytest.fixture
def small_disk(tmp_path):
    """A 512 KiB tmpfs at tmp_path/disk (unmounted afterwards); skipped where this process may
    not mount (not root, or a container without CAP_SYS_ADMIN)."""
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def _fill(disk: Path) -> None:
    """Fill `disk` to the last byte."""
    with pytest.raises(OSError) as full:
        with open(disk / "filler", "wb", buffering=0) as handle:
            while True:
                handle.write(b"\x00" * 4096)
    assert full.value.errno == errno.ENOSPC


def test_export_onto_a_real_full_or_read_only_disk(run_folder, small_disk, capsys):
    import subprocess

    out = small_disk / "model"
    assert _export(capsys, run_folder, out)[0] == 0
    before = _tree(out)
    _fill(small_disk)
    status, _, error = _export(capsys, run_folder, out)
    assert status == 2 and error.startswith(f"error: export --out {out}: cannot write (")
    assert "\n" not in error.rstrip("\n")
    assert _tree(out) == before and sorted(os.listdir(small_disk)) == ["filler", "model"]

    (small_disk / "filler").unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    status, _, error = _export(capsys, run_folder, out)
    assert status == 2 and error == (
        f"error: export --out {out}: cannot write (Read-only file system); an earlier export "
        "there is left as it was\n"
    )
    assert _tree(out) == before


# --- prepare onto a full disk -----------------------------------------------------------------


def _prepare(capsys, mini_landmarks, out) -> tuple[int, str]:
    """Exit status and the last line on stderr (after the progress bar's)."""
    status, _, error = _run(
        capsys, "prepare", "--data-dir", mini_landmarks, "--split", "train", "--out", out,
        "--shards", "2", "--image-size", "64",
    )  # fmt: skip
    return status, error.splitlines()[-1]


def _complete_shards_only(out: Path) -> None:
    """Every shard under its final name has the receipt of a complete shard; no partial file."""

    assert not list(out.glob("*.incomplete"))
    for shard in out.glob("*.tfrec"):
        receipt = json.loads((out / "_build" / f"{shard.name}.json").read_text())
        assert receipt["bytes"] == shard.stat().st_size


def test_prepare_onto_a_full_disk_is_one_line(mini_landmarks, tmp_path, capsys, monkeypatch):
    import tensorflow as tf

    from landmarks.data import shard_writer

    real_writer = tf.io.TFRecordWriter

    class FillingWriter(real_writer):
        """Writes two records, then finds the disk full (as TensorFlow reports it)."""

        def __init__(self, path, *args, **kwargs):
            super().__init__(path, *args, **kwargs)
            self.path, self.written = path, 0

        def write(self, record):
            if self.written == 2:
                raise tf.errors.ResourceExhaustedError(
                    None, None, f"{self.path}; No space left on device"
                )
            super().write(record)
            self.written += 1

    monkeypatch.setattr(shard_writer.tf.io, "TFRecordWriter", FillingWriter)
    out = tmp_path / "records"
    status, error = _prepare(capsys, mini_landmarks, out)
    assert status == 2 and error == (
        f"error: {out / 'train-00000-of-00002.tfrec'}: cannot write (No space left on device); "
        "the shards already complete are kept: make room and rerun the same command"
    )
    assert not list(out.glob("*.tfrec*"))


def test_prepare_onto_a_real_full_disk(mini_landmarks, small_disk, capsys):
    out = small_disk / "records"
    status, error = _prepare(capsys, mini_landmarks, out)
    assert status == 2 and error.startswith(f"error: {out}")
    assert "cannot write (No space left on device); " in error
    _complete_shards_only(out)


# --- embeddings .npz: attached train embeddings and the run's cache ---------------------------


def _embeddings_file(path: Path, fingerprint) -> bytes:
    """An embeddings .npz of 3 vectors with `fingerprint`; returns its bytes."""
    import numpy as np

    from landmarks.inference.embedding import Embeddings, save_embeddings

    vectors = np.eye(3, 4, dtype=np.float32)
    save_embeddings(str(path), Embeddings(["a", "b", "c"], vectors, np.arange(3)))
    if fingerprint is not None:  # stored as save_embeddings stores it, whatever its JSON type
        with np.load(path) as archive:
            arrays = dict(archive)
        np.savez(path, **arrays, fingerprint=np.asarray(json.dumps(fingerprint)))
    return path.read_bytes()


FINGERPRINT = {"model_sha256": "ab", "image_size": 64, "tta_flip": False, "tta_scales": [1.0]}


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, -22])
def test_cut_off_train_embeddings_are_named(tmp_path, keep):
    from landmarks.inference.fingerprint import attached_train_embeddings

    path = tmp_path / "train.npz"
    data = _embeddings_file(path, FINGERPRINT)
    path.write_bytes(data[: int(len(data) * keep)] if keep > 0 else data[:keep])
    with pytest.raises(DataError, match=f"^{path}: not an embeddings file, or cut off \\("):
        attached_train_embeddings(str(path), FINGERPRINT, log=lambda _: None)


def test_train_embeddings_whose_fingerprint_is_not_an_object_are_named(tmp_path):
    from landmarks.inference.fingerprint import attached_train_embeddings

    path = tmp_path / "train.npz"
    _embeddings_file(path, ["model_sha256", "ab"])
    with pytest.raises(DataError) as raised:
        attached_train_embeddings(str(path), FINGERPRINT, log=lambda _: None)
    assert str(raised.value) == (
        f'{path}: its fingerprint is not a JSON object but ["model_sha256", "ab"]; '
        "export the train embeddings again"
    )


def test_a_cut_off_cached_split_is_embedded_again_saying_so(tmp_path):

    from landmarks.inference import cache

    path = tmp_path / "test.npz"
    data = _embeddings_file(path, None)
    (tmp_path / "test.json").write_text(json.dumps(FINGERPRINT))
    assert len(cache.load_cached(str(path), FINGERPRINT, log=pytest.fail)) == 3
    path.write_bytes(data[: len(data) // 2])
    said = []
    assert cache.load_cached(str(path), FINGERPRINT, log=said.append) is None
    assert len(said) == 1 and said[0].startswith(f"{path}: not an embeddings file, or cut off (")
    assert said[0].endswith("; embedding again")


# --- manifest.json ------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["cut", "list", "splits"])
def test_a_damaged_manifest_is_named(mini_records, tmp_path, damage):
    import shutil

    from landmarks.data.tfrecords import list_shards, merge_manifests

    records = tmp_path / "records"
    shutil.copytree(mini_records, records)
    manifest = records / "manifest.json"
    text = manifest.read_text()
    manifest.write_text(
        {"cut": text[: len(text) // 2], "list": "[1, 2]", "splits": '{"splits": {"train": 3}}'}[
            damage
        ]
    )
    expected = {
        "cut": f"{manifest}: not valid JSON, cut off or damaged (",
        "list": f"{manifest}: expected a JSON object, got [1, 2]; ",
        "splits": f'{manifest}: not a records manifest (no valid "splits"); ',
    }[damage]
    advice = f"remove it and run `python -m landmarks merge-manifests --out {records}`"
    with pytest.raises(DataError) as raised:
        list_shards(str(records), "train")
    assert str(raised.value).startswith(expected) and advice in str(raised.value)
    if damage != "splits":  # a merge reads it too (and only adds to its "splits")
        with pytest.raises(DataError, match=f"^{manifest}: "):
            merge_manifests(str(records))
    manifest.unlink()  # as the message says: the build's task manifests write it again
    merge_manifests(str(records))
    assert len(list_shards(str(records), "train")) == 2


# --- evaluate: CSV files the csv module refuses -------------------------------------------------


def test_a_field_over_the_csv_limit_is_named_with_its_line(tmp_path, capsys):
    solution = tmp_path / "solution.csv"
    solution.write_text("id,landmarks,Usage\nq1,10,Public\n")
    submission = tmp_path / "s.csv"
    submission.write_text("id,landmarks\nq1,10 0.5\nq2," + "1" * 131_073 + "\n")
    status, _, error = _run(
        capsys, "evaluate", "--task", "recognition", "--submission", submission,
        "--solution", solution,
    )  # fmt: skip
    assert status == 2 and error == (
        f"error: {submission}: line 3: not a readable CSV row (field larger than field limit "
        "(131072))\n"
    )


def test_a_solution_with_carriage_return_line_ends_is_read(tmp_path, capsys):
    lines = ["id,landmarks,Usage", "q1,10,Public", "q2,20,Private", "q3,,Public"]
    submission = tmp_path / "s.csv"
    submission.write_text("id,landmarks\nq1,10 0.9\nq2,30 0.8\nq3,\n")
    scores = []
    for end in ("\n", "\r", "\r\n"):
        solution = tmp_path / "solution.csv"
        solution.write_bytes(end.join(lines).encode() + end.encode())
        status, out, _ = _run(
            capsys, "evaluate", "--task", "recognition", "--submission", submission,
            "--solution", solution, "--json",
        )  # fmt: skip
        assert status == 0
        result = json.loads(out.splitlines()[-1])
        scores.append((result["gap"], result["queries"], result["landmark_queries"]))
    # q1 right at rank 1 of 2 predictions; 2 queries with a landmark: GAP = (1/2)(1/1) = 0.5
    assert scores == [(0.5, 3, 2)] * 3


# --- model files --------------------------------------------------------------------------------


def _rewritten(source: Path, target: Path, edit=None, declared: int | None = None) -> Path:
    """A copy of the .keras archive `source` whose config.json is passed through `edit`
    (config dict -> None), or whose central directory declares `declared` bytes for it."""
    import zipfile

    with zipfile.ZipFile(source) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    if edit:
        edit(config)
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    if declared is not None:  # uncompressed size: offset 24 of config.json's central entry
        data = bytearray(target.read_bytes())
        entry = data.rindex(b"config.json") - 46  # the central directory comes last
        assert data[entry : entry + 4] == b"PK\x01\x02"
        data[entry + 24 : entry + 28] = declared.to_bytes(4, "little")
        target.write_bytes(bytes(data))
    return target


def _activation(module: str, name: str):
    """An edit that makes the model's last layer name `module.name` as its activation."""

    def edit(config):
        layer = config["config"]["layers"][-1]["config"]
        layer["activation"] = {
            "module": module,
            "class_name": "function",
            "config": name,
            "registered_name": "function",
        }

    return edit


def _layer(module: str, name: str):
    def edit(config):
        config["config"]["layers"][-1].update(module=module, class_name=name)

    return edit


@pytest.mark.parametrize(
    "edit, named",
    [
        (_activation("os", "system"), "os.system"),
        (_activation("builtins", "eval"), "builtins.eval"),
        (_layer("os", "system"), "os.system"),
        (_layer("builtins", "eval"), "builtins.eval"),
    ],
)
def test_a_model_naming_foreign_code_is_refused_naming_it(tiny_models, tmp_path, edit, named):
    from landmarks.inference.model_file import load_embed_model

    path = _rewritten(tiny_models[0], tmp_path / "hostile.keras", edit)
    with pytest.raises(ConfigError) as raised:
        load_embed_model(str(path))
    assert str(raised.value) == (
        f"model_path {path}: its config names objects outside Keras and landmarks: {named} "
        "(unregistered functions or classes, or a hostile file); none of them was run"
    )


def test_a_legacy_h5_with_an_unregistered_function_or_layer_is_named(tmp_path):
    import keras

    from landmarks.inference.model_file import load_embed_model

    def doubled_relu(x):
        return keras.ops.relu(x) * 2

    class Unregistered(keras.layers.Layer):
        def call(self, x):
            return x

    head = [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4)]
    conv = keras.layers.Conv2D(2, 3, activation=doubled_relu)
    function = keras.Sequential([keras.Input((None, None, 3)), conv, *head])
    function.save(str(tmp_path / "function.h5"))
    with pytest.raises(ConfigError, match="outside Keras and landmarks: builtins.doubled_relu "):
        load_embed_model(str(tmp_path / "function.h5"))
    head = [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4)]
    layer = keras.Sequential([keras.Input((None, None, 3)), Unregistered(), *head])
    layer.save(str(tmp_path / "layer.h5"))
    with pytest.raises(ConfigError, match=f"^model_path {tmp_path / 'layer.h5'}: .*'Unregistered'"):
        load_embed_model(str(tmp_path / "layer.h5"))


def test_a_zip_bomb_config_is_refused_by_its_declared_size(tiny_models, tmp_path, monkeypatch):
    import keras

    from landmarks.inference.model_file import MAX_CONFIG_BYTES, load_embed_model

    path = _rewritten(tiny_models[0], tmp_path / "bomb.keras", declared=3 << 30)

    def never(*_args, **_kwargs):
        raise AssertionError("keras read the archive")

    monkeypatch.setattr(keras.saving, "load_model", never)
    with pytest.raises(ConfigError) as raised:
        load_embed_model(str(path))
    assert str(raised.value).startswith(
        f"model_path {path}: its config.json would inflate to {3 << 30:,} bytes (over "
        f"{MAX_CONFIG_BYTES:,}; "
    )


def test_a_model_of_the_wrong_shape_is_named(tmp_path):
    import keras

    from landmarks.inference.model_file import check_embed_model, load_embed_model

    layers = [keras.Input((64, 64, 3)), keras.layers.Conv2D(2, 3), keras.layers.Flatten()]
    fixed = keras.Sequential(layers)
    fixed.save(str(tmp_path / "fixed.keras"))
    model = load_embed_model(str(tmp_path / "fixed.keras"), [64])  # its own size is fine
    with pytest.raises(ConfigError) as raised:
        check_embed_model(model, "fixed.keras", [32, 64, 96])
    assert str(raised.value) == (
        "model_path fixed.keras: its input is fixed to 64x64 pixels, but this run embeds at "
        "32x32, 96x96 (image_size and tta_scales); set image_size: 64 or use a model built for "
        "that size"
    )
    feature_map = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(4, 3)])
    feature_map.save(str(tmp_path / "map.keras"))
    with pytest.raises(ConfigError) as raised:
        load_embed_model(str(tmp_path / "map.keras"))
    assert str(raised.value).startswith(
        f"model_path {tmp_path / 'map.keras'}: gives [B, None, None, 4], not one embedding per "
        "image [B, D]"
    )


def test_infer_with_a_model_fixed_to_another_size_is_one_line(
    mini_landmarks, mini_records, tmp_path, capsys
):
    import keras

    model = tmp_path / "fixed.keras"
    keras.Sequential([keras.Input((64, 64, 3)), keras.layers.GlobalAveragePooling2D()]).save(
        str(model)
    )
    config = tmp_path / "c.yaml"
    config.write_text(
        f"data_dir: {mini_landmarks}\nrecords_dir: {mini_records}\noutput_dir: {tmp_path}\n"
        f"image_size: 32\nmodel_path: {model}\n"
    )
    out = tmp_path / "s.csv"
    status, _, error = _run(
        capsys, "infer", "--config", config, "--task", "retrieval", "--out", out
    )
    assert status == 2 and error.startswith(
        f"error: model_path {model}: its input is fixed to 64x64 pixels, but this run embeds "
        "at 32x32"
    )
    assert not out.exists()
