"""Where a blob's bytes come from: the seam a new transport plugs into.

Everything above reads blob bytes only through :class:`BlobSource`: ``pread`` of an exact range, the
size, and an optional hint that a range will be read soon. :class:`LocalFile` serves a file on disk; an
HTTP range reader (a registry blob) would implement the same three members and nothing else changes.
"""

from __future__ import annotations

import bisect
import contextlib
import io
import os
from typing import Protocol, runtime_checkable

from ..errors import FormatError, UsageError


@runtime_checkable
class BlobSource(Protocol):
    """Random access to the stored bytes of one blob."""

    path: str  # what errors name: a file path, or a URL
    size: int

    def pread(self, offset: int, size: int, what: str = "data") -> bytes:
        """Exactly ``size`` bytes from ``offset``, or FormatError naming ``what`` and where."""
        ...

    def will_need(self, offset: int = 0, size: int = 0) -> None:
        """A hint: ``size`` bytes from ``offset`` (0: all) will be read soon. May do nothing."""
        ...


class LocalFile:
    """A :class:`BlobSource` over a local file, read with pread(2): thread-safe, and unlike an mmap the
    pages read do not stay charged to this process, so streaming a large blob keeps RSS flat."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise UsageError(f"{path}: cannot open: {exc.strerror}") from None
        self.size = os.fstat(self.fd).st_size

    @classmethod
    def of_fd(cls, fd: int, path: str) -> LocalFile:
        """A source over an open descriptor (an unlinked temporary file), which it then owns and closes;
        ``path`` names it in messages."""
        self = cls.__new__(cls)
        self.path = path
        self.fd = fd
        self.size = os.fstat(fd).st_size
        return self

    def pread(self, offset: int, size: int, what: str = "data") -> bytes:
        if offset < 0 or size < 0 or offset + size > self.size:
            raise FormatError(
                what, f"range of {size} bytes lies outside the {self.size}-byte file", offset=offset
            )
        data = os.pread(self.fd, size, offset)
        if len(data) != size:
            raise FormatError(what, f"short read: {len(data)} of {size} bytes (file changed?)", offset=offset)
        return data

    def will_need(self, offset: int = 0, size: int = 0) -> None:
        """``POSIX_FADV_WILLNEED``: the kernel starts reading now, so the reads overlap the work before them."""
        try:
            os.posix_fadvise(self.fd, offset, size, os.POSIX_FADV_WILLNEED)
        except (AttributeError, OSError):
            pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Window:
    """``size`` bytes of ``source`` from ``offset``, as a source of their own (a section of a blob read where
    it lies, its first byte at 0)."""

    def __init__(self, source: BlobSource, offset: int, size: int) -> None:
        self.source = source
        self.path = source.path
        self.offset = offset
        self.size = size

    def pread(self, offset: int, size: int, what: str = "data") -> bytes:
        if offset < 0 or size < 0 or offset + size > self.size:
            raise FormatError(
                what, f"range of {size} bytes lies outside the {self.size}-byte section", offset=offset
            )
        return self.source.pread(self.offset + offset, size, what)

    def will_need(self, offset: int = 0, size: int = 0) -> None:
        self.source.will_need(self.offset + offset, size or self.size - offset)

    def close(self) -> None:
        pass  # the source is its owner's


class RemoteBlob:
    """A :class:`BlobSource` over a blob fetched by byte range (a registry blob, by HTTP Range requests).

    ``fetch(offset, size)`` returns exactly those stored bytes or raises (NydusInspectError). What it fetched is
    kept in memory in *windows* (at most WINDOW_CACHE bytes, least recently used dropped first) and reads are
    answered from them:

    - a read that is not in a window fetches from its offset at least MIN_WINDOW bytes, so the next small
      files of a layer (stored one after the other) come with it; a read that goes on where an earlier window
      ended fetches twice that window, up to MAX_WINDOW: a reader walking the blob makes few large requests
      (several such readers at once each grow their own), one looking at one file fetches little;
    - a read that falls in a window still being fetched waits for it instead of asking again, and a new window
      ends where a window already fetched or being fetched begins (nothing is fetched twice while it is held);
    - ``will_need`` marks a range as wanted soon: the first read there that must fetch starts fetching the
      rest of it in the background (the mount's read-ahead hints become a few large requests in flight ahead
      of its readers). Nothing is fetched for the hint alone: chunks the persistent cache holds are never read
      from the source, and a hint cannot tell which those are.

    ``tail`` (offset, bytes), when given, is a part of the blob known already (its metadata at the end, kept
    on disk by the caller); ``whole()``, when given, is called once if ``fetch`` raises ``fallback`` (a
    registry that ignores Range): it returns a local file of the whole blob, checked against its digest, and
    every read is then served from it. ``store`` is the persistent chunk cache the chunk service uses for
    this blob (chunks.store), carried here because a blob's source is what the chunk service is given.
    """

    MIN_WINDOW = 64 << 10
    MAX_WINDOW = 4 << 20
    WINDOW_CACHE = 48 << 20
    HINT_THREADS = 4
    STREAMS = 16

    def __init__(
        self,
        path: str,
        size: int,
        fetch,
        *,
        tail: tuple[int, bytes] | None = None,
        whole=None,
        fallback: type[BaseException] | None = None,
        store=None,
        on_fetch=None,
    ) -> None:
        import threading
        from collections import OrderedDict

        self.path = path
        self.size = size
        self.fd = -1
        self.store = store
        self.fetched = 0  # stored bytes fetched for this blob
        self._fetch = fetch
        self._whole = whole
        self._fallback = fallback
        self._on_fetch = on_fetch
        self._tail = tail
        self._local: LocalFile | None = None
        self._windows: OrderedDict[int, bytes] = OrderedDict()  # start -> bytes, least recently used first
        self._starts: list[int] = []  # the same starts, sorted
        self._held = 0
        self._pending: dict[int, tuple[int, threading.Event]] = {}  # start -> (end, done)
        self._lock = threading.Lock()
        # Readers going through the blob (a file, the next files, a read-ahead hint): where each one's last
        # window ended -> that window's size, the most recent last.
        self._streams: OrderedDict[int, int] = OrderedDict()
        self._hints: list[tuple[int, int]] = []  # ranges said to be read soon, the most recent last
        self._pool = None

    # ------------------------------------------------------------------ reads
    def pread(self, offset: int, size: int, what: str = "data") -> bytes:
        if offset < 0 or size < 0 or offset + size > self.size:
            raise FormatError(
                what, f"range of {size} bytes lies outside the {self.size}-byte blob", offset=offset
            )
        if size == 0:
            return b""
        if self._local is not None:
            return self._local.pread(offset, size, what)
        parts: list[bytes] = []
        pos, end = offset, offset + size
        tail = self._tail
        while pos < end:
            if tail is not None and pos >= tail[0]:
                piece = tail[1][pos - tail[0] : end - tail[0]]
            else:
                piece = self._piece(pos, end, fetch=True)
            parts.append(piece)
            pos += len(piece)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _piece(self, pos: int, end: int, fetch: bool) -> bytes:
        """Bytes from ``pos`` (up to ``end``) out of the window holding ``pos``: waited for if being fetched,
        fetched first if none holds it (unless not ``fetch``: then b"")."""
        while True:
            with self._lock:
                if self._local is not None:
                    return self._local.pread(pos, end - pos)
                hit = self._find(pos)
                if hit is not None:
                    start, data = hit
                    self._windows.move_to_end(start)
                    self._ahead(pos, start, len(data))
                    return data[pos - start : end - start]
                waiting = next((ev for s, (e, ev) in self._pending.items() if s <= pos < e), None)
                if waiting is None:
                    if not fetch:
                        return b""
                    start, stop = self._plan(pos, end)
                    done = self._begin(start, stop)
            if waiting is not None:
                waiting.wait()
                continue  # the window is in now (or its fetch failed: then this read asks again)
            self._run(start, stop, done)

    def _ahead(self, pos: int, start: int, n: int) -> None:
        """A reader half way through a large window that ends a stream: fetch the stream's next window now, in
        the background, so that it is there when the reader gets to it (lock held)."""
        end = start + n
        if n >= self.MAX_WINDOW // 2 and pos - start >= n // 2 and end < self.size and end in self._streams:
            if self._tail is not None and end >= self._tail[0]:
                return
            self._streams.move_to_end(end)
            if end not in self._pending and end not in self._windows:
                self._submit(self._prefetch, end, end + 1)

    def _submit(self, fn, *args) -> None:
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.HINT_THREADS, thread_name_prefix="fetch")
        self._pool.submit(fn, *args)

    def _find(self, pos: int):
        i = bisect.bisect_right(self._starts, pos) - 1
        if i >= 0:
            start = self._starts[i]
            data = self._windows[start]
            if pos < start + len(data):
                return start, data
        return None

    def _plan(self, pos: int, end: int) -> tuple[int, int]:
        """The window to fetch for a read of ``[pos, end)`` (lock held)."""
        window = self.MIN_WINDOW
        for e, size in reversed(self._streams.items()):
            if e - self.MIN_WINDOW <= pos <= e + self.MIN_WINDOW:
                del self._streams[e]
                window = min(size * 2, self.MAX_WINDOW)
                break
        hinted = None
        for i, (hs, he) in enumerate(self._hints):
            if hs <= pos < he:
                hinted = he
                del self._hints[i]
                break
        stop = min(max(end, pos + window), self.size)
        if self._tail is not None and pos < self._tail[0]:
            stop = min(stop, self._tail[0])
        # End where held or pending bytes begin: nothing is fetched twice, and windows never overlap.
        i = bisect.bisect_right(self._starts, pos)
        if i < len(self._starts):
            stop = min(stop, self._starts[i])
        for start in self._pending:
            if pos < start < stop:
                stop = start
        self._streams[stop] = window
        if len(self._streams) > self.STREAMS:
            self._streams.popitem(last=False)
        if hinted is not None and stop < hinted:
            # A read that must fetch in a hinted range: the range is not in the chunk cache, so the rest of
            # it is fetched now, in the background, in windows growing along it.
            self._submit(self._prefetch, stop, hinted)
        return pos, stop

    def _begin(self, start: int, stop: int):
        import threading

        done = threading.Event()
        self._pending[start] = (stop, done)
        return done

    def _run(self, start: int, stop: int, done) -> None:
        try:
            data = self._fetch(start, stop - start)
        except BaseException as exc:
            with self._lock:
                del self._pending[start]
            done.set()
            if self._fallback is not None and isinstance(exc, self._fallback) and self._whole is not None:
                self._go_local()
                return
            raise
        with self._lock:
            del self._pending[start]
            if start not in self._windows:
                bisect.insort(self._starts, start)
            self._windows[start] = data
            self._held += len(data)
            self.fetched += len(data)
            while self._held > self.WINDOW_CACHE and len(self._windows) > 1:
                old_start, old = self._windows.popitem(last=False)
                self._starts.remove(old_start)
                self._held -= len(old)
            if self._on_fetch is not None:
                self._on_fetch(len(data))  # under the lock: counts kept by several threads stay exact
        done.set()

    def _go_local(self, locked: bool = False) -> None:
        """The whole blob, once, as a local file: every read is served from it from now on."""
        with contextlib.nullcontext() if locked else self._lock:
            if self._local is not None:
                return
            path = self._whole()
            local = LocalFile(path)
            if local.size != self.size:
                local.close()
                raise FormatError("blob", f"{path}: {local.size} bytes, expected {self.size}")
            self._local = local
            self._windows.clear()
            self._starts.clear()
            self._held = 0

    # ------------------------------------------------------------------ hints
    def will_need(self, offset: int = 0, size: int = 0) -> None:
        """``[offset, offset + size)`` (0: to the end) will be read soon: the first fetch there fetches the
        rest of it in the background. The whole blob (the default) is fetched whole, once, now, when ``whole`` was given:
        whoever reads all of it (verify) gets it in one request and checked against its digest, and every read
        waits for it."""
        if self._local is not None or offset >= self.size:
            return
        end = self.size if size <= 0 else min(self.size, offset + size)
        if offset == 0 and end == self.size and self._whole is not None:
            self._lock.acquire()  # held until the file is there: reads wait for it rather than fetch
            self._submit(self._fetch_whole)
            return
        with self._lock:
            self._hints.append((offset, end))
            if len(self._hints) > self.STREAMS:
                del self._hints[0]

    def _fetch_whole(self) -> None:
        try:
            self._go_local(locked=True)
        except BaseException:  # noqa: BLE001 - a hint: reads go on by range, and say what is wrong
            pass
        finally:
            self._lock.release()

    def _prefetch(self, pos: int, end: int) -> None:
        if self._tail is not None:
            end = min(end, self._tail[0])  # held already
        try:
            while pos < end:
                piece = self._piece(pos, end, fetch=True)
                if not piece:
                    return
                pos += len(piece)
        except BaseException:  # noqa: BLE001 - a hint: the read that needs these bytes says what is wrong
            return

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self._local is not None:
            self._local.close()
        self._windows.clear()
        self._held = 0


class SourceBytes:
    """The bytes of a :class:`BlobSource`, read-only and seen as ``bytes`` are: ``len``, an int index and a
    contiguous slice, each a read of only what it covers. A parser handed one in place of a whole image (a
    seekable EROFS layer's, a remote blob's) reads just the metadata it looks at, never the file data between.

    Parsers read in small pieces (an inode, a dirent block, a byte of a header), so pieces of up to a few
    pages come from a bounded cache of :data:`PAGE`-aligned pages (at most :data:`PAGES`, the least recently
    used dropped first), each page one ``pread`` of the source; a larger slice is one ``pread`` of its own,
    not kept (the source keeps what it keeps: decoded frames, fetched windows). Not a buffer: ``struct``'s
    ``unpack_from`` and ``memoryview`` need one, so a parser slices first and unpacks the slice. Safe for
    several threads (unpack's and the mount's workers read one image at once).
    """

    #: 4 KiB pages: an EROFS block; our seekable frames are multiples of it, so a page lies in one frame.
    PAGE_BITS = 12
    PAGE = 1 << PAGE_BITS
    PAGES = 1024  # 4 MiB of pages
    #: Slices over more pages than this go to the source directly (a tar read through in 64 KiB pieces, a
    #: packed inode's pcluster).
    DIRECT = 4

    def __init__(self, source: BlobSource, what: str = "blob") -> None:
        import threading
        from collections import OrderedDict

        self.source = source
        self.size = source.size
        self.what = what
        self._pages: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()
        # The page read last, as one tuple (read and replaced whole, so no lock is needed): records read in
        # order hit it a page's worth of times in a row, and skip the lock and the cache's reordering.
        self._last: tuple[int, bytes] = (-1, b"")

    def __len__(self) -> int:
        return self.size

    def _page(self, k: int) -> bytes:
        last = self._last
        if last[0] == k:
            return last[1]
        page = self._cached(k)
        self._last = (k, page)
        return page

    def _cached(self, k: int) -> bytes:
        with self._lock:
            page = self._pages.get(k)
            if page is not None:
                self._pages.move_to_end(k)
                return page
        start = k << self.PAGE_BITS
        page = self.source.pread(start, min(self.PAGE, self.size - start), self.what)
        with self._lock:
            self._pages[k] = page
            if len(self._pages) > self.PAGES:
                self._pages.popitem(last=False)
        return page

    def __iter__(self):
        # Without this, bytes() and ``in`` would walk the whole source a byte at a time: a caller that wants
        # all of it reads it in pieces, by slices.
        raise TypeError(f"{type(self).__name__} is read by index and slice, not iterated")

    def __getitem__(self, key):
        if isinstance(key, int):
            if key < 0:
                key += self.size
            if not 0 <= key < self.size:
                raise IndexError(f"index {key} out of range of {self.size} bytes")
            return self._page(key >> self.PAGE_BITS)[key & (self.PAGE - 1)]
        if not isinstance(key, slice):
            raise TypeError(f"{type(self).__name__} indices must be integers or slices")
        start, stop, step = key.indices(self.size)
        if step != 1:
            raise TypeError("only contiguous slices of a source are read")
        if stop <= start:
            return b""
        bits = self.PAGE_BITS
        k0, k1 = start >> bits, (stop - 1) >> bits
        if k0 == k1:
            base = k0 << bits
            return self._page(k0)[start - base : stop - base]
        if k1 - k0 >= self.DIRECT:
            return self.source.pread(start, stop - start, self.what)
        parts = [self._page(k) for k in range(k0, k1 + 1)]
        parts[-1] = parts[-1][: stop - (k1 << bits)]
        parts[0] = parts[0][start - (k0 << bits) :]
        return b"".join(parts)


class PieceReader(io.RawIOBase):
    """Reads ``size`` bytes of ``source`` (anything with ``pread(offset, size, what)``) from ``offset``, at most
    ``piece`` bytes a read, each read when asked for: a compressed entry decoded as a stream is then never
    held whole in its compressed form either."""

    def __init__(self, source, offset: int, size: int, what: str, piece: int) -> None:
        self.source, self.pos, self.end, self.what, self.piece = source, offset, offset + size, what, piece

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = min(len(b), self.end - self.pos, self.piece)
        if n <= 0:
            return 0
        data = self.source.pread(self.pos, n, self.what)
        b[: len(data)] = data
        self.pos += len(data)
        return len(data)


class SliceReader(io.RawIOBase):
    """A seekable reader over the first ``size`` bytes of anything sliced as bytes are (an mmap, SourceBytes)."""

    def __init__(self, buf, size: int) -> None:
        self.buf, self.size, self.pos = buf, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.buf[self.pos : min(self.size, self.pos + len(b))] if self.pos < self.size else b""
        b[: len(data)] = data
        self.pos += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def tell(self) -> int:
        return self.pos
