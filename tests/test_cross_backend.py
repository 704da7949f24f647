"""A model trained and saved on one Keras backend loads on the other with the same embeddings
(a TPU run on JAX used in a GPU notebook on TensorFlow, and the reverse), and a run resumes on
the other backend: one process per backend (the backend is fixed per process)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from training_helpers import checkpoint_arrays, history_differences, read_history

WORKER = Path(__file__).with_name("cross_backend_worker.py")
TRAIN_WORKER = Path(__file__).with_name("jax_devices_worker.py")
ATOL = 1e-4
# A run resumed on the other backend against the same run on one: after 12 steps the two
# backends' float32 kernels (summation orders) leave epoch 3's loss 7e-7 apart and the weights
# 2e-4 of each array's largest value apart (measured); the bounds leave 10x and 5x room.
LOSS_RTOL = 1e-5
WEIGHT_RTOL = 1e-3


def _run(backend: str, *args, worker: Path = WORKER) -> str:
    env = dict(os.environ, KERAS_BACKEND=backend, CUDA_VISIBLE_DEVICES="")
    env.pop("XLA_FLAGS", None)
    result = subprocess.run(
        [sys.executable, str(worker), *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"{backend} {args[0]}:\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.mark.slow
def test_each_backend_loads_the_others_model_with_the_same_embeddings(tmp_path):
    saved = {backend: tmp_path / backend for backend in ("tensorflow", "jax")}
    for folder in saved.values():
        folder.mkdir()
    _run("tensorflow", "save", saved["tensorflow"])
    _run("jax", "save", saved["jax"], saved["tensorflow"], tmp_path / "tf_model_on_jax.npy")
    _run("tensorflow", "load", saved["jax"], tmp_path / "jax_model_on_tf.npy")

    for source, other in (("tensorflow", "tf_model_on_jax"), ("jax", "jax_model_on_tf")):
        original = np.load(saved[source] / "embeddings.npy")
        reloaded = np.load(tmp_path / f"{other}.npy")
        assert original.shape == (4, 32)
        np.testing.assert_allclose(np.linalg.norm(original, axis=1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(reloaded, original, atol=ATOL, err_msg=other)
    # The two saved models differ (each backend draws its own initial weights), so equality
    # above is the reload's, not a coincidence of two identical models.
    assert not np.allclose(
        np.load(saved["tensorflow"] / "embeddings.npy"),
        np.load(saved["jax"] / "embeddings.npy"),
        atol=ATOL,
    )


@pytest.mark.slow
def test_a_run_resumes_on_the_other_backend_with_its_schedule_step(mini_records, tmp_path):
    """Epoch 1 on TensorFlow, epoch 2 on JAX, epoch 3 on TensorFlow again (4 steps each): the
    losses, validation GAP and final weights of the same run on TensorFlow uninterrupted."""
    for epoch, backend in enumerate(("tensorflow", "jax", "tensorflow"), start=1):
        output = _run(backend, mini_records, tmp_path, epoch, worker=TRAIN_WORKER)
        if epoch > 1:
            assert f"epoch {epoch - 1} done, step {4 * (epoch - 1)}" in output, output[-2000:]
    rows = read_history(tmp_path / "run")
    assert [(int(r["epoch"]), int(r["step"])) for r in rows] == [(1, 4), (2, 8), (3, 12)]
    reference = tmp_path / "reference"  # the same run on TensorFlow, not interrupted
    _run("tensorflow", mini_records, reference, worker=TRAIN_WORKER)
    expected = read_history(reference / "run")
    mine, theirs = checkpoint_arrays(tmp_path / "run"), checkpoint_arrays(reference / "run")
    assert [r["epoch"] for r in expected] == [r["epoch"] for r in rows]
    assert history_differences(rows, expected, loss_rtol=LOSS_RTOL) == []
    for path in mine:
        # BatchNorm cancels the convolutions' biases before it: their gradients are float
        # noise, which Adam turns into steps of the learning rate's size. Optimizer slots
        # differ by float noise alike.
        if path.startswith("model:") and not re.fullmatch(r"model:down\d/bias", path):
            scale = float(np.abs(theirs[path]).max())
            np.testing.assert_allclose(
                mine[path], theirs[path], rtol=0, atol=WEIGHT_RTOL * scale, err_msg=path
            )
