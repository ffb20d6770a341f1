"""RAFS v5 bootstraps: detect them, decode the superblock and list the tree.

v5 is the pre-EROFS format (8 KiB superblock, inode table of offsets >> 3,
128-byte inodes followed by name, symlink, xattrs and chunk infos). We read it
for inspection only; packing and mounting are v6-only.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import FormatError
from ._struct import Layout, Record, round_up

MAGIC = 0x52414653
VERSION = 0x500
SUPERBLOCK_SIZE = 8192
ROOT_INO = 1
MAX_INODES = 1 << 24

SUPERBLOCK = Layout(
    "rafs v5 superblock",
    [
        ("s_magic", "I"),
        ("s_fs_version", "I"),
        ("s_sb_size", "I"),
        ("s_block_size", "I"),
        ("s_flags", "Q"),
        ("s_inodes_count", "Q"),
        ("s_inode_table_offset", "Q"),
        ("s_prefetch_table_offset", "Q"),
        ("s_blob_table_offset", "Q"),
        ("s_inode_table_entries", "I"),
        ("s_prefetch_table_entries", "I"),
        ("s_blob_table_size", "I"),
        ("s_extended_blob_table_entries", "I"),
        ("s_extended_blob_table_offset", "Q"),
    ],
)

INODE = Layout(
    "rafs v5 inode",
    [
        ("i_digest", "32s"),
        ("i_parent", "Q"),
        ("i_ino", "Q"),
        ("i_uid", "I"),
        ("i_gid", "I"),
        ("i_projid", "I"),
        ("i_mode", "I"),
        ("i_size", "Q"),
        ("i_blocks", "Q"),
        ("i_flags", "Q"),
        ("i_nlink", "I"),
        ("i_child_index", "I"),
        ("i_child_count", "I"),
        ("i_name_size", "H"),
        ("i_symlink_size", "H"),
        ("i_rdev", "I"),
        ("i_mtime_nsec", "I"),
        ("i_mtime", "Q"),
        ("_reserved", "8x"),
    ],
)
FLAG_SYMLINK, FLAG_HARDLINK, FLAG_XATTR, FLAG_HOLE = 1, 2, 4, 8


@dataclass
class SuperBlockV5(Record):
    """The 8 KiB RAFS v5 superblock."""

    LAYOUT = SUPERBLOCK
    s_magic: int = MAGIC
    s_fs_version: int = VERSION
    s_sb_size: int = SUPERBLOCK_SIZE
    s_block_size: int = 0
    s_flags: int = 0
    s_inodes_count: int = 0
    s_inode_table_offset: int = 0
    s_prefetch_table_offset: int = 0
    s_blob_table_offset: int = 0
    s_inode_table_entries: int = 0
    s_prefetch_table_entries: int = 0
    s_blob_table_size: int = 0
    s_extended_blob_table_entries: int = 0
    s_extended_blob_table_offset: int = 0


@dataclass
class InodeV5(Record):
    """A 128-byte RAFS v5 inode (without its name, symlink target and xattrs)."""

    LAYOUT = INODE
    i_digest: bytes
    i_parent: int
    i_ino: int
    i_uid: int
    i_gid: int
    i_projid: int
    i_mode: int
    i_size: int
    i_blocks: int
    i_flags: int
    i_nlink: int
    i_child_index: int
    i_child_count: int
    i_name_size: int
    i_symlink_size: int
    i_rdev: int
    i_mtime_nsec: int
    i_mtime: int
    name: bytes = b""
    symlink: bytes = b""


class RafsV5:
    """A read-only view of a v5 bootstrap: superblock, blob ids, and the inode tree."""

    def __init__(self, buf) -> None:
        self.buf = buf
        self.sb = SuperBlockV5.parse(buf, 0)
        sb = self.sb
        if sb.s_magic != MAGIC or sb.s_fs_version != VERSION:
            raise SUPERBLOCK.error("s_magic", 0, "not a RAFS v5 bootstrap", sb.s_magic)
        if sb.s_sb_size != SUPERBLOCK_SIZE:
            raise SUPERBLOCK.error("s_sb_size", 0, f"must be {SUPERBLOCK_SIZE}", sb.s_sb_size)
        n = sb.s_inode_table_entries
        if n > MAX_INODES or sb.s_inode_table_offset + 4 * n > len(buf):
            raise SUPERBLOCK.error("s_inode_table_entries", 0, "inode table runs past the bootstrap", n)
        self.table = struct.unpack_from(f"<{n}I", buf, sb.s_inode_table_offset)

    def blob_ids(self) -> list[str]:
        off, size = self.sb.s_blob_table_offset, self.sb.s_blob_table_size
        if off + size > len(self.buf):
            raise SUPERBLOCK.error("s_blob_table_size", 0, "blob table runs past the bootstrap", size)
        raw = bytes(self.buf[off : off + size])
        ids = []
        pos = 0
        while pos + 8 < len(raw):
            end = raw.find(b"\0", pos + 8)
            end = len(raw) if end < 0 else end
            ids.append(raw[pos + 8 : end].decode("ascii", "replace"))
            pos = end + 1
        return [i for i in ids if i]

    def inode(self, ino: int) -> InodeV5:
        if not 1 <= ino <= len(self.table):
            raise FormatError("rafs v5 inode table", "inode number out of range", value=ino)
        off = self.table[ino - 1] << 3
        node = InodeV5.parse(self.buf, off)
        pos = off + INODE.size
        node.name = bytes(self.buf[pos : pos + node.i_name_size])
        pos += round_up(node.i_name_size, 8)
        if node.i_flags & FLAG_SYMLINK:
            node.symlink = bytes(self.buf[pos : pos + node.i_symlink_size])
            if len(node.symlink) != node.i_symlink_size:
                raise INODE.error(
                    "i_symlink_size", off, "symlink target runs past the bootstrap", node.i_symlink_size
                )
        if len(node.name) != node.i_name_size:
            raise INODE.error("i_name_size", off, "name runs past the bootstrap", node.i_name_size)
        return node

    def children(self, node: InodeV5) -> list[InodeV5]:
        if (node.i_mode & 0o170000) != 0o040000:
            return []
        if node.i_child_index + node.i_child_count - 1 > len(self.table):
            raise INODE.error("i_child_count", 0, "children lie outside the inode table", node.i_child_count)
        return [self.inode(i) for i in range(node.i_child_index, node.i_child_index + node.i_child_count)]

    def walk(self) -> Iterator[tuple[bytes, InodeV5]]:
        """(path, inode) pairs, pre-order, children in table order."""
        root = self.inode(ROOT_INO)
        yield b"/", root
        stack = [(b"", iter(self.children(root)))]
        seen = 0
        while stack:
            base, it = stack[-1]
            kid = next(it, None)
            if kid is None:
                stack.pop()
                continue
            seen += 1
            if seen > len(self.table) or len(stack) > 4096:
                raise FormatError("rafs v5 inode", "directory tree larger than the inode table (a cycle?)")
            path = base + b"/" + kid.name
            yield path, kid
            if (kid.i_mode & 0o170000) == 0o040000:
                stack.append((path, iter(self.children(kid))))
