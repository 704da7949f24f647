"""Sharded, parallel, resumable TFRecord builder, its manifest, and the record parser.

    prepare(data_dir, split, out_dir, ...)    a GLDv2-layout folder -> records
    prepare_splits(data_dir, splits, out_dir, ...)   several splits of it into one folder
    prepare_csv(csv, out_dir, image_column=..., label_column=...)    any CSV of images -> records
    write_records(table, out_dir, ...)        any table of (id, path, landmark_id) -> records

Record features: image/encoded (JPEG bytes), image/id (bytes), image/class/label (int64,
contiguous label, -1 = unknown), image/landmark_id (int64, original label, -1 = unknown),
image/height and image/width (int64, pixels of the stored JPEG). `parse_example` reads them.

Output folder (local or gs://):

    <split>-SSSSS-of-NNNNN.tfrec    shards; examples shuffled across them (seeded), sizes differ
                                    by at most one
    holdout-SSSSS-of-NNNNN.tfrec    the stratified holdout, when holdout > 0
    label_map.csv                   landmark_id,label,count (labelled builds; count = training
                                    records of the class)
    manifest.json                   shards with their counts, totals, skipped images with their
                                    reasons, the options used, the label map path
    _build/                         one receipt per finished shard and one manifest per task
                                    (and a Beam build's jobs file per task)

One build can be split across machines: every task computes the same plan (same table, same
seed) and writes the shards whose global number u satisfies u % num_tasks == task_index, plus
its own task manifest; the last task to finish (or `merge_manifests`) joins them into
manifest.json after checking that every shard is there.

`engine="beam"` writes the same plan's shards on Apache Beam (landmarks.data.beam_build:
Dataflow, Flink, Spark or locally) instead of the local process pool.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import re

import numpy as np
import pandas as pd

from landmarks.data import gldv2, tables
from landmarks.errors import ConfigError, DataError
from landmarks.io_utils import (
    check_writable_folder,
    read_json_object,
    write_refusals_reported,
    write_text_atomic,
)

MANIFEST = "manifest.json"
LABEL_MAP = "label_map.csv"
HOLDOUT_SPLIT = "holdout"
EXAMPLES_PER_SHARD = 2000  # default shard size when num_shards is not given
WATCH_S = 0.5  # how often a worker checks that the main process is still there
FORMAT_VERSION = 1
ENGINES = ("local", "beam")
_SPLIT_NAME = re.compile(r"[A-Za-z0-9_]+")


def shard_name(split: str, index: int, num_shards: int) -> str:
    return f"{split}-{index:05d}-of-{num_shards:05d}.tfrec"


# --- public entry points ----------------------------------------------------------------------


def prepare(data_dir: str, split: str, out_dir: str, **options) -> dict:
    """Records of one split of a GLDv2-layout folder ("train" is labelled, "test"/"index" not).

    `options` (num_shards, workers, image_size, holdout, ...) and the returned manifest are
    those of `write_records`.
    """
    table = gldv2.list_split_images(data_dir, split)
    return write_records(
        table, out_dir, split=split, labelled=split == "train", source=data_dir, **options
    )


def prepare_splits(
    data_dir: str,
    splits,
    out_dir: str,
    *,
    holdout: float = 0.0,
    min_images: int = 1,
    log=print,
    **options,
) -> dict[str, dict]:
    """`prepare` of each of `splits` (e.g. ["train", "test"]) in order into one folder, the
    summary of each logged; `holdout` and `min_images` apply to "train" only. `options` are
    those of `write_records`. Returns {split: manifest}."""
    manifests = {}
    for split in splits:
        labelled = split == "train"
        manifests[split] = prepare(
            data_dir,
            split,
            out_dir,
            holdout=holdout if labelled else 0.0,
            min_images=min_images if labelled else 1,
            **options,
        )
        log(summary(manifests[split], out_dir))
    return manifests


def prepare_csv(
    csv_path: str,
    out_dir: str,
    *,
    image_column: str,
    label_column: str | None = None,
    id_column: str | None = None,
    image_root: str | None = None,
    split: str = "train",
    **options,
) -> dict:
    """Records of the images listed in any CSV (see tables.read_image_table); labelled when
    `label_column` is given. `options` are those of `write_records`."""
    table = tables.read_image_table(
        csv_path,
        image_column=image_column,
        label_column=label_column,
        id_column=id_column,
        image_root=image_root,
    )
    return write_records(
        table, out_dir, split=split, labelled=label_column is not None, source=csv_path, **options
    )


def write_records(
    table: pd.DataFrame,
    out_dir: str,
    *,
    split: str = "train",
    labelled: bool = True,
    source: str = "",
    num_shards: int | None = None,
    workers: int = 1,
    image_size: int | None = None,
    holdout: float = 0.0,
    min_images: int = 1,
    seed: int = 0,
    num_tasks: int = 1,
    task_index: int = 0,
    jpeg_quality: int = 95,
    progress: bool = True,
    engine: str = "local",
    pipeline_args: tuple[str, ...] = (),
) -> dict:
    """Write the records of `table` (DataFrame with columns id, path, landmark_id).

    Args:
        split: shard prefix of the main part.
        labelled: build a label map from landmark_id (else every label is -1).
        source: where the table came from, recorded in the manifest.
        num_shards: shards of the main part; None = one per EXAMPLES_PER_SHARD images.
            The holdout gets a proportional number (at least one).
        workers: worker processes (one shard per job), forked from a multiprocessing
            forkserver that imported TensorFlow once. As with any multiprocessing, a script
            calling this with workers > 1 needs an `if __name__ == "__main__":` guard
            (notebooks and `python -m landmarks prepare` need nothing).
        image_size: longest side in pixels of stored images (aspect kept, never enlarged);
            None = keep every image's size. Images already small enough, upright RGB JPEGs
            are copied byte for byte (see landmarks.data.images).
        holdout: fraction per class moved to the holdout split (stratified, seeded).
        min_images: classes with fewer images are left out (labelled builds).
        seed: seeds the holdout choice and the order of examples across shards.
        num_tasks, task_index: write only this task's share of the shards.
        jpeg_quality: quality of re-encoded JPEGs.
        progress: show a tqdm bar (local engine).
        engine: "local" (this machine, `workers` processes) or "beam" (Apache Beam, the same
            plan and shards: landmarks.data.beam_build).
        pipeline_args: Beam's pipeline options, e.g. ["--runner=DataflowRunner", ...]
            (engine "beam" only).
    Returns:
        The merged manifest (see module docstring) when every task has finished, otherwise
        this task's manifest (with "complete": false).
    """
    options = {
        "num_shards": num_shards,
        "image_size": image_size,
        "holdout": float(holdout),
        "min_images": int(min_images),
        "seed": int(seed),
        "jpeg_quality": int(jpeg_quality),
        "num_tasks": int(num_tasks),
    }
    _check_options(split, labelled, workers, task_index, options)
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if pipeline_args and engine != "beam":
        raise ConfigError(
            f"pipeline options after `--` ({' '.join(pipeline_args)}) need --engine beam"
        )
    check_writable_folder(out_dir, "records folder (--out)")
    table = table.sort_values("id", kind="stable").reset_index(drop=True)
    plan = _plan(table, split, labelled, options)
    jobs = _task_jobs(plan, out_dir, task_index, num_tasks)
    if engine == "beam":
        from landmarks.data import beam_build  # ConfigError when apache-beam is missing

        head = task_head(plan, source, task_index, num_tasks, {"engine": "beam"})
        beam_build.run(jobs, out_dir, head, pipeline_args, commit_task)
        return build_result(out_dir, split, task_index, num_tasks)
    receipts = _run_jobs(jobs, out_dir, workers, progress)
    head = task_head(plan, source, task_index, num_tasks, {"workers": workers})
    return commit_task(out_dir, head, receipts)


# --- planning -----------------------------------------------------------------------------------


def _check_options(
    split: str, labelled: bool, workers: int, task_index: int, options: dict
) -> None:
    if not _SPLIT_NAME.fullmatch(split) or split == HOLDOUT_SPLIT:
        raise ConfigError(
            f"split name must be letters, digits or _ and not {HOLDOUT_SPLIT!r}, got {split!r}"
        )
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    if options["num_shards"] is not None and options["num_shards"] < 1:
        raise ConfigError(f"num_shards must be >= 1, got {options['num_shards']}")
    if options["image_size"] is not None and options["image_size"] < 1:
        raise ConfigError(f"image_size must be >= 1 pixel, got {options['image_size']}")
    if not 1 <= options["jpeg_quality"] <= 100:
        raise ConfigError(f"jpeg_quality must be in 1..100, got {options['jpeg_quality']}")
    if options["num_tasks"] < 1 or not 0 <= task_index < options["num_tasks"]:
        raise ConfigError(
            f"need num_tasks >= 1 and 0 <= task_index < num_tasks, got {task_index} of {options['num_tasks']}"
        )
    if not labelled and options["holdout"] > 0:
        raise ConfigError(f"holdout needs labels; split {split!r} has none")
    if not 0.0 <= options["holdout"] < 1.0:
        raise ConfigError(f"holdout must be in [0, 1), got {options['holdout']}")


def _plan(table: pd.DataFrame, split: str, labelled: bool, options: dict) -> dict:
    """The whole build, identical on every task: parts, shards and their examples."""
    dropped = {"images": 0, "classes": 0}
    label_map = None
    if labelled:
        all_classes = gldv2.build_label_map(table["landmark_id"].to_numpy(), 1)
        label_map = gldv2.build_label_map(table["landmark_id"].to_numpy(), options["min_images"])
        kept = table["landmark_id"].isin(label_map["landmark_id"])
        dropped = {"images": int((~kept).sum()), "classes": len(all_classes) - len(label_map)}
        table = table[kept]
        lookup = pd.Series(label_map["label"].to_numpy(), index=label_map["landmark_id"].to_numpy())
        table = table.assign(label=lookup.loc[table["landmark_id"].to_numpy()].to_numpy())
    else:
        table = table.assign(label=np.int64(-1), landmark_id=np.int64(-1))
    if table.empty:
        raise DataError(
            f"no images left to write (min_images={options['min_images']} dropped {dropped['images']})"
        )
    train, held = gldv2.stratified_holdout(table, options["holdout"], options["seed"])
    if labelled:
        counts = train["landmark_id"].value_counts()
        label_map = label_map.assign(
            count=counts.reindex(label_map["landmark_id"]).fillna(0).astype(np.int64).to_numpy()
        )
    main_shards = options["num_shards"] or math.ceil(len(train) / EXAMPLES_PER_SHARD)
    main_shards = min(main_shards, len(train))
    parts = [(split, train, main_shards)]
    if len(held):
        parts.append(
            (
                HOLDOUT_SPLIT,
                held,
                min(len(held), max(1, round(main_shards * len(held) / len(train)))),
            )
        )
    content = {k: options[k] for k in ("image_size", "jpeg_quality")}
    shards = []
    for part_number, (name, part, num_shards) in enumerate(parts):
        order = np.random.default_rng([options["seed"], part_number]).permutation(len(part))
        for index in range(num_shards):
            rows = part.iloc[order[index::num_shards]]
            shard = {
                "file": shard_name(name, index, num_shards),
                "split": name,
                "ids": rows["id"].tolist(),
                "paths": rows["path"].tolist(),
                "labels": rows["label"].astype(np.int64).tolist(),
                "landmark_ids": rows["landmark_id"].astype(np.int64).tolist(),
            }
            shard["fingerprint"] = _digest([content, shard])
            shards.append(shard)
    return {
        "split": split,
        "labelled": labelled,
        "options": options,
        "images_in_table": len(table) + dropped["images"],
        "dropped_by_min_images": dropped,
        "label_map": label_map,
        "splits": {name: [s["file"] for s in shards if s["split"] == name] for name, _, _ in parts},
        "shards": shards,
        "fingerprint": _digest([options, [s["fingerprint"] for s in shards]]),
    }


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def _task_jobs(plan: dict, out_dir: str, task_index: int, num_tasks: int) -> list:
    from landmarks.data.shard_writer import ShardJob

    options = plan["options"]
    return [
        ShardJob(
            out_dir=out_dir,
            file=s["file"],
            split=s["split"],
            fingerprint=s["fingerprint"],
            ids=s["ids"],
            paths=s["paths"],
            labels=s["labels"],
            landmark_ids=s["landmark_ids"],
            image_size=options["image_size"],
            jpeg_quality=options["jpeg_quality"],
        )
        for u, s in enumerate(plan["shards"])
        if u % num_tasks == task_index
    ]


# --- running ------------------------------------------------------------------------------------


def _run_jobs(jobs: list, out_dir: str, workers: int, progress: bool) -> list[dict]:
    """Receipts of every job: read for complete shards, written for the others."""
    import tensorflow as tf
    from tqdm.auto import tqdm

    from landmarks.data import shard_writer

    tf.io.gfile.makedirs(out_dir)
    receipts, pending = {}, []
    for job in jobs:
        receipt = shard_writer.read_receipt(out_dir, job.file, job.fingerprint)
        if receipt is None:
            pending.append(job)
        else:
            receipts[job.file] = receipt
    total = sum(len(job.ids) for job in jobs)
    done = sum(len(job.ids) for job in jobs if job.file in receipts)
    bar = tqdm(total=total, initial=done, unit="img", desc="prepare", disable=not progress)
    skipped = sum(len(r["skipped"]) for r in receipts.values())
    if receipts and progress:
        bar.write(f"resuming: {len(receipts)} of {len(jobs)} shards already complete")
    try:
        for job, receipt in _execute(pending, workers):
            receipts[job.file] = receipt
            skipped += len(receipt["skipped"])
            bar.set_postfix(shards=f"{len(receipts)}/{len(jobs)}", skipped=skipped)
            bar.update(len(job.ids))
    finally:
        bar.close()
    return [receipts[job.file] for job in jobs]


def _execute(jobs: list, workers: int):
    """Yield (job, receipt) as shards finish: in this process for one worker, else in a pool
    of forkserver processes (TensorFlow imported once in the server, not per worker)."""
    from landmarks.data import shard_writer

    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            yield job, shard_writer.write_shard(job)
        return
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["landmarks.data.shard_writer"])
    with context.Pool(
        min(workers, len(jobs)), initializer=_exit_with, initargs=(os.getpid(),)
    ) as pool:
        for index, receipt in pool.imap_unordered(_write_indexed, list(enumerate(jobs))):
            yield jobs[index], receipt


def _exit_with(main_pid: int) -> None:
    """Pool initializer: end this worker within WATCH_S seconds of the main process's death.

    A killed `prepare` (SIGKILL: no clean-up runs) left its workers writing their current shard
    for seconds; the forkserver that forked them stays up while they do, so the kernel's
    parent-death signal cannot help. A daemon thread checks the main process instead."""
    import threading
    import time

    def watch() -> None:
        while True:
            time.sleep(WATCH_S)
            try:
                os.kill(main_pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:  # alive
                continue

    threading.Thread(target=watch, name="exit-with-main", daemon=True).start()


def _write_indexed(item: tuple) -> tuple[int, dict]:
    """Pool task: (job number, job) -> (job number, receipt)."""
    from landmarks.data import shard_writer

    index, job = item
    return index, shard_writer.write_shard(job)


# --- manifests ----------------------------------------------------------------------------------


def _task_file(split: str, task_index: int, num_tasks: int) -> str:
    return f"{split}.task-{task_index:05d}-of-{num_tasks:05d}.json"


def task_head(plan: dict, source: str, task_index: int, num_tasks: int, run: dict) -> dict:
    """The task manifest of `plan` without its shards; `run` adds how it ran to the options
    ({"workers": n} locally, {"engine": "beam", "runner": name} on Beam)."""
    label_map = plan["label_map"]
    return {
        "format": FORMAT_VERSION,
        "complete": False,
        "split": plan["split"],
        "source": source,
        "task_index": task_index,
        "num_tasks": num_tasks,
        "plan": plan["fingerprint"],
        "options": dict(plan["options"], **run),
        "images_in_table": plan["images_in_table"],
        "dropped_by_min_images": plan["dropped_by_min_images"],
        "splits": plan["splits"],
        "label_map": None
        if label_map is None
        else {c: label_map[c].astype(int).tolist() for c in ("landmark_id", "label", "count")},
    }


def commit_task(out_dir: str, head: dict, receipts: list[dict]) -> dict:
    """Write the task manifest (`head` plus the shards' `receipts`, in plan order) to
    `_build/`; then, when every task of the build is there, merge them into manifest.json.
    Returns the merged manifest, or this task's manifest while other tasks are missing."""
    from landmarks.data.shard_writer import BUILD_DIR, join

    split, task_index, num_tasks = head["split"], head["task_index"], head["num_tasks"]
    task_manifest = dict(
        head, shards=[{k: v for k, v in r.items() if k != "fingerprint"} for r in receipts]
    )
    with write_refusals_reported(out_dir, "; the shards are complete: make room and rerun"):
        write_text_atomic(
            join(join(out_dir, BUILD_DIR), _task_file(split, task_index, num_tasks)),
            json.dumps(task_manifest, indent=1) + "\n",
        )
        if _missing_tasks(out_dir, split, num_tasks):
            return task_manifest
        return merge_manifests(out_dir, split)


def build_result(out_dir: str, split: str, task_index: int, num_tasks: int) -> dict:
    """What `commit_task` returned, read back: manifest.json when every task of the build is
    done, else this task's manifest."""
    from landmarks.data.shard_writer import BUILD_DIR, join

    if _missing_tasks(out_dir, split, num_tasks):
        return read_json_object(
            join(join(out_dir, BUILD_DIR), _task_file(split, task_index, num_tasks)),
            "rerun that task of prepare",
        )
    return read_manifest(out_dir)


def _missing_tasks(out_dir: str, split: str, num_tasks: int) -> list[int]:
    import tensorflow as tf

    from landmarks.data.shard_writer import BUILD_DIR, join

    folder = join(out_dir, BUILD_DIR)
    return [
        i
        for i in range(num_tasks)
        if not tf.io.gfile.exists(join(folder, _task_file(split, i, num_tasks)))
    ]


def merge_manifests(out_dir: str, split: str | None = None) -> dict:
    """Join the task manifests of the build of `split` (None = every build found in
    `out_dir/_build`) into manifest.json and label_map.csv; return the manifest.

    Raises DataError when a task manifest or a shard is missing, or the tasks planned
    different builds (different table, seed or options).
    """
    import tensorflow as tf

    from landmarks.data.shard_writer import BUILD_DIR, join

    folder = join(out_dir, BUILD_DIR)
    pattern = re.compile(r"(\w+)\.task-(\d{5})-of-(\d{5})\.json")
    found = {}
    if tf.io.gfile.isdir(folder):
        for name in tf.io.gfile.listdir(folder):
            match = pattern.fullmatch(name.rstrip("/"))
            if match and (split is None or match.group(1) == split):
                found.setdefault((match.group(1), int(match.group(3))), []).append(name)
    if not found:
        raise DataError(
            f"{folder}: no task manifests{f' for split {split!r}' if split else ''}; run prepare first"
        )
    manifest = _read_manifest(out_dir)
    for (build_split, num_tasks), _names in sorted(found.items()):
        missing = _missing_tasks(out_dir, build_split, num_tasks)
        if missing:
            raise DataError(
                f"{out_dir}: build {build_split!r} split into {num_tasks} tasks is missing task(s) "
                f"{', '.join(map(str, missing))}; run prepare with --task-index for each"
            )
        tasks = [
            read_json_object(
                join(folder, _task_file(build_split, i, num_tasks)), "rerun that task of prepare"
            )
            for i in range(num_tasks)
        ]
        _merge_build(manifest, tasks, out_dir)
    write_text_atomic(join(out_dir, MANIFEST), json.dumps(manifest, indent=1) + "\n")
    return manifest


def _read_manifest(out_dir: str) -> dict:
    """The manifest a merge adds to: the folder's manifest.json, or a new one."""
    from landmarks.data.shard_writer import join

    path = join(out_dir, MANIFEST)
    try:
        manifest = read_json_object(path, _REBUILD_MANIFEST.format(out_dir=out_dir))
    except FileNotFoundError:
        manifest = {}
    manifest.setdefault("format", FORMAT_VERSION)
    manifest.setdefault("label_map", None)
    manifest.setdefault("num_classes", 0)
    manifest.setdefault("splits", {})
    manifest.setdefault("builds", {})
    return manifest


def _merge_build(manifest: dict, tasks: list[dict], out_dir: str) -> None:
    """Add one build (all its task manifests) to `manifest`, writing label_map.csv."""
    import tensorflow as tf

    from landmarks.data.shard_writer import join

    first = tasks[0]
    if len({t["plan"] for t in tasks}) != 1:
        raise DataError(
            f"{out_dir}: the tasks of build {first['split']!r} planned different builds "
            "(different table, seed or options); rerun them with the same arguments"
        )
    receipts = {r["file"]: r for t in tasks for r in t["shards"]}
    for name, files in first["splits"].items():
        for file in files:
            receipt = receipts.get(file)
            path = join(out_dir, file)
            if (
                receipt is None
                or not tf.io.gfile.exists(path)
                or tf.io.gfile.stat(path).length != receipt["bytes"]
            ):
                raise DataError(
                    f"{path}: shard of split {name!r} is missing or incomplete; rerun its task"
                )
    build_split = first["split"]
    old = manifest["builds"].get(build_split)
    for stale in old["produced"] if old else []:
        manifest["splits"].pop(stale, None)
    for name, files in first["splits"].items():
        shards = [{"file": f, "count": receipts[f]["count"]} for f in files]
        manifest["splits"][name] = {
            "build": build_split,
            "examples": sum(s["count"] for s in shards),
            "shards": shards,
        }
    skipped = [
        dict(s, split=receipts[f]["split"])
        for files in first["splits"].values()
        for f in files
        for s in receipts[f]["skipped"]
    ]
    changes: dict[str, int] = {}
    for receipt in receipts.values():
        for key, value in receipt["changes"].items():
            changes[key] = changes.get(key, 0) + value
    written = sum(r["count"] for r in receipts.values())
    manifest["builds"][build_split] = {
        "source": first["source"],
        "options": first["options"],
        "produced": list(first["splits"]),
        "images_in_table": first["images_in_table"],
        "dropped_by_min_images": first["dropped_by_min_images"],
        "written": written,
        "copied": sum(r["copied"] for r in receipts.values()),
        "reencoded": sum(r["reencoded"] for r in receipts.values()),
        "changes": dict(sorted(changes.items())),
        "num_skipped": len(skipped),
        "skipped_by_reason": _count_reasons(skipped),
        "skipped": skipped,
    }
    if first["label_map"] is not None:
        label_map = pd.DataFrame(first["label_map"])
        lost = pd.Series(
            [s["landmark_id"] for s in skipped if s["split"] == build_split], dtype=np.int64
        )
        lost_counts = (
            lost.value_counts().reindex(label_map["landmark_id"]).fillna(0).astype(np.int64)
        )
        label_map["count"] = label_map["count"].to_numpy() - lost_counts.to_numpy()
        write_text_atomic(join(out_dir, LABEL_MAP), label_map.to_csv(index=False))
        manifest["label_map"] = LABEL_MAP
        manifest["num_classes"] = len(label_map)
    manifest["totals"] = {
        "examples": sum(s["examples"] for s in manifest["splits"].values()),
        "skipped": sum(b["num_skipped"] for b in manifest["builds"].values()),
    }


def _count_reasons(skipped: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in skipped:
        key = entry["reason"].split(":")[0]
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def summary(manifest: dict, out_dir: str) -> str:
    """A few lines for the screen: examples and shards per split, skipped images by reason."""
    if not manifest.get("complete", True):
        shards = manifest["shards"]
        skipped = sum(len(r["skipped"]) for r in shards)
        return (
            f"task {manifest['task_index']} of {manifest['num_tasks']} done: {len(shards)} shards, "
            f"{sum(r['count'] for r in shards)} examples, {skipped} images skipped; other tasks are "
            f"still missing: run `python -m landmarks merge-manifests --out {out_dir}` when all are done"
        )
    lines = [f"{out_dir}: {manifest['totals']['examples']} examples"]
    for name, split in manifest["splits"].items():
        lines.append(f"  {name}: {split['examples']} examples in {len(split['shards'])} shards")
    for name, build in manifest["builds"].items():
        lines.append(
            f"  build {name}: {build['copied']} copied, {build['reencoded']} re-encoded, "
            f"{build['num_skipped']} skipped"
            + "".join(
                f"\n    skipped ({reason}): {n}" for reason, n in build["skipped_by_reason"].items()
            )
        )
    if manifest.get("label_map"):
        lines.append(
            f"  {manifest['num_classes']} classes in {manifest['label_map']}; details in {MANIFEST}"
        )
    return "\n".join(lines)


# --- reading ------------------------------------------------------------------------------------


_REBUILD_MANIFEST = (
    "remove it and run `python -m landmarks merge-manifests --out {out_dir}` to write it again "
    "from the build's task manifests"
)


def read_manifest(records_dir: str) -> dict:
    """manifest.json of a records folder, checked as far as readers use it (a JSON object whose
    "splits" map each split to its "examples" and "shards", each a {"file", "count"}); DataError
    naming the file when there is none, it is cut off or it is not such a manifest."""
    from landmarks.data.shard_writer import join

    path = join(records_dir, MANIFEST)
    advice = _REBUILD_MANIFEST.format(out_dir=records_dir)
    try:
        manifest = read_json_object(path, advice)
    except FileNotFoundError as error:
        raise DataError(
            f"{records_dir}: no {MANIFEST}; run `python -m landmarks prepare` first"
        ) from error
    splits = manifest.get("splits")
    valid = isinstance(splits, dict) and all(
        isinstance(split, dict)
        and isinstance(split.get("examples"), int)
        and isinstance(split.get("shards"), list)
        and all(
            isinstance(shard, dict)
            and isinstance(shard.get("file"), str)
            and isinstance(shard.get("count"), int)
            for shard in split["shards"]
        )
        for split in splits.values()
    )
    if not valid:
        raise DataError(f'{path}: not a records manifest (no valid "splits"); {advice}')
    return manifest


def list_shards(records_dir: str, split: str) -> list[str]:
    """Paths of the shards of `split`, as listed in manifest.json (so shards of older builds
    lying in the folder are ignored), or matched by name when the folder has no manifest.
    A listed shard that is not in the folder is a DataError naming it (one listing of the
    folder, so this stays cheap on gs://), before any model is built."""
    import tensorflow as tf

    from landmarks.data.shard_writer import join

    if tf.io.gfile.exists(join(records_dir, MANIFEST)):
        splits = read_manifest(records_dir)["splits"]
        if split not in splits:
            raise DataError(
                f"{records_dir}/{MANIFEST}: no split {split!r}; it has {', '.join(splits) or 'none'}"
            )
        names = [s["file"] for s in splits[split]["shards"]]
        present = {os.path.basename(p) for p in tf.io.gfile.glob(join(records_dir, "*.tfrec"))}
        missing = [name for name in names if name not in present]
        if missing:
            raise DataError(
                f"{records_dir}: {MANIFEST} lists {len(names)} {split} shards but "
                f"{len(missing)} are missing ({', '.join(missing[:3])}"
                f"{', ...' if len(missing) > 3 else ''}); copy them back, or rerun the prepare "
                "command that wrote them (it writes only what is missing)"
            )
        return [join(records_dir, name) for name in names]
    files = sorted(
        tf.io.gfile.glob(
            join(
                records_dir, f"{split}-[0-9][0-9][0-9][0-9][0-9]-of-[0-9][0-9][0-9][0-9][0-9].tfrec"
            )
        )
    )
    if not files:
        raise DataError(f"{records_dir}: no shards of split {split!r}")
    return files


def read_label_map(records_dir: str) -> pd.DataFrame:
    """label_map.csv beside the records: DataFrame(landmark_id, label, count), int64, one row
    per class. The one reader of the file: DataError naming it and the rows at fault unless
    every value is an integer >= 0, the labels are 0..C-1 each once and the landmark ids are
    unique (a label listed twice would send its votes to whichever landmark came last)."""
    from landmarks.data.shard_writer import join

    path = join(records_dir, LABEL_MAP)
    frame = tables.read_csv(path)
    tables.require_columns(frame, ["landmark_id", "label", "count"], path)
    table = pd.DataFrame(
        {c: tables.integer_labels(frame[c], c, path) for c in ("landmark_id", "label", "count")}
    )
    for column in ("landmark_id", "label"):
        tables.check_unique_ids(table[column], path, what=f"{column}s")
    outside = np.flatnonzero(table["label"].to_numpy() >= len(table))
    if len(outside):
        rows = [f"row {i + 2} ({table['label'].iloc[i]})" for i in outside]
        raise DataError(
            f"{path}: labels must be 0..{len(table) - 1} (one per row); "
            f"not: {tables.summarize(rows)}"
        )
    return table


def parse_example(serialized):
    """Parse one serialized record (scalar string tensor) into a dict of scalar tensors:
    encoded (string, JPEG bytes), id (string), label (int32, -1 = unknown), landmark_id (int64),
    height and width (int32, pixels of the stored JPEG)."""
    import tensorflow as tf

    spec = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/id": tf.io.FixedLenFeature([], tf.string),
        "image/class/label": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
        "image/landmark_id": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
        "image/height": tf.io.FixedLenFeature([], tf.int64, default_value=0),
        "image/width": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    }
    features = tf.io.parse_single_example(serialized, spec)
    return {
        "encoded": features["image/encoded"],
        "id": features["image/id"],
        "label": tf.cast(features["image/class/label"], tf.int32),
        "landmark_id": features["image/landmark_id"],
        "height": tf.cast(features["image/height"], tf.int32),
        "width": tf.cast(features["image/width"], tf.int32),
    }
