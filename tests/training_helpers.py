"""The smallest training config (a five-convolution backbone with BatchNorm, registered as
`tiny_bn`), and a training run killed after its first epoch, as a session limit or a crash
leaves it."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from landmarks.config import Config

STEPS = 4  # optimizer steps per epoch in the training runs of the tests
TRAIN_CLI = Path(__file__).with_name("train_cli.py")  # `python -m landmarks`, with tiny_bn


def tiny_bn_backbone(config):
    """Five stride-2 3x3 convolutions with BatchNorm (widths 8, 8, 16, 16, 32): stride-16 and
    stride-32 taps like a real backbone, batch statistics to checkpoint and to shard, and a
    build and trace in a second where EfficientNetB0 takes 40 s on 2 cores. What the training
    tests check (schedule, checkpoints, resume, the run folder) does not depend on the backbone;
    tests/test_models.py and the demo test train the real ones."""
    import keras

    from landmarks.models.taps import feature_taps

    image = keras.Input((None, None, 3))
    x = image
    for i, width in enumerate((8, 8, 16, 16, 32)):
        x = keras.layers.Conv2D(width, 3, strides=2, padding="same", name=f"down{i}")(x)
        x = keras.layers.BatchNormalization(name=f"norm{i}")(x)
        x = keras.layers.Activation("relu", name=f"relu{i}")(x)
    network = keras.Model(image, x, name="tiny")
    return feature_taps(network, [keras.layers.Rescaling(1 / 255.0, name="scale")])


def register_tiny_bn() -> None:
    """Register tiny_bn_backbone as backbone `tiny_bn` in this process."""
    from landmarks.models.registry import BACKBONES

    BACKBONES["tiny_bn"] = tiny_bn_backbone


def tiny(records: Path, out: Path, **changes) -> Config:
    """The smallest training run: tiny_bn + GeM head, 64 px, batch 8, 3 epochs of STEPS steps.
    The process that trains it must have called register_tiny_bn()."""
    values = {
        "records_dir": str(records),
        "output_dir": str(out),
        "run_name": "run",
        "backbone": "tiny_bn",
        "image_size": 64,
        "batch_size": 8,
        "head": "gem",
        "embedding_dim": 64,
        "augment": "none",
        "steps_per_epoch": STEPS,
        "epochs": 3,
        "learning_rate": 3e-3,
        "min_learning_rate": 1e-5,
        "warmup_epochs": 0.5,
        "validate_every": 0,
        "validation_queries": 16,
        "validation_index": 48,
    }
    values.update(changes)
    return Config.from_dict(values)


def checkpoint_numbers(run_dir: Path) -> list[int]:
    """Finished epochs of the committed checkpoints of run_dir (those the index lists)."""
    index = run_dir / "checkpoints" / "checkpoint.json"
    if not index.exists():
        return []
    kept = json.loads(index.read_text())["kept"]
    return sorted(int(name.split("-")[1].split(".")[0]) for name in kept)


def train_command(config_path: Path) -> list[str]:
    """`python -m landmarks train --config config_path`, through TRAIN_CLI (tiny_bn known)."""
    return [sys.executable, str(TRAIN_CLI), "train", "--config", str(config_path)]


def train_until_first_checkpoint_then_kill(config_path: Path, run_dir: Path) -> int:
    """Start train_command(config_path), SIGKILL it as soon as run_dir has a checkpoint;
    returns the last finished epoch that was checkpointed."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    run = subprocess.Popen(
        train_command(config_path), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 300
    while not checkpoint_numbers(run_dir):
        assert run.poll() is None, run.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert run.returncode == -signal.SIGKILL
    return max(checkpoint_numbers(run_dir))


def checkpoint_arrays(run_dir: Path) -> dict:
    """Every array of the run's last checkpoint (model, optimizer, loss scale) by group and
    path, read with h5py; the optimizer's own name (adamw, adamw_1, ...) dropped."""
    import h5py
    import numpy as np

    index = json.loads((run_dir / "checkpoints" / "checkpoint.json").read_text())
    arrays = {}
    with h5py.File(run_dir / "checkpoints" / index["latest"], "r") as handle:
        for group in handle:
            for dataset in handle[group].values():
                path = dataset.attrs["path"]
                if group != "model":
                    path = path.partition("/")[2]
                arrays[f"{group}:{path}"] = np.asarray(dataset[()])
    return arrays


def read_history(run_dir: Path) -> list[dict]:
    """The rows of run_dir/history.csv, as csv.DictReader gives them (strings)."""
    with open(run_dir / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def history_differences(
    rows: list[dict], reference: list[dict], *, loss_rtol: float, gap_atol: float = 0.0
) -> list[str]:
    """How the history.csv `rows` of a run differ from `reference` (the uninterrupted run's)
    at the same epochs: the step (equal), the loss (within loss_rtol of the reference's), the
    validation GAP (within gap_atol, or empty in both); an epoch missing from the reference
    counts too. [] when they agree."""
    by_epoch = {row["epoch"]: row for row in reference}
    found = []
    for row in rows:
        epoch, expected = row["epoch"], by_epoch.get(row["epoch"])
        if expected is None:
            found.append(f"epoch {epoch}: not in the reference")
            continue
        if row["step"] != expected["step"]:
            found.append(f"epoch {epoch} step {row['step']} != {expected['step']}")
        loss, reference_loss = float(row["loss"]), float(expected["loss"])
        if abs(loss - reference_loss) > loss_rtol * abs(reference_loss):
            found.append(f"epoch {epoch} loss {row['loss']} != {expected['loss']}")
        gap, reference_gap = row["val_gap"], expected["val_gap"]
        empty = gap == "" or reference_gap == ""
        if gap != reference_gap if empty else abs(float(gap) - float(reference_gap)) > gap_atol:
            found.append(f"epoch {epoch} val_gap {gap} != {reference_gap}")
    return found


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """relative path -> (sha256, mode) of every file: what a read-only source must keep."""
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def read_only(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
