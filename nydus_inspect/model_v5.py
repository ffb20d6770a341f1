"""RAFS v5 behind the model every front end speaks: :class:`RafsV5Model` is a :class:`~nydus_inspect.model.RafsV6`
whose inodes, directories and chunks come from a v5 bootstrap.

The tree walk, path lookup and listing are RafsV6's own (one walk for both formats): this class answers
the questions they ask (``inode``, ``node``, ``readdir``, ``attrs``, ``dir_entries``) from
:mod:`nydus_inspect.formats.rafs_v5`, and turns each inode's 80-byte chunk records into
:class:`~nydus_inspect.chunks.ref.ChunkRef`, so that cat, unpack, verify and the mount read v5 files
through the same chunk service as v6 ones.

A node's nid is where its inode lies in the bootstrap, in 8-byte units: the inode table's own value for
it, as a v6 nid is the inode's offset in 32-byte units (inode-table slots start at 1, the number FUSE keeps
for the mount's root). The names of one hard-linked file are separate v5 inodes sharing an ``i_ino``, the
slot of the first of them: every name resolves to that inode, as nydusd serves them (one inode,
``i_ino``), and as v6 names of one file share a nid.
"""

from __future__ import annotations

import stat
import struct
from types import SimpleNamespace

from .chunks.ref import ChunkRef
from .errors import FormatError
from .formats import rafs_v5, rafs_v6
from .formats.rafs_v5 import FLAG_HARDLINK, FLAG_HOLE, InodeV5, RafsV5
from .model import _LRU, BLK, CHR, DIR, MAX_SYMLINK, SYMLINK, CiSource, Node, RafsV6, fsdecode, node_type

_FT_OF_FMT = {
    stat.S_IFREG: rafs_v6.FT_REG,
    stat.S_IFDIR: rafs_v6.FT_DIR,
    stat.S_IFCHR: rafs_v6.FT_CHR,
    stat.S_IFBLK: rafs_v6.FT_BLK,
    stat.S_IFIFO: rafs_v6.FT_FIFO,
    stat.S_IFSOCK: rafs_v6.FT_SOCK,
    stat.S_IFLNK: rafs_v6.FT_SYMLINK,
}


class RafsV5Model(RafsV6):
    """A v5 bootstrap held in ``buf``, read through RafsV6's interface (nids are inode offsets / 8)."""

    def __init__(self, buf, ci_source: CiSource | None = None) -> None:
        self.v5 = RafsV5(buf)
        self.buf = buf
        self.size = len(buf)
        self.sb = self.v5.sb
        self.chunk_size = self.v5.chunk_size
        self.compressor = self.v5.compressor
        self.digester = self.v5.digester
        # What the v6 readers look up in the extended superblock: the flags (HAS_XATTR) and the chunk size.
        self.ext = rafs_v6.ExtSuperBlock(
            s_flags=self.sb.s_flags,
            s_chunk_size=self.chunk_size,
            s_blob_table_offset=self.sb.s_blob_table_offset,
            s_blob_table_size=self.sb.s_blob_table_size,
        )
        self.blobs = self.v5.blob_entries()
        # RafsV6.__init__ is not called: it parses a v6 superblock. These are the attributes its methods use.
        # The parts of RafsV6's parsed bootstrap that readers other than the walk look at.
        self.meta = SimpleNamespace(sb=self.sb, ext=self.ext, blobs=self.blobs, devices=[], prefetch=[])
        self._inodes: _LRU = _LRU(65536)
        self._ci_source = ci_source
        self._chunk_table = {}
        self._records = {}

    # ------------------------------------------------------------------ inodes
    @property
    def root_nid(self) -> int:
        return self.v5.table[0] if self.v5.table else 0

    def nid_of(self, slot: int) -> int:
        """The nid of the inode in inode-table slot ``slot`` (checked to decode)."""
        return self.v5.inode(slot).offset >> 3

    def slot_of(self, nid: int) -> int:
        """The inode-table slot of the inode at ``nid``: its ``i_ino``, which must name it in the table (every
        nid this model hands out is such an inode; nydusd too finds an inode by its i_ino)."""
        at = (nid << 3) + rafs_v5.INODE.offsets["i_ino"]
        if nid <= 0 or at + 8 > self.size:
            raise FormatError("rafs v5 inode", "nid points outside the bootstrap", value=nid)
        (slot,) = struct.unpack_from("<Q", self.buf, at)
        table = self.v5.table
        if not 1 <= slot <= len(table) or table[slot - 1] != nid:
            raise FormatError(
                "rafs v5 inode",
                f"the inode at offset {nid << 3}: its i_ino does not name it in the inode table",
                offset=at,
                value=slot,
            )
        return slot

    def inode_offset(self, nid: int) -> int:
        return nid << 3 if nid else self.sb.s_inode_table_offset

    def inode(self, nid: int) -> InodeV5:
        ino = self._inodes.get(nid)
        if ino is None:
            ino = self.v5.inode(self.slot_of(nid))
            self._inodes.put(nid, ino)
        return ino

    def root(self) -> Node:
        root = self.v5.root()  # says so when inode 1 is not a directory
        return self.node(root.offset >> 3, b"/")

    def node(self, nid: int, path: bytes) -> Node:
        ino = self.inode(nid)
        ntype = node_type(ino.i_mode)
        if ntype == "unknown":
            raise rafs_v5.INODE.error(
                "i_mode", ino.offset, f"inode {ino.index}: unknown file type in i_mode", f"0{ino.i_mode:o}"
            )
        n = Node(
            path=path,
            type=ntype,
            mode=ino.i_mode,
            uid=ino.i_uid,
            gid=ino.i_gid,
            mtime=ino.i_mtime,
            mtime_nsec=ino.i_mtime_nsec,
            size=ino.i_size,
            nlink=ino.i_nlink,
            nid=nid,
            ino=ino.i_ino,
            xattrs=self.v5.xattrs(ino),
        )
        if ntype in (CHR, BLK):
            n.rdev, n.size = ino.i_rdev, 0
        elif ntype == SYMLINK:
            if not ino.i_flags & rafs_v5.FLAG_SYMLINK or not ino.symlink or len(ino.symlink) > MAX_SYMLINK:
                raise rafs_v5.INODE.error(
                    "i_symlink_size",
                    ino.offset,
                    f"inode {ino.index}: symlink without a usable target",
                    ino.i_symlink_size,
                )
            n.target = ino.symlink
            n.size = len(ino.symlink)
        if ntype != DIR and (ino.i_nlink > 1 or ino.i_flags & FLAG_HARDLINK):
            n.hardlink = nid
        return n

    def attrs(self, nid: int) -> tuple[int, int, int, int, int, int, int, int, int]:
        i = self.inode(nid)
        fmt = stat.S_IFMT(i.i_mode)
        rdev = i.i_rdev if fmt in (stat.S_IFCHR, stat.S_IFBLK) else 0
        size = len(i.symlink) if fmt == stat.S_IFLNK else (0 if rdev else i.i_size)
        return (i.i_mode, i.i_nlink, size, rdev, i.i_ino, i.i_uid, i.i_gid, i.i_mtime, i.i_mtime_nsec)

    def inode_count(self) -> int:
        return len(self.v5.table)

    def prefetch_paths(self) -> list[int]:
        return [self.nid_of(slot) for slot in self.v5.prefetch_inodes()]

    # ------------------------------------------------------------------ directories
    def readdir_target(self, kid: InodeV5) -> int:
        """The nid a child's name resolves to: its own inode, or for a further name of a hard-linked file the
        file's first inode (the slot its i_ino names), as nydusd resolves it."""
        if kid.i_ino == kid.index:
            return kid.offset >> 3
        if (
            not kid.is_dir
            and (kid.i_nlink > 1 or kid.i_flags & FLAG_HARDLINK)
            and 1 <= kid.i_ino <= len(self.v5.table)
        ):
            first = self.v5.inode(kid.i_ino)
            if first.i_ino == kid.i_ino and first.i_mode == kid.i_mode:
                return first.offset >> 3
        raise rafs_v5.INODE.error(
            "i_ino",
            kid.offset,
            f"inode {kid.index}: i_ino {kid.i_ino} is neither its own number nor the first inode of its hard-linked file",
            kid.i_ino,
        )

    def readdir(self, nid: int, include_dots: bool = False) -> list[rafs_v6.Dirent]:
        ino = self.inode(nid)
        if not ino.is_dir:
            raise FormatError(
                "rafs v5 inode", f"inode {ino.index} is not a directory", value=f"0{ino.i_mode:o}"
            )
        out = []
        if include_dots:
            out += [
                rafs_v6.Dirent(b".", nid, rafs_v6.FT_DIR),
                rafs_v6.Dirent(b"..", self._parent(ino), rafs_v6.FT_DIR),
            ]
        for k in self.v5.child_range(ino):
            kid = self.v5.inode(k)
            name = kid.name
            if not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
                raise rafs_v5.INODE.error(
                    "i_name_size",
                    kid.offset,
                    f"inode {k} in directory inode {ino.index}: not a file name",
                    name[:64],
                )
            out.append(
                rafs_v6.Dirent(name, self.readdir_target(kid), _FT_OF_FMT.get(stat.S_IFMT(kid.i_mode), 0))
            )
        return out

    def _parent(self, ino: InodeV5) -> int:
        if ino.index != rafs_v5.ROOT_INO and 1 <= ino.i_parent <= len(self.v5.table):
            return self.nid_of(ino.i_parent)
        return ino.offset >> 3

    def dir_entries(self, nid: int) -> list[tuple[bytes, int]]:
        return [(d.name, d.nid) for d in self.readdir(nid, include_dots=True)]

    # ------------------------------------------------------------------ chunks
    def chunk_indexes(self, node: Node):
        raise FormatError("rafs v5 inode", "RAFS v5 files have chunk records, not chunk indexes")

    def chunk_refs(self, node: Node) -> list[tuple[int, int]]:
        return [(c.blob_index, c.ci_index) for c in self.chunks(node)]

    def chunk_table(self):
        return {}

    def chunk_table_entries(self):
        return iter(())

    def _chunk_records(self):
        return {}

    def index_chunk_table(self) -> None:
        pass

    def chunks_from_blob_meta(self, node: Node) -> list[ChunkRef] | None:
        return None

    def chunks(self, node: Node) -> list[ChunkRef]:
        """Every chunk of regular file ``node``, from the 80-byte records after its inode, each checked to
        lie where the file needs it (v5 records a chunk's file offset; holes are not read here)."""
        if node.type != "file":
            return []
        ino = self.inode(node.nid)
        where = fsdecode(node.path) or f"inode {ino.index}"
        cs = self.chunk_size
        count = -(-ino.i_size // cs)
        if ino.i_flags & FLAG_HOLE and ino.i_child_count != count:
            raise rafs_v5.INODE.error(
                "i_flags", ino.offset, f"{where}: a file with holes (sparse chunks) is not read", ino.i_flags
            )
        if ino.i_child_count != count:
            raise rafs_v5.INODE.error(
                "i_child_count",
                ino.offset,
                f"{where}: {ino.i_child_count} chunk records, its size needs {count}",
                ino.i_child_count,
            )
        nblobs = len(self.blobs)
        out = []
        for k, rec in enumerate(self.v5.chunk_records(ino)):
            # rec: block_id, blob_index, flags, compressed_size, uncompressed_size, compressed_offset,
            # uncompressed_offset, file_offset, index, crc32
            block_id, blob_index, flags, csize, usize, coff, uoff, foff, index, crc = rec
            if not 0 <= blob_index < nblobs:
                raise FormatError(
                    "rafs v5 chunk",
                    f"{where} chunk {k}: blob index outside the {nblobs}-entry blob table",
                    value=blob_index,
                )
            want = min(cs, ino.i_size - k * cs)
            if usize != want or foff != k * cs:
                raise FormatError(
                    "rafs v5 chunk",
                    f"{where} chunk {k}: {usize} bytes at file offset {foff}, the file needs {want} at {k * cs}",
                    value=usize,
                )
            out.append(
                ChunkRef(
                    blob_index,
                    index,
                    foff,
                    coff,
                    csize,
                    uoff,
                    usize,
                    bool(flags & rafs_v6.CHUNK_COMPRESSED),
                    block_id,
                    crc if flags & rafs_v6.CHUNK_HAS_CRC32 else None,
                )
            )
        node.chunks = out
        return out
