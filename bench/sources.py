"""Image sources shared by the benchmarks: photographs for bench/build.py and bench/pipeline.py,
random training batches for bench/backend.py and bench/model.py.

  views   input/mini-landmarks train images: views drawn from the demo photographs, saved with
          the longest side ~200-370 px (588 images). Small next to competition photos, so
          per-pixel costs of decoding are low and fixed costs weigh more.
  photos  the demo's source photographs themselves (gcompris-qt-data, or the fallback set), at
          their working size (longest side 640 px, data.demo_sources.WORKING_SIDE), written as
          JPEG quality 90: the scale of GLDv2 photos (assumption: GLDv2 train photos are mostly
          a few hundred to ~800 px on the longest side).

`image_table(source, data_dir, folder)` returns a table (id, path, landmark_id) of JPEG files;
`build_inputs` (with `add_build_arguments` and `repeated_table`) the options and the table of
the record-build benchmarks (bench/build.py, bench/beam_build.py); `random_batch(rng, batch, size, num_classes)`
a training batch of random pixels and labels (bench/backend.py, bench/model.py).
"""

from __future__ import annotations

import argparse
import os
import tempfile

import pandas as pd

SOURCES = ("views", "photos")


def add_build_arguments(parser, repeat: int) -> None:
    """--source, --data, --repeat (default `repeat`), --image-size, --shards."""
    parser.add_argument("--source", default="views", choices=SOURCES)
    parser.add_argument("--data", default="input/mini-landmarks")
    parser.add_argument(
        "--repeat", type=int, default=repeat, help="use every image this many times"
    )
    parser.add_argument("--image-size", type=int, default=128, help="longest side for re-encoding")
    parser.add_argument("--shards", type=int, default=8)


def build_inputs(description: str, repeat: int, prefix: str):
    """The start of a record-build benchmark: its options (`add_build_arguments`), a temporary
    work folder, the source's images and them repeated. Returns (args, work, base, table)."""
    parser = argparse.ArgumentParser(description=description)
    add_build_arguments(parser, repeat=repeat)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix=prefix)
    base = image_table(args.source, args.data, work)
    return args, work, base, repeated_table(base, args.repeat)


def print_rates(images: int, base: int, args, rates: dict, unit: str, extra: str = "") -> None:
    """The build benchmarks' report: what was built on this machine (images = `base` sources x
    args.repeat, cpus, load average), then one line per rate, in `unit`."""
    print(
        f"images: {images} ({base} {args.source} x {args.repeat}), {extra}"
        f"cpus: {os.cpu_count()}, load: {os.getloadavg()[0]:.1f}"
    )
    width = max(len(name) for name in rates) + 2
    for name, value in rates.items():
        print(f"{name:>{width}}: {value:8.1f} {unit}")


def repeated_table(base: pd.DataFrame, repeat: int) -> pd.DataFrame:
    """`base` `repeat` times over, each copy's ids suffixed _0, _1, ... so that all differ."""
    return pd.concat(
        [base.assign(id=base["id"] + f"_{r}") for r in range(repeat)], ignore_index=True
    )


def image_table(source: str, data_dir: str, folder: str) -> pd.DataFrame:
    """(id, path, landmark_id) of the images of `source`; "photos" are written under `folder`."""
    if source == "views":
        from landmarks.data import gldv2

        return gldv2.read_train_table(data_dir)[["id", "path", "landmark_id"]]
    if source != "photos":
        raise SystemExit(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    from landmarks.data.demo_sources import load_photos

    photos = load_photos("auto", log=lambda message: None)
    every = (
        photos.landmarks
        + [photo for group in photos.second_photos.values() for photo in group]
        + photos.other_landmarks
        + photos.distractors
    )
    rows = []
    for number, photo in enumerate(every):
        path = os.path.join(folder, f"photo{number:03d}.jpg")
        photo.image.convert("RGB").save(path, format="JPEG", quality=90)
        rows.append({"id": f"photo{number:03d}", "path": path, "landmark_id": number})
    return pd.DataFrame(rows)


def random_batch(rng, batch: int, size: int, num_classes: int) -> dict:
    """{"image": float32 [batch, size, size, 3] uniform in [0, 255], "label": int32 [batch] in
    [0, num_classes)}, drawn from the numpy Generator `rng`."""
    return {
        "image": rng.uniform(0, 255, (batch, size, size, 3)).astype("float32"),
        "label": rng.integers(0, num_classes, batch).astype("int32"),
    }
