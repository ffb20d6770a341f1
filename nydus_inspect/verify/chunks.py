"""Checks ``chunk.range``, ``chunk.read``, ``chunk.digest``, ``chunk.crc`` and ``chunk.table``: every
chunk of a blob read, decoded and checked in batches by worker threads, through the chunk service's
batched decoder (``chunks.decode.iter_decoded``) and with the blob's compressor and digester as every
reader resolves them (``chunks.resolve.Blob``).
"""

from __future__ import annotations

import functools
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..chunks.decode import RUN_BYTES, Failed, iter_decoded
from ..chunks.readahead import Scheduler
from ..chunks.resolve import Blob
from ..digests import crc32c
from ..errors import NydusInspectError, UsageError
from ..formats import blob_meta, rafs_v6
from ..formats.tar_header import (
    BLOB_DIGEST,
    IMAGE_BLOB,
)
from ..layer import KIND_BLOB_NO_TOC, KIND_BLOB_TOC, Layer
from .findings import Cancelled, Finding, _exc_finding, _with

if TYPE_CHECKING:
    from .run import _Run
#: Chunks read per batch in the chunk pass.
BATCH = 256
#: Findings that chunk batches checked ahead of their turn may hold before the report collects them.
AHEAD_FINDINGS = 20000


# ---------------------------------------------------------------------------- chunks
@dataclass(frozen=True)
class ChunkRecord:
    """A chunk row of the bootstrap chunk table, for blobs without blob.meta (same fields as ChunkInfo)."""

    index: int
    compressed_offset: int
    compressed_size: int
    uncompressed_offset: int
    uncompressed_size: int
    compressed: bool
    flags: int = 0
    crc32: int | None = None


def _table_records(layer: Layer, blob_index: int) -> list[ChunkRecord]:
    rows: dict[int, ChunkRecord] = {}
    for rec in layer.rafs.chunk_table_entries():
        if rec.blob_index == blob_index and rec.index not in rows:
            rows[rec.index] = ChunkRecord(
                rec.index,
                rec.compressed_offset,
                rec.compressed_size,
                rec.uncompressed_offset,
                rec.uncompressed_size,
                rec.compressed,
                rec.flags,
                rec.crc32 if rec.flags & rafs_v6.CHUNK_HAS_CRC32 else None,
            )
    return [rows[k] for k in sorted(rows)]


def _recorded_digests(meta: Layer) -> bytes | None:
    """The bytes of ``meta``'s blob.digest, or None without one: the layer's own checked array
    (``Layer.chunk_digests``, which the blob.meta pass reads and keeps too), so that the run holds one copy.
    A blob.digest that fails its checks is still read, unchecked: that is the ToC and blob.meta passes'
    finding, and the chunks are still compared with it."""
    if not meta.has_entry(BLOB_DIGEST):
        return None
    try:
        checked = meta.chunk_digests
    except NydusInspectError:
        return meta.entry(BLOB_DIGEST, verify=False)
    return checked.data if checked is not None else None


class ChunkVerifier:
    """The chunks of one blob, and the checks of each: read, decompress, digest, agreement with the bootstrap.

    ``records`` is the blob's blob.meta chunk-info array (decoded on access), or, for a blob without
    blob.meta, its rows of the bootstrap chunk table. ``blob_index`` None means the layer's own data
    (a blob opened without its bootstrap, or the blob an inline bootstrap calls its own). Used by
    :func:`verify` for every chunk and by front ends to check one chunk on demand.
    """

    def __init__(self, layer: Layer, blob_index: int | None = None) -> None:
        self.layer = layer
        self.notes: list[str] = []
        self.rafs = None
        ent = None
        if layer.has_bootstrap and not layer.is_v5:
            self.rafs = layer.rafs
            if blob_index is None:
                blob_index = layer.own_blob_index()
                if (
                    blob_index is None
                    and layer.kind not in (KIND_BLOB_TOC, KIND_BLOB_NO_TOC)
                    and self.rafs.blobs
                ):
                    blob_index = 0  # a bootstrap: its first blob
        resolved = None
        if self.rafs is not None and blob_index is not None:
            ent = self.rafs.blobs[blob_index]
            resolved = layer.blob_file(blob_index)
            self.blob = resolved.layer
        else:
            self.blob = layer
        self.blob_index = blob_index
        self.entry = ent
        #: An external blob's chunks lie anywhere in it, raw (model.RafsV6.external).
        self.external = self.rafs is not None and blob_index in self.rafs.external
        #: Where blob.meta and blob.digest lie: the blob, or (targz-ref) the layer or file beside the bootstrap.
        self.meta = resolved.meta if resolved is not None else self.blob
        #: A targz-ref blob's zran view (chunks.zran): its chunks are inflated from the gzip through it.
        self.zran = resolved.zran if resolved is not None else None
        # A blob-cache file holds chunk data only: the bootstrap's records describe it.
        cache_data = resolved is not None and resolved.cache_data
        infos = None if cache_data else self.meta.chunk_infos
        if infos is not None:
            self.records = infos
            self.source = "blob.meta"
        elif self.rafs is not None and blob_index is not None:
            self.records = _table_records(layer, blob_index)
            self.source = "bootstrap chunk table"
        else:
            raise UsageError(
                f"{layer.path}: no blob.meta and no bootstrap chunk table: nothing describes chunks"
            )
        self.digests: bytes | None = None if cache_data else _recorded_digests(self.meta)
        # Compressor and digester as every reader resolves them (chunks.resolve): the blob's own.
        if resolved is None:
            resolved = Blob.without_bootstrap(self.blob, self.records, self.digests)
            self.notes.append(
                f"{self.blob.name}: no bootstrap names this blob's compressor and digester; its chunks say "
                f"{resolved.compressor.value} and {resolved.digester.value}"
            )
        self.compressor, self.digester = resolved.compressor, resolved.digester
        #: A batch or encrypted blob's chunks are decoded by its variant (chunks.variants), one by one.
        self.variant = resolved.variant
        try:
            self.data_end = (
                self.blob.entry_location(IMAGE_BLOB)[1] if self.blob.has_entry(IMAGE_BLOB) else self.blob.size
            )
        except NydusInspectError:
            self.data_end = self.blob.size
        self._table: dict | None = None

    def __len__(self) -> int:
        return len(self.records)

    def digest(self, index: int) -> bytes | None:
        """The recorded digest of chunk ``index``: blob.digest, else the bootstrap chunk table's."""
        if self.digests is not None and 32 * index + 32 <= len(self.digests):
            return self.digests[32 * index : 32 * index + 32]
        row = self._row(index)
        return row[0] if row is not None else None

    @property
    def table(self) -> dict:
        """The bootstrap chunk table keyed by (blob index, chunk index), each record as the tuple of its
        fields (``rafs_v6.ChunkTableEntry`` order); built on first use, and shared with the bootstrap checks."""
        if self._table is None:
            self._table = self.rafs._chunk_records() if self.rafs is not None else {}
        return self._table

    def _row(self, index: int) -> tuple | None:
        if self.rafs is None or self.blob_index is None:
            return None
        if self._table is None and self.digests is not None:
            row = self._find_by_digest(index)
            if row is not None:
                return row
        return self.table.get((self.blob_index, index))

    def _find_by_digest(self, index: int):
        """One record without building the whole table: tables nydus-inspect and nydus-image write are
        sorted by digest, so a binary search on the chunk's blob.digest finds it (None when it does not)."""
        want = self.digests[32 * index : 32 * index + 32]
        layout = rafs_v6.CHUNK_TABLE_ENTRY
        ext = self.rafs.ext
        buf, base, n = self.rafs.buf, ext.s_chunk_table_offset, ext.s_chunk_table_size // layout.size
        if len(want) != 32 or n < 4096:
            return None  # a small table is cheap to build
        lo, hi = 0, n
        while lo < hi:
            mid = (lo + hi) // 2
            off = base + mid * layout.size
            if bytes(buf[off : off + 32]) < want:
                lo = mid + 1
            else:
                hi = mid
        for k in range(lo, min(n, lo + 8)):
            off = base + k * layout.size
            if bytes(buf[off : off + 32]) != want:
                break
            row = layout.struct.unpack_from(buf, off)
            if row[1] == self.blob_index and row[8] == index:
                return row
        return None

    def finding(self, check: str, rec, message: str, **kw) -> Finding:
        kw.setdefault("offset", rec.compressed_offset)
        return Finding(
            check,
            message,
            structure="chunk",
            file=self.blob.path,
            blob_index=self.blob_index,
            chunk=rec.index,
            **kw,
        )

    def check(self, index: int) -> tuple[bytes | None, list[Finding]]:
        """(decompressed bytes or None, findings) of chunk ``index``."""
        rec = self.records[index]
        f = self.check_range(rec)
        if f is not None:
            return None, [f]
        out: list[Finding] = []
        data = None
        for _, got in self._decoded([rec]):
            data = self._checked(rec, got, out)
        return (bytes(data) if data is not None else None), out

    def check_batch(self, start: int, stop: int) -> tuple[int, list[Finding]]:
        out: list[Finding] = []
        good = []
        for i in range(start, stop):
            rec = self.records[i]
            f = self.check_range(rec)
            if f is not None:
                out.append(f)
            else:
                good.append(rec)
        # The chunk service's batched decoder; each run's bytes are checked before the next run reuses the buffer.
        for i, got in self._decoded(good):
            self._checked(good[i], got, out)
        return stop - start, out

    def _decoded(self, recs):
        """``iter_decoded`` of ``recs``; a batch or encrypted blob's through its variant."""
        if self.variant is None:
            yield from iter_decoded(
                self.blob.source, self.compressor, recs, out_buffer=_out_buffer, zran=self.zran
            )
            return
        for i, rec in enumerate(recs):
            try:
                yield i, self.variant.decode(rec, rec.index, f"chunk {rec.index} of blob {self.blob_index}")
            except NydusInspectError as exc:
                yield i, Failed("decode", exc)

    def _checked(self, rec, got, out: list[Finding]):
        """The checks of one decoded chunk (``got`` from ``iter_decoded``): its bytes, or None when it failed."""
        if isinstance(got, Failed):
            if got.stage == "read":
                out.append(self.finding("chunk.read", rec, str(got.error)))
            else:
                out.append(self.finding("chunk.read", rec, f"does not decompress: {got.error.detail}"))
            return None
        return self.check_decoded(rec, got, out)

    def _no_digest(self, row: tuple) -> bool:
        """An external blob's record with no digest (nydus-image never reads such data as it builds)."""
        return self.external and not any(row[0])

    def _clean(self, rec, data, got: bytes) -> bool:
        """True when every check of :meth:`check_decoded` passes (its common case, decided with fewer steps);
        False sends the chunk through those checks, which say what differs."""
        table = self._table
        if table is None or self.blob_index is None:
            return False
        idx = rec.index
        digests = self.digests
        if digests is not None and 32 * idx + 32 <= len(digests) and digests[32 * idx : 32 * idx + 32] != got:
            return False
        row = table.get((self.blob_index, idx))
        crc = rec.crc32
        if row is not None:
            flags = row[2]
            if (
                (row[0] != got and not self._no_digest(row))
                or row[5] != rec.compressed_offset
                or row[3] != rec.compressed_size
                or row[6] != rec.uncompressed_offset
                or row[4] != rec.uncompressed_size
                or bool(flags & rafs_v6.CHUNK_COMPRESSED) != rec.compressed
            ):
                return False
            if flags & rafs_v6.CHUNK_HAS_CRC32 and self.source != "bootstrap chunk table":
                if crc is not None and crc != row[9]:
                    return False
                crc = row[9]
        return crc is None or crc32c(data) == crc

    def check_range(self, rec) -> Finding | None:
        if self.variant is not None:
            # Its stored extents are the batch's, or ciphertext (a short chunk padded): the variant checks sizes.
            try:
                off, size = self.variant.stored_range(rec, rec.index)
            except NydusInspectError as exc:
                return self.finding("chunk.range", rec, str(exc))
            if size <= 0 or off + size > self.data_end:
                return self.finding(
                    "chunk.range",
                    rec,
                    f"stored range lies outside image.blob ({self.data_end} bytes)",
                    expected=f"<= {self.data_end}",
                    found=f"{off}+{size}",
                    offset=off,
                )
            return None
        # A zran chunk whose bits all lie in bytes the chunk before it consumed records 0 compressed bytes.
        empty = rec.compressed_size <= 0 and (self.zran is None or rec.compressed_size < 0)
        if empty or rec.compressed_offset + rec.compressed_size > self.data_end:
            return self.finding(
                "chunk.range",
                rec,
                f"compressed range lies outside image.blob ({self.data_end} bytes)",
                expected=f"<= {self.data_end}",
                found=f"{rec.compressed_offset}+{rec.compressed_size}",
            )
        if rec.uncompressed_offset % 4096 and not self.external:
            return self.finding(
                "chunk.range",
                rec,
                "uncompressed offset is not 4K-aligned",
                field="uncompressed_offset",
                found=str(rec.uncompressed_offset),
            )
        if not rec.compressed and rec.compressed_size != rec.uncompressed_size:
            return self.finding(
                "chunk.range",
                rec,
                "uncompressed chunk with differing sizes",
                expected=str(rec.uncompressed_size),
                found=str(rec.compressed_size),
            )
        return None

    def check_decoded(self, rec, data, out: list[Finding]):
        """The checks of a chunk's decoded bytes: its digest, CRC32C and bootstrap chunk-table record."""
        got = self.digester.digest(data)
        if self._clean(rec, data, got):
            return data
        before = len(out)
        if self.digests is not None and 32 * rec.index + 32 <= len(self.digests):
            want = self.digests[32 * rec.index : 32 * rec.index + 32]
            if got != want:
                out.append(
                    self.finding(
                        "chunk.digest",
                        rec,
                        f"{self.digester.value} digest differs from blob.digest",
                        expected=want.hex(),
                        found=got.hex(),
                    )
                )
        # row: block_id, blob_index, flags, compressed_size, uncompressed_size, compressed_offset,
        # uncompressed_offset, file_offset, index, crc32
        row = self._row(rec.index)
        # The CRC32C only adds news when the digests do not already condemn the data: then a mismatch means
        # the recorded crc32 itself is wrong.
        if row is not None and self._no_digest(row):
            row = (got, *row[1:])  # nothing to compare the bytes with but the CRC32C
        condemned = len(out) > before or (row is not None and row[0] != got)
        crcs = [(self.source, rec.crc32)] if rec.crc32 is not None else []
        if row is not None and row[2] & rafs_v6.CHUNK_HAS_CRC32 and self.source != "bootstrap chunk table":
            crcs.append(("bootstrap chunk table", row[9]))
        if crcs and not condemned:
            crc = crc32c(data)
            for where, want_crc in crcs:
                if want_crc != crc:
                    out.append(
                        self.finding(
                            "chunk.crc",
                            rec,
                            f"CRC32C differs from the {where}",
                            expected=f"{want_crc:#010x}",
                            found=f"{crc:#010x}",
                        )
                    )
        if row is not None:
            if row[0] != got:
                out.append(
                    self.finding(
                        "chunk.table",
                        rec,
                        f"{self.digester.value} digest differs from the bootstrap chunk table",
                        expected=row[0].hex(),
                        found=got.hex(),
                    )
                )
            mine = (
                rec.compressed_offset,
                rec.compressed_size,
                rec.uncompressed_offset,
                rec.uncompressed_size,
                rec.compressed,
            )
            theirs = (row[5], row[3], row[6], row[4], bool(row[2] & rafs_v6.CHUNK_COMPRESSED))
            if getattr(rec, "flags", 0) & blob_meta.CI_BATCH:
                # The bootstrap records a batch chunk with no stored extent, raw; blob.meta with its batch's
                # offset, compressed: only the decoded extents can agree.
                mine = (theirs[0], theirs[1], mine[2], mine[3], theirs[4])
            if mine != theirs:
                out.append(
                    self.finding(
                        "chunk.table",
                        rec,
                        f"bootstrap chunk table record differs from {self.source}",
                        expected=_fmt_rec(mine),
                        found=_fmt_rec(theirs),
                    )
                )
        return data


_local = threading.local()


def _out_buffer(size: int) -> memoryview:
    """A buffer of ``size`` bytes for this thread's next run of decoded chunks, reused from run to run: fresh
    buffers of megabytes cost page faults and zeroing."""
    buf = getattr(_local, "buf", None)
    if buf is None or len(buf) < size:
        buf = _local.buf = bytearray(max(size, RUN_BYTES))
    return memoryview(buf)[:size]


def _fmt_rec(t: tuple) -> str:
    return f"c {t[0]}+{t[1]} u {t[2]}+{t[3]} {'compressed' if t[4] else 'raw'}"


def _check_chunks(run: _Run, blob: Layer, blob_index: int | None, ent) -> None:
    if ent is not None and ent.features & blob_meta.TARFS:
        # The blob is the tar itself: nydus records no chunk digest, and its blob id (the tar's sha256) covers it.
        run.report.notes.append(
            f"blob {blob_index} is a tarfs tar: its bytes are checked by its blob id only"
        )
        return
    try:
        blob.chunk_infos  # noqa: B018
    except NydusInspectError:
        if blob_index is None or not run.layer.blob_file(blob_index).cache_data:
            return  # the blob.meta pass has reported it
    ahead = run.ahead.take_chunks(blob_index, blob)
    try:
        if ahead is not None:
            cv = ahead[0]
        else:
            cv = ChunkVerifier(run.layer, blob_index) if blob_index is not None else ChunkVerifier(blob)
    except UsageError as exc:
        run.report.notes.append(str(exc))
        return
    except NydusInspectError as exc:
        run.add(_exc_finding("chunk.read", exc, blob_index=blob_index, file=blob.path))
        return
    run.report.notes.extend(cv.notes)
    total = len(cv)
    stage = "chunks"
    if ahead is not None:
        ahead[1].collect(run, stage)
        return
    try:
        cv.table  # noqa: B018 - build the bootstrap chunk table once, before the workers need it
    except NydusInspectError as exc:
        run.add(_exc_finding("chunk.table", exc, file=run.layer.path))
        cv._table = {}
    run.tick(stage, 0, total)
    with Scheduler(run.workers, name="verify") as pool:
        pending = []
        done = 0
        for start in range(0, total, BATCH):
            pending.append(pool.submit(cv.check_batch, start, min(total, start + BATCH)))
            if len(pending) >= 2 * run.workers:
                done += _collect(run, pending.pop(0).result())
                run.tick(stage, done, total)
        for fut in pending:
            done += _collect(run, fut.result())
            run.tick(stage, done, total)
    run.tick(stage, total, total)


class _Batches:
    """The chunk batches of one blob: the pool checks them ahead of their turn, from the front, while the main
    thread is busy elsewhere; :meth:`collect` then adds their findings in batch order (the report of a
    sequential run), taking the batches no worker has started from the back itself meanwhile.

    Finished batches hold their findings until collected: past AHEAD_FINDINGS of them no more batches start
    early, so a badly broken blob does not hold millions of findings at once. A finished batch keeps its
    result, not its Future (the workers may finish every batch of a blob before the main thread gets to it:
    a Future, its condition and lock for each were hundreds of bytes a batch).
    """

    def __init__(self, pool: Scheduler, cv: ChunkVerifier, queue: int) -> None:
        total = len(cv)
        self.pool, self.cv, self.queue = pool, cv, queue
        self.total = total
        self.count = (total + BATCH - 1) // BATCH
        #: Per batch: None (not started), its Future (submitted to the pool), or once finished (by a worker or
        #: taken by the main thread ahead of its turn) its result or its exception.
        self.futures: list = [None] * self.count
        self.lock = threading.RLock()  # a done callback may run in the thread that adds it
        self.next = 0  # the next batch a worker may start
        self.end = self.count  # batches from here on were taken by the main thread
        self.running = 0  # submitted and not finished
        self.held = 0  # findings of finished batches not collected yet
        self.stopped = False
        self.feed()

    def feed(self) -> None:
        with self.lock:
            while (
                not self.stopped
                and self.next < self.end
                and self.running < self.queue
                and self.held < AHEAD_FINDINGS
            ):
                k = self.next
                try:
                    fut = self.pool.submit(self.cv.check_batch, *self.span(k))
                except RuntimeError:  # the pool is shutting down
                    self.stopped = True
                    return
                self.futures[k] = fut
                self.next += 1
                self.running += 1
                fut.add_done_callback(functools.partial(self._done, k))

    def span(self, k: int) -> tuple[int, int]:
        return k * BATCH, min(self.total, (k + 1) * BATCH)

    def _done(self, k: int, fut) -> None:
        with self.lock:
            self.running -= 1
            if not fut.cancelled():
                exc = fut.exception()
                if exc is None:
                    self.held += len(fut.result()[1])
                if self.futures[k] is fut:  # not collected yet
                    self.futures[k] = exc if exc is not None else fut.result()
            self.feed()

    def stop(self) -> None:
        with self.lock:
            self.stopped = True

    def _take(self, k: int) -> bool:
        """Claim batch ``k`` for the main thread when no worker has started it."""
        with self.lock:
            fut = self.futures[k]
            if fut is None:
                if k == self.next:
                    self.next += 1
                return True
            if not isinstance(fut, Future):
                return False  # finished
        return fut.cancel()

    def _steal(self, k: int) -> int | None:
        """The last batch after ``k`` that no worker will take, claimed for the main thread; None if none."""
        with self.lock:
            j = self.end - 1
            if j <= k or j < self.next or self.held >= AHEAD_FINDINGS:
                return None
            self.end = j
            return j

    def collect(self, run: _Run, stage: str) -> None:
        total = len(self.cv)
        run.tick(stage, 0, total)
        done = 0
        k = 0
        while k < self.count:
            fut = self.futures[k]
            if self._take(k):
                result = self.cv.check_batch(*self.span(k))
            elif isinstance(fut, Future) and not fut.done() and (j := self._steal(k)) is not None:
                # Kept in its slot as a worker's finished batch is, and collected as one in its turn.
                try:
                    got = self.cv.check_batch(*self.span(j))
                except Exception as exc:  # noqa: BLE001 - raised when its turn comes
                    self.futures[j] = exc
                else:
                    with self.lock:
                        self.futures[j] = got
                        self.held += len(got[1])
                if run.cancel is not None and run.cancel():  # progress is told in batch order
                    raise Cancelled(f"verification cancelled during {stage}")
                continue
            else:
                if isinstance(fut, Future):
                    result = fut.result()  # (its callback may not have run yet)
                elif isinstance(fut, BaseException):
                    raise fut  # in its turn, as a sequential run meets it
                else:
                    result = fut
                with self.lock:
                    self.held -= len(result[1])
                    self.futures[k] = None
                    self.feed()
            done += _collect(run, result)
            run.tick(stage, done, total)
            k += 1
        run.tick(stage, total, total)


def _collect(run: _Run, result: tuple[int, list[Finding]]) -> int:
    n, findings = result
    run.count("chunks", n)
    for f in findings:
        owners = run.owners(f.blob_index, f.chunk) if f.chunk is not None else ()
        run.add(_with(f, paths=owners, path=owners[0]) if owners else f)
    return n
