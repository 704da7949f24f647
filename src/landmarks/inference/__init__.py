"""Inference: embed the splits, search, vote or rank, write a validated submission.

Modules, one job each:
  embedding     Embeddings, embed (flip / multi-scale TTA), save/load .npz
  search        knn: exact search (tf, numpy, faiss) and approximate faiss indexes
  knn_tf        the exact TensorFlow search behind knn(backend="tf")
  recognition   recognize (summed-similarity votes), non-landmark penalty
  rerank        alpha query expansion, database augmentation, label re-ranking
  predict       the recognition and retrieval recipes
  sources       where test/index images come from (the data folder, or checked records)
  fingerprint   what made a set of embeddings (model file hash + embedding settings)
  run           run_inference, the `infer` command (reuses matching exported train embeddings)
  export        export_run, the `export` command: model, config, label map, train embeddings

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
