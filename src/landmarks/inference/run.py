"""`run_inference(config, task, out)`, the `infer` command: embed the splits with the saved
embedding model, predict, and write a validated submission."""

from __future__ import annotations

import os
import zipfile

import numpy as np

from landmarks.errors import ConfigError, DataError
from landmarks.inference.embedding import (
    Embeddings,
    embed,
    save_embeddings,
)
from landmarks.inference.predict import predict_recognition, predict_retrieval
from landmarks.inference.recognition import non_landmark_penalties
from landmarks.inference.search import BACKENDS
from landmarks.inference.sources import check_embedded_ids, image_files, split_images
from landmarks.io_utils import check_writable_file


def run_inference(config, task: str, out_path: str, *, log=print) -> dict:
    """Embed with the run's embed_model, predict, write a validated submission to `out_path`.

    Recognition: test queries vote over the train (+ holdout) records. Retrieval: test queries
    rank the index images (top 100). Test/index images come from the image folders in
    config.data_dir (or, with image_source "records", from records checked against those
    folders; see landmarks.inference.sources).
    Returns a summary dict (task, queries, out, embeddings folder).
    """
    return run_inference_tasks(config, {task: out_path}, log=log)[task]


def run_inference_tasks(config, outputs: dict[str, str], *, log=print) -> dict[str, dict]:
    """`run_inference` for several tasks ({"recognition": path, "retrieval": path}) with one
    model load, each split embedded once. Returns {task: summary}."""
    from landmarks.submission import write_recognition_submission, write_retrieval_submission

    for task in outputs:
        if task not in ("recognition", "retrieval"):
            raise ConfigError(f"task must be recognition or retrieval, got {task!r}")
    _check_inference_config(config)
    for out_path in outputs.values():
        check_writable_file(out_path, "submission (--out)")
    model = load_embed_model(config)
    cache = os.path.join(config.run_dir, "embeddings")
    embedded: dict[str, Embeddings | None] = {}

    def get(split: str) -> Embeddings:
        if split == "train" and split not in embedded:
            embedded[split] = reusable_train_embeddings(config, log)
        if embedded.get(split) is None:
            log(f"embedding {split} ...")
            embedded[split] = embed_split(model, config, split, log=log)
            save_embeddings(
                os.path.join(cache, f"{split}.npz"), embedded[split], dtype=config.embed_dtype
            )
            log(f"embedded {len(embedded[split])} {split} images")
        return embedded[split]

    test = get("test")
    needs_train = "recognition" in outputs or config.label_rerank
    train = train_landmarks = penalties = None
    if needs_train:
        train = get("train")
        train_landmarks = train_landmark_ids(config, train)
        non_landmarks = non_landmark_vectors(model, config, log)
        if non_landmarks is not None:
            penalties = non_landmark_penalties(
                train.vectors, non_landmarks, config.non_landmark_top_n, backend=config.knn_backend
            )

    def recognise(vectors):
        return predict_recognition(
            vectors,
            train.vectors,
            train_landmarks,
            k=config.knn_k,
            backend=config.knn_backend,
            penalties=penalties,
            threshold=config.recognition_threshold,
        )

    summaries = {}
    for task, out_path in outputs.items():
        missing = list(test.unreadable)  # queries whose image could not be read
        if task == "recognition":
            landmarks, confidences = recognise(test.vectors)
            write_recognition_submission(
                out_path,
                [*test.ids, *missing],
                np.concatenate([landmarks, np.full(len(missing), -1)]),
                np.concatenate([confidences, np.zeros(len(missing))]),
            )
        else:
            index = get("index")
            query_landmarks = index_landmarks = None
            if config.label_rerank:
                query_landmarks, _ = recognise(test.vectors)
                index_landmarks, _ = recognise(index.vectors)
            ranked = predict_retrieval(
                test.vectors,
                index.vectors,
                backend=config.knn_backend,
                expansion_alpha=config.query_expansion_alpha,
                expansion_k=config.query_expansion_k,
                query_landmarks=query_landmarks,
                index_landmarks=index_landmarks,
            )
            rankings = [*map(list, index.ids[ranked]), *([] for _ in missing)]
            write_retrieval_submission(
                out_path, [*test.ids, *missing], rankings, index_ids=index.ids
            )
        queries = len(test) + len(missing)
        log(f"wrote {out_path} ({queries} queries)")
        summaries[task] = {"task": task, "queries": queries, "out": out_path, "embeddings": cache}
    return summaries


def _check_inference_config(config) -> None:
    """ConfigError naming the key for settings that would fail only later."""
    if config.knn_backend not in BACKENDS:
        raise ConfigError(
            f"knn_backend must be one of {', '.join(BACKENDS)}, got {config.knn_backend!r}"
        )
    if config.embed_dtype not in ("float32", "float16"):
        raise ConfigError(f"embed_dtype must be float32 or float16, got {config.embed_dtype!r}")
    if config.knn_k < 1 or config.non_landmark_top_n < 1 or config.query_expansion_k < 0:
        raise ConfigError(
            "knn_k and non_landmark_top_n must be >= 1 and query_expansion_k >= 0, got "
            f"{config.knn_k}, {config.non_landmark_top_n}, {config.query_expansion_k}"
        )
    if not config.tta_scales or any(scale <= 0 for scale in config.tta_scales):
        raise ConfigError(f"tta_scales must be positive numbers, got {config.tta_scales}")


def model_file(config) -> str:
    """The saved embedding model's path: config.model_path or run_dir/embed_model.keras."""
    return config.model_path or os.path.join(config.run_dir, "embed_model.keras")


def load_embed_model(config):
    """The saved embedding model (`model_file`)."""
    import keras
    import tensorflow as tf

    import landmarks.models  # noqa: F401  (registers the custom layers for deserialisation)

    path = model_file(config)
    if not tf.io.gfile.exists(path):
        raise ConfigError(f"embed model not found: {path} (set model_path or train first)")
    if tf.io.gfile.isdir(path):
        raise ConfigError(f"model_path {path}: is a folder; give its embed_model.keras file")
    opener = tf.io.gfile.GFile if "://" in path else open
    with opener(path, "rb") as handle:
        head = handle.read(8)
        handle.seek(0)
        try:
            is_archive = zipfile.is_zipfile(handle)
        except tf.errors.OpError:  # GFile refuses to seek before the start of a tiny file
            is_archive = False
    if not (is_archive or head.startswith(b"\x89HDF")):  # .keras is a zip; legacy .h5 is HDF5
        damaged = " (it starts like one: truncated?)" if head.startswith(b"PK") else ""
        raise ConfigError(
            f"model_path {path}: not a Keras model file{damaged}; expected a .keras archive "
            "such as the embed_model.keras that `train` writes"
        )
    try:
        return keras.saving.load_model(path, compile=False)
    except (ValueError, OSError, KeyError, zipfile.BadZipFile) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            f"model_path {path}: cannot be loaded as a Keras model (damaged?): {first}"
        ) from error


def reusable_train_embeddings(config, log=print) -> Embeddings | None:
    """The attached train embeddings config.train_embeddings (`export --train-embeddings`) when
    their fingerprint equals the model's and the embedding settings' (landmarks.inference.
    fingerprint), else None: the train records are embedded. Logs which, and why."""
    import tensorflow as tf

    from landmarks.inference.embedding import load_embeddings
    from landmarks.inference.fingerprint import differences, model_fingerprint, read_fingerprint

    path = config.train_embeddings
    if not path:
        return None
    if not tf.io.gfile.exists(path):
        log(f"train: no attached embeddings at {path}; embedding the train records")
        return None
    changed = differences(model_fingerprint(model_file(config), config), read_fingerprint(path))
    if changed:
        log(
            f"train: the attached embeddings {path} were made otherwise ({'; '.join(changed)}); "
            "embedding the train records"
        )
        return None
    train = load_embeddings(path)
    log(f"train: reusing {len(train)} attached embeddings from {path} (fingerprint matches)")
    return train


def embed_split(model, config, split: str, *, log=print) -> Embeddings:
    """Embeddings of a split, with the config's flip and scale TTA; its images come from where
    landmarks.inference.sources says (train: the records; test/index: the data folder, or
    records checked against it). Logs the source."""
    from landmarks.data.record_check import naming_bad_records

    images = split_images(config, split)
    log(f"{split}: {images.description}")
    with naming_bad_records(images.record_files, log=log):
        embedded = embed(
            model, images.make_dataset, tta_flip=config.tta_flip, scales=tuple(config.tta_scales)
        )
    unreadable = check_embedded_ids(images, embedded.ids)
    if unreadable:
        named = ", ".join(unreadable[:5]) + (
            f" and {len(unreadable) - 5} more" if len(unreadable) > 5 else ""
        )
        log(
            f"warning: {len(unreadable)} {split} image(s) could not be read and are left out "
            f"(their queries get an empty prediction): {named}"
        )
        embedded.unreadable = tuple(unreadable)
    return embedded


def train_landmark_ids(config, train: Embeddings) -> np.ndarray:
    """Landmark id of every train embedding, from its label through label_map.csv."""
    from landmarks.data.tfrecords import read_label_map

    if train.labels is None:
        raise DataError(f"{config.records_dir}: the train records carry no labels")
    table = read_label_map(config.records_dir)
    lookup = dict(zip(table["label"].tolist(), table["landmark_id"].tolist(), strict=True))
    unknown = sorted(set(train.labels.tolist()) - set(lookup))
    if unknown:
        raise DataError(
            f"{config.records_dir}/label_map.csv: no landmark for label {unknown[0]} "
            f"({len(unknown)} labels missing)"
        )
    return np.asarray([lookup[label] for label in train.labels.tolist()], np.int64)


def non_landmark_vectors(model, config, log=print) -> np.ndarray | None:
    """Embeddings [M, D] of the photos under config.non_landmark_dir, or None when the penalty
    is off or no folder is set."""
    if not config.non_landmark_penalty:
        return None
    if not config.non_landmark_dir:
        log("non-landmark penalty: no non_landmark_dir set, votes are not penalised")
        return None
    import tensorflow as tf

    paths = sorted(
        os.path.join(folder, name)
        for folder, _, names in tf.io.gfile.walk(config.non_landmark_dir)
        for name in names
        if name.lower().endswith((".jpg", ".jpeg"))
    )
    if not paths:
        raise DataError(f"non_landmark_dir {config.non_landmark_dir}: no .jpg images found")
    ids = [os.path.splitext(os.path.basename(path))[0] for path in paths]

    factory = image_files(config, paths, ids)
    vectors = embed(model, factory, tta_flip=config.tta_flip, scales=tuple(config.tta_scales))
    log(f"non-landmark penalty: {len(vectors)} photos from {config.non_landmark_dir}")
    return vectors.vectors
