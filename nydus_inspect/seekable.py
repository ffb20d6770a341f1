"""A seekable EROFS layer (formats.seekable_erofs) read as the EROFS image it wraps, frame by frame.

:class:`SeekableErofs` is a :class:`~nydus_inspect.chunks.source.BlobSource` whose bytes are the uncompressed
EROFS image: a read decodes only the frames it touches (each checked against its SHA-512 when the table
records one, and against the size the table gives it), keeping a few decoded frames. A :class:`Layer` over
it is a plain EROFS image, so ls, cat, unpack, diff, verify, the mount and the TUI read it as they read one.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import threading

from .chunks.source import BlobSource, LocalFile
from .errors import FormatError
from .formats import seekable_erofs
from .model import _LRU

#: Decoded frames kept: up to this many, within FRAMES_BYTES (8 of the default 4 MiB chunks), and never
#: fewer than 2 (a read that straddles two frames keeps both), so the largest chunks (64 MiB) hold 128 MiB.
FRAMES_KEPT = 8
FRAMES_BYTES = 32 << 20


def looks_seekable(path: str) -> bool:
    """The file starts with a zstd frame: a seekable EROFS layer or nothing this tool reads."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == seekable_erofs.ZSTD_MAGIC.to_bytes(4, "little")
    except OSError:
        return False


class SeekableErofs:
    """The EROFS image inside the seekable layer at ``path``."""

    #: What the frames hold is an EROFS image (Layer looks for nothing else in it).
    HOLDS_EROFS = True

    def __init__(
        self,
        path: str,
        table_offset: int | None = None,
        chunk_digest: str | None = None,
        file: BlobSource | None = None,
    ) -> None:
        """``table_offset`` and ``chunk_digest``: where the chunk table's frame starts and ``sha512:<hex>`` of
        it, as the layer's annotations record them (then the table is read there, and checked). ``file``: the
        layer's stored bytes when they are not the local file ``path`` (a registry blob read by range; ``path``
        then only names it)."""
        self.file = file if file is not None else LocalFile(path)
        self.path = path
        self.fd = -1  # no file of these bytes to map: Layer reads them through pread
        try:
            self.table = seekable_erofs.parse(
                lambda off, n: self.file.pread(off, n, "seekable erofs"),
                self.file.size,
                table_offset=table_offset,
                guess=self._guess,
            )
            if chunk_digest is not None and f"sha512:{self.table.digest.hex()}" != chunk_digest:
                raise FormatError(
                    "seekable erofs chunk table",
                    f"its SHA-512 is not the layer annotation's {chunk_digest}",
                    offset=self.table.offset,
                )
        except FormatError as exc:
            self.file.close()
            raise exc.located(path) from None
        except BaseException:
            self.file.close()
            raise
        self.size = self.table.uncompressed_size
        self._starts = [f.uncompressed_offset for f in self.table.frames]
        self._decoded = _LRU(max(2, min(FRAMES_KEPT, FRAMES_BYTES // self.table.chunk_size)))
        self._lock = threading.Lock()
        self.stored_size = self.file.size

    def _guess(self) -> tuple[int, int] | None:
        """(image size, chunk size) as the start of the first frame gives them: the EROFS superblock's block
        count times its block size (an image file ends at its last block, as mkfs.erofs and our writer write
        it) and the frame's content size (every frame but the last holds a chunk). Only a hint where to look
        for the chunk table (seekable_erofs.parse checks what it finds), so anything amiss is None."""
        import io

        import zstandard

        from .formats import rafs_v6

        # The superblock lies in the frame's first block, which is at most 128 KiB stored.
        head = self.file.pread(0, min(self.file.size, seekable_erofs.MAX_BLOCK + 32), "seekable erofs")
        want = rafs_v6.SUPERBLOCK_OFFSET + rafs_v6.SUPERBLOCK.size
        try:
            chunk = zstandard.frame_content_size(head)
            with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(head)) as r:
                start = r.read(want)
            sb = rafs_v6.SuperBlock.parse(start, rafs=False) if len(start) == want else None
        except (zstandard.ZstdError, FormatError):
            return None
        if sb is None or chunk <= 0 or not 9 <= sb.s_blkszbits <= 16:
            return None
        return sb.s_blocks << sb.s_blkszbits, chunk

    def frame(self, index: int) -> bytes:
        """Frame ``index`` decoded and checked."""
        with self._lock:
            data = self._decoded.get(index)
        if data is not None:
            return data
        import zstandard

        f = self.table.frames[index]
        raw = self.file.pread(f.offset, f.size, "seekable erofs frame")
        # Where the table cuts frames is checked first: a wrong offset is named as such, not as a checksum.
        try:
            seekable_erofs.check_frame(f, raw)
        except FormatError as exc:
            raise exc.located(self.path) from None
        if f.checksum and hashlib.sha512(raw).digest() != f.checksum:
            raise FormatError(
                "seekable erofs frame",
                f"frame {index}: SHA-512 does not match the chunk table",
                offset=f.offset,
            ).located(self.path)
        try:
            data = zstandard.ZstdDecompressor().decompress(raw, max_output_size=f.uncompressed_size)
        except zstandard.ZstdError as exc:
            raise FormatError(
                "seekable erofs frame", f"frame {index} does not decompress: {exc}", offset=f.offset
            ).located(self.path) from None
        if len(data) != f.uncompressed_size:
            raise FormatError(
                "seekable erofs frame",
                f"frame {index} holds {len(data)} bytes, the chunk table says {f.uncompressed_size}",
                offset=f.offset,
            ).located(self.path)
        with self._lock:
            self._decoded.put(index, data)
        return data

    def pread(self, offset: int, size: int, what: str = "data") -> bytes:
        if offset < 0 or size < 0 or offset + size > self.size:
            raise FormatError(
                what, f"range of {size} bytes lies outside the {self.size}-byte EROFS image", offset=offset
            )
        out = bytearray()
        k = max(0, bisect.bisect_right(self._starts, offset) - 1)
        while len(out) < size:
            data = self.frame(k)
            lo = offset + len(out) - self._starts[k]
            out += data[lo : lo + size - len(out)]
            k += 1
        return bytes(out)

    def verity_payload(self) -> tuple[int, int] | None:
        """(file offset, size) of the dm-verity payload (superblock and hash tree over the image), if any."""
        t = self.table
        return None if t.verity_offset is None else (t.verity_offset + 8, t.verity_size)

    def verity_root(self) -> str | None:
        """``ALGORITHM:<hex>`` of the root hash the dm-verity frame's tree holds, from its superblock and top
        hash block alone (what ``verify`` holds the image to, and the annotation should name); None without
        such a frame, or when the root is the one data block's own digest. Nothing here says the tree is the
        image's: ``verify`` hashes the image to check that."""
        from .formats import verity
        from .formats._struct import round_up

        place = self.verity_payload()
        if place is None:
            return None
        at, size = place
        params = verity.Superblock.parse(
            self.stored(at, verity.SUPERBLOCK_SIZE, "dm-verity superblock")
        ).params
        top = verity.root_block(params)
        tree = round_up(verity.SUPERBLOCK_SIZE, params.hash_block_size)
        if top is None or tree + top + params.hash_block_size > size:
            return None  # a tree too short for its superblock: verify says so
        block = self.stored(at + tree + top, params.hash_block_size, "dm-verity hash tree")
        return f"{params.algorithm}:{params.digest(block).hex()}"

    def stored(self, offset: int, size: int, what: str = "data") -> bytes:
        """Bytes of the layer file itself (not of the image inside it)."""
        return self.file.pread(offset, size, what)

    def will_need(self, offset: int = 0, size: int = 0) -> None:
        pass

    def close(self) -> None:
        self.file.close()


def open_seekable(path: str, annotations: dict | None = None, file: BlobSource | None = None, **kw):
    """A Layer over the EROFS image of the seekable layer at ``path`` (or in ``file``, see SeekableErofs);
    ``annotations``, its descriptor's, say where its chunk table is and what its digest is (containerd's
    converter records both)."""
    from .layer import Layer

    ann = annotations or {}
    key = seekable_erofs.ANNOTATION_CHUNK_TABLE_OFFSET
    offset = ann.get(key)
    if offset is not None and not (isinstance(offset, str) and offset.isdigit() and len(offset) < 20):
        raise FormatError("layer annotation", f"{key} is not a byte offset", value=offset).located(path)
    digest = ann.get(seekable_erofs.ANNOTATION_CHUNK_DIGEST)
    source = SeekableErofs(
        os.fspath(path),
        int(offset) if offset is not None else None,
        digest if isinstance(digest, str) else None,
        file,
    )
    try:
        return Layer(path, source=source, **kw)
    except BaseException:
        source.close()
        raise
