"""Strategy detection, precision and XLA choices, and a real two-worker training run."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from landmarks.errors import ConfigError
from landmarks.training.devices import detect_strategy
from landmarks.training.precision import resolve_jit_compile, resolve_precision

WORKER_SCRIPT = Path(__file__).with_name("multiworker_worker.py")
MULTIPLIER_SCRIPT = Path(__file__).with_name("multiplier_worker.py")
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("tpu", "mixed_bfloat16"), ("gpu", "mixed_float16"), ("cpu", "float32")],
)
def test_auto_precision_per_device(kind, expected):
    assert resolve_precision("auto", kind) == expected


def test_forced_precision_and_its_errors():
    assert resolve_precision("mixed_bfloat16", "cpu") == "mixed_bfloat16"
    assert resolve_precision("float32", "tpu") == "float32"
    with pytest.raises(ConfigError, match="precision: 'fp16'"):
        resolve_precision("fp16", "gpu")
    with pytest.raises(ConfigError, match="not supported on TPU"):
        resolve_precision("mixed_float16", "tpu")


def test_jit_compile_auto_is_on_for_tpu_only():
    assert resolve_jit_compile("auto", "tpu") is True
    assert resolve_jit_compile("auto", "gpu") is False
    assert resolve_jit_compile("auto", "cpu") is False
    assert resolve_jit_compile("true", "gpu") is True
    assert resolve_jit_compile("false", "cpu") is False
    with pytest.raises(ConfigError, match="jit_compile"):
        resolve_jit_compile("maybe", "cpu")
    with pytest.raises(ConfigError, match="impossible on TPU"):
        resolve_jit_compile("false", "tpu")


def test_this_machine_gets_the_default_cpu_strategy(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    setup = detect_strategy()
    assert (setup.kind, setup.replicas, setup.workers, setup.is_chief) == ("cpu", 1, 1, True)


def test_bad_tf_config_is_named(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ConfigError, match="TF_CONFIG"):
        detect_strategy(allow_tpu=False)


def test_jax_processes_that_restored_different_checkpoints_are_named(monkeypatch):
    """Each JAX process restores the run folder it sees; one that differs from process 0 (a
    folder on its own disk) stops the run, named, before any step."""
    multihost_utils = pytest.importorskip("jax.experimental.multihost_utils")
    from landmarks.training.devices import DeviceSetup

    restored = [[2, 8], [2, 8], [0, 0]]  # (epoch, step) of processes 0, 1, 2
    monkeypatch.setattr(multihost_utils, "process_allgather", lambda _: restored)
    setup = DeviceSetup(None, "cpu", 12, workers=3, backend="jax", worker_index=1)
    with pytest.raises(
        ConfigError, match=r"restored: process 2 has \[0, 0\], process 0 has \[2, 8\]"
    ):
        setup.check_same_everywhere("restored", [2, 8])
    restored[2] = [2, 8]
    setup.check_same_everywhere("restored", [2, 8])
    assert DeviceSetup(None, "cpu", 1, workers=3).jax_processes is False  # TensorFlow's


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


@pytest.mark.slow
def test_two_workers_on_localhost_train_in_sync(tmp_path):
    """Two real processes, TF_CONFIG with two ports -> MultiWorkerMirroredStrategy, 8 steps."""
    workers = [f"localhost:{port}" for port in _free_ports(2)]
    steps = 8
    processes = []
    for index in range(2):
        env = dict(os.environ)
        env["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        )
        env["CUDA_VISIBLE_DEVICES"] = ""
        processes.append(
            subprocess.Popen(
                [sys.executable, str(WORKER_SCRIPT), str(tmp_path), str(steps)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=240)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]

    results = [json.loads((tmp_path / f"worker-{i}.json").read_text()) for i in range(2)]
    for result in results:
        assert result["multi_worker_mirrored"]
        assert (result["replicas"], result["workers"]) == (2, 2)
        assert result["iterations"] == steps
        assert result["losses"][1] < result["losses"][0]
    assert [r["is_chief"] for r in results] == [True, False]
    # the replicas applied the same all-reduced updates
    assert results[0]["weights_sum"] == pytest.approx(results[1]["weights_sum"], rel=1e-6)
    # only the chief left checkpoints, numbered by finished epochs
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["checkpoint.json", "ckpt-1.h5", "ckpt-2.h5"]


def test_backbone_multiplier_under_mirrored_strategy_with_two_replicas():
    """Two logical CPU replicas: the per-variable decision must see through mirrored variables
    (multiplier 0 freezes the backbone, decay included) while the head trains."""
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    result = subprocess.run(
        [sys.executable, str(MULTIPLIER_SCRIPT)], env=env, capture_output=True, text=True,
        timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    values = json.loads(result.stdout.strip().splitlines()[-1])
    assert values["setup"] == "tensorflow MirroredStrategy x2" and values["iterations"] == 8
    assert values["backbone_change"] == 0.0
    assert values["head_change"] > 1e-3


@pytest.mark.parametrize(
    ("kind", "count", "expected"),
    [("tpu", 1, True), ("tpu", 8, True), ("gpu", 2, True), ("gpu", 1, False), ("cpu", 1, False)],
)
def test_jax_distributes_over_several_devices_or_one_tpu_chip(kind, count, expected):
    from landmarks.training.devices import data_parallel_wanted

    assert data_parallel_wanted(kind, count) is expected


@pytest.mark.backends
def test_a_data_parallel_of_one_device_trains_as_one_device_alone():
    """Colab's one-chip TPU trains under DataParallel(devices=[chip]): on one CPU device here,
    the losses equal those of no distribution."""
    import keras
    import numpy as np

    if keras.backend.backend() != "jax":
        pytest.skip("keras.distribution.DataParallel is JAX's")
    import jax

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6)).astype("float32")
    y = rng.integers(0, 3, size=32)

    def losses(distribution) -> list[float]:
        keras.utils.set_random_seed(0)
        scope = distribution.scope() if distribution else contextlib.nullcontext()
        with scope:
            model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
            model.compile(
                keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(True)
            )
            history = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        return history.history["loss"]

    one_chip = keras.distribution.DataParallel(devices=jax.devices()[:1])
    np.testing.assert_allclose(losses(one_chip), losses(None), rtol=1e-6)


@pytest.mark.parametrize("preset", sorted(CONFIGS.glob("tpu_*.yaml")), ids=lambda p: p.name)
def test_tpu_presets_scale_their_global_batch_with_the_replicas(preset):
    """A preset sized per TPU core: 8 cores (v3-8) and one chip (v5e-1) keep its per-replica
    batch; a global_batch_size that one machine cannot split is a ConfigError naming it."""
    from landmarks.config import Config
    from landmarks.training.plan import batch_sizes

    config = Config.load(str(preset))
    per_core = config.batch_size
    assert batch_sizes(config, 8) == (per_core, 8 * per_core)
    assert batch_sizes(config, 1) == (per_core, per_core)
    fixed = Config.load(str(preset), [f"global_batch_size={8 * per_core}"])
    assert batch_sizes(fixed, 1) == (8 * per_core, 8 * per_core)
    with pytest.raises(ConfigError, match=f"global_batch_size: {8 * per_core} .* 3 replicas"):
        batch_sizes(fixed, 3)


@pytest.mark.parametrize(
    ("preset", "replicas", "precision", "global_batch"),
    [
        ("gpu_dolg_lite2.yaml", 1, "mixed_float16", 32),  # one T4
        ("gpu_t4x2_dolg_lite2.yaml", 2, "mixed_float16", 64),  # Kaggle's GPU T4 x2
        ("gpu_l4_dolg_lite2.yaml", 1, "mixed_bfloat16", 48),  # one L4
    ],
)
def test_gpu_presets_precision_and_global_batch(preset, replicas, precision, global_batch):
    from landmarks.config import Config
    from landmarks.training.plan import batch_sizes

    config = Config.load(str(CONFIGS / preset))
    assert resolve_precision(config.precision, "gpu") == precision
    assert batch_sizes(config, replicas)[1] == global_batch
