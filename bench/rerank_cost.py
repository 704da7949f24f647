"""Benchmark: the cost of soft and bridged re-ranking against plain retrieval, stage by stage.

Synthetic clustered embeddings (L2-normalised float32, `--landmarks` centres with noise, fixed
seed): `--queries` test images, an index of `--index` images and `--train` labelled train
images, `--dim` dimensions, knn back end `--backend`. Stages, each timed alone (best of
`--repeats`):

    plain          the reference: top-100 index images per query (predict_retrieval)
    direct-750     the top-750 candidates that both re-rankings start from (search)
    soft-labels    the knn_k (10) nearest train images of every query and index image (search)
    soft-vote      their votes and scores (numpy: recognize + landmark_scores)
    soft-rerank    bonus/penalty and re-sort of the 750 candidates (numpy)
    bridged-train  the 300 nearest train images of every query and index image (search)
    bridged-lists  the 5 nearest landmarks and their distances per image (numpy)
    bridged-rerank candidates, exact direct and bridged scores, top 100 (numpy)

Printed per stage: seconds, and per image (queries, or queries + index for the train stages)
microseconds; last line: JSON of each stage's seconds and ratio to `plain`, and the two totals
(soft = direct-750 + soft-*; bridged = direct-750 + bridged-*) over plain. The searches' costs
scale with queries x rows x dim (their FLOP/s are those of bench/knn.py); the numpy stages
scale with the images and candidates per query; docs/gldv2-scale.md scales them so.

    .venv/bin/python bench/rerank_cost.py [--queries 2000] [--index 50000] [--train 100000]
        [--dim 512] [--landmarks 5000] [--backend tf] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def make_data(args):
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((args.landmarks, args.dim)).astype(np.float32)

    def images(count):
        ids = rng.integers(0, args.landmarks, count)
        vectors = centres[ids] + 0.8 * rng.standard_normal((count, args.dim), dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), ids

    (train, train_ids), (index, _), (queries, _) = (
        images(args.train),
        images(args.index),
        images(args.queries),
    )
    return queries, index, train, train_ids


def best_time(function, repeats):
    best, result = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--index", type=int, default=50000)
    parser.add_argument("--train", type=int, default=100000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--landmarks", type=int, default=5000)
    parser.add_argument("--backend", default="tf")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from landmarks.inference.bridged import BridgedRerank, landmark_distances
    from landmarks.inference.descriptors import Descriptors
    from landmarks.inference.predict import predict_retrieval
    from landmarks.inference.recognition import recognize
    from landmarks.inference.soft_rerank import SoftLabelRerank, landmark_scores

    queries, index, train, train_ids = make_data(args)
    q, x, t = Descriptors([queries]), Descriptors([index]), Descriptors([train])
    both = Descriptors([np.concatenate([queries, index])])
    backend, repeats, candidates = args.backend, args.repeats, 750
    predict_retrieval(q.take(slice(0, 8)), x, backend=backend)  # warm-up (traces the TF search)

    seconds, per = {}, {}
    seconds["plain"], _ = best_time(lambda: predict_retrieval(q, x, backend=backend), repeats)
    seconds["direct-750"], (sims, rows) = best_time(
        lambda: q.search(x, candidates, backend=backend), repeats
    )
    seconds["soft-labels"], (lab_sims, lab_rows) = best_time(
        lambda: both.search(t, 10, backend=backend), repeats
    )

    def vote():
        landmarks, _ = recognize(lab_sims, lab_rows, train_ids)
        return landmarks, landmark_scores(lab_sims, lab_rows, train_ids, landmarks)

    seconds["soft-vote"], (landmarks, scores) = best_time(vote, repeats)
    soft = SoftLabelRerank(landmarks[: len(q)], landmarks[len(q) :], scores[len(q) :])
    seconds["soft-rerank"], _ = best_time(lambda: soft(sims, rows, q, x, 100), repeats)
    seconds["bridged-train"], (br_sims, br_rows) = best_time(
        lambda: both.search(t, 300, backend=backend), repeats
    )
    seconds["bridged-lists"], (ids, distances) = best_time(
        lambda: landmark_distances(br_sims, br_rows, train_ids), repeats
    )
    bridged = BridgedRerank(ids[: len(q)], distances[: len(q)], ids[len(q) :], distances[len(q) :])
    seconds["bridged-rerank"], _ = best_time(lambda: bridged(sims, rows, q, x, 100), repeats)

    images = {"soft-labels": len(both), "soft-vote": len(both), "bridged-train": len(both)}
    images["bridged-lists"] = len(both)
    for stage, value in seconds.items():
        per[stage] = 1e6 * value / images.get(stage, len(q))
        print(f"{stage:15s} {value:8.3f} s  {per[stage]:9.1f} us per image", flush=True)
    soft_total = seconds["direct-750"] + sum(v for k, v in seconds.items() if k.startswith("soft"))
    bridged_total = seconds["direct-750"] + sum(
        v for k, v in seconds.items() if k.startswith("bridged")
    )
    summary = {f"{stage}_s": round(value, 3) for stage, value in seconds.items()}
    summary.update({f"{stage}_us_per_image": round(value, 1) for stage, value in per.items()})
    summary["soft_over_plain"] = round(soft_total / seconds["plain"], 2)
    summary["bridged_over_plain"] = round(bridged_total / seconds["plain"], 2)
    summary["shape"] = [args.queries, args.index, args.train, args.dim]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
