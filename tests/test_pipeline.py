"""tf.data pipelines: static training shapes, seeded determinism (per iteration and per epoch),
embedding order/remainder/flip, reading image files directly, in-graph cutout, and refusing host
augmentation on TPU."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from records_helpers import decode, jpeg_bytes, picture, png_bytes, read_records

from landmarks.data import augment, pipeline
from landmarks.data.tfrecords import list_shards, read_label_map
from landmarks.errors import ConfigError, DataError

SIZE = 32


@pytest.fixture(scope="module")
def train_files(mini_records):
    return list_shards(str(mini_records), "train")


@pytest.mark.parametrize("mode", ["tf", "albumentations", "none"])
def test_training_batches_have_static_shapes_and_valid_values(train_files, mode):
    dataset = pipeline.make_train_dataset(
        train_files, SIZE, 8, augment=mode, seed=0, shuffle_buffer=64
    )
    features_spec, label_spec = dataset.element_spec
    assert (
        features_spec["image"].shape == (8, SIZE, SIZE, 3)
        and features_spec["image"].dtype == tf.float32
    )
    assert features_spec["label"].shape == (8,) and label_spec.shape == (8,)
    assert label_spec.dtype == tf.int32
    features, labels = next(iter(dataset))
    image = features["image"].numpy()
    assert 0.0 <= image.min() and image.max() <= 255.0 and image.std() > 1.0
    num_classes = len(read_label_map(str(train_files[0]).rsplit("/", 1)[0]))
    assert np.array_equal(features["label"].numpy(), labels.numpy())
    assert ((labels.numpy() >= 0) & (labels.numpy() < num_classes)).all()


@pytest.mark.parametrize("mode", ["tf", "albumentations"])
def test_same_seed_same_batches(train_files, mode):
    def first_batches(seed):
        dataset = pipeline.make_train_dataset(
            train_files, SIZE, 4, augment=mode, seed=seed, shuffle_buffer=32
        )
        return [(f["image"].numpy(), y.numpy()) for f, y in dataset.take(3)]

    a, b, c = first_batches(5), first_batches(5), first_batches(6)
    for (image_a, label_a), (image_b, label_b) in zip(a, b, strict=True):
        assert np.array_equal(image_a, image_b) and np.array_equal(label_a, label_b)
    assert not all(np.array_equal(x[0], y[0]) for x, y in zip(a, c, strict=True))


def _batches(dataset) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(f["image"].numpy(), y.numpy()) for f, y in dataset]


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1])
        for x, y in zip(a, b, strict=False)
    )


def test_a_seeded_dataset_gives_the_same_batches_each_time_it_is_iterated(train_files):
    """Keras' fit on JAX iterates a dataset once to peek at a batch, then again to train; shuffles
    that reshuffle on each iteration would make the second pass another order."""
    dataset = pipeline.make_train_dataset(train_files, SIZE, 4, seed=3, shuffle_buffer=32)
    first, second = _batches(dataset.take(3)), _batches(dataset.take(3))
    assert _same(first, second)
    passes = pipeline.make_train_dataset(train_files, SIZE, 8, seed=3, augment="none")
    one_pass = len(read_records(train_files)) // 8
    labels = [y for _, y in _batches(passes.take(2 * one_pass))]
    # the next pass over the shards has its own order
    assert not all(
        np.array_equal(a, b) for a, b in zip(labels[:5], labels[one_pass:][:5], strict=True)
    )


def test_training_epochs_depend_on_seed_and_epoch_alone(train_files):
    """Epochs 1-2 of a run resumed after epoch 0 are the batches of epochs 1-2 of the run from
    the start; epochs differ from each other; each epoch starts a pass over the shards."""
    options = dict(seed=7, steps_per_epoch=3, augment="tf", shuffle_buffer=32)
    whole = pipeline.make_train_epochs(train_files, SIZE, 4, epochs=range(0, 3), **options)
    resumed = pipeline.make_train_epochs(train_files, SIZE, 4, epochs=range(1, 3), **options)
    assert whole.cardinality().numpy() == 9 and resumed.cardinality().numpy() == 6
    whole, resumed = _batches(whole), _batches(resumed)
    assert _same(whole[3:], resumed)
    assert not _same(whole[0:3], whole[3:6])
    alone = pipeline.make_train_dataset(
        train_files, SIZE, 4, seed=pipeline.mixed_seed(7, 2), augment="tf", shuffle_buffer=32
    )
    assert _same(whole[6:], _batches(alone.take(3)))


def test_mixed_seeds_are_unrelated_for_nearby_keys():
    seeds = {pipeline.mixed_seed(seed, epoch) for seed in range(20) for epoch in range(20)}
    assert len(seeds) == 400 and all(0 <= s < 2**31 for s in seeds)
    assert pipeline.mixed_seed(42, 1) != pipeline.mixed_seed(43, 0)
    assert pipeline.mixed_seed(42, 1) == pipeline.mixed_seed(42, 1)


def test_finite_training_pass_drops_the_remainder(mini_records):
    files = list_shards(str(mini_records), "holdout")
    count = len(read_records(files))
    batches = list(pipeline.make_train_dataset(files, SIZE, 5, augment="none", repeat=False))
    assert len(batches) == count // 5
    assert all(f["image"].shape[0] == 5 for f, _ in batches)


def test_processes_share_the_training_records_each_example_once(train_files):
    """JAX over several processes: each process reads its own shards; over one pass of the
    shares every example (by id) is read once, by one process, and none twice."""
    everyone = [record["id"] for record in read_records(train_files)]
    assert len(everyone) == len(set(everyone)) > 0
    for processes in (1, 2):
        shares = [pipeline.process_share(train_files, processes, p) for p in range(processes)]
        ids = [[record["id"] for record in read_records(share)] for share in shares]
        assert sorted(sum(ids, [])) == sorted(everyone)
        assert max(map(len, ids)) - min(map(len, ids)) <= 1  # prepare's shards are balanced
    with pytest.raises(ConfigError, match="3 training shards cannot be shared evenly by 2"):
        pipeline.process_share([*train_files, train_files[0]], 2, 1)


def test_embed_dataset_keeps_ids_labels_remainder_and_flips(mini_records):
    files = list_shards(str(mini_records), "holdout")
    records = read_records(files)
    batches = list(pipeline.make_embed_dataset(files, 40, 4))
    sizes = [b["image"].shape[0] for b in batches]
    assert sum(sizes) == len(records) and all(s == 4 for s in sizes[:-1])
    ids = [i.decode() for b in batches for i in b["id"].numpy()]
    assert sorted(ids) == sorted(r["id"] for r in records)
    labels = dict(zip(ids, np.concatenate([b["label"].numpy() for b in batches]), strict=True))
    assert labels == {r["id"]: r["label"] for r in records}
    flipped = list(pipeline.make_embed_dataset(files, 40, 4, flip=True))
    assert flipped[0]["image"].shape[1:] == (40, 40, 3)
    np.testing.assert_allclose(
        flipped[0]["image"].numpy(), batches[0]["image"].numpy()[:, :, ::-1, :]
    )
    odd = next(iter(pipeline.make_embed_dataset(files, 45, 2)))  # any size, for multi-scale
    assert odd["image"].shape == (2, 45, 45, 3)


def test_embed_from_files_matches_a_numpy_resize_reference(tmp_path):
    paths, ids, pixels = [], [], []
    for i in range(5):
        data = picture(24, 24, seed=i)
        path = tmp_path / f"img{i}.jpg"
        path.write_bytes(jpeg_bytes(data) if i < 4 else png_bytes(data))  # PNG is decoded too
        paths.append(str(path))
        ids.append(f"q{i}")
        pixels.append(decode(path.read_bytes()))  # Pillow's decoding as the reference input
    batches = list(pipeline.make_embed_dataset_from_files(paths, ids, 12, 2, flip=True))
    assert [b["image"].shape[0] for b in batches] == [2, 2, 1]
    got_ids = [i.decode() for b in batches for i in b["id"].numpy()]
    assert got_ids == ids
    assert all((b["label"].numpy() == -1).all() for b in batches)
    images = np.concatenate([b["image"].numpy() for b in batches])
    reference = _halve_triangle(np.stack(pixels).astype(np.float32))[:, :, ::-1]  # then flip
    assert np.abs(images - reference).mean() < 2.5  # JPEG decoders differ slightly (IDCT)
    np.testing.assert_allclose(images[4], reference[4], atol=1e-3)  # lossless PNG: exact


def _halve_triangle(images: np.ndarray) -> np.ndarray:
    """Antialiased bilinear 2x downscale of [N, H, W, C] in numpy: output pixel j averages
    input pixels 2j-1 .. 2j+2 with weights 1, 3, 3, 1 (renormalised at the borders)."""

    def along(axis_images: np.ndarray, axis: int) -> np.ndarray:
        n = axis_images.shape[axis]
        weights = np.zeros((n // 2, n))
        for j in range(n // 2):
            for offset, w in zip((-1, 0, 1, 2), (1, 3, 3, 1), strict=True):
                if 0 <= 2 * j + offset < n:
                    weights[j, 2 * j + offset] = w
        weights /= weights.sum(1, keepdims=True)
        return np.moveaxis(
            np.tensordot(weights, np.moveaxis(axis_images, axis, 0), axes=1), 0, axis
        )

    return along(along(images, 1), 2)


def test_pipeline_argument_errors(train_files):
    with pytest.raises(DataError, match="no record files"):
        pipeline.make_train_dataset([], SIZE, 4)
    with pytest.raises(ConfigError, match="augment must be one of"):
        pipeline.make_train_dataset(train_files, SIZE, 4, augment="mixup")
    with pytest.raises(ConfigError, match="global_batch_size"):
        pipeline.make_train_dataset(train_files, SIZE, 0)
    with pytest.raises(ConfigError, match="crop_area_min must be in"):
        pipeline.make_train_dataset(train_files, SIZE, 4, crop_area_min=0)
    with pytest.raises(DataError, match="2 paths but 1 ids"):
        pipeline.make_embed_dataset_from_files(["a", "b"], ["a"], SIZE, 2)


class _FakeTPUStrategy(tf.distribute.TPUStrategy):
    """Passes isinstance checks for TPUStrategy without a TPU."""

    def __init__(self):  # no TPU cluster to connect to
        pass


def test_albumentations_is_refused_under_a_tpu_strategy(train_files, monkeypatch):
    with pytest.raises(ConfigError, match="TPU"):
        augment.check_host_augmentation_allowed(_FakeTPUStrategy())
    augment.check_host_augmentation_allowed(tf.distribute.get_strategy())  # CPU: allowed
    monkeypatch.setattr(tf.distribute, "get_strategy", lambda: _FakeTPUStrategy())
    with pytest.raises(ConfigError, match="augment='tf'"):
        pipeline.make_train_dataset(train_files, SIZE, 4, augment="albumentations")
    pipeline.make_train_dataset(train_files, SIZE, 4, augment="tf")  # in-graph stays allowed


def test_cutout_zeroes_one_square_in_about_half_the_images():
    images = tf.ones([40, SIZE, SIZE, 3]) * 200.0
    side = round(SIZE * augment.CUTOUT_FRACTION)
    out = augment.cutout(images, tf.constant([1, 2]), tf.constant([3, 4])).numpy()
    applied = 0
    for image in out:
        zero = image[..., 0] == 0
        if zero.any():
            applied += 1
            rows, cols = np.flatnonzero(zero.any(1)), np.flatnonzero(zero.any(0))
            assert len(rows) == side and len(cols) == side and zero.sum() == side * side
            assert np.ptp(rows) == side - 1 and np.ptp(cols) == side - 1  # one solid square
            assert (image[zero] == 0).all() and (image[~zero] == 200.0).all()
    assert 8 <= applied <= 32


def test_colour_jitter_matches_the_step_by_step_numpy_definition():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (3, 5, 6, 3)).astype(np.float32)
    delta, contrast, saturation = (
        np.array([20.0, -30.0, 0.0]),
        np.array([1.2, 0.8, 1.0]),
        np.array([0.8, 1.2, 1.0]),
    )
    expected = []
    for x, d, f, s in zip(images.astype(np.float64), delta, contrast, saturation, strict=True):
        x = x + d  # brightness
        x = (x - x.mean(axis=(0, 1))) * f + x.mean(axis=(0, 1))  # contrast around channel means
        grey = (x @ np.array([0.299, 0.587, 0.114]))[..., None]
        expected.append(np.clip(grey + s * (x - grey), 0, 255))  # saturation, then clip
    got = augment.apply_colour(
        tf.constant(images), *(tf.constant(v, tf.float32) for v in (delta, contrast, saturation))
    )
    np.testing.assert_allclose(got.numpy(), np.stack(expected), atol=1e-3)
    np.testing.assert_allclose(got.numpy()[2], images[2], atol=1e-3)  # neutral factors: unchanged
    # The channel means, when the caller passes them (the pipeline does), are used as given.
    factors = [tf.constant(v, tf.float32) for v in (delta, contrast, saturation)]
    given = augment.apply_colour(
        tf.constant(images), *factors, tf.constant(images.mean(axis=(1, 2)))
    )
    np.testing.assert_allclose(given.numpy(), np.stack(expected), atol=1e-3)
    shifted = augment.apply_colour(
        tf.constant(images), *factors, tf.constant(images.mean(axis=(1, 2)) + 10)
    )
    assert np.abs(shifted.numpy()[0] - np.stack(expected)[0]).max() > 1  # contrast 1.2 moves it


def test_batch_augmentation_is_per_image_and_seeded():
    image = tf.constant(picture(SIZE, SIZE, seed=2), tf.float32)
    batch = tf.stack([image] * 16)
    out = augment.augment_batch(batch, tf.constant([7, 8], tf.int64)).numpy()
    assert out.shape == (16, SIZE, SIZE, 3) and out.min() >= 0.0 and out.max() <= 255.0
    assert len({out[i].tobytes() for i in range(16)}) == 16, "each image gets its own jitter"
    again = augment.augment_batch(batch, tf.constant([7, 8], tf.int64)).numpy()
    assert np.array_equal(out, again)


def test_random_crop_is_static_seeded_and_sometimes_flipped():
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:, :30] = 255  # left half white: a flip moves the white to the right
    encoded = tf.constant(jpeg_bytes(pixels))
    crops = [
        augment.decode_random_crop(encoded, SIZE, tf.constant([s, 0], tf.int64)).numpy()
        for s in range(30)
    ]
    assert all(c.shape == (SIZE, SIZE, 3) for c in crops)
    again = augment.decode_random_crop(encoded, SIZE, tf.constant([0, 0], tf.int64)).numpy()
    assert np.array_equal(crops[0], again)
    # a crop containing both halves shows white on one side; flipped crops show it on the right
    mixed = [c for c in crops if abs(c[:, :4].mean() - c[:, -4:].mean()) > 100]
    right = [c for c in mixed if c[:, -4:].mean() > c[:, :4].mean()]
    assert len(mixed) >= 6 and 0 < len(right) < len(mixed)


def _crop_area_fractions(area_min: float, seeds: int = 120) -> np.ndarray:
    """Area fraction of each random crop of a 128 x 128 picture whose red channel is 2 x column
    and green 2 x row, measured from the range of those values in the resized crop."""
    rows, columns = np.mgrid[0:128, 0:128]
    pixels = np.stack([2 * columns, 2 * rows, np.zeros_like(rows)], axis=-1).astype(np.uint8)
    encoded = tf.constant(jpeg_bytes(pixels, quality=100))
    fractions = []
    for seed in range(seeds):
        crop = augment.decode_random_crop(encoded, 32, tf.constant([seed, 1], tf.int64), area_min)
        crop = crop.numpy()
        width = (np.percentile(crop[..., 0], 99) - np.percentile(crop[..., 0], 1)) / 2 + 1
        height = (np.percentile(crop[..., 1], 99) - np.percentile(crop[..., 1], 1)) / 2 + 1
        fractions.append(width * height / 128**2)
    return np.asarray(fractions)


def test_random_crop_keeps_at_least_crop_area_min_of_the_image():
    default = _crop_area_fractions(augment.AREA_MIN)
    close_ups = _crop_area_fractions(0.05)
    assert default.min() > 0.2  # 0.25 of the area, less the percentile trim
    assert close_ups.min() < 0.15 and np.median(close_ups) < np.median(default)


def test_mini_records_fixture_matches_its_label_map(mini_records):
    label_map = read_label_map(str(mini_records))
    train = pd.DataFrame(read_records(list_shards(str(mini_records), "train")))
    assert label_map["label"].tolist() == list(range(len(label_map)))
    counts = train.groupby("landmark_id").size()
    assert dict(zip(label_map["landmark_id"], label_map["count"], strict=True)) == counts.to_dict()
    assert (train[["width", "height"]].max(axis=1) <= 64).all()
