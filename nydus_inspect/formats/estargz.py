"""eStargz layers: the footer, the TOC (``stargz.index.json``) and its entries. Sans-I/O: callers read the
bytes, these functions check and decode them.

An eStargz layer is a gzip-compressed tar cut into many gzip members, so that each file's data (or each chunk of
a big file) starts a member of its own and can be inflated alone. After the last entry comes one member holding a
tar with the single file ``stargz.index.json`` (the TOC), and then a footer:

- eStargz footer (51 bytes): an empty gzip member whose header carries an extra field with the subfield ``SG``
  (22 bytes: the TOC member's offset as 16 hex digits, then ``STARGZ``);
- legacy stargz footer (47 bytes): the same, the 22 bytes being the whole extra field.

TOC entries (JSON objects) name a file (``name``, ``type``, attributes), and for data: ``offset`` (the gzip
member starting the file's data, or one chunk of it), ``chunkOffset``/``chunkSize`` (where in the file; a size
of 0 means up to the end), ``chunkDigest`` (sha256 of the chunk's bytes), ``digest`` (sha256 of the whole
file). Chunks after the first are entries of type ``chunk``. The TOC digest (the
``containerd.io/snapshot/stargz/toc.digest`` annotation) is the sha256 of the TOC JSON.

With a minimum chunk size (the writer's ``WithMinChunkSize``) the writer starts a new gzip member only once the
current one holds that many compressed bytes, so small files (and chunks) follow one another in one member,
their tar headers between them. Each such entry names the member's ``offset`` and its ``innerOffset``: where its
bytes start in the member's inflated output. :func:`group_members` gathers the data entries by member.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import json
import struct
import zlib
from dataclasses import dataclass, field

from ..errors import FormatError

FOOTER_SIZE = 51
LEGACY_FOOTER_SIZE = 47
TOC_TAR_NAME = "stargz.index.json"
#: Files the writer adds to mark where prioritised files end; not part of the layer's tree.
LANDMARKS = (".prefetch.landmark", ".no.prefetch.landmark")
#: The eStargz files of a layer's tar, as tree paths: nydus's tar builders leave these out of every tar they
#: read (targz-ref and estargz-ref alike), so that an eStargz layer indexed as a gzip has the TOC's tree.
SPECIAL_PATHS = frozenset(b"/" + name.encode() for name in (TOC_TAR_NAME, *LANDMARKS))
#: The largest TOC JSON we inflate (the stargz snapshotter's own limit on a TOC is in this range).
MAX_TOC_SIZE = 64 << 20
#: The most TOC entries we accept (each becomes objects in memory).
MAX_ENTRIES = 4_000_000
TYPES = ("dir", "reg", "symlink", "hardlink", "char", "block", "fifo", "chunk")
#: The most a single chunk may hold: nydus's own limit on a chunk (RAFS_MAX_CHUNK_SIZE).
MAX_CHUNK = 16 << 20


@dataclass(frozen=True)
class Footer:
    toc_offset: int
    size: int  # 51 or 47 (legacy)


def parse_footer(tail: bytes, blob_size: int) -> Footer:
    """The footer at the end of a blob of ``blob_size`` bytes; ``tail`` is its last FOOTER_SIZE bytes (or all
    of it when shorter). Raises FormatError naming what does not fit."""
    at = blob_size - len(tail)
    for size in (FOOTER_SIZE, LEGACY_FOOTER_SIZE):
        if len(tail) < size:
            continue
        foot = tail[len(tail) - size :]
        off = blob_size - size
        if foot[:4] != b"\x1f\x8b\x08\x04":
            continue
        (xlen,) = struct.unpack_from("<H", foot, 10)
        if size == FOOTER_SIZE:
            if xlen != 26 or foot[12:14] != b"SG" or struct.unpack_from("<H", foot, 14)[0] != 22:
                continue
            payload = foot[16:38]
        else:
            if xlen != 22:
                continue
            payload = foot[12:34]
        if payload[16:] != b"STARGZ":
            continue
        try:
            toc_offset = int(payload[:16].decode("ascii"), 16)
        except (UnicodeDecodeError, ValueError):
            raise FormatError(
                "estargz footer",
                "TOC offset is not 16 hex digits",
                offset=off + (16 if size == 51 else 12),
                value=bytes(payload[:16]),
            ) from None
        if toc_offset >= off:
            raise FormatError(
                "estargz footer",
                f"TOC offset {toc_offset} is not before the footer (at {off}; the blob is {blob_size} bytes)",
                offset=off,
                value=toc_offset,
            )
        return Footer(toc_offset, size)
    raise FormatError(
        "estargz footer", "no eStargz or stargz footer at the end of the blob", offset=max(at, 0)
    )


def is_estargz(tail: bytes, head: bytes, blob_size: int) -> bool:
    """Whether a blob (first bytes ``head``, last bytes ``tail``) looks like an eStargz layer."""
    if head[:2] != b"\x1f\x8b":
        return False
    try:
        parse_footer(tail, blob_size)
    except FormatError:
        return False
    return True


def inflate_toc(member: bytes, toc_offset: int, limit: int = MAX_TOC_SIZE) -> bytes:
    """The TOC JSON out of the gzip member that starts at ``toc_offset`` (``member``: its bytes, up to the
    footer): a tar whose first file is stargz.index.json. Bounded by ``limit``."""
    d = zlib.decompressobj(wbits=31)
    try:
        out = d.decompress(member, limit + 1024 + 1)
    except zlib.error as exc:
        raise FormatError("estargz TOC", f"gzip data does not inflate: {exc}", offset=toc_offset) from None
    if len(out) > limit + 1024:
        raise FormatError("estargz TOC", f"TOC larger than the {limit} byte limit", offset=toc_offset)
    if len(out) < 512:
        raise FormatError(
            "estargz TOC", "the TOC member holds no tar header", offset=toc_offset, value=len(out)
        )
    hdr = out[:512]
    name = hdr[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
    if name != TOC_TAR_NAME:
        raise FormatError(
            "estargz TOC", f"the TOC member's tar entry is not {TOC_TAR_NAME}", offset=toc_offset, value=name
        )
    raw_size = hdr[124:136].split(b"\0", 1)[0].strip()
    try:
        size = int(raw_size or b"0", 8)
    except ValueError:
        raise FormatError(
            "estargz TOC", "tar size field is not octal", offset=toc_offset, value=raw_size
        ) from None
    if size > limit:
        raise FormatError(
            "estargz TOC", f"TOC larger than the {limit} byte limit", offset=toc_offset, value=size
        )
    if len(out) < 512 + size:
        raise FormatError(
            "estargz TOC", f"the TOC is cut short: {len(out) - 512} of {size} bytes", offset=toc_offset
        )
    return bytes(out[512 : 512 + size])


@dataclass
class Entry:
    """One TOC entry, checked."""

    index: int
    name: str
    type: str
    size: int = 0
    mode: int = 0
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    link_name: str = ""
    dev_major: int = 0
    dev_minor: int = 0
    offset: int = 0
    inner_offset: int = 0
    chunk_offset: int = 0
    chunk_size: int = 0
    chunk_digest: bytes = b""
    digest: bytes = b""
    xattrs: dict[bytes, bytes] = field(default_factory=dict)

    @property
    def path(self) -> str:
        """The entry's name as a clean relative path ("" for the root)."""
        return clean(self.name)

    def to_json(self) -> dict:
        out: dict = {"index": self.index, "name": self.name, "type": self.type}
        if self.type in ("reg", "chunk"):
            out.update(offset=self.offset, chunk_offset=self.chunk_offset, chunk_size=self.chunk_size)
            if self.inner_offset:
                out["inner_offset"] = self.inner_offset
            if self.chunk_digest:
                out["chunk_digest"] = "sha256:" + self.chunk_digest.hex()
        if self.type == "reg":
            out["size"] = self.size
            if self.digest:
                out["digest"] = "sha256:" + self.digest.hex()
        if self.type != "chunk":
            out.update(mode=f"{self.mode & 0o7777:04o}", uid=self.uid, gid=self.gid, mtime=self.mtime)
        if self.link_name:
            out["link_name"] = self.link_name
        if self.type in ("char", "block"):
            out["dev"] = [self.dev_major, self.dev_minor]
        return out


@dataclass
class Toc:
    version: int
    entries: list[Entry]
    digest: bytes  # sha256 of the TOC JSON


def clean(name: str) -> str:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    return "/".join(parts)


def _sha256(text, what: str, index: int) -> bytes:
    if not isinstance(text, str) or not text.startswith("sha256:") or len(text) != 71:
        raise FormatError("estargz TOC", f"entry {index}: {what} is not sha256:<64 hex digits>", value=text)
    try:
        return bytes.fromhex(text[7:])
    except ValueError:
        raise FormatError(
            "estargz TOC", f"entry {index}: {what} is not sha256:<64 hex digits>", value=text
        ) from None


def _int(obj: dict, key: str, index: int, limit: int = 1 << 63) -> int:
    value = obj.get(key, 0)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < limit:
        raise FormatError(
            "estargz TOC", f"entry {index}: {key} is not an integer in [0, {limit})", value=value
        )
    return value


def _mtime(text, index: int) -> int:
    if not text:
        return 0
    if not isinstance(text, str):
        raise FormatError("estargz TOC", f"entry {index}: modtime is not a string", value=text)
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise FormatError("estargz TOC", f"entry {index}: modtime is not RFC 3339", value=text) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return int(when.timestamp())


def parse_toc(data: bytes, blob_size: int, toc_offset: int) -> Toc:
    """The TOC JSON checked: version 1, known entry types, every data offset inside the blob's data (before
    ``toc_offset``), digests well formed, chunks in order and without gaps."""
    digest = hashlib.sha256(data).digest()
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise FormatError("estargz TOC", f"not JSON: {exc}", offset=toc_offset) from None
    if not isinstance(doc, dict):
        raise FormatError("estargz TOC", "not a JSON object", offset=toc_offset)
    version = doc.get("version")
    if version != 1:
        raise FormatError(
            "estargz TOC", "unsupported TOC version (only 1 is known)", offset=toc_offset, value=version
        )
    raw = doc.get("entries")
    if not isinstance(raw, list):
        raise FormatError("estargz TOC", "entries is not a list", offset=toc_offset)
    if len(raw) > MAX_ENTRIES:
        raise FormatError(
            "estargz TOC", f"more than {MAX_ENTRIES} entries", offset=toc_offset, value=len(raw)
        )
    entries: list[Entry] = []
    # The file each chunk entry continues, and where its next chunk must start.
    open_file: Entry | None = None
    next_at = 0
    for i, obj in enumerate(raw):
        if not isinstance(obj, dict):
            raise FormatError("estargz TOC", f"entry {i} is not a JSON object", offset=toc_offset)
        name, kind = obj.get("name"), obj.get("type")
        if not isinstance(name, str) or not name and kind != "dir":
            raise FormatError("estargz TOC", f"entry {i}: name is not a non-empty string", value=name)
        if kind not in TYPES:
            raise FormatError("estargz TOC", f"entry {i} ({name}): unknown type", value=kind)
        if "\0" in name or any(p == ".." for p in name.split("/")):
            raise FormatError("estargz TOC", f"entry {i}: name has a NUL or a '..' component", value=name)
        e = Entry(
            index=i,
            name=name,
            type=kind,
            size=_int(obj, "size", i),
            mode=_int(obj, "mode", i, 1 << 32),
            uid=_int(obj, "uid", i, 1 << 32),
            gid=_int(obj, "gid", i, 1 << 32),
            mtime=_mtime(obj.get("modtime"), i),
            link_name=obj.get("linkName") or "",
            dev_major=_int(obj, "devMajor", i, 1 << 32),
            dev_minor=_int(obj, "devMinor", i, 1 << 32),
            offset=_int(obj, "offset", i),
            inner_offset=_int(obj, "innerOffset", i),
            chunk_offset=_int(obj, "chunkOffset", i),
            chunk_size=_int(obj, "chunkSize", i),
        )
        if not isinstance(e.link_name, str):
            raise FormatError(
                "estargz TOC", f"entry {i} ({name}): linkName is not a string", value=e.link_name
            )
        if kind in ("symlink", "hardlink") and not e.link_name:
            raise FormatError("estargz TOC", f"entry {i} ({name}): {kind} without linkName")
        if obj.get("chunkDigest"):
            e.chunk_digest = _sha256(obj["chunkDigest"], "chunkDigest", i)
        if obj.get("digest"):
            e.digest = _sha256(obj["digest"], "digest", i)
        xattrs = obj.get("xattrs") or {}
        if not isinstance(xattrs, dict):
            raise FormatError("estargz TOC", f"entry {i} ({name}): xattrs is not an object")
        for k, v in xattrs.items():
            try:
                e.xattrs[k.encode("utf-8", "surrogateescape")] = base64.b64decode(v, validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise FormatError(
                    "estargz TOC", f"entry {i} ({name}): xattr {k} is not base64", value=v
                ) from None
        if kind == "reg":
            if open_file is not None and next_at != open_file.size:
                raise FormatError(
                    "estargz TOC",
                    f"entry {i}: file {open_file.name} ends at {next_at} of its {open_file.size} bytes",
                )
            open_file, next_at = (e, 0) if e.size else (None, 0)
        if kind in ("reg", "chunk") and (kind == "chunk" or e.size):
            if kind == "chunk":
                if open_file is None or clean(name) != open_file.path:
                    raise FormatError("estargz TOC", f"entry {i} ({name}): a chunk of no file before it")
            assert open_file is not None
            if e.chunk_offset != next_at:
                raise FormatError(
                    "estargz TOC",
                    f"entry {i} ({name}): chunk at file offset {e.chunk_offset}, expected {next_at}",
                    value=e.chunk_offset,
                )
            size = e.chunk_size or open_file.size - e.chunk_offset
            if size <= 0 or e.chunk_offset + size > open_file.size or size > MAX_CHUNK:
                raise FormatError(
                    "estargz TOC", f"entry {i} ({name}): chunk size does not fit the file", value=size
                )
            e.chunk_size = size
            next_at = e.chunk_offset + size
            if e.offset >= toc_offset:
                raise FormatError(
                    "estargz TOC",
                    f"entry {i} ({name}): data offset {e.offset} is not before the TOC (at {toc_offset})",
                    value=e.offset,
                )
            if not e.chunk_digest:
                raise FormatError("estargz TOC", f"entry {i} ({name}): data without a chunkDigest")
            if kind == "reg" and next_at == open_file.size:
                open_file = None
        entries.append(e)
    if open_file is not None and next_at != open_file.size:
        raise FormatError(
            "estargz TOC", f"file {open_file.name} ends at {next_at} of its {open_file.size} bytes"
        )
    return Toc(version, entries, digest)


@dataclass
class Member:
    """One gzip member of the blob and the data entries inside it, in TOC order. A member lies between its
    ``offset`` and ``end``, the next member with data (or, for the last, the end of the blob: the member's own
    trailer says where it stops). An entry's bytes are ``chunk_size`` bytes from its ``inner_offset`` in the
    member's inflated output."""

    offset: int
    end: int
    entries: list[Entry]

    @property
    def need(self) -> int:
        """How much of the member's output its entries cover (what a reader inflates, at most)."""
        return max(e.inner_offset + e.chunk_size for e in self.entries)

    @property
    def shared(self) -> bool:
        """Whether an entry's data does not start the member: several entries in it, or one after tar
        headers. A reader then inflates the member and cuts the entry out, instead of inflating the entry's
        own member to its size."""
        return len(self.entries) > 1 or self.entries[0].inner_offset != 0


def group_members(data: list[Entry], end: int) -> list[Member]:
    """The data entries (TOC order, sizes checked by :func:`parse_toc`) grouped by gzip member; ``end``: where
    the last member's range stops. Members must follow one another in the blob, and inside a member the entries'
    bytes must follow one another without overlapping, as the writer lays them out (one pass over a member
    serves them all)."""
    out: list[Member] = []
    for e in data:
        if out and e.offset == out[-1].offset:
            prev = out[-1].entries[-1]
            if e.inner_offset < prev.inner_offset + prev.chunk_size:
                raise FormatError(
                    "estargz TOC",
                    f"entry {e.index} ({e.name}): innerOffset {e.inner_offset} lies inside the data of entry "
                    f"{prev.index} ({prev.inner_offset}+{prev.chunk_size}) in the gzip member at {e.offset}",
                    value=e.inner_offset,
                )
            out[-1].entries.append(e)
            continue
        if out and e.offset < out[-1].offset:
            prev = out[-1].entries[-1]
            raise FormatError(
                "estargz TOC",
                f"entry {e.index} ({e.name}): data offset {e.offset} is before that of entry {prev.index} "
                f"({prev.offset})",
                value=e.offset,
            )
        if out:
            out[-1].end = e.offset
        out.append(Member(e.offset, end, [e]))
    return out
