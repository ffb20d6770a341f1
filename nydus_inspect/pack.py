"""pack: an OCI layer tar -> a nydus layer blob, as ``nydus-image create --type tar-rafs
--blob-inline-meta --features blob-toc --fs-version 6`` writes it.

Blob layout (each section followed by its 512-byte old-GNU tar header)::

    [chunk data][image.blob hdr][ci array][blob.meta.header][blob.meta hdr]
    [chunk digests][blob.digest hdr][zstd bootstrap][image.boot hdr][ToC][rafs.blob.toc hdr]

The tar is streamed once. Chunks are digested and compressed in a thread pool
(zstandard, lz4, blake3 and hashlib release the GIL) while the main thread
keeps write order and deduplicates by (digest, size); at most a few chunks are
in flight, so memory follows metadata, never layer size.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import logging
import mmap
import os
import struct
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO

from . import codecs
from .builder import BootstrapHead, plan_bootstrap, write_bootstrap
from .chunks.ref import ChunkRef
from .codecs import Compressor
from .digests import Digester, crc32c
from .errors import UsageError
from .formats import blob_meta, rafs_v6, tar_header, toc
from .formats._struct import round_up
from .formats.tar_header import BLOB_DIGEST, BLOB_META, BLOB_META_HEADER, IMAGE_BLOB, IMAGE_BOOT
from .fsutil import atomic_outputs
from .model import Node
from .tarstream import open_tar_input, read_tar

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 0x100000
BATCH_BYTES = 1 << 20
BATCH_ITEMS = 64
_U64 = struct.Struct("<Q")
_U64X2 = struct.Struct("<QQ")
#: A digest's first two bytes (its bucket in the sort by digest) and the next four.
_DIGEST_KEY = struct.Struct(">HI26x")
#: A worker reads a batch's chunks with one pread when that reads at most this much besides twice the data.
SPAN_SLACK = 1 << 20


@dataclass
class PackOptions:
    """How ``pack`` builds the layer; the defaults are nydus v2.3's."""

    compressor: Compressor = Compressor.ZSTD
    digester: Digester = Digester.BLAKE3
    chunk_size: int = DEFAULT_CHUNK_SIZE
    workers: int = 0  # 0: one per CPU
    bootstrap: str | None = None  # also write the bootstrap here (blob id = the layer digest)
    # A prefetch table naming the image root, as `nydus-image create --prefetch-policy fs` writes for the
    # pattern "/". Off by default: the snapshotter gives nydus-image no pattern, and it then writes none.
    prefetch: bool = False
    progress: Callable[[int], None] | None = None  # called with input bytes consumed so far

    def check(self) -> None:
        cs = self.chunk_size
        if cs & (cs - 1) or not rafs_v6.MIN_CHUNK_SIZE <= cs <= rafs_v6.MAX_CHUNK_SIZE:
            raise UsageError(f"chunk size {cs:#x} must be a power of 2 from 0x1000 to 0x1000000")
        if self.compressor is Compressor.GZIP:
            raise UsageError("gzip chunks are for zran (targz-ref) layers; pack with zstd, lz4_block or none")


@dataclass
class PackResult:
    """What ``pack`` wrote, with the figures its summary line prints."""

    path: str
    digest: str  # sha256 of the layer file (the OCI layer digest)
    size: int
    entries: int
    files: int
    chunks: int  # chunks referenced by files
    unique_chunks: int  # chunks stored in the blob
    data_bytes: int  # uncompressed file bytes
    stored_bytes: int  # chunk data stored in image.blob
    bootstrap_size: int
    toc: list[toc.TocEntry] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "digest": f"sha256:{self.digest}",
            "size": self.size,
            "entries": self.entries,
            "files": self.files,
            "chunks": self.chunks,
            "unique_chunks": self.unique_chunks,
            "data_bytes": self.data_bytes,
            "stored_bytes": self.stored_bytes,
            "bootstrap_size": self.bootstrap_size,
            "toc": [e.to_json() for e in self.toc],
            "warnings": self.warnings,
        }


class SectionWriter:
    """Appends to the blob while hashing the whole file.

    Writes are gathered into ~1 MiB pieces before they reach the file and the hash: each of those
    calls releases the GIL, and taking it back makes the main thread queue behind the workers, so a
    call per small chunk would cost more than the hashing itself.
    """

    FLUSH_BYTES = 1 << 20

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.pos = 0
        self.sha = hashlib.sha256()
        # Copied in, not kept as a list of the pieces: a megabyte of chunks of one-line files is a
        # hundred thousand objects.
        self._pending = bytearray()

    def write(self, data: bytes) -> None:
        self.pos += len(data)
        if len(data) >= self.FLUSH_BYTES:
            # Large enough on its own (the compressed bootstrap, say): written as it is, not copied.
            self.flush()
            self._put(data)
            return
        self._pending += data
        if len(self._pending) >= self.FLUSH_BYTES:
            self.flush()

    def _put(self, data) -> None:
        self.f.write(data)
        self.sha.update(data)

    def flush(self) -> None:
        if self._pending:
            self._put(self._pending)
            self._pending = bytearray()

    def digest_so_far(self) -> bytes:
        """sha256 of everything written until now."""
        self.flush()
        return self.sha.copy().digest()

    def hexdigest(self) -> str:
        self.flush()
        return self.sha.hexdigest()

    def section(self, name: str, data: bytes) -> int:
        """Write ``data`` and its trailing tar header; returns the data's offset."""
        off = self.pos
        self.write(data)
        self.write(tar_header.build(name, len(data)))
        return off


def _process_batch(items: list, comp: Compressor, digester: Digester) -> list[tuple[bytes, bytes, bool, int]]:
    """Digest, compress and CRC a batch of chunks (a worker task). Each item is the chunk's bytes, or
    ``(fd, offset, size)`` to read it from the tar file.

    Every call here that leaves the GIL has to win it back from the main thread, which is parsing tar
    headers meanwhile; so a batch of many small chunks is read with one ``pread`` over their span of the
    tar and compressed with one zstd call, not a call each."""
    datas = _read_batch(items)
    stored = codecs.compress_many_if_smaller(datas, comp)
    return [(digester.digest(d), s, compressed, crc32c(d)) for d, (s, compressed) in zip(datas, stored)]


def _read_batch(items: list) -> list:
    """The bytes of each item: those given, or read from the tar (one read over their span when they lie close)."""
    refs = [item for item in items if isinstance(item, tuple)]
    if not refs:
        return items
    fd, start = refs[0][0], refs[0][1]
    end = max(off + size for _, off, size in refs)
    wanted = sum(size for _, _, size in refs)
    # One read when the chunks lie close (headers and padding between them); not over a big gap (a long
    # PAX record, say), which would be read for nothing.
    if (
        len(refs) > 1
        and all(r[0] == fd for r in refs)
        and start == min(off for _, off, _ in refs)
        and end - start <= 2 * wanted + SPAN_SLACK
    ):
        view = memoryview(_pread_exact(fd, end - start, start))
        return [
            view[item[1] - start : item[1] - start + item[2]] if isinstance(item, tuple) else item
            for item in items
        ]
    return [_pread_exact(item[0], item[2], item[1]) if isinstance(item, tuple) else item for item in items]


def _pread_exact(fd: int, size: int, offset: int) -> bytes:
    data = os.pread(fd, size, offset)
    if len(data) != size:
        raise UsageError(f"the tar file ends inside file data at offset {offset + len(data)}")
    return data


class _FileChunks(Sequence):
    """A packed file's chunks, made from the packer's columns when asked for: an object per chunk, held
    until the bootstrap is written, would cost several times the rest of a small file's metadata."""

    __slots__ = ("_chunker", "_start", "_n")

    WINDOW = 4096  # chunks whose records chunk_indexes reads at a time

    def __init__(self, chunker: _Chunker, start: int, n: int) -> None:
        self._chunker, self._start, self._n = chunker, start, n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(self._n))]
        if k < 0:
            k += self._n
        if not 0 <= k < self._n:
            raise IndexError(k)
        chunker = self._chunker
        return chunker.chunk(chunker.refs[self._start + k], k * chunker.opts.chunk_size)

    def chunk_indexes(self) -> bytearray:
        """The file's chunk indexes as the bootstrap stores them after its inode (builder's
        ``_chunk_indexes``), read from the columns: no ChunkRef, with its digest, is made for each chunk."""
        chunker = self._chunker
        records = chunker.records
        out = bytearray(rafs_v6.CHUNK_INDEX.size * self._n)
        pack, mask = rafs_v6.pack_chunk_index, blob_meta.V1_UNCOMPRESSED_OFFSET
        for at in range(0, self._n, self.WINDOW):
            window = chunker.refs[self._start + at : self._start + min(self._n, at + self.WINDOW)]
            lo, hi = min(window), max(window)
            # A file's chunks are mostly stored in a run of their own: their records are read with one pread
            # over the run, each record by itself when they lie far apart.
            if hi - lo < 4 * len(window) + self.WINDOW:
                span = records.read(lo, hi - lo + 1)
                offsets = [_U64.unpack_from(span, 16 * (ci - lo))[0] for ci in window]
            else:
                offsets = [_U64.unpack_from(records.read(ci))[0] for ci in window]
            for k, ci, offset in zip(range(at, at + len(window)), window, offsets):
                # The stored chunk's v1 record (its first word holds the offset); the layer's one blob is 0.
                pack(out, 8 * k, 0, ci, (offset & mask) // rafs_v6.BLOCK_SIZE)
        return out


class _Spill:
    """An append-only column of ``width``-byte records in an unlinked temporary file: a column per stored
    chunk held on the heap would grow with the layer's distinct chunks (tens of bytes each, over half a
    gigabyte at ten million). Records are written a piece at a time as they come, and read back by
    ``pread``, one at a time or in order a piece at a time; those not written yet are read from the tail."""

    HOLD = 1 << 16  # bytes of records held before they are written

    def __init__(self, width: int) -> None:
        import tempfile  # only here: importing it costs every other command start-up time

        self.width = width
        self._file = tempfile.TemporaryFile(buffering=0)
        self._fd = self._file.fileno()
        self._written = 0  # bytes in the file
        self._tail = bytearray()

    @property
    def size(self) -> int:
        """Bytes of records so far."""
        return self._written + len(self._tail)

    def append(self, record) -> None:
        self._tail += record
        if len(self._tail) >= self.HOLD:
            self.flush()

    def flush(self) -> None:
        data, self._tail = self._tail, bytearray()
        done = 0
        while done < len(data):
            done += os.pwrite(self._fd, memoryview(data)[done:], self._written + done)
        self._written += done

    def read(self, index: int, count: int = 1) -> bytes:
        """Records ``index`` to ``index + count - 1``, joined."""
        start, end = index * self.width, (index + count) * self.width
        if start >= self._written:
            return bytes(self._tail[start - self._written : end - self._written])
        if end > self._written:
            self.flush()
        return _pread_column(self._fd, end - start, start)

    def pieces(self, size: int = 1 << 20) -> Iterator[bytes]:
        """All the records in order, in pieces of about ``size`` bytes (whole records)."""
        self.flush()
        size = max(size - size % self.width, self.width)
        for at in range(0, self._written, size):
            yield _pread_column(self._fd, min(size, self._written - at), at)

    @contextlib.contextmanager
    def mapped(self) -> Iterator[mmap.mmap]:
        """All the records (some) as one buffer, mapped: in the page cache, not the heap."""
        self.flush()
        with mmap.mmap(self._fd, self._written, prot=mmap.PROT_READ) as m:
            yield m

    def __del__(self) -> None:
        # The file goes with the column: its chunker (and so the tree, whose files' chunks are views of its
        # columns) may outlive pack.
        if hasattr(self, "_file"):
            self._file.close()


def _pread_column(fd: int, size: int, offset: int) -> bytes:
    data = os.pread(fd, size, offset)
    if len(data) != size:
        raise OSError(f"short read of a temporary file: {len(data)} bytes of {size} at {offset}")
    return data


class _DigestIndex:
    """The first chunk stored under each digest: an open-addressing table of chunk indexes (4 bytes a slot,
    at most three quarters of them taken), not a dict of a bytes key and an int per chunk (over a hundred
    bytes). Beside it, by chunk, a tag of each digest (32 bits of its ``hash()``), so that a probe reads a
    whole digest from the spilled column only when the tags match, and the table is grown from the tags
    alone. Positions come from those bits of ``hash()``, randomised per process, so that no layer can be
    made to pile its chunks up in one run of the table."""

    MASK = 0xFFFF_FFFF

    def __init__(self, digests: _Spill) -> None:
        self.digests = digests
        self.table = array("I", bytes(4 * 1024))  # chunk index + 1; 0 is a free slot
        self.tags = array("I")  # by stored chunk
        self.used = 0
        # Stored chunks not in the table (their digest is there, at another size).
        self.outside: set[int] = set()

    def _find(self, digest: bytes, tag: int) -> int:
        """The slot of ``digest``, or the free slot where it would go."""
        table, tags = self.table, self.tags
        mask = len(table) - 1
        i = tag & mask
        while True:
            v = table[i]
            if not v or (tags[v - 1] == tag and self.digests.read(v - 1) == digest):
                return i
            i = (i + 1) & mask

    def get(self, digest: bytes) -> int | None:
        v = self.table[self._find(digest, hash(digest) & self.MASK)]
        return v - 1 if v else None

    def add(self, digest: bytes, ci: int, indexed: bool = True) -> None:
        """Record the next stored chunk, ``ci`` (whose digest is in the column): under ``digest``, which has
        none yet, unless not ``indexed`` (stored at another size beside the chunk the table has for it)."""
        tag = hash(digest) & self.MASK
        self.tags.append(tag)
        if not indexed:
            self.outside.add(ci)
            return
        self.table[self._find(digest, tag)] = ci + 1
        self.used += 1
        if 4 * self.used > 3 * len(self.table):
            self._grow()

    def _grow(self) -> None:
        # Rebuilt from the tags, the old table let go first: never both at once.
        size = 2 * len(self.table)
        del self.table
        self.table = table = array("I", bytes(4 * size))
        mask, outside = size - 1, self.outside
        for ci, tag in enumerate(self.tags):
            if outside and ci in outside:
                continue
            i = tag & mask
            while table[i]:
                i = (i + 1) & mask
            table[i] = ci + 1


class _Chunker:
    """Orders, deduplicates and writes chunks produced by the worker pool.

    What it learns of each chunk is kept in columns: its blob.meta record (``records``), digest and CRC by
    stored chunk, spilled to temporary files (:class:`_Spill`), and which stored chunk each chunk of a file
    is (``refs``, on the heap: files in tar order, so a file's chunks are a run of it); a file's ``chunks``
    is a view of its run (:class:`_FileChunks`)."""

    def __init__(self, out: SectionWriter, opts: PackOptions, pool: ThreadPoolExecutor, workers: int) -> None:
        self.out = out
        self.opts = opts
        self.pool = pool
        # In flight: up to 16 chunk sizes of raw data (and never more than 4096 chunks), enough to keep
        # the workers busy through runs of small files while memory stays bounded.
        self.max_pending_bytes = max(16 * opts.chunk_size, 4 * workers * opts.chunk_size)
        self.max_pending = 4096
        self.pending_bytes = 0
        self.pending: deque[tuple[int, Future, int]] = deque()
        # Small chunks travel to the workers in batches: one task per ~1 MiB keeps thread hand-offs (and
        # their GIL traffic) rare in layers of many small files.
        self.batch: list = []
        self.batch_sizes: list[int] = []
        self.batch_bytes = 0
        self.records = _Spill(16)  # blob.meta's chunk-info records (v1), one per stored chunk
        self.digests = _Spill(32)  # blob.digest: the digest of each stored chunk
        self.crcs = _Spill(4)  # by stored chunk, little-endian
        # Chunks are told apart by (digest, size): by digest first, and a chunk of a digest already
        # stored at another size (a digest collision, in practice never) under both. The index goes when
        # the last chunk is stored (drain); the stored chunks it left out stay in ``outside``.
        self.by_digest: _DigestIndex | None = _DigestIndex(self.digests)
        self.by_size: dict[tuple[bytes, int], int] = {}
        self.outside: set[int] = set()
        self.collided: set[int] = set()  # stored chunks sharing their digest with another
        self.refs = array("I")  # by chunk of a file: the stored chunk it is
        self.starts = array("Q")  # by file, in tar order: where its run of ``refs`` starts
        self.submitted = 0  # chunks of files handed to the workers so far
        self.count = 0  # chunks stored
        self.stored_bytes = 0
        self.uncompressed = 0
        self.referenced = 0
        self.data_bytes = 0

    def add_file(self, node: Node, fobj: BinaryIO, ref: tuple[int, int] | None = None) -> None:
        """Chunk the tar's next regular file; its chunks are given to its node later, by :meth:`file_view`
        (the tree keeps no object per file)."""
        cs = self.opts.chunk_size
        n = -(-node.size // cs)
        self.starts.append(self.submitted)
        self.submitted += n
        remaining = node.size
        k = 0
        if ref is not None:
            fd, base = ref
            while remaining > 0:
                n = min(cs, remaining)
                self._submit(n, (fd, base + k * cs, n))
                remaining -= n
                k += 1
            self.data_bytes += node.size
            return
        while remaining > 0:
            # The tar reader's file objects return all that is asked for, short only at the end of the input.
            data = fobj.read(min(cs, remaining))
            if len(data) < min(cs, remaining):
                raise UsageError(
                    f"tar entry {os.fsdecode(node.path)}: data ends {remaining - len(data)} bytes early"
                )
            self._submit(len(data), data)
            remaining -= len(data)
            k += 1
        self.data_bytes += node.size

    def file_view(self, fileno: int, node: Node) -> None:
        """Set the ``chunks`` of the tar's regular file number ``fileno`` on its node, as the tree makes it."""
        n = -(-node.size // self.opts.chunk_size)
        node.chunks = _FileChunks(self, self.starts[fileno], n) if n else ()

    def _submit(self, size: int, data) -> None:
        self.batch.append(data)
        self.batch_sizes.append(size)
        self.batch_bytes += size
        if self.batch_bytes >= BATCH_BYTES or len(self.batch) >= BATCH_ITEMS:
            self._flush_batch()

    def _flush_batch(self) -> None:
        if not self.batch:
            return
        fut = self.pool.submit(_process_batch, self.batch, self.opts.compressor, self.opts.digester)
        for i, size in enumerate(self.batch_sizes):
            self.pending.append((size, fut, i))
        self.pending_bytes += self.batch_bytes
        self.batch, self.batch_sizes, self.batch_bytes = [], [], 0
        while len(self.pending) > self.max_pending or self.pending_bytes > self.max_pending_bytes:
            self._drain_one()

    def _drain_one(self) -> None:
        usize, fut, i = self.pending.popleft()
        self.pending_bytes -= usize
        digest, stored, compressed, crc = fut.result()[i]
        by_digest = self.by_digest
        assert by_digest is not None, "a chunk after drain"
        ci = first = by_digest.get(digest)
        if ci is not None and self._info(ci).uncompressed_size != usize:
            ci = self.by_size.get((digest, usize))
        if ci is None:
            ci = self.count
            self.records.append(blob_meta.pack_v1(self.out.pos, len(stored), self.uncompressed, usize))
            self.out.write(stored)
            self.count += 1
            self.stored_bytes += len(stored)
            self.digests.append(digest)
            by_digest.add(digest, ci, indexed=first is None)
            if first is not None:
                self.by_size[digest, usize] = ci
            self.crcs.append(crc.to_bytes(4, "little"))
            self.uncompressed += round_up(usize, rafs_v6.BLOCK_SIZE)
        self.referenced += 1
        self.refs.append(ci)

    def _info(self, ci: int) -> blob_meta.ChunkInfo:
        if not 0 <= ci < self.count:
            raise IndexError(ci)
        return blob_meta.decode_v1(ci, *_U64X2.unpack(self.records.read(ci)))

    def _digest(self, ci: int) -> bytes:
        if not 0 <= ci < self.count:
            raise IndexError(ci)
        return self.digests.read(ci)

    def chunk(self, ci: int, file_offset: int) -> ChunkRef:
        """Stored chunk ``ci`` at ``file_offset`` of a file."""
        chunk = ChunkRef.from_info(self._info(ci), 0, file_offset, self._digest(ci))
        chunk.crc32 = int.from_bytes(self.crcs.read(ci), "little")
        return chunk

    def table_chunks(self, files: Iterable[tuple[int, int]]) -> tuple[int, Iterator[ChunkRef]]:
        """The chunk table's chunks (:data:`builder.TableChunks`) from the columns, for the files (number
        in tar order, size) of a tree whose files are all packed here, in layout order: a stored chunk's
        record takes the file offset of its first use in that order."""
        cs = self.opts.chunk_size
        refs, starts = self.refs, self.starts
        # By stored chunk: 1 + the number, in its file, of its first use in layout order; 0 while unused.
        first = array("I", bytes(4 * self.count))
        # Of the chunks stored under one digest (a collision), the first used in layout order is recorded.
        collided = self.collided
        picked: dict[bytes, int] = {}
        for fileno, size in files:
            start = starts[fileno]
            for k in range(-(-size // cs)):
                ci = refs[start + k]
                if not first[ci]:
                    first[ci] = k + 1
                    if collided and ci in collided:
                        picked.setdefault(self._digest(ci), ci)
        # A chunk stored but used by no file of the tree (its file was replaced later in the tar) has no record.
        order = array("I")
        for ci in self._by_digest():
            if collided and ci in collided:
                ci = picked.get(self._digest(ci), -1)
            if ci >= 0 and first[ci]:
                order.append(ci)
        return len(order), (self.chunk(ci, (first[ci] - 1) * cs) for ci in order)

    def _by_digest(self) -> array:
        """The stored chunks but those left out of the dedup index, by digest: bucketed by the digest's first
        two bytes (a counting sort over arrays, the digests read in order from their column), then each
        bucket sorted by the next four bytes (kept beside it) or, where those tie, by whole digests; so that
        no list of a million keys, nor the digests, is held."""
        outside, digests = self.outside, self.digests
        starts = array("I", bytes(4 * 65537))
        ci = 0
        for piece in digests.pieces():
            for b, _ in _DIGEST_KEY.iter_unpack(piece):
                if not (outside and ci in outside):
                    starts[b + 1] += 1
                ci += 1
        for b in range(65536):
            starts[b + 1] += starts[b]
        fill = array("I", starts)
        out = array("I", bytes(4 * starts[65536]))
        keys = array("I", bytes(4 * starts[65536]))
        ci = 0
        for piece in digests.pieces():
            for b, key in _DIGEST_KEY.iter_unpack(piece):
                if not (outside and ci in outside):
                    at = fill[b]
                    out[at], keys[at] = ci, key
                    fill[b] = at + 1
                ci += 1
        del fill
        for b in range(65536):
            lo, hi = starts[b], starts[b + 1]
            if hi - lo > 1:
                bucket = keys[lo:hi]
                if len(set(bucket)) == hi - lo:
                    out[lo:hi] = array("I", (ci for _, ci in sorted(zip(bucket, out[lo:hi]))))
                else:
                    out[lo:hi] = array("I", sorted(out[lo:hi], key=self._digest))
        return out

    def drain(self) -> None:
        """Store the chunks still in flight; then the dedup index is let go (no chunk comes after)."""
        self._flush_batch()
        while self.pending:
            self._drain_one()
        if self.by_digest is not None:
            self.outside = self.by_digest.outside
            self.collided = set(self.by_size.values()) | {self.by_digest.get(d) for d, _ in self.by_size}
            self.by_digest = None


def pack(source: str, output: str, opts: PackOptions | None = None) -> PackResult:
    """Pack the tar at ``source`` ('-' for stdin; plain, gzip or zstd) into the nydus layer blob ``output``."""
    opts = opts or PackOptions()
    opts.check()
    workers = opts.workers or os.cpu_count() or 1
    return _pack(source, output, opts, workers)


def _pack(source: str, output: str, opts: PackOptions, workers: int) -> PackResult:
    # With --bootstrap the two outputs appear as a pair: both are written whole before either is renamed,
    # and the bootstrap is renamed first. It names its blob by the blob's sha256, so a run stopped between
    # the two renames leaves the new bootstrap beside the old blob, a pair whose blob id does not match
    # (found by digest lookup and by verify); the other order would leave a new blob beside an old
    # bootstrap that reads it with stale chunk offsets.
    import tempfile  # only here: importing it costs every other command start-up time

    paths = [opts.bootstrap, output] if opts.bootstrap else [output]
    with open_tar_input(source) as stream, atomic_outputs(paths) as files:
        out = SectionWriter(files[-1])
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pack") as pool:
            chunker = _Chunker(out, opts, pool, workers)
            tree = read_tar(stream, chunker.add_file, source, progress=opts.progress)
            tree.file_view = chunker.file_view
            chunker._flush_batch()
            # Lay the bootstrap out while the workers finish the last chunks.
            plan = plan_bootstrap(
                tree, 1 if chunker.data_bytes else 0, chunk_size=opts.chunk_size, prefetch=opts.prefetch
            )
            chunker.drain()
        for warning in tree.warnings:
            log.warning("%s", warning)
        entries, blobs = _write_blob_sections(out, chunker, opts)
        result = PackResult(
            path=output,
            digest="",
            size=0,
            entries=tree.entries,
            files=tree.files(),
            chunks=chunker.referenced,
            unique_chunks=chunker.count,
            data_bytes=chunker.data_bytes,
            stored_bytes=chunker.stored_bytes,
            bootstrap_size=0,
            toc=entries,
            warnings=list(tree.warnings),
        )
        # The bootstrap is written to an unlinked temporary file as it is serialised, and the tree, its layout
        # and the chunk columns are let go before it is mapped and compressed (write_boot_and_toc: whole, or
        # a piece at a time when large).
        with tempfile.TemporaryFile(buffering=SectionWriter.FLUSH_BYTES) as spool:
            head = write_bootstrap(
                spool.write,
                tree,
                blobs,
                chunk_size=opts.chunk_size,
                compressor=opts.compressor,
                digester=opts.digester,
                prefetch=opts.prefetch,
                plan=plan,
                # From the tree's columns: no node is made for it.
                table=functools.partial(_files_table, chunker, tree.file_runs(plan.slots.keys)),
            )
            spool.flush()
            del tree, plan, chunker
            result.bootstrap_size = head.total_size
            with mmap.mmap(spool.fileno(), head.total_size, prot=mmap.PROT_READ) as boot:
                write_boot_and_toc(out, boot, entries)
                result.digest, result.size = out.hexdigest(), out.pos
                if opts.bootstrap:
                    _write_separate_bootstrap(files[0], boot, head, blobs, result)
    return result


def _files_table(
    chunker: _Chunker, files: Iterable[tuple[int, int]], _nodes
) -> tuple[int, Iterator[ChunkRef]]:
    """:data:`builder.TableChunks` of the files (number, size) of the tree, in layout order."""
    return chunker.table_chunks(files)


def _write_blob_sections(
    out: SectionWriter, chunker: _Chunker, opts: PackOptions
) -> tuple[list[toc.TocEntry], list[rafs_v6.BlobTableEntry]]:
    """After the chunk data: its tar header, blob.meta and blob.digest; returns their ToC entries and the
    blob table (the blob as the bootstrap in the layer names it), both empty when no chunk was stored."""
    n = chunker.count
    if not n:
        return [], []
    data_size = out.pos
    out.write(tar_header.build(IMAGE_BLOB, data_size))
    # The image.blob digest covers the chunk data and its tar header: exactly the file so far.
    entries = [
        toc.TocEntry(IMAGE_BLOB, Compressor.NONE, out.digest_so_far(), 0, data_size, chunker.uncompressed)
    ]
    # blob.meta: chunk-info array (compressed when that helps), then its 4096-byte header. The array is
    # compressed from its mapped column: in one call, or past STREAM_OVER by zstd a piece at a time, as the
    # bootstrap is (at ten million chunks it is 160 MB).
    records = chunker.records
    ci_size = records.size
    stored: bytes | _Spill = records
    ci_comp = Compressor.NONE
    ci_sha256 = None
    if opts.compressor is not Compressor.NONE:
        with records.mapped() as ci_data:
            if opts.compressor is Compressor.ZSTD and ci_size > STREAM_OVER:
                packed, ci_sha256 = _squeezed(ci_data)
            else:
                with memoryview(ci_data) as view:
                    packed = codecs.compress(view, opts.compressor)
                    ci_sha256 = hashlib.sha256(view).digest()  # while mapped: not read again to hash it
        if _nbytes(packed) < ci_size:
            stored, ci_comp = packed, opts.compressor
        del packed
    ci_offset = out.pos
    header = blob_meta.BlobMetaHeader(
        s_features=blob_meta.DEFAULT_LAYER_FEATURES,
        s_ci_compressor=ci_comp.algo,
        s_ci_entries=n,
        s_ci_offset=ci_offset,
        s_ci_compressed_size=_nbytes(stored),
        s_ci_uncompressed_size=ci_size,
    ).build()
    entries += write_meta_sections(out, stored, header, ci_comp, records, chunker.digests, ci_sha256)
    blob = rafs_v6.BlobTableEntry(
        blob_id=rafs_v6.PLACEHOLDER_BLOB_ID.encode(),
        blob_index=0,
        chunk_size=opts.chunk_size,
        chunk_count=n,
        compression_algo=opts.compressor.algo,
        digest_algo=opts.digester.algo,
        features=blob_meta.DEFAULT_LAYER_FEATURES,
        compressed_size=out.pos,
        uncompressed_size=chunker.uncompressed,
        ci_compressor=ci_comp.algo,
        ci_offset=ci_offset,
        ci_compressed_size=_nbytes(stored),
        ci_uncompressed_size=ci_size,
    )
    return entries, [blob]


def _write_separate_bootstrap(
    f: BinaryIO, boot, head: BootstrapHead, blobs: list[rafs_v6.BlobTableEntry], result: PackResult
) -> None:
    """The layer's bootstrap as a file of its own: the one in the layer, its blob named by the layer digest
    (as after a merge) and no longer holding the bootstrap (so only the head differs)."""
    if blobs:
        boot_entry = next(e for e in result.toc if e.name == IMAGE_BOOT)
        blobs = [
            dataclasses.replace(
                blobs[0],
                blob_id=result.digest.encode(),
                features=blob_meta.DEFAULT_LAYER_FEATURES & ~blob_meta.INLINED_FS_META,
                compressed_size=boot_entry.compressed_offset,
            )
        ]
    f.write(head.build(blobs))
    for piece in _pieces(boot, head.size):
        f.write(piece)


def _sha256_of(data: bytes | _Spill) -> bytes:
    sha = hashlib.sha256()
    for piece in _pieces_of(data):
        sha.update(piece)
    return sha.digest()


def _nbytes(data: bytes | _Spill) -> int:
    return data.size if isinstance(data, _Spill) else len(data)


def _pieces_of(data: bytes | _Spill) -> Iterable:
    return data.pieces() if isinstance(data, _Spill) else (data,)


def _write_all(out: SectionWriter, data: bytes | _Spill) -> bytes:
    """Writes ``data``; returns its sha256, taken on the way (a spilled column is read once)."""
    sha = hashlib.sha256()
    for piece in _pieces_of(data):
        sha.update(piece)
        out.write(piece)
    return sha.digest()


def write_meta_sections(
    out: SectionWriter,
    stored: bytes | _Spill,
    header: bytes,
    ci_comp: Compressor,
    ci_data: bytes | _Spill,
    digests: bytes | _Spill,
    ci_sha256: bytes | None = None,
) -> list[toc.TocEntry]:
    """blob.meta (its chunk-info data as stored, then its 4096-byte header) and blob.digest (the chunk
    digests), each followed by its tar header; returns their ToC entries. The data is bytes, or a column
    spilled to a file (read back a piece at a time). ``ci_sha256`` is that of ``ci_data`` when the caller
    took it while compressing; otherwise it is taken here."""
    at = out.pos
    stored_size, ci_size, digests_size = _nbytes(stored), _nbytes(ci_data), _nbytes(digests)
    stored_sha = _write_all(out, stored)
    if ci_sha256 is None:
        ci_sha256 = stored_sha if ci_comp is Compressor.NONE else _sha256_of(ci_data)
    out.write(header)
    out.write(tar_header.build(BLOB_META, stored_size + len(header)))
    entries = [
        toc.TocEntry(BLOB_META, ci_comp, ci_sha256, at, stored_size, ci_size),
        toc.TocEntry(
            BLOB_META_HEADER,
            Compressor.NONE,
            hashlib.sha256(header).digest(),
            at + stored_size,
            len(header),
            len(header),
        ),
    ]
    off = out.pos
    digests_sha = _write_all(out, digests)
    out.write(tar_header.build(BLOB_DIGEST, digests_size))
    entries.append(toc.TocEntry(BLOB_DIGEST, Compressor.NONE, digests_sha, off, digests_size, digests_size))
    return entries


#: A bootstrap or chunk-info array larger than this is compressed a PIECE at a time, and a map's pages are let
#: go behind the pieces: compressed in one call, a 1M-inode layer's 197 MB bootstrap and its 60 MB frame are
#: all resident at once. zstd fed in pieces makes another frame (as valid) than one call does, so smaller
#: sections keep the one call and their layers' bytes.
STREAM_OVER = 32 << 20
PIECE = 4 << 20


def _pieces(boot, start: int = 0) -> Iterator[memoryview]:
    """``boot[start:]`` a PIECE at a time; a mapped section's pages are given back as each is done."""
    release = boot.madvise if isinstance(boot, mmap.mmap) else None
    with memoryview(boot) as view:
        for at in range(start, len(view), PIECE):
            with view[at : at + PIECE] as piece:
                yield piece
            if release is not None:
                # Back to the page boundary at or before ``at``: madvise takes whole pages.
                low = at - at % mmap.PAGESIZE
                release(mmap.MADV_DONTNEED, low, min(at + PIECE, len(view)) - low)


def _squeezed(data) -> tuple[_Spill, bytes]:
    """``data`` compressed by zstd a piece at a time into a temporary file (in the page cache, not the heap,
    until it is known to be smaller than ``data``), and the sha256 of ``data``."""
    sha = hashlib.sha256()
    squeeze = codecs.zstd_compressobj(len(data))
    frame = _Spill(1)
    for piece in _pieces(data):
        sha.update(piece)
        frame.append(squeeze.compress(piece))
    frame.append(squeeze.flush())
    return frame, sha.digest()


def _boot_in_pieces(out: SectionWriter, boot) -> tuple[int, int, bool, bytes]:
    """A large bootstrap's section written from pieces: (offset, stored size, compressed, sha256)."""
    frame, digest = _squeezed(boot)
    off = out.pos
    compressed = frame.size < len(boot)
    if compressed:
        stored = frame.size
        for piece in frame.pieces(PIECE):
            out.write(piece)
    else:
        stored = len(boot)
        for piece in _pieces(boot):
            out.write(piece)
    out.write(tar_header.build(IMAGE_BOOT, stored))
    return off, stored, compressed, digest


def write_boot_and_toc(out: SectionWriter, boot, entries: list[toc.TocEntry]) -> None:
    """The bootstrap (zstd when smaller) and its tar header, then the ToC of ``entries`` and it."""
    if len(boot) > STREAM_OVER:
        off, stored_size, compressed, digest = _boot_in_pieces(out, boot)
    else:
        stored, compressed = codecs.compress_if_smaller(boot, Compressor.ZSTD)
        off, stored_size, digest = out.section(IMAGE_BOOT, stored), len(stored), hashlib.sha256(boot).digest()
    entries.append(
        toc.TocEntry(
            IMAGE_BOOT,
            Compressor.ZSTD if compressed else Compressor.NONE,
            digest,
            off,
            stored_size,
            len(boot),
        )
    )
    toc_bytes, toc_hdr = toc.build_section(entries)
    out.write(toc_bytes)
    out.write(toc_hdr)
