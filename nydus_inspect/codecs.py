"""Chunk and entry compressors: none, zstd and lz4_block, with bounded output.

Nydus names its compressors with three different numberings (ToC entry flags,
blob.meta / blob-table ``compression_algo``, and RAFS super-block flag bits);
:class:`Compressor` maps between them. Decompression always knows the expected
size and never produces more, so hostile input cannot make us allocate without
bound.
"""

from __future__ import annotations

import enum
import io
import threading
import zlib
from array import array
from collections.abc import Callable, Iterator

import lz4.block
import zstandard

from .errors import FormatError

#: Largest uncompressed size we accept for any single decompression (1 GiB). Chunks are at most 16 MiB;
#: bootstraps of very large images stay well below this.
MAX_UNCOMPRESSED = 1 << 30
#: What iter_zstd hands over at a time.
STREAM_PIECE = 256 << 10


class Compressor(enum.Enum):
    NONE = "none"
    LZ4_BLOCK = "lz4_block"
    GZIP = "gzip"
    ZSTD = "zstd"

    # --- numberings used on disk -------------------------------------------------
    @property
    def algo(self) -> int:
        """``compress::Algorithm`` value (blob.meta header, blob table)."""
        return _ALGO[self]

    @property
    def toc_flag(self) -> int:
        return _TOC_FLAG[self]

    @property
    def super_flag(self) -> int:
        return _SUPER_FLAG[self]

    @classmethod
    def from_algo(cls, value: int) -> Compressor:
        for comp, algo in _ALGO.items():
            if algo == value:
                return comp
        raise ValueError(f"unknown compression algorithm {value}")

    @classmethod
    def from_toc_flag(cls, value: int) -> Compressor:
        for comp, flag in _TOC_FLAG.items():
            if flag == value:
                return comp
        raise ValueError(f"unknown ToC compression flag {value:#x}")

    @classmethod
    def parse(cls, name: str) -> Compressor:
        try:
            return cls(name)
        except ValueError:
            raise ValueError(f"unknown compressor {name!r} (choose none, zstd or lz4_block)") from None


_ALGO = {Compressor.NONE: 0, Compressor.LZ4_BLOCK: 1, Compressor.GZIP: 2, Compressor.ZSTD: 3}
_TOC_FLAG = {Compressor.NONE: 0x1, Compressor.ZSTD: 0x2, Compressor.LZ4_BLOCK: 0x4}
_SUPER_FLAG = {Compressor.NONE: 0x1, Compressor.LZ4_BLOCK: 0x2, Compressor.GZIP: 0x40, Compressor.ZSTD: 0x80}

ZSTD_LEVEL = 3
_local = threading.local()


def _zstd_compressor() -> zstandard.ZstdCompressor:
    # zstandard objects are not thread-safe; the packer compresses from a thread pool.
    comp = getattr(_local, "zc", None)
    if comp is None:
        comp = _local.zc = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return comp


def zstd_compressobj(size: int):
    """A zstd compressor fed a piece at a time (``compress(piece)``, then ``flush()``), for input of ``size``
    bytes too large to hold at once; its frame is as valid as :func:`compress`'s, not the same bytes."""
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj(size=size)


def _zstd_decompressor() -> zstandard.ZstdDecompressor:
    dec = getattr(_local, "zd", None)
    if dec is None:
        dec = _local.zd = zstandard.ZstdDecompressor()
    return dec


class _LibZstd:
    """The system libzstd through ctypes. ``decode`` (``ZSTD_decompress``) lets go of the GIL while it runs:
    python-zstandard holds it, so threads decoding chunks (unpack, diff, mount, verify) would otherwise run
    one at a time and stall the thread that answers requests. The quick calls (``is_error``,
    ``frame_size``) go through a ``PyDLL`` handle, which keeps the GIL: they take a microsecond, and giving
    the GIL away for each would make a thread wait for it again behind a busy main thread."""

    def __init__(self) -> None:
        import ctypes

        self.ctypes = ctypes
        self.ok = False
        name = _find_libzstd(ctypes)
        if not name:
            return
        try:
            free, held = ctypes.CDLL(name), ctypes.PyDLL(name)
            size_t, ptr = ctypes.c_size_t, ctypes.c_void_p
            self.decode = free.ZSTD_decompress
            self.decode.restype, self.decode.argtypes = size_t, [ptr, size_t, ptr, size_t]
            self.is_error = held.ZSTD_isError
            self.is_error.restype, self.is_error.argtypes = ctypes.c_uint, [size_t]
            self.frame_size = held.ZSTD_findFrameCompressedSize
            self.frame_size.restype, self.frame_size.argtypes = size_t, [ptr, size_t]
            self.ok = True
        except (OSError, AttributeError):
            pass

    def decompress(self, data, size: int) -> bytearray | None:
        """Exactly ``size`` bytes, or None when that is not what ``data`` holds (or there is no libzstd).

        Decoded into a bytearray (a buffer that may be written), never into an immutable bytes object."""
        if not self.ok:
            return None
        src = bytes(data)
        if self.frame_size(src, len(src)) != len(src):
            return None  # not exactly one frame: anything after it is for the checked path to refuse
        out = bytearray(size)
        dst = (self.ctypes.c_char * size).from_buffer(out)
        n = self.decode(dst, size, src, len(src))
        del dst  # the bytearray may be resized again once no ctypes view holds it
        if self.is_error(n) or n != size:
            return None
        return out


def _find_libzstd(ctypes) -> str | None:
    """The library's soname when the dynamic loader finds it directly; else ask ctypes.util, which runs
    ldconfig in a subprocess (milliseconds that a short command would notice)."""
    try:
        ctypes.CDLL("libzstd.so.1")
        return "libzstd.so.1"
    except OSError:
        import ctypes.util

        return ctypes.util.find_library("zstd")


_libzstd: _LibZstd | None = None
#: Decompressed sizes from which zstd runs without the GIL.
UNLOCKED_MIN = 256 << 10
_libzstd_lock = threading.Lock()


def _lib() -> _LibZstd:
    global _libzstd
    if _libzstd is None:
        with _libzstd_lock:
            if _libzstd is None:
                _libzstd = _LibZstd()
    return _libzstd


def _zstd_unlocked(data, size: int) -> bytearray | None:
    return _lib().decompress(data, size)


#: Largest window a streaming decompressor accepts by default (ZSTD_WINDOWLOG_LIMIT_DEFAULT): the limit
#: :func:`decompress` meets for chunks below UNLOCKED_MIN.
_STREAM_WINDOW_MAX = 1 << 27


def zstd_frames(src: bytes, frames: list[tuple[int, int, int]], out=None) -> list | None:
    """The frames ``(offset in src, stored size, content size)`` decoded: one buffer per frame, or None when any
    frame is not exactly what its tuple says (or there is no libzstd); the caller then decodes them one by one
    with :func:`decompress`, which says what is wrong.

    The frames must tile a range of ``src`` in order, and be all below UNLOCKED_MIN or all from it on: each
    group is decoded by the zstd that :func:`decompress` uses for it (the bundled one of python-zstandard, in
    one call for the run; the system libzstd, into ``out``, a writable buffer of the sum of the content
    sizes), without the GIL, and on success is exactly what :func:`decompress` gives frame by frame.
    """
    fr = _lib()
    if not fr.ok or not frames or not isinstance(src, bytes):
        return None
    big = frames[0][2] >= UNLOCKED_MIN
    view = memoryview(src)
    base = fr.ctypes.cast(fr.ctypes.c_char_p(src), fr.ctypes.c_void_p).value
    start = pos = frames[0][0]
    total = 0
    try:
        for off, stored, size in frames:
            if off != pos or stored <= 0 or not 0 < size <= MAX_UNCOMPRESSED or off + stored > len(src):
                return None
            if (size >= UNLOCKED_MIN) != big or fr.frame_size(base + off, stored) != stored:
                return None
            frame = view[off : off + stored]
            if zstandard.frame_content_size(frame) != size:
                return None
            if not big and zstandard.get_frame_parameters(frame).window_size > _STREAM_WINDOW_MAX:
                return None
            pos += stored
            total += size
    except zstandard.ZstdError:
        return None
    if not big:
        # python-zstandard's batch call: one C loop over the frames, each checked to decode to its size.
        segments = array("Q")
        for off, stored, _ in frames:
            segments.extend((off, stored))
        sizes = array("Q", [size for _, _, size in frames])
        try:
            got = _zstd_decompressor().multi_decompress_to_buffer(
                zstandard.BufferWithSegments(src, segments.tobytes()),
                decompressed_sizes=sizes.tobytes(),
                threads=1,
            )
        except zstandard.ZstdError:
            return None
        if len(got) != len(frames):
            return None
        parts = [memoryview(got[i]) for i in range(len(frames))]
        if any(len(p) != size for p, (_, _, size) in zip(parts, frames)):
            return None
        return parts
    if out is None:
        out = bytearray(total)
    elif len(out) != total:
        raise ValueError(f"output buffer of {len(out)} bytes for {total} bytes of frames")
    dst = (fr.ctypes.c_char * total).from_buffer(out)
    n = fr.decode(dst, total, base + start, pos - start)
    del dst
    if fr.is_error(n) or n != total:
        return None
    view = memoryview(out)
    parts = []
    at = 0
    for _, _, size in frames:
        parts.append(view[at : at + size])
        at += size
    return parts


def compress(data: bytes, comp: Compressor) -> bytes:
    """Compress ``data`` as nydus does: a zstd frame or a raw LZ4 block (no size prefix)."""
    if comp is Compressor.NONE:
        return bytes(data)
    if comp is Compressor.ZSTD:
        return _zstd_compressor().compress(data)
    if comp is Compressor.LZ4_BLOCK:
        return lz4.block.compress(data, store_size=False)
    raise ValueError(f"compressor {comp.value} cannot be used for writing")


def compress_if_smaller(data: bytes, comp: Compressor) -> tuple[bytes, bool]:
    """Return ``(stored_bytes, compressed)``: the compressed form only when strictly smaller."""
    if comp is Compressor.NONE or not data:
        return bytes(data), False
    return _smaller(data, compress(data, comp))


def compress_many_if_smaller(datas: list, comp: Compressor) -> list[tuple[bytes, bool]]:
    """:func:`compress_if_smaller` of each (bytes-like); zstd ones in one call that leaves the GIL once
    (python-zstandard's batch call makes the frames ``compress`` makes)."""
    if comp is not Compressor.ZSTD or len(datas) < 2:
        return [compress_if_smaller(d, comp) for d in datas]
    got = _zstd_compressor().multi_compress_to_buffer(datas, threads=0)
    return [_smaller(d, got[i].tobytes()) for i, d in enumerate(datas)]


def _smaller(data, packed: bytes) -> tuple[bytes, bool]:
    return (packed, True) if len(packed) < len(data) else (bytes(data), False)


def decompress_zstd_to(
    data, size: int, write: Callable[[bytes], object], what: str = "data", offset=None
) -> None:
    """Decode zstd ``data`` (bytes, or a reader of them) into exactly ``size`` bytes handed to ``write`` a
    piece at a time, or raise FormatError naming ``what``: for output too large to hold in memory beside its
    other copies."""
    for piece in iter_zstd(data, size, what, offset):
        write(piece)


def iter_zstd(data, size: int, what: str = "data", offset=None) -> Iterator[bytes]:
    """The pieces of zstd ``data`` (bytes, or a reader of them) decoded (exactly ``size`` bytes in all), or
    FormatError naming ``what``."""
    if size < 0 or size > MAX_UNCOMPRESSED:
        raise FormatError(
            what, f"uncompressed size over the {MAX_UNCOMPRESSED} byte limit", offset=offset, value=size
        )
    total = 0
    try:
        source = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
        with zstandard.ZstdDecompressor().stream_reader(source, read_across_frames=True) as rd:
            while True:
                piece = rd.read(min(STREAM_PIECE, size + 1 - total))  # one byte past size tells excess
                if not piece:
                    break
                total += len(piece)
                if total > size:
                    raise FormatError(what, f"zstd data decodes to more than {size} bytes", offset=offset)
                yield piece
    except zstandard.ZstdError as exc:
        raise FormatError(what, f"zstd data does not decode: {exc}", offset=offset) from None
    if total != size:
        raise FormatError(
            what, f"zstd data decodes to {total} bytes, expected {size}", offset=offset, value=total
        )


def decompress(
    data: bytes,
    comp: Compressor,
    size: int,
    what: str = "data",
    offset: int | None = None,
    *,
    as_bytes: bool = False,
) -> bytes:
    """Decompress ``data`` into exactly ``size`` bytes or raise FormatError naming ``what``. Large zstd data
    comes back as a bytearray (decoded without the GIL into a buffer of ours), the rest as bytes; with
    ``as_bytes``, zstd data is decoded with the GIL straight into the bytes returned (for data kept as bytes,
    such as a bootstrap: making bytes of the bytearray would hold both, twice its size, at once)."""
    if size < 0 or size > MAX_UNCOMPRESSED:
        raise FormatError(
            what, f"uncompressed size over the {MAX_UNCOMPRESSED} byte limit", offset=offset, value=size
        )
    try:
        if comp is Compressor.NONE:
            out = bytes(data)
        elif comp is Compressor.ZSTD:
            if size and zstandard.frame_content_size(data) == size:
                # The frame says exactly what we expect (zstd checks that claim while decoding): decode it in
                # one call; anything after it still counts towards the bound.
                if as_bytes:
                    out = _zstd_decompressor().decompress(data, max_output_size=size, allow_extra_data=False)
                else:
                    # Large chunks go through libzstd without the GIL; for small ones its call costs more than
                    # it saves.
                    out = _zstd_unlocked(data, size) if size >= UNLOCKED_MIN else None
                if out is None:  # small, no libzstd, or bad data (the checked path below says what is wrong)
                    dobj = _zstd_decompressor().decompressobj()
                    out = dobj.decompress(data)
                    if dobj.unused_data:
                        raise FormatError(what, f"zstd data decodes to more than {size} bytes", offset=offset)
            else:
                # A stream reader bounds the output whatever the frame header claims.
                with zstandard.ZstdDecompressor().stream_reader(
                    io.BytesIO(data), read_across_frames=True
                ) as rd:
                    out = rd.read(size + 1) if size else rd.read(1)
        elif comp is Compressor.LZ4_BLOCK:
            if not size:  # an LZ4 block of nothing is one token byte; anything longer holds data
                if len(data) > 1:
                    raise FormatError(
                        what, "lz4_block data for an empty entry", offset=offset, value=len(data)
                    )
                out = b""
            else:
                out = lz4.block.decompress(bytes(data), uncompressed_size=size)
        elif comp is Compressor.GZIP:
            # A gzip member (an eStargz chunk) inflated to ``size`` bytes; what follows them in the member (the
            # next entry's tar header) is not the chunk's, so it is left undecoded.
            # (max_length 0 would mean no limit.)
            out = zlib.decompressobj(wbits=31).decompress(bytes(data), size) if size else b""
        else:
            raise FormatError(what, f"compressor {comp.value} is not supported for reading", offset=offset)
    except FormatError:
        raise
    except (zstandard.ZstdError, lz4.block.LZ4BlockError, zlib.error, ValueError, MemoryError) as exc:
        raise FormatError(what, f"{comp.value} data does not decode: {exc}", offset=offset) from None
    if len(out) > size:
        raise FormatError(what, f"{comp.value} data decodes to more than {size} bytes", offset=offset)
    if len(out) != size:
        raise FormatError(
            what,
            f"{comp.value} data decodes to {len(out)} bytes, expected {size}",
            offset=offset,
            value=len(out),
        )
    return out
