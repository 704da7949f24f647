"""Benchmark of `prepare --engine beam` against the local build, in images/s per worker.

The same table, plan and options are written by both engines on this machine:
  local1 / local2   write_records, 1 worker (this process) / 2 worker processes (forkserver)
  beam1 / beam2     write_records(engine="beam") on Beam's Python runner (what DirectRunner is
                    pinned to), 1 worker (in this process) / 2 worker processes
                    (--direct_num_workers=2 --direct_running_mode=multi_processing)
  copy-local1 / copy-beam1   the same at 1 worker without --image-size (JPEGs copied through:
                    the per-image work is small, so Beam's per-shard overhead shows most)

Each build's wall time includes starting its workers (the 2-worker Beam run starts two Python
processes that import TensorFlow, as a Dataflow worker does once) and the Beam runs include
building and running the pipeline. Per worker = images/s divided by the workers. The 1-worker
builds run wholly in this process, so their images per CPU-second (time.process_time) are a
worker's rate that other jobs on the machine hardly change; the 2-worker wall rates are not.
Beam's fixed cost per build (building and running a pipeline, in CPU-seconds of this process)
is measured on builds of 16 images, and the 1-worker re-encode ratio is also given without it:
the per-image ratio that a build of hours approaches.
The last line printed is one JSON object with the ratios beam / local per worker.

    .venv/bin/python bench/beam_build.py [--source views|photos] [--data input/mini-landmarks]
        [--repeat 5] [--image-size 128] [--shards 8]
"""

from __future__ import annotations

import json
import os
import shutil
import time

from sources import build_inputs, print_rates

TWO_WORKERS = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]


def main() -> None:
    args, work, base, table = build_inputs(__doc__.split("\n")[0], 5, "bench-beam-")

    from landmarks.data.tfrecords import write_records

    n = len(table)

    cpu_rates = {}

    def rate(name: str, image_size, **options) -> float:
        """Images/s of one build (wall); also images per CPU-second of this process, which
        for the 1-worker builds (all work in this process) is the worker's own rate, whatever
        else the machine runs."""
        out = os.path.join(work, name)
        start, start_cpu = time.perf_counter(), time.process_time()
        write_records(
            table, out, num_shards=args.shards, image_size=image_size, progress=False, **options
        )
        seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        cpu_rates[name] = n / cpu
        shutil.rmtree(out)
        return n / seconds

    def small_build_cpu(name: str, **options) -> float:
        """CPU-seconds of this process for 16 copied images in 2 shards: mostly fixed costs."""
        out = os.path.join(work, name)
        start = time.process_time()
        write_records(table.iloc[:16], out, num_shards=2, progress=False, **options)
        shutil.rmtree(out)
        return time.process_time() - start

    size = args.image_size
    try:
        # warm-up: TensorFlow and Beam imported, the local forkserver started
        write_records(table.iloc[:16], os.path.join(work, "warm"), num_shards=2, workers=2,
                      progress=False)  # fmt: skip
        write_records(table.iloc[:16], os.path.join(work, "warm-beam"), num_shards=2,
                      progress=False, engine="beam")  # fmt: skip
        rates = {
            "local1": rate("l1", size, workers=1),
            "beam1": rate("b1", size, engine="beam"),
            "local2": rate("l2", size, workers=2) / 2,
            "beam2": rate("b2", size, engine="beam", pipeline_args=TWO_WORKERS) / 2,
            "copy-local1": rate("cl1", None, workers=1),
            "copy-beam1": rate("cb1", None, engine="beam"),
        }
        # Beam's fixed cost per build (pipeline built and run), best of 3, above the local one's
        fixed = min(small_build_cpu(f"sb{i}", engine="beam") for i in range(3)) - min(
            small_build_cpu(f"sl{i}", workers=1) for i in range(3)
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print_rates(n, len(base), args, rates, "images/s per worker", f"shards: {args.shards}, ")
    for name in ("l1", "b1", "cl1", "cb1"):
        print(f"{name:>12}: {cpu_rates[name]:8.1f} images per CPU-second (1 worker, in process)")
    ratios = {
        "source": args.source,
        "images": n,
        "image_size": size,
        "beam_vs_local_1_worker": round(rates["beam1"] / rates["local1"], 3),
        "beam_vs_local_2_workers": round(rates["beam2"] / rates["local2"], 3),
        "beam_vs_local_copy_1_worker": round(rates["copy-beam1"] / rates["copy-local1"], 3),
        "beam_vs_local_1_worker_cpu": round(cpu_rates["b1"] / cpu_rates["l1"], 3),
        "beam_vs_local_copy_1_worker_cpu": round(cpu_rates["cb1"] / cpu_rates["cl1"], 3),
        "beam_fixed_cpu_s": round(fixed, 3),
        "beam_vs_local_1_worker_cpu_less_fixed": round(
            (n / (n / cpu_rates["b1"] - fixed)) / cpu_rates["l1"], 3
        ),
        "per_worker_images_per_s": {k: round(v, 1) for k, v in rates.items()},
        "images_per_cpu_s_1_worker": {
            k: round(cpu_rates[k], 1) for k in ("l1", "b1", "cl1", "cb1")
        },
    }
    print(json.dumps(ratios))


if __name__ == "__main__":
    main()
