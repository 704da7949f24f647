"""Benchmark of the TFRecord builder (`landmarks.data.tfrecords`) on mini-landmarks.

Measures images/s of:
  plain      a plain single-process loop: read, decode, resize, encode, write (the reference)
  reencode1  write_records with --image-size (every image decoded, resized, re-encoded), 1 worker
  reencode2  the same with 2 worker processes
  copy1      write_records without --image-size: upright RGB JPEGs copied byte for byte, 1 worker

Goals: reencode2 / reencode1 >= 1.8 and copy1 / reencode1 >= 10.
The last line printed is one JSON object with the ratios.

    .venv/bin/python bench/build.py [--source views|photos] [--data input/mini-landmarks]
        [--repeat 10] [--image-size 128]

--source: "views" (mini-landmarks, ~290 px) or "photos" (the demo's source photographs at
640 px, the scale of competition photos); see bench/sources.py. --repeat 10 (5,880 views): a
build of under two seconds (--repeat 3) mostly measures starting the worker pool (~0.3 s), which
a real build (hours for GLDv2) pays once.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time

import pandas as pd
from sources import build_inputs, print_rates


def plain_loop(table: pd.DataFrame, out_path: str, image_size: int) -> None:
    """The reference: what one would write by hand, in one process, into one file."""
    import tensorflow as tf
    from PIL import Image

    with tf.io.TFRecordWriter(out_path) as writer:
        for image_id, path, label in zip(
            table["id"], table["path"], table["landmark_id"], strict=True
        ):
            with open(path, "rb") as handle:
                image = Image.open(io.BytesIO(handle.read())).convert("RGB")
            image.thumbnail((image_size, image_size), Image.Resampling.BICUBIC)
            out = io.BytesIO()
            image.save(out, format="JPEG", quality=95)
            feature = {
                "image/encoded": tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[out.getvalue()])
                ),
                "image/id": tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[image_id.encode()])
                ),
                "image/class/label": tf.train.Feature(
                    int64_list=tf.train.Int64List(value=[int(label)])
                ),
            }
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    args, work, base, table = build_inputs(__doc__.split("\n")[0], 10, "bench-build-")

    from landmarks.data.tfrecords import write_records

    n = len(table)

    def build(name: str, **options) -> float:
        out = os.path.join(work, name)
        seconds = timed(
            lambda: write_records(table, out, num_shards=args.shards, progress=False, **options)
        )
        shutil.rmtree(out)
        return n / seconds

    try:
        # warm-up: imports TensorFlow here and starts the forkserver that workers fork from
        write_records(
            table.iloc[:16], os.path.join(work, "warm"), num_shards=2, workers=2, progress=False
        )
        rates = {
            "plain": n
            / timed(lambda: plain_loop(table, os.path.join(work, "plain.tfrec"), args.image_size)),
            "reencode1": build("r1", image_size=args.image_size, workers=1),
            "reencode2": build("r2", image_size=args.image_size, workers=2),
            "copy1": build("c1", image_size=None, workers=1),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print_rates(n, len(base), args, rates, "images/s")
    ratios = {
        "source": args.source,
        "images": n,
        "workers2_vs_workers1": round(rates["reencode2"] / rates["reencode1"], 3),
        "copy_vs_reencode": round(rates["copy1"] / rates["reencode1"], 3),
        "reencode1_vs_plain_loop": round(rates["reencode1"] / rates["plain"], 3),
        "reencode2_vs_plain_loop": round(rates["reencode2"] / rates["plain"], 3),
        "goal_workers2_vs_workers1": 1.8,
        "goal_copy_vs_reencode": 10.0,
    }
    print(json.dumps(ratios))


if __name__ == "__main__":
    main()
