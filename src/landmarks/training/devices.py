"""Pick how training is spread over the devices of the machine at hand, per Keras backend.

On JAX (`detect_strategy` when Keras runs on JAX): `keras.distribution.DataParallel` over every
JAX device (the 8 cores of a TPU v3-8, several GPUs, or simulated CPU devices): variables are
replicated, each global batch is split across the devices; one CPU or GPU device means no
distribution, one TPU chip (Colab's v5e-1 / v6e-1) a DataParallel of 1, so that the batches and
variables are laid out for the chip by the same code as on eight. `batch_size` stays per
replica: a preset sized per TPU core trains on one chip with its per-replica batch, i.e. a
global batch that many times smaller (printed when training starts); `global_batch_size`, when
set, is split over the replicas (one chip takes all of it).
Several processes (a TPU pod slice, several GPU hosts): `keras.distribution.initialize()`
(jax.distributed) runs first when KERAS_DISTRIBUTION_NUM_PROCESSES > 1 (with
KERAS_DISTRIBUTION_JOB_ADDRESSES and KERAS_DISTRIBUTION_PROCESS_ID) or TPU_WORKER_HOSTNAMES names
several hosts (a TPU VM finds the rest itself); the DataParallel mesh then spans the devices of
every process, each process feeds its own share of every global batch (the dataset is sharded by
the trainer, not by Keras), and process 0 is the chief, which alone writes the run folder.
Tested with two processes on one machine (JAX's CPU collectives). TensorFlow is kept off the
accelerators (it only reads the records), so that it does not take the GPU's memory.

On TensorFlow, order of detection (first match wins):

1. a TPU (Kaggle/Colab TPU VM or TPU node, or a pod slice: the same `TPUStrategy` code, one
   replica per core over every host of the slice);
2. `TF_CONFIG` set with more than one worker: `MultiWorkerMirroredStrategy` (several GPU or CPU
   machines, one process per machine);
3. several local GPUs: `MirroredStrategy`;
4. otherwise the default strategy (one GPU or the CPU).

Precision and XLA: landmarks.training.precision.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
from dataclasses import dataclass

from landmarks.backend import tpu_device_files, tpu_vm_signs
from landmarks.errors import ConfigError


@dataclass
class DeviceSetup:
    """The strategy and what it runs on.

    strategy: the tf.distribute strategy (tensorflow), or the keras.distribution
        DataParallel, None on one device (jax);
    kind: "tpu", "gpu" or "cpu" (the accelerator of each replica);
    replicas: number of replicas in sync over all workers (global batch = per-replica x this);
    workers: number of worker processes (1 unless multi-worker or a TPU pod slice with hosts);
    is_chief: whether this process writes the run folder (worker 0, or the only one);
    backend: the Keras backend, "tensorflow" or "jax";
    worker_index: this process's index in [0, workers) (its share of the records).
    """

    strategy: object
    kind: str
    replicas: int
    workers: int = 1
    is_chief: bool = True
    backend: str = "tensorflow"
    worker_index: int = 0

    @property
    def multi_worker(self) -> bool:
        """TensorFlow's multi-worker training (its trainer wrapper, no validation GAP)."""
        return self.backend == "tensorflow" and self.workers > 1 and self.kind != "tpu"

    def scope(self):
        """The context in which models are built and trained."""
        if self.strategy is None:
            return contextlib.nullcontext()
        return self.strategy.scope()

    @property
    def jax_processes(self) -> bool:
        """JAX over several processes: every process feeds its share of each global batch."""
        return self.backend == "jax" and self.workers > 1

    def wait_for_all(self, name: str) -> None:
        """Block until every JAX process has reached the point `name` (no-op otherwise)."""
        if self.jax_processes:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(name)

    def check_same_everywhere(self, what: str, values: list[int]) -> None:
        """ConfigError unless every JAX process holds the same `values` (e.g. the restored
        epoch and step), naming the first process that differs from process 0."""
        if not self.jax_processes:
            return
        import numpy as np
        from jax.experimental import multihost_utils

        gathered = np.asarray(multihost_utils.process_allgather(np.asarray(values, np.int64)))
        rows = gathered.tolist()
        for process, row in enumerate(rows):
            if row != rows[0]:
                raise ConfigError(
                    f"{what}: process {process} has {row}, process 0 has {rows[0]}; every "
                    "process must see the same run folder (a shared file system or gs://)"
                )

    @property
    def tensorflow_strategy(self):
        """The tf.distribute strategy (None on JAX)."""
        return self.strategy if self.backend == "tensorflow" else None

    def __str__(self) -> str:
        """E.g. "tpu x8 (jax, DataParallel)", "cpu x1 (tensorflow, default strategy)"."""
        if self.strategy is None:
            how = "one device"
        elif self.backend == "tensorflow" and self.replicas == 1 and self.workers == 1:
            how = "default strategy"
        else:
            how = type(self.strategy).__name__
        if self.jax_processes:
            hosts = f", {self.replicas} devices over {self.workers} processes"
        else:
            hosts = f", {self.workers} hosts" if self.workers > 1 else ""
        return f"{self.kind} x{self.replicas} ({self.backend}, {how}{hosts})"


def _tf_config() -> dict:
    """Parsed TF_CONFIG, or {} when unset; a ConfigError names the variable when it is not JSON."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ConfigError(f"environment variable TF_CONFIG is not valid JSON: {error}") from error
    if not isinstance(value, dict):
        raise ConfigError("environment variable TF_CONFIG must be a JSON object")
    return value


def _connect_tpu():
    """A `TPUStrategy` when a TPU can be reached, else None (no TPU, or no TPU runtime)."""
    import tensorflow as tf

    # On a TPU VM (Kaggle "TPU VM v3-8", Colab TPU v2) the chips are local; elsewhere the
    # resolver finds the TPU through TPU_NAME / COLAB_TPU_ADDR.
    tpu = "local" if _tpu_vm() else None
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.NotFoundError, tf.errors.InvalidArgumentError):
        return None
    return tf.distribute.TPUStrategy(resolver)


def detect_strategy(allow_tpu: bool = True) -> DeviceSetup:
    """Build the strategy for this machine and Keras backend (see the module docstring)."""
    import keras

    if keras.backend.backend() == "jax":
        return _detect_jax()
    return _detect_tensorflow(allow_tpu)


def _detect_jax() -> DeviceSetup:
    import jax
    import keras

    keep_tensorflow_off_accelerators()
    if _multi_host_jax() and not jax.distributed.is_initialized():
        # Cross-process collectives of CPU devices (the default in recent JAX, not in older).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        keras.distribution.initialize()
    devices = jax.devices()
    kind = devices[0].platform
    process = jax.process_index()
    distribution = None
    if data_parallel_wanted(kind, len(devices)):
        # The trainer gives each process its own share of the records and of each global batch.
        distribution = keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)
    return DeviceSetup(
        distribution, kind, len(devices), jax.process_count(), process == 0, "jax", process
    )


def data_parallel_wanted(kind: str, device_count: int) -> bool:
    """Whether JAX training distributes over its `device_count` devices of `kind` ("tpu",
    "gpu", "cpu"): several devices, or a TPU even with one chip (see the module docstring)."""
    return device_count > 1 or kind == "tpu"


def _multi_host_jax() -> bool:
    processes = os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES", "")
    hosts = [h for h in os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
    return (processes.isdigit() and int(processes) > 1) or len(hosts) > 1


def keep_tensorflow_off_accelerators() -> None:
    """Hide the GPUs from TensorFlow (JAX drives them; tf.data only reads the records), before
    TensorFlow initialises its devices; a no-op when it already has."""
    if not glob.glob("/dev/nvidia[0-9]*"):
        return  # no GPU to hide (and asking TensorFlow would log a failed CUDA start)
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TensorFlow's devices are initialised already
        pass


def _detect_tensorflow(allow_tpu: bool) -> DeviceSetup:
    import tensorflow as tf

    if allow_tpu and _tpu_present():
        strategy = _connect_tpu()
        if strategy is not None:
            # One client process drives every core of the TPU or pod slice and writes the run.
            return DeviceSetup(strategy, "tpu", strategy.num_replicas_in_sync)

    tf_config = _tf_config()
    cluster = tf_config.get("cluster", {})
    worker_count = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    if worker_count > 1:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        task = tf_config.get("task", {})
        is_chief = task.get("type") == "chief" or (
            "chief" not in cluster and task.get("type") == "worker" and task.get("index", 0) == 0
        )
        gpus = tf.config.list_physical_devices("GPU")
        return DeviceSetup(
            strategy,
            "gpu" if gpus else "cpu",
            strategy.num_replicas_in_sync,
            workers=worker_count,
            is_chief=is_chief,
        )

    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy()
        return DeviceSetup(strategy, "gpu", strategy.num_replicas_in_sync)
    return DeviceSetup(tf.distribute.get_strategy(), "gpu" if gpus else "cpu", 1)


def _tpu_vm() -> bool:
    """True on a TPU VM: the TPU chips are devices of this host (landmarks.backend's signs)."""
    return bool(tpu_vm_signs(os.environ, tpu_device_files()))


def _tpu_present() -> bool:
    """True when a TPU is named (TPU_NAME, COLAB_TPU_ADDR) or attached (TPU VM)."""
    return bool(os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR")) or _tpu_vm()


def multi_worker_trainer(model):
    """Wrap `model` so that `fit` runs under MultiWorkerMirroredStrategy with Keras 3.

    Keras 3's TensorFlow trainer fails there in two places (keras-team/keras#20585): before
    the first step it all-reduces a whole (x, y) batch with `strategy.reduce` (which takes one
    tensor, not a structure), and after each step it reduces the scalar logs with
    `strategy.reduce("MEAN", v, axis=0)`, which needs a batch axis. The wrapper (a) defers the
    build to the traced step, by not pinning a strategy (so `fit` must be called inside
    `strategy.scope()`), and (b) gives each log value a length-1 axis. Variables stay those of
    `model`: checkpoint `model`, not the wrapper, to keep checkpoints interchangeable.
    """
    import keras

    class MultiWorkerTrainer(keras.Model):
        def __init__(self, inner):
            super().__init__(name=f"{inner.name}_multi_worker")
            self.inner = inner
            self._distribute_strategy = None  # see (a) above

        def call(self, inputs, training=False):
            return self.inner(inputs, training=training)

        def train_step(self, data):
            logs = super().train_step(data)
            return {name: keras.ops.reshape(value, (1,)) for name, value in logs.items()}

    return MultiWorkerTrainer(model)
