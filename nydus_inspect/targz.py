"""``pack --type targz-ref``: the RAFS v6 bootstrap and blob.meta that reference a plain ``.tar.gz`` in place.

The gzip is inflated once. Its regular files are cut into chunks (each file on its own, ``chunk_size`` bytes
but its last), and every chunk is given the *zran context* it can be inflated from: a deflate block boundary
at or before its start (a byte and a bit of the gzip, the 32 KiB window before it), as nydus's zran generator
(utils/src/compress/zlib_random.rs, used by builder/src/tarball.rs) places them. Its policy, followed here so
that the tables agree: a chunk starts a new context (at the last block boundary before it) when a boundary
was passed since the current context began and either 512 KiB of gzip input lie behind the context's start,
or the output behind it plus one ``chunk_size`` reaches 2 MiB; or when the gzip behind the context's start is
more than twice what the context covered at its last chunk, and that was over 512 KiB. The thresholds are
fixed (nydus derives them from its default 1 MiB chunk size, whatever the chunk size of the layer).

Python's :mod:`zlib` cannot stop at deflate block boundaries nor hand out its window, so the inflater here is
the system libz through :mod:`ctypes` (``inflate(Z_BLOCK)``, ``inflateGetDictionary``), on buffers of its
own. The input is read in 64 KiB pieces and output is produced as the tar reader asks for it: memory stays at
a chunk, a window per context and the metadata.

Chunks are digested with sha256 (targz-ref's only digester); identical chunks keep the first one's record, as
nydus's chunk dictionary keeps them, but still pass through the context policy as nydus's reads do. The
blob.meta is written as a file of its own (chunk info v2 with the zran table, then its 4096-byte header)
named by its sha256 beside the bootstrap: the form ``nydus-image create --type targz-ref --bootstrap B
--blob-dir D`` writes, and what nydusd reads from its blob directory next to the gzip named by its sha256.
Or (``inline``) all of it in one meta blob, as ``--blob-inline-meta --features blob-toc`` writes it for the
snapshotter.

As nydus's tar builders do, the eStargz files ``/stargz.index.json`` and the landmarks are left out of the
tree (an eStargz layer packed this way is then what ``nydus-image create --type estargz-ref`` makes of it);
OCI whiteouts stay entries, as nydus keeps them in a layer whatever its ``--whiteout-spec``.

One difference from nydus on purpose: a chunk that starts exactly where a gzip member ends, and needs a new
context, gets it at the next member's data; nydus starts it at the end of the member's last block, where its
own decoder reads the trailer as deflate data (see :meth:`ZranIndexer.begin`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import logging
import os
from dataclasses import dataclass, replace
from typing import BinaryIO

from . import codecs
from .chunks.ref import ChunkRef
from .codecs import Compressor
from .digests import Digester, crc32c
from .errors import FormatError, UsageError
from .formats import blob_meta, rafs_v6, zran
from .formats._struct import round_up
from .formats.estargz import SPECIAL_PATHS

log = logging.getLogger(__name__)

#: nydus's default chunk size, and the unit its zran thresholds are fixed in.
DEFAULT_CHUNK_SIZE = 0x100000
_MIN_COMP = DEFAULT_CHUNK_SIZE // 2
_MAX_COMP = DEFAULT_CHUNK_SIZE
_MAX_UNCOMP = DEFAULT_CHUNK_SIZE * 2
#: Input is read in pieces of this size, as nydus's zran reader reads it (where a read ends can change how
#: many bytes zlib has taken in when an output buffer fills, and so the recorded compressed extents).
INPUT_PIECE = 64 << 10

#: Blob-table and blob.meta features nydus gives a targz-ref blob.
FEATURES = (
    blob_meta.ALIGNED | blob_meta.CHUNK_INFO_V2 | blob_meta.ZRAN | blob_meta.SEPARATE | blob_meta.CAP_TAR_TOC
)

_Z_OK, _Z_STREAM_END, _Z_BUF_ERROR, _Z_BLOCK = 0, 1, -5, 5
_GZIP_MAGIC = b"\x1f\x8b\x08"


class _ZStream(ctypes.Structure):
    _fields_ = [
        ("next_in", ctypes.c_void_p),
        ("avail_in", ctypes.c_uint),
        ("total_in", ctypes.c_ulong),
        ("next_out", ctypes.c_void_p),
        ("avail_out", ctypes.c_uint),
        ("total_out", ctypes.c_ulong),
        ("msg", ctypes.c_char_p),
        ("state", ctypes.c_void_p),
        ("zalloc", ctypes.c_void_p),
        ("zfree", ctypes.c_void_p),
        ("opaque", ctypes.c_void_p),
        ("data_type", ctypes.c_int),
        ("adler", ctypes.c_ulong),
        ("reserved", ctypes.c_ulong),
    ]


_LIBZ = None


def _libz():
    global _LIBZ
    if _LIBZ is None:
        name = ctypes.util.find_library("z") or "libz.so.1"
        try:
            lib = ctypes.CDLL(name)
        except OSError as exc:
            raise UsageError(f"pack --type targz-ref needs the system zlib (libz): {exc}") from None
        lib.zlibVersion.restype = ctypes.c_char_p
        lib.inflateInit2_.argtypes = [ctypes.POINTER(_ZStream), ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.inflate.argtypes = [ctypes.POINTER(_ZStream), ctypes.c_int]
        lib.inflateReset.argtypes = [ctypes.POINTER(_ZStream)]
        lib.inflateEnd.argtypes = [ctypes.POINTER(_ZStream)]
        lib.inflateGetDictionary.argtypes = [
            ctypes.POINTER(_ZStream),
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_uint),
        ]
        _LIBZ = lib
    return _LIBZ


@dataclass
class _Boundary:
    """Where inflate stood at a deflate block boundary (or just after a gzip member's header)."""

    in_pos: int = 0
    out_pos: int = 0
    ctx_byte: int = 0
    ctx_bits: int = 0
    #: After the last block of a member: what follows is its trailer, not deflate data.
    member_end: bool = False


class BlockInflater:
    """A gzip stream (one member or several) inflated with ``Z_BLOCK``: ``read(n)`` returns the next ``n``
    bytes of output (fewer only at the end), and every deflate block boundary passed is remembered with its
    window (:attr:`boundary`, :meth:`window`). ``in_pos``/``out_pos`` are the gzip bytes zlib has taken in
    and the bytes it has put out. Errors are FormatErrors naming the gzip offset."""

    def __init__(self, f: BinaryIO, name: str) -> None:
        self.f = f
        self.name = name
        self.z = _libz()
        self.strm = _ZStream()
        self._in = (ctypes.c_ubyte * INPUT_PIECE)()
        self._in_addr = ctypes.addressof(self._in)
        self._out = (ctypes.c_ubyte * 0)()
        self._dict = (ctypes.c_ubyte * zran.WINDOW)()
        self._dict_len = ctypes.c_uint(0)
        self.boundary = _Boundary()
        self.in_pos = 0
        self.out_pos = 0
        self.read_in = 0  # gzip bytes read from the file
        self.last_byte = 0  # the last byte of the previous input piece
        self.sha256 = hashlib.sha256()
        self.ended = False
        self.members = 1
        self.member_start = 0  # gzip offset of the current member
        self.strm.next_in = self._in_addr
        self.strm.avail_in = 0
        ver = self.z.zlibVersion()
        ret = self.z.inflateInit2_(ctypes.byref(self.strm), 31, ver, ctypes.sizeof(_ZStream))
        if ret != _Z_OK:
            raise UsageError(f"zlib inflateInit2 failed ({ret})")
        self._live = True

    def close(self) -> None:
        if self._live:
            self.z.inflateEnd(ctypes.byref(self.strm))
            self._live = False

    def _refill(self) -> bool:
        if self.strm.next_in and self.strm.next_in > self._in_addr:
            self.last_byte = self._in[self.strm.next_in - self._in_addr - 1]
        got = self.f.readinto(memoryview(self._in).cast("B"))
        if not got:
            return False
        self.sha256.update(memoryview(self._in).cast("B")[:got])
        self.read_in += got
        self.strm.next_in = self._in_addr
        self.strm.avail_in = got
        return True

    def _error(self, what: str) -> FormatError:
        return FormatError("gzip", f"{self.name}: {what}", offset=self.in_pos)

    def _at_boundary(self) -> None:
        bits = self.strm.data_type & 7
        byte = 0
        if bits:
            at = self.strm.next_in - self._in_addr
            byte = self.last_byte if at == 0 else self._in[at - 1]
        self.boundary = _Boundary(self.in_pos, self.out_pos, byte, bits, bool(self.strm.data_type & 0x40))
        # The window must be taken now, before inflate moves on; it is copied into our own buffer (in C),
        # and made into bytes only if a context starts here (most boundaries are passed by).
        ret = self.z.inflateGetDictionary(
            ctypes.byref(self.strm), ctypes.addressof(self._dict), ctypes.byref(self._dict_len)
        )
        if ret != _Z_OK:
            raise self._error(f"zlib inflateGetDictionary failed ({ret})")

    def window(self) -> bytes:
        """The window at :attr:`boundary` (empty at the start of a gzip member)."""
        return ctypes.string_at(ctypes.addressof(self._dict), self._dict_len.value)

    def read(self, n: int) -> bytes:
        if n <= 0 or self.ended:
            return b""
        if len(self._out) < n:
            self._out = (ctypes.c_ubyte * n)()
        base = ctypes.addressof(self._out)
        s = self.strm
        s.next_out = base
        s.avail_out = n
        while s.avail_out:
            if not s.avail_in and not self._refill():
                raise self._error(f"truncated: the gzip data ends at {self.read_in} bytes, inside a member")
            before_in, before_out = s.avail_in, s.avail_out
            ret = self.z.inflate(ctypes.byref(s), _Z_BLOCK)
            self.in_pos += before_in - s.avail_in
            self.out_pos += before_out - s.avail_out
            if ret == _Z_STREAM_END:
                if not self._next_member():
                    self.ended = True
                    break
                continue
            if ret == _Z_OK:
                if s.data_type & 0x80:
                    self._at_boundary()
                continue
            if ret == _Z_BUF_ERROR and not s.avail_in:
                continue
            msg = s.msg.decode("utf-8", "replace") if s.msg else f"zlib error {ret}"
            if self.members > 1 and self.in_pos - self.member_start < 10:
                msg += f" (bytes after gzip member {self.members - 1} that are not a gzip member)"
            raise self._error(f"not inflatable: {msg}")
        return ctypes.string_at(base, n - self.strm.avail_out)

    def step_over_member_end(self) -> None:
        """Standing at the end of a member's last block (nothing put out since), go past its trailer and the
        next member's header, putting nothing out, to the boundary where that member's data starts."""
        if not (self.boundary.member_end and self.out_pos == self.boundary.out_pos) or self.ended:
            return
        if not len(self._out):
            self._out = (ctypes.c_ubyte * 1)()
        s = self.strm
        while True:
            if not s.avail_in and not self._refill():
                raise self._error(
                    f"truncated: the gzip data ends at {self.read_in} bytes, after a member's data"
                )
            s.next_out, s.avail_out = ctypes.addressof(self._out), 0
            before_in = s.avail_in
            ret = self.z.inflate(ctypes.byref(s), _Z_BLOCK)
            self.in_pos += before_in - s.avail_in
            if ret == _Z_STREAM_END:
                if not self._next_member():
                    self.ended = True
                    return
                continue
            if ret == _Z_OK and s.data_type & 0x80 and not s.data_type & 0x40:
                self._at_boundary()
                return
            if ret == _Z_OK or (ret == _Z_BUF_ERROR and not s.avail_in):
                continue
            msg = s.msg.decode("utf-8", "replace") if s.msg else f"zlib error {ret}"
            raise self._error(f"not inflatable: {msg}")

    def _next_member(self) -> bool:
        """After a member's trailer: go on with the next member, or end. Only zero bytes (tape padding, which
        gzip -d reads past) may follow the last member. The input is not moved or re-read: where its pieces
        end stays where nydus's reader has them end."""
        s = self.strm
        if not s.avail_in and not self._refill():
            return False
        if self._in[s.next_in - self._in_addr]:
            # Anything but a zero starts a member: zlib parses (and refuses) its header.
            self.z.inflateReset(ctypes.byref(s))
            self.members += 1
            self.member_start = self.in_pos
            return True
        while True:
            if ctypes.string_at(s.next_in, s.avail_in).strip(b"\0"):
                raise self._error(
                    f"bytes other than zeros after the padding that follows gzip member {self.members}"
                )
            self.in_pos += s.avail_in
            s.avail_in = 0
            if not self._refill():
                return False


@dataclass
class _Context:
    in_offset: int
    out_offset: int
    ctx_byte: int
    ctx_bits: int
    window: bytes
    in_len: int = 0
    out_len: int = 0


class ZranIndexer:
    """nydus's zran context policy over a :class:`BlockInflater`: call :meth:`begin` before reading a chunk's
    bytes and :meth:`end` after; :meth:`end` returns (context index, offset in its output, gzip offset and
    length the chunk was read from)."""

    def __init__(self, inflater: BlockInflater, chunk_size: int) -> None:
        self.inf = inflater
        self.chunk_size = chunk_size
        self.contexts: list[_Context] = []
        self._cur: int | None = None
        self._block_start = 0
        self._out_at = 0
        self._in_at = 0

    def _new(self) -> int:
        b = self.inf.boundary
        self.contexts.append(_Context(b.in_pos, b.out_pos, b.ctx_byte, b.ctx_bits, self.inf.window()))
        self._block_start = b.in_pos
        return len(self.contexts) - 1

    def begin(self) -> None:
        in_pos, out_pos = self.inf.in_pos, self.inf.out_pos
        new = self._cur is None
        if not new:
            ctx = self.contexts[self._cur]
            comp = in_pos - ctx.in_offset
            uncomp = out_pos - ctx.out_offset
            # No block boundary since the context began: there is nowhere else to start one.
            first = self.inf.boundary.in_pos == self._block_start
            new = not first and (
                comp >= _MAX_COMP // 2
                or uncomp + self.chunk_size >= _MAX_UNCOMP
                or (comp > 2 * ctx.in_len and ctx.in_len > _MIN_COMP)
            )
        if new:
            # Here we differ from nydus on purpose: a chunk that starts where a gzip member's data ends gets
            # a context at the next member's data, not at the end of the last block. nydus's starts there, and
            # its decoder then reads the member's trailer as deflate data: nydusd fails to read the chunk.
            self.inf.step_over_member_end()
            in_pos = self.inf.in_pos
            self._cur = self._new()
        self._out_at, self._in_at = out_pos, in_pos

    def end(self) -> tuple[int, int, int, int]:
        ctx = self.contexts[self._cur]
        ctx.out_len = self.inf.out_pos - ctx.out_offset
        ctx.in_len = self.inf.in_pos - ctx.in_offset
        return self._cur, self._out_at - ctx.out_offset, self._in_at, self.inf.in_pos - self._in_at

    def table(self) -> bytes:
        return zran.build_table(
            [
                zran.ZranContext(
                    index=i,
                    in_offset=c.in_offset,
                    out_offset=c.out_offset,
                    dict_offset=0,
                    in_len=c.in_len,
                    out_len=c.out_len,
                    dict_size=len(c.window),
                    ctx_byte=c.ctx_byte,
                    ctx_bits=c.ctx_bits,
                    window=c.window,
                )
                for i, c in enumerate(self.contexts)
            ]
        )


class _Chunker:
    """Reads each regular file's chunks through the indexer; the first chunk of each (digest, size) gets a
    record, in read order, with 4 KiB aligned uncompressed offsets."""

    def __init__(self, indexer: ZranIndexer, chunk_size: int) -> None:
        self.indexer = indexer
        self.chunk_size = chunk_size
        self.by_key: dict[tuple[bytes, int], ChunkRef] = {}
        self.infos: list[blob_meta.ChunkInfo] = []
        self.digests: list[bytes] = []  # by chunk-info index
        self.uncompressed = 0

    def add_file(self, node, fobj, ref=None) -> None:
        node.chunks = []
        cs = self.chunk_size
        remaining = node.size
        k = 0
        while remaining > 0:
            want = min(cs, remaining)
            self.indexer.begin()
            data = fobj.read(want)
            if len(data) < want:
                raise FormatError(
                    "tar entry", f"{os.fsdecode(node.path)}: data ends {want - len(data)} bytes early"
                )
            ci, ci_off, in_pos, in_len = self.indexer.end()
            digest = Digester.SHA256.digest(data)
            key = (digest, want)
            chunk = self.by_key.get(key)
            if chunk is None:
                chunk = ChunkRef(
                    blob_index=0,
                    ci_index=len(self.infos),
                    file_offset=k * cs,
                    compressed_offset=in_pos,
                    compressed_size=in_len,
                    uncompressed_offset=self.uncompressed,
                    uncompressed_size=want,
                    compressed=True,
                    digest=digest,
                    crc32=crc32c(data),
                )
                self.infos.append(
                    blob_meta.ChunkInfo(
                        index=chunk.ci_index,
                        compressed_offset=in_pos,
                        compressed_size=in_len,
                        uncompressed_offset=self.uncompressed,
                        uncompressed_size=want,
                        compressed=True,
                        flags=blob_meta.CI_ZRAN,
                        data=(ci << 32) | ci_off,
                    )
                )
                self.digests.append(digest)
                self.uncompressed += round_up(want, rafs_v6.BLOCK_SIZE)
                self.by_key[key] = chunk
            elif chunk.file_offset != k * cs:
                chunk = replace(chunk, file_offset=k * cs)
            node.chunks.append(chunk)
            remaining -= want
            k += 1


#: The features of the blob.meta inside a meta blob (``--blob-inline-meta --features blob-toc``): its
#: sections, the bootstrap and the chunk digests are in the meta blob, each followed by a tar header, with a ToC.
INLINE_FEATURES = (
    FEATURES
    | blob_meta.INLINED_FS_META
    | blob_meta.INLINED_CHUNK_DIGEST
    | blob_meta.HAS_TAR_HEADER
    | blob_meta.HAS_TOC
)


def meta_blob(
    chunker: _Chunker, indexer: ZranIndexer, features: int = FEATURES
) -> tuple[bytes, bytes, Compressor, bytes]:
    """(the chunk-info data as stored, the 4096-byte header, the compressor it is stored with, the data
    uncompressed): v2 chunk-info records and the zran table after them, zstd-compressed when that is smaller
    (as nydus stores every *-ref blob.meta). The separate blob.meta file is the first two, one after the
    other."""
    array = b"".join(blob_meta.encode_v2(ci) for ci in chunker.infos)
    table = indexer.table() if chunker.infos else b""
    data = array + table
    stored, compressed = codecs.compress_if_smaller(data, Compressor.ZSTD)
    comp = Compressor.ZSTD if compressed else Compressor.NONE
    header = blob_meta.BlobMetaHeader(
        s_features=features,
        s_ci_compressor=comp.algo,
        s_ci_entries=len(chunker.infos),
        s_ci_offset=0,
        s_ci_compressed_size=len(stored),
        s_ci_uncompressed_size=len(data),
        s_ci_zran_offset=len(array),
        s_ci_zran_size=len(table),
        s_ci_zran_count=len(indexer.contexts) if chunker.infos else 0,
    ).build()
    return stored, header, comp, data


def _check_gzip(path: str) -> None:
    with open(path, "rb") as f:
        head = f.read(3)
    if head != _GZIP_MAGIC:
        raise FormatError(
            "gzip",
            f"{path}: not a gzip file (starts {head.hex() or 'empty'}; pack --type targz-ref takes a .tar.gz)",
            offset=0,
        )


@dataclass
class TargzRef:
    bootstrap: bytes
    meta: bytes
    blob_id: str
    blob_size: int
    chunks: int
    contexts: int
    entries: int
    members: int


def build(source: str, chunk_size: int = DEFAULT_CHUNK_SIZE, inline: bool = False) -> TargzRef:
    """Index the gzip ``source`` and build the bootstrap and blob.meta over it; ``inline``: ``meta`` is then
    the meta blob holding both (and the chunk digests)."""
    from .builder import build_bootstrap
    from .tarstream import read_tar

    _check_gzip(source)
    with open(source, "rb", buffering=0) as f:
        inf = BlockInflater(f, source)
        try:
            indexer = ZranIndexer(inf, chunk_size)
            chunker = _Chunker(indexer, chunk_size)
            try:
                # As nydus's tar builders do, an eStargz layer's TOC and landmark files are no part of the tree.
                tree = read_tar(inf, chunker.add_file, source, skip=SPECIAL_PATHS)  # type: ignore[arg-type]
            except FormatError as exc:
                # The gzip's errors and the tar reader's name the file already; a chunk's does not.
                if source in str(exc):
                    raise
                raise exc.located(source) from None
            # Inflate to the end: the gzip's own checks (CRC, length) cover the whole stream, and the
            # blob id is the sha256 of every byte.
            while inf.read(1 << 20):
                pass
            rest = f.read()
            if rest:
                inf.sha256.update(rest)
                inf.read_in += len(rest)
        finally:
            inf.close()
    for warning in tree.warnings:
        log.warning("%s", warning)
    blob_id = inf.sha256.hexdigest()
    size = os.path.getsize(source)
    features = INLINE_FEATURES if inline else FEATURES
    stored, header, ci_comp, ci_data = meta_blob(chunker, indexer, features)
    meta = stored + header
    n = len(chunker.infos)
    blobs = []
    if n:
        blobs.append(
            rafs_v6.BlobTableEntry(
                blob_id=blob_id.encode(),
                blob_index=0,
                chunk_size=chunk_size,
                chunk_count=n,
                compression_algo=Compressor.GZIP.algo,
                digest_algo=Digester.SHA256.algo,
                features=features,
                compressed_size=size,
                uncompressed_size=chunker.uncompressed,
                ci_compressor=ci_comp.algo,
                ci_offset=0,
                ci_compressed_size=len(stored),
                ci_uncompressed_size=len(ci_data),
                # A meta blob is found by the snapshotter beside its layer; a separate blob.meta by its digest.
                blob_meta_digest=bytes(32) if inline else hashlib.sha256(meta).digest(),
                blob_meta_size=0 if inline else len(meta),
            )
        )
    boot = build_bootstrap(
        tree.root, blobs, chunk_size=chunk_size, compressor=Compressor.GZIP, digester=Digester.SHA256
    )
    if inline:
        meta = _inline_blob(stored, header, ci_comp, ci_data, b"".join(chunker.digests), boot)
    return TargzRef(
        bootstrap=bytes(boot),
        meta=meta,
        blob_id=blob_id,
        blob_size=size,
        chunks=n,
        contexts=len(indexer.contexts) if n else 0,
        entries=tree.entries,
        members=inf.members,
    )


def _inline_blob(
    stored: bytes, header: bytes, ci_comp: Compressor, ci_data: bytes, digests: bytes, boot
) -> bytes:
    """The meta blob of ``--blob-inline-meta --features blob-toc``: the sections pack writes after a layer's
    chunk data (blob.meta, blob.digest, image.boot, the ToC), here with no chunk data before them."""
    import io

    from .pack import SectionWriter, write_boot_and_toc, write_meta_sections

    buf = io.BytesIO()
    out = SectionWriter(buf)
    entries = write_meta_sections(out, stored, header, ci_comp, ci_data, digests) if ci_data else []
    write_boot_and_toc(out, boot, entries)
    out.flush()
    return buf.getvalue()


def pack_ref(source: str, output: str, chunk_size: int | None = None, inline: bool = False) -> dict:
    """``pack --type targz-ref``: the bootstrap to ``output``, the blob.meta beside it named by its sha256
    (both written to temporary files and renamed, the blob.meta first: the bootstrap names it); ``inline``:
    the meta blob holding both to ``output``."""
    from .fsutil import atomic_output

    cs = chunk_size or DEFAULT_CHUNK_SIZE
    if cs & (cs - 1) or not rafs_v6.MIN_CHUNK_SIZE <= cs <= rafs_v6.MAX_CHUNK_SIZE:
        raise UsageError(f"chunk size {cs:#x} must be a power of 2 from 0x1000 to 0x1000000")
    if not os.path.isfile(source):
        raise UsageError(f"{source}: no such file (pack --type targz-ref takes a .tar.gz layer)")
    ref = build(source, cs, inline)
    meta_path = None
    if ref.chunks and not inline:
        meta_path = os.path.join(
            os.path.dirname(os.path.abspath(output)), hashlib.sha256(ref.meta).hexdigest()
        )
        with atomic_output(meta_path) as f:
            f.write(ref.meta)
    with atomic_output(output) as f:
        f.write(ref.meta if inline else ref.bootstrap)
    return {
        "path": output,
        "form": "meta blob" if inline else "bootstrap",
        "blob_id": ref.blob_id,
        "blob_size": ref.blob_size,
        "blob_meta": meta_path,
        "bootstrap_size": len(ref.bootstrap),
        "entries": ref.entries,
        "chunks": ref.chunks,
        "zran_contexts": ref.contexts,
        "gzip_members": ref.members,
    }
