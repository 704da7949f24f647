"""Training augmentation: in-graph TensorFlow ops (TPU-safe), or albumentations on the host.

In-graph ("tf"): per image, a random resized crop decoded straight from the JPEG (only the crop
window is decoded) and a horizontal flip; then per batch, with parameters drawn per image, colour
jitter (brightness, contrast, saturation) and cutout (one square hole filled with 0, half of the
time). Every op is stateless and takes a seed [2] int64, so a seeded pipeline repeats itself
exactly; every shape is static.

Albumentations ("albumentations"): the same recipe with albumentations, run through
tf.numpy_function, i.e. Python on the host: fine on CPU/GPU, impossible on TPU
(`check_host_augmentation_allowed` refuses it there).

Images are float32 [S, S, 3] with values in [0, 255].
"""

from __future__ import annotations

import threading

import tensorflow as tf

from landmarks.errors import ConfigError

AREA_MIN = 0.25  # default smallest fraction of the image area kept by the random crop (to 1)
ASPECT_RANGE = (3 / 4, 4 / 3)  # width / height of the random crop
BRIGHTNESS = 0.2  # max change, as a fraction of the full range
CONTRAST = (0.8, 1.2)  # factor range
SATURATION = (0.8, 1.2)  # factor range
CUTOUT_FRACTION = 0.25  # side of the cutout square / image side
CUTOUT_PROBABILITY = 0.5


def check_crop_area_min(area_min: float) -> None:
    """ConfigError unless `area_min` (the crop's smallest fraction of the image area) is in
    (0, 1]: the one check of `crop_area_min`, for the pipeline and the training plan alike."""
    if not 0 < area_min <= 1:
        raise ConfigError(f"crop_area_min must be in (0, 1], got {area_min}")


def decode_random_crop(
    encoded: tf.Tensor, image_size: int, seed: tf.Tensor, area_min: float = AREA_MIN
) -> tf.Tensor:
    """JPEG bytes -> float32 [S, S, 3]: a random crop (area a fraction in [area_min, 1] of the
    image, aspect in ASPECT_RANGE),
    decoded with decode_and_crop_jpeg (only the window is decoded), flipped left-right half of
    the time (on the small uint8 crop, where it is cheapest) and resized to S x S (bilinear)."""
    crop_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
    )
    shape = tf.image.extract_jpeg_shape(encoded)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=crop_seed,
        min_object_covered=0.0,
        aspect_ratio_range=ASPECT_RANGE,
        area_range=(area_min, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    image = tf.image.decode_and_crop_jpeg(encoded, window, channels=3)
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    image = tf.image.resize(image, [image_size, image_size])
    return tf.ensure_shape(image, [image_size, image_size, 3])


LUMA = (0.299, 0.587, 0.114)  # ITU-R 601 weights of R, G, B in grayscale


def colour_jitter(images: tf.Tensor, seed: tf.Tensor, means: tf.Tensor | None = None) -> tf.Tensor:
    """Brightness, contrast and saturation jitter of a batch float32 [B, S, S, 3] in [0, 255],
    with factors drawn per image, clipped to [0, 255]. means: float32 [B, 3], each image's
    channel means, when the caller has them (see `apply_colour`).

    As torchvision's ColorJitter (without its clipping between steps): brightness adds
    delta ~ U(+-BRIGHTNESS * 255); contrast scales by f around each image's per-channel mean m;
    saturation blends with the grayscale g = x . LUMA by s: x' = g + s (x - g). All three are
    affine in RGB, so they run as ONE per-image 3x3 colour matrix and offset:
        x' = x (f C) + ((1 - f) m + delta) C,   C = s I + (1 - s) LUMA 1^T.
    """
    batch = images.shape[0]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=3)
    delta = tf.random.stateless_uniform([batch], seeds[0], -BRIGHTNESS * 255.0, BRIGHTNESS * 255.0)
    contrast = tf.random.stateless_uniform([batch], seeds[1], *CONTRAST)
    saturation = tf.random.stateless_uniform([batch], seeds[2], *SATURATION)
    return apply_colour(images, delta, contrast, saturation, means)


def apply_colour(
    images: tf.Tensor,
    delta: tf.Tensor,
    contrast: tf.Tensor,
    saturation: tf.Tensor,
    means: tf.Tensor | None = None,
) -> tf.Tensor:
    """The colour jitter of `colour_jitter` with given per-image factors, each float32 [B].

    means: float32 [B, 3] channel means of each image (m), computed here when None. The
    training pipeline passes them in: computed per image in the decode step, while the image
    is in cache, they cost far less than a separate reduction pass over the batch."""
    batch = images.shape[0]
    delta, contrast, saturation = (
        tf.reshape(v, [batch, 1, 1]) for v in (delta, contrast, saturation)
    )
    grey_mix = tf.constant(LUMA)[:, None] * tf.ones([1, 3])  # [3, 3]: row i = LUMA[i]
    blend = saturation * tf.eye(3) + (1.0 - saturation) * grey_mix  # C, [B, 3, 3]
    if means is None:
        means = tf.reduce_mean(images, axis=[1, 2])
    mean = tf.reshape(means, [batch, 1, 3])  # m
    offset = tf.matmul((1.0 - contrast) * mean + delta, blend)  # [B, 1, 3]
    matrix = (contrast * blend)[:, None, None]  # [B, 1, 1, 3, 3]
    # x (f C) as three broadcast multiply-adds rather than a matmul with an inner size of 3,
    # so that under XLA it fuses with the offset, the clip and cutout into one pass.
    out = (
        images[..., 0:1] * matrix[..., 0, :]
        + images[..., 1:2] * matrix[..., 1, :]
        + images[..., 2:3] * matrix[..., 2, :]
        + offset[:, None]
    )
    return tf.clip_by_value(out, 0.0, 255.0)


def cutout(images: tf.Tensor, seed: tf.Tensor, coin_seed: tf.Tensor) -> tf.Tensor:
    """Zero one square of side CUTOUT_FRACTION x S at a random place in each image of
    [B, S, S, C], with probability CUTOUT_PROBABILITY per image."""
    batch, height, width = images.shape[0], images.shape[1], images.shape[2]
    side = max(1, int(round(min(height, width) * CUTOUT_FRACTION)))
    corner = tf.random.stateless_uniform([batch, 2], seed, minval=0, maxval=2**30, dtype=tf.int32)
    corner = corner % tf.constant([height - side + 1, width - side + 1])
    apply = tf.cast(
        tf.random.stateless_uniform([batch, 1], coin_seed) < CUTOUT_PROBABILITY, images.dtype
    )
    rows = tf.range(height)[None, :]
    cols = tf.range(width)[None, :]
    in_rows = tf.cast((rows >= corner[:, :1]) & (rows < corner[:, :1] + side), images.dtype) * apply
    in_cols = tf.cast((cols >= corner[:, 1:]) & (cols < corner[:, 1:] + side), images.dtype)
    keep = 1.0 - in_rows[:, :, None, None] * in_cols[:, None, :, None]  # [B, S, S, 1]
    return images * keep


@tf.function(jit_compile=True)
def augment_batch(images: tf.Tensor, seed: tf.Tensor, means: tf.Tensor | None = None) -> tf.Tensor:
    """Colour jitter then cutout of a batch float32 [B, S, S, 3] in [0, 255]; same shape.
    Parameters are drawn per image, but each op runs once on the whole batch. means: float32
    [B, 3] channel means of the images, when known (see `apply_colour`).

    Compiled with XLA (also inside tf.data, on the host CPU): the colour matrix, the clip and
    the cutout mask fuse into one pass over the batch instead of about five (bench/README.md,
    pipeline)."""
    jitter_seed, cut_seed, coin_seed = tf.unstack(
        tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=3)
    )
    return cutout(colour_jitter(images, jitter_seed, means), cut_seed, coin_seed)


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


def _albumentations_compose(image_size: int, area_min: float):
    """The albumentations recipe matching the in-graph one (one instance per thread)."""
    composes = getattr(_local, "composes", None)
    if composes is None:
        composes = _local.composes = {}
    if (image_size, area_min) not in composes:
        import albumentations as A

        hole = max(1, int(round(image_size * CUTOUT_FRACTION)))
        composes[image_size, area_min] = A.Compose(
            [
                A.RandomResizedCrop(
                    (image_size, image_size), scale=(area_min, 1.0), ratio=ASPECT_RANGE
                ),
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
    return composes[image_size, area_min]


def _albumentations_numpy(image, seed, image_size, area_min):
    compose = _albumentations_compose(int(image_size), float(area_min))
    compose.set_random_seed(int(seed[0]) % (2**32))
    return compose(image=image)["image"]


def albumentations_augment(
    image_uint8: tf.Tensor, image_size: int, seed: tf.Tensor, area_min: float = AREA_MIN
) -> tf.Tensor:
    """uint8 [H, W, 3] -> float32 [S, S, 3] through albumentations on the host (CPU/GPU only)."""
    out = tf.numpy_function(
        _albumentations_numpy,
        [image_uint8, seed, image_size, area_min],
        tf.uint8,
        stateful=True,
    )
    out = tf.ensure_shape(out, [image_size, image_size, 3])
    return tf.cast(out, tf.float32)
