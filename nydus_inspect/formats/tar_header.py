"""The 512-byte tar headers that follow each section of a nydus layer blob.

nydus writes old-GNU headers (magic ``"ustar "``, version ``" \\0"``) with
all-zero mode/uid/gid, an 11-digit size, a zero mtime and a 7-digit checksum.
:func:`build` reproduces them byte for byte; :func:`parse` reads them (and any
POSIX or GNU header a tar-walk may meet), checking the checksum.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import FormatError
from ._struct import cstr

BLOCK = 512
GNU_MAGIC = b"ustar  \0"  # magic "ustar " + version " \0"
USTAR_MAGIC = b"ustar\x0000"

#: Section names nydus writes into a layer blob, in file order.
IMAGE_BLOB = "image.blob"
BLOB_META = "blob.meta"
BLOB_META_HEADER = "blob.meta.header"
BLOB_DIGEST = "blob.digest"
IMAGE_BOOT = "image.boot"
RAFS_BLOB_TOC = "rafs.blob.toc"


@dataclass(frozen=True)
class TarHeader:
    """One of the tar headers that follow each section of a blob, decoded."""

    name: str
    size: int
    typeflag: bytes
    gnu: bool
    offset: int  # absolute offset of the header in the file (for messages)


def _octal(value: int, width: int) -> bytes:
    digits = width - 1
    text = format(value, "o").rjust(digits, "0").encode()
    if len(text) > digits:
        raise ValueError(f"{value} does not fit in a {width}-byte octal field")
    return text + b"\0"


def build(name: str, size: int) -> bytes:
    """The exact header nydus-image writes after a section named ``name`` of ``size`` bytes."""
    raw = name.encode()
    if len(raw) > 100:
        raise ValueError("section name longer than 100 bytes")
    hdr = bytearray(BLOCK)
    hdr[0 : len(raw)] = raw
    if size < 8 << 30:
        hdr[124:136] = _octal(size, 12)
    else:  # GNU base-256 for sizes of 8 GiB and more
        hdr[124] = 0x80
        hdr[128:136] = size.to_bytes(8, "big")
    hdr[136:148] = _octal(0, 12)
    hdr[156:157] = b"0"
    hdr[257:265] = GNU_MAGIC
    hdr[148:156] = b" " * 8
    hdr[148:156] = _octal(sum(hdr), 8)
    return bytes(hdr)


def _parse_number(field: bytes, name: str, offset: int) -> int:
    if field and field[0] & 0x80:  # GNU base-256
        value = int.from_bytes(field[1:], "big")
        return value
    text = field.replace(b"\0", b" ").strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise FormatError(
            "tar header", "not an octal number", field=name, offset=offset, value=bytes(field)
        ) from None


def checksum_ok(block: bytes) -> bool:
    stored = block[148:156].replace(b"\0", b" ").strip()
    try:
        want = int(stored, 8)
    except ValueError:
        return False
    unsigned = sum(block[:148]) + 8 * 0x20 + sum(block[156:BLOCK])
    return want == unsigned


def parse(block: bytes, offset: int = 0) -> TarHeader:
    """Decode one header; ``offset`` is where it sits in the file (used in errors)."""
    if len(block) < BLOCK:
        raise FormatError("tar header", f"truncated: {len(block)} of 512 bytes", offset=offset)
    block = bytes(block[:BLOCK])
    if not any(block):
        raise FormatError("tar header", "all-zero block where a header was expected", offset=offset)
    if not checksum_ok(block):
        raise FormatError(
            "tar header", "bad checksum", field="chksum", offset=offset + 148, value=block[148:156]
        )
    name_raw = cstr(block[0:100])
    try:
        name = name_raw.decode()
    except UnicodeDecodeError:
        name = name_raw.decode("latin-1")
    size = _parse_number(block[124:136], "size", offset + 124)
    return TarHeader(
        name=name,
        size=size,
        typeflag=block[156:157],
        gnu=block[257:265] == GNU_MAGIC,
        offset=offset,
    )
