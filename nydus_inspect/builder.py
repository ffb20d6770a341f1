"""Lay out and serialise a RAFS v6 bootstrap from a Node tree.

Pure function of its inputs (no I/O): ``build_bootstrap(root, blobs, ...)``
returns the bootstrap bytes. The layout follows EROFS rules (32-byte inode
slots, inline tails inside one block, chunk indexes 8-byte aligned after the
inode) and nydus's conventions (extended inodes, root nid 128, chunk table
after the metadata, total size a multiple of 4096). It is not nydus's exact
allocator, which readers do not depend on.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .chunks.ref import ChunkRef
from .codecs import Compressor
from .digests import Digester
from .formats import blob_meta, erofs_zmap, rafs_v6
from .formats._struct import round_up
from .formats.rafs_v6 import (
    BLOCK_SIZE,
    BlobTableEntry,
    DeviceSlot,
    Dirent,
    ExtSuperBlock,
    SuperBlock,
)
from .model import BLK, CHR, DIR, FT_OF_TYPE, REG, SYMLINK, Node

INODE_SIZE = 64  # tar-rafs and merge always write extended inodes
#: mapped_blkaddr alignment of v2.3 (512 KiB).
MAPPED_ALIGN = 0x80000
_INODE = rafs_v6.INODE_EXTENDED.struct
_CHUNK_RECORD = rafs_v6.CHUNK_TABLE_ENTRY.struct
assert _INODE.size == INODE_SIZE and rafs_v6.INODE_EXTENDED.names == [
    "i_format",
    "i_xattr_icount",
    "i_mode",
    "i_size",
    "i_u",
    "i_ino",
    "i_uid",
    "i_gid",
    "i_mtime",
    "i_mtime_nsec",
    "i_nlink",
]
assert rafs_v6.CHUNK_TABLE_ENTRY.names == [
    "block_id",
    "blob_index",
    "flags",
    "compressed_size",
    "uncompressed_size",
    "compressed_offset",
    "uncompressed_offset",
    "file_offset",
    "index",
    "crc32",
]


@dataclass(slots=True)
class _Slot:
    """A node's place in the bootstrap being laid out (one per inode: slots, and no list of its own
    unless it has blocks or dirents)."""

    node: Node
    nid: int = 0
    offset: int = 0
    ino: int = 0
    names: int = 0
    xattrs: bytes = b""
    layout: int = rafs_v6.LAYOUT_FLAT_PLAIN
    size: int = 0
    tail: bytes = b""  # inline data (dir tail block or symlink target)
    blocks: list[bytes] | tuple = ()  # full blocks stored out of line
    blkaddr: int = 0
    dirents: list[tuple[bytes, _Slot]] | tuple = ()
    parent: _Slot | None = None
    subdirs: int = 0
    #: Plain EROFS only: full blocks of a regular file's data, laid out after all the metadata.
    data_blocks: int = 0
    #: Compressed EROFS files: the map header and lcluster indexes after the inode (their size while
    #: planning; the writer fills them in once ``blkaddr`` is known).
    zmap: bytes = b""


def _order(root: Node) -> tuple[list[_Slot], int]:
    """Unique nodes in nydus's order: a directory's non-directory children, then its sub-directories."""
    slots: list[_Slot] = []
    by_id: dict[int, _Slot] = {}
    names = 0

    # No slot keeps its path: the layout needs none, and the paths of a deep tree sum to depth squared.
    def visit(node: Node, parent: _Slot | None) -> _Slot:
        nonlocal names
        names += 1
        slot = by_id.get(id(node))
        if slot is None:
            slot = _Slot(node=node, parent=parent, ino=len(slots) + 1)
            by_id[id(node)] = slot
            slots.append(slot)
        slot.names += 1
        return slot

    root_slot = visit(root, None)
    root_slot.parent = root_slot
    queue = [root_slot]
    while queue:
        dslot = queue.pop()
        kids = sorted((dslot.node.children or {}).items())
        child_slots: list[tuple[bytes, _Slot]] = []
        for name, child in kids:
            if child.type != DIR:
                child_slots.append((name, visit(child, dslot)))
        subdirs = []
        for name, child in kids:
            if child.type == DIR:
                s = visit(child, dslot)
                child_slots.append((name, s))
                subdirs.append(s)
        dslot.dirents = sorted(child_slots, key=lambda t: t[0])
        dslot.subdirs = len(subdirs)
        # Depth-first: the first sub-directory is laid out next.
        queue.extend(reversed(subdirs))
    return slots, names


def _prepare(slot: _Slot, flat_files: str | None = None, compressed: dict[int, int] | None = None) -> None:
    node = slot.node
    slot.xattrs = rafs_v6.build_xattrs(node.xattrs)
    fixed = INODE_SIZE + len(slot.xattrs)
    if node.type == DIR:
        ents = [Dirent(b".", 0, rafs_v6.FT_DIR), Dirent(b"..", 0, rafs_v6.FT_DIR)]
        ents += [Dirent(name, 0, FT_OF_TYPE[s.node.type]) for name, s in slot.dirents]
        ents.sort(key=lambda d: d.name)
        blocks, size = rafs_v6.build_dir_blocks(ents)
        slot.size = size
        _place_data(slot, blocks, size, fixed)
    elif node.type == SYMLINK:
        target = node.target or b""
        slot.size = len(target)
        blocks = [target[i : i + BLOCK_SIZE] for i in range(0, len(target), BLOCK_SIZE)]
        _place_data(slot, blocks, len(target), fixed)
    elif node.type == REG and flat_files and compressed and id(node) in compressed:
        # Compressed EROFS: the file's pclusters lie after the metadata like flat data, and its map
        # (header and one legacy index per block) follows the inode.
        slot.size = node.size
        slot.layout = erofs_zmap.LAYOUT_COMPRESSED_FULL
        slot.data_blocks = compressed[id(node)]
        slot.zmap = bytes(erofs_zmap.full_map_size(node.size, BLOCK_SIZE))
    elif node.type == REG and flat_files:
        # Plain EROFS: the data lies in the image itself. "plain" keeps every byte in whole blocks
        # (containerd asks mkfs.erofs for -Enoinline_data); "inline" packs the tail after the inode when
        # it fits, and the caller fills ``tail`` with the file's last bytes before rendering.
        slot.size = node.size
        tail_len = node.size % BLOCK_SIZE
        if flat_files == "inline" and tail_len and fixed + tail_len <= BLOCK_SIZE:
            slot.layout = rafs_v6.LAYOUT_FLAT_INLINE
            slot.tail = bytes(tail_len)
            slot.data_blocks = node.size // BLOCK_SIZE
        else:
            slot.layout = rafs_v6.LAYOUT_FLAT_PLAIN
            slot.data_blocks = -(-node.size // BLOCK_SIZE)
    elif node.type == REG:
        slot.layout = rafs_v6.LAYOUT_CHUNK_BASED
        slot.size = node.size
    else:
        slot.layout = rafs_v6.LAYOUT_FLAT_PLAIN
        slot.size = 0


def _place_data(slot: _Slot, blocks: list[bytes], size: int, fixed: int) -> None:
    tail_len = size % BLOCK_SIZE
    if tail_len and fixed + tail_len <= BLOCK_SIZE:
        slot.layout = rafs_v6.LAYOUT_FLAT_INLINE
        slot.tail = blocks[-1][:tail_len]
        slot.blocks = [b.ljust(BLOCK_SIZE, b"\0") for b in blocks[:-1]]
    else:
        slot.layout = rafs_v6.LAYOUT_FLAT_PLAIN
        slot.blocks = [b.ljust(BLOCK_SIZE, b"\0") for b in blocks]


def _footprint(slot: _Slot, chunk_size: int) -> tuple[int, int]:
    """(bytes that must stay inside one block, total bytes of the inode record)."""
    fixed = INODE_SIZE + len(slot.xattrs)
    if slot.layout == rafs_v6.LAYOUT_CHUNK_BASED:
        n = -(-slot.size // chunk_size)
        return fixed, round_up(fixed, 8) + 8 * n
    if slot.layout == erofs_zmap.LAYOUT_COMPRESSED_FULL:
        return fixed, round_up(fixed, 8) + len(slot.zmap)
    inline = fixed + len(slot.tail)
    return inline, inline


@dataclass
class Plan:
    """Where everything but the chunk table goes: computed from the tree alone (file sizes, not their
    chunks), so that pack can lay a bootstrap out while its workers are still compressing."""

    slots: list[_Slot]
    names: int
    nblobs: int
    chunk_size: int
    prefetch: bool
    blob_table_off: int
    prefetch_off: int
    prefetch_nids: list[int]
    meta_start: int
    data_end: int  # end of the inodes and data blocks: the chunk table starts at the next block
    #: With ``render``: the bootstrap up to ``data_end`` with every inode, xattr, directory and symlink
    #: written, all but the chunk indexes of regular files (the only part that needs their chunks).
    rendered: bytearray | None = None
    explicit_uid_gid: bool = True
    #: Plain EROFS (``flat_files``): end of the regular files' data blocks, which follow ``data_end``.
    files_end: int = 0


def plan_bootstrap(
    root: Node,
    nblobs: int,
    *,
    chunk_size: int,
    prefetch: bool = False,
    render: bool = False,
    explicit_uid_gid: bool = True,
    flat_files: str | None = None,
    compressed: dict[int, int] | None = None,
) -> Plan:
    """Order, prepare and place every inode and data block of the tree under ``root``; with ``render``,
    also write them (see :attr:`Plan.rendered`), so that building the bootstrap is left with the chunks.

    ``flat_files`` ("plain" or "inline"): a plain EROFS image, regular files stored flat in the image
    (their blocks after ``data_end``, up to ``files_end``) instead of as chunks of a blob. ``compressed``:
    the regular files of such an image that are stored compressed (``id`` of their node -> blocks of their
    pclusters), laid out the same way, with room for their map after the inode.
    """
    slots, names = _order(root)
    for slot in slots:
        _prepare(slot, flat_files, compressed)

    if nblobs:
        blob_table_off = round_up(rafs_v6.DEVICE_TABLE_OFFSET + rafs_v6.DEVICE.size * nblobs, BLOCK_SIZE)
        prefetch_off = blob_table_off + rafs_v6.BLOB_ENTRY.size * nblobs
        prefetch_nids = [rafs_v6.ROOT_NID] if prefetch else []
        meta_start = round_up(prefetch_off + 4 * len(prefetch_nids), BLOCK_SIZE)
    else:
        blob_table_off, prefetch_off, prefetch_nids, meta_start = BLOCK_SIZE, 0, [], 0

    # Inodes from nid 128 (meta_start + 4096); an inode and its inline part never cross a block.
    cursor = meta_start + BLOCK_SIZE
    for slot in slots:
        must, total = _footprint(slot, chunk_size)
        # Only an inline tail must share the inode's block; EROFS reads an inode and its xattrs across
        # blocks, so a record larger than a block (many or big xattrs) starts on a fresh block and spans.
        if cursor % BLOCK_SIZE + min(must, BLOCK_SIZE) > BLOCK_SIZE:
            cursor = round_up(cursor, BLOCK_SIZE)
        slot.offset = cursor
        slot.nid = (cursor - meta_start) // 32
        cursor = round_up(cursor + total, 32)
    assert slots[0].nid == rafs_v6.ROOT_NID

    # Full data blocks (directories, long symlinks) after the inodes.
    cursor = round_up(cursor, BLOCK_SIZE)
    for slot in slots:
        if slot.blocks:
            slot.blkaddr = cursor // BLOCK_SIZE
            cursor += BLOCK_SIZE * len(slot.blocks)
    files_end = cursor
    for slot in slots:
        if slot.data_blocks:
            slot.blkaddr = files_end // BLOCK_SIZE
            files_end += BLOCK_SIZE * slot.data_blocks
    plan = Plan(
        slots,
        names,
        nblobs,
        chunk_size,
        prefetch,
        blob_table_off,
        prefetch_off,
        prefetch_nids,
        meta_start,
        cursor,
        explicit_uid_gid=explicit_uid_gid,
        files_end=files_end,
    )
    if render:
        render_plan(plan)
    return plan


def render_plan(plan: Plan) -> None:
    """Write every inode, xattr, directory and symlink of the plan into :attr:`Plan.rendered`."""
    plan.rendered = bytearray(plan.data_end)
    chunk_bits = plan.chunk_size.bit_length() - 1
    for slot in plan.slots:
        _write_inode(plan.rendered, slot, plan.explicit_uid_gid, chunk_bits)


def build_bootstrap(
    root: Node,
    blobs: list[BlobTableEntry],
    *,
    chunk_size: int,
    compressor: Compressor,
    digester: Digester,
    explicit_uid_gid: bool = True,
    prefetch: bool = False,
    force_has_xattr: bool = False,
    plan: Plan | None = None,
    writable: bool = False,
    table: TableChunks | None = None,
) -> bytes | bytearray:
    """Serialise the tree under ``root``; regular files' ``chunks`` must be set.

    ``plan``: this tree's :func:`plan_bootstrap`, made earlier with the same blob count, chunk size
    and prefetch (used once: writing updates it). ``writable``: return the bytearray it was built in,
    not a bytes copy of it (a second bootstrap-sized buffer at the peak of a pack). ``table``: where
    the chunk table's chunks come from (:data:`TableChunks`; by default, :func:`table_chunks`).
    """
    table = table or table_chunks
    nblobs = len(blobs)
    if plan is None or (plan.nblobs, plan.chunk_size, plan.prefetch) != (nblobs, chunk_size, prefetch):
        plan = plan_bootstrap(root, nblobs, chunk_size=chunk_size, prefetch=prefetch)
    rendered = plan.rendered if plan.explicit_uid_gid == explicit_uid_gid else None
    plan.rendered = None  # used once: the bootstrap is built in it
    slots, names = plan.slots, plan.names
    blob_table_off, prefetch_off, prefetch_nids = plan.blob_table_off, plan.prefetch_off, plan.prefetch_nids
    meta_start, cursor = plan.meta_start, plan.data_end

    # Chunk table: one record per distinct (digest, blob), sorted as v2.3 does.
    chunk_table_off = round_up(cursor, BLOCK_SIZE)
    _, records = table(slots)
    ctable = bytearray()
    for c in records:
        ctable += chunk_record(c)
    total_size = round_up(chunk_table_off + len(ctable), BLOCK_SIZE)
    if rendered is not None:
        buf = rendered
        buf.extend(bytes(total_size - len(buf)))
    else:
        buf = bytearray(total_size)
    buf[chunk_table_off : chunk_table_off + len(ctable)] = ctable

    has_xattr = force_has_xattr or any(slot.xattrs for slot in slots)
    flags = compressor.super_flag | digester.super_flag | rafs_v6.ENCRYPTION_NONE
    if explicit_uid_gid:
        flags |= rafs_v6.EXPLICIT_UID_GID
    if has_xattr:
        flags |= rafs_v6.HAS_XATTR
    if all(b.features & blob_meta.INLINED_CHUNK_DIGEST for b in blobs):
        flags |= rafs_v6.INLINED_CHUNK_DIGEST

    # Devices: one per blob, mapped after the bootstrap at 512 KiB-aligned addresses.
    prev_end = total_size
    dev_blocks = 0
    for i, b in enumerate(blobs):
        blocks = b.uncompressed_size // BLOCK_SIZE
        mapped = round_up(prev_end, MAPPED_ALIGN) // BLOCK_SIZE
        prev_end = (mapped + blocks) * BLOCK_SIZE
        dev_blocks += blocks
        slot_off = rafs_v6.DEVICE_TABLE_OFFSET + i * rafs_v6.DEVICE.size
        buf[slot_off : slot_off + rafs_v6.DEVICE.size] = DeviceSlot(b.blob_id, blocks, mapped).build()
        off = blob_table_off + i * rafs_v6.BLOB_ENTRY.size
        buf[off : off + rafs_v6.BLOB_ENTRY.size] = b.build()
    for i, nid in enumerate(prefetch_nids):
        struct.pack_into("<I", buf, prefetch_off + 4 * i, nid)

    sb = SuperBlock(
        s_inos=names,
        s_blocks=dev_blocks,
        s_meta_blkaddr=meta_start // BLOCK_SIZE,
        s_extra_devices=nblobs,
    )
    buf[rafs_v6.SUPERBLOCK_OFFSET : rafs_v6.SUPERBLOCK_OFFSET + rafs_v6.SUPERBLOCK.size] = sb.build()
    ext = ExtSuperBlock(
        s_flags=flags,
        s_blob_table_offset=blob_table_off,
        s_blob_table_size=rafs_v6.BLOB_ENTRY.size * nblobs,
        s_chunk_size=chunk_size,
        s_chunk_table_offset=chunk_table_off,
        s_chunk_table_size=len(ctable),
        s_prefetch_table_offset=prefetch_off if prefetch_nids else 0,
        s_prefetch_table_size=4 * len(prefetch_nids),
    )
    buf[rafs_v6.EXT_SUPERBLOCK_OFFSET : rafs_v6.EXT_SUPERBLOCK_OFFSET + rafs_v6.EXT_SUPERBLOCK.size] = (
        ext.build()
    )

    chunk_bits = chunk_size.bit_length() - 1
    for slot in slots:
        if rendered is None:
            _write_inode(buf, slot, explicit_uid_gid, chunk_bits)
        if slot.layout == rafs_v6.LAYOUT_CHUNK_BASED:
            _write_chunk_indexes(buf, slot)
    return buf if writable else bytes(buf)


#: ``table(slots)``: how many records the chunk table of these slots (in layout order) has, and its chunks in
#: table order: one per distinct (digest, blob), sorted by them, each the first chunk of its pair in layout
#: order (so with that chunk's file offset), as v2.3 writes it.
TableChunks = Callable[[list[_Slot]], tuple[int, Iterable[ChunkRef]]]


def table_chunks(slots: list[_Slot]) -> tuple[int, Iterable[ChunkRef]]:
    """The chunk table's chunks (:data:`TableChunks`) from the nodes' ``chunks``."""
    records: dict[tuple[bytes, int], ChunkRef] = {}
    for slot in slots:
        for c in slot.node.chunks or ():
            records.setdefault((c.digest, c.blob_index), c)
    return len(records), [records[key] for key in sorted(records)]


def chunk_record(c: ChunkRef) -> bytes:
    """The chunk table record of ``c``."""
    flags = (rafs_v6.CHUNK_COMPRESSED if c.compressed else 0) | (
        rafs_v6.CHUNK_HAS_CRC32 if c.crc32 is not None else 0
    )
    # ChunkTableEntry(...).build(), positionally: this runs once per chunk of the image.
    return _CHUNK_RECORD.pack(
        c.digest,
        c.blob_index,
        flags,
        c.compressed_size,
        c.uncompressed_size,
        c.compressed_offset,
        c.uncompressed_offset,
        c.file_offset,
        c.ci_index,
        c.crc32 or 0,
    )


def _write_inode(buf: bytearray, slot: _Slot, explicit_uid_gid: bool, chunk_bits: int) -> None:
    node = slot.node
    if node.type == DIR:
        nlink = 2 + slot.subdirs
    elif node.type == REG:
        nlink = slot.names
    else:
        nlink = slot.names
    if slot.layout == rafs_v6.LAYOUT_CHUNK_BASED:
        i_u = rafs_v6.CHUNK_FORMAT_INDEXES | (chunk_bits - 12)
    elif slot.layout == erofs_zmap.LAYOUT_COMPRESSED_FULL:
        i_u = slot.data_blocks  # a compressed inode records how many blocks its pclusters take
    elif node.type in (CHR, BLK):
        i_u = node.rdev & 0xFFFFFFFF
    elif slot.layout == rafs_v6.LAYOUT_FLAT_INLINE and not slot.blocks and not slot.data_blocks:
        # All of the data is the inline tail, so readers never use the block address; nydus-image writes
        # the inode's own block there, and so do we, so that its bootstraps and ours are alike byte for byte.
        i_u = slot.offset // BLOCK_SIZE
    else:
        i_u = slot.blkaddr
    # Inode(...).build() + xattrs, packed in place: this runs once per inode of the image.
    off = slot.offset
    _INODE.pack_into(
        buf,
        off,
        1 | (slot.layout << 1),  # i_format: extended
        rafs_v6.xattr_icount(len(slot.xattrs)),
        node.mode & 0xFFFF,
        slot.size,
        i_u,
        slot.ino,
        node.uid if explicit_uid_gid else 0,
        node.gid if explicit_uid_gid else 0,
        max(node.mtime, 0),  # RAFS has no time before 1970 (pack warns)
        0,  # i_mtime_nsec
        nlink,
    )
    pos = off + INODE_SIZE
    if slot.xattrs:
        buf[pos : pos + len(slot.xattrs)] = slot.xattrs
        pos += len(slot.xattrs)
    if node.type == DIR:
        ents = [Dirent(b".", slot.nid, rafs_v6.FT_DIR), Dirent(b"..", slot.parent.nid, rafs_v6.FT_DIR)]
        ents += [Dirent(name, s.nid, FT_OF_TYPE[s.node.type]) for name, s in slot.dirents]
        ents.sort(key=lambda d: d.name)
        blocks, _ = rafs_v6.build_dir_blocks(ents)
        if slot.layout == rafs_v6.LAYOUT_FLAT_INLINE:
            slot.tail = blocks[-1]
            blocks = blocks[:-1]
        for i, blk in enumerate(blocks):
            start = (slot.blkaddr + i) * BLOCK_SIZE
            buf[start : start + len(blk)] = blk
    elif node.type == SYMLINK and slot.blocks:
        for i, blk in enumerate(slot.blocks):
            start = (slot.blkaddr + i) * BLOCK_SIZE
            buf[start : start + len(blk)] = blk
    if slot.layout == rafs_v6.LAYOUT_FLAT_INLINE:
        buf[pos : pos + len(slot.tail)] = slot.tail
    elif slot.layout == erofs_zmap.LAYOUT_COMPRESSED_FULL:
        pos = round_up(pos, 8)
        buf[pos : pos + len(slot.zmap)] = slot.zmap


def _write_chunk_indexes(buf: bytearray, slot: _Slot) -> None:
    """A chunk-based inode's chunk indexes, after the inode and its xattrs (8-byte aligned)."""
    pos = round_up(slot.offset + INODE_SIZE + len(slot.xattrs), 8)
    pack_into = rafs_v6.CHUNK_INDEX.pack_into
    for c in slot.node.chunks or ():
        # ChunkIndex(blob_index, ci_index, blkaddr).build(), in place.
        ci = c.ci_index
        pack_into(
            buf,
            pos,
            ci & 0xFFFF,
            ((c.blob_index + 1) & 0xFF) | ((ci >> 16) << 8),
            c.uncompressed_offset // BLOCK_SIZE,
        )
        pos += 8
