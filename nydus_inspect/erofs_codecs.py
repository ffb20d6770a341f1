"""Decoding one EROFS physical cluster (pcluster) into its extent, with the output bounded by the extent.

What differs from nydus's chunk codecs (:mod:`.codecs`): a compressed pcluster is a whole number of
blocks whose stream is right-aligned, after leading zero bytes (0padding), and its algorithms are EROFS's
own framing of lz4 (a raw block), MicroLZMA (a raw LZMA1 stream whose first byte, always zero in LZMA,
carries the inverted lc/lp/pb properties), raw deflate and a zstd frame. An uncompressed (PLAIN) extent
is the pcluster's start, or with interlacing the block rotated by the extent's offset in its block.

A whole extent decodes to exactly its length; an extent that uses a part of what its pcluster decodes to
(``partial``: deduplicated extents) takes the first ``length`` bytes. Never more than ``length`` bytes
are produced, so a hostile pcluster cannot make us allocate beyond the 12 MiB an extent may have.

The writing side (``--erofs-compression``): :func:`parse_spec` reads a ``mkfs.erofs -z`` string and
:class:`Codec` encodes an extent into at most a given number of bytes, in each algorithm's EROFS framing
(MicroLZMA through liblzma's own encoder, which Python's lzma module does not expose).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import lzma
import zlib
from dataclasses import dataclass

import lz4.block
import zstandard

from .errors import FormatError, UsageError
from .formats.erofs_zmap import (
    ALG_DEFLATE,
    ALG_LZ4,
    ALG_LZMA,
    ALG_ZSTD,
    FMT_INTERLACED,
    FMT_SHIFTED,
    FORMAT_NAMES,
)

#: The largest LZMA dictionary EROFS allows (8 MiB); a bigger one in a stream is refused by liblzma.
LZMA_MAX_DICT = 8 << 20


def decode(
    raw: bytes, fmt: int, length: int, partial: bool, block_offset: int, offset: int, bs: int
) -> bytes:
    """The ``length`` bytes pcluster ``raw`` (at image ``offset``) holds, decoded with ``fmt``.
    ``block_offset``: where the extent starts in its block of ``bs`` bytes (for interlaced uncompressed
    extents)."""
    what = f"erofs {FORMAT_NAMES.get(fmt, fmt)} pcluster"
    if fmt == FMT_SHIFTED:
        if length > len(raw):
            raise FormatError(what, "extent larger than its pcluster", offset=offset, value=length)
        return bytes(raw[:length])
    if fmt == FMT_INTERLACED:
        if length > len(raw) or len(raw) > bs:
            raise FormatError(what, "interlaced extent larger than one block", offset=offset, value=length)
        head = min(bs - block_offset, length)
        return bytes(raw[block_offset : block_offset + head]) + bytes(raw[: length - head])
    # 0padding: the stream ends the pcluster; zeros before it are padding (a stream never starts with 0,
    # LZMA's first byte being replaced by MicroLZMA's inverted properties).
    margin = len(raw) - len(raw.lstrip(b"\0"))
    if margin >= len(raw):
        raise FormatError(what, "pcluster holds only zeros", offset=offset)
    src = bytes(raw[margin:])
    try:
        if fmt == ALG_LZ4:
            out = _lz4(src, length, partial)
        elif fmt == ALG_LZMA:
            out = _microlzma(src, length)
        elif fmt == ALG_DEFLATE:
            d = zlib.decompressobj(-15)
            out = d.decompress(src, length)
            if not partial and not d.eof:
                raise FormatError(what, "deflate stream does not end with the extent", offset=offset + margin)
        elif fmt == ALG_ZSTD:
            out = _zstd(src, length, partial)
        else:
            raise FormatError(what, "unknown compression algorithm", offset=offset, value=fmt)
    except (lz4.block.LZ4BlockError, lzma.LZMAError, zlib.error, zstandard.ZstdError) as exc:
        raise FormatError(what, f"does not decode: {exc}", offset=offset + margin) from None
    if len(out) != length:
        raise FormatError(
            what,
            f"decodes to {len(out)} bytes, the extent has {length}",
            offset=offset + margin,
            value=len(out),
        )
    return out


def _lz4(src: bytes, length: int, partial: bool) -> bytes:
    if not partial:
        return lz4.block.decompress(src, uncompressed_size=length)
    # A partial reference wants a prefix; lz4.block has no partial decode, so decode what the block holds,
    # bounded by the largest extent (the pcluster itself is at most 1 MiB).
    from .formats.erofs_zmap import PCLUSTER_MAX_DSIZE

    return lz4.block.decompress(src, uncompressed_size=PCLUSTER_MAX_DSIZE)[:length]


def _microlzma(src: bytes, length: int) -> bytes:
    props = src[0] ^ 0xFF
    if props >= 9 * 5 * 5:
        raise lzma.LZMAError(f"bad MicroLZMA properties byte {src[0]:#x}")
    lc, rest = props % 9, props // 9
    lp, pb = rest % 5, rest // 5
    filt = {"id": lzma.FILTER_LZMA1, "lc": lc, "lp": lp, "pb": pb, "dict_size": LZMA_MAX_DICT}
    d = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[filt])
    # The range coder's first byte is always zero in LZMA; MicroLZMA stores the properties there instead.
    return d.decompress(b"\0" + src[1:], max_length=length)


def _zstd(src: bytes, length: int, partial: bool) -> bytes:
    # A stream reader, not decompress(): the frame header's content size is not trusted for the allocation.
    with zstandard.ZstdDecompressor().stream_reader(src, read_across_frames=False) as r:
        out = r.read(length)
        if not partial and r.read(1):
            raise zstandard.ZstdError(f"frame decodes past the extent's {length} bytes")
    return out


# ---------------------------------------------------------------------------- writing

#: What ``-z`` names, as mkfs.erofs does: the algorithm, its level range and default (None: takes none).
ALGORITHMS: dict[str, tuple[int, range | None, int | None]] = {
    "lz4": (ALG_LZ4, None, None),
    "lz4hc": (ALG_LZ4, range(0, 13), 9),
    "lzma": (ALG_LZMA, range(0, 10), 6),  # and 100-109: the preset with liblzma's "extreme" flag
    "deflate": (ALG_DEFLATE, range(0, 10), 1),
    "zstd": (ALG_ZSTD, range(0, 23), 3),
}
LZMA_EXTREME = range(100, 110)
#: lz4's window: a match reaches at most this far back (the superblock's lz4 record says so to readers).
LZ4_MAX_DISTANCE = 65535
DEFLATE_WINDOW_BITS = 15


@dataclass(frozen=True)
class Codec:
    """One algorithm of a ``-z`` spec: its name as given, its EROFS algorithm number and level."""

    name: str
    alg: int
    level: int | None

    def __str__(self) -> str:
        return self.name if self.level is None else f"{self.name},{self.level}"

    def window(self, extent_max: int) -> int:
        """The dictionary a reader must hold for extents of up to ``extent_max`` bytes (a power of 2): each
        extent is compressed on its own, so no match reaches further back than its own start."""
        return max(1 << (extent_max - 1).bit_length(), 1 << 15)

    def config(self, extent_max: int, pcluster_blocks: int) -> dict[str, int]:
        """This algorithm's configuration record (see :data:`.formats.erofs_zmap.COMPR_CFGS`)."""
        if self.alg == ALG_LZ4:
            return {"max_distance": LZ4_MAX_DISTANCE, "max_pclusterblks": pcluster_blocks}
        if self.alg == ALG_LZMA:
            return {"dict_size": self.window(extent_max), "format": 0}
        if self.alg == ALG_DEFLATE:
            return {"windowbits": DEFLATE_WINDOW_BITS}
        from .formats.erofs_zmap import ZSTD_WINDOWLOG_BASE

        return {"format": 0, "windowlog": self.window(extent_max).bit_length() - 1 - ZSTD_WINDOWLOG_BASE}

    def encode(self, data: bytes, limit: int, extent_max: int) -> bytes | None:
        """``data`` compressed into at most ``limit`` bytes, or None when it does not fit. The stream never
        starts with a zero byte, since readers take leading zeros of a pcluster for padding (0padding)."""
        if self.alg == ALG_LZMA:
            return _microlzma_encode(data, limit, self.level, self.window(extent_max))
        if self.name == "lz4":
            out = lz4.block.compress(data, store_size=False)
        elif self.name == "lz4hc":
            out = lz4.block.compress(data, mode="high_compression", compression=self.level, store_size=False)
        elif self.alg == ALG_DEFLATE:
            c = zlib.compressobj(self.level, zlib.DEFLATED, -DEFLATE_WINDOW_BITS)
            out = c.compress(data) + c.flush()
        else:
            out = zstandard.ZstdCompressor(level=self.level).compress(data)
        if len(out) > limit or not out or out[0] == 0:
            # A raw deflate stream that opens with a stored, non-final block starts with a zero byte.
            return None
        return out


def parse_spec(spec: str) -> list[Codec]:
    """``ALG[,LEVEL][:ALG2[,LEVEL]]...`` (``LEVEL`` also as ``level=N``), as ``mkfs.erofs -z`` takes it."""
    if not spec:
        raise UsageError("--erofs-compression: empty (ALG[,LEVEL][:ALG2[,LEVEL]], e.g. lz4hc,12)")
    out = []
    for part in spec.split(":"):
        name, _, rest = part.partition(",")
        known = ALGORITHMS.get(name)
        if known is None:
            raise UsageError(
                f"--erofs-compression {spec!r}: unknown algorithm {name!r} (one of {', '.join(ALGORITHMS)})"
            )
        alg, levels, default = known
        level = default
        if rest:
            text = rest.removeprefix("level=")
            if not text.isdigit():
                raise UsageError(f"--erofs-compression {spec!r}: {name} level {rest!r} is not a number")
            level = int(text)
            if levels is None:
                raise UsageError(f"--erofs-compression {spec!r}: {name} takes no level (lz4hc does)")
            if level not in levels and not (alg == ALG_LZMA and level in LZMA_EXTREME):
                extra = ", or 100-109 for extreme" if alg == ALG_LZMA else ""
                raise UsageError(
                    f"--erofs-compression {spec!r}: {name} level {level} out of range "
                    f"({levels.start}-{levels.stop - 1}{extra})"
                )
        out.append(Codec(name, alg, level))
    if out[0].alg == ALG_LZMA:
        _liblzma()  # refused now, by name, rather than after reading the input
    return out


# MicroLZMA: liblzma's encoder of it (lzma_microlzma_encoder, liblzma 5.4 and later) writes a raw LZMA1 stream
# without an end marker, as much input as fits in the output buffer, with the properties byte in front;
# Python's lzma module only has the raw encoder, whose LZMA1 streams end with a marker EROFS readers refuse.
_LZMA_OK, _LZMA_STREAM_END, _LZMA_FINISH = 0, 1, 3
_LZMA_PRESET_EXTREME = 0x8000_0000


class _LzmaStream(ctypes.Structure):
    # lzma_stream's leading fields; the reserved tail (zeroed, as LZMA_STREAM_INIT) is over-allocated.
    _fields_ = [
        ("next_in", ctypes.c_void_p),
        ("avail_in", ctypes.c_size_t),
        ("total_in", ctypes.c_uint64),
        ("next_out", ctypes.c_void_p),
        ("avail_out", ctypes.c_size_t),
        ("total_out", ctypes.c_uint64),
        ("allocator", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
        ("_reserved", ctypes.c_byte * 128),
    ]


class _LzmaOptions(ctypes.Structure):
    # lzma_options_lzma's leading fields, filled by lzma_lzma_preset; the rest is reserved and zero.
    _fields_ = [
        ("dict_size", ctypes.c_uint32),
        ("preset_dict", ctypes.c_void_p),
        ("preset_dict_size", ctypes.c_uint32),
        ("lc", ctypes.c_uint32),
        ("lp", ctypes.c_uint32),
        ("pb", ctypes.c_uint32),
        ("mode", ctypes.c_int),
        ("nice_len", ctypes.c_uint32),
        ("mf", ctypes.c_int),
        ("depth", ctypes.c_uint32),
        ("_reserved", ctypes.c_byte * 128),
    ]


_LIBLZMA = None


def _liblzma():
    global _LIBLZMA
    if _LIBLZMA is None:
        lib = None
        for name in ("liblzma.so.5", ctypes.util.find_library("lzma")):
            try:
                lib = ctypes.CDLL(name) if name else None
            except OSError:
                continue
            if lib is not None:
                break
        if lib is None or not hasattr(lib, "lzma_microlzma_encoder"):
            raise UsageError(
                "--erofs-compression lzma: needs liblzma 5.4 or later (its MicroLZMA encoder), "
                "and this system's liblzma has none"
            )
        lib.lzma_lzma_preset.argtypes = [ctypes.POINTER(_LzmaOptions), ctypes.c_uint32]
        lib.lzma_microlzma_encoder.argtypes = [ctypes.POINTER(_LzmaStream), ctypes.POINTER(_LzmaOptions)]
        lib.lzma_code.argtypes = [ctypes.POINTER(_LzmaStream), ctypes.c_int]
        lib.lzma_end.argtypes = [ctypes.POINTER(_LzmaStream)]
        _LIBLZMA = lib
    return _LIBLZMA


def _microlzma_encode(data: bytes, limit: int, level: int, dict_size: int) -> bytes | None:
    lib = _liblzma()
    opts = _LzmaOptions()
    preset = level - 100 | _LZMA_PRESET_EXTREME if level >= 100 else level
    if lib.lzma_lzma_preset(ctypes.byref(opts), preset):
        raise UsageError(f"--erofs-compression lzma: liblzma has no preset {level}")
    opts.dict_size = dict_size
    strm = _LzmaStream()
    ret = lib.lzma_microlzma_encoder(ctypes.byref(strm), ctypes.byref(opts))
    if ret != _LZMA_OK:
        raise UsageError(f"--erofs-compression lzma: liblzma's MicroLZMA encoder did not start (error {ret})")
    try:
        src = ctypes.create_string_buffer(data, len(data))
        dst = ctypes.create_string_buffer(limit)
        strm.next_in, strm.avail_in = ctypes.addressof(src), len(data)
        strm.next_out, strm.avail_out = ctypes.addressof(dst), limit
        ret = lib.lzma_code(ctypes.byref(strm), _LZMA_FINISH)
        if ret != _LZMA_STREAM_END:
            raise UsageError(f"--erofs-compression lzma: liblzma's MicroLZMA encoder failed (error {ret})")
        # It stops where the output is full: the extent fits only if all of it went in.
        if strm.total_in != len(data):
            return None
        return dst.raw[: strm.total_out]
    finally:
        lib.lzma_end(ctypes.byref(strm))
