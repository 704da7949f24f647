"""Read the files stored in a Qt binary resource file (`.rcc`, as written by `rcc -binary`).

Layout (all integers big-endian):

    header   b"qres", version (u32: 1, 2 or 3), tree offset, data offset, names offset (u32 each),
             and from version 3 on the overall flags (u32)
    tree     fixed-size entries (14 bytes in version 1, 22 bytes from version 2 on: the extra 8
             bytes hold the last-modified time), entry 0 being the root directory:
               name offset (u32), flags (u16),
               directory (flags & 2): child count (u32), index of the first child entry (u32)
               file:                  country (u16), language (u16), data offset (u32)
    names    at a name offset: length in UTF-16 units (u16), hash (u32), UTF-16-BE name
    data     at a data offset: size in bytes (u32), then the bytes. A zlib-compressed file
             (flags & 1) starts with its uncompressed size (u32) followed by a zlib stream; a
             zstd-compressed file (flags & 4, Qt >= 5.13) is one zstd frame.

Only what the files of interest actually use is supported: stored and zlib entries. A zstd entry
or any other flag raises DataError naming the file and the entry rather than returning garbage.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path

from landmarks.errors import DataError

MAGIC = b"qres"
FLAG_COMPRESSED = 0x01
FLAG_DIRECTORY = 0x02
FLAG_COMPRESSED_ZSTD = 0x04
_KNOWN_FLAGS = FLAG_COMPRESSED | FLAG_DIRECTORY | FLAG_COMPRESSED_ZSTD


class _Reader:
    """Bounds-checked big-endian reads from one rcc file held in memory."""

    def __init__(self, blob: bytes, source: str):
        self.blob = blob
        self.source = source

    def fail(self, what: str) -> DataError:
        return DataError(f"{self.source}: corrupt Qt resource file: {what}")

    def take(self, offset: int, size: int, what: str) -> bytes:
        if offset < 0 or size < 0 or offset + size > len(self.blob):
            raise self.fail(
                f"{what} at byte {offset} (+{size}) lies outside the file ({len(self.blob)} bytes)"
            )
        return self.blob[offset : offset + size]

    def u16(self, offset: int, what: str) -> int:
        return struct.unpack(">H", self.take(offset, 2, what))[0]

    def u32(self, offset: int, what: str) -> int:
        return struct.unpack(">I", self.take(offset, 4, what))[0]


def read_rcc(path: str | Path, include: Callable[[str], bool] | None = None) -> dict[str, bytes]:
    """Files stored in the rcc file at `path`, as {resource path: uncompressed bytes}.

    Resource paths are joined with "/" and have no leading slash, e.g.
    "gcompris/src/activities/erase/resource/kitten.webp". `include(path) -> bool` selects the
    files to decompress (default: all). Raises DataError naming `path` when the file is not a
    Qt resource file, is truncated or inconsistent, or uses a compression this reader lacks.
    """
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read Qt resource file: {error}") from error
    return parse_rcc(blob, source=str(path), include=include)


def parse_rcc(
    blob: bytes, source: str = "<rcc>", include: Callable[[str], bool] | None = None
) -> dict[str, bytes]:
    """Like `read_rcc`, on the bytes of an rcc file; `source` names it in error messages."""
    reader = _Reader(blob, source)
    if reader.take(0, 4, "magic") != MAGIC:
        raise reader.fail(f"magic is {blob[:4]!r}, expected {MAGIC!r}")
    version = reader.u32(4, "format version")
    if version not in (1, 2, 3):
        raise reader.fail(f"unknown format version {version} (known: 1, 2, 3)")
    tree = reader.u32(8, "tree offset")
    data = reader.u32(12, "data offset")
    names = reader.u32(16, "names offset")
    entry_size = 14 if version == 1 else 22

    files: dict[str, bytes] = {}
    visited: set[int] = set()
    pending = [(0, "")]  # (tree entry index, parent path)
    while pending:
        index, parent = pending.pop()
        if index in visited:
            raise reader.fail(f"tree entry {index} is reached twice (a cycle in the tree)")
        visited.add(index)
        entry = tree + index * entry_size
        name_offset = reader.u32(entry, f"tree entry {index}")
        flags = reader.u16(entry + 4, f"flags of tree entry {index}")
        if flags & ~_KNOWN_FLAGS:
            raise reader.fail(f"tree entry {index} has unknown flags 0x{flags:04x}")
        name = "" if index == 0 else _read_name(reader, names + name_offset, index)
        resource = f"{parent}/{name}" if parent else name
        if flags & FLAG_DIRECTORY:
            count = reader.u32(entry + 6, f"child count of tree entry {index}")
            first = reader.u32(entry + 10, f"first child of tree entry {index}")
            if count:
                last = tree + (first + count - 1) * entry_size
                reader.take(last, entry_size, f"last child of {resource!r}")
            pending.extend((first + child, resource) for child in reversed(range(count)))
            continue
        if index == 0:
            raise reader.fail("the root tree entry is not a directory")
        if include is not None and not include(resource):
            continue
        data_offset = reader.u32(entry + 10, f"data offset of {resource!r}")
        size = reader.u32(data + data_offset, f"size of {resource!r}")
        stored = reader.take(data + data_offset + 4, size, f"data of {resource!r}")
        files[resource] = _decode(reader, resource, flags, stored)
    return files


def _read_name(reader: _Reader, offset: int, index: int) -> str:
    length = reader.u16(offset, f"name of tree entry {index}")
    raw = reader.take(offset + 6, 2 * length, f"name of tree entry {index}")
    try:
        return raw.decode("utf-16-be")
    except UnicodeDecodeError as error:
        raise reader.fail(f"name of tree entry {index} is not UTF-16: {error}") from error


def _decode(reader: _Reader, resource: str, flags: int, stored: bytes) -> bytes:
    if flags & FLAG_COMPRESSED_ZSTD:
        raise DataError(
            f"{reader.source}: entry {resource!r} is zstd-compressed (flag 4), which this reader "
            "does not support; rebuild the file with `rcc --compress-algo zlib`"
        )
    if not flags & FLAG_COMPRESSED:
        return stored
    if len(stored) < 4:
        raise reader.fail(f"compressed entry {resource!r} is shorter than its size prefix")
    expected = struct.unpack(">I", stored[:4])[0]
    try:
        content = zlib.decompress(stored[4:])
    except zlib.error as error:
        raise reader.fail(f"zlib stream of {resource!r} is damaged: {error}") from error
    if len(content) != expected:
        raise reader.fail(
            f"{resource!r} inflates to {len(content)} bytes but its header says {expected}"
        )
    return content
