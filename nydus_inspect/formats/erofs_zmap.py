"""Where a compressed EROFS file's bytes are: its map header and logical-cluster indexes (legacy "full"
8-byte records, or compact 4-byte and 2-byte packs), turned into extents.

A compressed file is cut into logical clusters (lclusters, one block each, of the image's block size). Each lcluster's index says
whether a compressed extent starts in it (a HEAD lcluster, or PLAIN for data stored uncompressed) and at
which byte (``clusterofs``), or that it only continues one (NONHEAD). An extent runs from its head to
the next head, or to the end of the file, and is the decoded form of one physical cluster (pcluster):
one block, or with big pclusters as many blocks as the first NONHEAD after its head records (CBLKCNT).
Here every index of a file is decoded front to back and the extents are read off in order, which is
all a whole-file reader needs. Sans-I/O.

The writing side is here too, over the same structures: :func:`build_full_map` lays out the map header
and legacy indexes of a file cut into pclusters, and :func:`build_compr_cfgs` / :func:`parse_compr_cfgs`
the per-algorithm configuration records that follow the superblock.

With ztailpacking the last extent's pcluster is not in a block of its own but inline, right after the
indexes; with fragments the last extent (or the whole file) is a range of the packed inode's data.
Refused by name: the extent-record format of newer mkfs.erofs, and lclusters larger than a block.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import FormatError
from ._struct import Layout, round_up

LAYOUT_COMPRESSED_FULL = 1
LAYOUT_COMPRESSED_COMPACT = 3

ADVISE_COMPACTED_2B = 0x1
ADVISE_EXTENTS = 0x1  # on COMPRESSED_FULL inodes
ADVISE_BIG_PCLUSTER_1 = 0x2
ADVISE_BIG_PCLUSTER_2 = 0x4
ADVISE_INLINE_PCLUSTER = 0x8
ADVISE_INTERLACED_PCLUSTER = 0x10
ADVISE_FRAGMENT_PCLUSTER = 0x20

TYPE_PLAIN, TYPE_HEAD1, TYPE_NONHEAD, TYPE_HEAD2 = range(4)
#: In a NONHEAD index: this one records the block count of its pcluster instead of a distance.
D0_CBLKCNT = 1 << 11
#: In a full HEAD index: the extent uses a part of what its pcluster decodes to (deduplicated).
PARTIAL_REF = 1 << 15

#: The largest pcluster (stored) and extent (decoded) EROFS allows.
PCLUSTER_MAX_SIZE = 1 << 20
PCLUSTER_MAX_DSIZE = 12 << 20

ALG_LZ4, ALG_LZMA, ALG_DEFLATE, ALG_ZSTD = range(4)
#: How a PLAIN extent is stored: as is from the start of its block, or rotated by its offset in the block.
FMT_SHIFTED, FMT_INTERLACED = 4, 5
#: An extent kept in the packed inode's data (fragments): ``offset`` is where in that data.
FMT_FRAGMENT = 6
FORMAT_NAMES = {
    FMT_FRAGMENT: "fragment",
    ALG_LZ4: "lz4",
    ALG_LZMA: "lzma",
    ALG_DEFLATE: "deflate",
    ALG_ZSTD: "zstd",
    FMT_SHIFTED: "uncompressed",
    FMT_INTERLACED: "uncompressed-interlaced",
}

MAP_HEADER = struct.Struct(
    "<IHBB"
)  # h_fragmentoff / (reserved, h_idata_size), h_advise, algorithmtype, clusterbits
#: Legacy indexes start this far after the (8-byte aligned) map header: the header and 8 reserved bytes.
FULL_MAP_HEADER_SIZE = MAP_HEADER.size + 8
#: One legacy ("full") lcluster index: di_advise (type in the low 2 bits), di_clusterofs, and the head's
#: block address, or for a NONHEAD delta[0] (distance back to its head, or CBLKCNT) and delta[1] (distance
#: to the next head) as two u16.
FULL_INDEX = struct.Struct("<HHI")


@dataclass(frozen=True)
class ZExtent:
    """Bytes ``[file_offset, file_offset+length)`` of a file: pcluster ``[offset, offset+stored)`` of the
    image decoded with ``fmt`` (an algorithm or FMT_SHIFTED / FMT_INTERLACED); ``partial``: only the first
    ``length`` bytes of what it decodes to are this extent's."""

    file_offset: int
    length: int
    offset: int
    stored: int
    fmt: int
    partial: bool


def _refuse(nid: int, what: str, offset: int | None = None, value=None) -> FormatError:
    return FormatError(
        "erofs map header", f"nid {nid}: unsupported EROFS feature: {what}", offset=offset, value=value
    )


def extents(buf, nid: int, layout: int, size: int, inode_end: int, bs: int) -> list[ZExtent]:
    """The extents of a compressed file of ``size`` bytes whose inode and xattrs end at ``inode_end``, in an
    image of ``bs``-byte blocks."""
    if size == 0:
        return []
    hpos = round_up(inode_end, 8)
    if hpos + MAP_HEADER.size > len(buf):
        raise FormatError("erofs map header", f"nid {nid}: lies past the image", offset=hpos)
    head = bytes(buf[hpos : hpos + MAP_HEADER.size])
    _, advise, algs, clusterbits = MAP_HEADER.unpack(head)
    if clusterbits & 0x80:
        # The whole file is in the packed inode; the rest of the header is where (bit 63 aside).
        where = int.from_bytes(head, "little") ^ (1 << 63)
        return [ZExtent(0, size, where, 0, FMT_FRAGMENT, False)]
    if layout == LAYOUT_COMPRESSED_FULL and advise & ADVISE_EXTENTS:
        raise _refuse(nid, "extent records (mkfs.erofs -E48bit or --blobdev style maps)", hpos + 4, advise)
    fragment = bool(advise & ADVISE_FRAGMENT_PCLUSTER)
    if fragment and advise & ADVISE_INLINE_PCLUSTER:
        raise FormatError(
            "erofs map header",
            f"nid {nid}: both a fragment and an inline tail",
            field="h_advise",
            offset=hpos + 4,
            value=advise,
        )
    # ztailpacking: the last extent's pcluster is h_idata_size bytes inline, right after the indexes.
    idata = struct.unpack_from("<H", head, 2)[0] if advise & ADVISE_INLINE_PCLUSTER else 0
    if advise & ADVISE_INLINE_PCLUSTER and not 0 < idata <= bs:
        raise FormatError(
            "erofs map header",
            f"nid {nid}: inline pcluster size out of range",
            field="h_idata_size",
            offset=hpos + 2,
            value=idata,
        )
    if clusterbits & 0x0F:
        raise _refuse(nid, "logical clusters larger than a block", hpos + 7, clusterbits)
    count = -(-size // bs)
    if layout == LAYOUT_COMPRESSED_FULL:
        lcs, index_end = _full_indexes(buf, nid, hpos + FULL_MAP_HEADER_SIZE, count)
    else:
        big1, big2 = bool(advise & ADVISE_BIG_PCLUSTER_1), bool(advise & ADVISE_BIG_PCLUSTER_2)
        if big1 != big2:
            raise FormatError(
                "erofs map header",
                f"nid {nid}: compact indexes need both or neither big-pcluster flag",
                field="h_advise",
                offset=hpos + 4,
                value=advise,
            )
        lcs, index_end = _compact_indexes(buf, nid, hpos + MAP_HEADER.size, count, advise, big1)
    out = _extents(nid, lcs, size, advise, algs, bs, fragment)
    if fragment:
        # The tail extent is in the packed inode at h_fragmentoff (legacy indexes: the tail head's blkaddr
        # holds its high 32 bits).
        tail = out[-1]
        where = struct.unpack_from("<I", head)[0]
        if layout == LAYOUT_COMPRESSED_FULL:
            where |= (lcs[tail.file_offset // bs][2] or 0) << 32
        out[-1] = ZExtent(tail.file_offset, tail.length, where, 0, FMT_FRAGMENT, False)
    if idata:
        if index_end % bs + idata > bs or index_end + idata > len(buf):
            raise FormatError(
                "erofs map header",
                f"nid {nid}: inline pcluster crosses a block or the end of the image",
                field="h_idata_size",
                offset=hpos + 2,
                value=idata,
            )
        tail = out[-1]
        if tail.fmt in (FMT_SHIFTED, FMT_INTERLACED) and tail.length > idata:
            raise FormatError(
                "erofs map header",
                f"nid {nid}: uncompressed tail larger than its inline pcluster",
                value=idata,
            )
        out[-1] = ZExtent(tail.file_offset, tail.length, index_end, idata, tail.fmt, tail.partial)
    return out


# One decoded lcluster index: (type, clusterofs or raw NONHEAD value, pblk of a head or None, partial ref).
_Lcluster = tuple[int, int, "int | None", bool]


def _full_indexes(buf, nid: int, start: int, count: int) -> list[_Lcluster]:
    if start + FULL_INDEX.size * count > len(buf):
        raise FormatError(
            "erofs lcluster index",
            f"nid {nid}: {count} indexes run past the image",
            offset=start,
            value=count,
        )
    out: list[_Lcluster] = []
    end = start + FULL_INDEX.size * count
    for advise, clusterofs, u in FULL_INDEX.iter_unpack(buf[start:end]):
        ltype = advise & 3
        if ltype == TYPE_NONHEAD:
            out.append((ltype, u & 0xFFFF, None, False))  # delta[0] (or CBLKCNT) in the low half
        else:
            out.append((ltype, clusterofs, u, bool(advise & PARTIAL_REF)))
    return out, end


def _bits(pack: bytes, lobits: int, encodebits: int, i: int) -> tuple[int, int]:
    pos = encodebits * i
    v = int.from_bytes(pack[pos // 8 : pos // 8 + 4].ljust(4, b"\0"), "little") >> (pos & 7)
    return (v >> lobits) & 3, v & ((1 << lobits) - 1)


def _compact_indexes(buf, nid: int, ebase: int, count: int, advise: int, big: bool) -> list[_Lcluster]:
    """Compact indexes: packs of 2 entries in 8 bytes (4B) or 16 in 32 bytes (2B), each ending with a base
    block address; a head's block is that plus the blocks of the pclusters the pack records before it
    (plus one without big pclusters)."""
    initial = ((32 - ebase % 32) // 4) & 7  # 4B entries that bring the 2B packs to 32-byte alignment
    n2b = (count - initial) // 16 * 16 if advise & ADVISE_COMPACTED_2B and initial < count else 0
    # An entry's low bits hold a clusterofs or a NONHEAD count with its CBLKCNT flag (bit 11): 12 bits for
    # every lcluster size read here (one block of 512 to 4096 bytes).
    lobits = 12
    runs = []  # (first lcn, entries, pack bytes, entries per pack)
    pos, lcn = ebase, 0
    for n, vcnt, psize in (
        (min(initial, count), 2, 8),
        (n2b, 16, 32),
        (count - min(initial, count) - n2b, 2, 8),
    ):
        packs = -(-n // vcnt) if n > 0 else 0
        runs.append((lcn, n, pos, vcnt, psize, packs))
        pos += packs * psize
        lcn += n
    if pos > len(buf):
        raise FormatError(
            "erofs lcluster index",
            f"nid {nid}: {count} compact indexes run past the image",
            offset=ebase,
            value=count,
        )
    out: list[_Lcluster] = []
    for _, n, start, vcnt, psize, packs in runs:
        encodebits = (psize - 4) * 8 // vcnt
        for p in range(packs):
            pack = bytes(buf[start + p * psize : start + (p + 1) * psize])
            base = struct.unpack_from("<I", pack, psize - 4)[0]
            entries = [_bits(pack, lobits, encodebits, i) for i in range(vcnt)]
            # Without big pclusters the base is the block before the pack's first pcluster.
            blocks = 0 if big else 1
            for i in range(min(vcnt, n - p * vcnt)):
                ltype, lo = entries[i]
                if ltype == TYPE_NONHEAD:
                    out.append((ltype, lo, None, False))
                    if big and lo & D0_CBLKCNT:
                        # Counted here instead of as one block at its head (when the head is in this pack).
                        blocks += (lo & ~D0_CBLKCNT) - (
                            1 if i > 0 and entries[i - 1][0] != TYPE_NONHEAD else 0
                        )
                else:
                    out.append((ltype, lo, base + blocks, False))
                    blocks += 1
    return out, pos


def _extents(
    nid: int, lcs: list[_Lcluster], size: int, advise: int, algs: int, bs: int, fragment: bool = False
) -> list[ZExtent]:
    """The extents the heads delimit; with ``fragment`` the last one is left for the caller to place."""
    heads = [k for k, lc in enumerate(lcs) if lc[0] != TYPE_NONHEAD]
    if not heads or heads[0] != 0 or lcs[0][1] != 0:
        raise FormatError(
            "erofs lcluster index", f"nid {nid}: the file does not start with a head lcluster", value=0
        )
    big1, big2 = bool(advise & ADVISE_BIG_PCLUSTER_1), bool(advise & ADVISE_BIG_PCLUSTER_2)
    starts = []
    for k in heads:
        ltype, clusterofs, _, _ = lcs[k]
        if clusterofs >= bs:
            raise FormatError(
                "erofs lcluster index",
                f"nid {nid} lcluster {k}: clusterofs past the lcluster",
                value=clusterofs,
            )
        starts.append(k * bs + clusterofs)
    out = []
    for j, k in enumerate(heads):
        ltype, _, pblk, partial = lcs[k]
        la = starts[j]
        end = min(starts[j + 1], size) if j + 1 < len(heads) else size
        if la >= size and j + 1 == len(heads):
            break  # the last lcluster's head may start at the end of the file: it has no bytes to map
        if end <= la:
            raise FormatError("erofs lcluster index", f"nid {nid} lcluster {k}: extent of no bytes", value=la)
        if fragment and end == size:
            out.append(ZExtent(la, end - la, 0, 0, FMT_FRAGMENT, False))
            break
        big = big1 if ltype == TYPE_HEAD1 else big2
        blocks = 1
        if big and k + 1 < len(lcs) and (k + 1) * bs < size:
            ntype, lo, _, _ = lcs[k + 1]
            if ntype == TYPE_NONHEAD:
                if not lo & D0_CBLKCNT:
                    raise FormatError(
                        "erofs lcluster index",
                        f"nid {nid} lcluster {k + 1}: a big pcluster's first NONHEAD lacks its block count",
                        value=lo,
                    )
                blocks = lo & ~D0_CBLKCNT
        stored = blocks * bs
        if not 0 < stored <= PCLUSTER_MAX_SIZE:
            raise FormatError(
                "erofs lcluster index",
                f"nid {nid} lcluster {k}: pcluster size over the 1 MiB limit",
                value=stored,
            )
        if end - la > PCLUSTER_MAX_DSIZE:
            raise FormatError(
                "erofs lcluster index",
                f"nid {nid} lcluster {k}: extent decodes to more than 12 MiB",
                value=end - la,
            )
        if ltype == TYPE_PLAIN:
            fmt = FMT_INTERLACED if advise & ADVISE_INTERLACED_PCLUSTER else FMT_SHIFTED
            if end - la > stored:
                raise FormatError(
                    "erofs lcluster index",
                    f"nid {nid} lcluster {k}: uncompressed extent larger than its pcluster",
                )
        else:
            fmt = algs & 0xF if ltype == TYPE_HEAD1 else algs >> 4
            if fmt > ALG_ZSTD:
                raise FormatError(
                    "erofs map header",
                    f"nid {nid}: unknown compression algorithm",
                    field="h_algorithmtype",
                    value=fmt,
                )
        out.append(ZExtent(la, end - la, pblk * bs, stored, fmt, partial))
    return out


# ---------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class Pcluster:
    """One pcluster of a file being written, in file order: the next ``length`` bytes of the file, stored
    in ``blocks`` blocks, compressed (with the file's algorithm) or ``plain`` (as is, from the block's
    start)."""

    length: int
    blocks: int
    plain: bool


def full_map_size(size: int, bs: int) -> int:
    """Bytes of the map header and legacy indexes of a ``size``-byte file (one index per lcluster)."""
    return FULL_MAP_HEADER_SIZE + FULL_INDEX.size * -(-size // bs)


def build_full_map(pclusters: list[Pcluster], blkaddr: int, alg: int, bs: int, big_pcluster: bool) -> bytes:
    """The map header and legacy indexes of a file cut into ``pclusters`` stored one after another from
    block ``blkaddr``, in an image of ``bs``-byte blocks whose lclusters are one block.

    Every lcluster an extent starts in gets a head index (PLAIN or HEAD1) with the byte in it where the
    extent starts; every other lcluster it covers a NONHEAD index with the distance back to the head and
    forward to the next one. With ``big_pcluster`` the first NONHEAD records the pcluster's block count
    instead (CBLKCNT), which readers take as a distance of 1; a pcluster without a NONHEAD after its head
    is one block. A last extent that ends inside an lcluster it did not start in leaves that lcluster to a
    PLAIN index whose clusterofs is the end of the file: the extent after it, of no bytes.
    """
    bits = bs.bit_length() - 1
    advise = ADVISE_BIG_PCLUSTER_1 if big_pcluster else 0
    out = bytearray(MAP_HEADER.pack(0, advise, alg, 0))
    out += bytes(FULL_MAP_HEADER_SIZE - MAP_HEADER.size)
    clusterofs = 0
    pblk = blkaddr
    for pc in pclusters:
        if pc.length <= 0 or pc.blocks <= 0:
            raise ValueError(f"pcluster of {pc.length} bytes in {pc.blocks} blocks")
        if pc.blocks > 1 and not big_pcluster:
            raise ValueError("a pcluster of more than one block needs big pclusters")
        if pc.blocks > 1 and clusterofs + pc.length < 2 * bs:
            # Its block count would have no NONHEAD to live in (a pcluster no larger than its extent
            # cannot save a block anyway).
            raise ValueError(f"a {pc.blocks}-block pcluster of a {pc.length}-byte extent")
        head = TYPE_PLAIN if pc.plain else TYPE_HEAD1
        count = pc.length
        later = (clusterofs + count) >> bits  # lclusters after the head one this extent reaches
        if not later:
            # The extent ends in the lcluster it starts in: only at the end of the file.
            out += FULL_INDEX.pack(head, clusterofs, pblk)
            clusterofs = 0
        else:
            # Every index of the extent carries its head's clusterofs (readers use it on heads only).
            first = clusterofs
            back = 0
            while True:
                if back == 0:
                    out += FULL_INDEX.pack(head, first, pblk)
                elif back == 1 and big_pcluster:
                    out += FULL_INDEX.pack(TYPE_NONHEAD, first, (pc.blocks | D0_CBLKCNT) | later << 16)
                else:
                    # A distance as large as the CBLKCNT bit would read as a block count: readers walk
                    # back from the largest distance below it instead.
                    d0 = min(back, D0_CBLKCNT - 1)
                    out += FULL_INDEX.pack(TYPE_NONHEAD, first, d0 | (later & 0xFFFF) << 16)
                count -= bs - clusterofs
                clusterofs = 0
                back += 1
                later -= 1
                if count < bs:
                    break
            clusterofs = count
        pblk += pc.blocks
    if clusterofs:
        out += FULL_INDEX.pack(TYPE_PLAIN, clusterofs, 0)
    return bytes(out)


#: The configuration records of a superblock with COMPR_CFGS: one per algorithm of available_compr_algs,
#: in algorithm order, from the end of the superblock, each a u16 length and that many bytes, 4-byte aligned.
COMPR_CFGS = {
    ALG_LZ4: Layout(
        "erofs lz4 configuration",
        [("max_distance", "H"), ("max_pclusterblks", "H"), ("_reserved", "10x")],
    ),
    ALG_LZMA: Layout("erofs lzma configuration", [("dict_size", "I"), ("format", "H"), ("_reserved", "8x")]),
    ALG_DEFLATE: Layout("erofs deflate configuration", [("windowbits", "B"), ("_reserved", "5x")]),
    # windowlog is stored less zstd's smallest window log (10).
    ALG_ZSTD: Layout("erofs zstd configuration", [("format", "B"), ("windowlog", "B"), ("_reserved", "4x")]),
}
ZSTD_WINDOWLOG_BASE = 10


def build_compr_cfgs(configs: dict[int, dict[str, int]]) -> bytes:
    """The configuration records of the algorithms in ``configs`` (algorithm -> its fields), to be written
    right after the superblock (which is 128 bytes: no extension slots)."""
    out = bytearray()
    for alg in sorted(configs):
        layout = COMPR_CFGS[alg]
        out += bytes(round_up(len(out), 4) - len(out))
        out += struct.pack("<H", layout.size) + layout.pack(configs[alg])
    return bytes(out)


def parse_compr_cfgs(buf, start: int, algs: int) -> dict[int, dict[str, int]]:
    """The configuration records at ``start`` (the end of the superblock) of the algorithms set in the
    ``algs`` bitmap, each checked to be at least as long as its structure."""
    out = {}
    pos = start
    for alg in sorted(COMPR_CFGS):
        if not algs >> alg & 1:
            continue
        layout = COMPR_CFGS[alg]
        pos = round_up(pos, 4)
        if pos + 2 > len(buf):
            raise FormatError(layout.name, "lies past the image", offset=pos)
        (size,) = struct.unpack("<H", buf[pos : pos + 2])
        if size < layout.size:
            raise FormatError(layout.name, "record shorter than its structure", offset=pos, value=size)
        out[alg] = layout.unpack(buf, pos + 2)
        pos += 2 + size
    return out
