"""landmarks.backend: the decision table on fake machines, and the choice reaching Keras."""

from __future__ import annotations

import os
import subprocess
import sys
import types

import pytest

from landmarks import backend
from landmarks.backend import Machine, decide_backend, select_backend
from landmarks.errors import ConfigError

LOCAL = Machine({}, (), frozenset({"jax"}))
KAGGLE_TPU_VM = Machine({"ISTPUVM": "1"}, ("/dev/vfio/0",), frozenset({"jax", "libtpu"}))


@pytest.mark.parametrize(
    "requested, machine, expected, reason",
    [
        # explicit choices win over everything
        ("jax", LOCAL, "jax", "--backend"),
        ("tensorflow", KAGGLE_TPU_VM, "tensorflow", "--backend"),
        # KERAS_BACKEND when no choice is given; --backend auto ignores it
        (None, Machine({"KERAS_BACKEND": "jax"}, (), frozenset()), "jax", "KERAS_BACKEND"),
        (None, Machine({"KERAS_BACKEND": "tensorflow"}, ("/dev/accel0",), frozenset({"jax"})),
         "tensorflow", "KERAS_BACKEND"),
        ("auto", Machine({"KERAS_BACKEND": "tensorflow", "ISTPUVM": "1"}, (), frozenset({"jax"})),
         "jax", "auto: TPU VM (ISTPUVM=1)"),
        # auto: a laptop, a GPU box, a Colab/Kaggle TPU node reached over the network
        (None, LOCAL, "tensorflow", "auto: no TPU VM"),
        ("auto", Machine({"TPU_NAME": "grpc://10.0.0.2:8470"}, (), frozenset({"jax"})),
         "tensorflow", "auto: no TPU VM"),
        # auto on a TPU VM, found by each of its signs
        (None, KAGGLE_TPU_VM, "jax", "TensorFlow without TPU support"),
        (None, Machine({}, ("/dev/accel0",), frozenset({"jax"})), "jax", "/dev/accel0"),
        (None, Machine({"TPU_ACCELERATOR_TYPE": "v2-8"}, (), frozenset({"jax"})), "jax",
         "TPU_ACCELERATOR_TYPE=v2-8"),
        # a TPU VM whose TensorFlow drives the TPU, or without JAX
        (None, Machine({"ISTPUVM": "1"}, (), frozenset({"jax", "tensorflow-tpu"})), "tensorflow",
         "tensorflow-tpu installed"),
        (None, Machine({"ISTPUVM": "1"}, (), frozenset()), "tensorflow", "JAX is not installed"),
    ],
)  # fmt: skip
def test_decision_table(requested, machine, expected, reason):
    decision = decide_backend(requested, machine)
    assert decision.backend == expected
    assert reason in decision.reason


def test_unknown_backends_are_named():
    with pytest.raises(
        ConfigError, match="KERAS_BACKEND=torch: landmarks runs on jax or tensorflow"
    ):
        decide_backend(None, Machine({"KERAS_BACKEND": "torch"}, (), frozenset()))
    with pytest.raises(ConfigError, match="--backend: 'numpy'"):
        decide_backend("numpy", LOCAL)


def test_this_machine_is_no_tpu_vm():
    machine = Machine.this_one()
    assert machine.device_files == ()
    assert "jax" in machine.installed and "tensorflow-tpu" not in machine.installed


def test_select_refuses_to_switch_an_imported_keras(monkeypatch):
    fake_keras = types.SimpleNamespace(backend=types.SimpleNamespace(backend=lambda: "tensorflow"))
    monkeypatch.setitem(sys.modules, "keras", fake_keras)
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    with pytest.raises(ConfigError, match="already imported with the tensorflow backend"):
        select_backend("jax", LOCAL)
    assert select_backend("tensorflow", LOCAL).backend == "tensorflow"
    assert os.environ["KERAS_BACKEND"] == "tensorflow"


def test_the_choice_reaches_keras_in_a_fresh_process():
    code = (
        "import sys; from landmarks.backend import select_backend; "
        "print(select_backend(sys.argv[1])); import keras; print(keras.backend.backend())"
    )
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    for name in backend.BACKENDS:
        result = subprocess.run(
            [sys.executable, "-c", code, name], env=env, capture_output=True, text=True, check=True
        )
        assert result.stdout.split("\n")[:2] == [f"{name} (--backend)", name]


def test_cli_reports_a_bad_keras_backend_in_one_line():
    env = dict(os.environ, KERAS_BACKEND="torch")
    result = subprocess.run(
        [sys.executable, "-m", "landmarks", "evaluate", "--task", "recognition",
         "--submission", "s.csv", "--solution", "t.csv"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: KERAS_BACKEND=torch")
