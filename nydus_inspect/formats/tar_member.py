"""Headers of the members of an OCI layer tar: ustar, old GNU and PAX, decoded without I/O.

What the layer tar reader (``tarstream``) needs and nothing more: one 512-byte block becomes a
:class:`Header`; a PAX extended header's data becomes a dict of raw byte keys and values. Names stay
bytes from end to end, as a layer's paths are bytes. Every error names the field and the absolute
offset of the header it sits in.

Numeric fields are octal (NUL- or space-terminated) or, when their first byte is 0x80 or 0xff,
big-endian base-256 (positive or negative). The checksum is accepted as the unsigned or the signed
byte sum, as tar implementations have written both.
"""

from __future__ import annotations

import struct

from ..errors import FormatError
from ._struct import cstr
from .tar_header import BLOCK, USTAR_MAGIC

ZERO_BLOCK = bytes(BLOCK)
POSIX_MAGIC = b"ustar\x00"  # followed by version "00"; only this form has the 155-byte name prefix
#: Longest PAX extended header or GNU long name we read: far beyond any path (4 KiB) or the xattrs an
#: inode can hold (64 KiB), yet a forged size cannot make us allocate without bound.
MAX_META_DATA = 16 << 20

# Type flags.
REGULAR = (b"0", b"\0", b"7")  # regular, old regular, contiguous
HARDLINK = b"1"
SYMLINK = b"2"
CHAR = b"3"
BLOCK_DEV = b"4"
DIRECTORY = b"5"
FIFO = b"6"
PAX_LOCAL = b"x"
PAX_GLOBAL = b"g"
GNU_LONGNAME = b"L"
GNU_LONGLINK = b"K"
GNU_SPARSE = b"S"

_FIELDS = struct.Struct("100s8s8s8s12s12s8sc100s6s2s32s32s8s8s155s")
_MAX7 = 0o7777777
_MAX11 = 0o77777777777
_SIGNED = struct.Struct("512b")
# build_ustar's pieces: mode, uid, gid (8 bytes each), size and mtime (12 each); the device numbers; the empty
# uname and gname; the empty prefix and the padding to 512 bytes.
_NUMBERS = b"%07o\0%07o\0%07o\0%011o\0%011o\0"
_DEVICE = b"%07o\0%07o\0"
_NO_DEVICE = bytes(16)
_NO_OWNERS = bytes(64)
_NO_PREFIX = bytes(167)
_FIXED_SUM = 8 * ord(" ") + sum(USTAR_MAGIC)


class Header:
    """One decoded header block; ``offset`` is where it starts in the tar."""

    __slots__ = (
        "name",
        "mode",
        "uid",
        "gid",
        "size",
        "mtime",
        "type",
        "linkname",
        "devmajor",
        "devminor",
        "offset",
    )

    def __init__(
        self,
        name: bytes,
        mode: int,
        uid: int,
        gid: int,
        size: int,
        mtime: int,
        type: bytes,
        linkname: bytes,
        devmajor: int,
        devminor: int,
        offset: int,
    ) -> None:
        self.name = name
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.size = size
        self.mtime = mtime
        self.type = type
        self.linkname = linkname
        self.devmajor = devmajor
        self.devminor = devminor
        self.offset = offset

    @property
    def data_blocks(self) -> int:
        """Bytes the member's data occupies after its header, padding included."""
        return -(-self.size // BLOCK) * BLOCK


def number(raw: bytes, field: str, offset: int) -> int:
    """A numeric header field: octal text, or base-256 when the first byte is 0x80 (or 0xff: negative)."""
    lead = raw[0] if raw else 0
    if lead == 0x80:
        return int.from_bytes(raw[1:], "big")
    if lead == 0xFF:
        return int.from_bytes(raw, "big", signed=True)
    text = raw.split(b"\0", 1)[0]
    try:
        return int(text, 8)  # int() itself ignores surrounding spaces
    except ValueError:
        if not text.strip(b" "):
            return 0
        raise FormatError(
            "tar header", "not an octal number", field=field, offset=offset, value=raw
        ) from None


def parse_header(block: bytes, offset: int) -> Header:
    """Decode one non-zero 512-byte header block found at ``offset``; raise FormatError if it is not one."""
    if len(block) != BLOCK:
        raise FormatError("tar header", f"truncated: {len(block)} of {BLOCK} bytes", offset=offset)
    (
        name,
        mode,
        uid,
        gid,
        size,
        mtime,
        chksum,
        typeflag,
        linkname,
        magic,
        _version,
        _uname,
        _gname,
        devmajor,
        devminor,
        prefix,
    ) = _FIELDS.unpack_from(block)
    try:
        # The usual case, zero-padded octal ending in NUL or space, in one pass. Anything else (base-256,
        # text after a NUL, an empty field) is read by number(), in the order that names the first bad field.
        stored = int(chksum.rstrip(b" \0"), 8)
        values: tuple | None = (
            int(mode.rstrip(b" \0"), 8),
            int(uid.rstrip(b" \0"), 8),
            int(gid.rstrip(b" \0"), 8),
            int(size.rstrip(b" \0"), 8),
            int(mtime.rstrip(b" \0"), 8),
        )
    except ValueError:
        stored = number(chksum, "chksum", offset + 148)
        values = None
    unsigned = sum(block) - sum(block[148:156]) + 256
    if stored != unsigned:
        signed = sum(_SIGNED.unpack(block)) - sum(_SIGNED.unpack(block)[148:156]) + 256
        if stored != signed:
            raise FormatError(
                "tar header",
                f"bad checksum (stored {stored}, computed {unsigned})",
                field="chksum",
                offset=offset + 148,
            )
    if values is None:
        data_size = number(size, "size", offset + 124)
        if data_size >= 0:
            values = (
                number(mode, "mode", offset + 100),
                number(uid, "uid", offset + 108),
                number(gid, "gid", offset + 116),
                data_size,
                number(mtime, "mtime", offset + 136),
            )
    else:
        data_size = values[3]
    if data_size < 0:
        raise FormatError("tar header", "negative size", field="size", offset=offset + 124, value=data_size)
    name = cstr(name)
    if magic == POSIX_MAGIC:
        prefix = cstr(prefix)
        if prefix and typeflag not in (GNU_LONGNAME, GNU_LONGLINK, GNU_SPARSE):
            name = prefix + b"/" + name
    if typeflag == b"\0" and name.endswith(b"/"):
        typeflag = DIRECTORY  # old (v7) tars mark a directory by its trailing slash
    device = typeflag in (CHAR, BLOCK_DEV)  # the device fields mean nothing for other types
    return Header(
        name,
        values[0],
        values[1],
        values[2],
        data_size,
        values[4],
        typeflag,
        cstr(linkname),
        number(devmajor, "devmajor", offset + 329) if device else 0,
        number(devminor, "devminor", offset + 337) if device else 0,
        offset,
    )


def parse_pax(data: bytes, offset: int) -> dict[bytes, bytes]:
    """The records of a PAX extended header's data (``"<len> <key>=<value>\\n"`` each), in order.

    ``offset`` is where the data starts in the tar, for messages. Trailing NUL padding is allowed.
    """
    out: dict[bytes, bytes] = {}
    pos = 0
    end = len(data)
    while pos < end:
        if data[pos] == 0 and not data[pos:].strip(b"\0"):
            break
        space = data.find(b" ", pos, pos + 21)
        length_text = data[pos:space] if space > pos else b""
        if not length_text.isdigit():
            raise FormatError(
                "tar PAX header",
                "a record does not start with its decimal length",
                offset=offset + pos,
                value=data[pos : pos + 20],
            )
        length = int(length_text)
        record = data[space + 1 : pos + length]
        if (
            length <= space - pos + 1
            or pos + length > end
            or not record.endswith(b"\n")
            or b"=" not in record
        ):
            raise FormatError(
                "tar PAX header",
                f"malformed record of length {length}",
                offset=offset + pos,
                value=data[pos : pos + min(length, 60)],
            )
        key, _, value = record[:-1].partition(b"=")
        out[key] = value
        pos += length
    return out


def build_ustar(
    name: bytes,
    *,
    mode: int,
    uid: int,
    gid: int,
    size: int,
    mtime: int,
    typeflag: bytes,
    linkname: bytes = b"",
    devmajor: int = 0,
    devminor: int = 0,
) -> bytes | None:
    """A plain POSIX ustar header, or None when the entry needs PAX (long or non-ASCII names, big numbers).

    Numbers are zero-padded octal ending in NUL; uname, gname and the prefix stay empty; the device
    fields are filled for character and block devices only.
    """
    if len(name) > 100 or len(linkname) > 100 or not name.isascii() or not linkname.isascii():
        return None
    if not (
        0 <= mode <= _MAX7
        and 0 <= uid <= _MAX7
        and 0 <= gid <= _MAX7
        and 0 <= size <= _MAX11
        and 0 <= mtime <= _MAX11
        and 0 <= devmajor <= _MAX7
        and 0 <= devminor <= _MAX7
    ):
        return None
    numbers = _NUMBERS % (mode, uid, gid, size, mtime)
    device = _DEVICE % (devmajor, devminor) if typeflag in (CHAR, BLOCK_DEV) else _NO_DEVICE
    # The checksum sums the header with its own field as eight spaces; only these parts are not zero.
    checksum = sum(name) + sum(numbers) + typeflag[0] + sum(linkname) + sum(device) + _FIXED_SUM
    return b"".join(
        (
            name.ljust(100, b"\0"),
            numbers,
            b"%06o\0 " % checksum,
            typeflag,
            linkname.ljust(100, b"\0"),
            USTAR_MAGIC,
            _NO_OWNERS,
            device,
            _NO_PREFIX,
        )
    )
