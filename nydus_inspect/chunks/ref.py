"""The one chunk reference type: where a chunk of a file lives, and what it must decode and hash to."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass


@dataclass(slots=True)
class ChunkRef:
    """One chunk of a file: which blob, which chunk-info record, its stored and decoded extents, and the
    digest (and CRC32C, when recorded) its decoded bytes must have. An empty ``digest`` means the bootstrap
    recorded none; the blob's blob.digest, which is checked as well, then decides
    (:meth:`Blob.recorded_digests`)."""

    blob_index: int
    ci_index: int
    file_offset: int
    compressed_offset: int
    compressed_size: int
    uncompressed_offset: int
    uncompressed_size: int
    compressed: bool
    digest: bytes
    crc32: int | None = None

    @classmethod
    def from_info(cls, info, blob_index: int, file_offset: int, digest: bytes = b"") -> ChunkRef:
        """The chunk a blob.meta record (``blob_meta.ChunkInfo``) describes, at ``file_offset`` of a file."""
        return cls(
            blob_index=blob_index,
            ci_index=info.index,
            file_offset=file_offset,
            compressed_offset=info.compressed_offset,
            compressed_size=info.compressed_size,
            uncompressed_offset=info.uncompressed_offset,
            uncompressed_size=info.uncompressed_size,
            compressed=info.compressed,
            digest=digest,
            crc32=info.crc32,
        )

    @property
    def name(self) -> str:
        """How every reader names this chunk in an error: the same words verify's findings use."""
        return f"chunk {self.ci_index} of blob {self.blob_index}"

    @property
    def cache_key(self) -> tuple[int, int, int, int, int]:
        """Chunks with one key decode to the same bytes (deduplicated chunks of several files share it). Where
        the chunk starts uncompressed is part of it: a plain EROFS image's interlaced extents decode to bytes
        rotated by where they start in their block (deduplicated nydus chunks share their record anyway)."""
        if not self.compressed_size:
            # A batch chunk: the bootstrap records no stored extent for it, so its record tells it apart.
            return (self.blob_index, -1 - self.ci_index, 0, self.uncompressed_size, self.uncompressed_offset)
        return (
            self.blob_index,
            self.compressed_offset,
            self.compressed_size,
            self.uncompressed_size,
            self.uncompressed_offset,
        )

    def to_json(self) -> dict:
        out = {
            "blob_index": self.blob_index,
            "ci_index": self.ci_index,
            "file_offset": self.file_offset,
            "compressed_offset": self.compressed_offset,
            "compressed_size": self.compressed_size,
            "uncompressed_offset": self.uncompressed_offset,
            "uncompressed_size": self.uncompressed_size,
            "compressed": self.compressed,
            "digest": self.digest.hex(),
        }
        if self.crc32 is not None:
            out["crc32"] = self.crc32
        return out


class LazyChunks(Sequence):
    """A file's chunks, made when asked for by ``decode(k0, k1)`` (chunks ``k0`` up to ``k1``, as a list): for
    files of so many chunks that a list of them would cost more than the bootstrap they are read from.
    Iterating goes ``block`` chunks at a time; iterating or indexing twice decodes twice. Slices are lists."""

    __slots__ = ("_n", "_decode", "_block")

    def __init__(self, n: int, decode: Callable[[int, int], list[ChunkRef]], block: int = 4096) -> None:
        self._n, self._decode, self._block = n, decode, max(1, block)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, k):
        if isinstance(k, slice):
            start, stop, step = k.indices(self._n)
            if step == 1:
                return self._decode(start, max(start, stop))
            return [self[i] for i in range(start, stop, step)]
        if k < 0:
            k += self._n
        if not 0 <= k < self._n:
            raise IndexError(k)
        return self._decode(k, k + 1)[0]

    def __iter__(self) -> Iterator[ChunkRef]:
        n, block = self._n, self._block
        for k in range(0, n, block):
            yield from self._decode(k, min(n, k + block))

    def __repr__(self) -> str:
        return f"<LazyChunks of {self._n}>"
