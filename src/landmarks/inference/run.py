"""`run_inference(config, task, out)`, the `infer` command: embed the splits with the saved
embedding model (or the ensemble's models), predict, and write a validated submission. This
module only wires the stages: ensemble (members, cached embeddings), predict (recipes),
soft_rerank / bridged / rerank (the retrieval re-rankings)."""

from __future__ import annotations

import numpy as np

from landmarks.errors import ConfigError, DataError
from landmarks.inference.bridged import CONFIDENCES, bridged_rerank_through_train
from landmarks.inference.ensemble import NON_LANDMARK, EnsembleEmbeddings
from landmarks.inference.predict import predict_recognition, predict_retrieval
from landmarks.inference.search import BACKENDS
from landmarks.inference.soft_rerank import soft_rerank_through_train
from landmarks.io_utils import check_writable_file

RETRIEVAL_RERANKS = ("none", "label", "soft", "bridged")


def run_inference(config, task: str, out_path: str, *, log=print) -> dict:
    """Embed with the run's embed_model (or config.ensemble), predict, write a validated
    submission to `out_path`.

    Recognition: test queries vote over the train (+ holdout) records. Retrieval: test queries
    rank the index images (top 100), re-ranked as config.retrieval_rerank says. Test/index
    images come from the image folders in config.data_dir (or, with image_source "records",
    from records checked against those folders; see landmarks.inference.sources).
    Returns a summary dict (task, queries, out, embeddings folder, members).
    """
    return run_inference_tasks(config, {task: out_path}, log=log)[task]


def run_inference_tasks(config, outputs: dict[str, str], *, log=print) -> dict[str, dict]:
    """`run_inference` for several tasks ({"recognition": path, "retrieval": path}), each split
    embedded (or read from the cache) once per member. Returns {task: summary}."""
    from landmarks.submission import write_recognition_submission, write_retrieval_submission

    for task in outputs:
        if task not in ("recognition", "retrieval"):
            raise ConfigError(f"task must be recognition or retrieval, got {task!r}")
    rerank = retrieval_rerank(config)
    _check_inference_config(config)
    for out_path in outputs.values():
        check_writable_file(out_path, "submission (--out)")
    embeddings = EnsembleEmbeddings(config, log=log)
    test = embeddings.split("test")
    needs_train = "recognition" in outputs or ("retrieval" in outputs and rerank != "none")
    train = train_landmarks = penalties = None
    if needs_train:
        train = embeddings.split("train")
        train_landmarks = train_landmark_ids(config, train.labels)
        non_landmarks = embeddings.split(NON_LANDMARK)
        if non_landmarks is not None:
            penalties = train.descriptors.penalties(
                non_landmarks.descriptors, config.non_landmark_top_n, backend=config.knn_backend
            )

    # How a test or index image gets its landmark: a vote of its knn_k nearest train images.
    voting = dict(
        k=config.knn_k,
        backend=config.knn_backend,
        penalties=penalties,
        threshold=config.recognition_threshold,
    )

    def recognise(images):
        return predict_recognition(images.descriptors, train.descriptors, train_landmarks, **voting)

    summaries = {}
    for task, out_path in outputs.items():
        missing = list(test.unreadable)  # queries whose image could not be read
        if task == "recognition":
            landmarks, confidences = recognise(test)
            write_recognition_submission(
                out_path,
                [*test.ids, *missing],
                np.concatenate([landmarks, np.full(len(missing), -1)]),
                np.concatenate([confidences, np.zeros(len(missing))]),
            )
        else:
            index = embeddings.split("index")
            query_landmarks = index_landmarks = reranker = None
            if rerank == "label":
                query_landmarks, _ = recognise(test)
                index_landmarks, _ = recognise(index)
            elif rerank != "none":
                log(f"re-ranking ({rerank}) through {len(train)} train images")
                reranker = _reranker(config, rerank, test, index, train, train_landmarks, voting)
            ranked = predict_retrieval(
                test.descriptors,
                index.descriptors,
                backend=config.knn_backend,
                expansion_alpha=config.query_expansion_alpha,
                expansion_k=config.query_expansion_k,
                query_landmarks=query_landmarks,
                index_landmarks=index_landmarks,
                rerank=reranker,
                candidates=config.rerank_candidates,
            )
            rankings = [*map(list, index.ids[ranked]), *([] for _ in missing)]
            write_retrieval_submission(
                out_path, [*test.ids, *missing], rankings, index_ids=index.ids
            )
        queries = len(test) + len(missing)
        log(f"wrote {out_path} ({queries} queries)")
        summaries[task] = {
            "task": task,
            "queries": queries,
            "out": out_path,
            "embeddings": embeddings.cache_dir,
            "members": [member.name for member in embeddings.members],
        }
    return summaries


def retrieval_rerank(config) -> str:
    """config.retrieval_rerank, with the older `label_rerank: true` read as "label"."""
    mode = config.retrieval_rerank
    if mode not in RETRIEVAL_RERANKS:
        raise ConfigError(
            f"retrieval_rerank must be one of {', '.join(RETRIEVAL_RERANKS)}, got {mode!r}"
        )
    if config.label_rerank:
        if mode not in ("none", "label"):
            raise ConfigError(
                f"label_rerank: true (= retrieval_rerank: label) contradicts retrieval_rerank: "
                f"{mode}; set only retrieval_rerank"
            )
        return "label"
    return mode


def _reranker(config, mode, test, index, train, train_landmarks, voting):
    """The SoftLabelRerank or BridgedRerank of the config's keys for these splits; `voting`: the
    keywords of predict_recognition (k, backend, penalties, threshold)."""
    splits = (test.descriptors, index.descriptors, train.descriptors, train_landmarks)
    if mode == "soft":
        return soft_rerank_through_train(
            *splits, **voting, bonus=config.soft_rerank_bonus, penalty=config.soft_rerank_penalty
        )
    return bridged_rerank_through_train(
        *splits,
        train_k=config.bridged_train_k,
        landmark_k=config.bridged_landmark_k,
        landmarks=config.bridged_landmarks,
        bonus=config.bridged_bonus,
        power=config.bridged_power,
        confidence=config.bridged_confidence,
        backend=voting["backend"],
        penalties=voting["penalties"],
    )


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
    at_least_one = (
        "rerank_candidates",
        "bridged_train_k",
        "bridged_landmark_k",
        "bridged_landmarks",
    )
    for key in at_least_one:
        if getattr(config, key) < 1:
            raise ConfigError(f"{key} must be >= 1, got {getattr(config, key)}")
    for key in ("soft_rerank_bonus", "soft_rerank_penalty", "bridged_bonus"):
        if not getattr(config, key) >= 0:
            raise ConfigError(f"{key} must be >= 0, got {getattr(config, key)}")
    if not config.bridged_power > 0:
        raise ConfigError(f"bridged_power must be > 0, got {config.bridged_power}")
    if config.bridged_confidence not in CONFIDENCES:
        raise ConfigError(
            f"bridged_confidence must be one of {', '.join(CONFIDENCES)}, "
            f"got {config.bridged_confidence!r}"
        )


def train_landmark_ids(config, labels) -> np.ndarray:
    """Landmark id of every train embedding, from its label (int [N] or None) through
    label_map.csv."""
    from landmarks.data.tfrecords import read_label_map

    if labels is None:
        raise DataError(f"{config.records_dir}: the train records carry no labels")
    table = read_label_map(config.records_dir)
    lookup = dict(zip(table["label"].tolist(), table["landmark_id"].tolist(), strict=True))
    unknown = sorted(set(labels.tolist()) - set(lookup))
    if unknown:
        raise DataError(
            f"{config.records_dir}/label_map.csv: no landmark for label {unknown[0]} "
            f"({len(unknown)} labels missing)"
        )
    return np.asarray([lookup[label] for label in labels.tolist()], np.int64)
