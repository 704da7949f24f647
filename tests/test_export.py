"""`export`: what inference needs from a run folder, and `infer` reusing exported train
embeddings only when their fingerprint matches (checked against an infer that embeds afresh)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from cli_helpers import infer
from fs_helpers import files_under

from landmarks.cli import main
from landmarks.errors import DataError
from landmarks.inference import export
from landmarks.inference.export import export_run
from landmarks.inference.fingerprint import differences


def _tiny_model(seed: int):
    """A random projection of 8x8-pooled, centred pixels (64 px input): cheap, and its vectors
    spread enough that float16 storage rarely changes a vote."""
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((64, 64, 3)),
            keras.layers.Rescaling(1 / 127.5, offset=-1.0),
            keras.layers.AveragePooling2D(8),
            keras.layers.Flatten(),
            keras.layers.Dense(32),
            keras.layers.UnitNormalization(),
        ]
    )


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, mini_records, mini_landmarks):
    """A finished run folder: small embed_model.keras, resolved config.yaml, and the files an
    export leaves out (checkpoints, history, curves)."""
    from landmarks.config import Config

    out = tmp_path_factory.mktemp("export")
    run = out / "runs" / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "ckpt-1.index").write_bytes(b"checkpoint")
    (run / "history.csv").write_text("epoch,step,loss\n1,4,2.0\n")
    (run / "curves.png").write_bytes(b"png")
    _tiny_model(1).save(str(run / "embed_model.keras"))
    config = Config.from_dict(
        {
            "data_dir": str(mini_landmarks),
            "records_dir": str(mini_records),
            "output_dir": str(out / "runs"),
            "run_name": "run",
            "image_size": 64,
            "batch_size": 64,
            "knn_k": 3,
            "init_from": "/somewhere/stage1",
        }
    )
    config.save(str(run / "config.yaml"))
    return run


@pytest.fixture(scope="module")
def exported(run_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("exported") / "model"
    export_run(str(run_folder), str(out), train_embeddings=True, log=lambda _: None)
    return out


def test_the_export_holds_what_inference_needs_and_nothing_else(exported, run_folder, mini_records):
    files = files_under(exported)
    assert files == [
        "config.yaml",
        "embed_model.keras",
        "embeddings/train.npz",
        "export.json",
        "label_map.csv",
    ]
    mark = json.loads((exported / "export.json").read_text())
    assert mark["files"] == [f for f in files if f != "export.json"]
    model_bytes = (run_folder / "embed_model.keras").read_bytes()
    assert (exported / "embed_model.keras").read_bytes() == model_bytes
    assert (exported / "label_map.csv").read_bytes() == (
        mini_records / "label_map.csv"
    ).read_bytes()
    config = yaml.safe_load((exported / "config.yaml").read_text())
    assert config["model_path"] == config["init_from"] == config["resume_from"] == ""
    assert config["image_size"] == 64 and config["knn_k"] == 3

    with np.load(exported / "embeddings" / "train.npz", allow_pickle=False) as archive:
        assert archive["vectors"].dtype == np.float16
        vectors = archive["vectors"].astype(np.float32)
        ids, fingerprint = archive["ids"], json.loads(str(archive["fingerprint"]))
    manifest = json.loads((mini_records / "manifest.json").read_text())
    records = sum(manifest["splits"][s]["examples"] for s in ("train", "holdout"))
    assert len(ids) == len(set(ids)) == records
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=2e-3)
    assert fingerprint == {
        "model_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "image_size": 64,
        "tta_flip": False,
        "tta_scales": [1.0],
    }


def _predictions(path: Path) -> pd.DataFrame:
    table = pd.read_csv(path, keep_default_na=False).set_index("id").sort_index()
    split = table["landmarks"].str.split(" ", expand=True)
    return pd.DataFrame({"landmark": split[0], "confidence": split[1].astype(float)})


def test_infer_reuses_matching_embeddings_without_any_train_records(
    exported, run_folder, tmp_path, capsys
):
    fresh = tmp_path / "fresh.csv"
    model = f"model_path={run_folder / 'embed_model.keras'}"
    assert infer(run_folder / "config.yaml", fresh, model, f"output_dir={tmp_path / 'a'}") == 0
    assert "embedding train" in capsys.readouterr().out

    reused = tmp_path / "reused.csv"
    settings = [
        f"model_path={exported / 'embed_model.keras'}",
        f"train_embeddings={exported / 'embeddings' / 'train.npz'}",
        f"records_dir={exported}",  # the export's label_map.csv; no records at all
        f"output_dir={tmp_path / 'b'}",
    ]
    assert infer(exported / "config.yaml", reused, *settings) == 0
    printed = capsys.readouterr().out
    assert "train: reusing" in printed and "(fingerprint matches)" in printed
    assert "embedding train" not in printed
    # The exported vectors are what a fresh infer embeds, to float16 rounding, id by id.
    from landmarks.inference.embedding import load_embeddings

    embedded = load_embeddings(str(tmp_path / "a" / "run" / "embeddings" / "train.npz"))
    attached = load_embeddings(str(exported / "embeddings" / "train.npz"))
    order = {image_id: row for row, image_id in enumerate(embedded.ids)}
    rows = [order[image_id] for image_id in attached.ids]
    np.testing.assert_allclose(attached.vectors, embedded.vectors[rows], atol=1e-3)
    np.testing.assert_array_equal(attached.labels, embedded.labels[rows])
    # Each submission is exactly the vote recomputed from the embeddings it used (the fresh
    # float32 train vectors; the export's float16 ones): where the two differ, it is the float16
    # rounding of a near-tied vote, and nowhere else.
    a, b = _predictions(fresh), _predictions(reused)
    a_embeddings, b_embeddings = tmp_path / "a" / "run" / "embeddings", tmp_path / "b" / "run"
    for table, test_npz, train_npz in [
        (a, a_embeddings / "test.npz", a_embeddings / "train.npz"),
        (b, b_embeddings / "embeddings" / "test.npz", exported / "embeddings" / "train.npz"),
    ]:
        expected = _recomputed_recognition(test_npz, train_npz, exported, k=3)
        assert list(table.index) == list(expected.index)
        np.testing.assert_array_equal(table["landmark"], expected["landmark"])
        np.testing.assert_allclose(table["confidence"], expected["confidence"], atol=1e-6)


def _recomputed_recognition(test_npz, train_npz, records_dir, k) -> pd.DataFrame:
    """The recognition predictions of saved embeddings through the tested functions (knn with
    the numpy back end, the vote), indexed and sorted by id like `_predictions`."""
    from landmarks.config import Config
    from landmarks.inference.embedding import load_embeddings
    from landmarks.inference.predict import predict_recognition
    from landmarks.inference.run import train_landmark_ids

    test, train = load_embeddings(str(test_npz)), load_embeddings(str(train_npz))
    landmark_ids = train_landmark_ids(Config(records_dir=str(records_dir)), train.labels)
    landmarks, confidences = predict_recognition(
        test.vectors, train.vectors, landmark_ids, k=k, backend="numpy"
    )
    table = pd.DataFrame(
        {"landmark": landmarks.astype(str), "confidence": confidences}, index=test.ids
    )
    return table.sort_index()


def test_infer_re_embeds_and_says_why_when_the_fingerprint_differs(
    exported, run_folder, tmp_path, capsys
):
    attached = f"train_embeddings={exported / 'embeddings' / 'train.npz'}"
    model = f"model_path={exported / 'embed_model.keras'}"
    out = f"output_dir={tmp_path}"
    assert (
        infer(run_folder / "config.yaml", tmp_path / "s.csv", attached, model, out, "tta_flip=true")
        == 0
    )
    printed = capsys.readouterr().out
    assert "were made otherwise (tta_flip False, not True)" in printed
    assert "embedding train" in printed

    _tiny_model(2).save(str(tmp_path / "other.keras"))
    other = f"model_path={tmp_path / 'other.keras'}"
    assert infer(run_folder / "config.yaml", tmp_path / "s.csv", attached, other, out) == 0
    assert "(another model file)" in capsys.readouterr().out

    absent = f"train_embeddings={tmp_path / 'absent.npz'}"
    assert infer(run_folder / "config.yaml", tmp_path / "s.csv", absent, model, out) == 0
    assert "train: no attached embeddings at" in capsys.readouterr().out


def test_fingerprint_differences_name_each_setting():
    base = {"model_sha256": "a", "image_size": 512, "tta_flip": False, "tta_scales": [1.0]}
    assert differences(base, dict(base)) == []
    assert differences(base, None) == ["it has no fingerprint"]
    changed = {**base, "model_sha256": "b", "image_size": 384}
    assert differences(base, changed) == ["image_size 384, not 512", "another model file"]


def test_bad_exports_stop_before_writing(run_folder, tmp_path, mini_landmarks):
    out = tmp_path / "model"
    with pytest.raises(DataError, match="not a run folder"):
        export_run(str(tmp_path), str(out))
    with pytest.raises(DataError, match="best_embed_model.keras not found.*never validated"):
        export_run(str(run_folder), str(out), model="best")
    with pytest.raises(DataError, match="label_map.csv"):
        export_run(str(run_folder), str(out), records_dir=str(mini_landmarks))
    assert not out.exists()
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(
        DataError, match=r"not an earlier export \(no export.json\): it holds notes.txt;"
    ):
        export_run(str(run_folder), str(out))
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert not [p for p in tmp_path.iterdir() if ".export-" in p.name]


def test_a_failed_export_keeps_the_earlier_one(run_folder, tmp_path, monkeypatch):
    out = tmp_path / "model"
    assert main(["export", "--run", str(run_folder), "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def killed(*args):
        raise KeyboardInterrupt("session ended")

    monkeypatch.setattr(export, "_export_train_embeddings", killed)
    with pytest.raises(KeyboardInterrupt):
        export_run(str(run_folder), str(out), train_embeddings=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_cli_export_errors_are_one_line(tmp_path, capsys):
    assert main(["export", "--run", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert (
        capsys.readouterr().err
        == f"error: {tmp_path / 'nope'}: not a run folder (no config.yaml)\n"
    )
