"""Write ONE shard: encode its images, serialize tf.train.Examples, write the TFRecord file.

This is the job a worker process runs (landmarks.data.tfrecords plans the jobs). A shard is
written to `<name>.incomplete`, renamed to `<name>` when closed, and then described by a small
JSON "receipt" in the `_build/` folder beside it (count, bytes, fingerprint, skipped images).
A shard counts as complete only when its receipt exists, names the same fingerprint (same
images, labels and options) and the file has the byte size the receipt gives, so a build
killed at any moment redoes only the shards without a valid receipt.

Record features: image/encoded (JPEG bytes), image/id (bytes), image/class/label (int64,
contiguous label or -1), image/landmark_id (int64, original label or -1), image/height and
image/width (int64 pixels of the stored JPEG).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass

from landmarks.console import import_tensorflow
from landmarks.data.images import ImageSkipped, encode_image
from landmarks.io_utils import write_refusals_reported, write_text_atomic

tf = import_tensorflow()  # first import in a writer's forkserver: quiet unless verbose

BUILD_DIR = "_build"  # receipts, per-task manifests (and Beam jobs files), beside the shards
INCOMPLETE_SUFFIX = ".incomplete"
# Testing hook: seconds to wait before closing each shard, so that tests can kill a build
# while a shard is half-written. Unset in normal use.
DELAY_ENV = "LANDMARKS_TEST_SHARD_DELAY_S"


@dataclass(frozen=True)
class ShardJob:
    """Everything a worker needs to write one shard; rows are parallel lists."""

    out_dir: str
    file: str  # shard file name, e.g. train-00003-of-00008.tfrec
    split: str
    fingerprint: str  # identifies images, labels and options of this shard
    ids: list[str]
    paths: list[str]
    labels: list[int]  # contiguous labels, -1 when unknown
    landmark_ids: list[int]  # original labels, -1 when unknown
    image_size: int | None  # longest side of stored images; None = keep
    jpeg_quality: int


def join(folder: str, name: str) -> str:
    """`folder/name` for local and gs:// folders."""
    return f"{folder.rstrip('/')}/{name}" if "://" in folder else os.path.join(folder, name)


def receipt_path(out_dir: str, file: str) -> str:
    return join(join(out_dir, BUILD_DIR), f"{file}.json")


def read_receipt(out_dir: str, file: str, fingerprint: str) -> dict | None:
    """The receipt of a complete shard, or None when the shard must be (re)written."""
    path = receipt_path(out_dir, file)
    shard = join(out_dir, file)
    try:
        if not tf.io.gfile.exists(path) or not tf.io.gfile.exists(shard):
            return None
        with tf.io.gfile.GFile(path, "r") as handle:
            receipt = json.load(handle)
        if receipt.get("fingerprint") != fingerprint:
            return None
        if tf.io.gfile.stat(shard).length != receipt.get("bytes"):
            return None
    except (json.JSONDecodeError, tf.errors.OpError):
        return None
    return receipt


def serialize_example(
    encoded: bytes, image_id: str, label: int, landmark_id: int, height: int, width: int
) -> bytes:
    """One tf.train.Example with the record features (see the module docstring)."""

    def _bytes(value: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def _int(value: int) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))

    feature = {
        "image/encoded": _bytes(encoded),
        "image/id": _bytes(image_id.encode("utf-8")),
        "image/class/label": _int(label),
        "image/landmark_id": _int(landmark_id),
        "image/height": _int(height),
        "image/width": _int(width),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)  # same bytes in every process


def write_shard(job: ShardJob) -> dict:
    """Write `job`'s shard and its receipt; return the receipt.

    Receipt: {file, split, fingerprint, count, bytes, copied, reencoded, changes: {change: n},
    skipped: [{id, path, landmark_id, reason}]}. A full disk or a read-only folder is a
    DataError naming the shard; its `.incomplete` file is removed.
    """
    with write_refusals_reported(
        join(job.out_dir, job.file),
        "; the shards already complete are kept: make room and rerun the same command",
    ):
        return _write_shard(job)


def _write_shard(job: ShardJob) -> dict:
    final = join(job.out_dir, job.file)
    temp = final + INCOMPLETE_SUFFIX
    skipped, changes = [], Counter()
    count = copied = 0
    delay = float(os.environ.get(DELAY_ENV, "0") or 0)
    try:
        with tf.io.TFRecordWriter(temp) as writer:
            for image_id, path, label, landmark_id in zip(
                job.ids, job.paths, job.labels, job.landmark_ids, strict=True
            ):
                try:
                    image = encode_image(path, job.image_size, job.jpeg_quality)
                except ImageSkipped as reason:
                    skipped.append(
                        {
                            "id": image_id,
                            "path": path,
                            "landmark_id": landmark_id,
                            "reason": str(reason),
                        }
                    )
                    continue
                writer.write(
                    serialize_example(
                        image.data, image_id, label, landmark_id, image.height, image.width
                    )
                )
                count += 1
                copied += image.action == "copied"
                changes.update(image.changes)
            if delay:
                writer.flush()
                time.sleep(delay)
        tf.io.gfile.rename(temp, final, overwrite=True)
    finally:
        if tf.io.gfile.exists(temp):
            tf.io.gfile.remove(temp)
    receipt = {
        "file": job.file,
        "split": job.split,
        "fingerprint": job.fingerprint,
        "count": count,
        "bytes": tf.io.gfile.stat(final).length,
        "copied": copied,
        "reencoded": count - copied,
        "changes": dict(sorted(changes.items())),
        "skipped": skipped,
    }
    write_text_atomic(receipt_path(job.out_dir, job.file), json.dumps(receipt, indent=1) + "\n")
    return receipt
