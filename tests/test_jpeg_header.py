"""read_jpeg_header against Pillow (the reference) on JPEGs of every kind the builder meets, and
its refusals: whatever it is unsure about goes back to Pillow; scan_data_problem against
TensorFlow's decoder (what reads the records) on sound and damaged scan data."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image
from records_helpers import jpeg_bytes, picture

from landmarks.data import images as images_module
from landmarks.data.images import encode_image
from landmarks.data.jpeg_header import read_jpeg_header, scan_data_problem

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


# --- the entropy-coded scan data ----------------------------------------------------------------


def _scan_start(data: bytes) -> int:
    """Offset just after the first SOS segment (the first byte of entropy-coded data)."""
    sos = data.index(b"\xff\xda")
    return sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")


def _tf_decodes(data: bytes) -> bool:
    import tensorflow as tf

    try:
        tf.io.decode_jpeg(data, channels=3)
    except tf.errors.InvalidArgumentError:
        return False
    return True


def test_random_bytes_in_place_of_the_scan_data_are_always_found():
    """Issue 16 B1: a valid header and end marker around random scan data. TensorFlow's
    decoder (the reference: it is what reads the records) rejects every such file; the check
    must find every one, or prepare would copy it through."""
    good = _save(picture(96, 64, seed=9))
    start = _scan_start(good)
    for seed in range(120):
        noise = np.random.default_rng(seed).integers(0, 256, 2000, dtype=np.uint8).tobytes()
        corrupt = good[:start] + noise + b"\xff\xd9"
        assert read_jpeg_header(corrupt) is not None  # the header alone looks fine
        assert not _tf_decodes(corrupt)
        assert scan_data_problem(corrupt) is not None, seed


@pytest.mark.parametrize("name", list(CASES))
def test_sound_scan_data_passes(name):
    assert scan_data_problem(CASES[name]) is None and _tf_decodes(CASES[name])


def test_every_mini_landmarks_photo_passes(mini_landmarks):
    """No false alarm on 780 real JPEGs (camera photos re-saved by the demo builder: 444 train,
    179 index, 157 test)."""
    paths = sorted(mini_landmarks.glob("*/*/*/*/*.jpg"))
    assert len(paths) > 700
    assert [p.name for p in paths if scan_data_problem(p.read_bytes())] == []


def _with_restarts(pixels: np.ndarray) -> bytes:
    """A JPEG with a restart marker after every MCU row (libjpeg's restart_marker_rows)."""
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", restart_marker_rows=1)
    return out.getvalue()


def test_restart_markers_in_sequence_pass_and_out_of_sequence_fail():
    data = _with_restarts(picture(64, 64, seed=10))
    assert b"\xff\xd0" in data[_scan_start(data) :] and scan_data_problem(data) is None
    first = data.index(b"\xff\xd0", _scan_start(data))
    swapped = data[:first] + b"\xff\xd3" + data[first + 2 :]
    assert "RST3 out of sequence" in scan_data_problem(swapped)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d, s: d[:s] + b"\x12\x34\xff\x3f\x00" + d[s:], "marker 0x3f inside the scan"),
        (lambda d, s: d[:s] + b"\xff\xc4\x00\x05\x77\x00\x00" + d[s:], "malformed 0xc4 segment"),
        (lambda d, s: d[:-2], "no end-of-image marker"),
        (lambda d, s: d[: d.index(b"\xff\xda")] + b"\xff\xd9", "no scan"),
    ],
    ids=["bad-marker", "bad-huffman-table", "no-eoi", "no-sos"],
)
def test_each_kind_of_damage_is_named(damage, message):
    good = _save(picture(40, 40, seed=11))
    assert message in scan_data_problem(damage(good, _scan_start(good)))
