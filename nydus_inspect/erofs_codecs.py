"""Decoding one EROFS physical cluster (pcluster) into its extent, with the output bounded by the extent.

What differs from nydus's chunk codecs (:mod:`.codecs`): a compressed pcluster is a whole number of
blocks whose stream is right-aligned, after leading zero bytes (0padding), and its algorithms are EROFS's
own framing of lz4 (a raw block), MicroLZMA (a raw LZMA1 stream whose first byte, always zero in LZMA,
carries the inverted lc/lp/pb properties), raw deflate and a zstd frame. An uncompressed (PLAIN) extent
is the pcluster's start, or with interlacing the block rotated by the extent's offset in its block.

A whole extent decodes to exactly its length; an extent that uses a part of what its pcluster decodes to
(``partial``: deduplicated extents) takes the first ``length`` bytes. Never more than ``length`` bytes
are produced, so a hostile pcluster cannot make us allocate beyond the 12 MiB an extent may have.
"""

from __future__ import annotations

import lzma
import zlib

import lz4.block
import zstandard

from .errors import FormatError
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
