"""Build mini-landmarks: a small data set in the GLDv2 competition layout from real photographs.

Every monument photograph (see landmarks.data.demo_sources) is one landmark. Its "visitor
photos" are synthetic views of it (random resized crop, rotation and perspective, scale, colour
and lighting, blur, partial occlusion, JPEG quality), drawn independently for train/, index/ and
test/. The hardest test queries are the real second photographs of seven landmarks; photos of
other monuments, animals and texture crops are non-landmark queries (empty ground truth), and
some also sit in index/ as retrieval distractors.

A quarter of the landmarks (UNSEEN_SHARE: 12 of the 49), chosen by the seed, are *unseen*: they
have no train/ images, only index/ and test/ ones, as in GLDv2's retrieval task, where the
embedding must rank places training never showed. Half of the landmarks with a real second
photograph (rounded down: 3 of 7) are among them. Recognition scores the seen landmarks only
(unseen queries are Ignored rows that still name their landmark); retrieval_solution.csv scores
the seen landmarks' queries and retrieval_solution_unseen.csv the unseen ones'.

    out_dir/
      train.csv                 id,landmark_id          (16-hex-digit ids; seen landmarks)
      train/a/b/c/<id>.jpg      also test/... and index/...
      recognition_solution.csv  id,landmarks,Usage      (landmarks empty for non-landmarks;
                                                          Usage Ignored for unseen landmarks)
      retrieval_solution.csv    id,images,Usage         (index ids of the same landmark;
                                                          Usage Ignored where there are none
                                                          and for unseen landmarks)
      retrieval_solution_unseen.csv  id,images,Usage    (the same, scoring the unseen
                                                          landmarks' queries only)
      sample_submission.csv     id,landmarks            ("<landmark_id> <confidence>")
      landmarks.csv             landmark_id,name,source_file,author,license,url (all, seen
                                                          and unseen)
      credits.csv               every source photograph used: role, file, author, licence, url
      mini-landmarks.json       the build settings, counts and the unseen landmark ids;
                                written last (marks a complete build)

The same seed gives byte-identical files: each image draws from its own numpy Generator seeded
by (seed, split, photo, view), and ids are hashes of the same. The build happens in a hidden
folder beside `out_dir` that is renamed at the end, so a killed build never leaves a folder that
looks complete.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from landmarks.data.demo_sources import SOURCES, Photo, PhotoSet, load_photos
from landmarks.errors import ConfigError, DataError

MAX_SIDE = 384  # px, longest side of every image written
MIN_SIDE = 224  # px, smallest longest side of a synthetic view
INDEX_VIEWS = 3  # views per landmark in index/
TEST_VIEWS = 2  # views per landmark in test/
UNSEEN_SHARE = 0.25  # of the landmarks (rounded): no train/ images, only index/ and test/
UNSEEN_SOLUTION = "retrieval_solution_unseen.csv"
MARKER = "mini-landmarks.json"
FORMAT = 2  # 2: unseen landmarks


@dataclass(frozen=True)
class _Style:
    """How a view is drawn: crop area as a fraction of the photo, and distortion strength."""

    min_area: float
    max_area: float
    strength: float  # 0 = crop and resize only; 1 = full rotation/perspective/colour/blur/occlusion


VIEW = _Style(0.25, 1.0, 1.0)  # a visitor photo of the landmark
MILD = _Style(0.6, 1.0, 0.5)  # a second take of a real photograph
TEXTURE = _Style(0.01, 0.04, 0.3)  # a close-up crop: texture, no landmark
AS_IS = _Style(1.0, 1.0, 0.0)  # the photograph itself, only resized


@dataclass(frozen=True)
class _Item:
    split: str  # train | index | test
    image_id: str
    photo: Photo
    style: _Style
    entropy: tuple[int, ...]  # seeds this image's Generator
    landmark_id: int | None  # None: not a landmark of the data set


def build_demo_data(
    out_dir: str | Path,
    seed: int = 0,
    source: str = "auto",
    *,
    views_per_landmark: int = 12,
    cache_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Build mini-landmarks into `out_dir` and return its summary:
    {"source", "source_detail", "seed", "views_per_landmark", "landmarks" (all of them),
    "train_landmarks" (the seen ones), "unseen_landmarks" (sorted ids), "counts": {"train",
    "index", "test"}, "test_landmark_queries", "test_unseen_queries" (of those, the unseen
    landmarks' queries), "test_non_landmark_queries", "out_dir"}.

    `out_dir` must be absent, empty, or a previous mini-landmarks build (which is replaced);
    anything else raises DataError rather than deleting someone's files. `source` is "auto"
    (gcompris-qt-data, else the fallback photos), "gcompris" or "fallback";
    `views_per_landmark` is the number of train images per landmark.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(views_per_landmark, bool) or not isinstance(views_per_landmark, int):
        raise ConfigError(f"views_per_landmark must be an integer, got {views_per_landmark!r}")
    if views_per_landmark < 1:
        raise ConfigError(f"views_per_landmark must be at least 1, got {views_per_landmark}")
    out_dir = Path(out_dir)
    _check_target(out_dir)
    if source not in SOURCES:
        raise ConfigError(f"unknown demo data source {source!r}; expected one of {SOURCES}")
    staging = _staging_dir(out_dir)
    try:
        photos = load_photos(source, cache_dir=cache_dir, log=log)
        landmark_ids = _landmark_ids(len(photos.landmarks), seed)
        unseen = _unseen_landmarks(photos, landmark_ids, seed)
        items = _plan(photos, landmark_ids, unseen, seed, views_per_landmark)
        for item in items:
            _write_image(staging, item)
        summary = _write_tables(
            staging, photos, landmark_ids, unseen, items, seed, views_per_landmark
        )
        _replace(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    summary["out_dir"] = str(out_dir)
    counts = summary["counts"]
    log(
        f"mini-landmarks ({summary['source']}): {summary['landmarks']} landmarks "
        f"({len(summary['unseen_landmarks'])} unseen in training), "
        f"{counts['train']} train, {counts['index']} index, {counts['test']} test images "
        f"in {out_dir}"
    )
    return summary


def real_photo_queries(data_dir: str | Path) -> dict[str, int]:
    """The test queries that are the real second photographs as they are (not their second
    views): {image id: landmark_id}, 7 for the gcompris build.

    Their ids follow from the build's seed (mini-landmarks.json) and the photos named
    "second photograph" in credits.csv; the landmark comes from recognition_solution.csv (its
    Ignored rows too: the real photographs of unseen landmarks are among them).
    DataError naming the file when the folder is not a complete mini-landmarks build.
    """
    root = Path(data_dir)
    seed = read_build_summary(root)["seed"]
    with open(root / "credits.csv", newline="", encoding="utf-8") as handle:
        keys = [
            row["photo"] for row in csv.DictReader(handle) if row["role"] == "second photograph"
        ]
    with open(root / "recognition_solution.csv", newline="", encoding="utf-8") as handle:
        solution = {row["id"]: row["landmarks"] for row in csv.DictReader(handle)}
    queries = {}
    for key in keys:
        # `view` numbers a landmark's second photographs; one each in the gcompris photos.
        ids = [_image_id(seed, "test", key, "second", view) for view in range(len(keys))]
        found = [image_id for image_id in ids if solution.get(image_id)]
        if not found:
            raise DataError(
                f"{root / 'recognition_solution.csv'}: no test query for the second photograph {key}"
            )
        queries[found[0]] = int(solution[found[0]])
    return queries


def read_build_summary(data_dir: str | Path) -> dict:
    """mini-landmarks.json of the build in `data_dir` (the summary build_demo_data returns).
    DataError naming the file when it is missing (not a complete build), cut off, not JSON or
    not an object."""
    from landmarks.io_utils import read_json_object

    marker = Path(data_dir) / MARKER
    if not marker.is_file():
        raise DataError(f"{marker}: missing; {data_dir} is not a complete mini-landmarks build")
    return read_json_object(
        str(marker), f"rebuild it: python -m landmarks demo-data --out {data_dir}"
    )


def unseen_landmarks(data_dir: str | Path) -> list[int]:
    """The ids of the landmarks left out of train/ (sorted), from mini-landmarks.json.
    DataError naming the file when it is missing or from a build before unseen landmarks."""
    marker = Path(data_dir) / MARKER
    summary = read_build_summary(data_dir)
    if "unseen_landmarks" not in summary:
        raise DataError(
            f"{marker}: built before unseen landmarks (format {summary.get('format')}); rebuild "
            f"it: python -m landmarks demo-data --out {data_dir}"
        )
    return [int(landmark) for landmark in summary["unseen_landmarks"]]


def image_path(split: str, image_id: str) -> str:
    """Relative path of an image in the GLDv2 layout: `<split>/<a>/<b>/<c>/<id>.jpg`."""
    return f"{split}/{image_id[0]}/{image_id[1]}/{image_id[2]}/{image_id}.jpg"


# --- target folder --------------------------------------------------------------------------


def _check_target(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir}: --out exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MARKER).exists():
        raise DataError(
            f"{out_dir}: folder is not empty and is not a mini-landmarks build (no {MARKER}); "
            "refusing to replace it; choose another --out or empty it"
        )


def _staging_dir(out_dir: Path) -> Path:
    staging = out_dir.parent / f".{out_dir.name}.building-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir(parents=True)
    except OSError as error:
        raise DataError(f"{out_dir.parent}: cannot create the build folder: {error}") from error
    return staging


def _replace(staging: Path, out_dir: Path) -> None:
    """Move the finished build to `out_dir`, replacing an empty folder or an earlier build."""
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
        out_dir.rename(old)
    staging.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --- what goes where ------------------------------------------------------------------------


def _landmark_ids(count: int, seed: int) -> list[int]:
    """Distinct, non-contiguous landmark ids in [1, 200000), in photo order."""
    rng = np.random.default_rng([seed, 0x1D5])
    return [int(i) for i in rng.choice(np.arange(1, 200_000), size=count, replace=False)]


def _unseen_landmarks(photos: PhotoSet, landmark_ids: list[int], seed: int) -> set[int]:
    """The landmarks left out of train/: round(UNSEEN_SHARE x their number), drawn by `seed`;
    half of those with a real second photograph (rounded down) are among them, so that the
    real photographs test both recognition (seen) and retrieval of a new place (unseen)."""
    rng = np.random.default_rng([seed, 0x05EE])
    with_second = [i for i, p in enumerate(photos.landmarks) if photos.second_photos.get(p.key)]
    others = sorted(set(range(len(photos.landmarks))) - set(with_second))
    total = round(UNSEEN_SHARE * len(photos.landmarks))
    from_second = min(len(with_second) // 2, total)
    chosen = rng.permutation(with_second)[:from_second].tolist()
    chosen += rng.permutation(others)[: total - from_second].tolist()
    return {landmark_ids[i] for i in chosen}


def _image_id(seed: int, split: str, photo_key: str, kind: str, view: int) -> str:
    text = f"mini-landmarks/{seed}/{split}/{photo_key}/{kind}/{view}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _plan(
    photos: PhotoSet, landmark_ids: list[int], unseen: set[int], seed: int, views: int
) -> list[_Item]:
    """Every image of the data set, in a fixed order; no train/ images of `unseen` landmarks."""
    items: list[_Item] = []

    def add(split, photo, style, kind, view, landmark_id):
        entropy = (seed, zlib.crc32(f"{split}/{photo.key}/{kind}".encode()), view)
        image_id = _image_id(seed, split, photo.key, kind, view)
        items.append(_Item(split, image_id, photo, style, entropy, landmark_id))

    for photo, landmark_id in zip(photos.landmarks, landmark_ids, strict=True):
        for view in range(0 if landmark_id in unseen else views):
            add("train", photo, VIEW, "view", view, landmark_id)
        for view in range(INDEX_VIEWS):
            add("index", photo, VIEW, "view", view, landmark_id)
        for view in range(TEST_VIEWS):
            add("test", photo, VIEW, "view", view, landmark_id)
        for number, second in enumerate(photos.second_photos.get(photo.key, [])):
            add("test", second, AS_IS, "second", number, landmark_id)
            add("test", second, MILD, "second-view", number, landmark_id)

    # Non-landmarks: half of each kind are test queries, the other half index distractors.
    rng = np.random.default_rng([seed, 0xD157])
    for pool in (photos.other_landmarks, photos.distractors):
        order = rng.permutation(len(pool))
        for rank, position in enumerate(order):
            split = "test" if rank % 2 == 0 else "index"
            add(split, pool[int(position)], AS_IS if split == "test" else MILD, "other", 0, None)
    textures = max(4, len(photos.distractors) // 4)
    for number in range(textures):
        photo = photos.distractors[number % len(photos.distractors)]
        add("test", photo, TEXTURE, "texture", number, None)

    ids = [item.image_id for item in items]
    if len(set(ids)) != len(ids):
        raise DataError("two mini-landmarks images got the same id; change the seed")
    return items


# --- images ---------------------------------------------------------------------------------


def _write_image(root: Path, item: _Item) -> None:
    rng = np.random.default_rng(list(item.entropy))
    image, quality = synthesize_view(item.photo.image, rng, item.style)
    target = root / image_path(item.split, item.image_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    target.write_bytes(buffer.getvalue())


def synthesize_view(
    photo: Image.Image, rng: np.random.Generator, style: _Style = VIEW
) -> tuple[Image.Image, int]:
    """A random view of `photo` (RGB) and the JPEG quality to save it with.

    Crop of `style.min_area..max_area` of the photo's area (aspect 3:4..4:3), its corners rotated
    by up to 12 degrees and jittered (perspective), rendered with a longest side of 224..384 px;
    then brightness, contrast, saturation, white balance and gamma changes, sometimes a Gaussian
    blur and an occluding block, all scaled by `style.strength`. AS_IS (strength 0, full area)
    only resizes so that the longest side is at most 384 px.
    """
    width, height = photo.size
    if style.strength == 0:
        scale = min(1.0, MAX_SIDE / max(width, height))
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        return photo.resize(size, Image.Resampling.LANCZOS), 90
    strength = style.strength
    area = rng.uniform(style.min_area, style.max_area) * width * height
    aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
    crop_w = min(width, np.sqrt(area * aspect))
    crop_h = min(height, np.sqrt(area / aspect))
    x0 = rng.uniform(0, width - crop_w)
    y0 = rng.uniform(0, height - crop_h)
    # Corners in PIL's QUAD order: upper-left, lower-left, lower-right, upper-right.
    corners = np.array([[x0, y0], [x0, y0 + crop_h], [x0 + crop_w, y0 + crop_h], [x0 + crop_w, y0]])
    centre = corners.mean(axis=0)
    angle = np.deg2rad(rng.uniform(-12, 12) * strength)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    corners = (corners - centre) @ rotation.T + centre
    corners += rng.normal(0, 0.05 * strength * min(crop_w, crop_h), size=(4, 2))
    corners = np.clip(corners, 0, [width, height])

    longest = int(rng.integers(MIN_SIDE, MAX_SIDE + 1))
    if crop_w >= crop_h:
        size = (longest, max(1, round(longest * crop_h / crop_w)))
    else:
        size = (max(1, round(longest * crop_w / crop_h)), longest)
    view = photo.transform(
        size, Image.Transform.QUAD, tuple(corners.ravel()), Image.Resampling.BICUBIC
    )

    def jitter(spread: float) -> float:
        return float(1 + rng.uniform(-spread, spread) * strength)

    view = ImageEnhance.Brightness(view).enhance(jitter(0.35))
    view = ImageEnhance.Contrast(view).enhance(jitter(0.3))
    view = ImageEnhance.Color(view).enhance(jitter(0.4))
    pixels = np.asarray(view, dtype=np.float32) / 255.0
    gains = 1 + rng.normal(0, 0.05 * strength, size=3).astype(np.float32)
    gamma = np.float32(np.exp(rng.uniform(-0.25, 0.25) * strength))
    pixels = np.clip(pixels * gains, 0, 1) ** gamma
    if rng.random() < 0.35 * strength:
        _occlude(pixels, rng)
    view = Image.fromarray(np.round(pixels * 255).astype(np.uint8))
    if rng.random() < 0.3 * strength:
        view = view.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.4, 1.5))))
    quality = int(rng.integers(60, 96))
    return view, quality


def _occlude(pixels: np.ndarray, rng: np.random.Generator) -> None:
    """Cover a block rising from the bottom edge (a passer-by, a railing): 10-35% of the width,
    15-50% of the height, a dark random colour with noise. Edits `pixels` (H, W, 3) in place."""
    height, width, _ = pixels.shape
    block_w = max(1, int(width * rng.uniform(0.1, 0.35)))
    block_h = max(1, int(height * rng.uniform(0.15, 0.5)))
    left = int(rng.integers(0, width - block_w + 1))
    colour = rng.uniform(0, 0.6, size=3).astype(np.float32)
    noise = rng.normal(0, 0.05, size=(block_h, block_w, 3)).astype(np.float32)
    pixels[height - block_h :, left : left + block_w] = np.clip(colour + noise, 0, 1)


# --- tables ---------------------------------------------------------------------------------


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _usage(image_id: str) -> str:
    """About a third of the queries are Public, the rest Private (fixed by the id)."""
    return "Public" if int(image_id[:8], 16) % 3 == 0 else "Private"


def _write_tables(
    root: Path,
    photos: PhotoSet,
    landmark_ids: list[int],
    unseen: set[int],
    items: list[_Item],
    seed: int,
    views: int,
) -> dict:
    by_split = {
        split: [i for i in items if i.split == split] for split in ("train", "index", "test")
    }
    train = sorted(by_split["train"], key=lambda i: i.image_id)
    _write_csv(
        root / "train.csv", ["id", "landmark_id"], [[i.image_id, i.landmark_id] for i in train]
    )

    index_of: dict[int, list[str]] = {}
    for item in by_split["index"]:
        if item.landmark_id is not None:
            index_of.setdefault(item.landmark_id, []).append(item.image_id)
    test = sorted(by_split["test"], key=lambda i: i.image_id)
    seen_ids = [landmark for landmark in landmark_ids if landmark not in unseen]
    recognition, retrieval, retrieval_unseen, sample = [], [], [], []
    rng = np.random.default_rng([seed, 0x5A3])
    for item in test:
        usage = _usage(item.image_id)
        if item.landmark_id is None:
            recognition.append([item.image_id, "", usage])
            retrieval.append([item.image_id, "", "Ignored"])
            retrieval_unseen.append([item.image_id, "", "Ignored"])
        else:
            # Ignored rows keep their truth: the landmark and its index images, not scored.
            is_unseen = item.landmark_id in unseen
            images = " ".join(sorted(index_of[item.landmark_id]))
            recognition.append(
                [item.image_id, str(item.landmark_id), "Ignored" if is_unseen else usage]
            )
            retrieval.append([item.image_id, images, "Ignored" if is_unseen else usage])
            retrieval_unseen.append([item.image_id, images, usage if is_unseen else "Ignored"])
        guess = seen_ids[int(rng.integers(len(seen_ids)))]
        sample.append([item.image_id, f"{guess} {rng.uniform(0, 1):.4f}"])
    _write_csv(root / "recognition_solution.csv", ["id", "landmarks", "Usage"], recognition)
    _write_csv(root / "retrieval_solution.csv", ["id", "images", "Usage"], retrieval)
    _write_csv(root / UNSEEN_SOLUTION, ["id", "images", "Usage"], retrieval_unseen)
    _write_csv(root / "sample_submission.csv", ["id", "landmarks"], sample)

    landmark_rows = sorted(
        [lid, p.name, p.origin, p.author, p.license, p.url]
        for p, lid in zip(photos.landmarks, landmark_ids, strict=True)
    )
    _write_csv(
        root / "landmarks.csv",
        ["landmark_id", "name", "source_file", "author", "license", "url"],
        landmark_rows,
    )
    roles = [("landmark", photos.landmarks)]
    roles += [("second photograph", group) for group in photos.second_photos.values()]
    roles += [("out-of-set landmark", photos.other_landmarks)]
    roles += [("non-landmark", photos.distractors)]
    credit_rows = sorted(
        [p.key, role, p.origin, p.author, p.license, p.url] for role, group in roles for p in group
    )
    _write_csv(
        root / "credits.csv",
        ["photo", "role", "source_file", "author", "license", "url"],
        credit_rows,
    )

    queries = by_split["test"]
    summary = {
        "format": FORMAT,
        "source": photos.source,
        "source_detail": photos.description,
        "seed": seed,
        "views_per_landmark": views,
        "landmarks": len(landmark_ids),
        "train_landmarks": len(seen_ids),
        "unseen_landmarks": sorted(unseen),
        "unseen_share": UNSEEN_SHARE,
        "counts": {split: len(by_split[split]) for split in ("train", "index", "test")},
        "test_landmark_queries": sum(i.landmark_id is not None for i in queries),
        "test_unseen_queries": sum(i.landmark_id in unseen for i in queries),
        "test_non_landmark_queries": sum(i.landmark_id is None for i in queries),
    }
    (root / MARKER).write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    return summary
