"""Decoding ahead of a tree reader (tar, cp -r, rsync) of the mount: the walk that follows it.

Two files opened within READER_WINDOW say a tree reader is at work: from then on the files after the one it
opened are decoded ahead in the order of a pre-order walk, which is the order it reads them in and, for
layers packed from a tree, the order of the blob; at most a quarter of the cache ahead of it. The walk is a
cursor over the mount's cached directory listings; the decoding is the read-ahead scheduler's
(``chunks.readahead``), as for every other reader. :class:`TreeReaderPrefetch` is a part of ``NydusFS``
(it uses the file system's listings, caches and scheduler) kept apart because it is one concern of its own.
"""

from __future__ import annotations

import logging
import stat
import time
from collections import deque

import trio

from ..chunks.readahead import QUEUED
from ..errors import NydusInspectError

log = logging.getLogger("nydus_inspect.mount")

S_IFMT = 0o170000
S_IFREG, S_IFDIR = stat.S_IFREG, stat.S_IFDIR
_END = object()  # the end of a walk

#: Prefetch for tree readers: bytes decoded ahead of the reader, at most (and a quarter of the cache at most).
PREFETCH_AHEAD = 32 << 20
PREFETCH_UNIT = 8  # small files per hand-off to a worker thread
#: A tree reader's walk goes at most this many directory entries further on each file the reader opens, and
#: holds at most WALK_FILES_AHEAD files it passed that the reader has not opened: the work an open costs is
#: bounded, and the whole walk costs what one walk of the tree does, however many files there are.
WALK_STEPS = 256
WALK_FILES_AHEAD = 4096
#: After a small file is opened, directories listed within this many seconds get their files decoded ahead.
READER_WINDOW = 1.0


class _FileJob:
    """A small file decoded ahead of its reader: its chunks land in the chunk cache and the page cache."""

    __slots__ = ("nid", "event", "state", "dir")

    def __init__(self, nid: int, dnid: int = 0) -> None:
        self.nid = nid
        self.event = trio.Event()
        self.state = QUEUED
        self.dir = dnid  # its directory: the kernel knows the file (a store can work) once that was listed


class _Walker:
    """A tree reader's walk: a cursor over the tree in walk order, the files it passed that the reader has not
    opened yet (queued for decoding when not empty), and how far ahead of the reader they go."""

    __slots__ = ("files", "ahead", "order", "seq", "issued_bytes", "consumed", "dirs", "followed")

    def __init__(self) -> None:
        self.files = iter(())
        # Files the walk passed and the reader has not opened yet: nid -> (sequence number, bytes issued up to
        # and including it), and their nids in walk order (the reader opening one drops those before it).
        self.ahead: dict[int, tuple[int, int]] = {}
        self.order: deque[int] = deque()
        self.seq = 0
        self.issued_bytes = 0
        self.consumed = 0  # bytes issued up to the last file of the walk the reader opened
        self.dirs: set[int] = set()  # directories the walk entered
        self.followed = 0.0  # when the reader last opened a file the walk had passed


class TreeReaderPrefetch:
    """The tree-reader walk of ``NydusFS`` (a mixin: the attributes it uses are the file system's)."""

    def _opened(self, nid: int) -> None:
        """A regular file was opened. The second open within READER_WINDOW of another says a tree reader (tar,
        cp -r, rsync) is at work: from then on the files after the one it opened, in walk order, are decoded
        ahead of it, at most PREFETCH_AHEAD bytes ahead of the last one it opened."""
        now = time.monotonic()
        reader = now < self._reading_until
        self._reading_until = now + READER_WINDOW
        w = self._walker
        if w is not None:
            at = w.ahead.get(nid)
            if at is not None:  # the reader follows the walk: forget what it passed, move the window on
                w.followed = now
                seq, end = at
                ahead, order = w.ahead, w.order
                while order and ahead[order[0]][0] <= seq:
                    del ahead[order.popleft()]
                if end > w.consumed:
                    w.consumed = end
                self._walk_ahead()
                return
        if not reader:
            return
        pos = self._position(nid)
        if pos is not None:
            self._start_walk(pos[0], pos[1] + 1)

    def _position(self, nid: int) -> tuple[int, int] | None:
        """(directory nid, index in its listing) of regular file ``nid``: known from a walk or a lookup, or
        found in the cached listings, the latest first (tar and cp list a directory, then open its files).
        Searched rather than kept for each file listed: only a tree reader's first files need it."""
        pos = self._pos.get(nid)
        if pos is None:
            for dnid in reversed(self._dirs):
                try:
                    pos = (dnid, self._dirs[dnid].nids.index(nid))
                except ValueError:
                    continue
                self._pos.put(nid, pos)
                break
        return pos

    def _listed(self, dnid: int) -> None:
        """Directory ``dnid`` is being listed (readdir from its start)."""
        now = time.monotonic()
        if now >= self._reading_until:
            return
        w = self._walker
        if w is None or (dnid not in w.dirs and now - w.followed >= READER_WINDOW):
            # The reader went somewhere the walk did not: follow it from there. While the files opened are
            # the walk's, a listing elsewhere is another process's (``find | xargs cat``: find lists ahead
            # of the files cat opens), and moving the walk there would leave the reader behind it, to
            # bring it back on its next open, and so on for every directory.
            self._start_walk(dnid, 0)
        elif self._storer is not None:
            # After this request is answered (the kernel then knows the files listed).
            self._token.run_sync_soon(self._restore_dir, dnid)

    def _start_walk(self, dnid: int, i: int) -> None:
        w = self._walker = _Walker()
        w.files = self._walk(dnid, i, w.dirs)
        self._walk_ahead()

    def _index_in_parent(self, dnid: int, parent: int) -> int:
        """Where directory ``dnid`` is in the listing of ``parent`` (known from a listing or an earlier walk;
        else looked for, once)."""
        pnids = self._dir(parent).nids
        k = self._dpos.get(dnid)
        if k is None or k >= len(pnids) or pnids[k] != dnid:
            try:
                k = pnids.index(dnid)
            except ValueError:
                k = len(pnids) - 1
            self._dpos.put(dnid, k)
        return k

    def _walk(self, dnid: int, i: int, dirs: set[int]):
        """The image from entry ``i`` of directory ``dnid`` on, in the order of a pre-order walk (tar's order):
        the rest of that directory with its subdirectories, then the rest of each parent. Yields, for each
        entry passed, (nid, size, directory nid, index) of a regular file, else None (so that the
        caller can bound the work of each step); directories entered are added to ``dirs``."""
        stack = []
        d, j = dnid, i
        seen = set()
        while d not in seen:  # the rest of each parent, up to the root of rootfs/
            seen.add(d)
            stack.append((d, j))
            if d == self.root_nid:
                break
            parent = self._dir(d).parent()
            if parent is None or parent in self.vnodes:
                break
            j = self._index_in_parent(d, parent) + 1
            d = parent
        stack.reverse()
        stat_ = self._stat
        linked: set[int] = set()
        dpos = self._dpos
        while stack:
            d, j = stack.pop()
            dirs.add(d)
            listing = self._dir(d)
            names, nids = listing.names, listing.nids
            while j < len(names):
                name, cnid = names[j], nids[j]
                j += 1
                if name == b"." or name == b"..":
                    continue
                st = stat_(cnid)
                fmt = st[0] & S_IFMT
                if fmt == S_IFREG:
                    if st[1] > 1:  # a hard link: its inode once per walk
                        if cnid in linked:
                            yield None
                            continue
                        linked.add(cnid)
                    yield cnid, st[2], d, j - 1
                    continue
                if fmt == S_IFDIR and cnid not in seen:  # each directory once, whatever the image claims
                    seen.add(cnid)
                    dpos.put(cnid, j - 1)
                    stack.append((d, j))
                    stack.append((cnid, 0))
                    yield None
                    break
                yield None

    def _walk_ahead(self) -> None:
        """Move the walk on, at most WALK_STEPS entries: queue the files it passes for decoding until
        PREFETCH_AHEAD bytes (or WALK_FILES_AHEAD files) are queued or decoded ahead of the reader."""
        w = self._walker
        cs = self.chunk_size
        pf, done, pos = self._pf, self._pf_done, self._pos
        ahead, order = w.ahead, w.order
        unit: list[_FileJob] = []
        steps = WALK_STEPS
        try:
            while w.issued_bytes - w.consumed < self.prefetch_ahead and len(ahead) < WALK_FILES_AHEAD:
                if steps == 0:
                    break
                steps -= 1
                item = next(w.files, _END)
                if item is None:
                    continue
                if item is _END:
                    break
                canon, size, d, j = item
                if canon in ahead:
                    continue
                w.issued_bytes += size
                w.seq += 1
                ahead[canon] = (w.seq, w.issued_bytes)
                order.append(canon)
                pos.put(canon, (d, j))
                if size == 0 or canon in pf or canon in done:
                    continue
                done.put(canon, True)
                if size <= cs:
                    fj = _FileJob(canon, d)
                    pf[canon] = fj
                    unit.append(fj)
                    if len(unit) == PREFETCH_UNIT:
                        self.sched.queue(unit)
                        unit = []
                else:
                    for c in self._file_chunks(canon):
                        self._job(c, canon, False)
        except NydusInspectError as exc:  # a damaged directory or inode: stop walking; readers will say what
            log.debug("prefetch stopped: %s", exc)
            w.files = iter(())
        finally:
            if unit:
                self.sched.queue(unit)

    def _restore_dir(self, dnid: int) -> None:
        """The walk got to directory ``dnid`` before the kernel knew its files, so what was decoded of them
        could not go to the page cache then: send it now that its listing makes them known."""
        get = self.cache.get
        for nid in self._dir(dnid).nids:
            chunks = self._chunks.get(nid)
            if chunks is None:
                continue
            for c in chunks:
                data = get(c.cache_key)
                if data is not None:
                    self._store(nid, c.file_offset, data)
