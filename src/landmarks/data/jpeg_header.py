"""Read what the copy-through rule needs from a JPEG's markers, without Pillow or pixels.

The markers before the first scan (SOS) hold the frame size and component count (SOFn) and the
EXIF block (APP1 "Exif"). Walking them costs a few microseconds, against ~60 us for Pillow's
full header parse, which matters when a build copies thousands of JPEGs per second.

`read_jpeg_header(data)` is deliberately strict: it returns None for anything it is not sure
about (no SOF before the scan, odd segment lengths, an unreadable or repeated EXIF block, a
height defined later by a DNL marker, a multi-picture "MPF" block, which Pillow opens as format
MPO rather than JPEG), and the caller then asks Pillow, which decides and
reports errors as before. So the parser can only take the fast path for well-formed files; it
never changes what happens to the others.
"""

from __future__ import annotations

from dataclasses import dataclass

# Start-of-frame markers (baseline, extended, progressive, lossless; Huffman or arithmetic).
# 0xC4 (DHT), 0xC8 (JPG) and 0xCC (DAC) are not frames.
SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
SOS = 0xDA
EOI = 0xD9
APP1 = 0xE1
APP2 = 0xE2
MPF_PREFIX = b"MPF\x00"  # multi-picture format (camera JPEGs with previews appended)
STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])  # TEM, RST0-7: no length field
EXIF_PREFIX = b"Exif\x00\x00"
ORIENTATION_TAG = 0x0112


@dataclass(frozen=True)
class JpegHeader:
    height: int  # pixels, as stored (before any EXIF rotation)
    width: int
    components: int  # 3: colour (Pillow mode RGB), 1: grayscale, 4: CMYK/YCCK
    orientation: int  # EXIF orientation 1..8, or 0 when there is no EXIF block or tag


def read_jpeg_header(data: bytes) -> JpegHeader | None:
    """The frame and EXIF orientation of JPEG bytes, or None when unsure (see module doc)."""
    if not data.startswith(b"\xff\xd8"):
        return None
    position, frame, orientation, exif_blocks = 2, None, 0, 0
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
            continue
        if marker in STANDALONE:
            position += 2
            continue
        if marker == SOS:
            break
        if marker == EOI:
            return None
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        end = position + 2 + length
        if length < 2 or end > len(data):
            return None
        segment = data[position + 4 : end]
        if marker in SOF_MARKERS:
            if frame is not None or len(segment) < 6:
                return None
            height = int.from_bytes(segment[1:3], "big")
            width = int.from_bytes(segment[3:5], "big")
            frame = (height, width, segment[5])
        elif marker == APP2 and segment.startswith(MPF_PREFIX):
            return None
        elif marker == APP1 and segment.startswith(EXIF_PREFIX):
            exif_blocks += 1
            tag = _exif_orientation(segment[len(EXIF_PREFIX) :])
            if tag is None or exif_blocks > 1:
                return None
            orientation = tag
        position = end
    else:
        return None  # no scan: nothing to decode
    if frame is None or frame[0] == 0 or frame[1] == 0:
        return None
    return JpegHeader(frame[0], frame[1], frame[2], orientation)


def _exif_orientation(tiff: bytes) -> int | None:
    """Orientation tag of IFD0 of a TIFF-structured EXIF block: 0 when absent, None when the
    block cannot be read."""
    if tiff[:4] == b"II*\x00":
        order = "little"
    elif tiff[:4] == b"MM\x00*":
        order = "big"
    else:
        return None
    offset = int.from_bytes(tiff[4:8], order)
    if offset + 2 > len(tiff):
        return None
    count = int.from_bytes(tiff[offset : offset + 2], order)
    entries = offset + 2
    if entries + 12 * count > len(tiff):
        return None
    for entry in range(entries, entries + 12 * count, 12):
        if int.from_bytes(tiff[entry : entry + 2], order) != ORIENTATION_TAG:
            continue
        kind = int.from_bytes(tiff[entry + 2 : entry + 4], order)
        values = int.from_bytes(tiff[entry + 4 : entry + 8], order)
        if kind != 3 or values != 1:  # SHORT, one value
            return None
        return int.from_bytes(tiff[entry + 8 : entry + 10], order)
    return 0
