"""The records size estimate against the bytes a real build wrote (the session's mini records:
mini-landmarks train at 64 px)."""

from __future__ import annotations

import math

import pytest

from landmarks.data.size_estimate import estimate_records_size


def _written_bytes(records) -> int:
    return sum(p.stat().st_size for p in records.glob("*.tfrec"))


def test_estimate_of_every_image_matches_the_written_records(mini_landmarks, mini_records):
    estimate = estimate_records_size(str(mini_landmarks), image_size=64, sample=10_000)
    assert estimate.sampled == estimate.images == 444
    assert estimate.total_bytes == pytest.approx(_written_bytes(mini_records), rel=0.02)


def test_a_sample_estimates_within_its_spread(mini_landmarks, mini_records):
    estimate = estimate_records_size(str(mini_landmarks), image_size=64, sample=64, seed=3)
    written = _written_bytes(mini_records)
    assert abs(estimate.total_bytes - written) < 3 * estimate.spread * estimate.images
    assert estimate.spread > 0


def test_a_task_share_above_the_output_limit_is_warned_about(mini_landmarks):
    limit_gb = 0.0005  # 0.5 MB, so that mini-landmarks at 64 px (~1.7 MB) is over it
    estimate = estimate_records_size(
        str(mini_landmarks), image_size=64, sample=32, limit_gb=limit_gb
    )
    assert estimate.exceeds_limit
    needed = math.ceil(estimate.total_bytes / (0.9 * limit_gb * 1e9))
    assert estimate.tasks_needed == needed >= 2
    text = estimate.describe()
    assert text.startswith("records estimate: 444 train images at 64 px")
    assert "MB is above the 0.5 MB a Kaggle notebook may save in /kaggle/working" in text
    assert f"set NUM_TASKS to {needed} or more" in text

    split = estimate_records_size(
        str(mini_landmarks), image_size=64, sample=32, limit_gb=limit_gb, num_tasks=needed
    )
    assert not split.exceeds_limit and f"each of {needed} tasks writes" in split.describe()
    remote = estimate_records_size(
        str(mini_landmarks), image_size=64, sample=32, limit_gb=limit_gb, out_dir="gs://b/r"
    )
    assert not remote.exceeds_limit and "warning" not in remote.describe()


def test_every_split_is_counted(mini_landmarks):
    estimate = estimate_records_size(
        str(mini_landmarks), ("train", "test", "index"), image_size=None, sample=16
    )
    assert estimate.images == 444 + 157 + 179
    assert "train+test+index images at original sizes" in estimate.describe()
