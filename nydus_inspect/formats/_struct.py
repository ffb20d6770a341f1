"""Declare an on-disk structure once, as a field table over ``struct.Struct``.

A :class:`Layout` knows each field's name, format and offset, so that parse
errors can say exactly which field of which structure at which absolute offset
is wrong. Layouts are little-endian and unpadded.

Parsers are sans-I/O: they take the bytes as ``buf``, which may be bytes, an
mmap, or anything else indexed and sliced as bytes are (chunks.source's
SourceBytes, reading an image where it is looked at). That last has no buffer
for ``struct.unpack_from`` or ``memoryview``: the parsers of EROFS images slice
first and unpack the slice.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from ..errors import FormatError


class Layout:
    """A fixed-size little-endian structure described by ``(name, format)`` pairs.

    Padding fields use a name starting with ``_`` and an ``x`` format; they are
    neither returned nor required when building.
    """

    def __init__(self, name: str, fields: Sequence[tuple[str, str]]) -> None:
        self.name = name
        self.fields = list(fields)
        self.struct = struct.Struct("<" + "".join(fmt for _, fmt in fields))
        self.size = self.struct.size
        self.offsets: dict[str, int] = {}
        self.names: list[str] = []
        pos = 0
        for fname, fmt in fields:
            self.offsets[fname] = pos
            pos += struct.calcsize("<" + fmt)
            if not fmt.endswith("x"):
                self.names.append(fname)
        assert pos == self.size, (name, pos, self.size)

    def unpack(self, buf: bytes | bytearray | memoryview, offset: int = 0) -> dict[str, object]:
        """Decode the structure at ``offset``; raise FormatError if it does not fit. ``buf`` need only be
        sliced as bytes are (a view of an image read where it is looked at has no buffer to unpack from)."""
        need(buf, offset, self.size, self.name)
        return dict(zip(self.names, self.struct.unpack(buf[offset : offset + self.size])))

    def pack(self, values: dict[str, object]) -> bytes:
        return self.struct.pack(*(values.get(n, 0) for n in self.names))

    def error(self, field: str, base: int, message: str, value: object = None) -> FormatError:
        """A FormatError for ``field`` of this structure placed at absolute offset ``base``."""
        return FormatError(self.name, message, field=field, offset=base + self.offsets[field], value=value)


def need(buf: bytes | bytearray | memoryview, offset: int, size: int, structure: str) -> None:
    """Raise FormatError unless ``buf[offset:offset+size]`` lies inside ``buf``."""
    if offset < 0 or size < 0 or offset + size > len(buf):
        raise FormatError(
            structure,
            f"truncated: needs {size} bytes but the data is {len(buf)} bytes long",
            offset=offset,
        )


def cstr(raw: bytes) -> bytes:
    """Bytes up to the first NUL (or all of them when there is none)."""
    end = raw.find(b"\0")
    return raw if end < 0 else raw[:end]


def round_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


class Record:
    """Mixin for dataclasses whose field names equal their Layout's field names.

    Subclasses set ``LAYOUT``; ``parse`` and ``build`` then come for free.
    """

    LAYOUT: Layout

    @classmethod
    def parse(cls, buf: bytes | bytearray | memoryview, offset: int = 0):
        return cls(**cls.LAYOUT.unpack(buf, offset))

    def build(self) -> bytes:
        return self.LAYOUT.pack(self.__dict__)


def flag_names(value: int, names: dict[int, str]) -> list[str]:
    """Spell out the set bits of ``value``; unknown bits appear as hex."""
    out = [name for bit, name in names.items() if value & bit]
    rest = value & ~sum(names)
    bit = 1
    while rest:
        if rest & bit:
            out.append(f"{bit:#x}")
            rest &= ~bit
        bit <<= 1
    return out
