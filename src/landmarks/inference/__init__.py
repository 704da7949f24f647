"""Inference: embed the splits, search, vote or rank, write a validated submission.

Modules, one job each:
  embedding     Embeddings, embed (flip / multi-scale TTA), save/load .npz
  sources       where each split's images come from (folder, records), and their identity
  fingerprint   what made a set of embeddings (model file hash + embedding settings), and
                reuse of attached (exported) train embeddings
  cache         embeddings reused from disk while their model, TTA and images are unchanged
  ensemble      ensemble members, their cached embeddings, concatenated or averaged
  descriptors   Descriptors: one or more members' vectors, exact weighted-similarity search
  search        knn: exact search (tf, jax, numpy, faiss) and approximate faiss indexes
  knn_tf        the exact TensorFlow search behind knn(backend="tf")
  knn_jax       the exact JAX search behind knn(backend="jax")
  forward       a Keras model's inference call, compiled (tf.function or jax.jit on the devices)
  recognition   recognize (summed-similarity votes), non-landmark penalty
  rerank        alpha query expansion, database augmentation, hard label re-ranking
  soft_rerank   the 2021 retrieval winner's soft label re-ranking
  bridged       the 2021 retrieval 5th place's bridged query -> landmark -> index distances
  predict       the recognition and retrieval recipes
  run           run_inference, the `infer` command (wiring only)
  export        export_run, the `export` command: model, config, label map, train embeddings

Importing this package needs numpy only; TensorFlow and Keras are imported when used.
"""

from __future__ import annotations

from landmarks.inference.descriptors import Descriptors
from landmarks.inference.embedding import Embeddings, embed, load_embeddings, save_embeddings
from landmarks.inference.predict import predict_recognition, predict_retrieval
from landmarks.inference.recognition import recognize
from landmarks.inference.run import run_inference, run_inference_tasks
from landmarks.inference.search import knn

__all__ = [
    "Descriptors",
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
