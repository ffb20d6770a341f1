"""Decompress a gzip or zstd tar input as a stream, checking what its format lets us check.

A tar reader stops at the tar's end-of-archive blocks, long before a gzip trailer or the end of a zstd
frame; so a reader that trusts its decoder to check "at the end" checks nothing, and a flipped bit in the
data comes out as wrong file content. These readers check each gzip member's CRC32 and ISIZE and each zstd
frame's content checksum (when the frame has one) as they reach them, and refuse an input that ends inside
a member or a frame; :meth:`CheckedInput.read_to_end` takes a reader through whatever the tar reader left.

Output is produced a buffer at a time, never a whole member or frame: a small input that decompresses to
gigabytes costs time, not memory.
"""

from __future__ import annotations

import io
import zlib
from typing import BinaryIO

from .errors import FormatError
from .formats import framing

#: Compressed bytes read from the input at a time.
READ_SIZE = 1 << 16
#: Decompressed bytes the buffered reader asks for at a time.
BUFFER_SIZE = 1 << 20


class CheckedInput(io.BufferedReader):
    """The decompressed stream; errors are FormatErrors naming the input and the offset in its compressed bytes."""

    def __init__(self, raw: io.RawIOBase, name: str) -> None:
        super().__init__(raw, BUFFER_SIZE)
        self.input_name = name

    def read(self, n: int | None = -1) -> bytes:
        try:
            return super().read(n)
        except FormatError as exc:
            raise exc.located(self.input_name) from None

    def read_to_end(self) -> None:
        """Decompress (and so check) the rest of the input, discarding it."""
        while self.read(BUFFER_SIZE):
            pass


class _GzipRaw(io.RawIOBase):
    """gzip members one after another (RFC 1952); zero bytes after a member are padding, as gzip(1) allows."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.pos = 0  # offset in the input of self.buf[0]
        self.buf = b""
        self.eof_input = False
        self.state = "header"
        self.member = 0  # offset of the member being read
        self.d: zlib._Decompress | None = None
        self.crc = 0
        self.size = 0

    def readable(self) -> bool:
        return True

    def _fill(self, want: int = 1) -> bool:
        """Read more input until ``buf`` holds ``want`` bytes; False if the input ended first."""
        while len(self.buf) < want and not self.eof_input:
            more = self.f.read(READ_SIZE)
            if not more:
                self.eof_input = True
                break
            self.buf = self.buf + more if self.buf else more
        return len(self.buf) >= want

    def _consume(self, n: int) -> None:
        self.buf = self.buf[n:]
        self.pos += n

    def readinto(self, b) -> int:  # type: ignore[override]
        if not len(b):
            return 0  # zlib takes a max_length of 0 as no limit
        while True:
            if self.state == "data":
                if not self.buf and not self._fill():
                    raise FormatError(
                        "gzip member",
                        f"the input ends inside the compressed data of the member "
                        f"at offset {self.member}: the input is truncated",
                        offset=self.pos,
                    )
                try:
                    out = self.d.decompress(self.buf, len(b))
                except zlib.error as exc:
                    raise FormatError(
                        "gzip member",
                        f"the deflate data is corrupt ({exc}), in the bytes read from this offset on",
                        offset=self.pos,
                    ) from None
                rest = self.d.unused_data if self.d.eof else self.d.unconsumed_tail
                self._consume(len(self.buf) - len(rest))
                if out:
                    self.crc = zlib.crc32(out, self.crc)
                    self.size += len(out)
                if self.d.eof:
                    self.state = "trailer"
                if out:
                    b[: len(out)] = out
                    return len(out)
            elif self.state == "trailer":
                if not self._fill(framing.GZIP_TRAILER):
                    raise FormatError(
                        "gzip trailer",
                        f"the input ends inside the trailer of the member at "
                        f"offset {self.member}: the input is truncated",
                        offset=self.pos,
                    )
                framing.check_gzip_trailer(self.buf[: framing.GZIP_TRAILER], self.pos, self.crc, self.size)
                self._consume(framing.GZIP_TRAILER)
                self.state = "between"
            elif self.state == "between":
                while self._fill() and not self.buf.strip(b"\0"):
                    self._consume(len(self.buf))
                if not self.buf:
                    return 0
                zeros = len(self.buf) - len(self.buf.lstrip(b"\0"))
                self._consume(zeros)
                self.state = "header"
            else:  # header
                self.member = self.pos
                size = None
                want = 10
                while size is None:
                    have = self._fill(want)
                    size = framing.gzip_header_size(self.buf, self.pos)
                    if size is None:
                        if not have or self.eof_input:
                            raise FormatError(
                                "gzip header",
                                "the input ends inside a member header: the input is truncated",
                                offset=self.pos,
                            )
                        want = len(self.buf) + READ_SIZE
                self._consume(size)
                self.d = zlib.decompressobj(-zlib.MAX_WBITS)
                self.crc = self.size = 0
                self.state = "data"


class _Framed:
    """The zstd decoder's source: the compressed input, its framing followed on the way."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.frames = framing.ZstdFrames()

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n if n >= 0 else READ_SIZE)
        if data:
            self.frames.feed(data)
        else:
            self.frames.end()
        return data


class _ZstdRaw(io.RawIOBase):
    """zstd frames (and skippable frames) one after another, the framing walked alongside the decoder."""

    def __init__(self, f: BinaryIO) -> None:
        import zstandard

        source = _Framed(f)
        self.frames = source.frames
        self.error = zstandard.ZstdError
        self.reader = zstandard.ZstdDecompressor().stream_reader(
            source, read_size=READ_SIZE, read_across_frames=True
        )

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        try:
            return self.reader.readinto(b)
        except self.error as exc:
            frames = self.frames
            where = f"in or after the frame at offset {frames.frame_start}"
            if frames.checksum_at is not None and "checksum" in str(exc):
                where = (
                    f"the frame at offset {frames.frame_start}, its checksum at offset {frames.checksum_at}"
                )
            raise FormatError(
                "zstd frame",
                f"the data does not decode: {exc} ({where}; the input was read "
                "up to this offset): the input is corrupt",
                offset=frames.pos,
            ) from None


def open_gzip(f: BinaryIO, name: str) -> CheckedInput:
    """The decompressed stream of the gzip input ``f`` (``name`` is for messages)."""
    return CheckedInput(_GzipRaw(f), name)


def open_zstd(f: BinaryIO, name: str) -> CheckedInput:
    """The decompressed stream of the zstd input ``f`` (``name`` is for messages)."""
    return CheckedInput(_ZstdRaw(f), name)
