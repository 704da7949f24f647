"""tf.data input pipelines over the records written by landmarks.data.tfrecords.

Training (`make_train_dataset`): parallel interleaved reads of shuffled shards, an example
shuffle buffer, parse, decode + augment, batch with drop_remainder (static shapes for TPU),
prefetch. Order is free (deterministic=False) unless a seed is given; with a seed the same
batches come out on every run. `make_train_epochs` strings whole epochs of it together, each a
function of (seed, epoch) only, so that a resumed run reads what an uninterrupted one would.
Pass the GLOBAL batch size (per-replica batch x replicas); under
JAX over several processes, each process passes its share of the files (`process_share`) and its
share of the global batch.

Embedding (`make_embed_dataset`, `make_embed_dataset_from_files`): no augmentation, every image
resized to S x S (any S; call again with other sizes for multi-scale), optional horizontal flip,
ids and labels kept, the last partial batch kept, order fixed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import tensorflow as tf

from landmarks.data import augment as augment_ops
from landmarks.data.tfrecords import parse_example
from landmarks.errors import ConfigError, DataError

AUGMENTATIONS = ("tf", "albumentations", "none")
MAX_PARALLEL_FILES = 16  # shards read at once while training


def make_train_dataset(
    files: Sequence[str],
    image_size: int,
    global_batch_size: int,
    *,
    augment: str = "tf",
    seed: int | None = None,
    shuffle_buffer: int = 2048,
    repeat: bool = True,
    crop_area_min: float = augment_ops.AREA_MIN,
) -> tf.data.Dataset:
    """Training batches: ({"image": float32 [B,S,S,3] in [0,255], "label": int32 [B]}, int32 [B]).

    Args:
        files: shard paths (see tfrecords.list_shards).
        image_size: S, pixels.
        global_batch_size: B = per-replica batch x replicas.
        augment: "tf" (in-graph, TPU-safe), "albumentations" (host Python, CPU/GPU only) or
            "none" (decode and resize only).
        seed: None = fastest, order not reproducible; an int = the same batches every run and
            every time the dataset is iterated again.
        shuffle_buffer: examples in the shuffle buffer (<= 1 turns it off).
        repeat: loop forever (steps_per_epoch decides epochs).
        crop_area_min: the random crop keeps a fraction in [crop_area_min, 1] of the image area
            ("tf" and "albumentations").
    """
    files = _check_files(files)
    augment_ops.check_crop_area_min(crop_area_min)
    if augment not in AUGMENTATIONS:
        raise ConfigError(f"augment must be one of {', '.join(AUGMENTATIONS)}, got {augment!r}")
    if augment == "albumentations":
        augment_ops.check_host_augmentation_allowed()
    _check_positive(image_size=image_size, global_batch_size=global_batch_size)
    deterministic = seed is not None
    # four streams of the one seed: shard orders, example shuffle, per-example and per-batch
    # augmentation
    order_seed, shuffle_seed, examples_seed, batches_seed = (
        random.randrange(2**31) if seed is None else mixed_seed(seed, stream) for stream in range(4)
    )
    names = tf.data.Dataset.from_tensor_slices(files)
    names = names.repeat() if repeat else names
    # Each pass over the shards in its own order, a function of (seed, pass) alone: iterating
    # the dataset again gives the same batches (Keras' fit on JAX iterates once to peek at a
    # batch, then again to train), where a shuffle that reshuffles per iteration would not.
    names = names.batch(len(files)).enumerate()
    names = names.map(
        lambda index, batch: tf.random.experimental.stateless_shuffle(
            batch, seed=tf.stack([tf.constant(order_seed, tf.int64), index])
        )
    ).unbatch()
    dataset = names.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(files), MAX_PARALLEL_FILES),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    if shuffle_buffer > 1:
        dataset = dataset.shuffle(shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=False)
    example_seeds = tf.data.Dataset.random(seed=examples_seed)
    example_seeds = example_seeds.batch(2, drop_remainder=True)  # [2] int64 each
    dataset = tf.data.Dataset.zip(dataset, example_seeds)

    def example(serialized, example_seed):
        record = parse_example(serialized)
        if augment == "tf":
            image = augment_ops.decode_random_crop(
                record["encoded"], image_size, example_seed, crop_area_min
            )
            # channel means for the batch's colour jitter, taken while the image is in cache
            return (image, tf.reduce_mean(image, axis=[0, 1])), record["label"]
        if augment == "albumentations":
            decoded = tf.io.decode_jpeg(record["encoded"], channels=3)
            image = augment_ops.albumentations_augment(
                decoded, image_size, example_seed, crop_area_min
            )
        else:
            image = _decode_resize(record["encoded"], image_size, antialias=False)
        return image, record["label"]

    dataset = dataset.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    dataset = dataset.batch(global_batch_size, drop_remainder=True)
    if augment == "tf":
        batch_seeds = tf.data.Dataset.random(seed=batches_seed).batch(2)

        def augment_batch(batch, batch_seed):
            (images, means), labels = batch
            return augment_ops.augment_batch(images, batch_seed, means), labels

        dataset = tf.data.Dataset.zip(dataset, batch_seeds).map(
            augment_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic
        )
    dataset = dataset.map(lambda image, label: ({"image": image, "label": label}, label))
    return dataset.prefetch(tf.data.AUTOTUNE)


def mixed_seed(*keys: int) -> int:
    """A seed in [0, 2**31) mixed from integer `keys` by numpy's SeedSequence: nearby keys give
    unrelated streams (seed + epoch would give epoch e + 1 the stream of epoch e's seed + 1).
    The data of epoch e of a run seeded s use mixed_seed(s, e); the model's i-th random
    generator in that epoch mixed_seed(s, e, i) (landmarks.training.callbacks.EpochRandomness)."""
    import numpy as np

    return int(np.random.SeedSequence([int(key) for key in keys]).generate_state(1)[0] >> 1)


def make_train_epochs(
    files: Sequence[str],
    image_size: int,
    global_batch_size: int,
    *,
    seed: int,
    epochs: range,
    steps_per_epoch: int,
    **options,
) -> tf.data.Dataset:
    """Training batches of epochs `epochs` (0-based, e.g. range(start_epoch, last_epoch)),
    `steps_per_epoch` batches each, one after the other; batches as `make_train_dataset`'s.

    Epoch e is the first `steps_per_epoch` batches of make_train_dataset(files, ...,
    seed=mixed_seed(seed, e), repeat=True): its shard order, shuffle and augmentation depend on
    (seed, e) alone. A run resumed after epoch e therefore trains on the very batches the
    uninterrupted run trained on, and each epoch starts a fresh pass over the shards. `options`
    are make_train_dataset's keyword arguments (augment, shuffle_buffer, crop_area_min).
    """
    if len(epochs) < 1 or steps_per_epoch < 1:
        raise ConfigError(f"internal: epochs {epochs}, steps_per_epoch {steps_per_epoch}")
    passes = [
        make_train_dataset(
            files,
            image_size,
            global_batch_size,
            seed=mixed_seed(seed, epoch),
            repeat=True,
            **options,
        ).take(steps_per_epoch)
        for epoch in epochs
    ]
    dataset = passes[0]
    for later in passes[1:]:
        dataset = dataset.concatenate(later)
    # known length (flat_map hides it): Keras counts the epochs' batches from it
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(epochs) * steps_per_epoch))
    # read ahead across an epoch's end: the next epoch's pipeline starts while this one's last
    # batches train
    return dataset.prefetch(tf.data.AUTOTUNE)


def process_share(files: Sequence[str], processes: int, index: int) -> list[str]:
    """The record files that process `index` of `processes` trains on: every `processes`-th
    file from the `index`-th on, in the order given (the manifest's, the same on every process).

    Each file goes to exactly one process, so over one pass of the shares every example is read
    once and none twice, and a process reads only its own files. ConfigError unless the file
    count is a multiple of `processes` (prepare's shards hold equal record counts to within one,
    so equal file counts keep the processes' passes in step).
    """
    files = _check_files(files)
    if processes < 1 or not 0 <= index < processes:
        raise ConfigError(f"internal: process {index} of {processes}")
    if len(files) % processes:
        raise ConfigError(
            f"records_dir: {len(files)} training shards cannot be shared evenly by {processes} "
            f"processes; write a multiple of {processes} shards (prepare --shards N)"
        )
    return files[index::processes]


def make_embed_dataset(
    files: Sequence[str], image_size: int, batch_size: int, *, flip: bool = False
) -> tf.data.Dataset:
    """Records -> {"image": float32 [B,S,S,3] in [0,255], "id": string [B], "label": int32 [B]}
    (label -1 when unknown); images resized to S x S, flipped left-right when `flip`; the last
    batch may be smaller."""
    files = _check_files(files)
    _check_positive(image_size=image_size, batch_size=batch_size)

    def example(serialized):
        record = parse_example(serialized)
        image = _decode_resize(record["encoded"], image_size, antialias=True)
        return {"image": _flip(image, flip), "id": record["id"], "label": record["label"]}

    dataset = tf.data.TFRecordDataset(files, num_parallel_reads=min(len(files), MAX_PARALLEL_FILES))
    dataset = dataset.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def make_embed_dataset_from_files(
    paths: Sequence[str],
    ids: Sequence[str],
    image_size: int,
    batch_size: int,
    *,
    flip: bool = False,
) -> tf.data.Dataset:
    """Like `make_embed_dataset`, reading image files (JPEG, PNG, BMP, GIF) directly; label -1.
    EXIF orientation is not applied here (records written by `prepare` are upright). A file
    that cannot be read or decoded is left out, so one broken photo of a test folder does not
    stop the run: callers compare the ids that come out with `ids` and report the missing ones
    (landmarks.inference.sources)."""
    paths, ids = list(map(str, paths)), list(map(str, ids))
    if len(paths) != len(ids):
        raise DataError(f"got {len(paths)} paths but {len(ids)} ids")
    if not paths:
        raise DataError("no image files given")
    _check_positive(image_size=image_size, batch_size=batch_size)

    def example(path, image_id):
        encoded = tf.io.read_file(path)
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        image = tf.image.resize(image, [image_size, image_size], antialias=True)
        image = tf.ensure_shape(image, [image_size, image_size, 3])
        return {"image": _flip(image, flip), "id": image_id, "label": tf.constant(-1, tf.int32)}

    dataset = tf.data.Dataset.from_tensor_slices((paths, ids))
    dataset = dataset.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.ignore_errors().batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _decode_resize(encoded: tf.Tensor, image_size: int, antialias: bool) -> tf.Tensor:
    image = tf.io.decode_jpeg(encoded, channels=3)
    image = tf.image.resize(image, [image_size, image_size], antialias=antialias)
    return tf.ensure_shape(image, [image_size, image_size, 3])


def _flip(image: tf.Tensor, flip: bool) -> tf.Tensor:
    return tf.image.flip_left_right(image) if flip else image


def _check_files(files: Sequence[str]) -> list[str]:
    files = [str(f) for f in files]
    if not files:
        raise DataError("no record files given (did prepare write any shards?)")
    return files


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if int(value) < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
