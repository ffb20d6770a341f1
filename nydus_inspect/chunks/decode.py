"""The one decode-and-check path for chunk data, single and batched, and the decoded-chunk cache.

``ChunkReader.decode`` reads a chunk's stored bytes from its blob's :class:`~.source.BlobSource`,
decompresses them with the blob's compressor to exactly the recorded size, and checks them against the
recorded digests (the bootstrap's and blob.digest's, with the blob's digester) or, without one, the recorded
CRC32C. Anything wrong is a
FormatError naming the chunk as verify names it (``chunk N of blob B``), its offset and the blob file.
``decode_many`` gives the same results for a list of chunks, decoding runs of zstd chunks in one call;
``read`` goes through the cache. cat, unpack, cache-file, diff, the mount and the TUI all read this way.

:func:`iter_decoded` is the batched decoder underneath, shared with verify's chunk pass: it reads a batch
of chunk records with one pread when they lie close together and decodes runs of zstd frames that lie end
to end in one call without the GIL, and hands back each chunk's bytes or what stopped them (unchecked:
:class:`ChunkReader` raises on the first problem, verify turns each into a finding).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

from .. import codecs
from ..codecs import Compressor
from ..digests import crc32c
from ..errors import FormatError
from .ref import ChunkRef
from .resolve import Blob

#: The largest span of a blob one batch reads at once.
MAX_SPAN = 32 << 20
#: Output of one libzstd call decoding a run of zstd chunks that lie end to end.
RUN_BYTES = 8 << 20


class Failed(NamedTuple):
    """A chunk of a batch that did not decode: at which ``stage`` (``read`` or ``decode``), and why."""

    stage: str
    error: FormatError


def read_span(source, recs) -> tuple[bytes, int] | None:
    """(bytes, offset) of one read covering ``recs`` when they lie close together, else None."""
    if not recs:
        return None
    lo = min(r.compressed_offset for r in recs)
    hi = max(r.compressed_offset + r.compressed_size for r in recs)
    stored = sum(r.compressed_size for r in recs)
    if hi - lo <= MAX_SPAN and hi - lo <= 2 * stored + (1 << 20):
        try:
            return source.pread(lo, hi - lo, "chunk data"), lo
        except FormatError:
            pass  # read chunk by chunk, to name the bad one
    return None


def _decode_one(raw, compressor: Compressor, rec):
    if not rec.compressed:
        if rec.compressed_size != rec.uncompressed_size:
            return Failed(
                "decode",
                FormatError("chunk", "uncompressed chunk with differing sizes", offset=rec.compressed_offset),
            )
        return raw
    try:
        return codecs.decompress(raw, compressor, rec.uncompressed_size, "chunk", rec.compressed_offset)
    except FormatError as exc:
        return Failed("decode", exc)


def iter_decoded(
    source,
    compressor: Compressor,
    recs,
    *,
    out_buffer: Callable[[int], memoryview] | None = None,
    big_runs: bool = True,
    zran=None,
) -> Iterator[tuple[int, object]]:
    """``(i, bytes-like or Failed)`` for each record ``recs[i]`` (anything with the compressed and uncompressed
    offsets and sizes and ``compressed``), in order and unchecked.

    Runs of zstd chunks that lie end to end are decoded with one ``codecs.zstd_frames`` call (up to RUN_BYTES
    of output; small and large chunks apart, as ``codecs.decompress`` decodes them with different zstd
    builds); large ones only when ``big_runs``, into ``out_buffer(size)`` when given (a buffer reused from
    run to run: a run's bytes are valid until the next item of the next run is asked for). A run that call
    does not take exactly as recorded is decoded chunk by chunk, which says what is wrong. ``zran`` (a
    chunks.zran.ZranBlob): the records are a targz-ref blob's, inflated through its contexts.
    """
    if zran is not None:  # a targz-ref blob's chunks (chunks.zran), each cut from its inflated context
        for i, rec in enumerate(recs):
            try:
                yield i, zran.decode(rec.index, rec.uncompressed_size, rec.compressed_offset)
            except FormatError as exc:
                yield i, Failed("decode", exc)
        return
    n = len(recs)
    got = read_span(source, recs)
    if got is None:
        for i, rec in enumerate(recs):
            try:
                raw = source.pread(rec.compressed_offset, rec.compressed_size, "chunk data")
            except FormatError as exc:
                yield i, Failed("read", exc)
                continue
            yield i, _decode_one(raw, compressor, rec)
        return
    span, lo = got
    view = memoryview(span)
    zstd = compressor is Compressor.ZSTD
    i = 0
    while i < n:
        rec = recs[i]
        pos = rec.compressed_offset - lo
        big = rec.uncompressed_size >= codecs.UNLOCKED_MIN
        if not rec.compressed or not zstd or (big and not big_runs):
            yield i, _decode_one(view[pos : pos + rec.compressed_size], compressor, rec)
            i += 1
            continue
        j, end, size = i + 1, rec.compressed_offset + rec.compressed_size, rec.uncompressed_size
        while j < n:
            nxt = recs[j]
            if (
                not nxt.compressed
                or nxt.compressed_offset != end
                or size + nxt.uncompressed_size > RUN_BYTES
                or (nxt.uncompressed_size >= codecs.UNLOCKED_MIN) != big
            ):
                break
            end += nxt.compressed_size
            size += nxt.uncompressed_size
            j += 1
        frames = [(r.compressed_offset - lo, r.compressed_size, r.uncompressed_size) for r in recs[i:j]]
        data = codecs.zstd_frames(span, frames, out_buffer(size) if big and out_buffer is not None else None)
        if data is None:
            for k in range(i, j):
                r = recs[k]
                p = r.compressed_offset - lo
                yield k, _decode_one(view[p : p + r.compressed_size], compressor, r)
        else:
            yield from zip(range(i, j), data)
        i = j


#: What a cached chunk costs beside its bytes: its key, its place in the order, the bytes object. Counted in
#: the cache's size, or a cache of tiny chunks (a layer of one-line files) would hold a million of them in
#: several hundred megabytes while its bytes stay under the limit.
ENTRY_OVERHEAD = 384


class ChunkCache:
    """A bounded LRU of decoded chunks, by total bytes (each entry's ENTRY_OVERHEAD included)."""

    def __init__(self, limit: int = 64 << 20) -> None:
        self.limit = limit
        self.used = 0
        self._data: OrderedDict[tuple, bytes] = OrderedDict()

    def get(self, key):
        data = self._data.get(key)
        if data is not None:
            self._data.move_to_end(key)
        return data

    def discard(self, key) -> None:
        data = self._data.pop(key, None)
        if data is not None:
            self.used -= len(data) + ENTRY_OVERHEAD

    def put(self, key, data: bytes) -> None:
        if len(data) > self.limit:
            return
        old = self._data.pop(key, None)
        if old is not None:
            self.used -= len(old) + ENTRY_OVERHEAD
        self._data[key] = data
        self.used += len(data) + ENTRY_OVERHEAD
        while self.used > self.limit and len(self._data) > 1:  # a chunk as large as the cache stays alone
            _, dropped = self._data.popitem(last=False)
            self.used -= len(dropped) + ENTRY_OVERHEAD


class ChunkReader:
    """Checked chunk bytes of one image. ``blob_of(blob_index)`` gives the resolved :class:`Blob`."""

    #: Fewest small zstd chunks worth a batch.
    BATCH_MIN = 4

    def __init__(self, blob_of: Callable[[int], Blob], cache: ChunkCache | None = None) -> None:
        self.blob_of = blob_of
        self.cache = cache if cache is not None else ChunkCache()

    # ------------------------------------------------------------------ one chunk
    def read(self, ref: ChunkRef) -> bytes:
        """A chunk's checked bytes, through the cache."""
        key = ref.cache_key
        data = self.cache.get(key)
        if data is None:
            data = self.decode(ref)
            self.cache.put(key, data)
        return data

    def read_file(self, chunks: Iterable[ChunkRef]) -> Iterator[bytes]:
        for ref in chunks:
            yield self.read(ref)

    def decode(self, ref: ChunkRef, verify: bool = True) -> bytes:
        """Read, decompress and check one chunk, bypassing the cache (safe to call from worker threads). A blob
        with a persistent store (a remote blob) is asked there first, by the chunk's recorded digest."""
        blob = self.blob_of(ref.blob_index)
        if blob.zran is not None:  # a targz-ref chunk: inflated from the gzip through its context
            try:
                data = blob.zran.chunk(ref)
            except FormatError as exc:
                raise exc.located(blob.path) from None
            if verify:
                self.check(blob, ref, data)
            return data
        members = blob.members
        if members is not None and ref.ci_index in members:
            # An eStargz chunk inside a gzip member shared with others: cut from the member's output.
            try:
                data = members.chunk(ref)
            except FormatError as exc:
                raise exc.located(blob.path) from None
            if verify:
                self.check(blob, ref, data)
            return data
        want = (
            blob.recorded_digest(ref) if blob.store is not None and verify and blob.variant is None else b""
        )
        if want:
            data = self._stored(blob, ref, want)
            if data is not None:
                return data
        if blob.variant is not None:
            # A batch or encrypted blob (chunks.variants): decoded there, checked here as any chunk.
            try:
                data = blob.variant.decode(ref, ref.ci_index, ref.name)
            except FormatError as exc:
                raise exc.located(blob.path) from None
            if verify:
                self.check(blob, ref, data)
            return data
        try:
            raw = blob.source.pread(ref.compressed_offset, ref.compressed_size, ref.name)
            comp = blob.compressor if ref.compressed else Compressor.NONE
            data = self._decoded(raw, comp, ref)
        except FormatError as exc:
            raise exc.located(blob.path) from None
        if verify:
            self.check(blob, ref, data)
        if want:
            blob.store.put(blob.digester.value, want, raw, comp, ref.uncompressed_size)
        return data

    @staticmethod
    def _decoded(raw, comp: Compressor, ref: ChunkRef):
        """A chunk's stored bytes decoded to exactly its recorded size (unchecked)."""
        if comp is not Compressor.NONE:
            return codecs.decompress(raw, comp, ref.uncompressed_size, ref.name, ref.compressed_offset)
        if len(raw) != ref.uncompressed_size:
            raise FormatError(
                ref.name, "uncompressed chunk with differing sizes", offset=ref.compressed_offset
            )
        return raw

    @staticmethod
    def _stored(blob: Blob, ref: ChunkRef, want: bytes):
        """The chunk's bytes from the blob's persistent store, decoded and checked against ``want``; None if
        absent or bad (then dropped from the store)."""
        got = blob.store.get(blob.digester.value, want, ref.uncompressed_size)
        if got is None:
            return None
        try:
            data = ChunkReader._decoded(got[0], got[1], ref)
        except FormatError:
            data = None
        # Stored bytes are checked as fetched ones are: against every recorded digest, not only the key.
        if data is None or not _has_digests(blob, ref, blob.digester.digest(data)):
            blob.store.drop(blob.digester.value, want)
            return None
        return data

    @staticmethod
    def check(blob: Blob, ref: ChunkRef, data) -> None:
        """Refuse ``data`` unless it has every digest and CRC32C recorded for ``ref`` (and, with no digest of
        its own, unless its blob has its id: Blob.check_whole)."""
        wants = blob.recorded_digests(ref)
        if not wants:
            blob.check_whole()
        if wants:
            got = blob.digester.digest(data)
            for where, want in wants:
                if got != want:
                    raise FormatError(
                        ref.name,
                        f"{blob.digester.value} digest {got.hex()} differs from {where} {want.hex()}",
                        offset=ref.compressed_offset,
                    ).located(blob.path)
        crcs = blob.recorded_crcs(ref)
        if crcs:
            got_crc = crc32c(data)
            for where, want_crc in crcs:
                if got_crc != want_crc:
                    raise FormatError(
                        ref.name,
                        f"CRC32C {got_crc:#010x} differs from {where} {want_crc:#010x}",
                        offset=ref.compressed_offset,
                    ).located(blob.path)

    # ------------------------------------------------------------------ many chunks
    def decode_group(self, refs: list[ChunkRef], verify: bool = True) -> list:
        """Each chunk's checked bytes (bytes-like), in order; the chunks of each blob are decoded together
        (:meth:`decode_many`). Safe to call from worker threads."""
        by_blob: dict[int, list[ChunkRef]] = {}
        for ref in refs:
            by_blob.setdefault(ref.blob_index, []).append(ref)
        if len(by_blob) == 1:
            return self.decode_many(refs, verify)
        decoded = {blob: iter(self.decode_many(rs, verify)) for blob, rs in by_blob.items()}
        return [next(decoded[ref.blob_index]) for ref in refs]

    def decode_many(self, refs: list[ChunkRef], verify: bool = True) -> list:
        """:meth:`decode` of each chunk of one blob (bytes-like results), the small zstd chunks read and decoded
        together (:func:`iter_decoded`). The first chunk in order that fails is reported as :meth:`decode`
        reports it alone."""
        if not refs:
            return []
        blob = self.blob_of(refs[0].blob_index)
        if blob.variant is not None:
            return [self.decode(c, verify) for c in refs]
        if blob.store is not None and verify:
            return self._decode_many_stored(blob, refs)
        if blob.compressor is not Compressor.ZSTD or (
            sum(1 for c in refs if c.compressed and c.uncompressed_size < codecs.UNLOCKED_MIN)
            < self.BATCH_MIN
        ):
            return [self.decode(c, verify) for c in refs]
        # Large chunks are decoded alone: codecs.decompress gives each its own buffer, without the GIL.
        out: list = [None] * len(refs)
        for i, data in iter_decoded(blob.source, blob.compressor, refs, big_runs=False):
            ref = refs[i]
            if isinstance(data, Failed):
                data = self.decode(ref, verify)  # raises, naming the chunk, unless the failure was transient
            elif verify:
                self.check(blob, ref, data)
            out[i] = data
        return out

    def _decode_many_stored(self, blob: Blob, refs: list[ChunkRef]) -> list:
        """:meth:`decode_many` for a blob with a persistent store: the chunks stored there are taken from it,
        the others read (a remote blob's source coalesces the reads), checked and stored."""
        out: list = [None] * len(refs)
        missing = []
        for i, ref in enumerate(refs):
            want = blob.recorded_digest(ref)
            data = self._stored(blob, ref, want) if want else None
            if data is None:
                missing.append(i)
            else:
                out[i] = data
        for i in missing:  # one by one: the blob's source fetches them together
            out[i] = self.decode(refs[i])
        return out


def _has_digests(blob: Blob, ref: ChunkRef, got: bytes) -> bool:
    """Whether ``got`` is every digest recorded for ``ref``."""
    return all(got == want for _, want in blob.recorded_digests(ref))
