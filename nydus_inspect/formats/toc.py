"""The blob table of contents (``rafs.blob.toc``): 128-byte entries naming each section.

Layout (all little-endian): flags u32 (compressor), reserved u32, name[16],
sha256 of the uncompressed bytes [32], compressed_offset u64, compressed_size
u64, uncompressed_size u64, reserved[48]. Blobs built before 2023-02 may hold
garbage in bytes 124..127 of each entry; readers ignore the reserved area.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..codecs import Compressor
from ..errors import FormatError
from . import tar_header
from ._struct import Layout, cstr

ENTRY = Layout(
    "toc entry",
    [
        ("flags", "I"),
        ("_reserved1", "4x"),
        ("name", "16s"),
        ("uncompressed_digest", "32s"),
        ("compressed_offset", "Q"),
        ("compressed_size", "Q"),
        ("uncompressed_size", "Q"),
        ("_reserved2", "48x"),
    ],
)
ENTRY_SIZE = ENTRY.size  # 128
COMPRESSOR_MASK = 0xF
#: The snapshotter refuses a ToC over 1 MiB; so do we.
MAX_TOC_SIZE = 1 << 20


@dataclass(frozen=True)
class TocEntry:
    """One 128-byte entry of a blob's ToC (rafs.blob.toc)."""

    name: str
    compressor: Compressor
    uncompressed_digest: bytes
    compressed_offset: int
    compressed_size: int
    uncompressed_size: int
    flags: int = 0

    def build(self) -> bytes:
        return ENTRY.pack(
            {
                "flags": self.compressor.toc_flag,
                "name": self.name.encode(),
                "uncompressed_digest": self.uncompressed_digest,
                "compressed_offset": self.compressed_offset,
                "compressed_size": self.compressed_size,
                "uncompressed_size": self.uncompressed_size,
            }
        )

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "compressor": self.compressor.value,
            "compressed_offset": self.compressed_offset,
            "compressed_size": self.compressed_size,
            "uncompressed_size": self.uncompressed_size,
            "sha256": self.uncompressed_digest.hex(),
        }


def parse_entry(buf: bytes, offset: int = 0, base: int = 0) -> TocEntry:
    """Decode the entry at ``buf[offset:]``; ``base`` is the absolute offset of ``buf`` (for errors)."""
    fields = ENTRY.unpack(buf, offset)
    where = base + offset
    flags = fields["flags"]
    try:
        comp = Compressor.from_toc_flag(flags & COMPRESSOR_MASK)
    except ValueError:
        raise ENTRY.error("flags", where, "unknown compressor bits", flags) from None
    raw_name = cstr(fields["name"])
    try:
        name = raw_name.decode("ascii")
    except UnicodeDecodeError:
        raise ENTRY.error("name", where, "name is not ASCII", raw_name) from None
    return TocEntry(
        name=name,
        compressor=comp,
        uncompressed_digest=fields["uncompressed_digest"],
        compressed_offset=fields["compressed_offset"],
        compressed_size=fields["compressed_size"],
        uncompressed_size=fields["uncompressed_size"],
        flags=flags,
    )


def parse(buf: bytes, base: int = 0) -> list[TocEntry]:
    """Decode a whole ToC array (without its tar header)."""
    if len(buf) % ENTRY_SIZE:
        raise FormatError("rafs.blob.toc", "size is not a multiple of 128", offset=base, value=len(buf))
    if len(buf) > MAX_TOC_SIZE:
        raise FormatError("rafs.blob.toc", f"larger than {MAX_TOC_SIZE} bytes", offset=base, value=len(buf))
    return [parse_entry(buf, off, base) for off in range(0, len(buf), ENTRY_SIZE)]


def build(entries: list[TocEntry]) -> bytes:
    return b"".join(e.build() for e in entries)


def toc_digest(entries_bytes: bytes, header: bytes) -> bytes:
    """nydus's ToC digest: sha256 over the entries followed by their 512-byte tar header."""
    return hashlib.sha256(bytes(entries_bytes) + bytes(header)).digest()


def build_section(entries: list[TocEntry]) -> tuple[bytes, bytes]:
    """The ToC bytes plus their trailing tar header, ready to append to a blob."""
    data = build(entries)
    return data, tar_header.build(tar_header.RAFS_BLOB_TOC, len(data))
