"""Read what the copy-through rule needs from a JPEG's markers, without Pillow or pixels.

Two checks: `read_jpeg_header` (frame size, components, EXIF orientation: the markers before
the first scan) and `scan_data_problem` (the entropy-coded data of every scan is well formed).

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

import re
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
    frame, orientation, exif_blocks = None, 0, 0
    for position, marker in _header_segments(data):
        if marker == SOS:
            break
        if marker == EOI:
            return None
        segment = _segment_body(data, position)
        if segment is None:
            return None
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
    else:
        return None  # no scan (or not a marker where one belongs): nothing to decode
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


# --- the entropy-coded data ---------------------------------------------------------------------

# 0xFF followed by a byte other than 0x00 (a stuffed data byte): a marker, or a fill byte (FF FF).
_MARKER_IN_SCAN = re.compile(rb"\xff[^\x00]")
RST_MARKERS = range(0xD0, 0xD8)
DHT, DQT, DRI, DAC, DNL, COM = 0xC4, 0xDB, 0xDD, 0xCC, 0xDC, 0xFE
APP_MARKERS = range(0xE0, 0xF0)
BETWEEN_SCANS = frozenset([DHT, DQT, DRI, DAC, DNL, COM, SOS, *APP_MARKERS])


def scan_data_problem(data: bytes) -> str | None:
    """Why the scans of JPEG `data` cannot be decoded as they are, or None when they are sound.

    libjpeg (TensorFlow's decoder) stops with "Invalid JPEG data" when the entropy-coded data of
    a scan holds a marker that cannot be there; random bytes in place of the scan data always
    hold such markers (about one 0xFF in 256 bytes, almost never followed by a legal byte).
    This walk checks, from the first scan to the end-of-image marker, that every 0xFF in the
    entropy-coded data is a stuffed byte (FF 00), a fill byte, a restart marker in sequence
    (RST0..RST7 cyclically, when a restart interval is set) or a marker that may sit between
    scans (DHT, DQT, DRI, DAC, DNL, COM, APPn, SOS) whose segment is well formed, and that an
    EOI ends the image. Corruption that keeps the markers legal (flipped bits) decodes, as
    garbage, in libjpeg and Pillow alike, and is not what this checks. Cost: one regular
    expression pass over the scan data (C speed), no pixels.
    """
    start, restart_interval = _first_scan(data)
    if start is None:
        return "no scan (SOS) in the markers"
    position, next_restart = _segment_end(data, start, SOS), 0
    if position is None:
        return "malformed scan header (SOS)"
    while True:
        found = _MARKER_IN_SCAN.search(data, position)
        if found is None:
            return "no end-of-image marker after the scan data"
        at = found.start()
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte: the marker starts at the next 0xFF
            position = at + 1
            continue
        if marker in RST_MARKERS:
            if restart_interval and marker - 0xD0 != next_restart:
                return f"restart marker RST{marker - 0xD0} out of sequence at byte {at}"
            next_restart = (next_restart + 1) % 8
            position = found.end()
            continue
        if marker == EOI:
            return None
        if marker not in BETWEEN_SCANS:
            return f"marker 0x{marker:02x} inside the scan data at byte {at}"
        end = _segment_end(data, at, marker)
        if end is None:
            return f"malformed 0x{marker:02x} segment inside the scan data at byte {at}"
        if marker == DRI:
            restart_interval = int.from_bytes(data[at + 4 : at + 6], "big")
        if marker == SOS:
            next_restart = 0
        position = end


def _first_scan(data: bytes) -> tuple[int | None, int]:
    """Byte offset of the first SOS marker (None when there is none) and the restart interval
    a DRI segment before it sets (0 = none), walking the segments before the scan."""
    interval = 0
    for position, marker in _header_segments(data):
        if marker == SOS:
            return position, interval
        if marker == DRI:
            interval = int.from_bytes(data[position + 4 : position + 6], "big")
    return None, interval


def _header_segments(data: bytes):
    """Walk the marker segments of JPEG bytes before the scan: yield (offset, marker) of each
    marker that has a length field, the first SOS last; fill bytes and standalone markers are
    skipped. Ends early at a byte that is not a marker or with fewer than 4 bytes left; the
    caller checks the segment lengths and may stop at any time."""
    position = 2
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
        elif marker in STANDALONE:
            position += 2
        else:
            yield position, marker
            if marker == SOS:
                return
            position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")


def _segment_end(data: bytes, at: int, marker: int) -> int | None:
    """End offset of the marker segment at `at` when its length field and (for the segments
    whose layout is fixed) its content are consistent; None when malformed."""
    body = _segment_body(data, at)
    if body is None:
        return None
    length = 2 + len(body)  # the length field counts itself
    if marker == SOS:
        ok = len(body) >= 1 and 1 <= body[0] <= 4 and length == 6 + 2 * body[0]
    elif marker == DHT:
        ok = _tables_fit(body, _huffman_table_size)
    elif marker == DQT:
        ok = _tables_fit(body, _quantisation_table_size)
    elif marker in (DRI, DNL):
        ok = length == 4
    elif marker == DAC:
        ok = len(body) % 2 == 0
    else:  # COM, APPn: free content
        ok = True
    return at + 2 + length if ok else None


def _segment_body(data: bytes, at: int) -> bytes | None:
    """The content of the marker segment at `at` (what follows its 2-byte length field); None
    when the length field is cut off, below 2 or runs past the data."""
    if at + 4 > len(data):
        return None
    length = int.from_bytes(data[at + 2 : at + 4], "big")
    if length < 2 or at + 2 + length > len(data):
        return None
    return data[at + 4 : at + 2 + length]


def _tables_fit(body: bytes, table_size) -> bool:
    """True when `body` is a whole number of tables, each of the size `table_size` reads."""
    position = 0
    while position < len(body):
        size = table_size(body, position)
        if size is None:
            return False
        position += size
    return position == len(body) and len(body) > 0


def _huffman_table_size(body: bytes, position: int) -> int | None:
    """Bytes of the DHT table at `position`: class/id byte, 16 code counts, the symbols."""
    if position + 17 > len(body) or body[position] >> 4 > 1 or body[position] & 0x0F > 3:
        return None
    symbols = sum(body[position + 1 : position + 17])
    return 17 + symbols if symbols <= 256 else None


def _quantisation_table_size(body: bytes, position: int) -> int | None:
    """Bytes of the DQT table at `position`: precision/id byte, 64 values of 1 or 2 bytes."""
    precision, table = body[position] >> 4, body[position] & 0x0F
    if precision > 1 or table > 3:
        return None
    return 1 + 64 * (precision + 1)
