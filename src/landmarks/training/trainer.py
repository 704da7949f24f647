"""Train EfficientNet-DOLG + sub-center ArcFace on TFRecords, on TPU, GPU(s) or CPU.

`train(config)` is the entry (also `python -m landmarks train --config F --set k=v`):

1. check the configuration against the records before anything heavy (`check_config`);
2. pick strategy (tf.distribute, or DataParallel on JAX, over one or several processes: each
   process then reads its own share of the shards and feeds its share of every global batch,
   and process 0 alone writes the run folder), precision and XLA for the machine and Keras
   backend (landmarks.training.devices, landmarks.training.precision);
3. build the models in the strategy scope with dynamic margins from the label map's class
   counts, compile with the warmup-cosine schedule, the backbone learning-rate multiplier,
   global-norm clipping and float32 cross-entropy (landmarks.training.optimization);
4. resume from the latest checkpoint of the run folder when there is one (weights, optimizer
   slots and iterations, so the schedule goes on where it stopped; `resume_from` first copies
   an earlier session's run folder in) or, for a new staged run, load the weights of `init_from`;
5. fit with a checkpoint per epoch, history.csv, NaN stop and a validation GAP every
   `validate_every` epochs (landmarks.training.callbacks); only finite weights are written, so
   a run whose loss or weights become NaN/inf stops with the last good checkpoint still the
   latest, and history.csv lists checkpointed epochs only;
6. write embed_model.keras (the last epoch), config.yaml, curves.png in the run folder.
"""

from __future__ import annotations

import dataclasses
import os

from landmarks.config import Config
from landmarks.errors import ConfigError
from landmarks.io_utils import write_refusals_reported
from landmarks.training.plan import SHAPE_KEYS, TrainingPlan, check_config


def backbone_variables(train_model) -> list:
    """Trainable variables of the backbone: those of the nested backbone model of `train_model`.

    The backbone is the keras.applications sub-model inside the training model (a layer that is
    itself a keras.Model, named "backbone" or "efficientnet..."); the head (DOLG, neck, ArcFace)
    is everything else. Raises ConfigError when there is no such sub-model.
    """
    import keras

    nested = [layer for layer in train_model.layers if isinstance(layer, keras.Model)]
    named = [m for m in nested if "backbone" in m.name or m.name.startswith("efficientnet")]
    chosen = named or nested
    if len(chosen) != 1:
        raise ConfigError(
            f"backbone_lr_multiplier: cannot tell the backbone of model {train_model.name!r} "
            f"(nested models: {[m.name for m in nested]}); set backbone_lr_multiplier: 1.0"
        )
    return list(chosen[0].trainable_variables)


def _check_resume_compatible(config: Config, run_dir: str) -> None:
    """A run folder with checkpoints must have been run with the same weight-shaping keys
    (its config.yaml says), else they cannot be resumed. A folder without checkpoints (a run
    that failed before its first epoch ended) takes any new config."""
    import tensorflow as tf

    from landmarks.training.checkpoints import read_index

    saved_path = os.path.join(run_dir, "config.yaml")
    checkpoint_dir = os.path.join(run_dir, "checkpoints")
    if not tf.io.gfile.exists(saved_path) or read_index(checkpoint_dir) is None:
        return
    saved = Config.load(saved_path)
    changed = [k for k in SHAPE_KEYS if getattr(saved, k) != getattr(config, k)]
    if changed:
        detail = ", ".join(f"{k} {getattr(saved, k)!r} -> {getattr(config, k)!r}" for k in changed)
        raise ConfigError(
            f"run_name: {run_dir} holds a run with other model shapes ({detail}); its checkpoints "
            "cannot be resumed. Choose another run_name, or init_from that run for a new stage."
        )


def _targets_per_output(dataset, output_names):
    """When the model has several logits outputs, give each the same integer labels."""
    if not output_names:
        return dataset
    return dataset.map(lambda x, y: (x, {name: y for name in output_names}))


def train(config: Config, *, verbose: int = 2) -> str:
    """Train (or resume) the run `config.run_dir`; returns that folder. See the module docstring.

    The process that writes the run folder holds its lock (landmarks.training.run_lock) from
    before config.yaml is written until the last file is: a second run into the same folder
    stops at once with an error naming the holder. With `resume_from`, the folder of an earlier
    session is first copied in (landmarks.training.resume_from).
    """
    import contextlib

    from landmarks.training.devices import detect_strategy
    from landmarks.training.run_lock import run_folder_lock

    setup = detect_strategy()
    processes = setup.workers if setup.jax_processes else 1
    plan = check_config(config, setup.replicas, processes, setup.worker_index)
    lock = run_folder_lock(config.run_dir) if setup.is_chief else contextlib.nullcontext()
    with lock:
        if config.resume_from and setup.is_chief:
            from landmarks.training.resume_from import continue_from

            continue_from(config.resume_from, config.run_dir)
        # The other processes read the run folder (its checkpoints) once the chief has set it up.
        setup.wait_for_all("run folder ready")
        return _train(config, setup, plan, verbose)


def _train(config: Config, setup, plan: TrainingPlan, verbose: int) -> str:
    import keras
    import tensorflow as tf

    from landmarks.training import callbacks as cb
    from landmarks.training import checkpoints
    from landmarks.training.devices import multi_worker_trainer
    from landmarks.training.precision import resolve_jit_compile, resolve_precision

    precision = resolve_precision(config.precision, setup.kind)
    jit_compile = resolve_jit_compile(config.jit_compile, setup.kind, setup.backend)
    resolved = Config.from_dict(config.to_dict(), source="config")
    resolved.num_classes = plan.num_classes
    run_dir = config.run_dir
    checkpoint_dir = os.path.join(run_dir, "checkpoints")
    resuming = checkpoints.read_index(checkpoint_dir) is not None  # a damaged one: DataError
    _check_resume_compatible(resolved, run_dir)
    share = (
        f" ({plan.process_batch} per process)" if plan.process_batch != plan.global_batch else ""
    )
    print(
        f"training on {setup}, {precision}, global batch {plan.global_batch}{share}, "
        f"jit_compile={jit_compile}; {plan.train_examples} records, "
        f"{plan.num_classes} classes, {plan.steps_per_epoch} steps/epoch",
        flush=True,
    )
    if setup.is_chief:
        config_path = os.path.join(run_dir, "config.yaml")
        with write_refusals_reported(config_path):
            tf.io.gfile.makedirs(run_dir)
            resolved.save(config_path)

    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(config.seed)
    with setup.scope():
        init_from = "" if resuming else config.init_from
        parts = _build_and_compile(resolved, plan, jit_compile, init_from=init_from)
        checkpoint = checkpoints.RunCheckpoint(
            checkpoint_dir, parts.model, parts.optimizer, is_chief=setup.is_chief
        )
        removed = checkpoint.remove_leftovers()
        if removed:
            print(f"removed what a killed checkpoint save left: {', '.join(removed)}", flush=True)
        start_epoch = checkpoint.restore_latest()
        step = int(parts.optimizer.iterations.numpy())
        setup.check_same_everywhere("restored (epoch, step)", [start_epoch, step])
        if start_epoch:
            print(
                f"resumed from {checkpoint.latest()}: epoch {start_epoch} done, step {step}",
                flush=True,
            )

    history_path = os.path.join(run_dir, "history.csv")
    history = cb.HistoryCSV(
        history_path,
        parts.schedule,
        config.backbone_lr_multiplier,
        start_epoch=start_epoch,
        enabled=setup.is_chief,
    )
    nan_stop = cb.StopOnNaN()
    callbacks = [cb.EpochRandomness(parts.model, config.seed), nan_stop]
    if plan.holdout_files and setup.multi_worker:
        print("validation GAP is off in multi-worker training (run `infer` on the saved model)")
    elif plan.holdout_files:
        callbacks.append(_validation_callback(config, plan, setup, parts.embed_model, history))
    callbacks += [history, checkpoint]

    last_epoch = config.stop_after_epochs or config.epochs
    if start_epoch < last_epoch:
        from landmarks.data.pipeline import make_train_epochs
        from landmarks.data.record_check import naming_bad_records

        # each epoch's batches and dropout masks are a function of (seed, epoch): a resumed run
        # trains on what the uninterrupted run would have
        dataset = make_train_epochs(
            plan.process_files,
            config.image_size,
            plan.process_batch,
            seed=config.seed,
            epochs=range(start_epoch, last_epoch),
            steps_per_epoch=plan.steps_per_epoch,
            augment=config.augment,
            shuffle_buffer=config.shuffle_buffer,
            crop_area_min=config.crop_area_min,
        )
        dataset = _targets_per_output(dataset, parts.output_names)
        trainer = multi_worker_trainer(parts.model) if setup.multi_worker else parts.model
        if trainer is not parts.model:
            _compile(trainer, parts, config, jit_compile)
        try:
            with setup.scope(), naming_bad_records(plan.train_files + plan.holdout_files):
                trainer.fit(
                    dataset,
                    epochs=last_epoch,
                    initial_epoch=start_epoch,
                    steps_per_epoch=plan.steps_per_epoch,
                    shuffle=False,  # the records are shuffled by the input pipeline
                    callbacks=callbacks,
                    verbose=verbose,
                )
        finally:  # no row for an epoch whose checkpoint failed or was refused
            if setup.is_chief:
                history.keep_epochs_up_to(checkpoint.finished_epochs())
        nan_stop.raise_if_stopped(checkpoint_dir, checkpoint.refused)

    if setup.is_chief:
        checkpoints.save_keras_atomic(parts.embed_model, os.path.join(run_dir, "embed_model.keras"))
        _plot_curves(history_path, os.path.join(run_dir, "curves.png"))
    return run_dir


@dataclasses.dataclass
class _Compiled:
    """The models, schedule, optimizer and loss of a run (built in the strategy scope)."""

    model: object
    embed_model: object
    schedule: object
    optimizer: object
    loss: object
    output_names: list


def _build_and_compile(
    config: Config, plan: TrainingPlan, jit_compile: bool, *, init_from: str = ""
) -> _Compiled:
    """build_model with dynamic margins from the class counts, weights of `init_from` (a run of
    an earlier stage) when given, then compile; the optimizer is built (under mixed_float16,
    a LossScaleOptimizer around ours)."""
    import keras

    from landmarks.models.build import build_model
    from landmarks.training.checkpoints import restore_model_weights
    from landmarks.training.optimization import (
        ArcFaceCrossEntropy,
        exclude_vectors_from_decay,
        make_optimizer,
        make_schedule,
    )

    train_model, embed_model = build_model(
        config, class_counts=plan.class_counts if config.dynamic_margins else None
    )
    if init_from:
        print(f"initial weights from {restore_model_weights(train_model, init_from)}", flush=True)
    schedule = make_schedule(
        config.learning_rate, plan.total_steps, plan.warmup_steps, config.min_learning_rate
    )
    optimizer = make_optimizer(
        config.optimizer,
        schedule,
        weight_decay=config.weight_decay,
        clip_norm=config.clip_norm,
        backbone_variables=backbone_variables(train_model),
        backbone_lr_multiplier=config.backbone_lr_multiplier,
    )
    exclude_vectors_from_decay(optimizer, train_model.trainable_variables)
    if train_model.dtype_policy.name == "mixed_float16":
        # Wrapped here, not by compile: the checkpoint and every compile (the multi-worker
        # trainer's too) must share the one wrapper whose loss scale is saved and restored.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    output = train_model.output
    parts = _Compiled(
        model=train_model,
        embed_model=embed_model,
        schedule=schedule,
        optimizer=optimizer,
        loss=ArcFaceCrossEntropy(config.label_smoothing),
        output_names=sorted(output) if isinstance(output, dict) else [],
    )
    _compile(train_model, parts, config, jit_compile)
    # Built now (not at the first step) so that a checkpoint restores its slots at once.
    train_model.optimizer.build(train_model.trainable_variables)
    return parts


def _compile(model, parts: _Compiled, config: Config, jit_compile: bool) -> None:
    loss = {name: parts.loss for name in parts.output_names} if parts.output_names else parts.loss
    model.compile(
        optimizer=parts.optimizer,
        loss=loss,
        jit_compile=jit_compile,
        steps_per_execution=config.steps_per_execution,
    )


def _validation_callback(config: Config, plan: TrainingPlan, setup, embed_model, history):
    from landmarks.inference.forward import compiled_forward
    from landmarks.training.callbacks import ValidationGAP

    previous = [float(r["val_gap"]) for r in history.rows if r.get("val_gap")]
    return ValidationGAP(
        compiled_forward(embed_model, setup.tensorflow_strategy),
        lambda: _embed_dataset(plan.holdout_files, config, config.validation_queries),
        lambda: _embed_dataset(plan.train_files, config, config.validation_index),
        every=config.validate_every,
        k=config.knn_k,
        best_path=os.path.join(config.run_dir, "best_embed_model.keras"),
        save_model=embed_model,
        best_so_far=max(previous, default=-1.0),
        is_chief=setup.is_chief,
    )


def _embed_dataset(files: list, config: Config, limit: int):
    """At most `limit` records of `files` as an embedding dataset (ids, labels kept).

    Not auto-sharded: under multi-worker training every worker embeds the whole subset, so
    each computes the same GAP.
    """
    import tensorflow as tf

    from landmarks.data.pipeline import make_embed_dataset

    batch = max(1, config.batch_size)
    dataset = make_embed_dataset(files, config.image_size, batch)
    dataset = dataset.unbatch().take(limit).batch(batch)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options)


def _plot_curves(history_csv: str, out_png: str) -> None:
    """curves.png through landmarks.plots (loss, learning rate, validation GAP per epoch)."""
    import tensorflow as tf

    if not tf.io.gfile.exists(history_csv):
        return
    from landmarks.plots import plot_history

    with write_refusals_reported(out_png):
        plot_history(history_csv, out_png)
