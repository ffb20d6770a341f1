"""The one in-memory filesystem model (Node, and its chunks as ChunkRef) and the lazy RAFS v6 reader over it.

:class:`RafsV6` decodes a bootstrap held in any buffer (bytes or mmap): inodes
are decoded when first touched, directories when listed, so opening a
bootstrap of 100k inodes costs only its superblocks. Pack, merge, unpack,
mount and the TUI all speak :class:`Node` and :class:`~nydus_inspect.chunks.ref.ChunkRef`.
"""

from __future__ import annotations

import functools
import mmap
import os
import stat
import struct
import sys
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import NamedTuple

from .chunks.ref import ChunkRef, LazyChunks
from .errors import FormatError
from .formats import blob_meta, rafs_v6
from .formats._struct import round_up
from .formats.rafs_v6 import BLOCK_SIZE, ChunkIndex, ChunkTableEntry

# Node types, named as `ls -l` would.
REG, DIR, SYMLINK, CHR, BLK, FIFO, SOCK = "file", "dir", "symlink", "char", "block", "fifo", "socket"
_TYPE_OF_FMT = {
    stat.S_IFREG: REG,
    stat.S_IFDIR: DIR,
    stat.S_IFLNK: SYMLINK,
    stat.S_IFCHR: CHR,
    stat.S_IFBLK: BLK,
    stat.S_IFIFO: FIFO,
    stat.S_IFSOCK: SOCK,
}
FMT_OF_TYPE = {v: k for k, v in _TYPE_OF_FMT.items()}
FT_OF_TYPE = {
    REG: rafs_v6.FT_REG,
    DIR: rafs_v6.FT_DIR,
    CHR: rafs_v6.FT_CHR,
    BLK: rafs_v6.FT_BLK,
    FIFO: rafs_v6.FT_FIFO,
    SOCK: rafs_v6.FT_SOCK,
    SYMLINK: rafs_v6.FT_SYMLINK,
}
#: The longest symlink target nydusd accepts.
MAX_SYMLINK = 4096
#: What a Linux kernel takes of a file: a name of NAME_MAX bytes at most, a symlink target shorter than
#: PATH_MAX (with its NUL), a size that is a signed 64-bit offset and a time that is a signed 64-bit count of
#: seconds (bootstraps hold unsigned 64-bit fields, so a value past KERNEL_MAX no mount can show).
NAME_MAX = 255
PATH_MAX = 4096
KERNEL_MAX = (1 << 63) - 1

# Field positions in the two inode layouts rafs_v6 declares, for RafsV6.attrs, and the dirent layout, for
# RafsV6.dir_entries: the fast paths the mount lists and stats with.
_EXT, _CMP = rafs_v6.INODE_EXTENDED, rafs_v6.INODE_COMPACT
_EXT_UNPACK, _CMP_UNPACK, _EXT_SIZE = _EXT.struct.unpack_from, _CMP.struct.unpack_from, _EXT.size
_E_MODE, _E_NLINK, _E_SIZE, _E_U, _E_INO, _E_UID, _E_GID, _E_MTIME, _E_NSEC = (
    _EXT.names.index(n)
    for n in ("i_mode", "i_nlink", "i_size", "i_u", "i_ino", "i_uid", "i_gid", "i_mtime", "i_mtime_nsec")
)
_C_MODE, _C_NLINK, _C_SIZE, _C_U, _C_INO, _C_UID, _C_GID = (
    _CMP.names.index(n) for n in ("i_mode", "i_nlink", "i_size", "i_u", "i_ino", "i_uid", "i_gid")
)
_DIRENT = rafs_v6.DIRENT_SIZE
_DIRENT_ITER = rafs_v6.DIRENT.iter_unpack
_U16 = struct.Struct("<H").unpack_from
_LAYOUTS = frozenset((rafs_v6.LAYOUT_FLAT_PLAIN, rafs_v6.LAYOUT_FLAT_INLINE, rafs_v6.LAYOUT_CHUNK_BASED))


class _NoXattrs(dict):
    """The empty xattr map that nodes without xattrs share where a tree holds one node per entry (a dict each
    is 64 bytes an entry). It refuses to change: a node that gains xattrs is given a dict of its own."""

    __slots__ = ()

    def _refuse(self, *args, **kwargs):
        raise TypeError("the shared empty xattr map cannot change: give the node a dict of its own")

    __setitem__ = __delitem__ = __ior__ = setdefault = update = pop = popitem = clear = _refuse


NO_XATTRS: dict[bytes, bytes] = _NoXattrs()


def node_type(mode: int) -> str:
    return _TYPE_OF_FMT.get(stat.S_IFMT(mode), "unknown")


@dataclass(eq=False, slots=True)  # slots: a layer's tree holds one per entry
class Node:
    """A file-system entry with its attributes; ``chunks`` for regular files when loaded."""

    path: bytes
    type: str
    mode: int  # full st_mode
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    mtime_nsec: int = 0
    size: int = 0
    nlink: int = 1
    rdev: int = 0
    target: bytes | None = None
    xattrs: dict[bytes, bytes] = field(default_factory=dict)
    nid: int = 0
    ino: int = 0
    hardlink: int | None = None  # group key shared by every name of one inode with nlink > 1 (its nid in v6)
    chunks: Sequence[ChunkRef] | None = None
    children: dict[bytes, Node] | None = None  # only in trees built in memory (pack, merge)
    data: object = None  # where the packer finds the bytes (never set by readers)

    @property
    def name(self) -> bytes:
        return self.path.rsplit(b"/", 1)[-1] if self.path != b"/" else b"/"

    @property
    def perm(self) -> int:
        return stat.S_IMODE(self.mode)

    def to_json(self, with_chunks: bool = False) -> dict:
        out: dict = {
            "path": fsdecode(self.path),
            "type": self.type,
            "mode": f"{self.perm:04o}",
            "uid": self.uid,
            "gid": self.gid,
            "mtime": self.mtime,
            "size": self.size,
            "nlink": self.nlink,
            "nid": self.nid,
        }
        if self.type in (CHR, BLK):
            out["rdev"] = {"major": os.major(self.rdev), "minor": os.minor(self.rdev)}
        if self.target is not None:
            out["target"] = fsdecode(self.target)
        if self.xattrs:
            out["xattrs"] = {fsdecode(k): _show_value(v) for k, v in sorted(self.xattrs.items())}
        if self.hardlink is not None:
            out["hardlink"] = self.hardlink
        if with_chunks and self.chunks is not None:
            out["chunks"] = [c.to_json() for c in self.chunks]
        return out


def fsdecode(raw: bytes) -> str:
    """Names are bytes; show them as UTF-8 with surrogate escapes for anything else."""
    return raw.decode("utf-8", "surrogateescape")


def _show_value(value: bytes) -> str:
    try:
        text = value.decode("utf-8")
        if text.isprintable():
            return text
    except UnicodeDecodeError:
        pass
    return "0x" + value.hex()


class _ChunkedFile(NamedTuple):
    """What decoding a file's chunks needs of its node."""

    path: bytes
    size: int


# Files of more chunks than this get a LazyChunks from RafsV6.chunks (a list of them costs about half a kilobyte
# a chunk: 4096 chunks are 2 MiB, a file of a million chunks half a gigabyte, in every cache that holds it).
LAZY_CHUNKS = 4096
#: Nodes a walk yields between two calls of ``release_pages`` (a few MB of a bootstrap's pages).
RELEASE_EVERY = 16384


class ChunkRecords:
    """A chunk table's records by (blob_index, ci index), the first record of a key winning: a mapping that
    keeps the table where it is (the bootstrap) and, per blob, the row of each chunk index in an array of
    4 bytes a chunk (a table of 80-byte records never reaches 2**32 rows); a record's fields are unpacked
    when asked for. (A dict of field tuples cost about half a kilobyte a chunk: gigabytes for a layer of ten
    million chunks.) Chunk indexes are dense in every real table; a blob whose indexes are not (a hand-made
    table) is kept in a dict of rows instead."""

    __slots__ = ("_buf", "_off", "_rows", "_count", "_release", "_left")

    _RECORD = rafs_v6.CHUNK_TABLE_ENTRY.struct
    _KEY = struct.Struct("<32xI36xI4x")  # blob_index and index of an 80-byte record
    #: Records looked up between two calls of ``release`` (see __init__). Few: keying reads the table in order,
    #: so the page cache holds it in large folios (ext4 and xfs make them on read-ahead), and a fault on one
    #: record maps its whole folio, up to megabytes: what stays resident between releases grows with this
    #: count times the folio size, and each release costs an madvise and the faults that follow it.
    RELEASE_LOOKUPS = 32

    def __init__(
        self, buf, off: int, size: int, release_pages: Callable[[int, int], None] | None = None
    ) -> None:
        self._buf, self._off = buf, off
        # ``release_pages(start, length)`` gives a mapped buffer's pages back to the kernel. The table is sorted
        # by digest, so a walk looks its records up in no order, and each page fault maps the pages around the
        # one asked for as well: a few hundred lookups make megabytes of the table resident, and a walk of a
        # big layer all of it. Keying reads the table once, in order: its pages go behind each step, else a
        # table of ten million records (800 MB) would be resident all at once.
        self._release, self._left = None, self.RELEASE_LOOKUPS
        behind: Callable[[int, int], None] | None = None
        if release_pages is not None and size:
            low = off - off % mmap.PAGESIZE
            self._release = functools.partial(release_pages, low, off + size - low)

            def behind(first: int, stop: int) -> None:
                # The whole pages of records first .. stop - 1 (those at the edges go with the next step).
                start, end = off + first * self._RECORD.size, off + stop * self._RECORD.size
                start += -start % mmap.PAGESIZE
                end -= end % mmap.PAGESIZE
                if end > start:
                    release_pages(start, end - start)

        whole = memoryview(buf)
        view = whole[off : off + size]
        try:
            one = self._one_blob(view, behind)
            if one is not None:
                self._rows, self._count = one
                return
            # Two passes over the records, keeping no list of their keys: the first sizes each blob's index,
            # the second fills it. A table that is no whole number of records raises struct.error.
            per_blob: dict[int, int] = {}  # blob index -> records
            top: dict[int, int] = {}  # blob index -> highest chunk index + 1
            for b, ci in self._KEY.iter_unpack(view):
                per_blob[b] = per_blob.get(b, 0) + 1
                if ci >= top.get(b, 0):
                    top[b] = ci + 1
            rows: dict[int, array | dict[int, int]] = {}
            for b, count in per_blob.items():
                # Dense: a slot per index up to the highest (row + 1, 0 for none); sparse: a dict.
                rows[b] = array("I", bytes(4 * top[b])) if top[b] <= 2 * count + 1024 else {}
            found = 0
            for row, (b, ci) in enumerate(self._KEY.iter_unpack(view), 1):
                where = rows[b]
                if isinstance(where, array):
                    if not where[ci]:
                        where[ci] = row
                        found += 1
                elif ci not in where:
                    where[ci] = row
                    found += 1
        finally:
            view.release()
            whole.release()
        self._rows, self._count = rows, found

    def _released(self) -> None:
        """After keying the table (which read all of it), and every RELEASE_LOOKUPS lookups."""
        self._left = self.RELEASE_LOOKUPS
        if self._release is not None:
            self._release()

    #: Records each step of _one_blob reads at once. Its slices, lists and counts are single C calls, each
    #: holding the GIL throughout: over a whole table of millions of records they stalled every other thread
    #: for a good part of a second (the frames of an app keying the table in a worker). Over a step, a C
    #: call is short, and the interpreter's switch interval lets the other threads in between steps.
    _STEP = 1 << 16

    @classmethod
    def _one_blob(
        cls, view, behind: Callable[[int, int], None] | None = None
    ) -> tuple[dict[int, array], int] | None:
        """(rows, records found) of a table whose records all name one blob, as nydus writes it for a layer of
        its own: its two key columns are read with no per-record unpacking, and the rows filled from the last
        record to the first, so the first record of a key wins (the general loop below takes most of a second
        for a million records, this a third of that). None for any other table."""
        size = cls._RECORD.size
        n = len(view) // size
        if not n or len(view) % size or sys.byteorder != "little":
            return None
        words = view.cast("I")  # the records' little-endian 32-bit words, 20 a record
        step = cls._STEP
        try:
            blob, top = words[8], 0
            for s in range(0, n, step):
                e = min(n, s + step)
                blobs = words[20 * s + 8 : 20 * e : 20].tolist()
                if blobs.count(blob) != e - s:
                    return None
                top = max(top, max(words[20 * s + 18 : 20 * e : 20].tolist()) + 1)
                if behind is not None:
                    behind(s, e)
            if top > 2 * n + 1024:
                return None  # sparse: the general loop keeps a dict
            rows, zeros = array("I"), bytes(4 * step)
            for k in range(0, top, step):
                rows.frombytes(zeros[: 4 * min(step, top - k)])
            for s in reversed(range(0, n, step)):
                e = min(n, s + step)
                for row, ci in zip(range(e, s, -1), reversed(words[20 * s + 18 : 20 * e : 20].tolist())):
                    rows[ci] = row
                if behind is not None:
                    behind(s, e)
        finally:
            words.release()
        empty = sum(rows[k : k + step].count(0) for k in range(0, top, step))
        return {blob: rows}, top - empty

    def _row(self, key) -> int:
        where = self._rows.get(key[0])
        if where is None:
            return 0
        ci = key[1]
        if isinstance(where, array):
            return where[ci] if 0 <= ci < len(where) else 0
        return where.get(ci, 0)

    def first(self, key) -> int | None:
        """The index in the table of the first record of ``key`` (the one every reader takes), or None."""
        row = self._row(key)
        return row - 1 if row else None

    def get(self, key, default=None):
        row = self._row(key)
        if not row:
            return default
        if self._release is not None:
            # Not locked: the chunk workers of verify share the table, and a count off by a few is harmless.
            self._left -= 1
            if self._left <= 0:
                self._released()
        return self._RECORD.unpack_from(self._buf, self._off + self._RECORD.size * (row - 1))

    def __getitem__(self, key):
        got = self.get(key)
        if got is None:
            raise KeyError(key)
        return got

    def __contains__(self, key) -> bool:
        return bool(self._row(key))

    def __len__(self) -> int:
        return self._count


class _LRU(OrderedDict):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key, value) -> None:
        self[key] = value
        if len(self) > self.limit:
            self.popitem(last=False)


#: ``ci_source(blob_index)``: a blob's blob.meta chunk-info array and its blob.digest digests (None when it has
#: no blob.digest), or None when the blob has no blob.meta.
CiSource = Callable[[int], "tuple[blob_meta.ChunkInfoArray, list[bytes] | None] | None"]


#: What went wrong in a walk (:attr:`WalkError.kind`): a node or directory that does not decode, a directory
#: that contains itself, a directory named by two dirents, a tree deeper than the walk's limit.
WALK_DECODE, WALK_CYCLE, WALK_LINKED_TWICE, WALK_DEPTH = "decode", "cycle", "linked-twice", "depth"


@dataclass
class WalkError:
    """A part of the tree the walk could not enter or decode: reported, then skipped, under the report policy."""

    path: bytes
    nid: int
    error: FormatError
    kind: str = WALK_DECODE


def path_order(items: Iterator[tuple[bytes, bool, object]]) -> list[tuple[object, bool]]:
    """A directory's entries, given as (name, is_dir, entry), in the order a walk visits them when paths are to
    come out sorted by their bytes: (entry, expand) pairs, each entry once with ``expand`` False where the
    entry itself sorts, and a directory once more with ``expand`` True where its contents sort: as its name
    followed by "/" ("a", "a-b", "a/c": "-" sorts below "/")."""
    keys = []
    for i, (name, is_dir, entry) in enumerate(items):
        # The position breaks ties (two dirents of one name, only in a broken image): entries never compare.
        keys.append((name, i, entry, False))
        if is_dir:
            keys.append((name + b"/", i, entry, True))
    keys.sort(key=itemgetter(0, 1))
    return [(entry, expand) for _key, _i, entry, expand in keys]


def _dirent_path_order(entries: list[rafs_v6.Dirent]) -> Iterator[tuple[rafs_v6.Dirent, bool]]:
    return iter(path_order((d.name, d.file_type == rafs_v6.FT_DIR, d) for d in entries))


class RafsV6:
    """Lazy reader of a RAFS v6 bootstrap held in ``buf``: bytes or an mmap (a plain EROFS image, read by the
    subclass nydus_inspect.erofs.Erofs, may also be anything sliced and indexed as bytes are).

    ``ci_source(blob_index)`` may supply a blob's chunk-info array and digests, used for
    chunks missing from the bootstrap's own chunk table.
    """

    #: Inodes as mkfs.erofs writes them (the plain EROFS reader, nydus_inspect.erofs, sets it).
    PLAIN_EROFS = False
    #: None until whoever maps ``buf`` from a file sets it (see __init__); a class default too, for the
    #: subclasses that set up their own state (the EROFS and v5 readers).
    release_pages: Callable[..., None] | None = None
    #: The EROFS block: 4096, or 512 in a tarfs bootstrap (set from the superblock).
    block_size = BLOCK_SIZE
    #: A tarfs bootstrap: a file's chunks are its bytes in the raw tar blob, at blkaddr, unrecorded.
    tarfs = False
    #: The blob indexes of external blobs (see __init__).
    external: frozenset[int] = frozenset()

    def __init__(self, buf, ci_source: CiSource | None = None) -> None:
        self.buf = buf
        self.size = len(buf)
        self.meta = rafs_v6.parse_bootstrap(buf)
        self.sb = self.meta.sb
        self.ext = self.meta.ext
        self.blobs = self.meta.blobs
        self.chunk_size = self.ext.s_chunk_size
        self.digester = self.ext.digester
        self.compressor = self.ext.compressor
        self._meta_off = self.meta.meta_offset
        self.block_size = self.meta.block_size
        self.tarfs = bool(self.ext.s_flags & rafs_v6.TARFS_MODE)
        #: Blobs in external storage (nydus-image --attributes ... type=external, as model artifacts are
        #: referenced): a chunk is raw bytes anywhere in the blob, at no block boundary, and its record
        #: carries no digest (nydus never reads the data when it builds) but may carry a CRC32C.
        self.external = frozenset(b.blob_index for b in self.blobs if b.features & blob_meta.EXTERNAL)
        self._xattr_base = self.sb.s_xattr_blkaddr << self.sb.s_blkszbits  # the shared xattr area
        self._inodes: _LRU = _LRU(65536)
        #: Set by whoever maps ``buf`` from a file: ``release_pages(start=0, length=all)`` gives the pages read so
        #: far back to the kernel (they are read again from its cache when needed). The walks call it every
        #: RELEASE_EVERY nodes, so that a walk of a mapped bootstrap holds a part of it, not all of it,
        #: resident; the chunk records give back the chunk table's range (ChunkRecords).
        self.release_pages: Callable[..., None] | None = None
        self._decoded = 0  # chunks decoded since the pages were last given back (_decode_chunks)
        self._chunk_table: dict[tuple[int, int], ChunkTableEntry] | None = None
        self._records: ChunkRecords | None = None
        self._ci_source = ci_source

    # ------------------------------------------------------------------ inodes
    @property
    def root_nid(self) -> int:
        return self.sb.s_root_nid

    def inode_offset(self, nid: int) -> int:
        return self._meta_off + 32 * nid

    @property
    def chunk_table_records(self) -> int:
        """How many chunk records the bootstrap's chunk table holds (its size over the record size)."""
        return self.ext.s_chunk_table_size // rafs_v6.CHUNK_TABLE_ENTRY.size

    @property
    def may_have_xattrs(self) -> bool:
        """Whether any inode of the image may carry xattrs (the extended superblock's HAS_XATTR flag)."""
        return bool(self.ext.s_flags & rafs_v6.HAS_XATTR)

    def has_xattrs(self, nid: int) -> bool:
        """Whether inode ``nid`` has an xattr area, without decoding it."""
        return self.inode(nid).i_xattr_icount != 0

    def inode(self, nid: int) -> rafs_v6.Inode:
        ino = self._inodes.get(nid)
        if ino is None:
            if nid <= 0 or self.inode_offset(nid) + 32 > self.size:
                raise FormatError("erofs inode", "nid points outside the bootstrap", value=nid)
            ino = rafs_v6.parse_inode(self.buf, self.inode_offset(nid), nid, plain_erofs=self.PLAIN_EROFS)
            self._inodes.put(nid, ino)
        return ino

    def node(self, nid: int, path: bytes) -> Node:
        """Decode the inode ``nid`` into a Node named ``path`` (chunks not loaded)."""
        ino = self.inode(nid)
        off = self.inode_offset(nid)
        ntype = node_type(ino.i_mode)
        if ntype == "unknown":
            raise FormatError(
                "erofs inode",
                f"nid {nid}: unknown file type in i_mode",
                offset=off + 4,
                value=f"0{ino.i_mode:o}",  # a mode reads in octal, as ls and chmod write it
            )
        xattrs = self._xattrs(nid, off, ino) if ino.i_xattr_icount else {}
        n = Node(
            path=path,
            type=ntype,
            mode=ino.i_mode,
            uid=ino.i_uid,
            gid=ino.i_gid,
            # A compact inode has no mtime: EROFS gives it the superblock's build time (0 in nydus images).
            mtime=ino.i_mtime if ino.extended else self.sb.s_build_time,
            mtime_nsec=ino.i_mtime_nsec if ino.extended else self.sb.s_build_time_nsec,
            size=ino.i_size,
            nlink=ino.i_nlink,
            nid=nid,
            ino=ino.i_ino,
            xattrs=xattrs,
        )
        if ntype in (CHR, BLK):
            n.rdev = ino.i_u
            n.size = 0
        elif ntype == SYMLINK:
            n.target = self._inline_data(nid, ino, MAX_SYMLINK)
        if ntype != DIR and ino.i_nlink > 1:
            # In RAFS v6 the names of one file are dirents naming one nid, and a nid is what nydusd and
            # nydus-image unpack take for the inode. i_ino is only a build index: two inodes sharing one are
            # two files (as in 2022 images, which gave each name its own inode), never one, whatever they hold.
            # Any non-directory can be hard-linked (tar links symlinks, fifos and devices too).
            n.hardlink = nid
        return n

    def _xattrs(self, nid: int, off: int, ino: rafs_v6.Inode) -> dict[bytes, bytes]:
        """The xattrs of inode ``nid`` at ``off`` (a plain EROFS image adds shared ones and long prefixes)."""
        return rafs_v6.parse_xattrs(self.buf, off + ino.inode_size, ino.i_xattr_icount, nid, self._xattr_base)

    def _data_blocks(self, nid: int, off: int, ino: rafs_v6.Inode, length: int) -> bytes:
        """``length`` bytes of inode ``nid``'s data blocks, from block i_u (the inode is at ``off``)."""
        start = ino.i_u * self.block_size
        if start + length > self.size:
            raise FormatError(
                "erofs inode",
                f"nid {nid}: data block lies past the bootstrap",
                field="i_u",
                offset=off + 16,
                value=ino.i_u,
            )
        return bytes(self.buf[start : start + length])

    def _inline_data(self, nid: int, ino: rafs_v6.Inode, limit: int) -> bytes:
        """The data of a FLAT_PLAIN or FLAT_INLINE inode (directory blocks or symlink target)."""
        size = ino.i_size
        off = self.inode_offset(nid)
        if size > limit:
            raise FormatError(
                "erofs inode",
                f"nid {nid}: data larger than {limit} bytes",
                field="i_size",
                offset=off + 8,
                value=size,
            )
        layout = ino.datalayout
        if layout == rafs_v6.LAYOUT_FLAT_PLAIN:
            return self._data_blocks(nid, off, ino, size)
        if layout == rafs_v6.LAYOUT_FLAT_INLINE:
            full = size // self.block_size * self.block_size
            tail = size - full
            parts = []
            if full:
                parts.append(self._data_blocks(nid, off, ino, full))
            tstart = off + ino.inode_size + ino.xattr_size
            if tstart + tail > self.size or (tstart % self.block_size) + tail > self.block_size:
                raise FormatError(
                    "erofs inode",
                    f"nid {nid}: inline tail crosses a block or the end",
                    field="i_size",
                    offset=off + 8,
                    value=size,
                )
            parts.append(bytes(self.buf[tstart : tstart + tail]))
            return b"".join(parts)
        raise FormatError(
            "erofs inode",
            f"nid {nid}: this type needs a flat data layout",
            field="i_format",
            offset=off,
            value=ino.i_format,
        )

    def attrs(self, nid: int) -> tuple[int, int, int, int, int, int, int, int, int]:
        """(mode, nlink, size, i_u, i_ino, uid, gid, mtime, mtime_nsec) of inode ``nid``.

        Listing a directory through the mount needs these of every entry: they are read straight from the
        inode's declared layout (a third of the cost of :meth:`inode`); anything unusual goes through
        :meth:`inode`, which says what is wrong. A compact inode has the superblock's build time, as in
        :meth:`node`."""
        off = self._meta_off + 32 * nid
        if 0 < nid and off + _EXT_SIZE <= self.size:
            raw = self.buf[off : off + _EXT_SIZE]  # one slice: ``buf`` may be a view with no buffer
            fmt = raw[0] | raw[1] << 8
            if fmt & 1:
                v = _EXT_UNPACK(raw)
                t = (
                    v[_E_MODE],
                    v[_E_NLINK],
                    v[_E_SIZE],
                    v[_E_U],
                    v[_E_INO],
                    v[_E_UID],
                    v[_E_GID],
                    v[_E_MTIME],
                    v[_E_NSEC],
                )
            else:
                v = _CMP_UNPACK(raw)
                t = (
                    v[_C_MODE],
                    v[_C_NLINK],
                    v[_C_SIZE],
                    v[_C_U],
                    v[_C_INO],
                    v[_C_UID],
                    v[_C_GID],
                    self.sb.s_build_time,
                    self.sb.s_build_time_nsec,
                )
            if not fmt & ~0xF and (fmt >> 1) & 7 in _LAYOUTS and t[1]:
                return t
        i = self.inode(nid)  # raises the FormatError that says what is wrong
        mtime, nsec = (
            (i.i_mtime, i.i_mtime_nsec) if i.extended else (self.sb.s_build_time, self.sb.s_build_time_nsec)
        )
        return (i.i_mode, i.i_nlink, i.i_size, i.i_u, i.i_ino, i.i_uid, i.i_gid, mtime, nsec)

    # ------------------------------------------------------------------ directories
    def dir_entries(self, nid: int) -> list[tuple[bytes, int]]:
        """[(name, nid)] of directory ``nid``, dots included, in on-disk order.

        Listing directories is most of what find and ls -R cost the mount: the blocks are decoded straight
        from the dirent layout; a block with anything unusual in it goes through :meth:`readdir`, which says
        what is wrong."""
        ino = self.inode(nid)
        if node_type(ino.i_mode) == DIR and ino.i_size <= 1 << 24:
            data = self._inline_data(nid, ino, 1 << 24)
            out: list[tuple[bytes, int]] = []
            for b in range(0, len(data), self.block_size):
                block = data[b : b + self.block_size]
                n = len(block)
                first = _U16(block, 8)[0] if n >= _DIRENT else 0
                if not first or first % _DIRENT or first >= n:
                    break
                ents = list(_DIRENT_ITER(block[:first]))
                offs = [e[1] for e in ents]
                end = block.find(b"\0", offs[-1])
                offs.append(n if end < 0 else end)
                if offs[0] != first or any(offs[i] > offs[i + 1] for i in range(len(ents))):
                    break
                names = [block[offs[i] : offs[i + 1]] for i in range(len(ents))]
                if (
                    not all(names)
                    or any(e[2] > rafs_v6.FT_SYMLINK for e in ents)
                    or any(b"/" in x for x in names)
                ):
                    break
                out += zip(names, [e[0] for e in ents])
            else:
                return out
        return [(x.name, x.nid) for x in self.readdir(nid, include_dots=True)]

    def readdir(self, nid: int, include_dots: bool = False) -> list[rafs_v6.Dirent]:
        """Entries of directory ``nid`` in on-disk (sorted) order, without ``.`` and ``..`` unless asked."""
        ino = self.inode(nid)
        if node_type(ino.i_mode) != DIR:
            raise FormatError("erofs inode", f"nid {nid} is not a directory", value=f"0{ino.i_mode:o}")
        # A directory holds at most 2^24 bytes of dirents here: far beyond any real image, bounded for hostile ones.
        data = self._inline_data(nid, ino, 1 << 24)
        out = []
        for bstart in range(0, len(data), self.block_size):
            block = data[bstart : bstart + self.block_size]
            for d in rafs_v6.parse_dir_block(block, self._dir_block_base(nid, ino, bstart), nid):
                if d.name in (b".", b".."):
                    if include_dots:
                        out.append(d)
                    continue
                if b"/" in d.name:
                    raise FormatError("erofs dirent", f"directory nid {nid}: name contains '/'", value=d.name)
                out.append(d)
        return out

    def _dir_block_base(self, nid: int, ino: rafs_v6.Inode, bstart: int) -> int:
        if (
            ino.datalayout == rafs_v6.LAYOUT_FLAT_INLINE
            and bstart >= ino.i_size // self.block_size * self.block_size
        ):
            return self.inode_offset(nid) + ino.inode_size + ino.xattr_size
        return ino.i_u * self.block_size + bstart

    def root(self) -> Node:
        return self.node(self.root_nid, b"/")

    def lookup(self, path: bytes | str) -> Node:
        """The node at absolute ``path``; FileNotFoundError when absent."""
        if isinstance(path, str):
            path = os.fsencode(path)
        parts = [p for p in path.split(b"/") if p and p != b"."]
        nid = self.root_nid
        cur = b""
        for part in parts:
            ino = self.inode(nid)
            if node_type(ino.i_mode) != DIR:
                raise NotADirectoryError(fsdecode(cur or b"/"))
            for d in self.readdir(nid):
                if d.name == part:
                    nid = d.nid
                    break
            else:
                raise FileNotFoundError(fsdecode(cur + b"/" + part))
            cur += b"/" + part
        return self.node(nid, cur or b"/")

    def children(self, node: Node) -> Iterator[Node]:
        base = node.path.rstrip(b"/")
        for d in self.readdir(node.nid):
            yield self.node(d.nid, base + b"/" + d.name)

    def walk(
        self,
        start: Node | None = None,
        max_depth: int = 4096,
        *,
        on_error: Callable[[WalkError], None] | None = None,
        readdir: Callable[[int], list[rafs_v6.Dirent]] | None = None,
        path_order: bool = False,
    ) -> Iterator[Node]:
        """Pre-order walk in dirent order: the one walk of a bootstrap's tree, for every reader and verify.

        With ``path_order`` the nodes come in the byte order of their full paths instead (what ``sorted``
        gives a list of them), so that two trees can be compared side by side without holding either: a
        directory's contents are visited where its name followed by "/" sorts among its siblings
        (:func:`path_order`), which dirent types tell before the children are decoded.

        The error policy is ``on_error``: without it the first problem raises its FormatError (a node or a
        directory that does not decode, a directory cycle, a directory linked twice, depth beyond
        ``max_depth``); with it each problem is reported as a :class:`WalkError` naming its path, the part
        that failed is skipped and the walk goes on with its siblings. ``readdir(nid)`` may stand in for
        :meth:`readdir` (verify hands over the directories it has just decoded).

        Each directory is expanded once, so the walk is linear in the bootstrap size: a directory linked from
        two dirents (never valid in EROFS) could otherwise make a DAG with exponentially many paths. What the
        walk keeps is linear in depth too: the stack holds each directory's iterator and the length of its
        path in the current prefix, not its path (a stack of paths holds depth squared bytes: 4,000 nested
        255-byte names are gigabytes). Each yielded node carries its full path; a caller that keeps nodes
        keeps their paths.
        """
        list_dir = readdir or self.readdir

        def fail(path: bytes, nid: int, exc: FormatError, kind: str) -> None:
            if on_error is None:
                raise exc
            on_error(WalkError(path, nid, exc, kind))

        if start is not None:
            top = start
        else:
            try:
                top = self.root()
            except FormatError as exc:
                fail(b"/", self.root_nid, exc, WALK_DECODE)
                return
        yield top
        if top.type != DIR:
            return
        try:
            entries = list_dir(top.nid)
        except FormatError as exc:
            fail(top.path, top.nid, exc, WALK_DECODE)
            return
        expanded = {top.nid}
        on_path = [top.nid]
        walked = 0
        prefix = top.path.rstrip(b"/") + b"/"
        # (dirents left, length of the parent's prefix): the directory's own path is the prefix itself.
        # In path order a directory is yielded at its name and expanded at its name + "/": in between, the
        # decoded node waits here (only siblings whose names extend its name with a byte below "/" intervene).
        waiting: dict[bytes, Node] = {}
        stack: list[tuple[Iterator, int]] = [
            (_dirent_path_order(entries) if path_order else iter(entries), 0)
        ]
        while stack:
            it, up = stack[-1]
            d = next(it, None)
            if d is None:
                stack.pop()
                on_path.pop()
                if up:
                    prefix = prefix[:up]
                continue
            expand = False
            if path_order:
                d, expand = d
            if expand:
                child = waiting.pop(d.name, None)
                if child is None:  # it did not decode (reported)
                    continue
                path = child.path
            else:
                path = prefix + d.name
                try:
                    child = self.node(d.nid, path)
                except FormatError as exc:
                    fail(path, d.nid, exc, WALK_DECODE)
                    continue
                walked += 1
                if walked % RELEASE_EVERY == 0 and self.release_pages is not None:
                    self.release_pages()
                yield child
                if child.type != DIR:
                    continue
                if path_order:
                    if d.file_type == rafs_v6.FT_DIR:
                        waiting[d.name] = child
                    continue
            if d.nid in expanded:
                if d.nid in on_path:
                    fail(
                        path,
                        d.nid,
                        FormatError("erofs dirent", "directory cycle", value=fsdecode(path)),
                        WALK_CYCLE,
                    )
                else:
                    fail(
                        path,
                        d.nid,
                        FormatError(
                            "erofs dirent", f"directory nid {d.nid} is linked twice", value=fsdecode(path)
                        ),
                        WALK_LINKED_TWICE,
                    )
                continue
            if len(stack) >= max_depth:
                fail(
                    path,
                    d.nid,
                    FormatError(
                        "erofs directory tree", f"deeper than {max_depth} levels", value=fsdecode(path)
                    ),
                    WALK_DEPTH,
                )
                continue
            try:
                entries = list_dir(d.nid)
            except FormatError as exc:
                fail(path, d.nid, exc, WALK_DECODE)
                continue
            expanded.add(d.nid)
            on_path.append(d.nid)
            stack.append((_dirent_path_order(entries) if path_order else iter(entries), len(prefix)))
            prefix = path + b"/"

    # ------------------------------------------------------------------ chunks
    def chunk_indexes(self, node: Node) -> list[ChunkIndex]:
        return [ChunkIndex.decode(*t) for t in self._raw_chunk_indexes(node)]

    def chunk_refs(self, node: Node) -> Iterator[tuple[int, int]]:
        """(blob index, chunk index) of each chunk of a regular file: what chunk_indexes says, without an
        object per chunk, for walks over every file of an image of a million chunks (analyze); yielded as
        the chunk indexes are read, so that a file of a million chunks is not held as a million tuples."""
        for a, d, _ in self._raw_chunk_indexes(node):
            yield (d & 0xFF) - 1, ((d >> 8) << 16) | a

    def _raw_chunk_indexes(self, node: Node) -> Iterator[tuple[int, int, int]]:
        """The (advise, device_id, blkaddr) triples of a regular file, checked to lie in the bootstrap."""
        start, count = self._chunk_index_span(node)
        return rafs_v6.CHUNK_INDEX.iter_unpack(self.buf[start : start + 8 * count])

    def _chunk_index_span(self, node: Node) -> tuple[int, int]:
        """Where a regular file's 8-byte chunk indexes start in the bootstrap, and how many there are."""
        ino = self.inode(node.nid)
        off = self.inode_offset(node.nid)
        if ino.datalayout != rafs_v6.LAYOUT_CHUNK_BASED:
            if ino.i_size == 0:
                return 0, 0
            raise FormatError(
                "erofs inode",
                f"regular file nid {node.nid} is not chunk-based",
                field="i_format",
                offset=off,
                value=ino.i_format,
            )
        count = -(-ino.i_size // self.chunk_size)
        start = round_up(off + ino.inode_size + ino.xattr_size, 8)
        if start + 8 * count > self.size:
            raise FormatError(
                "erofs chunk index",
                f"nid {node.nid}: {count} chunk indexes run past the bootstrap",
                offset=start,
                value=ino.i_size,
            )
        return start, count

    def chunk_table(self) -> dict[tuple[int, int], ChunkTableEntry]:
        """The bootstrap's 80-byte chunk records keyed by (blob_index, ci index)."""
        if self._chunk_table is None:
            table: dict[tuple[int, int], ChunkTableEntry] = {}
            off = self.ext.s_chunk_table_offset
            layout = rafs_v6.CHUNK_TABLE_ENTRY
            for i, vals in enumerate(
                layout.struct.iter_unpack(self.buf[off : off + self.ext.s_chunk_table_size])
            ):
                rec = ChunkTableEntry(*vals)
                table.setdefault((rec.blob_index, rec.index), rec)
                del i
            self._chunk_table = table
        return self._chunk_table

    def _chunk_records(self) -> ChunkRecords:
        """The chunk table as raw field tuples keyed by (blob_index, ci index): what chunks() reads, without
        building a record object for every chunk of the image."""
        if self._records is None:
            off, size = self.ext.s_chunk_table_offset, self.ext.s_chunk_table_size
            self._records = ChunkRecords(self.buf, off, size, self.release_pages)
            self._records._released()
        return self._records

    def cache_inodes(self, limit: int) -> int:
        """Keep at most ``limit`` decoded inodes from now on, the first decoded going first; returns the limit
        this replaces, for a caller to put back."""
        old, self._inodes.limit = self._inodes.limit, limit
        while len(self._inodes) > limit:
            self._inodes.popitem(last=False)
        return old

    def drop_caches(self, chunk_records: bool = True) -> None:
        """Let go of the decoded inodes and chunk records kept for later calls (they are decoded again if
        asked for): a caller done with a walk over one of many layers keeps their memory from adding up.
        Without ``chunk_records``, only the inodes: for a caller that goes on to look chunks up."""
        self._inodes.clear()
        if chunk_records:
            self._chunk_table = self._records = None

    def index_chunk_table(self) -> None:
        """Key the chunk table now rather than on the first chunks() call (a server does it at start)."""
        self._chunk_records()

    def chunk_table_entries(self) -> Iterator[ChunkTableEntry]:
        off = self.ext.s_chunk_table_offset
        end = off + self.ext.s_chunk_table_size
        layout = rafs_v6.CHUNK_TABLE_ENTRY
        # A slice of the table a step at a time: at 10M chunks the whole table is 800 MB of copy.
        step = layout.struct.size * ChunkRecords._STEP
        for pos in range(off, end, step):
            for vals in layout.struct.iter_unpack(self.buf[pos : min(end, pos + step)]):
                yield ChunkTableEntry(*vals)
            if self.release_pages is not None:
                self.release_pages()

    def chunks(self, node: Node) -> Sequence[ChunkRef]:
        """Resolve every chunk of regular file ``node`` (also stored in ``node.chunks``): a list, or for a file
        of more than :data:`LAZY_CHUNKS` chunks a :class:`LazyChunks` that decodes them when asked for (a
        ChunkRef costs about half a kilobyte; the bootstrap already holds the file's 8 bytes a chunk). Either
        way every chunk is checked before this returns."""
        if node.type != REG:
            return []
        start, count = self._chunk_index_span(node)
        if count <= LAZY_CHUNKS:
            out: Sequence[ChunkRef] = self._decode_chunks(node, start, 0, count)
        else:
            # It keeps the file's path and size, not its node, whose ``chunks`` it becomes: no cycle, which
            # the bulk commands (that run without the cycle collector) would never free.
            file = _ChunkedFile(node.path, node.size)
            out = LazyChunks(count, functools.partial(self._decode_chunks, file, start), LAZY_CHUNKS)
            # Every chunk is checked now, as for a list, so that a bad record is found by this call and not
            # by whichever later reader first asks for it.
            for _ in out:
                pass
        node.chunks = out
        return out

    def _decode_chunks(self, node: Node | _ChunkedFile, start: int, k0: int, k1: int) -> list[ChunkRef]:
        """Chunks ``k0`` up to ``k1`` of regular file ``node``, whose chunk indexes start at ``start`` in the
        bootstrap, each checked against the file's size and its place."""
        nblobs = len(self.blobs)
        external = self.external
        records = None if self.tarfs else self._chunk_records()
        chunk_size = self.chunk_size
        has_crc, is_compressed = rafs_v6.CHUNK_HAS_CRC32, rafs_v6.CHUNK_COMPRESSED
        raw = rafs_v6.CHUNK_INDEX.iter_unpack(self.buf[start + 8 * k0 : start + 8 * k1])
        out = []
        for k, (advise, device_id, blkaddr) in enumerate(raw, k0):
            # ChunkIndex.decode, inline: this loop runs once per chunk of every file read.
            blob_index = (device_id & 0xFF) - 1
            ci_index = ((device_id >> 8) << 16) | advise
            if not 0 <= blob_index < nblobs:
                raise FormatError(
                    "erofs chunk index",
                    f"{fsdecode(node.path)} chunk {k}: blob index outside the {nblobs}-entry blob table",
                    value=blob_index,
                )
            rec = None if records is None else records.get((blob_index, ci_index))
            if records is None:
                # tarfs (nydus-image --type tar-tarfs): the blob is the tar itself and a chunk is the file's
                # bytes where the tar holds them, at blkaddr (512-byte blocks); nydus records no digest.
                size = min(chunk_size, node.size - k * chunk_size)
                where = blkaddr * self.block_size
                chunk = ChunkRef(blob_index, ci_index, k * chunk_size, where, size, where, size, False, b"")
            elif rec is not None:
                # rec: block_id, blob_index, flags, compressed_size, uncompressed_size, compressed_offset,
                # uncompressed_offset, file_offset, index, crc32
                flags = rec[2]
                if blob_index in external:
                    chunk = self._external_chunk(node, k, rec)
                    out.append(chunk)
                    continue
                chunk = ChunkRef(
                    blob_index,
                    ci_index,
                    k * chunk_size,
                    rec[5],
                    rec[3],
                    rec[6],
                    rec[4],
                    bool(flags & is_compressed),
                    rec[0],
                    rec[9] if flags & has_crc else None,
                )
            else:
                chunk = self._chunk_from_blob_meta(node, k, ChunkIndex(blob_index, ci_index, blkaddr))
            want = min(chunk_size, node.size - k * chunk_size)
            if chunk.uncompressed_size != want:
                raise FormatError(
                    "rafs chunk",
                    f"{fsdecode(node.path)} chunk {k}: uncompressed size {chunk.uncompressed_size}, file needs {want}",
                    value=chunk.uncompressed_size,
                )
            if chunk.uncompressed_offset != blkaddr * self.block_size:
                raise FormatError(
                    "erofs chunk index",
                    f"{fsdecode(node.path)} chunk {k}: blkaddr disagrees with the chunk's uncompressed offset "
                    f"{chunk.uncompressed_offset}",
                    value=blkaddr,
                )
            out.append(chunk)
        # A file of millions of chunks reads megabytes of chunk indexes and table rows: given back as it goes,
        # not at the walk's next file (each row is read by the call that decodes its chunk).
        if self.release_pages is not None:
            self._decoded += k1 - k0
            if self._decoded >= RELEASE_EVERY:
                self._decoded = 0
                self.release_pages()
        return out

    def _external_chunk(self, node: Node | _ChunkedFile, k: int, rec: tuple) -> ChunkRef:
        """Chunk ``k`` of a file whose bytes lie in an external blob: stored raw, so its two extents must be
        one; its blkaddr names no block of ours (nydus writes the offset's block, rounded down), and an all-zero
        digest is no digest."""
        want = min(self.chunk_size, node.size - k * self.chunk_size)
        if rec[2] & rafs_v6.CHUNK_COMPRESSED or (rec[3], rec[5]) != (rec[4], rec[6]) or rec[4] != want:
            raise FormatError(
                "rafs chunk",
                f"{fsdecode(node.path)} chunk {k}: an external blob's chunk must be {want} raw bytes "
                f"(compressed {rec[3]} at {rec[5]}, uncompressed {rec[4]} at {rec[6]})",
                value=rec[4],
            )
        digest = rec[0] if any(rec[0]) else b""
        crc = rec[9] if rec[2] & rafs_v6.CHUNK_HAS_CRC32 else None
        return ChunkRef(
            rec[1], rec[8], k * self.chunk_size, rec[5], rec[3], rec[6], rec[4], False, digest, crc
        )

    def _chunk_from_blob_meta(self, node: Node | _ChunkedFile, k: int, idx: ChunkIndex) -> ChunkRef:
        got = self._ci_source(idx.blob_index) if self._ci_source else None
        infos, digests = got if got is not None else (None, None)
        if infos is None or idx.ci_index >= len(infos):
            # Say which of the two places that could locate the chunk is missing, or too short.
            table = (
                "has no chunk table" if not self.ext.s_chunk_table_size else "chunk table has no record of it"
            )
            meta = (
                "has no blob.meta (none in the file, none placed by its blob-table entry)"
                if infos is None
                else f"blob.meta holds {len(infos)} records"
            )
            raise FormatError(
                "rafs chunk table",
                f"{fsdecode(node.path)} chunk {k}: no record for blob {idx.blob_index} chunk {idx.ci_index}: "
                f"the bootstrap {table} and the blob {meta}",
                value=idx.ci_index,
            )
        # Without the bootstrap's record, blob.digest holds the digest the chunk must be checked against.
        digest = digests[idx.ci_index] if digests is not None and idx.ci_index < len(digests) else b""
        return ChunkRef.from_info(infos[idx.ci_index], idx.blob_index, k * self.chunk_size, digest)

    def inode_count(self) -> int:
        return self.sb.s_inos

    def prefetch_paths(self) -> list[int]:
        return list(self.meta.prefetch)
