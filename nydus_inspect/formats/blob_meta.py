"""``blob.meta``: the compression-context header and the chunk-info arrays (v1 and v2).

The 4096-byte :class:`BlobMetaHeader` follows the (possibly compressed) array
of chunk infos. v1 records are 16 bytes (sizes stored minus one, 24 bits);
v2 records are 24 bytes with a flag byte and a data word (zran/batch/CRC32C).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import FormatError
from ._struct import Layout, Record, flag_names, need, round_up

MAGIC = 0xB10BB10B
HEADER_SIZE = 4096

# BlobFeatures bits (blob.meta header s_features and RAFS v6 blob table features).
ALIGNED = 0x1
INLINED_FS_META = 0x2
CHUNK_INFO_V2 = 0x4
ZRAN = 0x8
SEPARATE = 0x10
INLINED_CHUNK_DIGEST = 0x20
TARFS = 0x40
BATCH = 0x80
ENCRYPTED = 0x100
IS_CHUNKDICT_GENERATED = 0x200
IS_SEPARATED_WITH_PREFETCH_FILES = 0x400
EXTERNAL = 0x800
HAS_TAR_HEADER = 0x1000_0000
HAS_TOC = 0x2000_0000
CAP_TAR_TOC = 0x4000_0000
V5_NO_EXT_BLOB_TABLE = 0x8000_0000

FEATURE_NAMES = {
    ALIGNED: "aligned",
    INLINED_FS_META: "inlined_fs_meta",
    CHUNK_INFO_V2: "chunk_info_v2",
    ZRAN: "zran",
    SEPARATE: "separate",
    INLINED_CHUNK_DIGEST: "inlined_chunk_digest",
    TARFS: "tarfs",
    BATCH: "batch",
    ENCRYPTED: "encrypted",
    IS_CHUNKDICT_GENERATED: "chunkdict_generated",
    IS_SEPARATED_WITH_PREFETCH_FILES: "separated_with_prefetch_files",
    EXTERNAL: "external",
    HAS_TAR_HEADER: "has_tar_header",
    HAS_TOC: "has_toc",
    CAP_TAR_TOC: "cap_tar_toc",
    V5_NO_EXT_BLOB_TABLE: "v5_no_ext_blob_table",
}
#: Bits in the low half a v2.3 reader knows; any other low bit makes it refuse the blob.
KNOWN_LOW_FEATURES = 0x0FFF

#: Features of a default v2.3 ``tar-rafs --blob-inline-meta --features blob-toc`` layer.
DEFAULT_LAYER_FEATURES = (
    CAP_TAR_TOC | HAS_TOC | HAS_TAR_HEADER | INLINED_CHUNK_DIGEST | INLINED_FS_META | ALIGNED
)

HEADER = Layout(
    "blob.meta.header",
    [
        ("s_magic", "I"),
        ("s_features", "I"),
        ("s_ci_compressor", "I"),
        ("s_ci_entries", "I"),
        ("s_ci_offset", "Q"),
        ("s_ci_compressed_size", "Q"),
        ("s_ci_uncompressed_size", "Q"),
        ("s_ci_zran_offset", "Q"),
        ("s_ci_zran_size", "Q"),
        ("s_ci_zran_count", "I"),
        ("_reserved", "4032x"),
        ("s_magic2", "I"),
    ],
)

#: Chunk count limit of a blob (2^24).
MAX_CHUNKS = 1 << 24


def features_names(value: int) -> list[str]:
    return flag_names(value, FEATURE_NAMES)


@dataclass
class BlobMetaHeader(Record):
    """The 4096-byte header that follows a blob's chunk-info array."""

    LAYOUT = HEADER
    s_magic: int = MAGIC
    s_features: int = 0
    s_ci_compressor: int = 0
    s_ci_entries: int = 0
    s_ci_offset: int = 0
    s_ci_compressed_size: int = 0
    s_ci_uncompressed_size: int = 0
    s_ci_zran_offset: int = 0
    s_ci_zran_size: int = 0
    s_ci_zran_count: int = 0
    s_magic2: int = MAGIC

    @classmethod
    def parse(cls, buf: bytes, offset: int = 0, base: int = 0) -> BlobMetaHeader:
        hdr = cls(**HEADER.unpack(buf, offset))
        where = base + offset
        for name in ("s_magic", "s_magic2"):
            if getattr(hdr, name) != MAGIC:
                raise HEADER.error(name, where, f"bad magic, expected {MAGIC:#x}", getattr(hdr, name))
        if hdr.s_ci_compressor not in (0, 1, 2, 3):
            raise HEADER.error("s_ci_compressor", where, "unknown compressor", hdr.s_ci_compressor)
        if hdr.s_ci_entries > MAX_CHUNKS:
            raise HEADER.error("s_ci_entries", where, f"more than {MAX_CHUNKS} chunks", hdr.s_ci_entries)
        rec = hdr.record_size
        if hdr.s_ci_uncompressed_size < rec * hdr.s_ci_entries or (
            rec == 16 and hdr.s_ci_uncompressed_size != rec * hdr.s_ci_entries
        ):
            raise HEADER.error(
                "s_ci_uncompressed_size",
                where,
                f"does not fit {hdr.s_ci_entries} records of {rec} bytes",
                hdr.s_ci_uncompressed_size,
            )
        if hdr.s_features & 0xFFFF & ~KNOWN_LOW_FEATURES:
            raise HEADER.error("s_features", where, "unknown feature bits", hdr.s_features)
        return hdr

    @property
    def record_size(self) -> int:
        return 24 if self.s_features & CHUNK_INFO_V2 else 16

    def to_json(self) -> dict:
        from ..codecs import Compressor

        return {
            "magic": f"{self.s_magic:#x}",
            "features": f"{self.s_features:#x}",
            "features_names": features_names(self.s_features),
            "ci_compressor": Compressor.from_algo(self.s_ci_compressor).value,
            "ci_entries": self.s_ci_entries,
            "ci_offset": self.s_ci_offset,
            "ci_compressed_size": self.s_ci_compressed_size,
            "ci_uncompressed_size": self.s_ci_uncompressed_size,
            "ci_zran_offset": self.s_ci_zran_offset,
            "ci_zran_size": self.s_ci_zran_size,
            "ci_zran_count": self.s_ci_zran_count,
        }


# v2 chunk flags (top byte of the first word).
CI_COMPRESSED = 0x01
CI_ZRAN = 0x02
CI_BATCH = 0x04
CI_ENCRYPTED = 0x08
CI_HAS_CRC32 = 0x10
CI_KNOWN = 0x1F
CI_FLAG_NAMES = {
    CI_COMPRESSED: "compressed",
    CI_ZRAN: "zran",
    CI_BATCH: "batch",
    CI_ENCRYPTED: "encrypted",
    CI_HAS_CRC32: "crc32",
}

_U64X2 = struct.Struct("<QQ")
_U64X3 = struct.Struct("<QQQ")


@dataclass(frozen=True)
class ChunkInfo:
    """One chunk-info record of ``blob.meta`` (index = position in the array)."""

    index: int
    compressed_offset: int
    compressed_size: int
    uncompressed_offset: int
    uncompressed_size: int
    compressed: bool
    flags: int = 0  # v2 flag byte (v1: COMPRESSED derived from the sizes)
    data: int = 0  # v2 data word: zran/batch index and offset, or CRC32C

    @property
    def crc32(self) -> int | None:
        return self.data & 0xFFFFFFFF if self.flags & CI_HAS_CRC32 else None

    def to_json(self) -> dict:
        out = {
            "index": self.index,
            "compressed_offset": self.compressed_offset,
            "compressed_size": self.compressed_size,
            "uncompressed_offset": self.uncompressed_offset,
            "uncompressed_size": self.uncompressed_size,
            "compressed": self.compressed,
            "flags": flag_names(self.flags, CI_FLAG_NAMES),
        }
        if self.flags & CI_ZRAN:
            out["zran_index"], out["zran_offset"] = self.data >> 32, self.data & 0xFFFFFFFF
        if self.flags & CI_BATCH:
            out["batch_index"], out["batch_offset"] = self.data >> 32, self.data & 0xFFFFFFFF
        if self.flags & CI_HAS_CRC32:
            out["crc32"] = self.data & 0xFFFFFFFF
        return out


#: The bits of a v1 record's first word that hold the chunk's uncompressed offset.
V1_UNCOMPRESSED_OFFSET = 0xFFF_FFFF_F000


def decode_v1(index: int, uncomp: int, comp: int) -> ChunkInfo:
    usize = ((((uncomp >> 8) & 0xF) << 20) | ((uncomp >> 44) & 0xFFFFF)) + 1
    csize = ((((comp >> 40) & 0xF) << 20) | ((comp >> 44) & 0xFFFFF)) + 1
    return ChunkInfo(
        index=index,
        compressed_offset=comp & 0xFF_FFFF_FFFF,
        compressed_size=csize,
        uncompressed_offset=uncomp & V1_UNCOMPRESSED_OFFSET,
        uncompressed_size=usize,
        compressed=csize != usize,
        flags=CI_COMPRESSED if csize != usize else 0,
    )


def encode_v1(ci: ChunkInfo) -> bytes:
    return pack_v1(ci.compressed_offset, ci.compressed_size, ci.uncompressed_offset, ci.uncompressed_size)


def pack_v1(
    compressed_offset: int, compressed_size: int, uncompressed_offset: int, uncompressed_size: int
) -> bytes:
    """A v1 chunk-info record from its four numbers (v1 tells a compressed chunk by its sizes alone)."""
    if uncompressed_offset & 0xFFF:
        raise ValueError("v1 chunk info needs a 4K-aligned uncompressed offset")
    us, cs = uncompressed_size - 1, compressed_size - 1
    if not (0 <= us < 1 << 24 and 0 <= cs < 1 << 24):
        raise ValueError("chunk size out of range for v1 chunk info")
    if compressed_offset >= 1 << 40 or uncompressed_offset >= 1 << 44:
        raise ValueError("chunk offset out of range for v1 chunk info")
    uncomp = ((us >> 20) << 8) | uncompressed_offset | ((us & 0xFFFFF) << 44)
    comp = compressed_offset | ((cs >> 20) << 40) | ((cs & 0xFFFFF) << 44)
    return _U64X2.pack(uncomp, comp)


def decode_v2(index: int, uncomp: int, comp: int, data: int) -> ChunkInfo:
    flags = uncomp >> 56
    return ChunkInfo(
        index=index,
        compressed_offset=comp & 0xFF_FFFF_FFFF,
        compressed_size=comp >> 40,
        uncompressed_offset=(uncomp & 0xFFFFFFFF) << 12,
        uncompressed_size=((uncomp >> 32) & 0xFFFFFF) + 1,
        compressed=bool(flags & CI_COMPRESSED),
        flags=flags,
        data=data,
    )


def encode_v2(ci: ChunkInfo) -> bytes:
    flags = ci.flags | (CI_COMPRESSED if ci.compressed else 0)
    uncomp = (ci.uncompressed_offset >> 12) | ((ci.uncompressed_size - 1) << 32) | (flags << 56)
    comp = ci.compressed_offset | (ci.compressed_size << 40)
    return _U64X3.pack(uncomp, comp, ci.data)


def _record_index(index: int, count: int) -> int:
    """``index`` into records ``count`` long, counted from the end when negative, as a sequence's is."""
    if index < 0:
        index += count
    if not 0 <= index < count:
        raise IndexError(index)
    return index


class ChunkInfoArray:
    """The uncompressed chunk-info array, decoded record by record on access.

    ``base`` is the absolute offset of the array in the blob, for error messages.
    """

    def __init__(self, data: bytes, count: int, v2: bool, base: int = 0) -> None:
        self.record_size = 24 if v2 else 16
        need(data, 0, count * self.record_size, "blob.meta chunk-info array")
        self.data = data
        self.count = count
        self.v2 = v2
        self.base = base
        # ``data`` may be a view that reads its source by slice (chunks.source.SourceBytes), not a buffer:
        # a record is then sliced out before it is unpacked.
        try:
            memoryview(data)
            self._buffer = True
        except TypeError:
            self._buffer = False

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> ChunkInfo:
        index = _record_index(index, self.count)
        off = index * self.record_size
        data = self.data
        if not self._buffer:
            data, off = data[off : off + self.record_size], 0
        if self.v2:
            ci = decode_v2(index, *_U64X3.unpack_from(data, off))
            if ci.flags & ~CI_KNOWN:
                raise FormatError(
                    "chunk info v2",
                    "unknown flag bits",
                    field="flags",
                    offset=self.base + off + 7,
                    value=ci.flags,
                )
            return ci
        return decode_v1(index, *_U64X2.unpack_from(data, off))

    def __iter__(self):
        for i in range(self.count):
            yield self[i]


class DigestArray:
    """The blob.digest section: a 32-byte digest per chunk info, sliced out on access (a list of them held
    an object of 65 bytes and a list slot per chunk)."""

    SIZE = 32

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.count = len(data) // self.SIZE

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> bytes:
        index = _record_index(index, self.count)
        return self.data[index * self.SIZE : (index + 1) * self.SIZE]

    def __iter__(self):
        for i in range(self.count):
            yield self[i]


def build_array(infos: list[ChunkInfo], v2: bool = False) -> bytes:
    enc = encode_v2 if v2 else encode_v1
    return b"".join(enc(ci) for ci in infos)


def cache_file_size(ci_uncompressed_size: int) -> int:
    """Size of the ``<blob_id>.blob.meta`` cache-file form: data padded to 4K, then the header."""
    return round_up(ci_uncompressed_size, 4096) + HEADER_SIZE


# ---------------------------------------------------------------------------- batch contexts
#: One batch's record, after the chunk-info records of a BATCH blob's blob.meta (s_ci_zran_offset, _count
#: name them there, as for zran): compressed size of the whole batch, its decoded size, 24 reserved bytes.
BATCH_CONTEXT = struct.Struct("<II32x")
#: The largest batch nydus decodes (RAFS_MAX_CHUNK_SIZE).
MAX_BATCH = 1 << 24


def parse_batch_contexts(data, offset: int, count: int, base: int = 0) -> list[tuple[int, int]]:
    """(compressed size, decoded size) of each batch: ``count`` records from ``offset`` of the decoded
    chunk-info area ``data`` (``base``: its offset in the blob, for messages). A batch is stored as is when
    both sizes are equal, else compressed with the blob's compressor."""
    size = count * BATCH_CONTEXT.size
    if offset < 0 or count < 0 or offset + size > len(data):
        raise FormatError(
            "blob.meta batch contexts",
            f"{count} batch records at {offset} run past the {len(data)}-byte chunk-info area",
            field="s_ci_zran_offset",
            offset=base,
            value=offset,
        )
    out = []
    for i, (csize, usize) in enumerate(BATCH_CONTEXT.iter_unpack(bytes(data[offset : offset + size]))):
        if not 0 < csize <= usize <= MAX_BATCH:
            raise FormatError(
                "blob.meta batch context",
                f"batch {i}: compressed size {csize} and decoded size {usize} (must be 0 < compressed <= "
                f"decoded <= {MAX_BATCH})",
                offset=base + offset + i * BATCH_CONTEXT.size,
                value=csize,
            )
        out.append((csize, usize))
    return out
