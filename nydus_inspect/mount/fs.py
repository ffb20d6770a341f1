"""The FUSE file system of a mount: a ``pyfuse3.Operations`` over the model and the entries tree.

Inode numbers are stable: the mount root is 1, ``rootfs/`` and everything under it use the RAFS nid of the
inode (a bootstrap is at most 1 GiB, so nids stay far below 2^56), and the virtual ``entries/`` tree numbers
from 2^56. The names of a hard link are dirents of one nid (nydus writes one inode per link), so they share
one inode, as nydusd shows them; two inodes that merely claim one i_ino stay two files.

The image never changes, so the kernel may cache everything for long: entry and attribute timeouts of a year
(negative lookups too), ``keep_cache`` on every open, and directory listings come with their attributes
(readdirplus), so ``ls -l`` and ``find`` cost about one request per directory. The one exception is an
entries/ file whose size is known only once it is made (chunks.json): a stat does not make it, so until its
first read it shows size 0, uncached, and is read with direct I/O (see ``mount.entries``). When the image
holds no xattrs at all, getxattr on its files answers ENOTSUP rather than ENODATA, which tells ``ls -l`` and
friends to stop asking for SELinux labels and ACLs on this mount.

File data is read by chunk. Chunks are read with pread, decompressed and checked against their digest in the
workers of the one read-ahead scheduler (``chunks.readahead``; zstd, lz4, blake3 and pread release the GIL), never
on the trio loop: they take work from its two queues (urgent: a reader waits; background: decoding ahead) and hand
results back to the loop in batches. A chunk is decoded once however many readers want it, kept in a bounded LRU
of decompressed chunks, and also handed to the kernel's page cache whole (FUSE notify_store, from a thread of its
own), so the following reads of that chunk never reach us. Sequential readers get the next chunks decoded ahead. A
tree reader (two files opened within a second: tar, cp -r, rsync) gets the files after the one it opened decoded
ahead in the order of a pre-order walk (``mount.prefetch``), which is the order it reads them in and, for layers
packed from a tree, the order of the blob; at most a quarter of the cache ahead of it. A chunk that does not
decode or match its digest is EIO and one log line naming the file, the chunk and its offsets.

A hostile image never ends the daemon: an inode whose attributes the kernel cannot take (a size past a signed
64-bit offset, no file type) is EIO for that inode and listed all the same; a time past a time_t is shown as
the largest one; names and link targets FUSE cannot carry are left out or EIO; and whatever else a handler
raises is EIO for that request. Each of these is one log line.
"""

from __future__ import annotations

import array
import bisect
import errno
import functools
import hashlib
import logging
import operator
import os
import queue
import stat
import struct
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence

import pyfuse3
import trio

from ..chunks.decode import ChunkCache
from ..chunks.readahead import DONE, QUEUED, RUNNING, Scheduler
from ..chunks.ref import ChunkRef
from ..errors import NydusInspectError
from ..merge import WHITEOUT_PREFIX
from ..model import _LRU, KERNEL_MAX, NAME_MAX, fsdecode
from .entries import (
    LOG_XATTR,
    PID_XATTR,
    ROOT_INODE,
    SHA256_OF_CONTENT,
    XATTR_PREFIX,
    Generated,
    Tree,
    VNode,
    check_generated,
)
from .prefetch import PREFETCH_AHEAD, WALK_FILES_AHEAD, TreeReaderPrefetch, _FileJob, _Walker
from .sources import Sources

log = logging.getLogger("nydus_inspect.mount")

#: The image is immutable: let the kernel keep names and attributes for a year.
TIMEOUT = 365 * 24 * 3600.0
S_IFMT = 0o170000
S_IFREG, S_IFDIR, S_IFCHR, S_IFBLK = stat.S_IFREG, stat.S_IFDIR, stat.S_IFCHR, stat.S_IFBLK
DEFAULT_CACHE_SIZE = 256 << 20
#: Decoded entries/ files (bootstrap, JSON sidecars) kept in memory, by total bytes.
CONTENT_CACHE_SIZE = 64 << 20
#: Directory listings kept decoded, in entries (about 60 bytes each, and an index of 100 more once a name in
#: the directory is looked up).
DIR_CACHE_ENTRIES = 1 << 17
#: Files of more chunks than this, read from start to end, do not keep the chunks read past in the cache.
STREAM_CHUNKS = 16
#: Largest st_blksize a regular file gets (its chunk size up to this).
MAX_BLKSIZE = 1 << 20
#: Inodes, dirents and chunk records the mount reads from a mapped bootstrap between two releases of its
#: pages (RafsV6.release_pages). The kernel maps a few hundred KiB around each page first read, and the chunk
#: record of each file read may lie anywhere in the chunk table: a tar of the mount maps that much per file.
RELEASE_READS = 256
#: Chunks decoded ahead of a sequential reader.
READAHEAD_CHUNKS = 4
#: On the first read of a file from its start, the kernel is asked to read this much of its stored bytes ahead
#: at once (one large disk read rather than a few chunks at a time), at most.
WILL_NEED_BYTES = 64 << 20
#: ... and over so many chunks at most: deduplicated chunks share their stored bytes, and the walk to the end of
#: the range would otherwise cover a whole file of them (that many of nydus's smallest, 4 KiB, chunks).
WILL_NEED_CHUNKS = WILL_NEED_BYTES >> 12
#: Decoded bytes waiting to be handed to the page cache, at most.
STORE_QUEUE_BYTES = 32 << 20

#: What the kernel takes: a size is a signed 64-bit offset (FUSE answers EIO for a larger one), a time a signed
#: 64-bit count of seconds; bootstraps hold unsigned 64-bit fields.
MAX_OFF = KERNEL_MAX
MAX_TIME_NS = MAX_OFF * 1_000_000_000 + 999_999_999
#: File types the kernel accepts in an attribute reply (any other is EIO there).
KERNEL_TYPES = frozenset(
    (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK)
)
#: Failing inodes named by their path in log lines (each costs a walk of the tree); later ones by nid.
WHERE_WALKS = 32


class _Job:
    """One chunk being decoded; every reader of it waits on the same job."""

    __slots__ = ("key", "chunk", "nid", "event", "data", "error", "state")

    def __init__(self, key: tuple, chunk: ChunkRef, nid: int) -> None:
        self.key = key
        self.chunk = chunk
        self.nid = nid
        self.event = trio.Event()
        self.data = None
        self.error: BaseException | None = None
        self.state = QUEUED


class _Hint:
    """Ask the kernel to read the stored bytes from the first of ``chunks`` to the last now
    (POSIX_FADV_WILLNEED), from a worker: for a large range that takes the caller milliseconds."""

    __slots__ = ("chunks", "state")

    def __init__(self, chunks: list[ChunkRef]) -> None:
        self.chunks = chunks
        self.state = QUEUED


class _SizedLRU(OrderedDict):
    """An LRU bounded by the total length of its values (directory listings: their entry counts)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.used = 0

    def put(self, key, value) -> None:
        old = self.pop(key, None)
        if old is not None:
            self.used -= len(old)
        self[key] = value
        self.used += len(value)
        while self.used > self.limit and len(self) > 1:
            _, dropped = self.popitem(last=False)
            self.used -= len(dropped)


class _Listing:
    """A directory as listed: its names and their nids in on-disk order, each name once. The index of names
    is made on the first lookup: listing a directory (readdir, a tree reader's walk) needs none."""

    __slots__ = ("names", "nids", "_index")

    def __init__(self, names: list[bytes], nids: array.array) -> None:
        self.names = names
        self.nids = nids
        self._index: dict[bytes, int] | None = None

    def __len__(self) -> int:
        return len(self.names)

    def find(self, name: bytes) -> int | None:
        """Where ``name`` is in the listing, or None."""
        if self._index is None:
            self._index = dict(zip(self.names, range(len(self.names))))
        return self._index.get(name)

    def parent(self) -> int | None:
        """The nid ``..`` names, or None (found without making the index)."""
        try:
            return self.nids[self.names.index(b"..")]
        except ValueError:
            return None


def _guard(handler):
    """``handler``, ending in a reply whatever goes wrong in it. pyfuse3 ends its loop, and with it the mount,
    on any exception that is not a FUSEError: one a hostile image drives past every check is EIO for that
    request and one log line here instead."""
    name = handler.__name__

    @functools.wraps(handler)
    async def guarded(self, *args):
        try:
            return await handler(self, *args)
        except pyfuse3.FUSEError:
            raise
        except Exception as exc:
            raise self._internal(name, args, exc) from None

    return guarded


_file_offset = operator.attrgetter("file_offset")


def _span(chunks: list[ChunkRef], off: int, end: int) -> tuple[int, int]:
    """The first and last of ``chunks`` (of varying sizes, in file order, covering the file) that bytes
    ``off``..``end`` touch."""
    k0 = max(0, bisect.bisect_right(chunks, off, key=_file_offset) - 1)
    k1 = max(k0, bisect.bisect_left(chunks, end, key=_file_offset) - 1)
    return k0, k1


def _chunks_from(chunks: Sequence[ChunkRef], k: int, block: int = 1024) -> Iterator[tuple[int, ChunkRef]]:
    """``(index, chunk)`` from chunk ``k`` on, taken a block at a time: a LazyChunks decodes a slice in one
    go, and the caller may stop long before the end."""
    for base in range(k, len(chunks), block):
        yield from enumerate(chunks[base : base + block], base)


_name, _nid = operator.itemgetter(0), operator.itemgetter(1)


class NydusFS(TreeReaderPrefetch, pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = False

    def __init__(
        self,
        sources: Sources,
        *,
        cache_size: int = DEFAULT_CACHE_SIZE,
        readahead: bool = True,
        workers: int = 0,
        page_cache: bool = True,
        log_where: str = "",
        raw_whiteouts: bool = False,
    ) -> None:
        super().__init__()
        self.sources = sources
        self.image = sources.image
        self.rafs = self.image.rafs
        self.chunk_size = self.image.chunk_size
        #: st_blksize of regular files: a chunk (the largest read request FUSE sends is 1 MiB).
        self._file_blksize = max(4096, min(self.chunk_size, MAX_BLKSIZE))
        self.root_nid = self.rafs.root_nid
        try:
            mtime_ns = os.stat(sources.layers[0].path).st_mtime_ns
        except OSError:
            mtime_ns = 0
        self.tree = Tree(sources.views, self.root_nid, mtime_ns=mtime_ns)
        self.vnodes = self.tree.nodes
        self.uid, self.gid = os.getuid(), os.getgid()
        # One layer is shown as merge shows it on its own: whiteouts (.wh.NAME, .wh..wh..opq) act on lower
        # layers only and never reach the image. Several layers are merged already, without them.
        # A plain EROFS image is a file system, not a nydus layer: it is served as stored, as erofsfuse and the
        # kernel serve it (containerd's --aufs layers hold overlayfs whiteouts already).
        self.hide_whiteouts = not raw_whiteouts and not getattr(self.rafs, "PLAIN_EROFS", False)
        self.log_where = log_where  # where this daemon logs, answered as user.nydus.mount.log on the root
        # An image without any xattr: say "not supported" so that ls -l stops asking for labels and ACLs.
        self.no_xattr_errno = pyfuse3.ENOATTR if self.rafs.may_have_xattrs else errno.ENOTSUP
        # The chunk service decodes and checks chunk data; its cache is the mount's cache of decoded chunks.
        self.reader = self.image.chunk_reader(ChunkCache(cache_size))
        self.cache = self.reader.cache
        self.content_cache = ChunkCache(CONTENT_CACHE_SIZE)
        self._big: tuple[tuple, bytes] | None = None  # the last made content too large for that cache
        self.readahead = readahead
        # A sequential reader gets this many chunks decoded ahead (as the cache allows, leaving it room).
        self.readahead_chunks = max(1, min(READAHEAD_CHUNKS, cache_size // max(1, 4 * self.chunk_size)))
        self.page_cache = page_cache
        self.workers = workers or max(2, os.cpu_count() or 1)
        self.limiter = trio.CapacityLimiter(self.workers)
        self._token = None
        # The one read-ahead scheduler decodes the mount's chunk jobs, file prefetches and hints in its
        # workers (urgent: a reader waits; background: decoding ahead), started once the loop runs (attach).
        self.sched = Scheduler(self.workers, run=self._work_item, name="decode", start=False)
        self._lock = self.sched.lock  # job states, between the loop and the workers
        # Results of the workers, run on the loop in batches: one wake-up of the loop for many results.
        self._results: list = []
        self._results_lock = threading.Lock()
        self._store_q: queue.SimpleQueue = queue.SimpleQueue()
        self._store_pending = 0  # bytes queued for the page cache
        self._storing = True
        self._storer: threading.Thread | None = None
        self._inflight: dict[tuple, _Job] = {}
        self._vjobs: dict[int, trio.Event] = {}
        # Directory nid -> (entries [(name, dirent nid)], {name: dirent nid}), at most DIR_CACHE_ENTRIES in all.
        self._dirs = _SizedLRU(DIR_CACHE_ENTRIES)
        self._chunks = _LRU(16384)  # nid -> list[ChunkRef], files of a few chunks
        self._big_chunks = _LRU(64)  # the same for files of many chunks
        self._xattrs = _LRU(8192)  # nid -> {name: value}
        self._last_end = _LRU(4096)  # nid -> end offset of the last read (sequential detection)
        # Regular file nid -> (directory nid, index in its listing), of files a walk passed or looked up (a
        # file listed is found in the cached listings: see _position).
        self._pos = _LRU(2 * WALK_FILES_AHEAD)
        self._dpos = _LRU(1 << 16)  # directory nid -> index in its parent's listing
        self._pf: dict[int, _FileJob] = {}  # prefetches queued or running
        self._pf_done = _LRU(8 * WALK_FILES_AHEAD)  # nids prefetched already
        self._reading_until = 0.0  # a tree reader (tar, cp -r) may be at work until then
        self._walker: _Walker | None = None
        # Directories listed lately: the kernel knows their files, so a worker can hand their chunks to the page
        # cache (read by workers; a directory that dropped out has its files' chunks stored when listed again).
        self._listed_dirs = _LRU(1 << 16)
        # Bytes a tree reader gets decoded ahead: a quarter of the cache at most, so that they stay in it.
        self.prefetch_ahead = min(PREFETCH_AHEAD, cache_size // 4)
        self._paths: dict[int, str] = {}
        self._reported: set[tuple] = set()
        self._logged: set = set()  # error lines written (each once: the kernel asks again after an EIO)
        self._walks_left = WHERE_WALKS
        self._hinted = _LRU(
            4096
        )  # nid -> index of the last chunk whose stored bytes the kernel was asked for
        # Inodes, dirents and chunk records read from the bootstrap until its pages are given back to the kernel
        # (when it is mapped: a big one is), so that serving a tree holds a part of the map resident, not all
        # of it, as the model's walks do.
        self._until_release = RELEASE_READS
        # The chunk table, keyed: built now rather than on the first read of a file (milliseconds on a big image).
        try:
            self.rafs.index_chunk_table()
        except (NydusInspectError, ValueError, struct.error):
            pass  # the reads that need it say what is wrong
        self._release()

    # ------------------------------------------------------------------ life cycle
    def attach(self) -> None:
        """Start serving: called on the trio loop before pyfuse3.main."""
        self._token = trio.lowlevel.current_trio_token()
        self.sched.start()
        if self.page_cache:
            self._storer = threading.Thread(target=self._store_loop, name="notify-store", daemon=True)
            self._storer.start()

    def stop_storing(self, timeout: float = 5.0) -> bool:
        """Blocking (run it in a thread): stop feeding the page cache, and wait for a store in progress.

        Call it while requests are still answered: a store waits for reads of the same pages, and once the
        loop stops answering, a store stuck that way would also keep the device from closing."""
        storer = self._storer
        if storer is None:
            return True
        self._storing = False
        self._store_q.put(None)
        storer.join(timeout)
        if storer.is_alive():
            return False
        self._storer = None
        return True

    def detach(self) -> bool:
        """After the loop: True once nothing may touch the FUSE session any more (it can be destroyed)."""
        self.sched.shutdown(wait=False)
        stopped = self.stop_storing(5.0)
        self.tree.close()
        return stopped

    # ------------------------------------------------------------------ attributes
    def _stat(self, nid: int) -> tuple:
        """(mode, nlink, size, i_u, i_ino, uid, gid, mtime, mtime_nsec) of inode ``nid`` (the model's fast path)."""
        self._read_bootstrap(1)
        return self.rafs.attrs(nid)

    def _read_bootstrap(self, n: int) -> None:
        """``n`` more inodes, dirents or chunk records are about to be read from the bootstrap (or were just
        read). Also called by the decoding workers: a count lost between threads only delays a release."""
        self._until_release -= n
        if self._until_release <= 0:
            self._release()

    def _release(self) -> None:
        self._until_release = RELEASE_READS
        release = self.rafs.release_pages
        if release is not None:
            release()

    def _image_attr(self, nid: int, ino_nr: int = 0, st: tuple | None = None) -> pyfuse3.EntryAttributes:
        """The attributes of image inode ``nid``; FUSEError(EIO) for one the kernel cannot take (a size past a
        signed 64-bit offset, no file type it knows: the kernel itself would refuse the reply). A time past
        what a time_t holds is shown as the largest one (and said once in the log): the file stays usable."""
        mode, nlink, size, i_u, _, uid, gid, mtime, nsec = st or self._stat(nid)
        fmt = mode & S_IFMT
        if size > MAX_OFF or fmt not in KERNEL_TYPES:
            raise self._unservable(nid, mode, size)
        e = pyfuse3.EntryAttributes()
        e.st_ino = ino_nr or nid
        e.entry_timeout = TIMEOUT
        e.attr_timeout = TIMEOUT
        e.st_mode = mode
        e.st_nlink = nlink
        e.st_uid = uid
        e.st_gid = gid
        if fmt == S_IFCHR or fmt == S_IFBLK:
            e.st_rdev = i_u
            size = 0
        e.st_size = size
        # A file's data comes by chunk: readers that size their reads by st_blksize (cat, cp) then ask for whole
        # chunks, which the kernel turns into read requests that start on chunk boundaries.
        e.st_blksize = self._file_blksize if fmt == S_IFREG else 4096
        e.st_blocks = (size + 511) >> 9
        t = mtime * 1_000_000_000 + nsec
        if t > MAX_TIME_NS:
            self._log_once(
                ("clamped", nid),
                f"{self._where(nid)}: i_mtime {mtime} (nsec {nsec}) is past the largest time the kernel takes: "
                f"shown as {MAX_OFF}",
            )
            t = MAX_TIME_NS
        e.st_mtime_ns = t
        e.st_ctime_ns = t
        e.st_atime_ns = t
        return e

    def _unservable(self, nid: int, mode: int, size: int) -> pyfuse3.FUSEError:
        if mode & S_IFMT not in KERNEL_TYPES:
            why = f"i_mode {mode:#o} has no file type the kernel knows"
        else:
            why = f"i_size {size} is past the largest size the kernel takes ({MAX_OFF})"
        self._log_once(("refused", nid), f"{self._where(nid)}: {why}: EIO")
        return pyfuse3.FUSEError(errno.EIO)

    @staticmethod
    def _placeholder(ino_nr: int, mode: int) -> pyfuse3.EntryAttributes:
        """A directory entry for an inode whose attributes cannot be given: its type only, cached for no time,
        so that any use of it asks again (lookup, then EIO) while the rest of the directory lists."""
        e = pyfuse3.EntryAttributes()
        e.st_ino = ino_nr
        e.st_mode = mode & S_IFMT if mode & S_IFMT in KERNEL_TYPES else 0
        e.entry_timeout = e.attr_timeout = 0
        return e

    async def _vattr(self, node: VNode) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = node.ino
        e.entry_timeout = TIMEOUT
        e.attr_timeout = TIMEOUT
        e.st_mode = node.mode
        e.st_uid = self.uid
        e.st_gid = self.gid
        if node.is_dir:
            subdirs = sum(1 for c in node.children.values() if c not in self.vnodes or self.vnodes[c].is_dir)
            e.st_nlink = 2 + subdirs
            size = 4096
        else:
            e.st_nlink = 1
            content = node.content
            if content.size is None and not content.ranged:
                await self._generated(node)  # a few KiB made in memory
            size = content.size
            if size is None:
                # Not made yet, and not made for a stat (chunks.json: a listing of entries/ would make every
                # one in it): size 0 until it is read, as procfs shows its files, read with direct I/O (open).
                # Not kept by the kernel, so that a stat once it is made shows its size.
                size = 0
                e.attr_timeout = 0
        e.st_size = size
        e.st_blksize = 4096
        e.st_blocks = (size + 511) >> 9
        e.st_mtime_ns = e.st_ctime_ns = e.st_atime_ns = node.mtime_ns
        return e

    async def _attr(self, ino: int) -> pyfuse3.EntryAttributes:
        node = self.vnodes.get(ino)
        if node is not None:
            return await self._vattr(node)
        return self._image_attr(ino)

    # ------------------------------------------------------------------ names
    def _dir(self, nid: int) -> _Listing:
        """Directory ``nid`` as listed, decoded or cached."""
        d = self._dirs.get(nid)
        if d is None:
            ents = self.rafs.dir_entries(nid)
            self._read_bootstrap(len(ents))
            hide = self.hide_whiteouts
            drop = [
                n for n, _ in ents if len(n) > NAME_MAX or b"\0" in n or (hide and n[:4] == WHITEOUT_PREFIX)
            ]
            bad = [n for n in drop if len(n) > NAME_MAX or b"\0" in n]
            if bad:
                # FUSE hands a name over as a C string and the kernel looks up none longer than NAME_MAX:
                # such an entry would be listed under another name, or listed and never found.
                self._log_once(
                    ("names", nid),
                    f"{self._where(nid)}: {len(bad)} name(s) no kernel can look up (NUL, or over {NAME_MAX} "
                    f"bytes), not listed: {fsdecode(bad[0][:64])!r}",
                )
            if drop:
                gone = set(drop)
                ents = [e for e in ents if e[0] not in gone]
            names = list(map(_name, ents))
            if len(set(names)) != len(names):  # a name twice: the kernel would get two inodes for one name
                self._log_once(("twice", nid), f"{self._where(nid)}: a name listed twice, shown once")
                # Each name once, the first (as a path lookup finds it): built backwards, the first one stays.
                first = dict(zip(reversed(names), range(len(names) - 1, -1, -1)))
                ents = [e for i, e in enumerate(ents) if first[e[0]] == i]
                names = list(map(_name, ents))
            d = _Listing(names, array.array("Q", map(_nid, ents)))
            self._dirs.put(nid, d)
        return d

    @_guard
    async def lookup(self, parent_inode, name, ctx=None):
        try:
            node = self.vnodes.get(parent_inode)
            if node is not None:
                if not node.is_dir:
                    raise pyfuse3.FUSEError(errno.ENOTDIR)
                child = node.children.get(name)
                if child is None:
                    raise pyfuse3.FUSEError(errno.ENOENT)
                return await self._attr(child)
            if name == b".":
                return await self._attr(parent_inode)
            listing = self._dir(parent_inode)
            if name == b"..":
                up = listing.parent()
                return await self._attr(ROOT_INODE if parent_inode == self.root_nid or up is None else up)
            i = listing.find(name)
            if i is None:
                e = pyfuse3.EntryAttributes()  # a negative entry, cached as long as a positive one
                e.st_ino = 0
                e.entry_timeout = TIMEOUT
                return e
            nid = listing.nids[i]
            st = self._stat(nid)
            if st[0] & S_IFMT == S_IFREG and self.readahead and nid not in self._pos:
                self._pos.put(nid, (parent_inode, i))  # rare: tar and cp list the directory first
            return self._image_attr(nid, nid, st)
        except NydusInspectError as exc:
            raise self._eio(f"{self._where(parent_inode)}: lookup {fsdecode(name)!r}", exc) from None

    @_guard
    async def getattr(self, inode, ctx=None):
        try:
            return await self._attr(inode)
        except NydusInspectError as exc:
            raise self._eio(f"{self._where(inode)}: getattr", exc) from None

    @_guard
    async def readlink(self, inode, ctx=None):
        if inode in self.vnodes:
            raise pyfuse3.FUSEError(errno.EINVAL)
        try:
            target = self.rafs.node(inode, b"").target
        except NydusInspectError as exc:
            raise self._eio(f"{self._where(inode)}: readlink", exc) from None
        if target is None:
            raise pyfuse3.FUSEError(errno.EINVAL)
        if not target or b"\0" in target:
            # FUSE hands the target over as a C string: it would arrive cut short, a different link.
            self._log_once(
                ("readlink", inode),
                f"{self._where(inode)}: readlink: a target no kernel takes "
                f"(empty, or a NUL in it): {fsdecode(target[:64])!r}: EIO",
            )
            raise pyfuse3.FUSEError(errno.EIO)
        return target

    @_guard
    async def opendir(self, inode, ctx=None):
        node = self.vnodes.get(inode)
        if node is not None:
            if not node.is_dir:
                raise pyfuse3.FUSEError(errno.ENOTDIR)
            return inode
        try:
            self._dir(inode)
        except NydusInspectError as exc:
            raise self._eio(f"{self._where(inode)}: opendir", exc) from None
        return inode

    @_guard
    async def readdir(self, fh, start_id, token):
        node = self.vnodes.get(fh)
        try:
            if node is not None:
                ents = [(b".", node.ino), (b"..", node.parent), *node.children.items()]
                for i in range(start_id, len(ents)):
                    name, child = ents[i]
                    if not pyfuse3.readdir_reply(token, name, await self._attr(child), i + 1):
                        break
                return
            listing = self._dir(fh)
            names, nids = listing.names, listing.nids
            if start_id == 0 and self.readahead:
                self._listed_dirs.put(fh, True)
                self._listed(fh)
            reply = pyfuse3.readdir_reply
            stat_ = self._stat
            attr = self._image_attr
            dpos = self._dpos if self.readahead else None
            for i in range(start_id, len(names)):
                name, nid = names[i], nids[i]
                if name == b".":
                    a = attr(fh)
                elif name == b"..":
                    a = await self._attr(ROOT_INODE) if fh == self.root_nid else attr(nid)
                else:
                    st = stat_(nid)
                    fmt = st[0] & S_IFMT
                    try:
                        a = attr(nid, nid, st)
                    except pyfuse3.FUSEError:  # this inode only: listed, and EIO when used
                        a = self._placeholder(nid, st[0])
                    if dpos is not None and fmt == S_IFDIR:
                        dpos.put(nid, i)
                if not reply(token, name, a, i + 1):
                    break
        except NydusInspectError as exc:
            raise self._eio(f"{self._where(fh)}: readdir", exc) from None

    async def releasedir(self, fh):
        pass

    async def forget(self, inode_list):
        pass  # nothing to free: inode numbers are stable and cost nothing while unused

    # ------------------------------------------------------------------ files
    @_guard
    async def open(self, inode, flags, ctx=None):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT):
            raise pyfuse3.FUSEError(errno.EROFS)
        node = self.vnodes.get(inode)
        if node is not None:
            if node.is_dir:
                raise pyfuse3.FUSEError(errno.EISDIR)
            if node.content.size is None:
                # Its size is not known until it is made (the kernel may hold 0 for it): direct I/O, so that
                # reads go on until a short one rather than stop at the size the kernel has, and the first
                # read makes it. Opened once it is made, it is read through the page cache as any file.
                return pyfuse3.FileInfo(fh=inode, direct_io=True)
            return pyfuse3.FileInfo(fh=inode, keep_cache=True)
        try:
            fmt = self._stat(inode)[0] & S_IFMT
            if fmt != S_IFREG:
                raise pyfuse3.FUSEError(errno.EISDIR if fmt == S_IFDIR else errno.EINVAL)
            if self.rafs.has_xattrs(inode):
                # The reader (cat, unpack) decodes the whole inode and refuses a file whose xattrs do not
                # decode: so does the mount, also when there are no bytes to read.
                self._image_xattrs(inode)
            if self.readahead:
                self._opened(inode)
        except NydusInspectError as exc:
            raise self._eio(f"{self._where(inode)}: open", exc) from None
        return pyfuse3.FileInfo(fh=inode, keep_cache=True)

    async def release(self, fh):
        pass

    def _file_chunks(self, nid: int) -> Sequence[ChunkRef]:
        chunks = self._chunks.get(nid)
        if chunks is None:
            chunks = self._big_chunks.get(nid)
            if chunks is None:
                chunks = self.rafs.chunks(self.rafs.node(nid, b""))
                self._read_bootstrap(1 + min(len(chunks), RELEASE_READS))
                (self._chunks if len(chunks) <= 64 else self._big_chunks).put(nid, chunks)
        return chunks

    @_guard
    async def read(self, fh, off, size):
        node = self.vnodes.get(fh)
        if node is not None:
            return await self._vread(node, off, size)
        try:
            fsize = self._stat(fh)[2]
            if off >= fsize or size <= 0:
                return b""
            fj = self._pf.get(fh)
            if fj is not None:  # being decoded ahead: wait for it, or take it over if no worker started it
                if self.sched.claim(fj):
                    del self._pf[fh]
                elif fj.state == RUNNING:
                    await fj.event.wait()
            end = min(off + size, fsize)
            chunks = self._file_chunks(fh)
        except NydusInspectError as exc:
            raise self._eio(f"{self._where(fh)}: read", exc) from None
        cs = self.chunk_size
        uniform = self.image.uniform_chunks
        k0, k1 = (off // cs, (end - 1) // cs) if uniform else _span(chunks, off, end)
        # Sequential: from the start, or forward from the last read, across pages that notify_store filled.
        last = self._last_end.get(fh)
        sequential = off == 0 or (last is not None and last <= off <= last + (self.readahead_chunks + 1) * cs)
        self._last_end.put(fh, end)
        # Every chunk of the read is queued first, then those ahead of a sequential reader, then the reader waits.
        # The read's chunks, taken once (a file of many chunks decodes each one it is asked for).
        span = chunks[k0 : k1 + 1]
        jobs = [self._job(c, fh, True) for c in span]
        if self.readahead and sequential:
            self._read_ahead(fh, chunks, k1, off == 0)
        if k0 == k1:
            data = await self._wait(fh, k0, span[0], jobs[0])
            base = k0 * cs if uniform else span[0].file_offset
            out = memoryview(data)[off - base : end - base]
        else:
            parts = []
            for k, c, job in zip(range(k0, k1 + 1), span, jobs, strict=True):
                data = await self._wait(fh, k, c, job)
                base = k * cs if uniform else c.file_offset
                parts.append(memoryview(data)[max(off, base) - base : min(end, base + len(data)) - base])
            out = b"".join(parts)
        if sequential and self.readahead and len(chunks) > STREAM_CHUNKS:
            # A file streamed from start to end: a chunk the reader has gone past is in the page cache now.
            # Let its memory go at once, for the chunks decoded next to reuse (fresh memory costs the kernel
            # zeroing and mapping every page, as much CPU as decoding it), rather than keep it in the cache.
            discard = self.cache.discard
            for k, c in zip(range(k0, k1 + 1), span, strict=True):
                past = (k + 1) * cs if uniform else c.file_offset + c.uncompressed_size
                if past <= end or end >= fsize:
                    discard(c.cache_key)
        return out

    def _read_ahead(self, nid: int, chunks: Sequence[ChunkRef], k1: int, start: bool) -> None:
        """A sequential reader got to chunk ``k1``: decode the next chunks, and have their stored bytes read.

        A reader starting at the beginning of a file gets the stored bytes of the file read ahead in one go (up
        to WILL_NEED_BYTES, as long as the chunks lie in blob order), asked by a worker: the disk then streams
        them while the chunks decode, rather than a few chunks at a time on the reader's heels."""
        ahead = chunks[k1 + 1 : k1 + 1 + self.readahead_chunks]
        if not ahead:
            return
        hinted = self._hinted.get(nid, -1)
        if start and len(chunks) > k1 + 1 + len(ahead):
            first = prev = ahead[0]
            last = k1 + 1
            for k, c in _chunks_from(chunks, k1 + 2):
                if (
                    c.blob_index != first.blob_index
                    or c.compressed_offset < prev.compressed_offset
                    or c.compressed_offset + c.compressed_size - first.compressed_offset > WILL_NEED_BYTES
                    or k - k1 > WILL_NEED_CHUNKS
                ):
                    break
                prev, last = c, k
            if last > k1 + len(ahead):
                self._hinted.put(nid, last)
                self.sched.queue([_Hint([first, prev])])
                hinted = last
        for c in ahead:
            self._job(c, nid, False)
        if k1 + len(ahead) > hinted:
            self._will_need(ahead)

    def _will_need(self, chunks: list[ChunkRef]) -> None:
        """Ask the kernel to start reading the stored bytes of ``chunks`` (of one blob, in blob order) now, so
        that the decoding threads find them in the page cache rather than wait for the disk."""
        first, last = chunks[0], chunks[-1]
        if first.blob_index != last.blob_index or last.compressed_offset < first.compressed_offset:
            return
        try:
            self.image.blob(first.blob_index).source.will_need(
                first.compressed_offset,
                last.compressed_offset + last.compressed_size - first.compressed_offset,
            )
        except (
            Exception
        ) as exc:  # only advice (an offset past 2^63 overflows): a decoding worker must not die
            log.debug("read-ahead advice for blob %d failed: %s", first.blob_index, exc)

    # ------------------------------------------------------------------ decoding (worker threads)
    def _job(self, c: ChunkRef, nid: int, urgent: bool):
        """The chunk's bytes if cached, else the job decoding it (queued here if there is none)."""
        key = c.cache_key
        data = self.cache.get(key)
        if data is not None:
            return data
        job = self._inflight.get(key)
        if job is None:
            job = _Job(key, c, nid)
            self._inflight[key] = job
            self.sched.queue([job], urgent)
        elif urgent and job.state == QUEUED:
            self.sched.queue([job], True)  # whichever worker gets to it first decodes it
        return job

    async def _wait(self, nid: int, k: int, c: ChunkRef, job) -> bytes:
        if not isinstance(job, _Job):
            return job
        await job.event.wait()
        if job.error is not None:
            self._report(nid, k, c, job.error)
            raise pyfuse3.FUSEError(errno.EIO)
        return job.data

    def _post(self, fn, *args) -> None:
        """Worker thread: run ``fn(*args)`` on the loop. Results queue up while the loop has not run them, and
        one wake-up of the loop runs them all."""
        with self._results_lock:
            first = not self._results
            self._results.append((fn, args))
        if first:
            try:
                self._token.run_sync_soon(self._run_results)
            except trio.RunFinishedError:
                pass

    def _run_results(self) -> None:
        with self._results_lock:
            results, self._results = self._results, []
        for fn, args in results:
            fn(*args)

    def _work_item(self, item) -> None:
        """Worker thread (the scheduler's ``run``): decode one item it took, report it on the loop."""
        if isinstance(item, _Hint):
            self._will_need(item.chunks)
        elif isinstance(item, _Job):
            data = err = None
            try:
                data = self._decode(item.chunk)
            except Exception as exc:  # reported by each reader; a bug here must not take the mount down
                err = exc
            # Not handed to the page cache: chunks of big files are read with read requests the kernel
            # sends ahead of the reader anyway (a store of pages such a request holds would wait for it).
            self._post(self._job_done, item, data, err)
        else:
            chunks = datas = None
            try:
                chunks = self.rafs.chunks(self.rafs.node(item.nid, b""))
                self._read_bootstrap(1 + min(len(chunks), RELEASE_READS))
                datas = [self._decode(c) for c in chunks]
            except Exception:  # the reader will decode it again and report what is wrong
                chunks = datas = None
            self._post(self._file_done, item, chunks, datas)
            if item.dir in self._listed_dirs:  # else _restore_dir stores it when it is listed
                for c, data in zip(chunks or (), datas or ()):
                    self._store(item.nid, c.file_offset, data)

    def _decode(self, c: ChunkRef) -> bytes:
        return self.reader.decode(c)

    def _job_done(self, job: _Job, data, err) -> None:
        job.state = DONE
        job.data, job.error = data, err
        if self._inflight.get(job.key) is job:
            del self._inflight[job.key]
        if data is not None:
            self.cache.put(job.key, data)
        job.event.set()

    def _file_done(self, fj: _FileJob, chunks, datas) -> None:
        fj.state = DONE
        if self._pf.get(fj.nid) is fj:
            del self._pf[fj.nid]
        if chunks is not None:
            self._chunks.put(fj.nid, chunks)
            for c, data in zip(chunks, datas, strict=True):
                self.cache.put(c.cache_key, data)
        fj.event.set()

    def _store(self, nid: int, offset: int, data: bytes) -> None:
        """Worker thread: queue a decoded chunk for the page cache, unless too much is queued already (then
        the kernel simply asks for it with a read)."""
        if self._storer is None or not self._storing:
            return
        with self._lock:
            if self._store_pending + len(data) > STORE_QUEUE_BYTES:
                return
            self._store_pending += len(data)
        self._store_q.put((nid, offset, data))

    def _store_loop(self) -> None:
        """Thread: hand decoded chunks to the kernel's page cache. A store may wait for a read of the same
        pages to be answered, which is why it never runs on the loop or in a decoding worker."""
        while True:
            item = self._store_q.get()
            if item is None or not self._storing:
                return
            try:
                pyfuse3.notify_store(*item)
            except OSError:
                pass  # the kernel forgot the inode, or the mount is going away
            with self._lock:
                self._store_pending -= len(item[2])

    def _report(self, nid: int, k: int, c: ChunkRef, exc: BaseException) -> None:
        key = (nid, k, type(exc).__name__)
        if key in self._reported:
            log.debug("EIO again: nid %d chunk %d", nid, k)
            return
        self._reported.add(key)
        if not isinstance(exc, NydusInspectError | OSError):
            log.error("internal error decoding a chunk", exc_info=exc)
        log.error(
            "%s: chunk %d at file offset %d (blob %d chunk %d, compressed offset %d, %d bytes): %s: EIO",
            self._where(nid),
            k,
            c.file_offset,
            c.blob_index,
            c.ci_index,
            c.compressed_offset,
            c.compressed_size,
            exc,
        )

    # ------------------------------------------------------------------ entries/ content
    async def _generated(self, node: VNode) -> bytes:
        content: Generated = node.content
        key = ("v", node.ino)
        # Readers of content being made wait for it; one that wakes to find it neither kept nor being made
        # again makes it itself, so there is one job per inode at any time.
        while True:
            data = self.content_cache.get(key)
            if data is None and self._big is not None and self._big[0] == key:
                data = self._big[1]
            if data is not None:
                return data
            event = self._vjobs.get(node.ino)
            if event is None:
                break
            await event.wait()
        event = self._vjobs[node.ino] = trio.Event()
        try:
            data = await trio.to_thread.run_sync(self._make, content, limiter=self.limiter)
        except Exception as exc:
            raise self._eio(node.path, exc) from None
        finally:
            del self._vjobs[node.ino]
            event.set()
        content.size = len(data)
        if len(data) > self.content_cache.limit:
            # Larger than the cache (the bootstrap or chunks.json of a million-inode layer): kept alone, so
            # that a reader going through it in 128 KiB reads does not make it again for each one.
            self._big = (key, data)
        else:
            self.content_cache.put(key, data)
        return data

    @staticmethod
    def _make(content: Generated) -> bytes:
        return check_generated(content.make(), content)

    async def _vread(self, node: VNode, off: int, size: int):
        content = node.content
        if content.ranged:
            if content.size is not None and off >= content.size:
                return b""
            try:
                return await trio.to_thread.run_sync(content.read, off, size, limiter=self.limiter)
            except (NydusInspectError, OSError) as exc:
                raise self._eio(node.path, exc) from None
        data = await self._generated(node)
        return memoryview(data)[off : off + size]

    # ------------------------------------------------------------------ xattrs
    def _image_xattrs(self, nid: int) -> dict[bytes, bytes]:
        xs = self._xattrs.get(nid)
        if xs is None:
            xs = self.rafs.node(nid, b"").xattrs if self.rafs.has_xattrs(nid) else {}
            self._xattrs.put(nid, xs)
        return xs

    @_guard
    async def getxattr(self, inode, name, ctx=None):
        node = self.vnodes.get(inode)
        if node is None:
            try:
                if not self.rafs.has_xattrs(inode):
                    raise pyfuse3.FUSEError(self.no_xattr_errno)
                value = self._image_xattrs(inode).get(name)
            except NydusInspectError as exc:
                raise self._eio(f"{self._where(inode)}: getxattr", exc) from None
            if value is None:
                raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
            return value
        if inode == ROOT_INODE and name in (PID_XATTR, LOG_XATTR):
            return str(os.getpid()).encode() if name == PID_XATTR else os.fsencode(self.log_where)
        value = node.xattrs.get(name)
        if value is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR if name.startswith(XATTR_PREFIX) else self.no_xattr_errno)
        if value is SHA256_OF_CONTENT:
            value = await self._content_sha256(node)
            node.xattrs[name] = value
        return value

    async def _content_sha256(self, node: VNode) -> bytes:
        content = node.content
        if content.ranged:
            try:
                digest = await trio.to_thread.run_sync(content.sha256, limiter=self.limiter)
            except (NydusInspectError, OSError) as exc:
                raise self._eio(node.path, exc) from None
        else:
            digest = hashlib.sha256(await self._generated(node)).hexdigest()
        return digest.encode()

    @_guard
    async def listxattr(self, inode, ctx=None):
        node = self.vnodes.get(inode)
        if node is not None:
            names = list(node.xattrs)
            return names + [PID_XATTR, LOG_XATTR] if inode == ROOT_INODE else names
        try:
            names = list(self._image_xattrs(inode))
        except NydusInspectError as exc:
            raise self._eio(f"{self._where(inode)}: listxattr", exc) from None
        if any(b"\0" in n for n in names):
            # The reply is the names, each ended by a NUL: one with a NUL in it would read as two others.
            self._log_once(("listxattr", inode), f"{self._where(inode)}: xattr names with a NUL, not listed")
            names = [n for n in names if b"\0" not in n]
        return names

    # ------------------------------------------------------------------ the rest
    @_guard
    async def statfs(self, ctx=None):
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        # Both as the image claims, within what the kernel and df take: blocks whose bytes fit a signed 64-bit
        # size, and no more names than the bootstrap has bytes (each name takes some of them).
        blocks = -(-self.image.uncompressed_size // 4096) + -(-self.rafs.size // 4096)
        s.f_blocks = min(blocks, MAX_OFF // 4096)
        s.f_bfree = s.f_bavail = 0
        s.f_files = min(self.rafs.inode_count(), self.rafs.size) + len(self.vnodes)
        s.f_ffree = s.f_favail = 0
        s.f_namemax = 255
        return s

    async def _read_only(self, *args, **kwargs):
        raise pyfuse3.FUSEError(errno.EROFS)

    setattr = mknod = mkdir = unlink = rmdir = symlink = rename = link = write = create = _read_only
    setxattr = removexattr = _read_only

    # ------------------------------------------------------------------ log lines
    def _log_once(self, key, line: str) -> None:
        """Log ``line`` at error level the first time ``key`` comes (at debug level after that)."""
        if key in self._logged:
            log.debug("again: %s", line)
            return
        if len(self._logged) >= 1 << 16:
            self._logged.clear()
        self._logged.add(key)
        log.error("%s", line)

    def _eio(self, what: str, exc: BaseException) -> pyfuse3.FUSEError:
        """EIO for a request, and one log line saying why."""
        line = f"{what}: {exc}"
        self._log_once(line, line)
        return pyfuse3.FUSEError(errno.EIO)

    def _internal(self, handler: str, args: tuple, exc: BaseException) -> pyfuse3.FUSEError:
        """A request ended in an error no check foresaw: EIO, one log line (and the traceback at debug level)."""
        inode = args[0] if args and type(args[0]) is int else None
        where = self._where(inode) if inode is not None else "mount"
        key = ("internal", handler, inode, type(exc).__name__)
        self._log_once(key, f"{where}: {handler}: internal error: {type(exc).__name__}: {exc}: EIO")
        log.debug("%s: %s", where, handler, exc_info=exc)
        return pyfuse3.FUSEError(errno.EIO)

    def _where(self, inode: int) -> str:
        """A path for log lines, relative to the mount point; found by walking the tree (errors only)."""
        node = self.vnodes.get(inode)
        if node is not None:
            return node.path or "/"
        path = self._paths.get(inode)
        if path is None:
            path = f"rootfs (nid {inode})"
            if self._walks_left <= 0:
                return path
            self._walks_left -= 1
            try:
                for n in self.rafs.walk():
                    if n.nid == inode:
                        path = "rootfs" + (fsdecode(n.path) if n.path != b"/" else "/")
                        break
            except Exception:  # noqa: BLE001 - a log line names what it can; the error it is about matters
                pass
            self._paths[inode] = path
        return path
