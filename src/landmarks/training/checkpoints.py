"""Checkpoints of a run on either backend: save every epoch, resume the latest, start a stage
from an earlier run, and save a Keras model atomically.

Run folder (config.run_dir):
    checkpoints/ckpt-N.h5          after epoch N: every model variable (trainable and not, in
                                   `model.weights` order), the optimizer's variables (its
                                   `iterations`, hence the schedule position, and its slots) and,
                                   under mixed_float16, the loss scale; attributes: finished
                                   epochs, step, backend, Keras version
    checkpoints/checkpoint.json    the index: {"latest": "ckpt-N.h5", "finished_epochs": N,
                                   "step": S, "kept": [..., "ckpt-N.h5"]} (the committed
                                   checkpoints, oldest first), rewritten last, so a run killed
                                   while saving resumes from the previous checkpoint. `read_index`
                                   is its one reader: anything else is a DataError naming it

Only finite values are written: a checkpoint, embed_model.keras or best_embed_model.keras whose
arrays hold a NaN or an infinity is refused (NonFiniteWeights) before anything is written, and an
epoch whose mean loss is NaN/inf (cut short by StopOnNaN) is not checkpointed; so after a
divergence the index still names the last good checkpoint, which no later save rotates away.
A save that fails (a full disk) leaves the index and the kept checkpoints as they were and is a
DataError naming the file.

Why not Keras' own formats (both were tried): `model.save_weights` of a compiled model stores the
optimizer under the optimizer's own structure, so a mixed_float16 run (whose optimizer Keras
wraps in a LossScaleOptimizer) and a bfloat16 or float32 run cannot resume each other: Keras
then skips the optimizer with a warning and the schedule restarts at step 0.
`keras.callbacks.OrbaxCheckpoint` needs Keras >= 3.14 and orbax-checkpoint, which Kaggle's and
Colab's GPU images (Keras 3.10+) do not all have. This file holds arrays by position with their
paths and shapes checked on restore, the same on JAX and TensorFlow, so a run started on a TPU
with JAX resumes on a GPU with TensorFlow and the reverse (tested).

Local paths are written to a temporary name and renamed; gs:// paths are written to a local
temporary file first and copied through tf.io.gfile (a local staging copy). Only the chief
writes (under DataParallel and tf.distribute every variable is replicated, so it holds them all).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import tempfile
import uuid

import keras
import numpy as np

from landmarks.errors import ConfigError, DataError, LandmarksError
from landmarks.io_utils import read_text, write_refusals_reported, write_text_atomic

KEEP_CHECKPOINTS = 2
INDEX = "checkpoint.json"
FORMAT = "landmarks-checkpoint-1"
CHECKPOINT_NAME = re.compile(r"ckpt-([0-9]+)\.h5")


class NonFiniteWeights(LandmarksError):
    """Weights to be written hold NaN or infinite values; nothing was written."""


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def _exists(path: str) -> bool:
    return _gfile().exists(path)


def _inner_optimizer(optimizer):
    """(the optimizer that owns the slots, the loss-scale wrapper's own variables or [])."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        inner = optimizer.inner_optimizer
        own = [v for v in optimizer.variables if all(v is not w for w in inner.variables)]
        return inner, own
    return optimizer, []


def _to_numpy(variable) -> np.ndarray:
    """A variable's value on this host: a tf.distribute variable's local copy (read in
    cross-replica context, no collective), a replicated JAX array spanning several hosts from
    this host's first shard, which holds all of it."""
    value = variable.value
    if keras.backend.backend() == "tensorflow":
        return np.asarray(value.read_value().numpy())
    if not getattr(value, "is_fully_addressable", True):
        if not value.sharding.is_fully_replicated:
            raise ConfigError(f"checkpoint: variable {variable.path} is sharded across hosts")
        value = value.addressable_shards[0].data
    return np.asarray(value)


class RunCheckpoint(keras.callbacks.Callback):
    """Saves model + optimizer + finished epochs to `directory` after every epoch; restores the
    latest. The optimizer must be built before `restore_latest` (so its slots exist).

    `refused`: why the last epoch was not checkpointed (its loss or its weights were NaN/inf),
    or None; training is then stopped and the index still names the last good checkpoint."""

    def __init__(self, directory: str, model, optimizer, *, is_chief: bool = True):
        super().__init__()
        self.directory = directory
        self.checkpoint_model = model
        self.optimizer = optimizer
        self.is_chief = is_chief
        self.refused: str | None = None

    def read_index(self) -> dict | None:
        """The index of the latest checkpoint, or None when there is none."""
        return read_index(self.directory)

    def latest(self) -> str | None:
        index = self.read_index()
        return None if index is None else os.path.join(self.directory, index["latest"])

    def finished_epochs(self) -> int:
        """Finished epochs of the latest committed checkpoint (0 when there is none)."""
        index = self.read_index()
        return 0 if index is None else index["finished_epochs"]

    def remove_leftovers(self) -> list[str]:
        """Delete what a save killed half-way leaves in the folder (the chief only): temporary
        `*.tmp-*` files, and checkpoint files written after the index's latest one that it does
        not list (written, but killed before the index named them). A checkpoint the index
        names is never removed, nor one older than its latest. Returns the names removed. Call
        it while holding the run lock (landmarks.training.run_lock), so that no other save is
        in flight."""
        if not self.is_chief or not _exists(self.directory):
            return []
        index = self.read_index()  # a damaged index stops here: nothing is removed
        kept = set(index["kept"]) if index else set()
        committed = index["finished_epochs"] if index else 0
        removed = []
        for name in sorted(_gfile().listdir(self.directory)):
            name = name.rstrip("/")
            number = CHECKPOINT_NAME.fullmatch(name)
            unlisted = number is not None and name not in kept and int(number[1]) > committed
            if ".tmp-" in name or unlisted:
                _gfile().remove(os.path.join(self.directory, name))
                removed.append(name)
        return removed

    def restore_latest(self) -> int:
        """Restore the latest checkpoint if any; returns the number of finished epochs (0 if none).

        ConfigError when the checkpoint does not fit the model or optimizer (naming the first
        variable that differs), or when the optimizer's step is not the one the index recorded.
        """
        index = self.read_index()
        if index is None:
            return 0
        path = os.path.join(self.directory, index["latest"])
        inner, loss_scale = _inner_optimizer(self.optimizer)
        with _opened(path) as store:
            _assign(self.checkpoint_model.weights, store["model"], path, "model")
            _assign(inner.variables, store["optimizer"], path, "optimizer")
            if loss_scale and "loss_scale" in store and len(store["loss_scale"]) == len(loss_scale):
                _assign(loss_scale, store["loss_scale"], path, "loss_scale")
        step = int(_to_numpy(self.optimizer.iterations))
        if step != int(index["step"]):
            raise ConfigError(f"{path}: restored step {step}, but {INDEX} says {index['step']}")
        return int(index["finished_epochs"])

    def save(self, finished_epochs: int) -> str | None:
        """Write ckpt-<finished_epochs>.h5, then the index; returns its path (None off-chief).

        NonFiniteWeights (nothing written) when a value is NaN/inf; DataError naming the file
        when it cannot be written (a full disk), the index and kept checkpoints unchanged."""
        inner, loss_scale = _inner_optimizer(self.optimizer)
        step = int(_to_numpy(self.optimizer.iterations))
        name = f"ckpt-{finished_epochs}.h5"
        path = os.path.join(self.directory, name)
        groups = {"model": self.checkpoint_model.weights, "optimizer": inner.variables}
        if loss_scale:
            groups["loss_scale"] = loss_scale
        arrays = {
            group: [(variable.path, _to_numpy(variable)) for variable in variables]
            for group, variables in groups.items()
        }
        # Every process checks (and so stops alike); the chief alone writes.
        require_finite([pair for pairs in arrays.values() for pair in pairs], path)
        if not self.is_chief:
            return None
        attributes = {
            "format": FORMAT,
            "finished_epochs": finished_epochs,
            "step": step,
            "backend": keras.backend.backend(),
            "keras_version": keras.__version__,
        }
        previous = self.read_index()
        kept = [n for n in (previous["kept"] if previous else []) if n != name] + [name]
        dropped, kept = kept[:-KEEP_CHECKPOINTS], kept[-KEEP_CHECKPOINTS:]
        index = {"latest": name, "finished_epochs": finished_epochs, "step": step, "kept": kept}
        with write_refusals_reported(path, f"; {kept_account(self.directory)}"):
            _write_h5(path, arrays, attributes)
            write_text_atomic(
                os.path.join(self.directory, INDEX), json.dumps(index, indent=1) + "\n"
            )
        for old in dropped:
            old_path = os.path.join(self.directory, old)
            if _exists(old_path):
                _gfile().remove(old_path)
        return path

    def on_epoch_end(self, epoch, logs=None):
        """Checkpoint the finished epoch, unless its mean loss is NaN/inf (StopOnNaN cut it
        short) or its weights are: then `refused` says why and training stops."""
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.refused = f"epoch {epoch + 1} was not checkpointed (its loss is {float(loss)})"
        else:
            try:
                self.save(epoch + 1)
                return
            except NonFiniteWeights as error:
                self.refused = f"epoch {epoch + 1} was not checkpointed ({error})"
        self.model.stop_training = True


def require_finite(named_arrays, target: str) -> None:
    """NonFiniteWeights naming `target` and the first array that holds NaN or inf, when any
    does. named_arrays: (variable path, numpy array) pairs; the check every writer of model
    weights makes before it writes anything."""
    named_arrays = list(named_arrays)
    bad = [name for name, array in named_arrays if not np.isfinite(array).all()]
    if bad:
        raise NonFiniteWeights(
            f"{target}: not written: {len(bad)} of its {len(named_arrays)} arrays hold NaN or "
            f"inf values (first: {bad[0]})"
        )


def kept_account(directory: str) -> str:
    """Which checkpoint of `directory` a rerun resumes from, in words."""
    index = read_index(directory)
    if index is None:
        return f"no checkpoint is kept in {directory}, so a rerun starts from the beginning"
    latest = os.path.join(directory, index["latest"])
    return f"the last good checkpoint {latest} (epoch {index['finished_epochs']}) is kept"


def read_index(directory: str) -> dict | None:
    """checkpoint.json of `directory` (validated: see the module docstring), or None when there
    is none. DataError naming the file when it is not an index as `RunCheckpoint.save` writes
    it; ConfigError for a folder that holds checkpoints of the earlier tf.train.Checkpoint
    format (which would otherwise be silently trained over)."""
    path = os.path.join(directory, INDEX)
    if not _exists(path):
        if _exists(os.path.join(directory, "checkpoint")):
            raise ConfigError(
                f"{directory}: holds tf.train.Checkpoint checkpoints of an earlier version of "
                "landmarks, which this version cannot resume; use another run_name"
            )
        return None
    try:
        index = json.loads(read_text(path))
    except ValueError as error:
        problem = f"not JSON: {error}"
    else:
        problem = _index_problem(index)
    if problem:
        raise DataError(
            f"{path}: damaged checkpoint index ({problem}); no checkpoint is removed or resumed "
            'until it is repaired to {"latest": "ckpt-N.h5", "finished_epochs": N, "step": S, '
            '"kept": [..., "ckpt-N.h5"]}'
        )
    return index


def _index_problem(index) -> str | None:
    """What makes `index` (parsed JSON) not a checkpoint index, or None."""
    if not isinstance(index, dict):
        return f"a JSON {type(index).__name__}, not an object"
    missing = [key for key in ("latest", "finished_epochs", "step", "kept") if key not in index]
    if missing:
        return f"no {', '.join(missing)}"
    for key in ("finished_epochs", "step"):
        value = index[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"{key} is {value!r}, not a count"
    latest, kept = index["latest"], index["kept"]
    if latest != f"ckpt-{index['finished_epochs']}.h5":
        return f"latest is {latest!r}, not ckpt-{index['finished_epochs']}.h5"
    if not isinstance(kept, list) or latest not in kept:
        return f"kept is {kept!r}, not a list of checkpoint names holding the latest"
    if not all(isinstance(name, str) and CHECKPOINT_NAME.fullmatch(name) for name in kept):
        return f"kept is {kept!r}, not a list of checkpoint names ckpt-N.h5"
    return None


def _write_h5(path: str, groups: dict, attributes: dict) -> None:
    """Arrays of each group ({name: [(variable path, array)]}) as datasets "0", "1", ...
    (attribute "path") in one HDF5 file at `path`, written under a temporary name (local) or
    staged locally (gs://)."""
    import h5py

    remote = "://" in path
    if remote:
        local = os.path.join(tempfile.mkdtemp(prefix="landmarks-ckpt-"), os.path.basename(path))
    else:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        local = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        try:
            with h5py.File(local, "w") as handle:
                handle.attrs.update(attributes)
                for group_name, arrays in groups.items():
                    group = handle.create_group(group_name)
                    for position, (variable_path, array) in enumerate(arrays):
                        dataset = group.create_dataset(str(position), data=array)
                        dataset.attrs["path"] = variable_path
        except OSError as error:  # h5py's message spans lines: the system's words instead
            if error.errno is None:
                raise
            raise OSError(error.errno, os.strerror(error.errno), path) from error
        if remote:
            _gfile().makedirs(os.path.dirname(path))
            staged = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
            _gfile().copy(local, staged, overwrite=True)
            _gfile().rename(staged, path, overwrite=True)
        else:
            os.replace(local, path)
    finally:
        if remote:
            shutil.rmtree(os.path.dirname(local), ignore_errors=True)
        elif os.path.exists(local):
            os.remove(local)


@contextlib.contextmanager
def _opened(path: str):
    """`with _opened(path) as store`: {group: [(variable path, array)]} of a checkpoint file
    (local, or gs:// through a local staging copy)."""
    import h5py

    staging = tempfile.mkdtemp(prefix="landmarks-ckpt-") if "://" in path else None
    local = path
    try:
        if staging:
            local = os.path.join(staging, os.path.basename(path))
            _gfile().copy(path, local, overwrite=True)
        try:
            with h5py.File(local, "r") as handle:
                if handle.attrs.get("format") != FORMAT:
                    raise ConfigError(f"{path}: not a landmarks checkpoint")
                store = {
                    name: [(g[str(i)].attrs["path"], g[str(i)][()]) for i in range(len(g))]
                    for name, g in handle.items()
                }
        except OSError as error:
            raise ConfigError(f"{path}: unreadable checkpoint ({error})") from error
        yield store
    finally:
        if staging:
            shutil.rmtree(staging, ignore_errors=True)


def _assign(variables, saved, path: str, group: str) -> None:
    """Assign saved (path, array) pairs to `variables` by position, after checking that the
    count and every shape agree (ConfigError naming the first that does not)."""
    variables = list(variables)
    if len(variables) != len(saved):
        raise ConfigError(
            f"{path}: {group} has {len(saved)} saved variables, this run has {len(variables)}"
        )
    for variable, (saved_path, value) in zip(variables, saved, strict=True):
        if tuple(variable.shape) != tuple(value.shape):
            raise ConfigError(
                f"{path}: {group} variable {saved_path} has shape {tuple(value.shape)}, "
                f"this run's {variable.path} has {tuple(variable.shape)}"
            )
    for variable, (_, value) in zip(variables, saved, strict=True):
        variable.assign(value)


def restore_model_weights(model, path: str) -> str:
    """Load only the model weights of a checkpoint into `model`; returns the file read.

    `path`: a run folder (its checkpoints/), a checkpoints folder, or a ckpt-N.h5 file. Used to
    start a stage of staged training from the previous stage's run; the optimizer, schedule
    position and epoch count start afresh.
    """
    found = None
    if path.endswith(".h5") and _exists(path):
        found = path
    for folder in (path, os.path.join(path, "checkpoints")):
        if found is None and _gfile().isdir(folder):
            index = read_index(folder)
            if index is not None:
                found = os.path.join(folder, index["latest"])
    if found is None:
        raise ConfigError(
            f"init_from: no checkpoint found at {path} (expected a run folder with "
            "checkpoints/, a checkpoints folder, or a checkpoint file such as .../ckpt-3.h5)"
        )
    with _opened(found) as store:
        try:
            _assign(model.weights, store["model"], found, "model")
        except ConfigError as error:
            raise ConfigError(f"init_from: {error}") from error
    return found


def save_keras_atomic(model, path: str) -> None:
    """`model.save(path)` through a temporary .keras name and a rename (local or gs://), only
    from finite weights (NonFiniteWeights, nothing written); DataError naming `path` when the
    file system refuses the write (a full disk, a read-only folder), what was there kept."""
    require_finite(((v.path, _to_numpy(v)) for v in model.weights), path)
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-{name}")
    with write_refusals_reported(path):
        try:
            model.save(tmp)
            _gfile().rename(tmp, path, overwrite=True)
        finally:
            if _exists(tmp):
                _gfile().remove(tmp)
