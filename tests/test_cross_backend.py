"""A model trained and saved on one Keras backend loads on the other with the same embeddings
(a TPU run on JAX used in a GPU notebook on TensorFlow, and the reverse), and a run resumes on
the other backend: one process per backend (the backend is fixed per process)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).with_name("cross_backend_worker.py")
TRAIN_WORKER = Path(__file__).with_name("jax_devices_worker.py")
ATOL = 1e-4


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
    """Epoch 1 on TensorFlow, epoch 2 on JAX, epoch 3 on TensorFlow again (4 steps each)."""
    for epoch, backend in enumerate(("tensorflow", "jax", "tensorflow"), start=1):
        output = _run(backend, mini_records, tmp_path, epoch, worker=TRAIN_WORKER)
        if epoch > 1:
            assert f"epoch {epoch - 1} done, step {4 * (epoch - 1)}" in output, output[-2000:]
    with open(tmp_path / "run" / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(int(r["epoch"]), int(r["step"])) for r in rows] == [(1, 4), (2, 8), (3, 12)]
    losses = [float(r["loss"]) for r in rows]
    assert losses[-1] < losses[0]  # training went on from the restored state
