"""Benchmark: exact top-5 inner-product search of 5,000 queries in a 200,000 x 512 index.

Methods (each in its own subprocess, so its peak memory is its own):
  tf          landmarks.inference.knn backend "tf", precision "auto" (the default: a bfloat16 screen
              re-scored in float32 on CPUs with AVX512_BF16/AMX, float32 elsewhere)
  tf-float32  landmarks.inference.knn backend "tf", precision "float32" (chunked matmul + top_k)
  faiss       faiss.IndexFlatIP (the reference of the goal: tf time <= 1.0 x faiss time)
  numpy       landmarks.inference.knn backend "numpy" (chunked matmul + argpartition)

Data: random normal vectors, L2-normalised, float32, fixed seed. Time: the search alone (after
one small warm-up call that traces the TF function), best of `--repeats` rounds that interleave
the methods. Memory: peak
resident set size of the process (ru_maxrss) and the part of it added by the search (peak minus
the resident size just before the search). Results are checked equal across methods.
Last printed line: JSON of the ratios (time and added memory of each method over faiss).

    .venv/bin/python bench/knn.py [--queries 5000] [--index 200000] [--dim 512] [--k 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

METHODS = ("tf", "tf-float32", "faiss", "numpy")


def make_data(queries: int, index: int, dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((index, dim), dtype=np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    query = rng.standard_normal((queries, dim), dtype=np.float32)
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    return query, base


def run_child(args) -> None:
    """Time one method; write its results to args.out and print a JSON line of measurements."""
    import psutil

    from landmarks.inference.search import knn

    queries, index = make_data(args.queries, args.index, args.dim)
    backend, _, precision = args.method.partition("-")
    options = {}
    if backend == "tf":
        options = {
            "chunk_size": args.chunk_size,
            "index_chunk_size": args.index_chunk_size,
            "precision": precision or "auto",
        }
        knn(queries[:8], index[:1000], args.k, backend="tf", **options)  # trace once
    rss_before = psutil.Process().memory_info().rss
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        values, indices = knn(queries, index, args.k, backend=backend, **options)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    np.savez(args.out, values=values, indices=indices)
    print(
        json.dumps(
            {
                "method": args.method,
                "seconds": min(times),
                "all_seconds": times,
                "peak_rss_mib": peak / 2**20,
                "search_added_mib": max(0, peak - rss_before) / 2**20,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--index", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=1024, help="tf: queries per step")
    parser.add_argument("--index-chunk-size", type=int, default=8192, help="tf: rows per step")
    parser.add_argument("--method", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method:
        run_child(args)
        return

    from landmarks.inference.knn_tf import bfloat16_is_fast

    auto = "bfloat16" if bfloat16_is_fast() else "float32"
    print(
        f"exact top-{args.k}: {args.queries} queries x {args.index} x {args.dim} float32, "
        f"cpu cores {os.cpu_count()}, tf chunks {args.chunk_size} x {args.index_chunk_size}, "
        f"tf precision auto = {auto} here"
    )
    # Rounds interleave the methods (tf, faiss, numpy, tf, ...) so that a shared, changing CPU
    # load falls on all of them alike; each method keeps its fastest round.
    runs: dict[str, list[dict]] = {method: [] for method in METHODS}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeats):
            for method in METHODS:
                runs[method].append(_run_method(method, args, folder))
    results = {method: min(runs[method], key=lambda run: run["seconds"]) for method in METHODS}
    for method in METHODS:
        results[method]["all_seconds"] = [run["seconds"] for run in runs[method]]
    for method in METHODS:
        r = results[method]
        runs = ", ".join(f"{t:.2f}" for t in r["all_seconds"])
        print(
            f"{method:10s} {r['seconds']:8.2f} s (rounds {runs})  peak RSS "
            f"{r['peak_rss_mib']:7.0f} MiB  added by search {r['search_added_mib']:6.0f} MiB"
        )
    reference = results["faiss"]
    for method in ("tf", "tf-float32", "numpy"):
        same = float(np.mean(results[method]["indices"] == reference["indices"]))
        gap = float(np.abs(results[method]["values"] - reference["values"]).max())
        print(
            f"{method} vs faiss: {same:.6f} of indices equal, max |similarity difference| {gap:.2e}"
        )
        # Indices may differ only where two similarities are closer than float32 round-off.
        if gap > 1e-4 or same < 0.999:
            sys.exit(f"{method} results differ from faiss")
    ratios = {}
    for method in ("tf", "tf-float32", "numpy"):
        name, r = method.replace("-", "_"), results[method]
        ratios[f"{name}_time_over_faiss"] = round(r["seconds"] / reference["seconds"], 3)
        ratios[f"{name}_added_memory_over_faiss"] = round(
            r["search_added_mib"] / max(reference["search_added_mib"], 1.0), 3
        )
    ratios["goal_tf_time_le_1x_faiss"] = ratios["tf_time_over_faiss"] <= 1.0
    print(json.dumps(ratios))


def _run_method(method: str, args, folder: str) -> dict:
    """One timed search of `method` in a fresh subprocess: its measurements and results."""
    out = os.path.join(folder, f"{method}.npz")
    command = [sys.executable, __file__, "--method", method, "--out", out, "--repeats", "1"]
    for name in ("queries", "index", "dim", "k", "chunk_size", "index_chunk_size"):
        command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    done = subprocess.run(command, capture_output=True, text=True, env=_child_env())
    if done.returncode != 0:
        sys.exit(f"{method} failed:\n{done.stderr[-3000:]}")
    run = json.loads(done.stdout.strip().splitlines()[-1])
    with np.load(out) as saved:
        run["values"], run["indices"] = saved["values"], saved["indices"]
    return run


def _child_env() -> dict:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


if __name__ == "__main__":
    main()
