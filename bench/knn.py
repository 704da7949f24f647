"""Benchmark: exact top-5 inner-product search of 5,000 queries in a 200,000 x 512 index.

Methods (each in its own subprocess, so its peak memory is its own):
  tf          landmarks.inference.knn backend "tf", precision "auto" (the default: a bfloat16 screen
              re-scored in float32 on CPUs with AVX512_BF16/AMX, float32 elsewhere)
  tf-float32  landmarks.inference.knn backend "tf", precision "float32" (chunked matmul + top_k)
  faiss       faiss.IndexFlatIP (the reference of the goals: tf and auto time <= 1.0 x faiss time)
  auto        landmarks.inference.knn backend "auto" (the default: the back end it resolves to on
              this machine, printed in the header)
  numpy       landmarks.inference.knn backend "numpy" (chunked matmul + argpartition)

Data: random normal vectors, L2-normalised, float32, fixed seed. Time: the search alone (after
one small warm-up call that traces the TF function), best of `--repeats` rounds that interleave
the methods. Memory: peak
resident set size of the process (ru_maxrss) and the part of it added by the search (peak minus
the resident size just before the search). Results are checked equal across methods.
The header names the CPU model, whether it has native bfloat16 dot products (AVX512_BF16/AMX)
and the load average before the run (the machine may be shared: the ratios are fair because the
rounds interleave the methods, the absolute times are not).
Last printed line: JSON of the ratios (time and added memory of each method over faiss).

    .venv/bin/python bench/knn.py [--queries 5000] [--index 200000] [--dim 512] [--k 5]
    .venv/bin/python bench/knn.py --same-process [--repeats 3]   auto against faiss only,
        alternating in one process (the fairest ratio on a loaded, shared machine)
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

METHODS = ("tf", "tf-float32", "faiss", "numpy", "auto")


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

    from landmarks.inference.search import knn, resolve_backend

    queries, index = make_data(args.queries, args.index, args.dim)
    backend, _, precision = args.method.partition("-")
    options = {}
    if resolve_backend(backend) == "tf":
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


def run_auto_against_faiss(args) -> None:
    """Time knn backend "auto" and "faiss" alternately in this one process (best of
    `--repeats` each); print the CPU, the load before and after, and their ratio as JSON."""
    from landmarks.inference.knn_tf import bfloat16_is_fast
    from landmarks.inference.search import knn, resolve_backend

    queries, index = make_data(args.queries, args.index, args.dim)
    resolved = resolve_backend("auto")
    load_before = os.getloadavg()
    knn(queries[:8], index[:1000], args.k)  # traces the TF function when auto is tf
    times = {"auto": [], "faiss": []}
    results = {}
    for _ in range(args.repeats):
        for backend in times:
            start = time.perf_counter()
            results[backend] = knn(queries, index, args.k, backend=backend)
            times[backend].append(time.perf_counter() - start)
    same = float(np.mean(results["auto"][1] == results["faiss"][1]))
    summary = {
        "cpu": _cpu_model(),
        "native_bf16": bfloat16_is_fast(),
        "auto_resolves_to": resolved,
        "auto_seconds": [round(t, 2) for t in times["auto"]],
        "faiss_seconds": [round(t, 2) for t in times["faiss"]],
        "auto_time_over_faiss": round(min(times["auto"]) / min(times["faiss"]), 3),
        "indices_equal": same,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    summary["goal_auto_time_le_1x_faiss"] = summary["auto_time_over_faiss"] <= 1.0
    print(json.dumps(summary))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--index", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=1024, help="tf: queries per step")
    parser.add_argument("--index-chunk-size", type=int, default=8192, help="tf: rows per step")
    parser.add_argument(
        "--same-process", action="store_true", help="time auto against faiss in one process"
    )
    parser.add_argument("--method", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method:
        run_child(args)
        return
    if args.same_process:
        run_auto_against_faiss(args)
        return

    from landmarks.inference.knn_tf import bfloat16_is_fast
    from landmarks.inference.search import resolve_backend

    auto = "bfloat16" if bfloat16_is_fast() else "float32"
    print(
        f"exact top-{args.k}: {args.queries} queries x {args.index} x {args.dim} float32, "
        f"tf chunks {args.chunk_size} x {args.index_chunk_size}, tf precision auto = {auto} here, "
        f"knn_backend auto = {resolve_backend('auto')} here"
    )
    print(
        f"cpu: {_cpu_model()}, {os.cpu_count()} cores, native bf16 dot products "
        f"{'yes' if bfloat16_is_fast() else 'no'}; load average before the run "
        + " ".join(f"{load:.2f}" for load in os.getloadavg())
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
    for method in ("tf", "tf-float32", "numpy", "auto"):
        same = float(np.mean(results[method]["indices"] == reference["indices"]))
        gap = float(np.abs(results[method]["values"] - reference["values"]).max())
        print(
            f"{method} vs faiss: {same:.6f} of indices equal, max |similarity difference| {gap:.2e}"
        )
        # Indices may differ only where two similarities are closer than float32 round-off.
        if gap > 1e-4 or same < 0.999:
            sys.exit(f"{method} results differ from faiss")
    ratios = {}
    for method in ("tf", "tf-float32", "numpy", "auto"):
        name, r = method.replace("-", "_"), results[method]
        ratios[f"{name}_time_over_faiss"] = round(r["seconds"] / reference["seconds"], 3)
        ratios[f"{name}_added_memory_over_faiss"] = round(
            r["search_added_mib"] / max(reference["search_added_mib"], 1.0), 3
        )
    ratios["goal_tf_time_le_1x_faiss"] = ratios["tf_time_over_faiss"] <= 1.0
    ratios["goal_auto_time_le_1x_faiss"] = ratios["auto_time_over_faiss"] <= 1.0
    ratios["cpu"] = _cpu_model()
    ratios["native_bf16"] = bfloat16_is_fast()
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


def _cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else the platform's processor."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


def _child_env() -> dict:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


if __name__ == "__main__":
    main()
