"""`check_config`: check a run's settings against its records before anything heavy, and plan
the run (shards, classes, batch sizes, steps)."""

from __future__ import annotations

import dataclasses
import os

from landmarks.config import Config, check_image_size
from landmarks.data.record_count import count_examples
from landmarks.errors import ConfigError, DataError

# Keys that fix the shapes of the model's weights: a resumed run must not change them.
SHAPE_KEYS = ("backbone", "head", "embedding_dim", "local_dim", "num_classes", "arcface_k")


@dataclasses.dataclass
class TrainingPlan:
    """What `check_config` found: everything `train` needs besides the strategy.

    train_files / holdout_files: shard paths; num_classes: resolved (label map when 0);
    class_counts: int64 [num_classes] images per label (for dynamic margins);
    train_examples: records in the training split; per_replica_batch, global_batch: examples;
    steps_per_epoch: optimizer steps per epoch; total_steps: steps the schedule spans;
    process_files, process_batch: the training shards this process reads and the examples it
    feeds per step (all of them and the global batch, unless JAX runs over several processes).
    """

    train_files: list
    holdout_files: list
    num_classes: int
    class_counts: object
    train_examples: int
    per_replica_batch: int
    global_batch: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    process_files: list
    process_batch: int


def batch_sizes(config: Config, replicas: int) -> tuple[int, int]:
    """(per-replica batch, global batch) in examples on `replicas` replicas.

    `batch_size` is per replica, so the global batch scales with the machine (a TPU preset's 10
    per core: 80 on a v3-8's 8 cores, 10 on Colab's one-chip v5e-1); `global_batch_size`, when
    set, is split over the replicas and must divide by their count (ConfigError otherwise).
    """
    if replicas < 1:
        raise ConfigError(f"internal: replica count {replicas}")
    if config.global_batch_size:
        if config.global_batch_size < 0 or config.global_batch_size % replicas:
            raise ConfigError(
                f"global_batch_size: {config.global_batch_size} is not divisible by the "
                f"{replicas} replicas of this machine; use a multiple of {replicas}"
            )
        per_replica = config.global_batch_size // replicas
    else:
        if config.batch_size < 1:
            raise ConfigError(f"batch_size: must be >= 1 (per replica), got {config.batch_size}")
        per_replica = config.batch_size
    return per_replica, per_replica * replicas


def check_config(
    config: Config, replicas: int = 1, processes: int = 1, process_index: int = 0
) -> TrainingPlan:
    """Fail fast with a ConfigError naming the setting, folder or file at fault.

    Checks: backbone known; image_size a multiple of 32 from 32 to MAX_IMAGE_SIZE; the
    schedule, optimizer and loss settings; the ensemble members; batch sizes (global batch
    divisible by `replicas`, which span all `processes`); epochs, validation settings; training
    records present (names the folder and shard pattern) and shared evenly by the processes;
    label map present, labels in [0, num_classes).
    """
    from landmarks.models.registry import BACKBONES

    if config.backbone not in BACKBONES:
        known = ", ".join(sorted(BACKBONES))
        raise ConfigError(f"backbone: unknown {config.backbone!r}; known: {known}")
    if config.image_size <= 0 or config.image_size % 32:
        raise ConfigError(
            f"image_size: {config.image_size} is not a positive multiple of 32 "
            f"(the backbone downsamples by 32); try {max(32, round(config.image_size / 32) * 32)}"
        )
    check_image_size(config.image_size, "config")
    from landmarks.data.augment import check_crop_area_min
    from landmarks.inference.ensemble import ensemble_members
    from landmarks.training.optimization import check_optimization_settings

    check_crop_area_min(config.crop_area_min)  # before the model is built, not when batches are
    check_optimization_settings(config)
    ensemble_members(config)  # written to the run's config.yaml: checked as `infer` will
    per_replica, global_batch = batch_sizes(config, replicas)
    if config.epochs < 1:
        raise ConfigError(f"epochs: must be >= 1, got {config.epochs}")
    if not 0 <= config.stop_after_epochs <= config.epochs:
        raise ConfigError(
            f"stop_after_epochs: must be between 0 and epochs ({config.epochs}), "
            f"got {config.stop_after_epochs}"
        )
    if config.steps_per_execution < 1:
        raise ConfigError(f"steps_per_execution: must be >= 1, got {config.steps_per_execution}")
    if config.warmup_epochs < 0:
        raise ConfigError(f"warmup_epochs: must be >= 0, got {config.warmup_epochs}")
    if config.validate_every < 0:
        raise ConfigError(f"validate_every: must be >= 0 (0 = never), got {config.validate_every}")

    import tensorflow as tf

    from landmarks.data.tfrecords import read_label_map

    train_files = _shards_or_error(config.records_dir, config.train_split, "records_dir")
    from landmarks.data.pipeline import process_share

    process_files = process_share(train_files, processes, process_index)
    holdout_files = []
    if config.validate_every and config.holdout_split:
        holdout_files = _shards_or_error(config.records_dir, config.holdout_split, "holdout_split")
    label_map_path = os.path.join(config.records_dir, "label_map.csv")
    if not tf.io.gfile.exists(label_map_path):
        raise ConfigError(
            f"records_dir: no label map {label_map_path}; the records were not written by "
            "`python -m landmarks prepare --split train`"
        )
    label_map = read_label_map(config.records_dir)
    if len(label_map) == 0:
        raise DataError(f"{os.path.join(config.records_dir, 'label_map.csv')}: no rows")
    labels = label_map["label"].to_numpy()
    max_label = int(labels.max())
    num_classes = config.num_classes or max_label + 1
    if int(labels.min()) < 0 or max_label >= num_classes:
        raise ConfigError(
            f"num_classes: {num_classes}, but {os.path.join(config.records_dir, 'label_map.csv')} "
            f"has labels {int(labels.min())}..{max_label}; set num_classes: 0 (from the label "
            f"map) or at least {max_label + 1}"
        )
    import numpy as np

    class_counts = np.zeros(num_classes, dtype=np.int64)
    class_counts[labels] = label_map["count"].to_numpy()

    train_examples = count_examples(config.records_dir, config.train_split, train_files)
    steps_per_epoch = _steps_per_epoch(config, train_examples, global_batch)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = int(round(config.warmup_epochs * steps_per_epoch))
    return TrainingPlan(
        train_files=train_files,
        holdout_files=holdout_files,
        num_classes=num_classes,
        class_counts=class_counts,
        train_examples=train_examples,
        per_replica_batch=per_replica,
        global_batch=global_batch,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        warmup_steps=warmup_steps,
        process_files=process_files,
        process_batch=global_batch // processes,
    )


def _steps_per_epoch(config: Config, train_examples: int, global_batch: int) -> int:
    """`steps_per_epoch`, or one pass over the records rounded down to a multiple of
    `steps_per_execution`: Keras runs whole executions, so an epoch of 4 steps at 3 per
    execution would run 6 optimizer steps and read batches of the next epoch. ConfigError when
    a set `steps_per_epoch` is not such a multiple, or no whole execution fits in one pass."""
    per_execution = config.steps_per_execution
    if config.steps_per_epoch:
        if config.steps_per_epoch % per_execution:
            raise ConfigError(
                f"steps_per_epoch: {config.steps_per_epoch} is not a multiple of "
                f"steps_per_execution ({per_execution}); Keras would run "
                f"{-(-config.steps_per_epoch // per_execution) * per_execution} steps an epoch"
            )
        return config.steps_per_epoch
    one_pass = train_examples // global_batch
    if one_pass < 1:
        raise ConfigError(
            f"batch_size: global batch {global_batch} is larger than the {train_examples} "
            f"training records in {config.records_dir}; lower batch_size or set steps_per_epoch"
        )
    if one_pass < per_execution:
        raise ConfigError(
            f"steps_per_execution: {per_execution} is more than the {one_pass} steps of one "
            f"pass over {config.records_dir}; lower it to at most {one_pass}"
        )
    return one_pass // per_execution * per_execution


def _shards_or_error(records_dir: str, split: str, key: str) -> list[str]:
    """Shards of `split`, or a ConfigError naming `key`, the folder and the shard pattern."""
    from landmarks.data.tfrecords import list_shards

    pattern = os.path.join(records_dir, f"{split}-NNNNN-of-NNNNN.tfrec")
    try:
        files = list_shards(records_dir, split)
    except DataError as error:
        files, reason = [], f" ({error})"
    else:
        reason = ""
    if not files:
        hint = (
            f"write them with `python -m landmarks prepare --split train --out {records_dir}`"
            if key == "records_dir"
            else "prepare with --holdout > 0, or set validate_every=0 or holdout_split=''"
        )
        raise ConfigError(f"{key}: no records {pattern}{reason}; {hint}")
    return files
