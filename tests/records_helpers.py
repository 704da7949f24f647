"""Small synthetic images and GLDv2-layout folders for the record builder tests (Pillow only)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def picture(width: int, height: int, seed: int = 0) -> np.ndarray:
    """uint8 [height, width, 3]: smooth gradients plus a few flat blocks (JPEG-friendly, and
    different for every seed)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = [
        127
        + 100
        * np.sin(x / width * rng.uniform(1, 6) + rng.uniform(0, 6))
        * np.cos(y / height * rng.uniform(1, 6) + rng.uniform(0, 6))
        for _ in range(3)
    ]
    image = np.stack(channels, -1)
    for _ in range(3):
        top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
        image[top : top + height // 4, left : left + width // 4] = rng.integers(0, 255, 3)
    return np.clip(image, 0, 255).astype(np.uint8)


def jpeg_bytes(pixels: np.ndarray, mode: str = "RGB", quality: int = 95, exif=None) -> bytes:
    image = Image.fromarray(pixels)
    if mode != "RGB":
        image = image.convert(mode)
    out = io.BytesIO()
    kwargs = {"exif": exif} if exif is not None else {}
    image.save(out, format="JPEG", quality=quality, **kwargs)
    return out.getvalue()


def png_bytes(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def image_id(number: int) -> str:
    """A GLDv2-like 16-hex-digit id whose first three characters vary with `number`."""
    return f"{(number * 2654435761) % 16**16:016x}"


def make_gldv2(
    root: Path, class_sizes: dict[int, int], size=(48, 32), seed: int = 0
) -> dict[str, int]:
    """Write train.csv and train/a/b/c/<id>.jpg for `class_sizes` {landmark_id: images};
    return {id: landmark_id} in train.csv order."""
    rows = {}
    number = 0
    for landmark_id, count in class_sizes.items():
        for _ in range(count):
            rows[image_id(number)] = landmark_id
            number += 1
    for position, (iid, _) in enumerate(rows.items()):
        path = root / "train" / iid[0] / iid[1] / iid[2] / f"{iid}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg_bytes(picture(*size, seed=seed * 100003 + position)))
    lines = ["id,landmark_id"] + [f"{iid},{lid}" for iid, lid in rows.items()]
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    return rows


def train_image(root: Path, iid: str) -> Path:
    return root / "train" / iid[0] / iid[1] / iid[2] / f"{iid}.jpg"


def read_records(files) -> list[dict]:
    """Every record of `files`, parsed with plain TensorFlow ops (not the package's parser)."""
    import tensorflow as tf

    out = []
    for raw in tf.data.TFRecordDataset([str(f) for f in files]):
        example = tf.train.Example.FromString(raw.numpy())
        feature = example.features.feature
        out.append(
            {
                "encoded": feature["image/encoded"].bytes_list.value[0],
                "id": feature["image/id"].bytes_list.value[0].decode(),
                "label": feature["image/class/label"].int64_list.value[0],
                "landmark_id": feature["image/landmark_id"].int64_list.value[0],
                "height": feature["image/height"].int64_list.value[0],
                "width": feature["image/width"].int64_list.value[0],
            }
        )
    return out


def decode(data: bytes) -> np.ndarray:
    """uint8 [H, W, 3] decoded by Pillow."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def random_scan_data(jpeg: bytes, size: int = 2000, seed: int = 5) -> bytes:
    """Issue 16 B1: the header and end marker of `jpeg` around `size` random scan-data bytes
    (TensorFlow's decoder refuses it; Pillow reads its header)."""
    sos = jpeg.index(b"\xff\xda")
    start = sos + 2 + int.from_bytes(jpeg[sos + 2 : sos + 4], "big")
    noise = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    return jpeg[:start] + noise + b"\xff\xd9"


def replace_image_in_shard(shard: Path, position: int, data: bytes) -> str:
    """Rewrite the TFRecord `shard` with the image bytes of record `position` replaced by
    `data` (plain TensorFlow, not the package's writer); returns that record's id."""
    import tensorflow as tf

    raws = [raw.numpy() for raw in tf.data.TFRecordDataset(str(shard))]
    example = tf.train.Example.FromString(raws[position])
    feature = example.features.feature
    feature["image/encoded"].bytes_list.value[0] = data
    raws[position] = example.SerializeToString()
    with tf.io.TFRecordWriter(str(shard)) as writer:
        for raw in raws:
            writer.write(raw)
    return feature["image/id"].bytes_list.value[0].decode()
