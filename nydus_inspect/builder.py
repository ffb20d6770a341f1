"""Lay out and serialise a RAFS v6 bootstrap from a Node tree (or a tree that makes its Nodes as the layout
asks for them: :class:`NodeTree`).

Pure function of its inputs (no I/O): ``build_bootstrap(root, blobs, ...)``
returns the bootstrap bytes. The layout follows EROFS rules (32-byte inode
slots, inline tails inside one block, chunk indexes 8-byte aligned after the
inode) and nydus's conventions (extended inodes, root nid 128, chunk table
after the metadata, total size a multiple of 4096). It is not nydus's exact
allocator, which readers do not depend on.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Callable, Hashable, Iterable, MutableSequence, Sequence
from dataclasses import dataclass
from typing import Protocol

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


class Slots:
    """The inodes of a bootstrap being laid out, in layout order, as columns indexed by slot (one slot per
    inode: a hard-linked node has one, however many names it has). A slot's inode number is its index plus
    one, and its nid follows from its offset (:func:`_nid`).

    Columns, not an object per slot: a layer of a million small files would hold a million of them, with an
    int object for each offset, beside its tree. What only some inodes have (xattrs, a directory's entries,
    out-of-line blocks, a compressed file's map) is kept by slot in a dict. Slots refer to each other by
    index: a pack runs with the cyclic garbage collector off."""

    def __init__(self) -> None:
        #: The tree laid out (:class:`NodeTree`, or a tree of its kind), its key of each slot, and the node of
        #: each slot (made as it is asked for, from a tree that keeps no nodes).
        self.tree = None
        self.keys: Sequence = []
        self.nodes: Sequence[Node] = []
        self.parent = array("I")  # a slot's directory (the root is its own)
        self.names = array("I")  # names of the inode in the tree
        # Set once the order is known (:meth:`_sized`).
        self.offset = array("Q")
        self.layout = bytearray()
        self.size = array("Q")
        self.blkaddr = array("Q")
        #: Plain EROFS only (empty otherwise): full blocks of a regular file's data, laid out after all the
        #: metadata.
        self.data_blocks = array("Q")
        self.xattrs: dict[int, bytes] = {}  # the xattr area of the slots that have one
        #: A directory's entries (the slot index of each, in the order of its sorted names); with the names,
        #: ``(name, slot)`` tuples would take several times the room.
        self.dirents: dict[int, array] = {}
        self.subdirs: dict[int, int] = {}
        #: Full blocks stored out of line (a directory's or a long symlink's, but an inline tail): how many;
        #: they are made again from the node when written.
        self.blocks: dict[int, int] = {}
        #: Plain EROFS, inline: a regular file's tail (its last bytes; the writer fills it in before rendering).
        self.tail: dict[int, bytes] = {}
        #: Compressed EROFS files: the map header and lcluster indexes after the inode (their size while
        #: planning; the writer fills them in once ``blkaddr`` is known).
        self.zmap: dict[int, bytes] = {}

    def __len__(self) -> int:
        return len(self.nodes)

    def _sized(self, flat_files: bool) -> None:
        n = len(self.nodes)
        self.offset = array("Q", [0]) * n
        self.layout = bytearray([rafs_v6.LAYOUT_FLAT_PLAIN]) * n
        self.size = array("Q", [0]) * n
        # 64 bits: an EROFS image of more than 2^32 blocks is refused by its writer, after planning.
        self.blkaddr = array("Q", [0]) * n
        if flat_files:
            self.data_blocks = array("Q", [0]) * n


class NodeTree:
    """A tree of Nodes linked by their ``children`` dicts, as the layout sees a tree: keys (here the nodes
    themselves) it orders, entries of a directory by key, and the node of a key. A tree held otherwise
    (tarstream's TarTree, in columns) offers the same ``layout_*`` methods, with its own keys, and makes
    each node only when it is asked for."""

    def __init__(self, root: Node) -> None:
        self.root = root

    def layout_keys(self) -> list:
        return []

    def layout_root(self) -> Node:
        return self.root

    def layout_entries(self, node: Node) -> list[tuple[bytes, Node, str]]:
        """(name, child, type) of a directory's entries, sorted by name (the order of its dirents, and of its
        slot's ``dirents``)."""
        return [(name, child, child.type) for name, child in sorted((node.children or {}).items())]

    def layout_linked(self, node: Node) -> bool:
        return node.hardlink is not None or node.nlink > 1

    def layout_nodes(self, keys: list) -> list[Node]:
        return keys


class LayoutTree(Protocol):
    """What the layout asks of a tree (NodeTree's methods; tarstream's TarTree has its own)."""

    def layout_keys(self) -> MutableSequence: ...
    def layout_root(self) -> Hashable: ...
    def layout_entries(self, key) -> list[tuple[bytes, Hashable, str]]: ...
    def layout_linked(self, key) -> bool: ...
    def layout_nodes(self, keys) -> Sequence[Node]: ...


def _order(root: Node | LayoutTree, flat_files: bool = False) -> tuple[Slots, int]:
    """Unique nodes in nydus's order: a directory's non-directory children, then its sub-directories.

    A node under several names (a hard link) says so: its ``hardlink`` is set or its ``nlink`` is over 1.
    Only those are looked up by identity; an index of every node would cost more than its slot."""
    tree = root if hasattr(root, "layout_keys") else NodeTree(root)
    slots = Slots()
    slots.tree = tree
    keys, parents, counts = tree.layout_keys(), slots.parent, slots.names
    linked: dict[object, int] = {}
    names = 0
    entries, is_linked = tree.layout_entries, tree.layout_linked

    # No slot keeps its path: the layout needs none, and the paths of a deep tree sum to depth squared.
    def visit(key, kind: str, parent: int) -> int:
        nonlocal names
        names += 1
        if kind != DIR and is_linked(key):
            i = linked.get(key)  # a Node hashes by identity, a tree's own key by value
            if i is not None:
                counts[i] += 1
                return i
            linked[key] = len(keys)
        keys.append(key)
        parents.append(parent)
        counts.append(1)
        return len(keys) - 1

    queue = [visit(tree.layout_root(), DIR, 0)]
    while queue:
        d = queue.pop()
        kids = entries(keys[d])
        ents = array("I", bytes(4 * len(kids)))
        for k, (_, child, kind) in enumerate(kids):
            if kind != DIR:
                ents[k] = visit(child, kind, d)
        subdirs = []
        for k, (_, child, kind) in enumerate(kids):
            if kind == DIR:
                ents[k] = visit(child, kind, d)
                subdirs.append(ents[k])
        slots.dirents[d] = ents
        slots.subdirs[d] = len(subdirs)
        # Depth-first: the first sub-directory is laid out next.
        queue.extend(reversed(subdirs))
    slots.keys = keys
    slots.nodes = tree.layout_nodes(keys)
    slots._sized(flat_files)
    return slots, names


def _entries(slots: Slots, i: int) -> list[tuple[bytes, object, str]]:
    """Slot ``i``'s directory entries as (name, key, type), sorted by name."""
    return slots.tree.layout_entries(slots.keys[i])


def _nid(offset: int, meta_start: int) -> int:
    return (offset - meta_start) // 32


def _prepare(
    slots: Slots, i: int, flat_files: str | None = None, compressed: dict[int, int] | None = None
) -> None:
    node = slots.nodes[i]
    xattrs = rafs_v6.build_xattrs(node.xattrs)
    if xattrs:
        slots.xattrs[i] = xattrs
    fixed = INODE_SIZE + len(xattrs)
    if node.type == DIR:
        ents = [Dirent(b".", 0, rafs_v6.FT_DIR), Dirent(b"..", 0, rafs_v6.FT_DIR)]
        ents += [Dirent(name, 0, FT_OF_TYPE[kind]) for name, _, kind in _entries(slots, i)]
        ents.sort(key=lambda d: d.name)
        blocks, size = rafs_v6.build_dir_blocks(ents)
        slots.size[i] = size
        _place_data(slots, i, len(blocks), size, fixed)
    elif node.type == SYMLINK:
        size = len(node.target or b"")
        slots.size[i] = size
        _place_data(slots, i, -(-size // BLOCK_SIZE), size, fixed)
    elif node.type == REG and flat_files and compressed and id(node) in compressed:
        # Compressed EROFS: the file's pclusters lie after the metadata like flat data, and its map
        # (header and one legacy index per block) follows the inode.
        slots.size[i] = node.size
        slots.layout[i] = erofs_zmap.LAYOUT_COMPRESSED_FULL
        slots.data_blocks[i] = compressed[id(node)]
        slots.zmap[i] = bytes(erofs_zmap.full_map_size(node.size, BLOCK_SIZE))
    elif node.type == REG and flat_files:
        # Plain EROFS: the data lies in the image itself. "plain" keeps every byte in whole blocks
        # (containerd asks mkfs.erofs for -Enoinline_data); "inline" packs the tail after the inode when
        # it fits, and the caller fills ``tail`` with the file's last bytes before rendering.
        slots.size[i] = node.size
        tail_len = node.size % BLOCK_SIZE
        if flat_files == "inline" and tail_len and fixed + tail_len <= BLOCK_SIZE:
            slots.layout[i] = rafs_v6.LAYOUT_FLAT_INLINE
            slots.data_blocks[i] = node.size // BLOCK_SIZE
        else:
            slots.layout[i] = rafs_v6.LAYOUT_FLAT_PLAIN
            slots.data_blocks[i] = -(-node.size // BLOCK_SIZE)
    elif node.type == REG:
        slots.layout[i] = rafs_v6.LAYOUT_CHUNK_BASED
        slots.size[i] = node.size
    else:
        slots.layout[i] = rafs_v6.LAYOUT_FLAT_PLAIN


def _place_data(slots: Slots, i: int, nblocks: int, size: int, fixed: int) -> None:
    """Lay out ``nblocks`` blocks of ``size`` bytes (a directory's, a symlink's): the tail inline when it fits."""
    tail_len = size % BLOCK_SIZE
    if tail_len and fixed + tail_len <= BLOCK_SIZE:
        slots.layout[i] = rafs_v6.LAYOUT_FLAT_INLINE
        nblocks -= 1
    else:
        slots.layout[i] = rafs_v6.LAYOUT_FLAT_PLAIN
    if nblocks:
        slots.blocks[i] = nblocks


def _footprint(slots: Slots, i: int, chunk_size: int) -> tuple[int, int]:
    """(bytes that must stay inside one block, total bytes of the inode record)."""
    xattrs = slots.xattrs.get(i)
    fixed = INODE_SIZE + len(xattrs) if xattrs else INODE_SIZE
    layout = slots.layout[i]
    if layout == rafs_v6.LAYOUT_CHUNK_BASED:
        n = -(-slots.size[i] // chunk_size)
        return fixed, round_up(fixed, 8) + 8 * n
    if layout == erofs_zmap.LAYOUT_COMPRESSED_FULL:
        return fixed, round_up(fixed, 8) + len(slots.zmap[i])
    # An inline tail is what the last block would hold.
    inline = fixed + slots.size[i] % BLOCK_SIZE if layout == rafs_v6.LAYOUT_FLAT_INLINE else fixed
    return inline, inline


@dataclass
class Plan:
    """Where everything but the chunk table goes: computed from the tree alone (file sizes, not their
    chunks), so that pack can lay a bootstrap out while its workers are still compressing."""

    slots: Slots
    names: int
    nblobs: int
    chunk_size: int
    prefetch: bool
    blob_table_off: int
    prefetch_off: int
    prefetch_nids: list[int]
    meta_start: int
    data_end: int  # end of the inodes and data blocks: the chunk table starts at the next block
    explicit_uid_gid: bool = True
    #: Plain EROFS (``flat_files``): end of the regular files' data blocks, which follow ``data_end``.
    files_end: int = 0


def plan_bootstrap(
    root: Node | LayoutTree,
    nblobs: int,
    *,
    chunk_size: int,
    prefetch: bool = False,
    explicit_uid_gid: bool = True,
    flat_files: str | None = None,
    compressed: dict[int, int] | None = None,
) -> Plan:
    """Order, prepare and place every inode and data block of the tree under ``root`` (a Node, or a tree that
    lays itself out, :class:`LayoutTree`).

    ``flat_files`` ("plain" or "inline"): a plain EROFS image, regular files stored flat in the image
    (their blocks after ``data_end``, up to ``files_end``) instead of as chunks of a blob. ``compressed``:
    the regular files of such an image that are stored compressed (``id`` of their node -> blocks of their
    pclusters), laid out the same way, with room for their map after the inode.
    """
    slots, names = _order(root, bool(flat_files))
    for i in range(len(slots)):
        _prepare(slots, i, flat_files, compressed)

    if nblobs:
        blob_table_off = round_up(rafs_v6.DEVICE_TABLE_OFFSET + rafs_v6.DEVICE.size * nblobs, BLOCK_SIZE)
        prefetch_off = blob_table_off + rafs_v6.BLOB_ENTRY.size * nblobs
        prefetch_nids = [rafs_v6.ROOT_NID] if prefetch else []
        meta_start = round_up(prefetch_off + 4 * len(prefetch_nids), BLOCK_SIZE)
    else:
        blob_table_off, prefetch_off, prefetch_nids, meta_start = BLOCK_SIZE, 0, [], 0

    # Inodes from nid 128 (meta_start + 4096); an inode and its inline part never cross a block.
    cursor = meta_start + BLOCK_SIZE
    offsets = slots.offset
    for i in range(len(slots)):
        must, total = _footprint(slots, i, chunk_size)
        # Only an inline tail must share the inode's block; EROFS reads an inode and its xattrs across
        # blocks, so a record larger than a block (many or big xattrs) starts on a fresh block and spans.
        if cursor % BLOCK_SIZE + min(must, BLOCK_SIZE) > BLOCK_SIZE:
            cursor = round_up(cursor, BLOCK_SIZE)
        offsets[i] = cursor
        cursor = round_up(cursor + total, 32)
    assert _nid(offsets[0], meta_start) == rafs_v6.ROOT_NID

    # Full data blocks (directories, long symlinks) after the inodes.
    cursor = round_up(cursor, BLOCK_SIZE)
    blkaddr = slots.blkaddr
    for i, n in slots.blocks.items():  # in slot order, as the slots were prepared
        blkaddr[i] = cursor // BLOCK_SIZE
        cursor += BLOCK_SIZE * n
    files_end = cursor
    for i, n in enumerate(slots.data_blocks):
        if n:
            blkaddr[i] = files_end // BLOCK_SIZE
            files_end += BLOCK_SIZE * n
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
    return plan


def render_plan(plan: Plan) -> bytearray:
    """The image up to ``data_end`` with every inode, xattr, directory and symlink of the plan written (a
    plain EROFS image's metadata; its writer adds the files' data)."""
    buf = bytearray(plan.data_end)
    chunk_bits = plan.chunk_size.bit_length() - 1
    slots = plan.slots
    for i, offset in enumerate(slots.offset):
        rec = _inode_record(plan, i, plan.explicit_uid_gid, chunk_bits)
        buf[offset : offset + len(rec)] = rec
    for i in slots.blocks:
        for k, blk in enumerate(_out_of_line_blocks(plan, i)):
            start = (slots.blkaddr[i] + k) * BLOCK_SIZE
            buf[start : start + len(blk)] = blk
    return buf


@dataclass
class BootstrapHead:
    """What a bootstrap's first blocks (superblocks, devices, blob and prefetch tables) hold but its blobs:
    enough to write them again for other blobs once the tree is gone (pack's ``--bootstrap``)."""

    size: int  # bytes before the root inode
    names: int
    chunk_size: int
    meta_start: int
    blob_table_off: int
    prefetch_off: int
    prefetch_nids: list[int]
    chunk_table_off: int
    chunk_table_size: int
    total_size: int
    flags: int  # the extended superblock's, but INLINED_CHUNK_DIGEST (which the blobs decide)

    def build(self, blobs: list[BlobTableEntry]) -> bytearray:
        buf = bytearray(self.size)
        flags = self.flags
        if all(b.features & blob_meta.INLINED_CHUNK_DIGEST for b in blobs):
            flags |= rafs_v6.INLINED_CHUNK_DIGEST
        # Devices: one per blob, mapped after the bootstrap at 512 KiB-aligned addresses.
        prev_end = self.total_size
        dev_blocks = 0
        for i, b in enumerate(blobs):
            blocks = b.uncompressed_size // BLOCK_SIZE
            mapped = round_up(prev_end, MAPPED_ALIGN) // BLOCK_SIZE
            prev_end = (mapped + blocks) * BLOCK_SIZE
            dev_blocks += blocks
            slot_off = rafs_v6.DEVICE_TABLE_OFFSET + i * rafs_v6.DEVICE.size
            buf[slot_off : slot_off + rafs_v6.DEVICE.size] = DeviceSlot(b.blob_id, blocks, mapped).build()
            off = self.blob_table_off + i * rafs_v6.BLOB_ENTRY.size
            buf[off : off + rafs_v6.BLOB_ENTRY.size] = b.build()
        for i, nid in enumerate(self.prefetch_nids):
            struct.pack_into("<I", buf, self.prefetch_off + 4 * i, nid)
        sb = SuperBlock(
            s_inos=self.names,
            s_blocks=dev_blocks,
            s_meta_blkaddr=self.meta_start // BLOCK_SIZE,
            s_extra_devices=len(blobs),
        )
        buf[rafs_v6.SUPERBLOCK_OFFSET : rafs_v6.SUPERBLOCK_OFFSET + rafs_v6.SUPERBLOCK.size] = sb.build()
        ext = ExtSuperBlock(
            s_flags=flags,
            s_blob_table_offset=self.blob_table_off,
            s_blob_table_size=rafs_v6.BLOB_ENTRY.size * len(blobs),
            s_chunk_size=self.chunk_size,
            s_chunk_table_offset=self.chunk_table_off,
            s_chunk_table_size=self.chunk_table_size,
            s_prefetch_table_offset=self.prefetch_off if self.prefetch_nids else 0,
            s_prefetch_table_size=4 * len(self.prefetch_nids),
        )
        buf[rafs_v6.EXT_SUPERBLOCK_OFFSET : rafs_v6.EXT_SUPERBLOCK_OFFSET + rafs_v6.EXT_SUPERBLOCK.size] = (
            ext.build()
        )
        return buf


def build_bootstrap(
    root: Node | LayoutTree,
    blobs: list[BlobTableEntry],
    *,
    chunk_size: int,
    compressor: Compressor,
    digester: Digester,
    explicit_uid_gid: bool = True,
    prefetch: bool = False,
    force_has_xattr: bool = False,
    plan: Plan | None = None,
    table: TableChunks | None = None,
) -> bytes:
    """Serialise the tree under ``root``; regular files' ``chunks`` must be set. The arguments are
    :func:`write_bootstrap`'s."""
    buf = bytearray()
    write_bootstrap(
        buf.extend,
        root,
        blobs,
        chunk_size=chunk_size,
        compressor=compressor,
        digester=digester,
        explicit_uid_gid=explicit_uid_gid,
        prefetch=prefetch,
        force_has_xattr=force_has_xattr,
        plan=plan,
        table=table,
    )
    return bytes(buf)


def write_bootstrap(
    write: Callable[[bytes], object],
    root: Node | LayoutTree,
    blobs: list[BlobTableEntry],
    *,
    chunk_size: int,
    compressor: Compressor,
    digester: Digester,
    explicit_uid_gid: bool = True,
    prefetch: bool = False,
    force_has_xattr: bool = False,
    plan: Plan | None = None,
    table: TableChunks | None = None,
) -> BootstrapHead:
    """Serialise the tree under ``root`` to ``write``, front to back in pieces of at most a file's chunk
    indexes or a directory's blocks, so that no bootstrap-sized buffer is needed; returns its head.
    Regular files' ``chunks`` must be set.

    ``plan``: this tree's :func:`plan_bootstrap`, made earlier with the same blob count, chunk size
    and prefetch. ``table``: where the chunk table's chunks come from (:data:`TableChunks`; by default,
    :func:`table_chunks`).
    """
    nblobs = len(blobs)
    if plan is None or (plan.nblobs, plan.chunk_size, plan.prefetch) != (nblobs, chunk_size, prefetch):
        plan = plan_bootstrap(root, nblobs, chunk_size=chunk_size, prefetch=prefetch)
    slots = plan.slots

    # Chunk table: one record per distinct (digest, blob), sorted as v2.3 does, after the metadata.
    if table is None:
        external = frozenset(b.blob_index for b in blobs if b.features & blob_meta.EXTERNAL)
        count, records = table_chunks(slots.nodes, external)
    else:
        count, records = table(slots.nodes)
    chunk_table_off = round_up(plan.data_end, BLOCK_SIZE)
    total_size = round_up(chunk_table_off + _CHUNK_RECORD.size * count, BLOCK_SIZE)

    flags = compressor.super_flag | digester.super_flag | rafs_v6.ENCRYPTION_NONE
    if explicit_uid_gid:
        flags |= rafs_v6.EXPLICIT_UID_GID
    if force_has_xattr or slots.xattrs:
        flags |= rafs_v6.HAS_XATTR
    head = BootstrapHead(
        size=slots.offset[0],
        names=plan.names,
        chunk_size=chunk_size,
        meta_start=plan.meta_start,
        blob_table_off=plan.blob_table_off,
        prefetch_off=plan.prefetch_off,
        prefetch_nids=plan.prefetch_nids,
        chunk_table_off=chunk_table_off,
        chunk_table_size=_CHUNK_RECORD.size * count,
        total_size=total_size,
        flags=flags,
    )

    pos = 0

    def put(data) -> None:
        nonlocal pos
        write(data)
        pos += len(data)

    def zeros_to(offset: int) -> None:
        assert offset >= pos, (offset, pos)
        if offset > pos:
            put(bytes(offset - pos))

    put(head.build(blobs))
    chunk_bits = chunk_size.bit_length() - 1
    # The plan places inodes, then out-of-line blocks, each in slot order and ascending.
    nodes, layouts = slots.nodes, slots.layout
    for i, offset in enumerate(slots.offset):
        zeros_to(offset)
        put(_inode_record(plan, i, explicit_uid_gid, chunk_bits))
        if layouts[i] == rafs_v6.LAYOUT_CHUNK_BASED and nodes[i].chunks:
            zeros_to(round_up(pos, 8))
            put(_chunk_indexes(nodes[i]))
    for i in slots.blocks:
        blocks = _out_of_line_blocks(plan, i)
        if blocks:
            zeros_to(slots.blkaddr[i] * BLOCK_SIZE)
            for blk in blocks:
                put(blk)
    zeros_to(chunk_table_off)
    written = 0
    for c in records:
        put(chunk_record(c))
        written += 1
    assert written == count, (written, count)
    zeros_to(total_size)
    return head


#: ``table(nodes)``: how many records the chunk table of these inodes (in layout order) has, and its chunks in
#: table order: one per distinct (digest, blob) (and chunk index, in an external blob), sorted by them,
#: each the first chunk of its key in layout order (so with that chunk's file offset), as v2.3 writes it.
TableChunks = Callable[[list[Node]], tuple[int, Iterable[ChunkRef]]]


def table_chunks(nodes: list[Node], external: frozenset[int] = frozenset()) -> tuple[int, Iterable[ChunkRef]]:
    """The chunk table's chunks (:data:`TableChunks`) from the nodes' ``chunks``. ``external``: the indexes
    of external blobs, whose chunks have no digest: nydus keys each by its index in its blob as well, so
    that they do not all become the first of them."""
    records: dict[tuple[bytes, int, int], ChunkRef] = {}
    for node in nodes:
        for c in node.chunks or ():
            records.setdefault((c.digest, c.blob_index, c.ci_index if c.blob_index in external else -1), c)
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


def _inode_record(plan: Plan, index: int, explicit_uid_gid: bool, chunk_bits: int) -> bytearray:
    """The inode of the plan's slot ``index``, its xattrs and what follows them in its block (the inline tail, or a compressed
    file's map); a chunk-based inode's chunk indexes are :func:`_chunk_indexes`."""
    slots = plan.slots
    node = slots.nodes[index]
    layout = slots.layout[index]
    size = slots.size[index]
    xattrs = slots.xattrs.get(index, b"")
    if node.type == DIR:
        nlink = 2 + slots.subdirs[index]
    else:
        nlink = slots.names[index]
    if layout == rafs_v6.LAYOUT_CHUNK_BASED:
        i_u = rafs_v6.CHUNK_FORMAT_INDEXES | (chunk_bits - 12)
    elif layout == erofs_zmap.LAYOUT_COMPRESSED_FULL:
        i_u = slots.data_blocks[index]  # a compressed inode records how many blocks its pclusters take
    elif node.type in (CHR, BLK):
        i_u = node.rdev & 0xFFFFFFFF
    elif (
        layout == rafs_v6.LAYOUT_FLAT_INLINE
        and index not in slots.blocks
        and not (slots.data_blocks and slots.data_blocks[index])
    ):
        # All of the data is the inline tail, so readers never use the block address; nydus-image writes
        # the inode's own block there, and so do we, so that its bootstraps and ours are alike byte for byte.
        i_u = slots.offset[index] // BLOCK_SIZE
    else:
        i_u = slots.blkaddr[index]
    # Inode(...).build(), positionally: this runs once per inode of the image.
    rec = bytearray(
        _INODE.pack(
            1 | (layout << 1),  # i_format: extended
            rafs_v6.xattr_icount(len(xattrs)),
            node.mode & 0xFFFF,
            size,
            i_u,
            index + 1,  # i_ino
            node.uid if explicit_uid_gid else 0,
            node.gid if explicit_uid_gid else 0,
            max(node.mtime, 0),  # RAFS has no time before 1970 (pack warns)
            0,  # i_mtime_nsec
            nlink,
        )
    )
    rec += xattrs
    if layout == rafs_v6.LAYOUT_FLAT_INLINE:
        tail_len = size % BLOCK_SIZE
        if node.type == DIR:
            rec += _dir_blocks(plan, index)[-1]
        elif node.type == SYMLINK:
            rec += (node.target or b"")[size - tail_len :]
        else:
            rec += slots.tail.get(index) or bytes(tail_len)
    elif layout == erofs_zmap.LAYOUT_COMPRESSED_FULL:
        rec += bytes(round_up(len(rec), 8) - len(rec))  # the record starts 32-byte aligned
        rec += slots.zmap[index]
    return rec


def _dir_blocks(plan: Plan, index: int) -> list[bytes]:
    """A directory's blocks, with its entries' nids (the last one unpadded)."""
    slots, meta_start = plan.slots, plan.meta_start
    offsets = slots.offset
    ents = [
        Dirent(b".", _nid(offsets[index], meta_start), rafs_v6.FT_DIR),
        Dirent(b"..", _nid(offsets[slots.parent[index]], meta_start), rafs_v6.FT_DIR),
    ]
    ents += [
        Dirent(name, _nid(offsets[i], meta_start), FT_OF_TYPE[kind])
        for (name, _, kind), i in zip(_entries(slots, index), slots.dirents[index], strict=True)
    ]
    ents.sort(key=lambda d: d.name)
    return rafs_v6.build_dir_blocks(ents)[0]


def _out_of_line_blocks(plan: Plan, index: int) -> list[bytes]:
    """The blocks of slot ``index`` stored from its ``blkaddr`` on: a directory's or a long symlink's but an
    inline tail."""
    slots = plan.slots
    node = slots.nodes[index]
    n = slots.blocks.get(index, 0)
    if node.type == DIR:
        return _dir_blocks(plan, index)[:n]
    if node.type == SYMLINK:
        target = node.target or b""
        return [target[k * BLOCK_SIZE : (k + 1) * BLOCK_SIZE].ljust(BLOCK_SIZE, b"\0") for k in range(n)]
    return []


def _chunk_indexes(node: Node) -> bytearray:
    """A chunk-based inode's chunk indexes (stored after the inode and its xattrs, 8-byte aligned)."""
    chunks = node.chunks or ()
    own = getattr(chunks, "chunk_indexes", None)  # chunks that write their own indexes (pack's, from columns)
    if own is not None:
        return own()
    out = bytearray(rafs_v6.CHUNK_INDEX.size * len(chunks))
    pack = rafs_v6.pack_chunk_index
    for k, c in enumerate(chunks):
        pack(out, 8 * k, c.blob_index, c.ci_index, c.uncompressed_offset // BLOCK_SIZE)
    return out
