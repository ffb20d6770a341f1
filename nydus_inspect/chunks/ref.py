"""The one chunk reference type: where a chunk of a file lives, and what it must decode and hash to."""

from __future__ import annotations

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
