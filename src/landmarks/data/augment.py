"""Training augmentation: in-graph TensorFlow ops (TPU-safe), or albumentations on the host.

In-graph ("tf"): random resized crop decoded straight from the JPEG (only the crop window is
decoded), horizontal flip, colour jitter (brightness, contrast, saturation) and cutout (one
square hole filled with 0, half of the time). Every op is stateless and takes a per-example seed
[2] int64, so a seeded pipeline repeats itself exactly; every shape is static.

Albumentations ("albumentations"): the same recipe with albumentations, run through
tf.numpy_function, i.e. Python on the host: fine on CPU/GPU, impossible on TPU
(`check_host_augmentation_allowed` refuses it there).

Images are float32 [S, S, 3] with values in [0, 255].
"""

from __future__ import annotations

import threading

import tensorflow as tf

from landmarks.errors import ConfigError

AREA_RANGE = (0.25, 1.0)  # fraction of the image area kept by the random crop
ASPECT_RANGE = (3 / 4, 4 / 3)  # width / height of the random crop
BRIGHTNESS = 0.2  # max change, as a fraction of the full range
CONTRAST = (0.8, 1.2)  # factor range
SATURATION = (0.8, 1.2)  # factor range
CUTOUT_FRACTION = 0.25  # side of the cutout square / image side
CUTOUT_PROBABILITY = 0.5


def decode_random_crop(encoded: tf.Tensor, image_size: int, seed: tf.Tensor) -> tf.Tensor:
    """JPEG bytes -> float32 [S, S, 3]: a random crop (area and aspect in the ranges above)
    decoded with decode_and_crop_jpeg and resized to S x S (bilinear)."""
    shape = tf.image.extract_jpeg_shape(encoded)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=ASPECT_RANGE,
        area_range=AREA_RANGE,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    image = tf.image.decode_and_crop_jpeg(encoded, window, channels=3)
    image = tf.image.resize(image, [image_size, image_size])
    return tf.ensure_shape(image, [image_size, image_size, 3])


def augment_image(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Flip, colour jitter and cutout of float32 [S, S, 3] in [0, 255]; same shape out."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=6)
    image = tf.image.stateless_random_flip_left_right(image, seeds[0])
    unit = image / 255.0
    unit = tf.image.stateless_random_brightness(unit, BRIGHTNESS, seeds[1])
    unit = tf.image.stateless_random_contrast(unit, *CONTRAST, seeds[2])
    unit = tf.image.stateless_random_saturation(unit, *SATURATION, seeds[3])
    image = tf.clip_by_value(unit, 0.0, 1.0) * 255.0
    return _cutout(image, seeds[4], seeds[5])


def _cutout(image: tf.Tensor, seed: tf.Tensor, coin_seed: tf.Tensor) -> tf.Tensor:
    height, width = image.shape[0], image.shape[1]
    side = max(1, int(round(min(height, width) * CUTOUT_FRACTION)))
    top_left = tf.random.stateless_uniform(
        [2], seed, minval=0, maxval=tf.int64.max, dtype=tf.int64
    ) % tf.constant([height - side + 1, width - side + 1], tf.int64)
    rows = tf.range(height, dtype=tf.int64)[:, None]
    cols = tf.range(width, dtype=tf.int64)[None, :]
    hole = (
        (rows >= top_left[0])
        & (rows < top_left[0] + side)
        & (cols >= top_left[1])
        & (cols < top_left[1] + side)
    )
    apply = tf.random.stateless_uniform([], coin_seed) < CUTOUT_PROBABILITY
    hole = tf.logical_and(hole, apply)[:, :, None]
    return tf.where(hole, tf.zeros_like(image), image)


# --- albumentations (host) --------------------------------------------------------------------


def check_host_augmentation_allowed(strategy=None) -> None:
    """ConfigError when `strategy` (default: the current tf.distribute strategy) is a TPU
    strategy: host-side Python (tf.numpy_function) cannot run in a TPU input pipeline."""
    strategy = strategy if strategy is not None else tf.distribute.get_strategy()
    if isinstance(strategy, (tf.distribute.TPUStrategy, tf.distribute.experimental.TPUStrategy)):
        raise ConfigError(
            "augment='albumentations' runs Python on the host (tf.numpy_function), which a TPU "
            "input pipeline cannot do; use augment='tf' (in-graph, same recipe) on TPU"
        )


_local = threading.local()


def _albumentations_compose(image_size: int):
    """The albumentations recipe matching the in-graph one (one instance per thread)."""
    composes = getattr(_local, "composes", None)
    if composes is None:
        composes = _local.composes = {}
    if image_size not in composes:
        import albumentations as A

        hole = max(1, int(round(image_size * CUTOUT_FRACTION)))
        composes[image_size] = A.Compose(
            [
                A.RandomResizedCrop((image_size, image_size), scale=AREA_RANGE, ratio=ASPECT_RANGE),
                A.HorizontalFlip(p=0.5),
                A.ColorJitter(
                    brightness=(1 - BRIGHTNESS, 1 + BRIGHTNESS),
                    contrast=CONTRAST,
                    saturation=SATURATION,
                    hue=0.0,
                    p=1.0,
                ),
                A.CoarseDropout(
                    num_holes_range=(1, 1),
                    hole_height_range=(hole, hole),
                    hole_width_range=(hole, hole),
                    fill=0,
                    p=CUTOUT_PROBABILITY,
                ),
            ]
        )
    return composes[image_size]


def _albumentations_numpy(image, seed, image_size):
    compose = _albumentations_compose(int(image_size))
    compose.set_random_seed(int(seed[0]) % (2**32))
    return compose(image=image)["image"]


def albumentations_augment(image_uint8: tf.Tensor, image_size: int, seed: tf.Tensor) -> tf.Tensor:
    """uint8 [H, W, 3] -> float32 [S, S, 3] through albumentations on the host (CPU/GPU only)."""
    out = tf.numpy_function(
        _albumentations_numpy, [image_uint8, seed, image_size], tf.uint8, stateful=True
    )
    out = tf.ensure_shape(out, [image_size, image_size, 3])
    return tf.cast(out, tf.float32)
