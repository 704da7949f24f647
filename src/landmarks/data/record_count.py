"""`count_examples`: how many records a split holds, from manifest.json when it says, else by
reading the shards once (training plans its steps with it; inference checks records against
their image folder with it)."""

from __future__ import annotations

import os


def count_examples(records_dir: str, split: str, files: list) -> int:
    """Records of `split`: from manifest.json when it says, else by reading the shards once."""
    counted = _manifest_count(records_dir, split)
    if counted is not None:
        return counted
    import tensorflow as tf

    return int(tf.data.TFRecordDataset(files).reduce(0, lambda n, _: n + 1).numpy())


def _manifest_count(records_dir: str, split: str) -> int | None:
    """Example count of `split` in manifest.json (landmarks.data.tfrecords), if there is one."""
    import tensorflow as tf

    from landmarks.data.tfrecords import read_manifest

    if not tf.io.gfile.exists(os.path.join(records_dir, "manifest.json")):
        return None
    split_info = read_manifest(records_dir).get("splits", {}).get(split, {})
    count = split_info.get("examples")
    return int(count) if count is not None else None
