"""`python -m landmarks demo` (`make demo`): the whole flow on mini-landmarks, on CPU.

    mini-landmarks (built when missing)
      -> TFRecords: train (with a stratified holdout), test, index      out/tfrecords/
      -> train with configs/demo.yaml                                   out/run/
      -> embed + kNN -> recognition submission (validated)              out/submission.csv
                     -> retrieval submission (validated)                out/retrieval_submission.csv
      -> GAP and mAP@100 (seen landmarks) and mAP@100 on the landmarks training never saw,
         of the trained model, of the same network untrained (same config, same seed, weights
         never updated) and of the backbone's own GeM features (its pretrained weights, no
         head); how many of the real second photographs are found   out/metrics.json
      -> out/retrieval_grid.png and out/curves.png

Every step is a call to the stage's public function (prepare, train, run_inference, the
metrics and the plots); this module only orders them and chooses the folders.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from landmarks.config import Config
from landmarks.errors import ConfigError
from landmarks.io_utils import write_text_atomic

DEMO_CONFIG = "configs/demo.yaml"
DEMO_DATA = "input/mini-landmarks"
DEMO_OUT = "output/demo"
HOLDOUT = 0.2  # fraction of each landmark's train images kept apart for validation
METRIC_KEYS = (
    "gap",
    "map@100",
    "gap_untrained",
    "map@100_untrained",
    "gap_backbone_gem",
    "map@100_backbone_gem",
    "map@100_unseen",
    "map@100_unseen_untrained",
    "map@100_unseen_backbone_gem",
    "unseen_landmarks",
    "real_photos",
    "real_photos_backbone_gem",
    "real_photos_total",
    "real_photos_unseen",
    "real_photos_unseen_total",
)


def run_demo(
    out_dir: str = DEMO_OUT,
    *,
    data_dir: str = DEMO_DATA,
    config_path: str = DEMO_CONFIG,
    overrides: Sequence[str] = (),
    workers: int = 2,
    log: Callable[[str], None] = print,
) -> dict:
    """Run the demo flow into `out_dir`; returns the metrics written to out_dir/metrics.json
    (METRIC_KEYS): GAP and mAP@100 on the seen landmarks and `map@100_unseen` on the
    `unseen_landmarks` (how many landmarks have no train/ images) (floats in [0, 1]) of the
    trained model, of the same network untrained (`_untrained`) and of the backbone's GeM
    features (`_backbone_gem`); and `real_photos` (`real_photos_backbone_gem`): how many of the
    `real_photos_total` real second photographs are found: a seen landmark's when its landmark
    is the top recognition prediction, an unseen landmark's when its first retrieval result is
    an index image of its landmark (`real_photos_unseen` of `real_photos_unseen_total`).

    `overrides` are `key=value` config settings applied after `config_path` (e.g. a smaller
    image_size or fewer epochs). The run folder out_dir/run is trained afresh on every call;
    the records are reused when they were written with the same settings.
    """
    out = Path(out_dir)
    if not Path(config_path).is_file():
        raise ConfigError(f"demo config not found: {config_path} (run from the repository root)")
    config = Config.load(config_path, overrides)
    if not 0.0 <= config.backbone_gem_weight < 1.0:
        raise ConfigError(
            f"backbone_gem_weight must be in [0, 1), got {config.backbone_gem_weight}"
        )
    records_dir = out / "tfrecords"
    config.update(
        {
            "data_dir": str(data_dir),
            "records_dir": str(records_dir),
            "output_dir": str(out),
            "run_name": "run",
            "model_path": "",
        },
        source="demo",
    )

    _ensure_data(data_dir, log)
    from landmarks.data.demo import real_photo_queries, unseen_landmarks

    real = real_photo_queries(data_dir)  # checked before the long steps
    unseen = unseen_landmarks(data_dir)
    _prepare_records(config, workers, log)

    run_dir = Path(config.run_dir)
    if run_dir.exists():
        shutil.rmtree(run_dir)  # the demo's own run folder: train afresh, never resume
    from landmarks.models.build import build_backbone_gem
    from landmarks.training.trainer import train

    log(f"== training ({config.backbone}, {config.image_size} px, {config.epochs} epochs)")
    train(config)
    trained = Config.load(str(run_dir / "config.yaml"))  # the resolved config (num_classes...)

    gem = _baseline_config(trained, out / "backbone_gem", build_backbone_gem(trained))
    mixed = with_backbone_gem(trained, gem.model_path)
    log(
        "== inference with the trained model"
        + (f" (+ backbone GeM at weight {trained.backbone_gem_weight:g})" if mixed.ensemble else "")
    )
    scores = infer_and_score(mixed, out, log)
    log("== inference with the same network untrained")
    untrained = _baseline_config(trained, out / "untrained", _untrained_model(trained))
    baseline = infer_and_score(untrained, out / "untrained", log)
    log("== inference with the backbone's own GeM features (no head, no training)")
    gem_scores = infer_and_score(gem, out / "backbone_gem", log)

    unseen_truth = read_unseen_truth(config.data_dir)
    found = found_real_photos(out, real, unseen_truth)
    metrics = {
        "gap": scores["gap"],
        "map@100": scores["map@100"],
        "gap_untrained": baseline["gap"],
        "map@100_untrained": baseline["map@100"],
        "gap_backbone_gem": gem_scores["gap"],
        "map@100_backbone_gem": gem_scores["map@100"],
        "map@100_unseen": scores["map@100_unseen"],
        "map@100_unseen_untrained": baseline["map@100_unseen"],
        "map@100_unseen_backbone_gem": gem_scores["map@100_unseen"],
        "unseen_landmarks": len(unseen),
        "real_photos": sum(found.values()),
        "real_photos_backbone_gem": sum(
            found_real_photos(out / "backbone_gem", real, unseen_truth).values()
        ),
        "real_photos_total": len(real),
        "real_photos_unseen": sum(found[q] for q in real if q in unseen_truth),
        "real_photos_unseen_total": sum(1 for q in real if q in unseen_truth),
    }
    write_text_atomic(str(out / "metrics.json"), json.dumps(metrics, indent=2) + "\n")
    _plots(mixed, out, log)
    log(summary_line(metrics))
    log(f"wrote {out / 'submission.csv'}, {out / 'metrics.json'}, retrieval_grid.png, curves.png")
    return metrics


def summary_line(metrics: dict) -> str:
    """The demo's last line: seen-landmark GAP and mAP@100, unseen-landmark mAP@100, each
    beside the untrained network's and the backbone GeM's, and the real photographs found."""

    def three(key: str) -> str:
        return (
            f"{metrics[key]:.4f} (untrained {metrics[key + '_untrained']:.4f}, backbone GeM "
            f"{metrics[key + '_backbone_gem']:.4f})"
        )

    return (
        f"seen landmarks: GAP {three('gap')}, mAP@100 {three('map@100')}; "
        f"{metrics['unseen_landmarks']} unseen landmarks: mAP@100 {three('map@100_unseen')}; "
        f"real photographs found {metrics['real_photos']}/{metrics['real_photos_total']} "
        f"({metrics['real_photos_unseen']}/{metrics['real_photos_unseen_total']} of unseen "
        f"landmarks, by retrieval; backbone GeM {metrics['real_photos_backbone_gem']})"
    )


def _ensure_data(data_dir: str, log) -> None:
    from landmarks.data.demo import FORMAT, MARKER, build_demo_data, read_build_summary

    if (Path(data_dir) / MARKER).is_file() and read_build_summary(data_dir).get("format") == FORMAT:
        return
    log(f"== building mini-landmarks in {data_dir}")
    build_demo_data(data_dir, seed=0, log=log)


def _prepare_records(config: Config, workers: int, log) -> None:
    from landmarks.data.tfrecords import prepare

    for split in ("train", "test", "index"):
        log(f"== TFRecords: {split}")
        prepare(
            config.data_dir,
            split,
            config.records_dir,
            workers=workers,
            holdout=HOLDOUT if split == "train" else 0.0,
            seed=config.seed,
        )


def with_backbone_gem(trained: Config, gem_model_path: str) -> Config:
    """The trained run's config for inference: unchanged when its `backbone_gem_weight` is 0,
    else a two-member `concat` ensemble of its embed_model.keras (weight 1 - w) and the
    backbone GeM model at `gem_model_path` (weight w), cached in the run folder's
    embeddings/run and embeddings/backbone_gem."""
    weight = trained.backbone_gem_weight
    if weight == 0:
        return trained
    mixed = Config.from_dict(trained.to_dict(), source="demo")
    trained_path = str(Path(trained.run_dir) / "embed_model.keras")
    members = [
        {"name": "run", "model_path": trained_path, "weight": 1.0 - weight},
        {"name": "backbone_gem", "model_path": gem_model_path, "weight": weight},
    ]
    mixed.update({"ensemble": members, "ensemble_mode": "concat"}, source="demo")
    return mixed


def _untrained_model(trained: Config):
    """The trained run's embedding network as it was before its first step: same config and
    seed, so the same pretrained backbone and the same random head."""
    import keras

    from landmarks.models.build import build_model

    keras.utils.set_random_seed(trained.seed)
    return build_model(trained)[1]


def _baseline_config(trained: Config, folder: Path, embed_model) -> Config:
    """A config for inference with `embed_model`, saved to folder/embed_model.keras (the rest
    of the trained run's config unchanged)."""
    from landmarks.training.checkpoints import save_keras_atomic

    path = folder / "embed_model.keras"
    folder.mkdir(parents=True, exist_ok=True)
    save_keras_atomic(embed_model, str(path))
    baseline = Config.from_dict(trained.to_dict(), source="demo")
    baseline.update(
        {"model_path": str(path), "output_dir": str(folder.parent), "run_name": folder.name},
        source="demo",
    )
    return baseline


def infer_and_score(config: Config, out: Path, log) -> dict:
    """Recognition and retrieval submissions in `out`, scored against the demo's solutions:
    {"gap", "map@100"} (seen landmarks), "map@100_unseen"}."""
    from landmarks.data.demo import UNSEEN_SOLUTION
    from landmarks.evaluation import evaluate_files
    from landmarks.inference.run import run_inference_tasks

    recognition = out / "submission.csv"
    retrieval = out / "retrieval_submission.csv"
    run_inference_tasks(
        config, {"recognition": str(recognition), "retrieval": str(retrieval)}, log=log
    )
    data = Path(config.data_dir)
    return {
        "gap": evaluate_files(
            "recognition", str(recognition), str(data / "recognition_solution.csv")
        )["gap"],
        "map@100": evaluate_files(
            "retrieval", str(retrieval), str(data / "retrieval_solution.csv")
        )["map@100"],
        "map@100_unseen": evaluate_files("retrieval", str(retrieval), str(data / UNSEEN_SOLUTION))[
            "map@100"
        ],
    }


def read_unseen_truth(data_dir: str) -> dict[str, list[str]]:
    """{unseen landmark's test query: its relevant index ids}."""
    from landmarks.data.demo import UNSEEN_SOLUTION
    from landmarks.metrics import read_retrieval_solution

    return read_retrieval_solution(str(Path(data_dir) / UNSEEN_SOLUTION))


def found_real_photos(
    folder: Path, real: dict[str, int], unseen_truth: dict[str, list[str]]
) -> dict[str, bool]:
    """{real photograph query: found} for the submissions in `folder`: a seen landmark's query
    is found when its top recognition prediction is its landmark (`real`: {id: landmark_id});
    an unseen landmark's (in `unseen_truth`) when its first retrieval result is relevant."""
    from landmarks.submission import read_recognition_submission, read_retrieval_submission

    predicted = read_recognition_submission(str(folder / "submission.csv"))
    ranked = read_retrieval_submission(str(folder / "retrieval_submission.csv"))
    return {
        query: (
            bool(ranked.get(query)) and ranked[query][0] in set(unseen_truth[query])
            if query in unseen_truth
            else (predicted.get(query) or (None,))[0] == landmark
        )
        for query, landmark in real.items()
    }


def _plots(config: Config, out: Path, log) -> None:
    """curves.png from the run folder; retrieval_grid.png of the scored submission, with the
    similarities of the embeddings it searched (each member's, weighted, for a mix)."""
    run_dir = Path(config.run_dir)
    shutil.copyfile(run_dir / "curves.png", out / "curves.png")
    embeddings = [(str(run_dir / "embeddings"), 1.0)]
    if config.ensemble:
        embeddings = [
            (str(run_dir / "embeddings" / member["name"]), member["weight"])
            for member in config.ensemble
        ]
    retrieval_grid(
        str(out / "retrieval_submission.csv"),
        config.data_dir,
        str(out / "retrieval_grid.png"),
        embeddings=embeddings,
    )
    log(f"plots: {out / 'curves.png'}, {out / 'retrieval_grid.png'}")


GRID_NEIGHBOURS = 5


def choose_grid_queries(
    ranked: dict[str, list[str]],
    relevant: dict[str, list[str]],
    rows: int,
    top_similarity: dict[str, float] | None = None,
) -> list[str]:
    """The queries of the retrieval grid, by this rule:

    the scored queries (in `relevant`, i.e. not Ignored, and in `ranked`) are split into hits
    (a relevant image among their top 5) and misses; half of the rows, rounded up, are hits and
    the others misses (the other kind fills in when one runs short). Each group is ordered by
    the similarity of the query's first neighbour, highest first (by id without similarities),
    and its queries are taken evenly spaced along that order, from the most confident to the
    least. Hits come first.
    """
    scored = sorted(query for query in relevant if query in ranked)
    hits = [q for q in scored if set(ranked[q][:GRID_NEIGHBOURS]) & set(relevant[q])]
    misses = [q for q in scored if q not in set(hits)]
    if top_similarity is not None:
        hits.sort(key=lambda q: -top_similarity[q])
        misses.sort(key=lambda q: -top_similarity[q])
    want_hits = min(len(hits), max(rows - len(misses), (rows + 1) // 2))
    want_misses = min(len(misses), rows - want_hits)
    return _evenly_spaced(hits, want_hits) + _evenly_spaced(misses, want_misses)


def _evenly_spaced(items: list[str], count: int) -> list[str]:
    if count <= 0:
        return []
    positions = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[p] for p in positions]


def retrieval_grid(
    submission: str,
    data_dir: str,
    out_png: str,
    *,
    embeddings: list[tuple[str, float]] | None = None,
    rows: int = 6,
    unseen_rows: int = 4,
) -> list[str]:
    """retrieval_grid.png: representative test queries of a retrieval submission (chosen by
    `choose_grid_queries`: some hits, some misses) with their top-5 index images, each framed
    green when relevant and red otherwise, captioned with its rank, its cosine similarity to
    the query (from test.npz and index.npz in each (folder, weight) of `embeddings`, when
    given: the weighted mean of their cosine similarities) and its landmark's name
    (landmarks.csv when the data folder has it, else the landmark id; index images relevant to
    no query are distractors). `rows` queries of the seen landmarks (retrieval_solution.csv),
    then, when the data folder has retrieval_solution_unseen.csv, `unseen_rows` queries of the
    landmarks training never saw, titled "unseen landmark". Returns the query ids shown.
    """
    from landmarks.data.demo import UNSEEN_SOLUTION
    from landmarks.data.gldv2 import image_path
    from landmarks.metrics import read_retrieval_solution
    from landmarks.plots import plot_retrieval_grid
    from landmarks.submission import read_retrieval_submission

    data = Path(data_dir)
    ranked = read_retrieval_submission(submission)
    groups = [("", read_retrieval_solution(str(data / "retrieval_solution.csv")), rows)]
    if (data / UNSEEN_SOLUTION).is_file():
        unseen = read_retrieval_solution(str(data / UNSEEN_SOLUTION))
        groups.append(("unseen landmark ", unseen, unseen_rows))
    query_landmarks = _query_landmarks(str(data / "recognition_solution.csv"))
    names = _landmark_names(data / "landmarks.csv")
    similarity = _similarity(embeddings) if embeddings else None

    chosen: list[str] = []
    titles: list[str] = []
    index_landmarks: dict[str, int] = {}
    for prefix, relevant, count in groups:
        top = (
            {q: similarity(q, ranked[q][0]) for q in relevant if q in ranked and ranked[q]}
            if similarity
            else None
        )
        picked = choose_grid_queries(ranked, relevant, count, top)
        chosen += picked
        titles += [prefix + _grid_title(ranked[q], relevant[q]) for q in picked]
        for query, images in relevant.items():
            index_landmarks.update(dict.fromkeys(images, query_landmarks[query]))

    def name(landmark) -> str | int:
        return names.get(landmark, landmark) if landmark is not None else "distractor"

    shown = {q: ranked[q][:GRID_NEIGHBOURS] for q in chosen}
    plot_retrieval_grid(
        [image_path(data_dir, "test", q) for q in chosen],
        [[image_path(data_dir, "index", image) for image in shown[q]] for q in chosen],
        out_png,
        query_labels=[name(query_landmarks[q]) for q in chosen],
        neighbour_labels=[[name(index_landmarks.get(i)) for i in shown[q]] for q in chosen],
        similarities=[[similarity(q, i) for i in shown[q]] for q in chosen] if similarity else None,
        titles=titles,
        heading=f"{len(chosen)} test queries and their top {GRID_NEIGHBOURS} index images "
        "(green: relevant); hits and misses, each spread from the most to the least confident",
    )
    return chosen


def _query_landmarks(recognition_solution: str) -> dict[str, int]:
    """{landmark query: its landmark id} from a recognition solution, its Ignored rows too
    (mini-landmarks names the unseen landmarks' queries there without scoring them)."""
    from landmarks.submission import read_csv_columns

    table = read_csv_columns(recognition_solution, ("id", "landmarks", "Usage"))
    return {
        query: int(value.split()[0])
        for query, value in zip(table["id"], table["landmarks"], strict=True)
        if value.strip()
    }


def _grid_title(ranking: list[str], relevant: list[str]) -> str:
    first = next((r for r, image in enumerate(ranking, 1) if image in set(relevant)), None)
    if first is not None and first <= GRID_NEIGHBOURS:
        return f"query: hit, first relevant #{first}"
    return "query: miss" + (f", first relevant #{first}" if first else ", none in top 100")


def _landmark_names(path: Path) -> dict[int, str]:
    """landmark_id -> name from landmarks.csv ({} when the file is absent)."""
    if not path.is_file():
        return {}
    import pandas as pd

    table = pd.read_csv(path, usecols=["landmark_id", "name"])
    return dict(zip(table["landmark_id"].astype(int), table["name"].astype(str), strict=True))


def _similarity(embeddings: list[tuple[str, float]]):
    """(test id, index id) -> the weighted mean, over (folder, weight) of `embeddings` (weights
    normalised to sum 1), of the cosine similarities of their saved test and index embeddings:
    the similarity a concat ensemble searches with (landmarks.inference.ensemble)."""
    from landmarks.inference.embedding import load_embeddings

    total = sum(weight for _, weight in embeddings)
    parts = []
    for folder, weight in embeddings:
        test = load_embeddings(str(Path(folder) / "test.npz"))
        index = load_embeddings(str(Path(folder) / "index.npz"))
        test_rows = {image: row for row, image in enumerate(test.ids)}
        index_rows = {image: row for row, image in enumerate(index.ids)}
        parts.append((weight / total, test, index, test_rows, index_rows))
    return lambda query, image: sum(
        float(weight * (test.vectors[test_rows[query]] @ index.vectors[index_rows[image]]))
        for weight, test, index, test_rows, index_rows in parts
    )
