"""Ensembles: members from the config, the combined similarity against numpy formulas and a
hand-worked case, the embedding cache, and the `infer` command's invariants (a one-member
ensemble is the single model; a model with itself is the model; adding a member embeds only it)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from landmarks.config import Config
from landmarks.errors import ConfigError, DataError
from landmarks.inference import cache, descriptors
from landmarks.inference.descriptors import Descriptors
from landmarks.inference.embedding import Embeddings
from landmarks.inference.ensemble import concatenate, ensemble_members
from landmarks.inference.fingerprint import file_sha256


def _unit(rows, dim, seed):
    vectors = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


# --- members -----------------------------------------------------------------------------------


def test_members_defaults_and_names():
    config = Config.from_dict({"image_size": 128, "tta_flip": True, "run_name": "r"})
    (single,) = ensemble_members(config)
    assert (single.name, single.image_size, single.tta_flip, single.weight) == ("", 128, True, 1.0)
    assert single.model_path.endswith("r/embed_model.keras")
    config.update(
        {
            "ensemble": [
                {"model_path": "runs/b5/embed_model.keras", "weight": 2},
                {"model_path": "models/b6_640.keras", "image_size": 640, "tta_scales": [1, 1.5]},
                {"model_path": "x.keras", "name": "third", "tta_flip": False},
            ]
        }
    )
    first, second, third = ensemble_members(config)
    assert (first.name, first.image_size, first.weight, first.tta_flip) == ("b5", 128, 2.0, True)
    assert (second.name, second.image_size, second.tta_scales) == ("b6_640", 640, (1.0, 1.5))
    assert (third.name, third.tta_flip) == ("third", False)
    member_config = second.config(config)
    assert (member_config.image_size, member_config.model_path) == (640, "models/b6_640.keras")
    assert config.image_size == 128  # the run's config is not changed


@pytest.mark.parametrize(
    "ensemble, message",
    [
        ([{"model_path": "a.keras", "size": 3}], r"ensemble\[0\]: unknown key 'size'"),
        ([{"image_size": 64}], r"ensemble\[0\]: model_path .* is required"),
        ([{"model_path": "a/m.keras"}, {"model_path": "b/m.keras"}], "two members are named 'm'"),
        ([{"model_path": "a.keras", "weight": 0}], r"ensemble\[0\]: weight must be a positive"),
        (
            [{"model_path": "a.keras", "image_size": 16}],
            "image_size must be an integer from 32 to 4096 px, got 16",
        ),
        ([{"model_path": "a.keras", "tta_scales": []}], "tta_scales must be a list"),
        ([{"model_path": "a.keras", "name": "a/b"}], "name must be letters"),
        (["a.keras"], r"ensemble\[0\]: expected a mapping"),
    ],
)
def test_member_errors_name_the_member_and_key(ensemble, message):
    config = Config()
    with pytest.raises(ConfigError, match=message):
        config.update({"ensemble": ensemble})  # the type of each entry is checked here
        ensemble_members(config)  # its keys and values here


def test_ensemble_from_set_is_parsed_as_yaml(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("ensemble_mode: average\n")
    config = Config.load(
        str(path), ["ensemble=[{model_path: a.keras}, {model_path: b.keras, weight: 2}]"]
    )
    assert [m.weight for m in ensemble_members(config)] == [1.0, 2.0]
    with pytest.raises(ConfigError, match="ensemble_mode must be one of concat, average"):
        ensemble_members(Config.load(str(path), ["ensemble_mode=mean"]))
    with pytest.raises(ConfigError, match=r"ensemble\[1\]: expected a mapping"):
        Config.load(str(path), ["ensemble=[{model_path: a.keras}, 3]"])


# --- the combined similarity -----------------------------------------------------------------


def test_hand_worked_two_member_similarity():
    # member A (2-d) and member B (2-d), weights 1 and 3 -> w = .25, .75
    queries_a = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    index_a = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], np.float32)
    queries_b = np.array([[0.0, 1.0], [0.8, 0.6]], np.float32)
    index_b = np.array([[0.6, 0.8], [1.0, 0.0], [0.0, 1.0]], np.float32)
    # A similarities: q0: 1 .6 0    q1: 0 .8 1
    # B similarities: q0: .8 0 1    q1: .96 .8 .6
    # weighted:       q0: .25 x (1, .6, 0) + .75 x (.8, 0, 1) = .85 .15 .75
    #                 q1: .25 x (0, .8, 1) + .75 x (.96, .8, .6) = .72 .8 .7
    expected = np.array([[0.85, 0.15, 0.75], [0.72, 0.8, 0.7]])
    queries = Descriptors([queries_a, queries_b], [1, 3])
    index = Descriptors([index_a, index_b], [1, 3])
    np.testing.assert_allclose(
        queries.pair_similarities(index, [[0, 1, 2], [0, 1, 2]]), expected, atol=1e-6
    )
    # average mode: each member's own top-2, re-scored: q0 -> rows 0, 2; q1 -> rows 1, 0
    similarities, rows = queries.search(index, 2, backend="numpy")
    np.testing.assert_array_equal(rows, [[0, 2], [1, 0]])
    np.testing.assert_allclose(similarities, [[0.85, 0.75], [0.8, 0.72]], atol=1e-6)
    # concatenation: v . v' is the same weighted mean
    concat_q = concatenate([queries_a, queries_b], [1, 3])
    concat_x = concatenate([index_a, index_b], [1, 3])
    np.testing.assert_allclose(concat_q @ concat_x.T, expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(concat_q, axis=1), 1.0, atol=1e-6)


def test_concat_and_average_match_the_numpy_weighted_mean():
    parts_q = [_unit(6, 8, 1), _unit(6, 5, 2), _unit(6, 3, 3)]
    parts_x = [_unit(50, 8, 4), _unit(50, 5, 5), _unit(50, 3, 6)]
    weights = [0.5, 2.0, 1.5]
    w = np.array(weights) / sum(weights)
    reference = sum(wi * (q @ x.T) for wi, q, x in zip(w, parts_q, parts_x, strict=True))
    order = np.argsort(-reference, axis=1, kind="stable")
    concat = Descriptors([concatenate(parts_q, weights)])
    sims, rows = concat.search(Descriptors([concatenate(parts_x, weights)]), 7, backend="tf")
    np.testing.assert_array_equal(rows, order[:, :7])
    np.testing.assert_allclose(sims, np.take_along_axis(reference, order[:, :7], 1), atol=1e-5)
    # average: exact for every pair it scores; with k = N every pair is scored
    average_q, average_x = Descriptors(parts_q, weights), Descriptors(parts_x, weights)
    sims, rows = average_q.search(average_x, 50, backend="numpy")
    np.testing.assert_array_equal(rows, order)
    np.testing.assert_allclose(sims, np.take_along_axis(reference, order, 1), atol=1e-5)
    # with a small k it returns the best of the members' own top-k, each scored exactly
    sims, rows = average_q.search(average_x, 3, backend="faiss")
    np.testing.assert_allclose(sims, np.take_along_axis(reference, rows, 1), atol=1e-5)
    found = set()
    for q, x in zip(parts_q, parts_x, strict=True):
        found |= {(r, c) for r, cs in enumerate(np.argsort(-(q @ x.T), axis=1)[:, :3]) for c in cs}
    assert all((r, c) in found for r, cs in enumerate(rows) for c in cs)


def test_average_search_with_per_member_penalties():
    parts_q, parts_x = [_unit(4, 6, 7), _unit(4, 4, 8)], [_unit(30, 6, 9), _unit(30, 4, 10)]
    penalties = np.random.default_rng(11).uniform(0, 0.5, (2, 30)).astype(np.float32)
    w = np.array([1.0, 3.0]) / 4
    reference = sum(
        wi * (q @ x.T - p[None, :])
        for wi, q, x, p in zip(w, parts_q, parts_x, penalties, strict=True)
    )
    sims, rows = Descriptors(parts_q, [1, 3]).search(
        Descriptors(parts_x, [1, 3]), 30, backend="numpy", penalties=penalties
    )
    np.testing.assert_array_equal(rows, np.argsort(-reference, axis=1, kind="stable"))
    np.testing.assert_allclose(sims, np.sort(reference, axis=1)[:, ::-1], atol=1e-5)
    with pytest.raises(DataError, match="penalties of shape"):
        Descriptors(parts_q[:1]).search(Descriptors(parts_x[:1]), 3, penalties=penalties)


def test_slabbed_float16_search_equals_one_float32_call(monkeypatch):
    queries, index = _unit(9, 16, 12), _unit(300, 16, 13)
    penalties = np.random.default_rng(14).uniform(0, 0.3, 300).astype(np.float32)
    whole = Descriptors([queries]).search(
        Descriptors([index]), 5, backend="numpy", penalties=penalties
    )
    monkeypatch.setattr(descriptors, "SLAB_BYTES", 4 * 17 * 40)  # 40 rows per slab and chunk
    slabbed = Descriptors([queries.astype(np.float16)]).search(
        Descriptors([index.astype(np.float16)]), 5, backend="numpy", penalties=penalties
    )
    np.testing.assert_array_equal(slabbed[1], whole[1])
    np.testing.assert_allclose(slabbed[0], whole[0], atol=2e-3)  # float16 inputs
    exact = Descriptors([queries]).search(
        Descriptors([index]), 5, backend="tf", penalties=penalties
    )
    np.testing.assert_array_equal(exact[1], whole[1])


def test_descriptor_errors():
    with pytest.raises(DataError, match="no parts"):
        Descriptors([])
    with pytest.raises(DataError, match="positive weights"):
        Descriptors([_unit(2, 3, 0)], [0.0])
    with pytest.raises(DataError, match="rows"):
        Descriptors([_unit(2, 3, 0), _unit(3, 3, 0)])
    with pytest.raises(DataError, match=r"k=5 must lie in \[1, 3\]"):
        Descriptors([_unit(2, 3, 0)]).search(Descriptors([_unit(3, 3, 1)]), 5)


# --- the cache ---------------------------------------------------------------------------------


def test_cache_reuses_only_an_equal_fingerprint(tmp_path, monkeypatch):
    path = str(tmp_path / "member" / "test.npz")
    embeddings = Embeddings(ids=["a", "b"], vectors=_unit(2, 4, 15))
    config = Config(image_size=64)
    key = cache.fingerprint("sha-1", config, "images-1")
    assert cache.load_cached(path, key) is None
    cache.save_cached(path, key, embeddings, "float16")
    loaded = cache.load_cached(path, key)
    assert loaded.ids.tolist() == ["a", "b"]
    np.testing.assert_allclose(loaded.vectors, embeddings.vectors, atol=1e-3)
    assert json.loads((tmp_path / "member" / "test.json").read_text())["images"] == "images-1"
    for changed in [
        cache.fingerprint("sha-2", config, "images-1"),
        cache.fingerprint("sha-1", Config(image_size=96), "images-1"),
        cache.fingerprint("sha-1", Config(image_size=64, tta_flip=True), "images-1"),
        cache.fingerprint("sha-1", config, "images-2"),
    ]:
        assert cache.load_cached(path, changed) is None

    # a run killed while writing new embeddings leaves no fingerprint: nothing is reused
    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cache, "save_embeddings", killed)
    with pytest.raises(KeyboardInterrupt):
        cache.save_cached(
            path, cache.fingerprint("sha-2", config, "images-1"), embeddings, "float32"
        )
    assert cache.load_cached(path, key) is None


def test_model_digest_is_the_sha256_of_the_bytes(tmp_path):
    import hashlib

    model = tmp_path / "m.keras"
    model.write_bytes(b"weights" * 1000)
    assert file_sha256(str(model)) == hashlib.sha256(b"weights" * 1000).hexdigest()


def test_image_identity_ignores_where_the_folder_is_mounted(mini_landmarks, tmp_path):
    from landmarks.inference.sources import split_images

    mounted = tmp_path / "elsewhere"
    mounted.symlink_to(mini_landmarks, target_is_directory=True)
    here = split_images(Config(data_dir=str(mini_landmarks)), "test")
    there = split_images(Config(data_dir=str(mounted)), "test")
    index = split_images(Config(data_dir=str(mini_landmarks)), "index")
    assert here.identity == there.identity and len(here.identity) == 64
    assert index.identity != here.identity


# --- the infer command -------------------------------------------------------------------------


@pytest.fixture()
def base_config(tmp_path, mini_records, mini_landmarks):
    return {
        "data_dir": str(mini_landmarks),
        "records_dir": str(mini_records),
        "output_dir": str(tmp_path),
        "image_size": 64,
        "batch_size": 64,
        "knn_k": 3,
        "knn_backend": "numpy",
    }


def _run(values, tmp_path, name, **extra):
    """run_inference_tasks for both tasks with `values` + `extra`: (recognition table,
    retrieval table, logged lines)."""
    import pandas as pd

    from landmarks.inference.run import run_inference_tasks

    config = Config.from_dict({**values, **extra})
    lines = []
    outputs = {task: str(tmp_path / f"{name}-{task}.csv") for task in ("recognition", "retrieval")}
    run_inference_tasks(config, outputs, log=lines.append)
    tables = [pd.read_csv(outputs[t], dtype=str).fillna("") for t in outputs]
    return (*tables, lines)


def _confidences(table):
    return np.array([float(v.split()[1]) for v in table["landmarks"]])


def test_one_member_ensemble_is_the_single_model_and_a_model_with_itself_is_the_model(
    tiny_models, base_config, tmp_path
):
    model = str(tiny_models[0])
    single = _run(base_config, tmp_path, "single", model_path=model, run_name="single")
    one = _run(
        base_config, tmp_path, "one", run_name="ens", ensemble=[{"model_path": model, "name": "a"}]
    )
    assert single[0].equals(one[0]) and single[1].equals(one[1])
    assert (tmp_path / "ens" / "embeddings" / "a" / "train.npz").is_file()
    assert (tmp_path / "single" / "embeddings" / "train.npz").is_file()
    # the same model twice, weights 1 and 2: a is read from its cache, b embedded
    twice = [{"model_path": model, "name": "a"}, {"model_path": model, "name": "b", "weight": 2}]
    for mode in ("concat", "average"):
        recognition, retrieval, lines = _run(
            base_config, tmp_path, mode, run_name="ens", ensemble=twice, ensemble_mode=mode
        )
        assert recognition["id"].equals(single[0]["id"])
        np.testing.assert_allclose(_confidences(recognition), _confidences(single[0]), atol=1e-5)
        assert _votes_agree_up_to_ties(recognition, tmp_path / "single" / "embeddings", base_config)
        assert _same_up_to_ties(retrieval, single[1], tmp_path / "single" / "embeddings")
    embedded = [line for line in lines if "embedding " in line]
    assert not embedded  # the last run found every split of both members in the cache
    assert any(line.startswith("[a] train:") and "embeddings from" in line for line in lines)


def _votes_agree_up_to_ties(recognition, embeddings_dir, values):
    """Each predicted landmark wins the single model's own vote (its knn_k nearest train images
    vote with their similarity; numpy here), or falls short of the winner by at most 1e-4: the
    tiny random model maps every image to almost one direction (similarities ~0.99998), so
    rounding can swap near-equal votes."""
    from landmarks.data.tfrecords import read_label_map
    from landmarks.inference.embedding import load_embeddings

    test = load_embeddings(str(embeddings_dir / "test.npz"))
    train = load_embeddings(str(embeddings_dir / "train.npz"))
    table = read_label_map(values["records_dir"])
    landmark_of = dict(zip(table["label"], table["landmark_id"], strict=True))
    train_landmarks = np.array([landmark_of[label] for label in train.labels])
    sims = test.vectors @ train.vectors.T
    for row, value in enumerate(recognition["landmarks"]):
        top = np.argsort(-sims[row], kind="stable")[: values["knn_k"]]
        votes = {}
        for column in top:
            votes[train_landmarks[column]] = (
                votes.get(train_landmarks[column], 0.0) + sims[row, column]
            )
        if votes.get(int(value.split()[0]), -np.inf) < max(votes.values()) - 1e-4:
            return False
    return True


def _same_up_to_ties(retrieval, reference, embeddings_dir):
    """Equal rankings, except that images of (numerically) equal similarity may swap."""
    from landmarks.inference.embedding import load_embeddings

    test = load_embeddings(str(embeddings_dir / "test.npz"))
    index = load_embeddings(str(embeddings_dir / "index.npz"))
    position = {image: row for row, image in enumerate(index.ids)}
    for row, (got, want) in enumerate(zip(retrieval["images"], reference["images"], strict=True)):
        got, want = got.split(), want.split()
        if got == want:
            continue
        got_sims = index.vectors[[position[i] for i in got]] @ test.vectors[row]
        want_sims = index.vectors[[position[i] for i in want]] @ test.vectors[row]
        if not np.allclose(got_sims, want_sims, atol=1e-5):
            return False
    return True


def test_adding_a_member_embeds_only_that_member(
    tiny_models, base_config, tmp_path, mini_landmarks
):
    first = [{"model_path": str(tiny_models[0]), "name": "a"}]
    _run(base_config, tmp_path, "a", run_name="ens", ensemble=first)
    both = first + [
        {"model_path": str(tiny_models[1]), "name": "c", "image_size": 96, "tta_flip": True}
    ]
    recognition, retrieval, lines = _run(
        base_config,
        tmp_path,
        "ac",
        run_name="ens",
        ensemble=both,
        ensemble_mode="average",
        retrieval_rerank="soft",
        query_expansion_alpha=3.0,
        knn_backend="faiss",
        non_landmark_dir=str(mini_landmarks / "index"),
    )
    embedded = sorted({line.split()[0] for line in lines if "embedding " in line and "..." in line})
    assert embedded == ["[a]", "[c]"]  # [a] embeds only the non-landmark photos, new to it
    assert not any(
        line.startswith("[a] embedding t") or line.startswith("[a] embedding i") for line in lines
    )
    assert any(line.startswith("[c] embedding train") for line in lines)
    assert len(recognition) == 157 and retrieval["images"].str.split().str.len().eq(100).all()


def test_infer_takes_the_ensemble_and_re_ranking_from_a_preset_and_set(
    tiny_models, base_config, tmp_path, mini_landmarks, capsys
):
    from landmarks.cli import main
    from landmarks.submission import validate_retrieval_submission

    preset = tmp_path / "ensemble.yaml"
    members = [
        {"name": "a", "model_path": str(tiny_models[0])},
        {"name": "b", "model_path": str(tiny_models[1]), "weight": 0.5},
    ]
    preset.write_text(
        json.dumps({**base_config, "ensemble": members, "retrieval_rerank": "bridged"})
    )
    out = tmp_path / "retrieval.csv"
    args = ["infer", "--config", str(preset), "--task", "retrieval", "--out", str(out)]
    assert main(args + ["--set", "bridged_train_k=20", "--set", "bridged_confidence=inverse"]) == 0
    index_ids = sorted(p.stem for p in (mini_landmarks / "index").rglob("*.jpg"))
    test_ids = sorted(p.stem for p in (mini_landmarks / "test").rglob("*.jpg"))
    validate_retrieval_submission(str(out), test_ids, index_ids)
    assert "re-ranking (bridged)" in capsys.readouterr().out
    one = f"ensemble=[{{model_path: {tiny_models[1]}, name: solo}}]"
    assert main(args + ["--set", one, "--set", "retrieval_rerank=label"]) == 0
    assert (tmp_path / "run" / "embeddings" / "solo" / "index.npz").is_file()


@pytest.mark.parametrize(
    "setting, message",
    [
        ("retrieval_rerank=fuzzy", "retrieval_rerank must be one of none, label, soft, bridged"),
        ("label_rerank=true", "label_rerank: true (= retrieval_rerank: label) contradicts"),
        ("bridged_confidence=log", "bridged_confidence must be one of one_minus, inverse"),
        ("rerank_candidates=0", "rerank_candidates must be >= 1"),
        ("soft_rerank_penalty=-1", "soft_rerank_penalty must be >= 0"),
        ("ensemble=[{model_path: missing.keras}]", "embed model not found: missing.keras"),
        ("ensemble=[{model_path: a.keras, weight: -1}]", "ensemble[0]: weight must be"),
        ("ensemble_mode=mean", "ensemble_mode must be one of concat, average"),
    ],
)
def test_bad_ensemble_and_rerank_settings_are_one_line_errors(
    setting, message, base_config, tmp_path, capsys
):
    from landmarks.cli import main

    preset = tmp_path / "p.yaml"
    preset.write_text(json.dumps({**base_config, "retrieval_rerank": "soft"}))
    out = tmp_path / "s.csv"
    args = ["infer", "--config", str(preset), "--task", "retrieval", "--out", str(out)]
    assert main(args + ["--set", setting]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert not out.exists()
