"""Benchmark of the training input pipeline (`landmarks.data.pipeline`) on mini-landmarks.

Builds records of the mini-landmarks train images once (original sizes, copied through), then
measures images/s of make_train_dataset with:
  decode        augment="none": decode and resize only (the reference)
  tf            augment="tf": in-graph random resized crop, flip, colour jitter, cutout
  albumentations augment="albumentations": the same recipe on the host via tf.numpy_function

Goals: in-graph augmentation costs <= 25% of decode-only throughput (1 - tf/decode <= 0.25) and
tf / albumentations >= 2. Each is given from wall time and from the CPU time of this process
(images per CPU second: fairer when other jobs share the CPU). The last line printed is one
JSON object with the ratios.

    .venv/bin/python bench/pipeline.py [--source views|photos] [--data input/mini-landmarks]
        [--image-size 224] [--batches 40]

--source: "views" (mini-landmarks, ~290 px) or "photos" (the demo's source photographs at
640 px, the scale of competition photos); see bench/sources.py. Records keep the original JPEGs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

from sources import SOURCES, image_table


def rate(files, mode: str, image_size: int, batch_size: int, batches: int) -> tuple[float, float]:
    """(images per wall second, images per CPU second of this process) over `batches` batches,
    after 3 warm-up batches. The CPU figure is the fairer one on a CPU shared with other jobs."""
    from landmarks.data.pipeline import make_train_dataset

    dataset = make_train_dataset(files, image_size, batch_size, augment=mode, shuffle_buffer=256)
    iterator = iter(dataset)
    for _ in range(3):
        next(iterator)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(iterator)
    images = batches * batch_size
    return images / (time.perf_counter() - start), images / (time.process_time() - cpu_start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", default="views", choices=SOURCES)
    parser.add_argument("--data", default="input/mini-landmarks")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument(
        "--rounds", type=int, default=2, help="alternate the modes this many times; best kept"
    )
    args = parser.parse_args()

    from landmarks.data.tfrecords import list_shards, write_records

    work = tempfile.mkdtemp(prefix="bench-pipeline-")
    try:
        table = image_table(args.source, args.data, work)
        write_records(table, os.path.join(work, "records"), num_shards=4, progress=False)
        files = list_shards(os.path.join(work, "records"), "train")
        wall = {"decode": 0.0, "tf": 0.0, "albumentations": 0.0}
        cpu = dict(wall)
        for _ in range(args.rounds):  # interleaved, so a busy moment on a shared CPU hits all
            for mode in ("none", "tf", "albumentations"):
                key = "decode" if mode == "none" else mode
                per_wall, per_cpu = rate(
                    files, mode, args.image_size, args.batch_size, args.batches
                )
                wall[key], cpu[key] = max(wall[key], per_wall), max(cpu[key], per_cpu)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    load = os.getloadavg()[0]
    print(
        f"source {args.source}, image size {args.image_size}, batch {args.batch_size}, "
        f"cpus: {os.cpu_count()}, load: {load:.1f}"
    )
    for name in wall:
        print(
            f"{name:>15}: {wall[name]:8.1f} images/s wall, {cpu[name]:8.1f} images per CPU second"
        )
    ratios = {
        "source": args.source,
        "augmentation_cost": round(1 - wall["tf"] / wall["decode"], 3),
        "tf_vs_albumentations": round(wall["tf"] / wall["albumentations"], 3),
        "augmentation_cost_cpu": round(1 - cpu["tf"] / cpu["decode"], 3),
        "tf_vs_albumentations_cpu": round(cpu["tf"] / cpu["albumentations"], 3),
        "goal_augmentation_cost_max": 0.25,
        "goal_tf_vs_albumentations": 2.0,
    }
    print(json.dumps(ratios))


if __name__ == "__main__":
    main()
