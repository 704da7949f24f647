"""Inference: embed the splits, search, vote or rank, write a validated submission.

Modules, one job each:
  embedding     Embeddings, embed (flip / multi-scale TTA), save/load .npz
  search        knn: exact search (tf, jax, numpy, faiss) and approximate faiss indexes
  knn_tf        the exact TensorFlow search behind knn(backend="tf")
  knn_jax       the exact JAX search behind knn(backend="jax")
  forward       a Keras model's inference call, compiled (tf.function or jax.jit on the devices)
  recognition   recognize (summed-similarity votes), non-landmark penalty
  rerank        alpha query expansion, database augmentation, label re-ranking
  predict       the recognition and retrieval recipes
  run           run_inference, the `infer` command

Importing this package needs numpy only; TensorFlow and Keras are imported when used.
"""

from __future__ import annotations

from landmarks.inference.embedding import Embeddings, embed, load_embeddings, save_embeddings
from landmarks.inference.predict import predict_recognition, predict_retrieval
from landmarks.inference.recognition import recognize
from landmarks.inference.run import run_inference, run_inference_tasks
from landmarks.inference.search import knn

__all__ = [
    "Embeddings",
    "embed",
    "knn",
    "load_embeddings",
    "predict_recognition",
    "predict_retrieval",
    "recognize",
    "run_inference",
    "run_inference_tasks",
    "save_embeddings",
]
