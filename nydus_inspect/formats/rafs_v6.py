"""RAFS v6: EROFS-compatible metadata with nydus's extended superblock, blob table and chunk table.

Layout of a bootstrap (see docs/nydus-format.md section 5)::

    0      1024        1152            1408           4K-aligned
    | zero | EROFS sb  | RAFS ext sb   | device slots | blob table | prefetch | meta area ...
                                                                             ^ meta_blkaddr*4096
Inodes live at ``meta_blkaddr*4096 + 32*nid``; the root is nid 128.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import NamedTuple

from ..codecs import Compressor
from ..digests import Digester
from ..errors import FormatError
from . import blob_meta
from ._struct import Layout, Record, cstr, flag_names, need

BLOCK_SIZE = 4096
EROFS_MAGIC = 0xE0F5E1E2
SUPERBLOCK_OFFSET = 1024
EXT_SUPERBLOCK_OFFSET = 1152
DEVICE_TABLE_OFFSET = 1408
DEVT_SLOTOFF = 11  # DEVICE_TABLE_OFFSET / 128
ROOT_NID = 128

FEATURE_COMPAT_RAFS_V6 = 0x4000_0000
FEATURE_INCOMPAT_CHUNKED_FILE = 0x4
FEATURE_INCOMPAT_DEVICE_TABLE = 0x8
FEATURE_INCOMPAT = FEATURE_INCOMPAT_CHUNKED_FILE | FEATURE_INCOMPAT_DEVICE_TABLE

# RafsSuperFlags (ext superblock s_flags).
COMPRESSION_NONE = 0x1
COMPRESSION_LZ4 = 0x2
HASH_BLAKE3 = 0x4
HASH_SHA256 = 0x8
EXPLICIT_UID_GID = 0x10
HAS_XATTR = 0x20
COMPRESSION_GZIP = 0x40
COMPRESSION_ZSTD = 0x80
INLINED_CHUNK_DIGEST = 0x100
TARFS_MODE = 0x200
ENCRYPTION_NONE = 0x0100_0000
ENCRYPTION_ASE_128_XTS = 0x0200_0000
SUPER_FLAG_NAMES = {
    COMPRESSION_NONE: "compression_none",
    COMPRESSION_LZ4: "compression_lz4_block",
    HASH_BLAKE3: "hash_blake3",
    HASH_SHA256: "hash_sha256",
    EXPLICIT_UID_GID: "explicit_uid_gid",
    HAS_XATTR: "has_xattr",
    COMPRESSION_GZIP: "compression_gzip",
    COMPRESSION_ZSTD: "compression_zstd",
    INLINED_CHUNK_DIGEST: "inlined_chunk_digest",
    TARFS_MODE: "tarfs_mode",
    ENCRYPTION_NONE: "encryption_none",
    ENCRYPTION_ASE_128_XTS: "encryption_aes_128_xts",
}
_COMPRESSION_BITS = {
    COMPRESSION_NONE: Compressor.NONE,
    COMPRESSION_LZ4: Compressor.LZ4_BLOCK,
    COMPRESSION_GZIP: Compressor.GZIP,
    COMPRESSION_ZSTD: Compressor.ZSTD,
}
_DIGEST_BITS = {HASH_BLAKE3: Digester.BLAKE3, HASH_SHA256: Digester.SHA256}

MIN_CHUNK_SIZE = 0x1000
MAX_CHUNK_SIZE = 0x100_0000


def super_flag_names(value: int) -> list[str]:
    return flag_names(value, SUPER_FLAG_NAMES)


SUPERBLOCK = Layout(
    "erofs superblock",
    [
        ("s_magic", "I"),
        ("s_checksum", "I"),
        ("s_feature_compat", "I"),
        ("s_blkszbits", "B"),
        ("s_extslots", "B"),
        ("s_root_nid", "H"),
        ("s_inos", "Q"),
        ("s_build_time", "Q"),
        ("s_build_time_nsec", "I"),
        ("s_blocks", "I"),
        ("s_meta_blkaddr", "I"),
        ("s_xattr_blkaddr", "I"),
        ("s_uuid", "16s"),
        ("s_volume_name", "16s"),
        ("s_feature_incompat", "I"),
        ("s_u", "H"),
        ("s_extra_devices", "H"),
        ("s_devt_slotoff", "H"),
        ("_reserved", "38x"),
    ],
)


@dataclass
class SuperBlock(Record):
    """The 128-byte EROFS superblock at offset 1024."""

    LAYOUT = SUPERBLOCK
    s_magic: int = EROFS_MAGIC
    s_checksum: int = 0
    s_feature_compat: int = FEATURE_COMPAT_RAFS_V6
    s_blkszbits: int = 12
    s_extslots: int = 0
    s_root_nid: int = ROOT_NID
    s_inos: int = 0
    s_build_time: int = 0
    s_build_time_nsec: int = 0
    s_blocks: int = 0
    s_meta_blkaddr: int = 0
    s_xattr_blkaddr: int = 0
    s_uuid: bytes = bytes(16)
    s_volume_name: bytes = bytes(16)
    s_feature_incompat: int = FEATURE_INCOMPAT
    s_u: int = 0
    s_extra_devices: int = 0
    s_devt_slotoff: int = DEVT_SLOTOFF

    @classmethod
    def parse(cls, buf, offset: int = SUPERBLOCK_OFFSET, *, rafs: bool = True) -> SuperBlock:
        """``rafs=False``: the EROFS part only (a plain EROFS image; formats.erofs checks its block size and
        features)."""
        sb = cls(**SUPERBLOCK.unpack(buf, offset))
        if sb.s_magic != EROFS_MAGIC:
            raise SUPERBLOCK.error(
                "s_magic", offset, f"not a RAFS v6 bootstrap, expected {EROFS_MAGIC:#x}", sb.s_magic
            )
        if not rafs:
            return sb
        if sb.s_blkszbits not in (9, 12):
            raise SUPERBLOCK.error(
                "s_blkszbits", offset, "block size must be 4096 (12) or 512 (9)", sb.s_blkszbits
            )
        if not sb.s_feature_compat & FEATURE_COMPAT_RAFS_V6:
            raise SUPERBLOCK.error(
                "s_feature_compat", offset, "RAFS v6 compat bit missing", sb.s_feature_compat
            )
        if sb.s_feature_incompat & ~FEATURE_INCOMPAT:
            raise SUPERBLOCK.error(
                "s_feature_incompat", offset, "unsupported EROFS features", sb.s_feature_incompat
            )
        if sb.s_extra_devices and sb.s_devt_slotoff != DEVT_SLOTOFF:
            raise SUPERBLOCK.error("s_devt_slotoff", offset, f"must be {DEVT_SLOTOFF}", sb.s_devt_slotoff)
        return sb


EXT_SUPERBLOCK = Layout(
    "rafs v6 ext superblock",
    [
        ("s_flags", "Q"),
        ("s_blob_table_offset", "Q"),
        ("s_blob_table_size", "I"),
        ("s_chunk_size", "I"),
        ("s_chunk_table_offset", "Q"),
        ("s_chunk_table_size", "Q"),
        ("s_prefetch_table_offset", "Q"),
        ("s_prefetch_table_size", "I"),
        ("s_padding", "I"),
        ("_reserved", "200x"),
    ],
)


@dataclass
class ExtSuperBlock(Record):
    """RAFS v6's 256-byte extended superblock, after the EROFS one."""

    LAYOUT = EXT_SUPERBLOCK
    s_flags: int = 0
    s_blob_table_offset: int = 0
    s_blob_table_size: int = 0
    s_chunk_size: int = 0x100000
    s_chunk_table_offset: int = 0
    s_chunk_table_size: int = 0
    s_prefetch_table_offset: int = 0
    s_prefetch_table_size: int = 0
    s_padding: int = 0

    @classmethod
    def parse(cls, buf, offset: int = EXT_SUPERBLOCK_OFFSET) -> ExtSuperBlock:
        ext = cls(**EXT_SUPERBLOCK.unpack(buf, offset))
        size = len(buf)
        comp_bits = [b for b in _COMPRESSION_BITS if ext.s_flags & b]
        if len(comp_bits) != 1:
            raise EXT_SUPERBLOCK.error("s_flags", offset, "needs exactly one compression flag", ext.s_flags)
        if len([b for b in _DIGEST_BITS if ext.s_flags & b]) != 1:
            raise EXT_SUPERBLOCK.error("s_flags", offset, "needs exactly one digest flag", ext.s_flags)
        cs = ext.s_chunk_size
        if cs & (cs - 1) or not MIN_CHUNK_SIZE <= cs <= MAX_CHUNK_SIZE:
            raise EXT_SUPERBLOCK.error("s_chunk_size", offset, "must be a power of 2 in 4 KiB..16 MiB", cs)
        if ext.s_blob_table_size:
            if ext.s_blob_table_offset % BLOCK_SIZE or ext.s_blob_table_offset < BLOCK_SIZE:
                raise EXT_SUPERBLOCK.error(
                    "s_blob_table_offset", offset, "must be 4K-aligned and >= 4096", ext.s_blob_table_offset
                )
            if ext.s_blob_table_size % BLOB_ENTRY.size:
                raise EXT_SUPERBLOCK.error(
                    "s_blob_table_size", offset, "not a multiple of 256", ext.s_blob_table_size
                )
            if ext.s_blob_table_offset + ext.s_blob_table_size > size:
                raise EXT_SUPERBLOCK.error(
                    "s_blob_table_offset",
                    offset,
                    f"blob table ends past the bootstrap ({size} bytes)",
                    ext.s_blob_table_offset,
                )
        if ext.s_chunk_table_size:
            if ext.s_chunk_table_offset % BLOCK_SIZE:
                raise EXT_SUPERBLOCK.error(
                    "s_chunk_table_offset", offset, "must be 4K-aligned", ext.s_chunk_table_offset
                )
            if ext.s_chunk_table_size % CHUNK_TABLE_ENTRY.size:
                raise EXT_SUPERBLOCK.error(
                    "s_chunk_table_size", offset, "not a multiple of 80", ext.s_chunk_table_size
                )
            if ext.s_chunk_table_offset + ext.s_chunk_table_size > size:
                raise EXT_SUPERBLOCK.error(
                    "s_chunk_table_offset",
                    offset,
                    f"chunk table ends past the bootstrap ({size} bytes)",
                    ext.s_chunk_table_offset,
                )
        if ext.s_prefetch_table_size and ext.s_prefetch_table_offset:
            if ext.s_prefetch_table_size % 4:
                raise EXT_SUPERBLOCK.error(
                    "s_prefetch_table_size", offset, "not a multiple of 4", ext.s_prefetch_table_size
                )
            if ext.s_prefetch_table_offset + ext.s_prefetch_table_size > size:
                raise EXT_SUPERBLOCK.error(
                    "s_prefetch_table_offset",
                    offset,
                    "prefetch table ends past the bootstrap",
                    ext.s_prefetch_table_offset,
                )
        return ext

    @property
    def compressor(self) -> Compressor:
        return next(c for b, c in _COMPRESSION_BITS.items() if self.s_flags & b)

    @property
    def digester(self) -> Digester:
        return next(d for b, d in _DIGEST_BITS.items() if self.s_flags & b)


DEVICE = Layout(
    "rafs v6 device slot",
    [("blob_id", "64s"), ("blocks", "I"), ("mapped_blkaddr", "I"), ("_reserved", "56x")],
)


@dataclass
class DeviceSlot(Record):
    """One 128-byte EROFS device slot: a blob's id, its size in blocks and its mapped block address."""

    LAYOUT = DEVICE
    blob_id: bytes = b""
    blocks: int = 0
    mapped_blkaddr: int = 0


BLOB_ENTRY = Layout(
    "rafs v6 blob table entry",
    [
        ("blob_id", "64s"),
        ("blob_index", "I"),
        ("chunk_size", "I"),
        ("chunk_count", "I"),
        ("compression_algo", "I"),
        ("digest_algo", "I"),
        ("features", "I"),
        ("compressed_size", "Q"),
        ("uncompressed_size", "Q"),
        ("blob_toc_size", "I"),
        ("ci_compressor", "I"),
        ("ci_offset", "Q"),
        ("ci_compressed_size", "Q"),
        ("ci_uncompressed_size", "Q"),
        ("blob_toc_digest", "32s"),
        ("blob_meta_digest", "32s"),
        ("blob_meta_size", "Q"),
        ("cipher_iv", "Q"),
        ("cipher_algo", "I"),
        ("_reserved", "36x"),
    ],
)

#: Placeholder blob id nydus writes into a layer's own bootstrap before the blob digest is known.
PLACEHOLDER_BLOB_ID = "x" * 64


@dataclass
class BlobTableEntry(Record):
    """One entry of the RAFS v6 blob table: a blob's id, sizes, compressors and chunk-info place."""

    LAYOUT = BLOB_ENTRY
    blob_id: bytes = b""
    blob_index: int = 0
    chunk_size: int = 0x100000
    chunk_count: int = 0
    compression_algo: int = 3
    digest_algo: int = 0
    features: int = 0
    compressed_size: int = 0
    uncompressed_size: int = 0
    blob_toc_size: int = 0
    ci_compressor: int = 0
    ci_offset: int = 0
    ci_compressed_size: int = 0
    ci_uncompressed_size: int = 0
    blob_toc_digest: bytes = bytes(32)
    blob_meta_digest: bytes = bytes(32)
    blob_meta_size: int = 0
    cipher_iv: int = 0
    cipher_algo: int = 0

    @classmethod
    def parse(cls, buf, offset: int = 0, position: int = 0, chunk_size: int | None = None) -> BlobTableEntry:
        ent = cls(**BLOB_ENTRY.unpack(buf, offset))
        if ent.blob_index != position:
            raise BLOB_ENTRY.error(
                "blob_index", offset, f"must equal its position {position}", ent.blob_index
            )
        if chunk_size is not None and ent.chunk_size != chunk_size:
            raise BLOB_ENTRY.error(
                "chunk_size", offset, f"differs from the superblock's {chunk_size:#x}", ent.chunk_size
            )
        if ent.compression_algo not in (0, 1, 2, 3):
            raise BLOB_ENTRY.error("compression_algo", offset, "unknown compressor", ent.compression_algo)
        if ent.ci_compressor not in (0, 1, 2, 3):
            raise BLOB_ENTRY.error("ci_compressor", offset, "unknown compressor", ent.ci_compressor)
        if ent.digest_algo not in (0, 1):
            raise BLOB_ENTRY.error("digest_algo", offset, "unknown digester", ent.digest_algo)
        if ent.chunk_count > blob_meta.MAX_CHUNKS:
            raise BLOB_ENTRY.error("chunk_count", offset, "more than 2^24 chunks", ent.chunk_count)
        if ent.features & 0xFFFF & ~blob_meta.KNOWN_LOW_FEATURES:
            raise BLOB_ENTRY.error("features", offset, "unknown feature bits", ent.features)
        if ent.ci_compressed_size > ent.ci_uncompressed_size:
            raise BLOB_ENTRY.error(
                "ci_compressed_size", offset, "larger than ci_uncompressed_size", ent.ci_compressed_size
            )
        return ent

    @property
    def id(self) -> str:
        return cstr(self.blob_id).decode("ascii", "replace")

    @property
    def compressor(self) -> Compressor:
        return Compressor.from_algo(self.compression_algo)

    @property
    def digester(self) -> Digester:
        return Digester.from_algo(self.digest_algo)

    @property
    def ci_compressor_name(self) -> str:
        return Compressor.from_algo(self.ci_compressor).value

    def to_json(self) -> dict:
        return {
            "index": self.blob_index,
            "blob_id": self.id,
            "chunk_size": self.chunk_size,
            "chunk_count": self.chunk_count,
            "compressor": self.compressor.value,
            "digester": self.digester.value,
            "features": f"{self.features:#x}",
            "features_names": blob_meta.features_names(self.features),
            "compressed_size": self.compressed_size,
            "uncompressed_size": self.uncompressed_size,
            "ci_compressor": self.ci_compressor_name,
            "ci_offset": self.ci_offset,
            "ci_compressed_size": self.ci_compressed_size,
            "ci_uncompressed_size": self.ci_uncompressed_size,
            "blob_toc_digest": self.blob_toc_digest.hex(),
            "blob_toc_size": self.blob_toc_size,
            "blob_meta_digest": self.blob_meta_digest.hex(),
            "blob_meta_size": self.blob_meta_size,
            "cipher_algo": self.cipher_algo,
        }


# ---------------------------------------------------------------------------- inodes

INODE_COMPACT = Layout(
    "erofs compact inode",
    [
        ("i_format", "H"),
        ("i_xattr_icount", "H"),
        ("i_mode", "H"),
        ("i_nlink", "H"),
        ("i_size", "I"),
        ("_reserved", "4x"),
        ("i_u", "I"),
        ("i_ino", "I"),
        ("i_uid", "H"),
        ("i_gid", "H"),
        ("_reserved2", "4x"),
    ],
)
INODE_EXTENDED = Layout(
    "erofs extended inode",
    [
        ("i_format", "H"),
        ("i_xattr_icount", "H"),
        ("i_mode", "H"),
        ("_reserved", "2x"),
        ("i_size", "Q"),
        ("i_u", "I"),
        ("i_ino", "I"),
        ("i_uid", "I"),
        ("i_gid", "I"),
        ("i_mtime", "Q"),
        ("i_mtime_nsec", "I"),
        ("i_nlink", "I"),
        ("_reserved2", "16x"),
    ],
)

LAYOUT_FLAT_PLAIN = 0
LAYOUT_FLAT_INLINE = 2
LAYOUT_CHUNK_BASED = 4
_LAYOUT_NAMES = {
    0: "flat_plain",
    1: "compressed_full",
    2: "flat_inline",
    3: "compressed_compact",
    4: "chunk_based",
}
CHUNK_FORMAT_INDEXES = 0x20
CHUNK_FORMAT_BLKBITS_MASK = 0x1F


@dataclass
class Inode:
    """An EROFS inode as RAFS v6 stores it (compact or extended)."""

    i_format: int
    i_xattr_icount: int
    i_mode: int
    i_nlink: int
    i_size: int
    i_u: int
    i_ino: int
    i_uid: int
    i_gid: int
    i_mtime: int = 0
    i_mtime_nsec: int = 0

    @property
    def extended(self) -> bool:
        return bool(self.i_format & 1)

    @property
    def inode_size(self) -> int:
        return 64 if self.extended else 32

    @property
    def datalayout(self) -> int:
        return (self.i_format >> 1) & 0x7

    @property
    def layout_name(self) -> str:
        return _LAYOUT_NAMES.get(self.datalayout, str(self.datalayout))

    @property
    def xattr_size(self) -> int:
        return 0 if self.i_xattr_icount == 0 else 12 + (self.i_xattr_icount - 1) * 4

    @property
    def layout(self) -> Layout:
        """The on-disk layout of this inode: compact or extended."""
        return INODE_EXTENDED if self.extended else INODE_COMPACT

    def build(self) -> bytes:
        return self.layout.pack(self.__dict__)


_COMPACT = INODE_COMPACT.struct
_EXTENDED = INODE_EXTENDED.struct


#: The data layouts of a plain EROFS image (RAFS v6 has no compressed files).
PLAIN_EROFS_LAYOUTS = frozenset(range(5))
_RAFS_LAYOUTS = frozenset((LAYOUT_FLAT_PLAIN, LAYOUT_FLAT_INLINE, LAYOUT_CHUNK_BASED))
#: i_format bit 4: a compact non-directory inode with one link keeps a block address MSB where nlink was;
#: a directory omits its "." dirent.
I_NLINK_1 = 0x10


def parse_inode(buf, offset: int, nid: int, *, plain_erofs: bool = False) -> Inode:
    """Decode the inode at absolute ``offset`` (nid only for messages). ``plain_erofs``: as mkfs.erofs
    writes it (compressed layouts, i_format bit 4)."""
    if offset < 0 or offset + 2 > len(buf):
        raise FormatError("erofs inode", f"nid {nid} lies past the end of the bootstrap", offset=offset)
    # One slice of the largest inode, then positional unpacking straight into the record: this runs once per
    # inode of every walk (the slice costs no more than the two indexes it replaces, and serves a ``buf`` with
    # no buffer to unpack from).
    raw = buf[offset : offset + _EXTENDED.size]
    fmt = raw[0] | raw[1] << 8
    if fmt & 1:
        layout = INODE_EXTENDED
        if len(raw) < _EXTENDED.size:
            need(buf, offset, _EXTENDED.size, layout.name)
        f, xc, mode, size, u, ino_, uid, gid, mtime, nsec, nlink = _EXTENDED.unpack(raw)
        ino = Inode(f, xc, mode, nlink, size, u, ino_, uid, gid, mtime, nsec)
    else:
        layout = INODE_COMPACT
        if len(raw) < _COMPACT.size:
            need(buf, offset, _COMPACT.size, layout.name)
        ino = Inode(*_COMPACT.unpack_from(raw))
    if fmt & ~(0x1F if plain_erofs else 0xF):
        raise layout.error("i_format", offset, f"unknown format bits in inode nid {nid}", fmt)
    if (fmt >> 1) & 0x7 not in (PLAIN_EROFS_LAYOUTS if plain_erofs else _RAFS_LAYOUTS):
        raise layout.error("i_format", offset, f"unsupported data layout in inode nid {nid}", fmt)
    if fmt & I_NLINK_1 and not fmt & 1 and ino.i_mode & 0o170000 != 0o040000:
        ino.i_nlink = 1
    if ino.i_nlink == 0:
        raise layout.error("i_nlink", offset, f"inode nid {nid} has no links", 0)
    return ino


# ---------------------------------------------------------------------------- xattrs

#: An entry name index with this bit set selects a long prefix (plain EROFS images only).
XATTR_LONG_PREFIX = 0x80
XATTR_PREFIXES = {
    1: b"user.",
    2: b"system.posix_acl_access",
    3: b"system.posix_acl_default",
    4: b"trusted.",
    6: b"security.",
}
XATTR_IBODY_HEADER = 12


XATTR_ENTRY = struct.Struct("<BBH")  # e_name_len, e_name_index, e_value_size
_U32 = struct.Struct("<I")


def parse_xattrs(
    buf, offset: int, icount: int, nid: int, shared_base: int = 0, prefixes: list[bytes] = ()
) -> dict[bytes, bytes]:
    """Decode an inode's xattrs: the area right after the inode at ``offset`` holds a 12-byte header whose
    h_shared_count ids name entries of the shared xattr area (entry ``id`` at ``shared_base + 4 * id``, where
    ``shared_base`` is the superblock's s_xattr_blkaddr in bytes), then the inline entries. Shared ones come
    first, as the kernel lists them. An entry whose name index has XATTR_LONG_PREFIX set takes its prefix from
    ``prefixes`` (a plain EROFS image's long prefix table; nydus writes none)."""
    if icount == 0:
        return {}
    size = 12 + (icount - 1) * 4
    end = offset + size
    if end > len(buf):
        raise FormatError(
            "erofs xattr area", f"inode nid {nid}: runs past the bootstrap", offset=offset, value=size
        )
    shared = buf[offset + 4]
    pos = offset + XATTR_IBODY_HEADER + 4 * shared
    if pos > end:
        raise FormatError(
            "erofs xattr ibody header",
            f"inode nid {nid}: {shared} shared xattr ids do not fit in its {size}-byte xattr area",
            field="h_shared_count",
            offset=offset + 4,
            value=shared,
        )
    out: dict[bytes, bytes] = {}
    ids = buf[offset + XATTR_IBODY_HEADER : pos]
    for i in range(shared):
        xid = _U32.unpack_from(ids, 4 * i)[0]
        where = shared_base + 4 * xid
        name, value, _ = _xattr_entry(buf, where, len(buf), nid, f"shared xattr id {xid}", prefixes)
        out[name] = value
    while pos + 4 <= end:
        name, value, total = _xattr_entry(buf, pos, end, nid, "xattr", prefixes)
        out[name] = value
        pos += (total + 3) & ~3
    return out


def _xattr_entry(buf, pos: int, end: int, nid: int, what: str, prefixes=()) -> tuple[bytes, bytes, int]:
    """(name, value, entry size) of the xattr entry at ``pos``, which must end by ``end``."""
    if pos + 4 > end:
        raise FormatError(
            "erofs xattr entry", f"inode nid {nid}: {what} lies past the bootstrap", offset=pos, value=pos
        )
    name_len, index, value_size = XATTR_ENTRY.unpack(buf[pos : pos + 4])
    total = 4 + name_len + value_size
    if pos + total > end:
        raise FormatError(
            "erofs xattr entry",
            f"inode nid {nid}: {what} runs past "
            + ("the xattr area" if what == "xattr" else "the bootstrap"),
            offset=pos,
            value=total,
        )
    if index & XATTR_LONG_PREFIX:
        k = index & 0x7F
        if k >= len(prefixes):
            raise FormatError(
                "erofs xattr entry",
                f"inode nid {nid}: {what}: long prefix {k} of {len(prefixes)}",
                field="e_name_index",
                offset=pos + 1,
                value=index,
            )
        prefix = prefixes[k]
    else:
        prefix = XATTR_PREFIXES.get(index)
    if prefix is None:
        raise FormatError(
            "erofs xattr entry", f"inode nid {nid}: {what}: unknown name index", offset=pos + 1, value=index
        )
    return (
        prefix + bytes(buf[pos + 4 : pos + 4 + name_len]),
        bytes(buf[pos + 4 + name_len : pos + total]),
        total,
    )


def build_xattrs(xattrs: dict[bytes, bytes]) -> bytes:
    """The inline xattr area (ibody header + entries), or b'' for none."""
    if not xattrs:
        return b""
    body = bytearray(XATTR_IBODY_HEADER)
    for name, value in sorted(xattrs.items()):
        index, suffix = split_xattr_name(name)
        if len(suffix) > 255 or len(value) > 0xFFFF:
            raise ValueError(f"xattr {name!r} too long")
        entry = struct.pack("<BBH", len(suffix), index, len(value)) + suffix + value
        body += entry + bytes(-len(entry) % 4)
    return bytes(body)


def split_xattr_name(name: bytes) -> tuple[int, bytes]:
    # Whole-name prefixes (posix ACLs) first, then namespace prefixes.
    for index in (2, 3):
        if name == XATTR_PREFIXES[index]:
            return index, b""
    for index in (1, 4, 6):
        prefix = XATTR_PREFIXES[index]
        if name.startswith(prefix) and len(name) > len(prefix):
            return index, name[len(prefix) :]
    raise ValueError(f"xattr {name.decode(errors='replace')!r} is not in a namespace RAFS can store")


def xattr_icount(area_size: int) -> int:
    return 0 if area_size == 0 else (area_size - 12) // 4 + 1


# ---------------------------------------------------------------------------- chunk indexes and table

CHUNK_INDEX = struct.Struct("<HHI")  # advise, device_id, blkaddr


@dataclass(frozen=True)
class ChunkIndex:
    """A file's 8-byte chunk index, decoded: which blob, which chunk-info entry, which block."""

    blob_index: int
    ci_index: int
    blkaddr: int

    @classmethod
    def decode(cls, advise: int, device_id: int, blkaddr: int) -> ChunkIndex:
        return cls((device_id & 0xFF) - 1, ((device_id >> 8) << 16) | advise, blkaddr)

    def build(self) -> bytes:
        out = bytearray(CHUNK_INDEX.size)
        pack_chunk_index(out, 0, self.blob_index, self.ci_index, self.blkaddr)
        return bytes(out)


def pack_chunk_index(buf, pos: int, blob_index: int, ci_index: int, blkaddr: int) -> None:
    """A chunk index written into ``buf`` at ``pos`` (the writers fill a file's whole run in place)."""
    CHUNK_INDEX.pack_into(
        buf, pos, ci_index & 0xFFFF, ((blob_index + 1) & 0xFF) | ((ci_index >> 16) << 8), blkaddr
    )


CHUNK_TABLE_ENTRY = Layout(
    "rafs chunk table entry",
    [
        ("block_id", "32s"),
        ("blob_index", "I"),
        ("flags", "I"),
        ("compressed_size", "I"),
        ("uncompressed_size", "I"),
        ("compressed_offset", "Q"),
        ("uncompressed_offset", "Q"),
        ("file_offset", "Q"),
        ("index", "I"),
        ("crc32", "I"),
    ],
)
CHUNK_COMPRESSED = 0x1
CHUNK_HOLE = 0x2
CHUNK_ENCRYPTED = 0x4
CHUNK_BATCH = 0x8
CHUNK_HAS_CRC32 = 0x10
CHUNK_FLAG_NAMES = {
    CHUNK_COMPRESSED: "compressed",
    CHUNK_HOLE: "hole",
    CHUNK_ENCRYPTED: "encrypted",
    CHUNK_BATCH: "batch",
    CHUNK_HAS_CRC32: "crc32",
}


@dataclass
class ChunkTableEntry(Record):
    """One 80-byte record of the bootstrap's chunk table (RafsV5ChunkInfo, reused by v6)."""

    LAYOUT = CHUNK_TABLE_ENTRY
    block_id: bytes = bytes(32)
    blob_index: int = 0
    flags: int = 0
    compressed_size: int = 0
    uncompressed_size: int = 0
    compressed_offset: int = 0
    uncompressed_offset: int = 0
    file_offset: int = 0
    index: int = 0
    crc32: int = 0

    @property
    def compressed(self) -> bool:
        return bool(self.flags & CHUNK_COMPRESSED)


# ---------------------------------------------------------------------------- directories

DIRENT = struct.Struct("<QHBB")  # nid, nameoff, file_type, reserved
DIRENT_SIZE = 12
FT_UNKNOWN, FT_REG, FT_DIR, FT_CHR, FT_BLK, FT_FIFO, FT_SOCK, FT_SYMLINK = range(8)


class Dirent(NamedTuple):
    """One EROFS directory entry: name, inode nid and file type (a tuple: a walk makes one per entry)."""

    name: bytes
    nid: int
    file_type: int


def parse_dir_block(block: bytes, base: int, nid: int) -> list[Dirent]:
    """Decode one directory block (dirents then names). ``base``: absolute offset, for errors."""
    if len(block) < DIRENT_SIZE:
        raise FormatError(
            "erofs dir block", f"directory nid {nid}: block shorter than one dirent", offset=base
        )
    first_nameoff = struct.unpack_from("<H", block, 8)[0]
    if first_nameoff % DIRENT_SIZE or first_nameoff == 0 or first_nameoff >= min(len(block), BLOCK_SIZE):
        raise FormatError(
            "erofs dirent",
            f"directory nid {nid}: first nameoff must be a non-zero multiple of 12 inside the block",
            field="nameoff",
            offset=base + 8,
            value=first_nameoff,
        )
    count = first_nameoff // DIRENT_SIZE
    raw = [DIRENT.unpack_from(block, i * DIRENT_SIZE) for i in range(count)]
    out = []
    for i, (dnid, nameoff, ftype, _) in enumerate(raw):
        if i + 1 < count:
            end = raw[i + 1][1]
        else:
            end = block.find(b"\0", nameoff)
            if end < 0:
                end = len(block)
        if not first_nameoff <= nameoff <= end <= len(block):
            raise FormatError(
                "erofs dirent",
                f"directory nid {nid}: name offsets out of order or outside the block",
                field="nameoff",
                offset=base + i * DIRENT_SIZE + 8,
                value=nameoff,
            )
        if ftype > FT_SYMLINK:
            raise FormatError(
                "erofs dirent",
                f"directory nid {nid}: unknown file type",
                field="file_type",
                offset=base + i * DIRENT_SIZE + 10,
                value=ftype,
            )
        name = bytes(block[nameoff:end])
        if not name:
            raise FormatError(
                "erofs dirent", f"directory nid {nid}: empty name", offset=base + i * DIRENT_SIZE + 8
            )
        out.append(Dirent(name, dnid, ftype))
    return out


def build_dir_blocks(entries: list[Dirent]) -> tuple[list[bytes], int]:
    """Lay out sorted dirents into blocks. Returns (blocks, i_size); the last block is unpadded."""
    blocks: list[bytes] = []
    group: list[Dirent] = []
    used = 0
    size = 0
    for ent in entries:
        need_bytes = DIRENT_SIZE + len(ent.name)
        if used + need_bytes > BLOCK_SIZE:
            blocks.append(_pack_dir_block(group, pad=True))
            size = (size + BLOCK_SIZE - 1) // BLOCK_SIZE * BLOCK_SIZE
            group, used = [], 0
        group.append(ent)
        used += need_bytes
        size += need_bytes
    if group:
        blocks.append(_pack_dir_block(group, pad=False))
    return blocks, size


def _pack_dir_block(group: list[Dirent], pad: bool) -> bytes:
    heads = bytearray()
    names = bytearray()
    nameoff = DIRENT_SIZE * len(group)
    for ent in group:
        heads += DIRENT.pack(ent.nid, nameoff + len(names), ent.file_type, 0)
        names += ent.name
    out = bytes(heads + names)
    if pad:
        out += bytes(BLOCK_SIZE - len(out))
    return out


@dataclass
class Bootstrap:
    """The fixed part of a RAFS v6 bootstrap: superblocks, devices, blob table, prefetch table."""

    sb: SuperBlock
    ext: ExtSuperBlock
    devices: list[DeviceSlot] = field(default_factory=list)
    blobs: list[BlobTableEntry] = field(default_factory=list)
    prefetch: list[int] = field(default_factory=list)

    @property
    def meta_offset(self) -> int:
        return self.sb.s_meta_blkaddr << self.sb.s_blkszbits

    @property
    def block_size(self) -> int:
        """4096, or 512 in a tarfs bootstrap (``nydus-image create --type tar-tarfs``)."""
        return 1 << self.sb.s_blkszbits

    def inode_offset(self, nid: int) -> int:
        return self.meta_offset + 32 * nid


#: The most blobs one bootstrap may list (nydus allocates blob indexes below 255).
MAX_BLOBS = 255


def parse_bootstrap(buf) -> Bootstrap:
    """Decode the fixed part of a v6 bootstrap held in ``buf`` (bytes, mmap...)."""
    size = len(buf)
    if size < BLOCK_SIZE:
        raise FormatError("rafs v6 bootstrap", "shorter than one 4096-byte block", value=size)
    sb = SuperBlock.parse(buf)
    ext = ExtSuperBlock.parse(buf)
    if sb.s_meta_blkaddr << sb.s_blkszbits > size:
        raise SUPERBLOCK.error(
            "s_meta_blkaddr", SUPERBLOCK_OFFSET, "meta area starts past the bootstrap", sb.s_meta_blkaddr
        )
    nblobs = ext.s_blob_table_size // BLOB_ENTRY.size
    if nblobs > MAX_BLOBS:
        raise EXT_SUPERBLOCK.error(
            "s_blob_table_size", EXT_SUPERBLOCK_OFFSET, f"more than {MAX_BLOBS} blobs", nblobs
        )
    if sb.s_extra_devices != nblobs:
        raise SUPERBLOCK.error(
            "s_extra_devices",
            SUPERBLOCK_OFFSET,
            f"differs from the {nblobs} blob table entries",
            sb.s_extra_devices,
        )
    inode_limit = (size - (sb.s_meta_blkaddr << sb.s_blkszbits)) // 32
    if sb.s_root_nid >= inode_limit:
        raise SUPERBLOCK.error(
            "s_root_nid", SUPERBLOCK_OFFSET, "root inode lies past the bootstrap", sb.s_root_nid
        )
    devices = [DeviceSlot.parse(buf, DEVICE_TABLE_OFFSET + i * DEVICE.size) for i in range(nblobs)]
    blobs = [
        BlobTableEntry.parse(buf, ext.s_blob_table_offset + i * BLOB_ENTRY.size, i, ext.s_chunk_size)
        for i in range(nblobs)
    ]
    prefetch: list[int] = []
    if ext.s_prefetch_table_offset and ext.s_prefetch_table_size:
        raw = struct.unpack_from(f"<{ext.s_prefetch_table_size // 4}I", buf, ext.s_prefetch_table_offset)
        for nid in raw:
            if nid == 0:
                break
            prefetch.append(nid)
    return Bootstrap(sb=sb, ext=ext, devices=devices, blobs=blobs, prefetch=prefetch)
