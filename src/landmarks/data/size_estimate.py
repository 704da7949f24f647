"""How much a records build will write, measured on a sample before anything is written.

`estimate_records_size(data_dir, splits, image_size=...)` encodes a random sample of the images
exactly as `prepare` stores them (landmarks.data.images.encode_image: copied through, or
shrunk to `image_size` and re-encoded), serializes each as its record, and scales the mean
record size (plus TFRecord framing) to the whole table.
Notebook 01 prints it, and warns when one task's share is above what a Kaggle notebook may
leave in /kaggle/working.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from landmarks.data import gldv2
from landmarks.data.images import ImageSkipped, encode_image

# What one notebook's /kaggle/working may hold as saved output (Kaggle's documentation, 2025);
# the other ~50 GB of a session's disk are lost when it ends.
KAGGLE_OUTPUT_LIMIT_GB = 20.0
TFRECORD_FRAMING_BYTES = 16  # length (8) and two CRCs (4 + 4) around each record
GB = 1e9


@dataclass(frozen=True)
class SizeEstimate:
    """images: images listed in the splits; sampled: images encoded; bytes_per_image: mean
    record size of the sample (skipped images count 0); spread: standard error of that mean;
    total_bytes / task_bytes: the whole build / one task's share (1/num_tasks)."""

    splits: tuple[str, ...]
    images: int
    sampled: int
    image_size: int | None
    bytes_per_image: float
    spread: float
    num_tasks: int
    limit_bytes: float | None

    @property
    def total_bytes(self) -> float:
        return self.bytes_per_image * self.images

    @property
    def task_bytes(self) -> float:
        return self.total_bytes / self.num_tasks

    @property
    def exceeds_limit(self) -> bool:
        return self.limit_bytes is not None and self.task_bytes > self.limit_bytes

    @property
    def tasks_needed(self) -> int:
        """Tasks whose shares stay under 90 % of the limit."""
        if self.limit_bytes is None:
            return 1
        return max(1, math.ceil(self.total_bytes / (0.9 * self.limit_bytes)))

    def describe(self) -> str:
        """The estimate, and a warning line when one task's share is above the limit."""
        size = f"{self.image_size} px" if self.image_size else "original sizes"
        text = (
            f"records estimate: {self.images:,} {'+'.join(self.splits)} images at {size} "
            f"≈ {_size(self.total_bytes)} (± {_size(2 * self.spread * self.images)}; mean "
            f"{self.bytes_per_image / 1e3:.1f} KB per record over {self.sampled} sampled images)"
        )
        if self.num_tasks > 1:
            text += f"; each of {self.num_tasks} tasks writes ≈ {_size(self.task_bytes)}"
        if self.exceeds_limit:
            text += (
                f"\nwarning: ≈ {_size(self.task_bytes)} is above the "
                f"{_size(self.limit_bytes)} a Kaggle notebook may save in /kaggle/working: "
                f"set NUM_TASKS to {self.tasks_needed} or more and run the notebook once per "
                "TASK_INDEX (publishing each part), lower IMAGE_SIZE, or write to a gs:// bucket"
            )
        return text


def _size(count: float) -> str:
    """Bytes as GB (MB below 1 GB), one decimal."""
    return f"{count / GB:.1f} GB" if count >= GB else f"{count / 1e6:.1f} MB"


def estimate_records_size(
    data_dir: str,
    splits=("train",),
    *,
    image_size: int | None,
    num_tasks: int = 1,
    out_dir: str = "",
    sample: int = 64,
    seed: int = 0,
    jpeg_quality: int = 95,
    limit_gb: float = KAGGLE_OUTPUT_LIMIT_GB,
) -> SizeEstimate:
    """Estimate the records of `splits` of a GLDv2-layout folder (see the module docstring).

    out_dir: where the build will go; a gs:// folder has no notebook output limit.
    sample: images encoded (drawn uniformly over all the splits' images, seeded).
    """
    import pandas as pd

    from landmarks.data.shard_writer import serialize_example

    table = pd.concat([gldv2.list_split_images(data_dir, split) for split in splits])
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(table), size=min(sample, len(table)), replace=False)
    sizes = []
    for row in table.iloc[np.sort(chosen)].itertuples():
        try:
            image = encode_image(row.path, image_size, jpeg_quality)
        except ImageSkipped:
            sizes.append(0)  # prepare skips it: no record
            continue
        label = int(row.landmark_id)  # a stand-in of the same magnitude for the label
        record = serialize_example(image.data, row.id, label, label, image.height, image.width)
        sizes.append(len(record) + TFRECORD_FRAMING_BYTES)
    values = np.asarray(sizes, np.float64)
    spread = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0
    return SizeEstimate(
        splits=tuple(splits),
        images=len(table),
        sampled=len(values),
        image_size=image_size,
        bytes_per_image=float(values.mean()),
        spread=spread,
        num_tasks=num_tasks,
        limit_bytes=None if "://" in out_dir else limit_gb * GB,
    )
