"""A Kaggle dry run: notebooks 01 -> 02 -> 03 run headless (papermill), twice, against
/kaggle/input-style read-only folders under a temporary directory, as a competitor runs them.

    input/landmark-recognition-2021   the competition data: 12 landmarks of mini-landmarks
                                      (144 train images) and their test and index images,
                                      with a few non-landmark queries and distractors; read-only
    input/landmarks-wheels            the wheels dataset (a full wheelhouse, marked by its
                                      requirements.txt; nothing is missing here, so nothing
                                      is installed from it)
    input/<records>, input/<run>, input/<model>   what each notebook "publishes": its output
                                      folder copied and made read-only, as an attached dataset

Session 1: 01 writes the records; 02 trains and stops after epoch 1 of 2 (STOP_AFTER_EPOCHS),
exports; 03 scores the public test set from the export alone (train embeddings reused).
Session 2, a fresh /kaggle/working: 01 writes the records again split over two notebooks
(NUM_TASKS=2); 02 joins the parts (RECORDS_PARTS) and resumes session 1's run from its
read-only copy (RESUME_FROM) to the end; 03 runs with another test/ folder, as Kaggle does at
scoring time, and its submission holds exactly the new ids. No input folder is ever written.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
PREPARE, TRAIN, INFER = (
    "01_prepare_tfrecords.ipynb",
    "02_train_dolg.ipynb",
    "03_knn_inference.ipynb",
)
COMPETITION = "landmark-recognition-2021"
TRAIN_SETTINGS = {  # merged over notebook 02's DEFAULT_SETTINGS (EfficientNet-B0, ImageNet...)
    "backbone": "efficientnet_lite0",  # builds and trains 15 s faster than B0 on 2 CPU cores
    "weights": None,
    "head": "gem",  # the DOLG head costs ~20 s more to build and trace on 2 CPU cores
    "embedding_dim": 64,
    "augment": "none",
    "image_size": 64,
    "batch_size": 8,
    "epochs": 2,
    "steps_per_epoch": 2,
    "validate_every": 0,
}


LANDMARKS = 12  # of mini-landmarks' 37 seen in training, to keep the run short
NON_LANDMARKS = 6  # test queries without a landmark, and index distractors, kept
SECONDS: dict[str, float] = {}  # wall time of each notebook run, printed at the end


def _competition_subset(source: Path, target: Path) -> None:
    """The first LANDMARKS landmarks of a mini-landmarks folder, with their test queries and
    index images, NON_LANDMARKS non-landmark queries and distractors, and the solutions."""
    import pandas as pd

    from landmarks.data.gldv2 import image_path

    def copy(split: str, ids) -> None:
        for image_id in ids:
            destination = Path(image_path(str(target), split, image_id))
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(image_path(str(source), split, image_id), destination)

    train = pd.read_csv(source / "train.csv")
    kept = sorted(train["landmark_id"].unique())[:LANDMARKS]
    train = train[train["landmark_id"].isin(kept)]
    recognition = pd.read_csv(source / "recognition_solution.csv", keep_default_na=False)
    labelled = recognition["landmarks"] != ""
    in_kept = recognition["landmarks"].isin([str(k) for k in kept])
    recognition = pd.concat(
        [recognition[labelled & in_kept], recognition[~labelled][:NON_LANDMARKS]]
    )
    retrieval = pd.read_csv(source / "retrieval_solution.csv", keep_default_na=False)
    retrieval = retrieval[retrieval["id"].isin(recognition["id"])]
    relevant = {i for images in retrieval["images"] for i in images.split()}
    every_index = sorted(p.stem for p in (source / "index").rglob("*.jpg"))
    every_relevant = {
        i
        for images in pd.read_csv(source / "retrieval_solution.csv", keep_default_na=False)[
            "images"
        ]
        for i in images.split()
    }
    distractors = [i for i in every_index if i not in every_relevant][:NON_LANDMARKS]
    target.mkdir(parents=True)
    train.to_csv(target / "train.csv", index=False)
    recognition.to_csv(target / "recognition_solution.csv", index=False)
    retrieval.to_csv(target / "retrieval_solution.csv", index=False)
    shutil.copyfile(source / "landmarks.csv", target / "landmarks.csv")
    copy("train", train["id"])
    copy("test", recognition["id"])
    copy("index", sorted(relevant) + distractors)


def _execute(name: str, folder: Path, parameters: dict) -> str:
    """Run notebook `name` headless in `folder` (as a Kaggle notebook: KAGGLE_KERNEL_RUN_TYPE
    set); returns what its cells printed."""
    import time

    import papermill

    started = time.monotonic()
    out = folder / name
    folder.mkdir(parents=True, exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTER_PATH", os.path.join(sys.prefix, "share", "jupyter"))
        patch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
        patch.delenv("KAGGLE_API_V1_TOKEN", raising=False)
        papermill.execute_notebook(
            str(NOTEBOOKS / name),
            str(out),
            parameters=parameters,
            kernel_name="python3",
            cwd=str(folder),
            progress_bar=False,
        )
    SECONDS[f"{folder.parent.name} {name[:2]}"] = time.monotonic() - started
    executed = nbformat.read(out, as_version=4)
    return "".join(
        output.get("text", "") or output.get("data", {}).get("text/plain", "")
        for cell in executed.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )


def _attach(folder: Path, input_dir: Path, name: str) -> Path:
    """`folder` published as a dataset and attached: a read-only copy under input/."""
    attached = input_dir / name
    shutil.copytree(folder, attached, symlinks=False)
    _read_only(attached)
    return attached


def _read_only(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _snapshot(input_dir: Path) -> dict[str, str]:
    return {
        str(p.relative_to(input_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(input_dir.rglob("*"))
        if p.is_file()
    }


def _submission_ids(path: Path) -> list[str]:
    lines = path.read_text().strip().splitlines()
    assert lines[0] == "id,landmarks"
    return sorted(line.split(",")[0] for line in lines[1:])


def _hidden_test_set(competition: Path, target: Path) -> list[str]:
    """The competition folder with another test/ (20 images under new ids), as at scoring."""
    from landmarks.data.gldv2 import image_path

    target.mkdir(parents=True)
    for name in os.listdir(competition):
        if name != "test":
            os.symlink(competition / name, target / name)
    sources = sorted((competition / "index").rglob("*.jpg"))[:12]
    sources += sorted((competition / "test").rglob("*.jpg"))[:8]
    new_ids = [f"{number:03x}hidden{number:010d}" for number in range(len(sources))]
    for source, new_id in zip(sources, new_ids, strict=True):
        destination = Path(image_path(str(target), "test", new_id))
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, destination)
    _read_only(target / "test")
    return sorted(new_ids)


@pytest.mark.slow
def test_kaggle_dry_run_two_sessions_and_a_hidden_test_set(mini_landmarks, tmp_path):
    input_dir = tmp_path / "kaggle" / "input"
    competition = input_dir / COMPETITION
    _competition_subset(mini_landmarks, competition)
    _read_only(competition)
    train_images = len(pd.read_csv(competition / "train.csv"))
    wheels = input_dir / "landmarks-wheels"
    wheels.mkdir()
    (wheels / "requirements.txt").write_text("")  # a full wheelhouse (kaggle wheelhouse marks it)
    _read_only(wheels)
    public_ids = sorted(p.stem for p in (competition / "test").rglob("*.jpg"))
    records_options = {"DATA_DIR": str(competition), "WHEELS_DIR": str(wheels), "IMAGE_SIZE": 64}
    records_options |= {"WORKERS": 1, "HOLDOUT": 0.2}

    # --- session 1 -------------------------------------------------------------------------------
    session = tmp_path / "session1" / "working"
    printed = _execute(PREPARE, session, {**records_options, "OUT_DIR": str(session / "tfrecords")})
    assert "kaggle (cpu)" in printed and "requirements: nothing to install" in printed
    assert f"records estimate: {train_images} train images at 64 px" in printed
    records = _attach(session / "tfrecords", input_dir, "gldv2-tfrecords-64")
    assert {p.name.split("-")[0] for p in records.glob("*.tfrec")} == {"train", "holdout"}

    printed = _execute(
        TRAIN,
        session,
        {
            "RECORDS_DIR": str(records),
            "OUTPUT_DIR": str(session),
            "RUN_NAME": "smoke",
            "WHEELS_DIR": str(wheels),
            "SETTINGS": TRAIN_SETTINGS,
            "STOP_AFTER_EPOCHS": 1,  # the session ends after epoch 1 of 2
            "EXPORT_DIR": str(session / "export"),
        },
    )
    run = session / "smoke"
    assert len((run / "history.csv").read_text().strip().splitlines()) == 2  # header + epoch 1
    for name in ("embed_model.keras", "config.yaml", "curves.png"):
        assert (run / name).is_file(), name
    exported = sorted(
        str(p.relative_to(session / "export")) for p in (session / "export").rglob("*")
    )
    assert exported == [
        "config.yaml",
        "embed_model.keras",
        "embeddings",
        "embeddings/train.npz",
        "export.json",  # the mark that lets a later export replace this one
        "label_map.csv",
    ]
    run_v1 = _attach(run, input_dir, "gldv2-dolg-run-v1")
    model_v1 = _attach(session / "export", input_dir, "gldv2-dolg-v1")

    printed = _execute(
        INFER,
        session,
        {
            "WHEELS_DIR": str(wheels),
            "DATA_DIR": str(competition),
            "MODEL_DIR": str(model_v1),  # RECORDS_DIR "": the export alone
            "OUTPUT_DIR": str(session / "inference"),
            "SUBMISSION": str(session / "submission.csv"),
            "SOLUTION": str(competition / "recognition_solution.csv"),
            "SETTINGS": {"knn_k": 5, "batch_size": 16},
        },
    )
    assert "train: reusing" in printed and "embedding train" not in printed
    assert f"{len(public_ids)} images in {competition}/test (image_source: folder)" in printed
    assert _submission_ids(session / "submission.csv") == public_ids
    assert "'gap':" in printed

    # --- session 2: an empty working folder, the records split over two notebooks -----------------
    before = _snapshot(input_dir)
    session = tmp_path / "session2" / "working"
    parts = []
    for task in (0, 1):
        task_dir = tmp_path / f"session2-task{task}" / "working"
        printed = _execute(
            PREPARE,
            task_dir,
            {
                **records_options,
                "OUT_DIR": str(task_dir / "tfrecords"),
                "NUM_TASKS": 2,
                "TASK_INDEX": task,
            },
        )
        assert "each of 2 tasks writes" in printed
        parts.append(
            str(_attach(task_dir / "tfrecords", input_dir, f"gldv2-tfrecords-64-part{task}"))
        )

    printed = _execute(
        TRAIN,
        session,
        {
            "RECORDS_PARTS": parts,
            "OUTPUT_DIR": str(session),
            "RUN_NAME": "smoke",
            "WHEELS_DIR": str(wheels),
            "SETTINGS": TRAIN_SETTINGS,
            "RESUME_FROM": str(run_v1),
            "EXPORT_DIR": str(session / "export"),
        },
    )
    assert "copied" in printed and str(run_v1) in printed
    assert "epoch 1 done, step 2" in printed
    history = (session / "smoke" / "history.csv").read_text().strip().splitlines()
    assert [line.split(",")[:2] for line in history[1:]] == [["1", "2"], ["2", "4"]]
    model_v2 = _attach(session / "export", input_dir, "gldv2-dolg-v2")

    hidden = tmp_path / "scoring" / COMPETITION
    hidden_ids = _hidden_test_set(competition, hidden)
    printed = _execute(
        INFER,
        session,
        {
            "WHEELS_DIR": str(wheels),
            "DATA_DIR": str(hidden),
            "MODEL_DIR": str(model_v2),
            "OUTPUT_DIR": str(session / "inference"),
            "SUBMISSION": str(session / "submission.csv"),
        },
    )
    assert f"{len(hidden_ids)} images in {hidden}/test (image_source: folder)" in printed
    assert "train: reusing" in printed
    assert _submission_ids(session / "submission.csv") == hidden_ids
    after = _snapshot(input_dir)
    assert {k: v for k, v in after.items() if k in before} == before  # inputs never written
    print("notebook wall times (s):", {k: round(v, 1) for k, v in SECONDS.items()})
    # The stored notebooks stay without outputs.
    for name in (PREPARE, TRAIN, INFER):
        stored = nbformat.read(NOTEBOOKS / name, as_version=4)
        assert all(cell.get("outputs", []) == [] for cell in stored.cells)
