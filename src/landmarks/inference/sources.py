"""Where the images of a split come from at inference time, and the check that they are current.

    train            always the train (+ holdout) records in config.records_dir: their labels
                     are the recognition votes.
    test, index      config.image_source "folder" (the default): the .jpg files under
                     config.data_dir/<split>/, exactly as Kaggle lays them out. In the 2021 code
                     competitions Kaggle swaps the hidden test set into the competition's
                     `test/` folder and reruns the notebook, so the folder is the only source
                     that is right at scoring time.
                     "records": the <split>-*.tfrec records in config.records_dir (faster to
                     read than many small files), but only while they hold exactly the images
                     of the folder: the counts are compared before anything is embedded (the
                     manifest's count against the folder's files) and the ids after embedding,
                     before any submission is written. Stale records stop the run with an
                     error naming both counts.
    non_landmark     the .jpg photos under config.non_landmark_dir (the non-landmark penalty's
                     set), when the penalty is on and a folder is set.

A test or index image file that cannot be read or decoded does not stop the run (at scoring
time a crash is a failed submission): it is left out of the embeddings, named on the console,
and its query gets an empty prediction. A record that cannot be read stops the run with an
error naming its shard and id (landmarks.data.record_check): records are rebuilt, not patched.

`split_images(config, split)` says which source a split uses (its `description` is printed by
`infer`); `check_embedded_ids` is the after-embedding check. Each source carries an `identity`
(a digest of the ids it holds, or of its shard names and sizes) that the embedding cache
compares, so cached embeddings are reused only for the same images.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass

from landmarks.data.record_count import count_examples
from landmarks.errors import ConfigError, DataError

IMAGE_SOURCES = ("folder", "records")
IDS_NAMED = 3  # ids quoted in a mismatch error


@dataclass(frozen=True)
class SplitImages:
    """The images of one split.

    description: one line for the console, e.g. "20 images in input/x/test (folder)".
    make_dataset: scale -> tf.data.Dataset of {"image", "id", "label"} batches at that scale.
    folder_ids: the ids of the split's image folder (None for train, which has no folder).
    record_files: the shards read (empty when the images are read from the folder).
    identity: sha256 hex digest naming exactly which images these are (independent of where
        the folder is mounted).
    """

    split: str
    description: str
    make_dataset: Callable
    folder_ids: frozenset[str] | None = None
    record_files: tuple[str, ...] = ()
    identity: str = ""


def split_images(config, split: str) -> SplitImages:
    """The source of `split` ("train", "test" or "index") under config.image_source."""
    if config.image_source not in IMAGE_SOURCES:
        raise ConfigError(
            f"image_source: {config.image_source!r} is not one of {', '.join(IMAGE_SOURCES)}"
        )
    if split == "train":
        files = record_files(config, split)
        if not files:
            raise DataError(f"{config.records_dir}: no {config.train_split} records; run prepare")
        return SplitImages(
            split,
            f"{config.train_split} records in {config.records_dir}",
            _records(config, files),
            record_files=tuple(files),
            identity=_digest("records", *_shard_names_and_sizes(files)),
        )
    table = _folder_table(config, split)
    folder_identity = _digest("folder", *table["id"])
    if config.image_source == "folder":
        return SplitImages(
            split,
            f"{len(table)} images in {config.data_dir}/{split} (image_source: folder)",
            image_files(config, list(table["path"]), list(table["id"])),
            folder_ids=frozenset(table["id"]),
            identity=folder_identity,
        )
    files = record_files(config, split)
    folder = f"{config.data_dir}/{split}"
    if not files:
        raise DataError(
            f"image_source: records, but {config.records_dir} has no {split}-*.tfrec records; "
            f"write them with `python -m landmarks prepare --split {split}` or set "
            "image_source: folder"
        )
    recorded = count_examples(config.records_dir, split, files)
    if recorded != len(table):
        raise DataError(
            f"{config.records_dir}: the {split} records hold {recorded} images but {folder} has "
            f"{len(table)}: the records are stale (was the {split} set replaced?); rebuild them "
            f"with `python -m landmarks prepare --split {split}`, or set image_source: folder"
        )
    return SplitImages(
        split,
        f"{recorded} {split} records in {config.records_dir} (image_source: records; ids "
        f"checked against {folder})",
        _records(config, files),
        folder_ids=frozenset(table["id"]),
        record_files=tuple(files),
        identity=_digest("records", folder_identity, *_shard_names_and_sizes(files)),
    )


def non_landmark_images(config, log=print) -> SplitImages | None:
    """The photos under config.non_landmark_dir, or None when the penalty is off or no folder
    is set (logged)."""
    if not config.non_landmark_penalty:
        return None
    if not config.non_landmark_dir:
        log("non-landmark penalty: no non_landmark_dir set, votes are not penalised")
        return None
    import tensorflow as tf

    folder = config.non_landmark_dir
    paths = sorted(
        os.path.join(parent, name)
        for parent, _, names in tf.io.gfile.walk(folder)
        for name in names
        if name.lower().endswith((".jpg", ".jpeg"))
    )
    if not paths:
        raise DataError(f"non_landmark_dir {folder}: no .jpg images found")
    ids = [os.path.splitext(os.path.basename(path))[0] for path in paths]
    return SplitImages(
        "non_landmark",
        f"non-landmark penalty: {len(paths)} photos from {folder}",
        image_files(config, paths, ids),
        identity=_digest("non_landmark", *(os.path.relpath(p, folder) for p in paths)),
    )


def check_embedded_ids(images: SplitImages, ids) -> list[str]:
    """The folder ids that were not embedded because their file could not be read (sorted;
    empty when every image was). Records that do not hold exactly the folder's ids raise a
    DataError naming both counts and a few ids of each side."""
    if images.folder_ids is None:
        return []
    got = {str(i) for i in ids}
    only_folder = sorted(images.folder_ids - got)
    if not images.record_files:
        return only_folder  # files left out by the pipeline: unreadable
    if got == images.folder_ids:
        return []
    only_records = sorted(got - images.folder_ids)
    raise DataError(
        f"the {images.split} records hold {len(got)} images, the folder {len(images.folder_ids)}, "
        f"and they differ: {len(only_records)} ids only in the records "
        f"({', '.join(only_records[:IDS_NAMED]) or '-'}), {len(only_folder)} only in the folder "
        f"({', '.join(only_folder[:IDS_NAMED]) or '-'}); the records are stale: rebuild them, or "
        "set image_source: folder"
    )


def record_files(config, split: str) -> list[str]:
    """Shard paths of `split` (train: train + holdout shards); [] when the records lack it."""
    from landmarks.data.tfrecords import list_shards

    names = [config.train_split, config.holdout_split] if split == "train" else [split]
    files: list[str] = []
    for name in filter(None, names):
        try:
            files += list_shards(config.records_dir, name)
        except DataError:
            continue
    return files


def _digest(*lines: str) -> str:
    return hashlib.sha256("\n".join(map(str, lines)).encode("utf-8")).hexdigest()


def _shard_names_and_sizes(files: list[str]) -> list[str]:
    import tensorflow as tf

    return [f"{os.path.basename(path)} {tf.io.gfile.stat(path).length}" for path in files]


def _folder_table(config, split: str):
    from landmarks.data.gldv2 import list_split_images

    return list_split_images(config.data_dir, split)


def _records(config, files: list[str]) -> Callable:
    """scale -> dataset of the records `files` at config.image_size x scale."""
    from landmarks.data import pipeline
    from landmarks.inference.embedding import scaled_size

    return lambda scale: pipeline.make_embed_dataset(
        files, scaled_size(config.image_size, scale), config.batch_size
    )


def image_files(config, paths: list[str], ids: list[str]) -> Callable:
    """scale -> dataset of the image files `paths` (named `ids`) at config.image_size x scale."""
    from landmarks.data import pipeline
    from landmarks.inference.embedding import scaled_size

    return lambda scale: pipeline.make_embed_dataset_from_files(
        paths, ids, scaled_size(config.image_size, scale), config.batch_size
    )
