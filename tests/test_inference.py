"""Voting, the non-landmark penalty, re-ranking and TTA embeddings against hand-worked examples
and numpy formulas written here."""

from __future__ import annotations

import os

import numpy as np
import pytest
from cli_helpers import evaluate, infer, last_json

from landmarks.errors import DataError
from landmarks.inference.embedding import Embeddings, embed, load_embeddings, save_embeddings
from landmarks.inference.predict import predict_recognition, predict_retrieval
from landmarks.inference.recognition import non_landmark_penalties, penalised_knn, recognize
from landmarks.inference.rerank import database_augmentation, label_rerank, query_expansion


def _unit(rows, dim, seed):
    vectors = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _normalise(rows):
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


# --- voting ----------------------------------------------------------------------------------

# index rows 0..5 belong to landmarks:
INDEX_LANDMARKS = np.array([1, 2, 2, 1, 3, -1])


def test_recognize_hand_worked_votes():
    similarities = np.array(
        [
            [0.9, 0.8, 0.7, 0.6],  # rows 0, 1, 2, 3 -> landmarks 1, 2, 2, 1
            [0.9, 0.5, 0.45, 0.1],  # rows 0, 1, 2, 4 -> landmarks 1, 2, 2, 3
            [0.8, 0.3, 0.2, 0.1],  # rows 5, 1, 2, 4 -> landmarks -1, 2, 2, 3
        ],
        np.float32,
    )
    indices = np.array([[0, 1, 2, 3], [0, 1, 2, 4], [5, 1, 2, 4]])
    landmarks, confidences = recognize(similarities, indices, INDEX_LANDMARKS)
    # query 0: landmark 1 = 0.9 + 0.6 = 1.5, landmark 2 = 0.8 + 0.7 = 1.5: tie -> landmark 1,
    #          whose best neighbour ranks first.
    # query 1: 1 = 0.9, 2 = 0.5 + 0.45 = 0.95, 3 = 0.1 -> landmark 2 with 0.95
    # query 2: non-landmark = 0.8, 2 = 0.3 + 0.2 = 0.5, 3 = 0.1 -> no landmark (-1), 0.8
    np.testing.assert_array_equal(landmarks, [1, 2, -1])
    np.testing.assert_allclose(confidences, [1.5, 0.95, 0.8], rtol=1e-6)
    assert landmarks.dtype == np.int64 and confidences.dtype == np.float32
    # With a threshold of 1.0 only query 0 keeps its prediction.
    landmarks, _ = recognize(similarities, indices, INDEX_LANDMARKS, min_confidence=1.0)
    np.testing.assert_array_equal(landmarks, [1, -1, -1])
    # Chunking the queries changes nothing.
    chunked, _ = recognize(similarities, indices, INDEX_LANDMARKS, chunk_size=1)
    np.testing.assert_array_equal(chunked, [1, 2, -1])


@pytest.mark.parametrize(
    "similarities, indices, message",
    [
        (np.zeros((2, 3)), np.zeros((2, 2), int), "equal 2-D shapes"),
        (np.zeros((1, 2)), np.array([[0, 6]]), r"lie in \[0, 6\)"),
        (np.zeros((1, 2)), np.zeros((1, 2)), "must be integers"),
    ],
)
def test_recognize_rejects_bad_input(similarities, indices, message):
    with pytest.raises(DataError, match=message):
        recognize(similarities, indices, INDEX_LANDMARKS)


def test_non_landmark_penalty_matches_numpy_formula():
    queries, index, non_landmarks = _unit(6, 8, 1), _unit(30, 8, 2), _unit(7, 8, 3)
    penalties = non_landmark_penalties(index, non_landmarks, top_n=3, backend="numpy")
    # p(b) = mean of the 3 largest similarities of index row b to the non-landmark set.
    expected_p = np.sort(index @ non_landmarks.T, axis=1)[:, ::-1][:, :3].mean(axis=1)
    np.testing.assert_allclose(penalties, expected_p, atol=1e-6)
    values, indices = penalised_knn(queries, index, penalties, 4, backend="tf")
    scores = queries @ index.T - expected_p[None, :]
    expected_indices = np.argsort(-scores, axis=1, kind="stable")[:, :4]
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(values, np.take_along_axis(scores, expected_indices, 1), atol=1e-5)
    with pytest.raises(DataError, match="empty"):
        non_landmark_penalties(index, np.zeros((0, 8), np.float32))


def test_penalty_demotes_a_train_image_that_looks_like_a_non_landmark():
    # Query q is equally close to train rows 0 (landmark 7) and 1 (landmark 8), but row 1 is
    # also the non-landmark photo itself, so its penalty (1.0) sends it behind row 0.
    q = _normalise(np.array([[1.0, 1.0, 0.0]], np.float32))
    train = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], np.float32)
    non_landmark = np.array([[0.0, 1.0, 0.0]], np.float32)
    penalties = non_landmark_penalties(train, non_landmark, top_n=1)
    np.testing.assert_allclose(penalties, [0.0, 1.0, 0.0], atol=1e-6)
    landmarks, confidences = predict_recognition(
        q, train, np.array([7, 8, 9]), k=1, penalties=penalties
    )
    # s(q, row 0) - p(row 0) = 0.7071 - 0 ; s(q, row 1) - p(row 1) = 0.7071 - 1
    assert landmarks.tolist() == [7]
    np.testing.assert_allclose(confidences, [np.sqrt(0.5)], rtol=1e-5)


# --- re-ranking ------------------------------------------------------------------------------


def test_query_expansion_matches_formula():
    queries, index = _unit(5, 8, 4), _unit(40, 8, 5)
    alpha, n = 3.0, 4
    expanded = query_expansion(queries, index, alpha=alpha, k=n, backend="numpy")
    scores = queries @ index.T
    top = np.argsort(-scores, axis=1)[:, :n]
    expected = []
    for row in range(5):
        total = queries[row].copy()
        for j in top[row]:
            total += max(scores[row, j], 0.0) ** alpha * index[j]
        expected.append(total / np.linalg.norm(total))
    np.testing.assert_allclose(expanded, np.array(expected), atol=1e-5)


def test_database_augmentation_excludes_each_row_itself():
    index = _unit(20, 6, 6)
    augmented = database_augmentation(index, alpha=1.0, k=2, backend="tf")
    scores = index @ index.T
    np.fill_diagonal(scores, -np.inf)
    top = np.argsort(-scores, axis=1)[:, :2]
    weights = np.maximum(np.take_along_axis(scores, top, 1), 0.0)
    expected = _normalise(index + np.einsum("rn,rnd->rd", weights, index[top]))
    np.testing.assert_allclose(augmented, expected, atol=1e-5)


def test_label_rerank_hand_worked():
    ranked = np.array([[4, 2, 0, 3, 1], [0, 1, 2, 3, 4], [1, 0, 2, 3, 4]])
    index_landmarks = np.array([7, 5, 7, 9, 5])
    query_landmarks = np.array([7, -1, 5])
    reranked = label_rerank(ranked, query_landmarks, index_landmarks)
    # query 0 (landmark 7): rows 2 and 0 are landmark 7 -> first, in their order; then 4, 3, 1
    # query 1 (no landmark): unchanged
    # query 2 (landmark 5): rows 1 and 4 first -> 1, 4, then 0, 2, 3
    np.testing.assert_array_equal(reranked, [[2, 0, 4, 3, 1], [0, 1, 2, 3, 4], [1, 4, 0, 2, 3]])


def test_predict_retrieval_plain_is_exact_top_k():
    queries, index = _unit(4, 8, 7), _unit(12, 8, 8)
    ranked = predict_retrieval(queries, index, k=100)  # capped at the 12 index rows
    np.testing.assert_array_equal(ranked, np.argsort(-(queries @ index.T), axis=1))


# --- embeddings ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model():
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((None, None, 3)),
            keras.layers.Conv2D(4, 3, use_bias=False),  # not flip-invariant at the borders
            keras.layers.GlobalAveragePooling2D(),
        ]
    )


def _dataset(images, ids, batch=2):
    import tensorflow as tf

    labels = np.arange(len(ids), dtype=np.int32) - 1  # first label -1 (unknown)
    return tf.data.Dataset.from_tensor_slices(
        {"image": images, "id": np.array(ids), "label": labels}
    ).batch(batch)


@pytest.mark.backends
def test_embed_flip_and_scales_average_of_normalised_views(tiny_model):
    rng = np.random.default_rng(0)
    sizes = {0.5: 32, 1.0: 64}
    images = {s: rng.uniform(0, 255, (5, px, px, 3)).astype(np.float32) for s, px in sizes.items()}
    ids = [f"img{n}" for n in range(5)]

    result = embed(tiny_model, lambda s: _dataset(images[s], ids), tta_flip=True, scales=(0.5, 1.0))

    def view(x):
        return _normalise(np.asarray(tiny_model(x)))

    total = sum(view(images[s]) + view(images[s][:, :, ::-1, :]) for s in (0.5, 1.0))
    np.testing.assert_allclose(result.vectors, _normalise(total), atol=1e-5)
    assert result.ids.tolist() == ids
    assert result.labels.tolist() == [-1, 0, 1, 2, 3]


@pytest.mark.backends
def test_embed_resizes_a_single_dataset_per_scale(tiny_model):
    seen = []

    def spy(images, training=False):
        seen.append(tuple(images.shape[1:3]))
        return tiny_model(images, training=training)

    images = np.zeros((3, 64, 64, 3), np.float32) + 100
    result = embed(spy, _dataset(images, ["a", "b", "c"], batch=3), scales=(0.7071, 1.0, 1.4142))
    # 64 * 0.7071 = 45.3 -> 32 (nearest multiple of 32); 64; 64 * 1.4142 = 90.5 -> 96
    assert seen == [(32, 32), (64, 64), (96, 96)]
    assert result.vectors.shape == (3, 4)


@pytest.mark.backends
def test_embed_errors(tiny_model):
    images = np.zeros((2, 32, 32, 3), np.float32)
    with pytest.raises(DataError, match="scales"):
        embed(tiny_model, _dataset(images, ["a", "b"]), scales=(0.0,))
    with pytest.raises(DataError, match="different ids"):
        embed(
            tiny_model,
            lambda s: _dataset(images, ["a", "b"] if s == 1.0 else ["b", "a"]),
            scales=(1.0, 2.0),
        )
    with pytest.raises(DataError, match="empty"):
        embed(tiny_model, _dataset(images, ["a", "b"]).take(0))


def test_embeddings_save_load_float16(tmp_path):
    embeddings = Embeddings(ids=["a", "b"], vectors=_unit(2, 4, 9), labels=[3, 4])
    path = str(tmp_path / "e.npz")
    save_embeddings(path, embeddings, dtype="float16")
    loaded = load_embeddings(path)
    assert loaded.ids.tolist() == ["a", "b"] and loaded.labels.tolist() == [3, 4]
    assert loaded.vectors.dtype == np.float32
    np.testing.assert_allclose(loaded.vectors, embeddings.vectors, atol=1e-3)
    save_embeddings(path, Embeddings(ids=["x"], vectors=np.ones((1, 2))))
    assert load_embeddings(path).labels is None
    with pytest.raises(DataError, match="float32 or float16"):
        save_embeddings(path, embeddings, dtype="int8")
    with pytest.raises(DataError, match="not found"):
        load_embeddings(str(tmp_path / "missing.npz"))
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DataError, match="not an embeddings file"):
        load_embeddings(str(tmp_path / "junk.npz"))


# --- the infer command, end to end -------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, mini_records, mini_landmarks, tiny_models):
    """A run folder with a small saved embed_model.keras (random weights) and its config."""
    import shutil

    from landmarks.config import Config

    out = tmp_path_factory.mktemp("infer")
    config = Config.from_dict(
        {
            "data_dir": str(mini_landmarks),
            "records_dir": str(mini_records),
            "output_dir": str(out),
            "run_name": "run",
            "image_size": 64,
            "batch_size": 64,
            "knn_k": 1,
        }
    )
    (out / "run").mkdir()
    shutil.copyfile(tiny_models[0], out / "run" / "embed_model.keras")
    config.save(str(out / "config.yaml"))
    return out


def _folder_ids(data_dir, split):
    return sorted(p.stem for p in (data_dir / split).rglob("*.jpg"))


@pytest.mark.backends
def test_infer_recognition_end_to_end(tiny_run, mini_landmarks, capsys):
    import pandas as pd

    from landmarks.submission import validate_recognition_submission

    out = str(tiny_run / "recognition.csv")
    assert infer(tiny_run / "config.yaml", out) == 0
    test_ids = _folder_ids(mini_landmarks, "test")
    predictions = validate_recognition_submission(out, test_ids)
    # Independent check from the saved embeddings and train.csv: with knn_k=1 and no penalty
    # set, each query takes the landmark of its single most similar train image.
    test = load_embeddings(str(tiny_run / "run" / "embeddings" / "test.npz"))
    train = load_embeddings(str(tiny_run / "run" / "embeddings" / "train.npz"))
    table = pd.read_csv(mini_landmarks / "train.csv", dtype={"id": str})
    landmark_of = dict(zip(table["id"], table["landmark_id"], strict=True))
    scores = test.vectors @ train.vectors.T
    nearest = scores.argmax(axis=1)
    for row, query in enumerate(test.ids):
        landmark, confidence = predictions[query]
        assert landmark == landmark_of[train.ids[nearest[row]]]
        assert confidence == pytest.approx(scores[row, nearest[row]], abs=1e-5)
    assert len(train) == len(table)  # train + holdout records: every train image is indexed
    solution = mini_landmarks / "recognition_solution.csv"
    assert evaluate("recognition", out, solution, "--json") == 0
    assert 0.0 <= last_json(capsys)["gap"] <= 1.0


def test_infer_retrieval_with_reranking_end_to_end(tiny_run, mini_landmarks):
    from landmarks.submission import validate_retrieval_submission

    out = str(tiny_run / "retrieval.csv")
    overrides = [
        "query_expansion_alpha=3",
        "label_rerank=true",
        "knn_k=3",
        "tta_flip=true",
        f"non_landmark_dir={mini_landmarks / 'index'}",
        "knn_backend=faiss",
    ]
    assert infer(tiny_run / "config.yaml", out, *overrides, task="retrieval") == 0
    index_ids = _folder_ids(mini_landmarks, "index")
    predictions = validate_retrieval_submission(out, _folder_ids(mini_landmarks, "test"), index_ids)
    assert {len(images) for images in predictions.values()} == {min(100, len(index_ids))}


def test_infer_without_model_is_a_one_line_error(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(f"output_dir: {tmp_path}\nrun_name: none\n")
    assert infer(config, tmp_path / "s.csv") == 2
    assert "embed model not found" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()
    for bad, key in [("knn_backend=annoy", "knn_backend"), ("tta_scales=[0]", "tta_scales")]:
        assert infer(config, tmp_path / "s.csv", bad) == 2
        assert key in capsys.readouterr().err


# --- where test images come from: the data folder, where Kaggle swaps in the hidden test set ---


def _copy_split(source, target, split, ids, rename=None):
    """Copy the images `ids` of `source/split` into `target/split` in the GLDv2 a/b/c layout;
    `rename` maps an id to the id its copy is stored under."""
    import shutil

    from landmarks.data.gldv2 import image_path

    for image_id in ids:
        new_id = (rename or {}).get(image_id, image_id)
        destination = image_path(str(target), split, new_id)
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        shutil.copyfile(image_path(str(source), split, image_id), destination)


@pytest.fixture(scope="module")
def stale_test_records(tiny_run, mini_records, mini_landmarks, tmp_path_factory):
    """Records of mini-landmarks' 157 test images beside a copy of its train records."""
    import shutil

    from landmarks.data.tfrecords import prepare

    records = tmp_path_factory.mktemp("records") / "with-test"
    shutil.copytree(mini_records, records)
    prepare(str(mini_landmarks), "test", str(records), image_size=64, progress=False)
    return records


def _infer(tiny_run, data_dir, records, out, *settings, task="retrieval"):
    sources = (f"data_dir={data_dir}", f"records_dir={records}")
    return infer(tiny_run / "config.yaml", out, *sources, *settings, task=task)


def test_a_swapped_test_folder_is_what_gets_submitted(
    tiny_run, stale_test_records, mini_landmarks, tmp_path, capsys
):
    """Kaggle's rerun: `test/` holds other images than the records. The default reads the
    folder, so the submission has exactly the folder's ids, and says where they came from."""
    from landmarks.submission import read_retrieval_submission

    swapped = tmp_path / "competition"
    hidden = _folder_ids(mini_landmarks, "test")[::8]  # 20 of the 157
    _copy_split(mini_landmarks, swapped, "test", hidden)
    _copy_split(mini_landmarks, swapped, "index", _folder_ids(mini_landmarks, "index"))
    out = tmp_path / "submission.csv"
    assert _infer(tiny_run, swapped, stale_test_records, out) == 0
    assert sorted(read_retrieval_submission(str(out))) == sorted(hidden) and len(hidden) == 20
    printed = capsys.readouterr().out
    assert f"test: 20 images in {swapped}/test (image_source: folder)" in printed


def test_stale_test_records_stop_with_both_counts(
    tiny_run, stale_test_records, mini_landmarks, tmp_path, capsys
):
    swapped = tmp_path / "competition"
    _copy_split(mini_landmarks, swapped, "test", _folder_ids(mini_landmarks, "test")[::8])
    _copy_split(mini_landmarks, swapped, "index", _folder_ids(mini_landmarks, "index"))
    out = tmp_path / "submission.csv"
    assert _infer(tiny_run, swapped, stale_test_records, out, "image_source=records") == 2
    error = capsys.readouterr().err
    assert "the test records hold 157 images but" in error and "has 20" in error
    assert not out.exists()


def test_records_with_other_ids_but_the_same_count_are_refused_before_submitting(
    tiny_run, stale_test_records, mini_landmarks, tmp_path, capsys
):
    test_ids = _folder_ids(mini_landmarks, "test")
    swapped = tmp_path / "competition"
    _copy_split(mini_landmarks, swapped, "test", test_ids, rename={test_ids[0]: "fff0000000000000"})
    _copy_split(mini_landmarks, swapped, "index", _folder_ids(mini_landmarks, "index"))
    out = tmp_path / "submission.csv"
    assert _infer(tiny_run, swapped, stale_test_records, out, "image_source=records") == 2
    error = capsys.readouterr().err
    assert "1 ids only in the records" in error and test_ids[0] in error
    assert "1 only in the folder (fff0000000000000)" in error
    assert not out.exists()


def test_current_test_records_are_used_when_asked(
    tiny_run, stale_test_records, mini_landmarks, tmp_path, capsys
):
    import pandas as pd

    out = tmp_path / "submission.csv"
    records = "image_source=records"
    assert (
        _infer(tiny_run, mini_landmarks, stale_test_records, out, records, task="recognition") == 0
    )
    submitted = pd.read_csv(out, dtype=str)["id"]
    assert sorted(submitted) == _folder_ids(mini_landmarks, "test")
    assert "157 test records in" in capsys.readouterr().out
    for setting, message in [("image_source=cache", "image_source: 'cache' is not one of")]:
        assert _infer(tiny_run, mini_landmarks, stale_test_records, out, setting) == 2
        assert message in capsys.readouterr().err
