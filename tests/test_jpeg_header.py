"""read_jpeg_header against Pillow (the reference) on JPEGs of every kind the builder meets, and
its refusals: whatever it is unsure about goes back to Pillow."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image
from records_helpers import jpeg_bytes, picture

from landmarks.data import images as images_module
from landmarks.data.images import encode_image
from landmarks.data.jpeg_header import read_jpeg_header

PIL_COMPONENTS = {"RGB": 3, "L": 1, "CMYK": 4}


def _pillow_view(data: bytes) -> tuple[int, int, int, int]:
    image = Image.open(io.BytesIO(data))
    return (
        image.height,
        image.width,
        PIL_COMPONENTS[image.mode],
        int(image.getexif().get(0x0112, 0)),
    )


def _save(pixels: np.ndarray, mode: str = "RGB", **options) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(out, format="JPEG", **options)
    return out.getvalue()


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "camera maker"  # a second tag, so the orientation is not the only entry
    return exif


CASES = {
    "baseline": _save(picture(37, 21)),
    "progressive": _save(picture(64, 48, seed=1), progressive=True),
    "grayscale": _save(picture(30, 40, seed=2), "L"),
    "cmyk": _save(picture(30, 20, seed=3), "CMYK"),
    "subsampling-444": _save(picture(33, 17, seed=4), subsampling=0),
    "exif-without-orientation": _save(picture(20, 20, seed=5), exif=Image.Exif()),
    **{
        f"exif-orientation-{value}": _save(picture(24, 16, seed=6), exif=_exif(value))
        for value in range(1, 9)
    },
}


@pytest.mark.parametrize("name", list(CASES))
def test_header_matches_pillow(name):
    header = read_jpeg_header(CASES[name])
    assert header is not None
    got = (header.height, header.width, header.components, header.orientation)
    assert got == _pillow_view(CASES[name])


def _hand_made_exif_jpeg(orientation: int, byte_order: str = "<") -> bytes:
    """A JPEG whose APP1 block is written here, in Intel ("<", little-endian; Pillow writes
    Motorola) or Motorola (">") byte order."""
    magic = b"II*\x00" if byte_order == "<" else b"MM\x00*"
    tiff = magic + struct.pack(byte_order + "I", 8) + struct.pack(byte_order + "H", 1)
    tiff += struct.pack(byte_order + "HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff += struct.pack(byte_order + "I", 0)
    segment = b"Exif\x00\x00" + tiff
    app1 = b"\xff\xe1" + struct.pack(">H", len(segment) + 2) + segment
    plain = _save(picture(18, 26, seed=7))
    return plain[:2] + app1 + plain[2:]


@pytest.mark.parametrize("byte_order", ["<", ">"])
def test_exif_in_either_byte_order_and_fill_bytes_match_pillow(byte_order):
    data = _hand_made_exif_jpeg(6, byte_order)
    assert _pillow_view(data)[3] == 6
    header = read_jpeg_header(data)
    assert (header.height, header.width, header.components, header.orientation) == (
        _pillow_view(data)
    )
    # Fill bytes (0xFF runs) may precede any marker.
    filled = data[:2] + b"\xff\xff\xff" + data[2:]
    assert read_jpeg_header(filled) == header


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
        b"\xff\xd8\xff\xe0" + b"\x00" * 40,  # a segment length of 0
        CASES["baseline"][:40],  # ends inside the header
        CASES["baseline"][:2] + b"\xff\xd9",  # end of image before any frame
        CASES["baseline"][:2] + CASES["baseline"][2:].replace(b"\xff\xc0", b"\xff\xfe", 1),
        _save(picture(20, 20, seed=8), exif=_exif(3)).replace(b"MM\x00*", b"XX\x00*", 1),
    ],
    ids=["empty", "png", "zero-length", "cut-header", "no-frame", "sof-renamed", "bad-exif"],
)
def test_unsure_input_is_left_to_pillow(data):
    assert read_jpeg_header(data) is None


def test_multi_picture_jpeg_is_left_to_pillow():
    # Pillow opens a JPEG with an APP2 "MPF" block as format MPO, which the builder re-encodes;
    # the fast path must not copy it instead.
    segment = b"MPF\x00" + b"\x00" * 8
    plain = CASES["baseline"]
    data = plain[:2] + b"\xff\xe2" + struct.pack(">H", len(segment) + 2) + segment + plain[2:]
    assert read_jpeg_header(data) is None


def test_repeated_exif_block_is_left_to_pillow():
    data = _hand_made_exif_jpeg(1)
    app1_length = struct.unpack(">H", data[4:6])[0]
    twice = data[: 4 + app1_length] + data[2 : 4 + app1_length] + data[4 + app1_length :]
    assert read_jpeg_header(twice) is None


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("max_side", [None, 30])
def test_encode_image_is_the_same_with_and_without_the_fast_path(
    tmp_path, monkeypatch, name, max_side
):
    path = tmp_path / "image.jpg"
    path.write_bytes(CASES[name])
    fast = encode_image(str(path), max_side=max_side)
    monkeypatch.setattr(images_module, "read_jpeg_header", lambda data: None)
    slow = encode_image(str(path), max_side=max_side)
    assert fast == slow


def test_fast_path_still_refuses_a_truncated_jpeg(tmp_path):
    data = jpeg_bytes(picture(60, 40, seed=9))
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) - 200])
    assert read_jpeg_header(path.read_bytes()) is not None  # the header itself is whole
    with pytest.raises(images_module.ImageSkipped, match="truncated JPEG"):
        encode_image(str(path))
