"""One records folder from the parts of a build split across notebooks (`--num-tasks`).

On Kaggle each notebook writes its own /kaggle/working, so a build split with NUM_TASKS lands
in NUM_TASKS datasets, each holding that task's shards and `_build/` (receipts and its task
manifest) but no complete manifest.json. `join_record_parts(parts, out_dir)` makes a local
folder that holds them all: a symbolic link per shard (nothing is copied), the `_build/` files
copied, then `merge_manifests` checks that every shard of every task is there (names and byte
sizes) and writes manifest.json and label_map.csv. Training and inference read that folder as
any records folder.
"""

from __future__ import annotations

import os
import shutil

from landmarks.data.shard_writer import BUILD_DIR
from landmarks.errors import ConfigError, DataError


def join_record_parts(parts, out_dir: str) -> str:
    """Link the shards of the record folders `parts` into the local `out_dir` and merge their
    task manifests; returns out_dir. DataError when a part is missing or a shard is absent."""
    if not parts:
        raise ConfigError("join_record_parts: no record folders given")
    if "://" in out_dir or any("://" in part for part in parts):
        raise ConfigError(
            "join_record_parts: parts and the joined folder must be local (links); for gs:// "
            "let every task write to the same bucket folder instead"
        )
    _check_out_is_not_a_part(parts, out_dir)
    os.makedirs(os.path.join(out_dir, BUILD_DIR), exist_ok=True)
    for part in parts:
        if not os.path.isdir(os.path.join(part, BUILD_DIR)):
            raise DataError(f"{part}: not a part of a records build (no {BUILD_DIR}/ folder)")
        for name in sorted(os.listdir(part)):
            if name.endswith(".tfrec"):
                link = os.path.join(out_dir, name)
                if os.path.lexists(link):
                    os.remove(link)
                os.symlink(os.path.abspath(os.path.join(part, name)), link)
        for name in sorted(os.listdir(os.path.join(part, BUILD_DIR))):
            if name.endswith(".json"):
                shutil.copyfile(
                    os.path.join(part, BUILD_DIR, name), os.path.join(out_dir, BUILD_DIR, name)
                )
    from landmarks.data.tfrecords import merge_manifests

    merge_manifests(out_dir)
    return out_dir


def _check_out_is_not_a_part(parts, out_dir: str) -> None:
    """ConfigError, before anything is written, when `out_dir` is (or, through links, resolves
    to) one of the parts: linking a part's shards into itself would replace each shard with a
    link to its own name, and the records would be gone."""
    target = os.path.realpath(out_dir)
    for part in parts:
        if os.path.realpath(part) == target:
            raise ConfigError(
                f"join_record_parts: the joined folder {out_dir} is the part {part}; "
                "give a new folder (the parts are only read)"
            )
