"""A model trained and saved on one Keras backend loads on the other with the same embeddings
(a TPU run on JAX used in a GPU notebook on TensorFlow, and the reverse): one process per
backend (the backend is fixed per process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).with_name("cross_backend_worker.py")
ATOL = 1e-4


def _run(backend: str, *args) -> None:
    env = dict(os.environ, KERAS_BACKEND=backend, CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [sys.executable, str(WORKER), *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"{backend} {args[0]}:\n{result.stderr[-3000:]}"


@pytest.mark.slow
def test_each_backend_loads_the_others_model_with_the_same_embeddings(tmp_path):
    saved = {backend: tmp_path / backend for backend in ("tensorflow", "jax")}
    for backend, folder in saved.items():
        folder.mkdir()
        _run(backend, "save", folder)
    _run("jax", "load", saved["tensorflow"], tmp_path / "tf_model_on_jax.npy")
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
