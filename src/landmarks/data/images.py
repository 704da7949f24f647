"""Turn one image file into the JPEG bytes stored in a record, or say why it must be skipped.

No TensorFlow here except for reading gs:// paths, so that worker processes stay light.

What "no re-encoding needed" means (the copy-through rule): the file is a baseline or
progressive JPEG (magic bytes FF D8 FF) that Pillow reads as RGB (YCbCr JPEGs are reported as
RGB), has no EXIF orientation other than 1 ("as stored"), ends with the JPEG end-of-image marker
(so it is not truncated), holds well-formed entropy-coded scan data (`scan_data_problem`: no
marker that stops TensorFlow's decoder), and either no `max_side` is given or its longest side is at most
`max_side`. Such a file is stored byte for byte, without decoding its pixels; the decision is
read from the JPEG markers (`jpeg_header`) and left to Pillow only when they are unusual.
Anything else that Pillow can read (PNG or other formats under any name, CMYK, grayscale,
palette, EXIF-rotated, larger than `max_side`) is decoded, rotated upright, converted to RGB,
shrunk so that its longest side is `max_side` (aspect kept; never enlarged), and re-encoded as
JPEG.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from landmarks.data.jpeg_header import read_jpeg_header, scan_data_problem

JPEG_MAGIC = b"\xff\xd8\xff"
JPEG_END = b"\xff\xd9"
EXIF_ORIENTATION = 0x0112


class ImageSkipped(Exception):
    """An image that cannot be stored; the message is the reason written to the manifest."""


@dataclass(frozen=True)
class EncodedImage:
    """JPEG bytes ready for a record. `action` is "copied" (original bytes) or "reencoded";
    `changes` lists what re-encoding fixed: "resized", "converted:<format>/<mode>", "rotated"."""

    data: bytes
    height: int  # pixels, after any rotation and resize
    width: int
    action: str
    changes: tuple[str, ...] = ()


def read_file(path: str) -> bytes:
    """Bytes of a local or gs:// file; ImageSkipped("missing file") when it does not exist."""
    if "://" in path:
        import tensorflow as tf

        try:
            with tf.io.gfile.GFile(path, "rb") as handle:
                return handle.read()
        except tf.errors.NotFoundError as error:
            raise ImageSkipped("missing file") from error
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except (FileNotFoundError, IsADirectoryError) as error:
        raise ImageSkipped("missing file") from error


def encode_image(path: str, max_side: int | None = None, quality: int = 95) -> EncodedImage:
    """Read `path` and return the JPEG to store (see the module docstring for the rule).

    Raises ImageSkipped with a one-line reason for missing, empty, unreadable, corrupt or
    truncated files.
    """
    data = read_file(path)
    if not data:
        raise ImageSkipped("empty file (0 bytes)")
    header = read_jpeg_header(data)
    if (
        header is not None
        and header.components == 3
        and header.orientation in (0, 1)
        and (max_side is None or max(header.height, header.width) <= max_side)
        and header.height * header.width <= (Image.MAX_IMAGE_PIXELS or float("inf"))
    ):  # the copy-through rule decided from the markers alone (fast path)
        return _copied(data, header.height, header.width)
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as error:
        raise ImageSkipped("not an image (unrecognised content)") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageSkipped(f"{_damage(error)} image header: {error}") from error
    except Image.DecompressionBombError as error:
        raise ImageSkipped(f"too many pixels: {error}") from error

    orientation = _orientation(image)
    longest = max(image.size)
    if (
        data.startswith(JPEG_MAGIC)
        and image.format == "JPEG"
        and image.mode == "RGB"
        and orientation in (0, 1)
        and (max_side is None or longest <= max_side)
    ):
        width, height = image.size
        return _copied(data, height, width)
    return _reencode(image, orientation, max_side, quality)


def _copied(data: bytes, height: int, width: int) -> EncodedImage:
    """The original bytes, once they are seen to end with the end-of-image marker and to hold
    well-formed scan data (`scan_data_problem`: what makes TensorFlow's decoder fail)."""
    if not data.rstrip(b"\x00").endswith(JPEG_END):
        raise ImageSkipped("truncated JPEG (no end-of-image marker)")
    problem = scan_data_problem(data)
    if problem is not None:
        raise ImageSkipped(f"corrupt JPEG scan data: {problem}")
    return EncodedImage(data, height, width, "copied")


def _damage(error: Exception) -> str:
    """ "truncated" when Pillow says the data ended early, else "corrupt"."""
    return "truncated" if "truncat" in str(error).lower() else "corrupt"


def _orientation(image: Image.Image) -> int:
    """EXIF orientation tag (1..8), or 0 when there is none or the EXIF block is unreadable."""
    try:
        return int(image.getexif().get(EXIF_ORIENTATION, 0) or 0)
    except Exception:  # a broken EXIF block must not hide an otherwise good image
        return 0


def _reencode(
    image: Image.Image, orientation: int, max_side: int | None, quality: int
) -> EncodedImage:
    changes = []
    if image.format != "JPEG" or image.mode != "RGB":
        changes.append(f"converted:{image.format}/{image.mode}")
    needs_resize = max_side is not None and max(image.size) > max_side
    if needs_resize and image.format == "JPEG":
        # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when that still leaves >= max_side
        # pixels on both sides of the box (orientation-free because the box is square).
        image.draft(None, (max_side, max_side))
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageSkipped(f"{_damage(error)} image: {error}") from error
    if orientation not in (0, 1):
        image = ImageOps.exif_transpose(image)
        changes.append("rotated")
    if image.mode != "RGB":
        image = image.convert("RGB")
    if needs_resize:
        changes.append("resized")
        if max(image.size) > max_side:
            width, height = image.size
            scale = max_side / max(width, height)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    width, height = image.size
    return EncodedImage(out.getvalue(), height, width, "reencoded", tuple(changes))
