"""One blob resolved for its chunks: which bytes, which codec, which digester, which recorded digests.

The rule, in one place:

- location: a chunk's record comes from the bootstrap chunk table, else from the blob's blob.meta
  (``RafsV6.chunks`` asks :meth:`Blob.records` for those);
- compressor and digester: the blob's own blob-table entry (a merged bootstrap keeps each layer's; the
  superblock holds only the last layer's); a blob opened without any bootstrap says neither, and its first
  chunks are asked (:meth:`Blob.without_bootstrap`);
- digest: the bootstrap's record and the blob's blob.digest (checked against the ToC's sha256), both, as
  verify compares them;
- CRC32C: the record's, when it has one; checked when no digest is recorded;
- a blob whose chunks carry no digest (tarfs: the tar itself; an external blob; nydus's oldest blobs read
  through blob.meta alone) has one digest for its bytes, its id, the sha256 of the whole file: checked once
  (:meth:`Blob.check_whole`) before any of its bytes are returned.
"""

from __future__ import annotations

import re
import threading
from functools import cached_property
from typing import TYPE_CHECKING

from ..codecs import Compressor, decompress
from ..digests import Digester
from ..errors import FormatError, NydusInspectError, UsageError
from ..formats import blob_meta
from .ref import ChunkRef
from .variants import CacheData, Variant

if TYPE_CHECKING:
    from ..formats.rafs_v6 import BlobTableEntry
    from ..layer import Layer

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class Blob:
    """One blob of a blob table: ``layer`` is the file holding its bytes, read through ``source``."""

    def __init__(
        self,
        index: int | None,
        layer: Layer,
        entry: BlobTableEntry | None = None,
        *,
        compressor: Compressor | None = None,
        digester: Digester | None = None,
        meta: Layer | None = None,
        cache_data: bool = False,
    ) -> None:
        """``cache_data``: ``layer`` is the blob's blob-cache file (chunks.variants.CacheData), not the blob."""
        self.index = index
        self.layer = layer
        #: The file holding the blob's blob.meta: the blob itself, or, for a blob whose data is kept apart from
        #: its metadata (a targz-ref blob's .tar.gz), the layer or meta file beside the bootstrap.
        self.meta = meta if meta is not None else layer
        self.source = layer.source
        self.path = layer.path
        self.entry = entry
        self.compressor = compressor or entry.compressor
        self.digester = digester or entry.digester
        #: The persistent cache of checked chunks (chunks.store) a remote blob's source carries; None for a file.
        self.store = getattr(self.source, "store", None)
        #: How a batch or encrypted blob stores its chunks (chunks.variants); None for a plain blob.
        self.variant = CacheData(layer) if cache_data else Variant.of(layer, entry, self.compressor)
        self.cache_data = cache_data
        self._whole_checked = False
        self._whole_lock = threading.Lock()

    @classmethod
    def without_bootstrap(cls, layer: Layer, records, digests: bytes | None) -> Blob:
        """A blob no bootstrap describes: its compressor from its first compressed chunk's magic, its
        digester the one whose digest of its first chunk is blob.digest's first."""
        comp, dig = Compressor.ZSTD, Digester.BLAKE3
        for rec in records:
            if rec.compressed:
                raw = layer.source.pread(rec.compressed_offset, min(rec.compressed_size, 4), "chunk")
                comp = Compressor.ZSTD if raw[:4] == _ZSTD_MAGIC else Compressor.LZ4_BLOCK
                break
        if digests and len(records):
            rec = records[0]
            try:
                raw = layer.source.pread(rec.compressed_offset, rec.compressed_size, "chunk")
                data = decompress(raw, comp, rec.uncompressed_size) if rec.compressed else raw
                for d in (Digester.BLAKE3, Digester.SHA256):
                    if d.digest(data) == digests[:32]:
                        dig = d
                        break
            except NydusInspectError:
                pass
        return cls(None, layer, None, compressor=comp, digester=dig)

    def close(self) -> None:
        self.layer.close()

    # ------------------------------------------------------------------ records and digests
    @cached_property
    def digests(self) -> blob_meta.DigestArray | None:
        """blob.digest, one 32-byte digest per chunk-info record, checked against the ToC (None: absent)."""
        return self.meta.chunk_digests

    @cached_property
    def zran(self):
        """The zran view (chunks.zran.ZranBlob) of a targz-ref blob, whose chunks are inflated from the
        original gzip through blob.meta's inflate contexts; None for any other blob."""
        if not getattr(self.entry, "features", 0) & blob_meta.ZRAN:
            return None
        from .zran import ZranBlob

        infos, hdr = self.meta.chunk_infos, self.meta.blob_meta_header
        if infos is None or hdr is None or not hdr.s_features & blob_meta.ZRAN:
            raise UsageError(
                f"{self.path}: blob {self.index} is a targz-ref (zran) blob and its blob.meta was not found: "
                "open the layer that holds it, or put <blob id>.blob.meta or the meta blob beside the bootstrap"
            )
        return ZranBlob(self.source, infos, hdr)

    @cached_property
    def members(self):
        """The shared-member view (chunks.members.SharedMembers) of an eStargz layer read directly whose TOC
        puts chunks inside gzip members after other bytes (``innerOffset``); None for any other blob."""
        from ..layer import KIND_ESTARGZ

        if self.layer.kind != KIND_ESTARGZ:
            return None
        placement = self.layer.estargz_index.placement()
        if not placement:
            return None
        from .members import SharedMembers

        return SharedMembers(self.source, placement)

    def records(self):
        """(blob.meta chunk-info array, blob.digest digests or None), or None without blob.meta: what
        ``RafsV6`` resolves a chunk from when the bootstrap chunk table has no record of it."""
        infos = self._infos()
        return None if infos is None else (infos, self.digests)

    def _infos(self):
        """blob.meta's chunk-info records: a batch or encrypted blob's as its variant reads them."""
        if self.variant is not None:
            return self.variant.infos
        return self.meta.chunk_infos

    def check_whole(self) -> None:
        """For a chunk with no digest of its own: the blob's bytes against its id, when the id is a sha256 (the
        file is hashed once; readers in other threads wait for it). A blob-cache file is not the blob, and an
        id that is no sha256 names no digest (a plain EROFS image's own blocks have none)."""
        if self._whole_checked:
            return
        with self._whole_lock:
            if self._whole_checked:
                return
            want = self.entry.id if self.entry is not None and not self.cache_data else ""
            if _SHA256_HEX.fullmatch(want):
                got = self.layer.content_sha256()
                if got != want:
                    raise FormatError(
                        "blob",
                        f"its sha256 {got} is not its id {want}; its chunks record no digest of their own, so "
                        "none of its bytes are read",
                        value=got,
                    ).located(self.path)
            self._whole_checked = True

    def recorded_digests(self, ref: ChunkRef) -> list[tuple[str, bytes]]:
        """Every digest ``ref``'s bytes must have, with where it is recorded: ``ref``'s own (the bootstrap
        chunk table's, or blob.digest's when blob.meta gave the record) and the blob's blob.digest. verify
        compares a chunk with both, so a reader does too: bytes whose bootstrap record was rewritten to match
        them are still refused when blob.digest, which the ToC's sha256 covers, says otherwise. Empty when
        neither exists (the CRC32C then decides)."""
        out = [("the recorded", ref.digest)] if ref.digest else []
        digests = self.digests
        if digests is not None and 0 <= ref.ci_index < len(digests) and digests[ref.ci_index] != ref.digest:
            out.append(("blob.digest's", digests[ref.ci_index]))
        return out

    def recorded_crcs(self, ref: ChunkRef) -> list[tuple[str, int]]:
        """Every CRC32C ``ref``'s bytes must have, with where it is recorded: ``ref``'s own and blob.meta's
        record of the chunk, as verify compares both (a digest that matches does not excuse a CRC that does
        not: a reader refuses what verify reports)."""
        out = [("the recorded", ref.crc32)] if ref.crc32 is not None else []
        infos = self._infos()
        if infos is not None and 0 <= ref.ci_index < len(infos):
            crc = infos[ref.ci_index].crc32
            if crc is not None and crc != ref.crc32:
                out.append(("blob.meta's", crc))
        return out

    def recorded_digest(self, ref: ChunkRef) -> bytes:
        """The digest that names ``ref``'s bytes in a chunk store: the first of :meth:`recorded_digests`
        (b"" when there is none)."""
        wants = self.recorded_digests(ref)
        return wants[0][1] if wants else b""
