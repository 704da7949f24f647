"""Shared pytest fixtures. Every test runs on CPU with weights=None.

Fixtures that build data are session-scoped: built once, shared by every test module.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items: list) -> None:
    """Files that hold a `slow` test run first. `make test` hands whole files to two workers in
    collection order (pytest-xdist --dist loadfile); with the slow files last, one worker spent
    its last four minutes alone on the Kaggle dry run while the other sat idle."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: file order kept otherwise


@pytest.fixture(scope="session")
def mini_landmarks(tmp_path_factory) -> Path:
    """The mini-landmarks GLDv2-layout folder: input/mini-landmarks as built by `make data`,
    or, when that is absent, a fresh build (seed 0) in a temporary folder."""
    built = REPO / "input" / "mini-landmarks"
    if (built / "train.csv").exists():
        return built
    from landmarks.data.demo import build_demo_data

    out = tmp_path_factory.mktemp("data") / "mini-landmarks"
    build_demo_data(out, seed=0)
    return out


@pytest.fixture(scope="session")
def mini_records(mini_landmarks, tmp_path_factory) -> Path:
    """TFRecords of the mini-landmarks train split (64 px, holdout 0.2, 2 train shards, seed 0):
    train-*.tfrec, holdout-*.tfrec, label_map.csv and manifest.json in one folder."""
    from landmarks.data.tfrecords import prepare

    out = tmp_path_factory.mktemp("records") / "mini-records"
    prepare(
        str(mini_landmarks),
        "train",
        str(out),
        num_shards=2,
        image_size=64,
        holdout=0.2,
        seed=0,
        progress=False,
    )
    return out


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> list[Path]:
    """Two small saved embedding models with random weights (seeds 1 and 2): image [B, H, W, 3]
    in [0, 255] -> 16-d L2-normalised embedding. Different weights, the same architecture."""
    import keras

    folder = tmp_path_factory.mktemp("models")
    paths = []
    for seed in (1, 2):
        keras.utils.set_random_seed(seed)
        model = keras.Sequential(
            [
                keras.Input((None, None, 3)),
                keras.layers.Rescaling(1 / 255.0),
                keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(16),
                keras.layers.UnitNormalization(),
            ]
        )
        paths.append(folder / f"tiny_seed{seed}.keras")
        model.save(str(paths[-1]))
    return paths


@pytest.fixture(scope="module")
def tiny_bn_registered():
    """The tests' backbone `tiny_bn` (training_helpers.tiny_bn_backbone) registered while a
    test module runs; a module asks for it with pytest.mark.usefixtures("tiny_bn_registered")."""
    from training_helpers import tiny_bn_backbone

    from landmarks.models.registry import BACKBONES

    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(BACKBONES, "tiny_bn", tiny_bn_backbone)
        yield
