"""Seekable EROFS layers (containerd's ``ctr images convert --erofs-seekable``), sans I/O.

Format as proposed in containerd pull request 12703 (``internal/erofsutils/seekable``; not in containerd's
main branch as of its 2026-08-22 head): the EROFS image cut into chunks of a fixed size, each compressed as
an independent zstd frame and written back to back from offset 0; then one zstd skippable frame (magic
0x184D2A50..5F, u32 payload size) whose payload is the chunk table; then, optionally, one more skippable
frame holding a dm-verity superblock and hash tree over the uncompressed image. The chunk table, little
endian: magic 0xCDE4EC67 u32, version 1 u32, uncompressed size u64, chunk size u32, hash algorithm u8
(0 none, 1 SHA-512), 2 reserved zero bytes; then per chunk the file offset of its frame (u64) and, with
SHA-512, the 64-byte SHA-512 of the frame's stored bytes.

Nothing in the layer says where the chunk table is (containerd passes its offset in an annotation): without
that offset, :func:`parse` looks for it before the end of the file or before the dm-verity frame, and only
failing that walks the zstd frames from the start by their block headers (:func:`frame_end`), never decoding
them; every size met is checked against the file before it is used.

The encoding half (:func:`skippable_header`, :func:`table_payload`) builds the same structures from the same
definitions; the zstd frames themselves are the codec's business (``seekable_write``).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import FormatError

#: Where the chunk table's skippable frame starts (decimal), as the layer descriptor records it.
ANNOTATION_CHUNK_TABLE_OFFSET = "dev.containerd.erofs.zstd.chunk_table_offset"
#: The chunk table's SHA-512 (``sha512:<hex>`` of its payload): a skippable frame carries no checksum.
ANNOTATION_CHUNK_DIGEST = "dev.containerd.erofs.zstd.chunk_digest"
ZSTD_MAGIC = 0xFD2FB528
SKIPPABLE_MIN, SKIPPABLE_MAX = 0x184D2A50, 0x184D2A5F
TABLE_MAGIC = 0xCDE4EC67
TABLE_VERSION = 1
HASH_NONE, HASH_SHA512 = 0, 1
HASH_SIZES = {HASH_NONE: 0, HASH_SHA512: 64}
HEADER = struct.Struct("<IIQIBH")  # 23 bytes
ENTRY_OFFSET = struct.Struct("<Q")
SKIPPABLE_HEADER = struct.Struct("<II")
#: zstd caps a block at 128 KiB of content; a compressed block is never larger.
MAX_BLOCK = 128 << 10
#: The largest chunk this reader decodes at once (a frame's uncompressed bytes are held whole).
MAX_CHUNK = 64 << 20

Read = Callable[[int, int], bytes]


@dataclass(frozen=True)
class Frame:
    index: int
    offset: int  # where its zstd frame starts in the layer
    size: int  # stored bytes of the frame
    uncompressed_offset: int
    uncompressed_size: int
    checksum: bytes  # SHA-512 of the stored frame, or b""


@dataclass(frozen=True)
class Table:
    offset: int  # of the skippable frame holding it
    payload_size: int
    uncompressed_size: int
    chunk_size: int
    hash_algo: int
    frames: list[Frame]
    verity_offset: int | None  # of the dm-verity skippable frame, when there is one
    verity_size: int
    digest: bytes  # table_digest of the payload

    def to_json(self) -> dict:
        return {
            "chunk_table_offset": self.offset,
            "chunk_table_size": self.payload_size,
            "chunk_table_digest": f"sha512:{self.digest.hex()}",
            "uncompressed_size": self.uncompressed_size,
            "chunk_size": self.chunk_size,
            "hash": {HASH_NONE: "none", HASH_SHA512: "sha512"}[self.hash_algo],
            "frames": len(self.frames),
            "dm_verity_offset": self.verity_offset,
            "dm_verity_size": self.verity_size,
        }


def chunk_count(uncompressed_size: int, chunk_size: int) -> int:
    return -(-uncompressed_size // chunk_size)


def table_digest(payload: bytes) -> bytes:
    """The chunk table's digest, as containerd's ``dev.containerd.erofs.zstd.chunk_digest`` annotation records
    it (``sha512:<hex>``): a skippable frame carries no checksum of its own."""
    return hashlib.sha512(payload).digest()


def skippable_header(payload_size: int, magic: int = SKIPPABLE_MIN) -> bytes:
    """The 8 bytes before a skippable frame's payload (containerd writes the first magic of the range)."""
    if not SKIPPABLE_MIN <= magic <= SKIPPABLE_MAX:
        raise FormatError("zstd skippable frame", "magic outside 0x184D2A50..5F", value=magic)
    if not 0 <= payload_size <= 0xFFFFFFFF:
        raise FormatError(
            "zstd skippable frame", "a payload over 4 GiB does not fit its 32-bit size", value=payload_size
        )
    return SKIPPABLE_HEADER.pack(magic, payload_size)


def table_payload(
    uncompressed_size: int, chunk_size: int, hash_algo: int, entries: list[tuple[int, bytes]]
) -> bytes:
    """The chunk table (the payload of its skippable frame): the header, then each chunk's (frame offset,
    checksum) in order; checked as :func:`parse` checks what it reads, so nothing written here is refused
    there."""
    if hash_algo not in HASH_SIZES:
        raise FormatError("seekable erofs chunk table", "unknown hash algorithm", value=hash_algo)
    if not 0 < chunk_size <= MAX_CHUNK:
        raise FormatError("seekable erofs chunk table", "chunk size out of range", value=chunk_size)
    if len(entries) != chunk_count(uncompressed_size, chunk_size):
        raise FormatError(
            "seekable erofs chunk table",
            f"{len(entries)} entries for {chunk_count(uncompressed_size, chunk_size)} chunks",
            value=uncompressed_size,
        )
    out = bytearray(HEADER.pack(TABLE_MAGIC, TABLE_VERSION, uncompressed_size, chunk_size, hash_algo, 0))
    last = -1
    for i, (offset, checksum) in enumerate(entries):
        if offset <= last or len(checksum) != HASH_SIZES[hash_algo]:
            raise FormatError("seekable erofs chunk table", f"entry {i} out of order or of the wrong size")
        last = offset
        out += ENTRY_OFFSET.pack(offset)
        out += checksum
    return bytes(out)


def _u32(read: Read, off: int) -> int:
    return struct.unpack("<I", read(off, 4))[0]


def frame_end(read: Read, off: int, limit: int) -> int:
    """Where the zstd frame at ``off`` ends, from its header and block headers (nothing decoded)."""
    if off + 6 > limit:
        raise FormatError("zstd frame", "a frame header lies past the data frames", offset=off)
    head = read(off, 6)
    if struct.unpack_from("<I", head)[0] != ZSTD_MAGIC:
        raise FormatError("zstd frame", "no zstd frame magic where a chunk's frame starts", offset=off)
    fhd = head[4]
    if fhd & 0x08:
        raise FormatError("zstd frame", "reserved bit of the frame header descriptor is set", offset=off + 4)
    single = fhd >> 5 & 1
    fcs = (0, 2, 4, 8)[fhd >> 6] if fhd >> 6 else single
    pos = off + 5 + (0 if single else 1) + (0, 1, 2, 4)[fhd & 3] + fcs
    while True:
        if pos + 3 > limit:
            raise FormatError("zstd frame", "a block header lies past the data frames", offset=pos)
        b = read(pos, 3)
        bh = b[0] | b[1] << 8 | b[2] << 16
        last, btype, bsize = bh & 1, bh >> 1 & 3, bh >> 3
        if btype == 3:
            raise FormatError("zstd frame", "reserved block type", offset=pos, value=bh)
        if bsize > MAX_BLOCK:
            raise FormatError("zstd frame", "a block larger than zstd allows", offset=pos, value=bsize)
        pos += 3 + (1 if btype == 1 else bsize)
        if last:
            break
    pos += 4 if fhd & 0x04 else 0
    if pos > limit:
        raise FormatError("zstd frame", "the frame runs past the data frames", offset=off, value=pos - off)
    return pos


def skippable(read: Read, off: int, size: int) -> tuple[int, int] | None:
    """(payload offset, payload size) of a skippable frame at ``off``, checked to lie in the file; None if
    what is there is not one."""
    if off + SKIPPABLE_HEADER.size > size:
        return None
    magic, n = SKIPPABLE_HEADER.unpack(read(off, SKIPPABLE_HEADER.size))
    if not SKIPPABLE_MIN <= magic <= SKIPPABLE_MAX:
        return None
    if off + SKIPPABLE_HEADER.size + n > size:
        raise FormatError(
            "zstd skippable frame", "payload runs past the end of the file", offset=off, value=n
        )
    return off + SKIPPABLE_HEADER.size, n


#: How far before the end of the file a chunk table is looked for by its magic (when its size is not known).
TAIL_SCAN = 1 << 20
#: The dm-verity frame containerd writes: a 512-byte superblock padded to a 4096-byte block, then the tree
#: over the image in 4096-byte blocks.
VERITY_BLOCK = 4096

#: ``guess()``: (the size of the image inside, the chunk size) as its first frame gives them, or None.
Guess = Callable[[], "tuple[int, int] | None"]


def parse(read: Read, size: int, *, table_offset: int | None = None, guess: Guess | None = None) -> Table:
    """The chunk table of the seekable EROFS layer of ``size`` bytes read by ``read(offset, n)``, with the
    dm-verity frame after it, if any.

    The layer does not say where its table is; containerd records it in an annotation, given here as
    ``table_offset`` (where its skippable frame starts). Without it, the table is looked for where it must
    end: at the end of the file, or where a dm-verity frame over the image starts. ``guess()`` gives the
    image's size and the chunk size (from the superblock and header of the first frame), which give the
    table's size and the dm-verity frame's; without a guess (or when it is wrong) the table is looked for by
    its magic in the last TAIL_SCAN bytes. A table found either way is checked in itself (entries in order,
    inside the frames, one per chunk); that each entry starts one zstd frame that ends where the next starts
    is checked when the frame is read (:func:`check_frame`). Failing both, the frames are walked by their
    block headers from the start (a read per 128 KiB of frames), and the table must name where each
    starts."""
    if table_offset is not None:
        return _table_at(read, size, table_offset, None)
    at = _located(read, size, guess() if guess is not None else None)
    if at is not None:
        return _table_at(read, size, at, None)
    return walked(read, size)


def walked(read: Read, size: int) -> Table:
    """The chunk table found by walking every frame from the start, each entry held to where its frame
    starts (what ``verify`` does on top of reading every frame; :func:`parse` locates the table instead)."""
    starts, pos = _walk(read, size)
    return _table_at(read, size, pos, starts)


def _is_table(read: Read, size: int, at: int, n: int, end: int) -> bool:
    """A skippable frame at ``at`` whose payload of ``n`` bytes ends at ``end`` and starts as a chunk table."""
    if at < 0 or n < HEADER.size:
        return False
    found = _skippable_or_none(read, at, size)
    return (
        found is not None
        and found[1] == n
        and at + SKIPPABLE_HEADER.size + n == end
        and (_u32(read, found[0]) == TABLE_MAGIC)
    )


def _located(read: Read, size: int, guessed: tuple[int, int] | None) -> int | None:
    """Where the chunk table's skippable frame starts, found from the end of the file, or None."""
    if guessed is not None:
        usize, chunk = guessed
        count = chunk_count(usize, chunk) if 0 < chunk <= MAX_CHUNK else 0
        lengths = [HEADER.size + count * (ENTRY_OFFSET.size + h) for h in sorted(set(HASH_SIZES.values()))]
        for end in (size, *_verity_starts(read, size, usize)):
            for n in lengths if count else ():
                at = end - n - SKIPPABLE_HEADER.size
                if _is_table(read, size, at, n, end):
                    return at
    # By its magic before the end of the file: a table right before a dm-verity frame is not found so.
    magic = TABLE_MAGIC.to_bytes(4, "little")
    lo = max(0, size - TAIL_SCAN)
    buf = read(lo, size - lo)
    hit = len(buf)
    while (hit := buf.rfind(magic, 0, hit)) >= SKIPPABLE_HEADER.size:
        at = lo + hit - SKIPPABLE_HEADER.size
        if _is_table(read, size, at, size - lo - hit, size):
            return at
    return None


def _skippable_or_none(read: Read, off: int, size: int) -> tuple[int, int] | None:
    """:func:`skippable`, where a guess may land on anything: what is not one is None."""
    try:
        return skippable(read, off, size)
    except FormatError:
        return None


def _verity_starts(read: Read, size: int, usize: int) -> list[int]:
    """Where a dm-verity frame over an image of ``usize`` bytes would start, for each hash algorithm
    containerd's differ or veritysetup may use, where one does."""
    from .verity import Params

    out = []
    blocks = max(1, -(-usize // VERITY_BLOCK))
    for algorithm in ("sha512", "sha256"):
        params = Params(blocks, VERITY_BLOCK, VERITY_BLOCK, algorithm, b"")
        start = size - SKIPPABLE_HEADER.size - VERITY_BLOCK - params.tree_size()
        if start < 0:
            continue
        found = _skippable_or_none(read, start, size)
        if found is not None and found[0] + found[1] == size and read(found[0], 6) == b"verity":
            out.append(start)
    return out


def _walk(read: Read, size: int) -> tuple[list[int], int]:
    """(where each zstd frame starts, where the first skippable frame starts), by the frames' headers."""
    starts: list[int] = []
    pos = 0
    while skippable(read, pos, size) is None:
        if len(starts) > size // 9:  # a frame takes 9 bytes at least: an impossible count is a lie
            raise FormatError("seekable erofs", "more frames than the file can hold", offset=pos)
        starts.append(pos)
        pos = frame_end(read, pos, size)
    return starts, pos


def _table_at(read: Read, size: int, pos: int, starts: list[int] | None) -> Table:
    """The chunk table in the skippable frame at ``pos``; with ``starts`` (the frames walked), each entry
    must be where its frame starts."""
    found = skippable(read, pos, size) if 0 <= pos else None
    if found is None:
        raise FormatError(
            "seekable erofs chunk table", "no skippable frame where the chunk table should start", offset=pos
        )
    at, n = found
    if n < HEADER.size or _u32(read, at) != TABLE_MAGIC:
        raise FormatError(
            "seekable erofs chunk table",
            "the skippable frame after the data frames is not a chunk table",
            offset=pos,
        )
    head = read(at, HEADER.size)
    magic, version, usize, chunk, algo, reserved = HEADER.unpack(head)
    if version != TABLE_VERSION:
        raise FormatError("seekable erofs chunk table", "unknown version", offset=at + 4, value=version)
    if algo not in HASH_SIZES:
        raise FormatError("seekable erofs chunk table", "unknown hash algorithm", offset=at + 20, value=algo)
    if reserved:
        raise FormatError("seekable erofs chunk table", "reserved bytes are not zero", offset=at + 21)
    if not 0 < chunk <= MAX_CHUNK:
        raise FormatError(
            "seekable erofs chunk table", "chunk size out of range", offset=at + 16, value=chunk
        )
    count = chunk_count(usize, chunk)
    entry = ENTRY_OFFSET.size + HASH_SIZES[algo]
    if n != HEADER.size + count * entry:
        raise FormatError(
            "seekable erofs chunk table",
            f"{n} payload bytes do not hold {count} entries of {entry} bytes (uncompressed size {usize}, "
            f"chunk size {chunk})",
            offset=pos,
            value=n,
        )
    if starts is not None and count != len(starts):
        raise FormatError(
            "seekable erofs chunk table",
            f"names {count} chunks, but {len(starts)} zstd frames precede it",
            offset=at + 8,
            value=usize,
        )
    raw = read(at + HEADER.size, count * entry)
    offsets = [ENTRY_OFFSET.unpack_from(raw, i * entry)[0] for i in range(count)]
    for i, off in enumerate(offsets):
        if starts is not None:
            if off != starts[i]:
                raise FormatError(
                    "seekable erofs chunk table",
                    f"chunk {i}'s frame offset is not where frame {i} starts ({starts[i]})",
                    offset=at + HEADER.size + i * entry,
                    value=off,
                )
            continue
        # Not walked: the entries must at least cut the bytes before the table into frames of 9 bytes or
        # more, the first at 0.
        low = 0 if i == 0 else offsets[i - 1] + 9
        high = 0 if i == 0 else pos - 9 * (count - i)
        if not low <= off <= high:
            raise FormatError(
                "seekable erofs chunk table",
                f"chunk {i}'s frame offset is not after chunk {i - 1}'s frame and before the table ({pos})"
                if i
                else "chunk 0's frame offset is not 0",
                offset=at + HEADER.size + i * entry,
                value=off,
            )
    frames = []
    for i, off in enumerate(offsets):
        end = offsets[i + 1] if i + 1 < count else pos
        frames.append(
            Frame(
                i,
                off,
                end - off,
                i * chunk,
                min(chunk, usize - i * chunk),
                bytes(raw[i * entry + ENTRY_OFFSET.size : (i + 1) * entry]),
            )
        )
    verity_at, verity_size = None, 0
    tail = at + n
    if tail < size:
        v = skippable(read, tail, size)
        if v is None or v[0] + v[1] != size:
            raise FormatError(
                "seekable erofs",
                "bytes after the chunk table are not one skippable frame to the end",
                offset=tail,
            )
        if v[1] < 512 or read(v[0], 6) != b"verity":
            raise FormatError("seekable erofs dm-verity", "no dm-verity superblock in the frame", offset=v[0])
        verity_at, verity_size = tail, v[1]
    return Table(pos, n, usize, chunk, algo, frames, verity_at, verity_size, table_digest(head + raw))


def check_frame(frame: Frame, raw: bytes) -> None:
    """``raw``, the stored bytes the table gives ``frame``, are one zstd frame, whole (from its header and
    block headers; nothing decoded): the table's offsets, when they were not walked, cut frames as they are."""
    view = memoryview(raw)
    try:
        end = frame_end(lambda off, n: bytes(view[off : off + n]), 0, len(raw))
    except FormatError as exc:
        raise FormatError(
            "seekable erofs frame",
            f"frame {frame.index}: not one zstd frame between the chunk table's frame offsets "
            f"({exc.detail} at {frame.offset + (exc.offset or 0)})",
            offset=frame.offset,
        ) from None
    if end != len(raw):
        raise FormatError(
            "seekable erofs frame",
            f"frame {frame.index}: its zstd frame ends {len(raw) - end} bytes before the next of the chunk "
            "table's frame offsets",
            offset=frame.offset + end,
        )
