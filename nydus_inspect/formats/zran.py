"""zran: random access into a plain gzip layer (``nydus-image create --type targz-ref``), sans I/O.

A targz-ref blob's chunks live inside the original ``.tar.gz``. Its blob.meta (chunk info v2, ZRAN) appends to
the chunk-info array a table of *inflate contexts*, 40 bytes each, then the dictionaries they name:

====  ====  ============  ==========================================================================
  @   size  field         meaning
====  ====  ============  ==========================================================================
   0     8  in_offset     where the context's deflate data starts in the gzip file
   8     8  out_offset    where its output starts in the uncompressed tar
  16     8  dict_offset   where its window lies in the dictionary table (after the contexts)
  24     4  in_len        compressed bytes the context covers
  28     4  out_len       bytes it inflates to
  32     4  dict_size     window size (at most 32 KiB; 0 at the start of a gzip member)
  36     1  ctx_byte      the byte before in_offset, whose top ``ctx_bits`` bits start the data
  37     1  ctx_bits      0..7: how many bits of ctx_byte are still unread
  38     2  reserved
====  ====  ============  ==========================================================================

A zran chunk's v2 record says which context (data word, high 32 bits) and where in that context's output
(low 32 bits) its bytes start. :func:`inflate` decodes one context with nothing but :mod:`zlib`: the
resume point is mid-byte, and zlib has no ``inflatePrime``, so empty deflate blocks (which output nothing)
are put in front of the stored bits, as many bits of them as bring the gzip's own bytes onto a byte boundary
(shifting the bytes instead would misplace the byte alignment of stored blocks); then it is inflated raw
with the window as dictionary.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from ..errors import FormatError
from ._struct import Layout

#: Largest inflate window deflate can refer back into.
WINDOW = 1 << 15
#: Largest output of one context we inflate (nydus cuts them at twice the chunk size plus a chunk, and
#: chunks are at most 16 MiB).
MAX_OUT = 64 << 20

CONTEXT = Layout(
    "zran context",
    [
        ("in_offset", "Q"),
        ("out_offset", "Q"),
        ("dict_offset", "Q"),
        ("in_len", "I"),
        ("out_len", "I"),
        ("dict_size", "I"),
        ("ctx_byte", "B"),
        ("ctx_bits", "B"),
        ("_reserved", "2x"),
    ],
)
CONTEXT_SIZE = CONTEXT.size  # 40


@dataclass(frozen=True)
class ZranContext:
    """One inflate context: where it starts in the gzip (a byte and a bit), what it inflates to, its window."""

    index: int
    in_offset: int
    out_offset: int
    dict_offset: int
    in_len: int
    out_len: int
    dict_size: int
    ctx_byte: int
    ctx_bits: int
    window: bytes

    def to_json(self) -> dict:
        return {
            "index": self.index,
            "in_offset": self.in_offset,
            "in_len": self.in_len,
            "out_offset": self.out_offset,
            "out_len": self.out_len,
            "dict_offset": self.dict_offset,
            "dict_size": self.dict_size,
            "ctx_byte": self.ctx_byte,
            "ctx_bits": self.ctx_bits,
        }


def parse_table(data, offset: int, size: int, count: int, base: int = 0) -> list[ZranContext]:
    """The ``count`` contexts of the zran table at ``data[offset:offset+size]`` (the uncompressed chunk-info
    data; ``base`` is its absolute offset, for messages), each with its window, checked: the table and every
    window lie inside ``size``, bit positions are 0..7, windows at most 32 KiB, outputs at most MAX_OUT."""
    where = base + offset
    if offset < 0 or size < 0 or offset + size > len(data):
        raise FormatError(
            "zran table",
            f"{size} bytes at {offset} run past the {len(data)}-byte chunk-info data",
            field="s_ci_zran_size",
            offset=where,
            value=size,
        )
    if count * CONTEXT_SIZE > size:
        raise FormatError(
            "zran table",
            f"{count} contexts of {CONTEXT_SIZE} bytes do not fit its {size} bytes",
            field="s_ci_zran_count",
            offset=where,
            value=count,
        )
    dicts_at = offset + count * CONTEXT_SIZE
    dicts_size = size - count * CONTEXT_SIZE
    out: list[ZranContext] = []
    for i in range(count):
        at = offset + i * CONTEXT_SIZE
        f = CONTEXT.unpack(data, at)
        cbase = base + at
        if f["ctx_bits"] > 7:
            raise CONTEXT.error("ctx_bits", cbase, f"context {i}: bit position past 7", f["ctx_bits"])
        if f["ctx_bits"] and f["in_offset"] == 0:
            raise CONTEXT.error(
                "in_offset", cbase, f"context {i}: resumes mid-byte but has no byte before it", 0
            )
        if f["dict_size"] > WINDOW:
            raise CONTEXT.error("dict_size", cbase, f"context {i}: window larger than 32 KiB", f["dict_size"])
        if f["dict_offset"] + f["dict_size"] > dicts_size:
            raise CONTEXT.error(
                "dict_size",
                cbase,
                f"context {i}: window {f['dict_offset']}+{f['dict_size']} cut short by the "
                f"{dicts_size}-byte dictionary table",
                f["dict_size"],
            )
        if f["out_len"] > MAX_OUT:
            raise CONTEXT.error(
                "out_len", cbase, f"context {i}: output over the {MAX_OUT} byte limit", f["out_len"]
            )
        if f["out_len"] and not f["in_len"]:
            raise CONTEXT.error("in_len", cbase, f"context {i}: output from no input", 0)
        wat = dicts_at + f["dict_offset"]
        out.append(ZranContext(index=i, window=bytes(data[wat : wat + f["dict_size"]]), **f))
    return out


def build_table(contexts: list[ZranContext]) -> bytes:
    """The zran table bytes (contexts, then their windows in order), as nydus writes them."""
    head, dicts, dict_off = [], [], 0
    for c in contexts:
        head.append(
            CONTEXT.pack(
                {
                    "in_offset": c.in_offset,
                    "out_offset": c.out_offset,
                    "dict_offset": dict_off,
                    "in_len": c.in_len,
                    "out_len": c.out_len,
                    "dict_size": len(c.window),
                    "ctx_byte": c.ctx_byte,
                    "ctx_bits": c.ctx_bits,
                }
            )
        )
        dicts.append(c.window)
        dict_off += len(c.window)
    return b"".join(head) + b"".join(dicts)


def check_in_file(ctx: ZranContext, file_size: int) -> None:
    """Refuse a context whose compressed bytes lie past the end of the ``file_size``-byte gzip."""
    if ctx.in_offset + ctx.in_len > file_size:
        raise FormatError(
            "zran context",
            f"context {ctx.index}: {ctx.in_offset}+{ctx.in_len} runs past the end of the {file_size}-byte gzip",
            field="in_len",
            offset=ctx.in_offset,
            value=ctx.in_len,
        )


#: Bytes read past a context's end: inflate looks one symbol ahead when its output is full.
LOOKAHEAD = 16


def input_range(ctx: ZranContext, file_size: int) -> tuple[int, int]:
    """(offset, size) of the gzip bytes :func:`inflate` wants for ``ctx``: its own, plus a little lookahead."""
    end = min(file_size, ctx.in_offset + ctx.in_len + LOOKAHEAD)
    return ctx.in_offset, max(0, end - ctx.in_offset)


def inflate(ctx: ZranContext, raw: bytes) -> bytes:
    """``ctx``'s ``out_len`` bytes, from ``raw`` = the gzip bytes from ``ctx.in_offset`` (:func:`input_range`).
    Unchecked (the chunk digests decide); FormatError when the data does not inflate to out_len bytes."""
    # The data resumes mid-byte: zlib (without inflatePrime) starts on a byte boundary, so blocks that
    # output nothing are put in front, as many bits as make the unread bits of ctx_byte end on a byte
    # boundary, and the gzip's own bytes follow unshifted (stored blocks keep their byte alignment).
    buf = _resume_prefix(ctx.ctx_byte, ctx.ctx_bits) + bytes(raw)
    first = buf
    out = bytearray()
    window = ctx.window
    while len(out) < ctx.out_len:
        try:
            d = zlib.decompressobj(wbits=-15, zdict=window) if window else zlib.decompressobj(wbits=-15)
            out += d.decompress(buf, ctx.out_len - len(out))
        except zlib.error as exc:
            hdr = _gzip_header_size(raw, 8) if not out and buf is first else None
            if hdr is not None:
                # nydus-image 2.4.4 starts a context at the end of a member's last block when a chunk starts
                # there: what follows is the member's trailer and the next member, whose data the chunk is.
                buf, window = bytes(raw[8 + hdr :]), b""
                continue
            raise FormatError(
                "zran context",
                f"context {ctx.index}: gzip data does not inflate: {exc}",
                offset=ctx.in_offset,
            ) from None
        if len(out) >= ctx.out_len or not d.eof:
            break
        # A gzip member ended inside the context (a multi-member gzip, as pigz writes): skip its trailer and
        # the next member's header, and go on with a window-less inflate, as nydus does.
        end = len(buf) - len(d.unused_data)
        hdr = _gzip_header_size(buf, end + 8)
        if hdr is None:
            break
        buf, window = buf[end + 8 + hdr :], b""
    if len(out) != ctx.out_len:
        raise FormatError(
            "zran context",
            f"context {ctx.index}: inflates to {len(out)} bytes, expected {ctx.out_len}",
            offset=ctx.in_offset,
            value=len(out),
        )
    return bytes(out)


class _Bits:
    """A little-endian bit writer: fields LSB first, Huffman codes MSB first (RFC 1951)."""

    def __init__(self) -> None:
        self.value = self.count = 0

    def put(self, value: int, bits: int) -> None:
        self.value |= value << self.count
        self.count += bits

    def code(self, code: int, bits: int) -> None:
        for i in range(bits - 1, -1, -1):
            self.put((code >> i) & 1, 1)


def _empty_fixed(w: _Bits) -> None:
    """A non-final fixed-Huffman block holding only end-of-block: 10 bits, no output."""
    w.put(0, 1)
    w.put(1, 2)
    w.code(0, 7)


def _empty_dynamic(w: _Bits) -> None:
    """A non-final dynamic-Huffman block holding only end-of-block: 97 bits (odd), no output. Its codes: the
    code-length code has symbols 18 (1 bit), 1 and 17 (2 bits); literal/lengths are 256 zeros (18, 18, 17)
    and end-of-block with length 1; one distance code of length 1 (zlib takes single-code sets)."""
    w.put(0, 1)
    w.put(2, 2)
    w.put(0, 5)  # HLIT: 257 codes
    w.put(0, 5)  # HDIST: 1 code
    w.put(14, 4)  # HCLEN: 18 code-length code lengths, in the RFC's order
    lens = {18: 1, 1: 2, 17: 2}
    for sym in (16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1):
        w.put(lens.get(sym, 0), 3)
    w.code(0, 1)  # 18: 138 zeros
    w.put(138 - 11, 7)
    w.code(0, 1)  # 18: 108 zeros
    w.put(108 - 11, 7)
    w.code(0b11, 2)  # 17: 10 zeros
    w.put(10 - 3, 3)
    w.code(0b10, 2)  # end-of-block: length 1
    w.code(0b10, 2)  # the distance code: length 1
    w.code(0, 1)  # end-of-block


def _resume_prefix(ctx_byte: int, ctx_bits: int) -> bytes:
    """Deflate bytes that output nothing and end with the ``ctx_bits`` unread (high) bits of ``ctx_byte``,
    on a byte boundary: what to put before the gzip bytes of a context that resumes mid-byte."""
    if not ctx_bits:
        return b""
    need = (8 - ctx_bits) % 8
    w = _Bits()
    for fixed, dynamic in ((k, d) for d in (0, 1) for k in range(4)):
        if (10 * fixed + 97 * dynamic) % 8 == need:
            if dynamic:
                _empty_dynamic(w)
            for _ in range(fixed):
                _empty_fixed(w)
            break
    w.put(ctx_byte >> (8 - ctx_bits), ctx_bits)
    return w.value.to_bytes(w.count // 8, "little")


def _gzip_header_size(buf: bytes, pos: int) -> int | None:
    """Length of the gzip member header at ``buf[pos:]`` (RFC 1952), None if there is none."""
    if buf[pos : pos + 3] != b"\x1f\x8b\x08" or len(buf) < pos + 10:
        return None
    flg = buf[pos + 3]
    at = pos + 10
    if flg & 4:  # FEXTRA
        if len(buf) < at + 2:
            return None
        at += 2 + struct.unpack_from("<H", buf, at)[0]
    for bit in (8, 16):  # FNAME, FCOMMENT: NUL-terminated
        if flg & bit:
            end = buf.find(b"\0", at)
            if end < 0:
                return None
            at = end + 1
    if flg & 2:  # FHCRC
        at += 2
    return at - pos if at <= len(buf) else None
