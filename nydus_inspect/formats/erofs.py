"""Plain EROFS (as mkfs.erofs writes it) beyond what RAFS v6 uses: the superblock's later fields and
feature bits, the superblock checksum, shared xattrs and long xattr name prefixes, and the block maps of
flat and chunk-based files whose data lies in the image itself.

The structures RAFS v6 shares with EROFS (the first 128 bytes of the superblock, inodes, dirents, inline
xattr entries) are declared once, in :mod:`.rafs_v6`; this module adds to them. Sans-I/O: every function
takes the image as a buffer.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

from ..errors import FormatError
from . import rafs_v6
from ._struct import Layout, flag_names, round_up

SB_OFFSET = rafs_v6.SUPERBLOCK_OFFSET
#: A null block address: a hole in a chunk-based file, or a flat file without blocks.
NULL_ADDR = 0xFFFF_FFFF

FEATURE_COMPAT_SB_CHKSUM = 0x1
FEATURE_COMPAT_MTIME = 0x2
FEATURE_COMPAT_XATTR_FILTER = 0x4
FEATURE_COMPAT_SHARED_EA_IN_METABOX = 0x8
FEATURE_COMPAT_PLAIN_XATTR_PFX = 0x10
FEATURE_COMPAT_ISHARE_XATTRS = 0x20
COMPAT_NAMES = {
    FEATURE_COMPAT_SB_CHKSUM: "sb_csum",
    FEATURE_COMPAT_MTIME: "mtime",
    FEATURE_COMPAT_XATTR_FILTER: "xattr_filter",
    FEATURE_COMPAT_SHARED_EA_IN_METABOX: "shared_ea_in_metabox",
    FEATURE_COMPAT_PLAIN_XATTR_PFX: "plain_xattr_prefixes",
    FEATURE_COMPAT_ISHARE_XATTRS: "ishare_xattrs",
    rafs_v6.FEATURE_COMPAT_RAFS_V6: "rafs_v6",
}

FEATURE_INCOMPAT_LZ4_0PADDING = 0x1
FEATURE_INCOMPAT_BIG_PCLUSTER = 0x2  # also: compression configurations follow the superblock
FEATURE_INCOMPAT_CHUNKED_FILE = 0x4
FEATURE_INCOMPAT_DEVICE_TABLE = 0x8  # also: HEAD2 lclusters (a second algorithm) in compressed files
FEATURE_INCOMPAT_ZTAILPACKING = 0x10
FEATURE_INCOMPAT_FRAGMENTS = 0x20  # also: deduplicated extents
FEATURE_INCOMPAT_XATTR_PREFIXES = 0x40
FEATURE_INCOMPAT_48BIT = 0x80
FEATURE_INCOMPAT_METABOX = 0x100
INCOMPAT_NAMES = {
    FEATURE_INCOMPAT_LZ4_0PADDING: "0padding",
    FEATURE_INCOMPAT_BIG_PCLUSTER: "big_pcluster/compr_cfgs",
    FEATURE_INCOMPAT_CHUNKED_FILE: "chunked_file",
    FEATURE_INCOMPAT_DEVICE_TABLE: "device_table/compr_head2",
    FEATURE_INCOMPAT_ZTAILPACKING: "ztailpacking",
    FEATURE_INCOMPAT_FRAGMENTS: "fragments/dedupe",
    FEATURE_INCOMPAT_XATTR_PREFIXES: "xattr_prefixes",
    FEATURE_INCOMPAT_48BIT: "48bit",
    FEATURE_INCOMPAT_METABOX: "metabox",
}
#: Incompatible features this reader refuses outright, whatever the files use: each changes how every
#: block address or nid is read.
REFUSED_INCOMPAT = {
    FEATURE_INCOMPAT_48BIT: "48-bit block addresses and nids (mkfs.erofs -E48bit)",
    FEATURE_INCOMPAT_METABOX: "a metadata box inode (mkfs.erofs --MZ)",
}
KNOWN_INCOMPAT = (FEATURE_INCOMPAT_METABOX << 1) - 1

#: The superblock fields after the 128 bytes RAFS v6 declares (the superblock is 128 + 16*s_extslots bytes).
SB_TAIL_OFFSET = SB_OFFSET + 90
SB_TAIL = Layout(
    "erofs superblock",
    [
        ("s_dirblkbits", "B"),
        ("s_xattr_prefix_count", "B"),
        ("s_xattr_prefix_start", "I"),
        ("s_packed_nid", "Q"),
        ("s_xattr_filter_reserved", "B"),
        ("s_ishare_xattr_prefix_id", "B"),
        ("_reserved", "2x"),
        ("s_build_time", "I"),
        ("s_rootnid_8b", "Q"),
        ("_reserved2", "8x"),
        ("s_metabox_nid", "Q"),
        ("_reserved3", "8x"),
    ],
)


def compat_names(value: int) -> list[str]:
    return flag_names(value, COMPAT_NAMES)


def incompat_names(value: int) -> list[str]:
    return flag_names(value, INCOMPAT_NAMES)


@dataclass
class ErofsSuper:
    """What a plain EROFS image's superblock says, beyond the RAFS v6 part (``sb``)."""

    sb: rafs_v6.SuperBlock
    dirblkbits: int = 0
    xattr_prefix_count: int = 0
    xattr_prefix_start: int = 0
    packed_nid: int = 0
    build_time: int = 0
    extslots: int = 0
    #: Extra devices (device table): (tag, blocks, unified start block) of devices 1, 2, ...
    devices: tuple[tuple[bytes, int, int], ...] = ()

    @property
    def epoch(self) -> int:
        """Compact inodes store their mtime as seconds after this (the RAFS v6 name is s_build_time)."""
        return self.sb.s_build_time

    @property
    def fixed_nsec(self) -> int:
        return self.sb.s_build_time_nsec

    @property
    def block_size(self) -> int:
        return 1 << self.sb.s_blkszbits

    @property
    def shared_xattr_offset(self) -> int:
        return self.sb.s_xattr_blkaddr * self.block_size


#: Device slots: a 64-byte tag, then blocks (u32), unified start block (u32), their high halves (u16 each).
DEVICE_SLOT = struct.Struct("<64sIIHH52x")
MAX_DEVICES = 256


def parse_devices(buf, sb) -> tuple[tuple[bytes, int, int], ...]:
    """The device table of an image with extra devices (mkfs.erofs --blobdev), checked to lie in the image."""
    start = sb.s_devt_slotoff * DEVICE_SLOT.size
    n = sb.s_extra_devices
    if n > MAX_DEVICES or start + n * DEVICE_SLOT.size > len(buf):
        raise rafs_v6.SUPERBLOCK.error(
            "s_extra_devices", SB_OFFSET, f"a device table of {n} slots at {start} lies past the image", n
        )
    out = []
    for i in range(n):
        at = start + i * DEVICE_SLOT.size
        tag, blocks, uniaddr, blocks_hi, uniaddr_hi = DEVICE_SLOT.unpack(buf[at : at + DEVICE_SLOT.size])
        if blocks_hi or uniaddr_hi:
            raise FormatError(
                "erofs device slot",
                f"device {i + 1}: unsupported EROFS feature: 48-bit device block counts",
                offset=start + i * DEVICE_SLOT.size + 72,
            )
        out.append((tag.rstrip(b"\0"), blocks, uniaddr))
    return tuple(out)


#: The block sizes read (as 1 << s_blkszbits): mkfs.erofs writes 512 to 4096 (``-b``; 512 for ``--tar=i``).
MIN_BLKSZBITS, MAX_BLKSZBITS = 9, 12
#: Block sizes EROFS defines beyond those (up to 64 KiB, for kernels with larger pages), refused by name:
#: mkfs.erofs 1.9.3 does not write them, so nothing holds this reader to them.
MAX_EROFS_BLKSZBITS = 16


def parse_superblock(buf) -> ErofsSuper:
    """Decode and check a plain EROFS superblock; features this reader cannot follow are refused by name."""
    sb = rafs_v6.SuperBlock.parse(buf, SB_OFFSET, rafs=False)
    bits = sb.s_blkszbits
    if not MIN_BLKSZBITS <= bits <= MAX_BLKSZBITS:
        if MAX_BLKSZBITS < bits <= MAX_EROFS_BLKSZBITS:
            what = (
                f"unsupported EROFS feature: {1 << bits}-byte blocks (blocks of 512 to 4096 bytes are read)"
            )
        else:
            what = "block size out of range (EROFS blocks are 2^9 to 2^16 bytes)"
        raise rafs_v6.SUPERBLOCK.error("s_blkszbits", SB_OFFSET, what, bits)
    bs = 1 << bits
    # The superblock is at byte 1024 whatever the block size: in the first 4 KiB block, or in the third
    # 512-byte one.
    least = max(bs, SB_OFFSET + rafs_v6.SUPERBLOCK.size)
    if len(buf) < least:
        raise FormatError(
            "erofs image", f"shorter than its superblock and first {bs}-byte block", value=len(buf)
        )
    incompat = sb.s_feature_incompat
    refused = [what for bit, what in REFUSED_INCOMPAT.items() if incompat & bit]
    if refused:  # every one named: an image may need several (mkfs.erofs -m sets 48-bit and the metabox)
        raise rafs_v6.SUPERBLOCK.error(
            "s_feature_incompat", SB_OFFSET, "unsupported EROFS feature: " + " and ".join(refused), incompat
        )
    if incompat & ~KNOWN_INCOMPAT:
        raise rafs_v6.SUPERBLOCK.error(
            "s_feature_incompat",
            SB_OFFSET,
            f"unknown incompatible feature bits {incompat & ~KNOWN_INCOMPAT:#x}",
            incompat,
        )
    tail = SB_TAIL.unpack(buf, SB_TAIL_OFFSET)
    out = ErofsSuper(
        sb=sb,
        dirblkbits=tail["s_dirblkbits"],
        xattr_prefix_count=tail["s_xattr_prefix_count"],
        xattr_prefix_start=tail["s_xattr_prefix_start"],
        packed_nid=tail["s_packed_nid"],
        build_time=tail["s_build_time"],
        extslots=sb.s_extslots,
    )
    if out.dirblkbits:
        raise SB_TAIL.error(
            "s_dirblkbits", SB_TAIL_OFFSET, "directory blocks larger than the block size", out.dirblkbits
        )
    if sb.s_extra_devices:
        out = replace(out, devices=parse_devices(buf, sb))
    if sb.s_feature_compat & FEATURE_COMPAT_SB_CHKSUM:
        check_sb_checksum(buf, sb.s_checksum)
    if sb.s_meta_blkaddr * bs >= len(buf):
        raise rafs_v6.SUPERBLOCK.error(
            "s_meta_blkaddr", SB_OFFSET, "meta area starts past the image", sb.s_meta_blkaddr
        )
    if sb.s_root_nid >= (len(buf) - sb.s_meta_blkaddr * bs) // 32:
        raise rafs_v6.SUPERBLOCK.error(
            "s_root_nid", SB_OFFSET, "root inode lies past the image", sb.s_root_nid
        )
    return out


def sb_checksum(buf) -> int:
    """The superblock checksum: CRC32C (seed ~0, no final inversion) from the superblock on, with the
    checksum field read as zero, over the rest of the first block, or over one whole block when blocks are
    no larger than the 1024 bytes before the superblock (the block size is the superblock's own)."""
    from ..digests import crc32c

    bs = 1 << buf[SB_OFFSET + 12]  # s_blkszbits
    size = bs - SB_OFFSET if bs > SB_OFFSET else bs
    block = bytearray(buf[SB_OFFSET : SB_OFFSET + size])
    block[4:8] = bytes(4)
    # crc32c() is the standard CRC32C (seed ~0, result inverted); EROFS keeps the raw register.
    return crc32c(bytes(block)) ^ 0xFFFF_FFFF


def check_sb_checksum(buf, recorded: int) -> None:
    got = sb_checksum(buf)
    if got != recorded:
        raise rafs_v6.SUPERBLOCK.error(
            "s_checksum", SB_OFFSET, f"superblock CRC32C is {got:#010x}, the superblock says", recorded
        )


# ---------------------------------------------------------------------------- xattrs

XATTR_LONG_PREFIX = rafs_v6.XATTR_LONG_PREFIX
#: The short prefixes an entry's name index selects (index 5, lustre, is not kept by Linux and never made).
SHORT_PREFIXES = rafs_v6.XATTR_PREFIXES


def long_prefixes_in_packed_inode(esb: ErofsSuper) -> bool:
    """Whether the long xattr name prefixes are in the packed inode's data rather than in the image."""
    return bool(
        esb.xattr_prefix_count
        and esb.packed_nid
        and not esb.sb.s_feature_compat & FEATURE_COMPAT_PLAIN_XATTR_PFX
    )


def parse_long_prefixes(buf, esb: ErofsSuper, size: int | None = None) -> list[bytes]:
    """The long xattr name prefixes (each a short prefix index plus an infix) at ``s_xattr_prefix_start * 4``
    of ``buf`` (the image, or the packed inode's data: :func:`long_prefixes_in_packed_inode`, ``size``
    bytes of it): a 16-bit length then the record, each record 4-byte aligned."""
    if not esb.xattr_prefix_count:
        return []
    end = len(buf) if size is None else size
    out = []
    pos = esb.xattr_prefix_start * 4
    for i in range(esb.xattr_prefix_count):
        pos = round_up(pos, 4)
        if pos + 2 > end:
            raise FormatError("erofs long xattr prefix", f"prefix {i} lies past its area", offset=pos)
        size = struct.unpack_from("<H", buf[pos : pos + 2])[0]
        if not 1 <= size <= 256 or pos + 2 + size > end:
            raise FormatError(
                "erofs long xattr prefix", f"prefix {i}: bad length", field="length", offset=pos, value=size
            )
        base = buf[pos + 2]
        short = SHORT_PREFIXES.get(base)
        if short is None:
            raise FormatError(
                "erofs long xattr prefix",
                f"prefix {i}: unknown short prefix index",
                field="base_index",
                offset=pos + 2,
                value=base,
            )
        out.append(short + bytes(buf[pos + 3 : pos + 2 + size]))
        pos += 2 + size
    return out


# ---------------------------------------------------------------------------- block maps

CHUNK_FORMAT_BLKBITS_MASK = 0x1F
CHUNK_FORMAT_INDEXES = 0x20
CHUNK_FORMAT_48BIT = 0x40


@dataclass(frozen=True)
class Extent:
    """``length`` bytes of a file from ``file_offset``: at image offset ``offset``, or a hole (None)."""

    file_offset: int
    offset: int | None
    length: int
    device: int = 0  # 0: the image; k: extra device k (mkfs.erofs --blobdev), ``offset`` then lies in it


def flat_extents(
    size: int, blkaddr: int, inline: bool, tail_offset: int, image_size: int, nid: int, bs: int
) -> list[Extent]:
    """A flat file's data: whole blocks (of ``bs`` bytes) from ``blkaddr``, and with tail packing
    (``inline``) the rest right after the inode and its xattrs at ``tail_offset``, in the same block."""
    if size == 0:
        return []
    if not inline and blkaddr == NULL_ADDR:
        return [Extent(0, None, size)]
    full = size // bs * bs if inline else size
    out = []
    if full:
        start = blkaddr * bs
        if start + full > image_size:
            raise FormatError(
                "erofs inode", f"nid {nid}: data blocks lie past the image", field="i_u", value=blkaddr
            )
        out.append(Extent(0, start, full))
    tail = size - full
    if tail:
        if tail_offset + tail > image_size or tail_offset % bs + tail > bs:
            raise FormatError(
                "erofs inode",
                f"nid {nid}: inline tail crosses a block or the end of the image",
                field="i_size",
                value=size,
            )
        out.append(Extent(full, tail_offset, tail))
    return out


def chunk_extents(
    buf,
    size: int,
    chunk_format: int,
    index_start: int,
    nid: int,
    bs: int,
    devices: tuple[int, ...] = (),
) -> list[Extent]:
    """A chunk-based file's data from its chunk format (``i_u``) and the block map or chunk indexes that
    follow the inode and its xattrs (``index_start``, before alignment), in blocks of ``bs`` bytes.
    ``devices``: the block count of each extra device, whose data a chunk index may name (a ``--tar=i``
    index names its tar so)."""
    if chunk_format & ~(CHUNK_FORMAT_BLKBITS_MASK | CHUNK_FORMAT_INDEXES | CHUNK_FORMAT_48BIT):
        raise FormatError(
            "erofs inode", f"nid {nid}: unknown chunk format bits", field="i_u", value=chunk_format
        )
    if chunk_format & CHUNK_FORMAT_48BIT:
        raise FormatError(
            "erofs inode", f"nid {nid}: unsupported EROFS feature: 48-bit chunk indexes", value=chunk_format
        )
    # Any chunk size the 5-bit field says is read: a chunk's bytes are read in pieces, never held whole, and a
    # --tar=i index makes one chunk of each file however large (2^31 blocks at most).
    chunk = bs << (chunk_format & CHUNK_FORMAT_BLKBITS_MASK)
    count = -(-size // chunk)
    unit = 8 if chunk_format & CHUNK_FORMAT_INDEXES else 4
    start = round_up(index_start, unit)
    if start + unit * count > len(buf):
        raise FormatError(
            "erofs chunk index",
            f"nid {nid}: {count} chunk indexes run past the image",
            offset=start,
            value=size,
        )
    out = []
    indexes = buf[start : start + unit * count]  # one read of them all (bounded by the image, checked above)
    for k in range(count):
        at = start + unit * k
        if unit == 8:
            hi, device_id, lo = struct.unpack_from("<HHI", indexes, unit * k)
            if lo == NULL_ADDR:
                blk = None
            else:
                if device_id > len(devices):
                    raise FormatError(
                        "erofs chunk index",
                        f"nid {nid} chunk {k}: data on device {device_id}, but the image has "
                        f"{len(devices)} extra device(s)",
                        field="device_id",
                        offset=at + 2,
                        value=device_id,
                    )
                blk = lo  # without the 48-bit feature the high half is not part of the address
        else:
            lo = struct.unpack_from("<I", indexes, unit * k)[0]
            blk = None if lo == NULL_ADDR else lo
            device_id = 0
        length = min(chunk, size - k * chunk)
        if blk is not None and device_id:
            if blk * bs + length > devices[device_id - 1] * bs:
                raise FormatError(
                    "erofs chunk index",
                    f"nid {nid} chunk {k}: block address lies past device {device_id}",
                    offset=at,
                    value=blk,
                )
            out.append(Extent(k * chunk, blk * bs, length, device_id))
            continue
        if blk is not None and blk * bs + length > len(buf):
            raise FormatError(
                "erofs chunk index",
                f"nid {nid} chunk {k}: block address lies past the image",
                offset=at,
                value=blk,
            )
        out.append(Extent(k * chunk, None if blk is None else blk * bs, length))
    return out
