"""The persistent chunk cache: chunks of remote blobs, on disk, by the digest of their decoded bytes.

Only chunks the chunk service has checked against their recorded digest are put here, and what is read back
is decoded and checked again before it is used (bytes damaged on disk are dropped and fetched anew), so the
cache never adds a byte nobody checked. A chunk without a recorded digest is never stored: there is nothing
to key it by. The same chunk in several images or blobs is stored once. Chunks are kept as the blob stores
them (compressed): a warm cache then reads from disk what a local blob file would, not twice as much.

Layout: generations ``DIR/<n>.data`` (stored chunk bytes, appended) and ``DIR/<n>.index`` (one fixed-size
record per chunk: digester, digest, offset, stored size, compressor, decoded size and a CRC32 of the record). A chunk is written to the data file
first and its record appended after, under an exclusive ``flock`` of the index, so a record is only ever read
for bytes fully written, and several processes can share the directory. A record cut short by a crash fails
its CRC and is skipped. One file per chunk would be simpler, but creating thousands of small files costs more
than fetching the chunks (a minbase image holds 5,000 of them).

Size: bounded by ``limit``. When the newest data file passes a quarter of it a new generation starts, and
when all of them pass it the oldest generations are removed (first in, first out).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import struct
import threading
import time
import zlib

from ..codecs import Compressor
from ..errors import NydusInspectError

#: The default bound of the cache directory.
DEFAULT_LIMIT = 4 << 30

_BODY = struct.Struct("<B32sQIBI")  # digester, digest, offset, stored size, compressor (algo), decoded size
_RECORD = struct.Struct(_BODY.format + "I")  # and the CRC32 of the bytes before it
_DIGESTERS = {"blake3": 1, "sha256": 2}
_GEN = re.compile(r"(\d{1,12})\.index")
#: A miss looks for what other processes stored at most this often (seconds): each look costs a directory
#: listing, and a chunk missed is only fetched again.
REFRESH = 1.0


def default_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "nydus-inspect", "chunks")


class _Gen:
    def __init__(self, root: str, n: int) -> None:
        self.n = n
        self.index_path = os.path.join(root, f"{n}.index")
        self.data_path = os.path.join(root, f"{n}.data")
        self.index_fd = os.open(self.index_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self.data_fd = os.open(self.data_path, os.O_RDWR | os.O_CREAT, 0o644)
        self.read_to = 0  # how much of the index has been read

    def close(self) -> None:
        for fd in (self.index_fd, self.data_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


class ChunkStore:
    def __init__(self, root: str, limit: int = DEFAULT_LIMIT) -> None:
        self.root = root
        self.limit = limit
        self._lock = threading.Lock()
        self._gens: dict[int, _Gen] | None = None  # opened at the first use, not when an image is opened
        self._where: dict[tuple[int, bytes], tuple[_Gen, int, int, int, int]] = {}
        self._refreshed = time.monotonic()
        self.usable = True
        self.hits = 0
        self.stored = 0

    # ------------------------------------------------------------------ opening and reading the indexes
    def _open(self) -> bool:
        if self._gens is not None:
            return self.usable
        self._gens = {}
        try:
            os.makedirs(self.root, exist_ok=True)
            numbers = sorted(int(m.group(1)) for m in map(_GEN.fullmatch, os.listdir(self.root)) if m)
            for n in numbers or [0]:
                self._gens[n] = _Gen(self.root, n)
            for gen in self._gens.values():
                self._read_index(gen)
        except OSError:
            self.usable = False
        return self.usable

    def _read_index(self, gen: _Gen) -> None:
        """Take the records appended to ``gen``'s index since it was last read (by any process)."""
        size = os.fstat(gen.index_fd).st_size
        if size <= gen.read_to:
            return
        raw = os.pread(gen.index_fd, size - gen.read_to, gen.read_to)
        whole = len(raw) - len(raw) % _RECORD.size
        data_size = os.fstat(gen.data_fd).st_size
        for algo, digest, off, n, comp, usize, crc in _RECORD.iter_unpack(raw[:whole]):
            if zlib.crc32(_BODY.pack(algo, digest, off, n, comp, usize)) == crc and off + n <= data_size:
                self._where[(algo, digest)] = (gen, off, n, comp, usize)
        gen.read_to += whole

    def _refresh(self) -> None:
        """Records other processes added, and generations they started."""
        self._refreshed = time.monotonic()
        try:
            for m in map(_GEN.fullmatch, os.listdir(self.root)):
                if m and int(m.group(1)) not in self._gens:
                    self._gens[int(m.group(1))] = _Gen(self.root, int(m.group(1)))
            for gen in self._gens.values():
                self._read_index(gen)
        except OSError:
            pass

    # ------------------------------------------------------------------ the interface
    def get(self, digester: str, digest: bytes, size: int) -> tuple[bytes, Compressor] | None:
        """(stored bytes, their compressor) of the chunk of ``size`` decoded bytes stored under ``digest``
        (the caller decodes them and checks the digest)."""
        key = (_DIGESTERS.get(digester, 0), digest)
        with self._lock:
            if not self._open():
                return None
            where = self._where.get(key)
            if where is None and time.monotonic() - self._refreshed > REFRESH:
                self._refresh()
                where = self._where.get(key)
            if where is None:
                return None
        gen, off, n, comp, usize = where
        if usize != size:
            return None
        try:
            compressor = Compressor.from_algo(comp)
            data = os.pread(gen.data_fd, n, off)
        except (OSError, ValueError, NydusInspectError):
            return None
        if len(data) != n:
            return None
        self.hits += 1
        return data, compressor

    def drop(self, digester: str, digest: bytes) -> None:
        """Forget a stored chunk that did not check out (a good copy stored later takes its place)."""
        with self._lock:
            self._where.pop((_DIGESTERS.get(digester, 0), digest), None)

    def put(self, digester: str, digest: bytes, data, compressor: Compressor, size: int) -> None:
        """Store the stored bytes ``data`` (``compressor``, ``size`` bytes decoded) of a chunk whose decoded
        bytes were checked against ``digest``; a cache that cannot be written is simply not used."""
        key = (_DIGESTERS.get(digester, 0), digest)
        if len(data) > self.limit // 4 or len(digest) != 32:
            return
        with self._lock:
            if not self._open() or key in self._where:
                return
            gen = self._gens[max(self._gens)]
            try:
                fcntl.flock(gen.index_fd, fcntl.LOCK_EX)
                try:
                    self._read_index(gen)  # another process may have stored it meanwhile
                    if key in self._where:
                        return
                    off = os.fstat(gen.data_fd).st_size
                    os.pwrite(gen.data_fd, data, off)
                    body = _BODY.pack(key[0], digest, off, len(data), compressor.algo, size)
                    os.write(gen.index_fd, body + struct.pack("<I", zlib.crc32(body)))
                    gen.read_to += _RECORD.size
                finally:
                    fcntl.flock(gen.index_fd, fcntl.LOCK_UN)
            except OSError:
                self.usable = False  # a full disk, a read-only cache: go on without it
                return
            self._where[key] = (gen, off, len(data), compressor.algo, size)
            self.stored += 1
            if off + len(data) > self.limit // 4:
                self._roll()

    def _roll(self) -> None:
        """Start a new generation; remove the oldest while all of them hold more than the limit."""
        try:
            self._gens[max(self._gens) + 1] = _Gen(self.root, max(self._gens) + 1)
            sizes = {n: os.fstat(g.data_fd).st_size for n, g in self._gens.items()}
            for n in sorted(self._gens)[:-1]:
                if sum(sizes.values()) <= self.limit:
                    break
                gen = self._gens.pop(n)
                for path in (gen.index_path, gen.data_path):
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                self._where = {k: v for k, v in self._where.items() if v[0] is not gen}
                gen.close()
                del sizes[n]
        except OSError:
            self.usable = False

    def close(self) -> None:
        with self._lock:
            for gen in (self._gens or {}).values():
                gen.close()
            self._gens = None
            self._where.clear()
