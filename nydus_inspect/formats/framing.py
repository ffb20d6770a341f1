"""The framing of compressed tar inputs: gzip member headers (RFC 1952) and zstd frame and block headers
(RFC 8878), decoded without I/O.

Decoders do the decompression; what they do not do for us is say where the framing ends. zlib stops
at the end of the deflate stream, and python-zstandard's stream reader returns a frame cut short (even a
frame missing its checksum) as if it were whole. So the reader of a compressed tar walks the framing
itself: it then knows where each gzip trailer sits (to check CRC32 and ISIZE against what was decoded),
and where each zstd frame ends (to refuse an input that ends inside one), and can name the offset of
whatever is wrong.
"""

from __future__ import annotations

import struct
import zlib

from ..errors import FormatError

GZIP_MAGIC = b"\x1f\x8b"
GZIP_DEFLATE = 8
GZIP_TRAILER = 8  # CRC32, then ISIZE (the size modulo 2^32), both little-endian
_FHCRC, _FEXTRA, _FNAME, _FCOMMENT = 0x02, 0x04, 0x08, 0x10
_GZIP_RESERVED = 0xE0
#: Longest gzip member header we accept: FEXTRA holds at most 65535 bytes; a file name or comment has no
#: limit in the format, but no real one comes near this, and a forged one must not make us read without end.
MAX_GZIP_HEADER = 1 << 20

ZSTD_MAGIC = 0xFD2FB528
ZSTD_SKIPPABLE_MASK = 0xFFFFFFF0
ZSTD_SKIPPABLE = 0x184D2A50
_BLOCK_RAW, _BLOCK_RLE, _BLOCK_COMPRESSED = 0, 1, 2
#: Block_Maximum_Size: no block holds more than 128 KiB of content.
ZSTD_MAX_BLOCK = 128 << 10


def gzip_header_size(buf: bytes, offset: int) -> int | None:
    """The length of the gzip member header at the start of ``buf`` (found at ``offset`` of the input), or
    None while ``buf`` is too short to tell; FormatError when it is not a gzip header we can read."""
    if len(buf) < 10:
        if buf[: len(GZIP_MAGIC)] != GZIP_MAGIC[: len(buf)]:
            raise FormatError("gzip header", "not a gzip member", field="magic", offset=offset, value=buf[:2])
        return None
    magic, method, flags = buf[:2], buf[2], buf[3]
    if magic != GZIP_MAGIC:
        raise FormatError("gzip header", "not a gzip member", field="magic", offset=offset, value=magic)
    if method != GZIP_DEFLATE:
        raise FormatError(
            "gzip header", "compression method is not deflate", field="CM", offset=offset + 2, value=method
        )
    if flags & _GZIP_RESERVED:
        raise FormatError(
            "gzip header", "reserved flag bits are set", field="FLG", offset=offset + 3, value=flags
        )
    pos = 10
    if flags & _FEXTRA:
        if len(buf) < pos + 2:
            return None
        pos += 2 + struct.unpack_from("<H", buf, pos)[0]
    for flag in (_FNAME, _FCOMMENT):
        if flags & flag:
            end = buf.find(b"\0", pos)
            if end < 0:
                if len(buf) > MAX_GZIP_HEADER:
                    raise FormatError(
                        "gzip header",
                        f"name or comment longer than {MAX_GZIP_HEADER} bytes",
                        offset=offset + pos,
                    )
                return None
            pos = end + 1
    if flags & _FHCRC:
        if len(buf) < pos + 2:
            return None
        stored = struct.unpack_from("<H", buf, pos)[0]
        computed = zlib.crc32(buf[:pos]) & 0xFFFF
        if stored != computed:
            raise FormatError(
                "gzip header",
                f"header CRC16 {stored:#06x} does not match the header ({computed:#06x})",
                field="CRC16",
                offset=offset + pos,
            )
        pos += 2
    if len(buf) < pos:
        return None
    return pos


def check_gzip_trailer(trailer: bytes, offset: int, crc: int, size: int) -> None:
    """Check a member's 8-byte trailer found at ``offset`` against the CRC32 and size of what it decoded to."""
    stored_crc, stored_size = struct.unpack("<II", trailer)
    if stored_crc != crc:
        raise FormatError(
            "gzip trailer",
            f"CRC32 {stored_crc:#010x} does not match the decompressed data "
            f"({crc:#010x}): the input is corrupt",
            field="CRC32",
            offset=offset,
        )
    if stored_size != size & 0xFFFFFFFF:
        raise FormatError(
            "gzip trailer",
            f"ISIZE {stored_size} does not match the decompressed size "
            f"({size} bytes, {size & 0xFFFFFFFF} modulo 2^32): the input is corrupt",
            field="ISIZE",
            offset=offset + 4,
        )


class ZstdFrames:
    """Follows the frames of a zstd stream as its bytes go by, block header by block header, without
    decoding anything: ``feed(data)`` each piece of the input in order, then ``end()``.

    It raises FormatError naming the offset for framing a decoder would also refuse (a bad magic, a reserved
    bit or block type), and ``end()`` raises if the input stops inside a frame. ``frame_start`` and
    ``checksum_at`` name the frame being read, for the messages of the decoder's own errors."""

    def __init__(self) -> None:
        self.pos = 0  # input offset of the first byte not yet fed
        self._pending = b""  # a header split between two pieces
        self._skip = 0  # bytes of block content (or skippable frame) still to pass over
        self._state = "magic"
        self._checksum = False
        self.frames = 0
        self.frame_start = 0
        self.checksum_at: int | None = None

    def _need(self) -> int:
        """Bytes of header the current state reads at once."""
        return {"magic": 4, "fhd": 1, "skippable": 4, "block": 3, "checksum": 4}.get(self._state, 0)

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        i = 0
        n = len(view)
        while i < n:
            if self._skip:
                step = min(self._skip, n - i)
                self._skip -= step
                i += step
                if not self._skip and self._state == "checksum-done":
                    self._state = "magic"
                continue
            if self._state == "frame-header":
                want = self._header_len - len(self._pending)
                take = bytes(view[i : i + want])
                self._pending += take
                i += len(take)
                if len(self._pending) == self._header_len:
                    self._pending = b""
                    self._state = "block"
                continue
            need = self._need()
            if self._pending or n - i < need:
                take = bytes(view[i : i + need - len(self._pending)])
                self._pending += take
                i += len(take)
                if len(self._pending) < need:
                    break
                head, self._pending = self._pending, b""
            else:
                head = bytes(view[i : i + need])
                i += need
            self._header(head, self.pos + i - need)
        self.pos += n

    def _header(self, head: bytes, at: int) -> None:
        state = self._state
        if state == "magic":
            magic = int.from_bytes(head, "little")
            if magic == ZSTD_MAGIC:
                self.frame_start = at
                self.checksum_at = None
                self._state = "fhd"
            elif magic & ZSTD_SKIPPABLE_MASK == ZSTD_SKIPPABLE:
                self._state = "skippable"
            else:
                raise FormatError(
                    "zstd frame",
                    "not a zstd frame (data after the last frame?)",
                    field="magic",
                    offset=at,
                    value=magic,
                )
        elif state == "skippable":
            self._skip = int.from_bytes(head, "little")
            self._state = "checksum-done" if self._skip else "magic"
        elif state == "fhd":
            fhd = head[0]
            if fhd & 0x08:
                raise FormatError(
                    "zstd frame header",
                    "the reserved bit is set",
                    field="Frame_Header_Descriptor",
                    offset=at,
                    value=fhd,
                )
            single = bool(fhd & 0x20)
            fcs = (0, 2, 4, 8)[fhd >> 6] or (1 if single else 0)
            self._checksum = bool(fhd & 0x04)
            self._header_len = (0 if single else 1) + (0, 1, 2, 4)[fhd & 0x03] + fcs
            self._state = "frame-header" if self._header_len else "block"
        elif state == "block":
            value = int.from_bytes(head, "little")
            last, kind, size = value & 1, (value >> 1) & 3, value >> 3
            if kind == 3:
                raise FormatError("zstd block header", "reserved block type", field="Block_Type", offset=at)
            if size > ZSTD_MAX_BLOCK:
                raise FormatError(
                    "zstd block header",
                    f"block of {size} bytes (at most {ZSTD_MAX_BLOCK})",
                    field="Block_Size",
                    offset=at,
                )
            self._skip = 1 if kind == _BLOCK_RLE else size
            if last:
                self.frames += 1
                if self._checksum:
                    self.checksum_at = at + 3 + self._skip
                    self._state = "checksum"
                else:
                    self._state = "checksum-done" if self._skip else "magic"
        elif state == "checksum":
            self._state = "magic"

    def end(self) -> None:
        """The input has ended: it must end between frames."""
        if self._state != "magic" or self._pending or self._skip:
            where = "its content checksum" if self._state == "checksum" else "a frame"
            raise FormatError(
                "zstd frame",
                f"the input ends inside {where} (the frame starts at offset "
                f"{self.frame_start}): the input is truncated",
                offset=self.pos,
            )
