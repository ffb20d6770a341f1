"""RAFS v5 bootstraps: detect them, decode the superblock, the blob tables, the inodes and their chunks.

v5 is the pre-EROFS format (8 KiB superblock, inode table of offsets >> 3, 128-byte inodes followed by
name, symlink target, xattrs and, for a regular file, its 80-byte chunk records). Sans I/O: everything here
decodes a buffer. :class:`RafsV5` checks each structure against the buffer before it is read, and the
tree's shape the way nydusd does (a directory's children come after it in the inode table), so that a
hostile bootstrap is an error naming the inode, never a loop or an allocation it declares.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from ..codecs import Compressor
from ..digests import Digester
from ..errors import FormatError
from . import rafs_v6
from ._struct import Layout, Record, round_up

MAGIC = 0x52414653
VERSION = 0x500
SUPERBLOCK_SIZE = 8192
ROOT_INO = 1
MAX_INODES = 1 << 24
#: nydusd's bounds of a v5 chunk size (4 MiB is allowed for stargz besides powers of two up to 16 MiB).
MIN_CHUNK_SIZE, MAX_CHUNK_SIZE = 0x1000, 0x100_0000
#: The largest xattr table decoded: far more than the few pairs of 64 KiB a kernel allows per inode.
MAX_XATTR_SIZE = 1 << 20

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

#: The extended blob table: what v5's string blob table lacks (chunk count, sizes, features), per blob.
EXT_BLOB = Layout(
    "rafs v5 extended blob entry",
    [
        ("chunk_count", "I"),
        ("features", "I"),
        ("uncompressed_size", "Q"),
        ("compressed_size", "Q"),
        ("_reserved", "40x"),
    ],
)
#: A v5 chunk record is the 80-byte record RAFS v6's chunk table reuses.
CHUNK = rafs_v6.CHUNK_TABLE_ENTRY
CHUNK_SIZE = CHUNK.size

_COMPRESSION_BITS = {
    rafs_v6.COMPRESSION_NONE: Compressor.NONE,
    rafs_v6.COMPRESSION_LZ4: Compressor.LZ4_BLOCK,
    rafs_v6.COMPRESSION_GZIP: Compressor.GZIP,
    rafs_v6.COMPRESSION_ZSTD: Compressor.ZSTD,
}
_DIGEST_BITS = {rafs_v6.HASH_BLAKE3: Digester.BLAKE3, rafs_v6.HASH_SHA256: Digester.SHA256}
_S_IFMT, _S_IFDIR, _S_IFREG = 0o170000, 0o040000, 0o100000


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
    """A 128-byte RAFS v5 inode with its name and symlink target; ``offset`` is where it lies."""

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
    offset: int = 0
    index: int = 0  # the inode number it was found under (its inode table slot)

    @property
    def is_dir(self) -> bool:
        return self.i_mode & _S_IFMT == _S_IFDIR

    @property
    def is_reg(self) -> bool:
        return self.i_mode & _S_IFMT == _S_IFREG

    @property
    def i_xattr_icount(self) -> int:
        """Non-zero when the inode has xattrs (the name RAFS v6 inodes answer the same question with)."""
        return 1 if self.i_flags & FLAG_XATTR else 0

    @property
    def body_end(self) -> int:
        """Where the inode's name and symlink target end: its xattr table (if flagged) starts here."""
        return self.offset + INODE.size + round_up(self.i_name_size, 8) + round_up(self.i_symlink_size, 8)


class RafsV5:
    """A read-only view of a v5 bootstrap: superblock, blob tables, inodes, xattrs, chunks and the tree."""

    def __init__(self, buf) -> None:
        self.buf = buf
        self.size = len(buf)
        self.sb = SuperBlockV5.parse(buf, 0)
        sb = self.sb
        if sb.s_magic != MAGIC or sb.s_fs_version != VERSION:
            raise SUPERBLOCK.error("s_magic", 0, "not a RAFS v5 bootstrap", sb.s_magic)
        if sb.s_sb_size != SUPERBLOCK_SIZE:
            raise SUPERBLOCK.error("s_sb_size", 0, f"must be {SUPERBLOCK_SIZE}", sb.s_sb_size)
        n = sb.s_inode_table_entries
        if (
            n > MAX_INODES
            or sb.s_inode_table_offset < SUPERBLOCK_SIZE
            or sb.s_inode_table_offset + 4 * n > len(buf)
        ):
            raise SUPERBLOCK.error("s_inode_table_entries", 0, "inode table runs past the bootstrap", n)
        self.table = struct.unpack_from(f"<{n}I", buf, sb.s_inode_table_offset)

    # ------------------------------------------------------------------ superblock
    @property
    def chunk_size(self) -> int:
        cs = self.sb.s_block_size
        if cs & (cs - 1) or not MIN_CHUNK_SIZE <= cs <= MAX_CHUNK_SIZE:
            raise SUPERBLOCK.error("s_block_size", 0, "chunk size must be a power of 2 in 4 KiB..16 MiB", cs)
        return cs

    @property
    def compressor(self) -> Compressor:
        return self._one_flag(_COMPRESSION_BITS, "compression")

    @property
    def digester(self) -> Digester:
        return self._one_flag(_DIGEST_BITS, "digest")

    def _one_flag(self, bits: dict, what: str):
        found = [v for b, v in bits.items() if self.sb.s_flags & b]
        if len(found) != 1:
            raise SUPERBLOCK.error("s_flags", 0, f"needs exactly one {what} flag", hex(self.sb.s_flags))
        return found[0]

    # ------------------------------------------------------------------ blobs
    def blob_ids(self) -> list[str]:
        return [bid for _, _, bid in self.blob_table()]

    def blob_table(self) -> list[tuple[int, int, str]]:
        """(readahead offset, readahead size, blob id) per blob: u32, u32 and the id, joined by NULs."""
        off, size = self.sb.s_blob_table_offset, self.sb.s_blob_table_size
        if off + size > len(self.buf):
            raise SUPERBLOCK.error("s_blob_table_size", 0, "blob table runs past the bootstrap", size)
        raw = bytes(self.buf[off : off + size])
        out = []
        pos = 0
        # nydusd reads an entry while more than its two u32s remain; padding NULs end the table.
        while len(raw) - pos > 8:
            ra_off, ra_size = struct.unpack_from("<II", raw, pos)
            end = raw.find(b"\0", pos + 8)
            end = len(raw) if end < 0 else end
            blob_id = raw[pos + 8 : end].decode("ascii", "replace")
            if blob_id:
                out.append((ra_off, ra_size, blob_id))
            pos = end + 1
        return out

    def ext_blob_entries(self) -> list[dict]:
        sb = self.sb
        count, off = sb.s_extended_blob_table_entries, sb.s_extended_blob_table_offset
        if count == 0:
            return []
        if count > MAX_INODES or off + count * EXT_BLOB.size > len(self.buf):
            raise SUPERBLOCK.error(
                "s_extended_blob_table_entries", 0, "extended blob table runs past the bootstrap", count
            )
        return [EXT_BLOB.unpack(self.buf, off + i * EXT_BLOB.size) for i in range(count)]

    def blob_entries(self) -> list[rafs_v6.BlobTableEntry]:
        """The blob tables as the v6 blob-table records every reader speaks: v5 keeps one compressor and
        digester for all blobs (the superblock's), and no blob.meta place (the data blob is chunks only)."""
        ids = self.blob_table()
        ext = self.ext_blob_entries()
        if ext and len(ext) < len(ids):
            raise SUPERBLOCK.error(
                "s_extended_blob_table_entries",
                0,
                f"extended blob table shorter than the blob table's {len(ids)} entries",
                len(ext),
            )
        comp, dig, cs = self.compressor, self.digester, self.chunk_size
        out = []
        for i, (_, _, blob_id) in enumerate(ids):
            e = ext[i] if ext else {}
            out.append(
                rafs_v6.BlobTableEntry(
                    blob_id=blob_id.encode("ascii", "replace"),
                    blob_index=i,
                    chunk_size=cs,
                    chunk_count=e.get("chunk_count", 0),
                    compression_algo=comp.algo,
                    digest_algo=0 if dig is Digester.BLAKE3 else 1,
                    features=e.get("features", 0),
                    compressed_size=e.get("compressed_size", 0),
                    uncompressed_size=e.get("uncompressed_size", 0),
                )
            )
        return out

    def prefetch_inodes(self) -> list[int]:
        sb = self.sb
        n, off = sb.s_prefetch_table_entries, sb.s_prefetch_table_offset
        if n == 0:
            return []
        if n > MAX_INODES or off + 4 * n > len(self.buf):
            raise SUPERBLOCK.error("s_prefetch_table_entries", 0, "prefetch table runs past the bootstrap", n)
        return [i for i in struct.unpack_from(f"<{n}I", self.buf, off) if i]

    # ------------------------------------------------------------------ inodes
    def inode(self, ino: int) -> InodeV5:
        if not 1 <= ino <= len(self.table):
            raise FormatError(
                "rafs v5 inode table",
                f"inode number {ino} outside the {len(self.table)}-entry table",
                value=ino,
            )
        off = self.table[ino - 1] << 3
        if off < SUPERBLOCK_SIZE or off + INODE.size > len(self.buf):
            raise FormatError(
                "rafs v5 inode table",
                f"inode {ino}: offset outside the bootstrap",
                offset=self.sb.s_inode_table_offset + 4 * (ino - 1),
                value=off,
            )
        node = InodeV5.parse(self.buf, off)
        node.offset, node.index = off, ino
        pos = off + INODE.size
        node.name = bytes(self.buf[pos : pos + node.i_name_size])
        if len(node.name) != node.i_name_size:
            raise INODE.error(
                "i_name_size", off, f"inode {ino}: name runs past the bootstrap", node.i_name_size
            )
        pos += round_up(node.i_name_size, 8)
        if node.i_flags & FLAG_SYMLINK:
            node.symlink = bytes(self.buf[pos : pos + node.i_symlink_size])
            if len(node.symlink) != node.i_symlink_size:
                raise INODE.error(
                    "i_symlink_size",
                    off,
                    f"inode {ino}: symlink target runs past the bootstrap",
                    node.i_symlink_size,
                )
        return node

    def child_range(self, node: InodeV5) -> range:
        """The inode numbers of directory ``node``'s children, checked as nydusd checks them: after the
        directory itself in the table (so no directory contains itself or an ancestor) and inside it."""
        count, first = node.i_child_count, node.i_child_index
        if count == 0:
            return range(0)
        if first <= node.index or first + count - 1 > len(self.table):
            raise INODE.error(
                "i_child_index",
                node.offset,
                f"inode {node.index}: children {first}..{first + count - 1} are not after it inside the "
                f"{len(self.table)}-entry inode table",
                first,
            )
        return range(first, first + count)

    def children(self, node: InodeV5) -> list[InodeV5]:
        if not node.is_dir:
            return []
        return [self.inode(i) for i in self.child_range(node)]

    def root(self) -> InodeV5:
        root = self.inode(ROOT_INO)
        if not root.is_dir:
            raise INODE.error(
                "i_mode", root.offset, "the root inode (1) is not a directory", f"0{root.i_mode:o}"
            )
        return root

    def xattrs(self, node: InodeV5) -> dict[bytes, bytes]:
        """The inode's xattrs: a u64 size, then pairs of (u32 size, name NUL value)."""
        if not node.i_flags & FLAG_XATTR:
            return {}
        at = node.body_end
        if at + 8 > len(self.buf):
            raise FormatError(
                "rafs v5 xattrs", f"inode {node.index}: xattr table past the bootstrap", offset=at
            )
        (size,) = struct.unpack_from("<Q", self.buf, at)
        if size > MAX_XATTR_SIZE or at + 8 + size > len(self.buf):
            raise FormatError(
                "rafs v5 xattrs",
                f"inode {node.index}: xattr table runs past the bootstrap",
                offset=at,
                value=size,
            )
        raw = bytes(self.buf[at + 8 : at + 8 + size])
        out: dict[bytes, bytes] = {}
        pos = 0
        while pos < len(raw):
            if pos + 4 > len(raw):
                raise FormatError(
                    "rafs v5 xattrs", f"inode {node.index}: truncated pair", offset=at + 8 + pos
                )
            (n,) = struct.unpack_from("<I", raw, pos)
            pair = raw[pos + 4 : pos + 4 + n]
            nul = pair.find(b"\0")
            if len(pair) != n or nul <= 0:
                raise FormatError(
                    "rafs v5 xattrs",
                    f"inode {node.index}: pair without a name or past the table",
                    offset=at + 8 + pos,
                    value=n,
                )
            out[pair[:nul]] = pair[nul + 1 :]
            pos += 4 + n
        return out

    def chunk_records(self, node: InodeV5) -> list[tuple]:
        """The raw 80-byte chunk records of regular file ``node`` (fields in CHUNK's order)."""
        if not node.is_reg or node.i_child_count == 0:
            return []
        at = node.body_end
        if node.i_flags & FLAG_XATTR:
            if at + 8 > len(self.buf):
                raise FormatError(
                    "rafs v5 xattrs", f"inode {node.index}: xattr table past the bootstrap", offset=at
                )
            (size,) = struct.unpack_from("<Q", self.buf, at)
            at += 8 + round_up(size, 8)
        count = node.i_child_count
        if at + count * CHUNK_SIZE > len(self.buf):
            raise INODE.error(
                "i_child_count",
                node.offset,
                f"inode {node.index}: {count} chunk records run past the bootstrap",
                count,
            )
        return list(CHUNK.struct.iter_unpack(self.buf[at : at + count * CHUNK_SIZE]))

    def walk(self) -> Iterator[tuple[bytes, InodeV5]]:
        """(path, inode) pairs, pre-order, children in table order (the format's own walk, for fuzzing and
        listings; the model's :class:`~nydus_inspect.model_v5.RafsV5Model` serves the readers)."""
        root = self.root()
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
            if kid.is_dir:
                stack.append((path, iter(self.children(kid))))
