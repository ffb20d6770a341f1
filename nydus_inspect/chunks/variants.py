"""How a blob stores chunks when it is not one compressed extent per chunk: the other layer kinds nydus writes.

- **batch** (``nydus-image create --batch-size``): small chunks are concatenated and compressed together; the
  bootstrap records such a chunk with no compressed extent (offset and size 0), and the blob's blob.meta
  record carries the batch flag, the batch's index and the chunk's offset in the decoded batch. The batch
  records (:func:`~..formats.blob_meta.parse_batch_contexts`) follow the chunk-info records and give each
  batch's stored and decoded sizes; a batch is stored as is when they are equal.
- **encrypted** (``--encrypt``): every chunk's stored bytes (and the blob.meta area and header) are AES-128-XTS
  ciphertext. nydus keeps the key in the blob table entry (the 32 bytes of blob_meta_digest) and the 16-byte
  IV in blob_meta_size and cipher_iv (little-endian, in that order), so the bootstrap alone decrypts them.
  Data shorter than one 16-byte unit is padded first: to 16 bytes with the pad length, then 0x78 0x90.

:class:`Variant` is what :class:`~.resolve.Blob` holds for such a blob (None for a plain one), and
:class:`CacheData` for a blob given in nydus's blob-cache form (every chunk decoded, at its uncompressed offset);
``ChunkReader.decode`` and verify's chunk pass ask it for a chunk's decoded bytes, which they then check as
any chunk's (digest, CRC32C). Nothing here trusts a size before checking it against the blob or the limits.
"""

from __future__ import annotations

import struct
import threading
from functools import cached_property

from .. import codecs
from ..codecs import Compressor
from ..errors import FormatError
from ..formats import blob_meta

#: cipher_algo of the blob table entry.
CIPHER_NONE = 0
CIPHER_AES_128_XTS = 1
_UNIT = 16
_PAD_END = b"\x78\x90"
_PADDED = _UNIT + len(_PAD_END)


class Cipher:
    """AES-128-XTS with the key and IV a blob table entry records (nydus uses one IV for every unit)."""

    def __init__(self, key: bytes, iv: bytes) -> None:
        self.key = key
        self.iv = iv

    @classmethod
    def of_entry(cls, entry) -> Cipher | None:
        """The cipher of blob table entry ``entry``, None when it is not encrypted."""
        algo = entry.cipher_algo
        if algo == CIPHER_NONE:
            return None
        if algo != CIPHER_AES_128_XTS:
            raise FormatError(
                "rafs v6 blob table entry",
                f"blob {entry.blob_index}: unknown cipher (nydus writes 1, AES-128-XTS)",
                field="cipher_algo",
                value=algo,
            )
        key = bytes(entry.blob_meta_digest)
        if key[:16] == key[16:]:
            # XTS needs two different halves; nydus never writes such a key, so the entry was altered.
            raise FormatError(
                "rafs v6 blob table entry",
                f"blob {entry.blob_index} is encrypted and its key is missing: the encryption key "
                "(blob_meta_digest) has two equal halves, which nydus never writes",
                field="blob_meta_digest",
            )
        return cls(key, struct.pack("<QQ", entry.blob_meta_size, entry.cipher_iv))

    def decrypt(self, raw, what: str = "data", offset: int | None = None) -> bytes:
        """The plaintext of ``raw`` (padding of a short unit removed), or FormatError naming ``what``."""
        if len(raw) < _UNIT:
            raise FormatError(what, f"{len(raw)} encrypted bytes: less than one 16-byte unit", offset=offset)
        try:
            from cryptography.hazmat.primitives.ciphers import Cipher as _C
            from cryptography.hazmat.primitives.ciphers import algorithms, modes
        except ImportError:  # pragma: no cover - a declared dependency
            raise FormatError(what, "encrypted, and the cryptography package is not installed") from None
        dec = _C(algorithms.AES(self.key), modes.XTS(self.iv)).decryptor()
        data = dec.update(bytes(raw)) + dec.finalize()
        if len(data) == _PADDED and data[_UNIT:] == _PAD_END:
            pad = data[_UNIT - 1]
            if not 0 < pad < _UNIT:
                raise FormatError(
                    what, "decrypted padding is not valid (wrong key?)", offset=offset, value=pad
                )
            data = data[: _UNIT - pad]
        return data


class CacheData:
    """A blob present only in nydus's blob-cache form (``<blob id>.blob.data``, what ``nydus-image create
    --blob-cache-dir`` writes instead of a blob and what nydusd keeps of one): each chunk decoded, at its
    uncompressed offset. A chunk is read from there as it is; its digest is checked as any chunk's."""

    #: Chunk records come from the bootstrap's chunk table: the cache file holds data only.
    infos = None

    def __init__(self, layer) -> None:
        self.source = layer.source
        self.path = layer.path

    def decode(self, rec, ci_index: int, name: str) -> bytes:
        off, size = rec.uncompressed_offset, rec.uncompressed_size
        raw = self.source.pread(off, size, name)
        if len(raw) != size:
            raise FormatError(
                name, f"{size} bytes at {off} lie past the end of the blob cache file", offset=off
            )
        return raw

    def stored_range(self, rec, ci_index: int) -> tuple[int, int]:
        return rec.uncompressed_offset, rec.uncompressed_size


class Variant:
    """A batch or encrypted blob: ``source`` its bytes, ``entry`` its blob table entry, ``layer`` the file
    (its ToC's blob.meta is used when it has one and is not encrypted)."""

    #: Decoded batches kept per blob: the small chunks of one batch are read one after the other.
    BATCHES_KEPT = 4

    def __init__(self, layer, entry, compressor: Compressor) -> None:
        self.layer = layer
        self.source = layer.source
        self.path = layer.path
        self.entry = entry
        self.compressor = compressor
        self.cipher = Cipher.of_entry(entry)
        self.batch = bool(entry.features & blob_meta.BATCH)
        self._lock = threading.Lock()
        self._batches: dict[int, bytes] = {}

    @classmethod
    def of(cls, layer, entry, compressor: Compressor) -> Variant | None:
        """The variant of a blob, None for a plain one."""
        if entry is None or not (entry.cipher_algo or entry.features & blob_meta.BATCH):
            return None
        return cls(layer, entry, compressor)

    # ------------------------------------------------------------------ blob.meta
    @cached_property
    def meta(self) -> tuple[blob_meta.ChunkInfoArray, blob_meta.BlobMetaHeader] | None:
        """(chunk-info records, blob.meta header): from the ToC when the blob has one in clear, else from
        where the blob table entry says (ci_offset), decrypted and decompressed; None without any."""
        layer = self.layer
        if self.cipher is None and getattr(layer, "blob_meta_header", None) is not None:
            return layer.chunk_infos, layer.blob_meta_header
        ent = self.entry
        if not ent.ci_compressed_size:
            return None
        hdr_size = blob_meta.HEADER_SIZE
        where = ent.ci_offset
        if where + ent.ci_compressed_size + hdr_size > self.source.size:
            raise FormatError(
                "rafs v6 blob table entry",
                f"blob {ent.blob_index}: blob.meta at {where}+{ent.ci_compressed_size} and its header run past "
                f"the {self.source.size}-byte blob",
                field="ci_offset",
                value=where,
            ).located(self.path)
        # At most one 24-byte record and one batch record per chunk.
        if ent.ci_uncompressed_size > blob_meta.MAX_CHUNKS * (24 + blob_meta.BATCH_CONTEXT.size):
            raise FormatError(
                "rafs v6 blob table entry",
                "blob.meta larger than any blob holds",
                field="ci_uncompressed_size",
                value=ent.ci_uncompressed_size,
            ).located(self.path)
        try:
            raw = self.source.pread(where, ent.ci_compressed_size, "blob.meta")
            head = self.source.pread(where + ent.ci_compressed_size, hdr_size, "blob.meta.header")
            if self.cipher is not None:
                raw = self.cipher.decrypt(raw, "blob.meta", where)
                head = self.cipher.decrypt(head, "blob.meta.header", where + ent.ci_compressed_size)
            hdr = blob_meta.BlobMetaHeader.parse(head, 0, where + ent.ci_compressed_size)
            comp = Compressor.from_algo(ent.ci_compressor)
            data = codecs.decompress(raw, comp, ent.ci_uncompressed_size, "blob.meta", where)
            infos = blob_meta.ChunkInfoArray(
                data, hdr.s_ci_entries, bool(hdr.s_features & blob_meta.CHUNK_INFO_V2), where
            )
        except FormatError as exc:
            raise exc.located(self.path) from None
        return infos, hdr

    @cached_property
    def infos(self) -> blob_meta.ChunkInfoArray | None:
        meta = self.meta
        return None if meta is None else meta[0]

    @cached_property
    def batches(self) -> list[tuple[int, int]]:
        meta = self.meta
        if not self.batch:
            return []
        if meta is None:
            raise FormatError(
                "blob",
                f"blob {self.entry.blob_index} is a batch blob without blob.meta: nothing locates its batches",
            ).located(self.path)
        infos, hdr = meta
        try:
            return blob_meta.parse_batch_contexts(
                infos.data, hdr.s_ci_zran_offset, hdr.s_ci_zran_count, infos.base
            )
        except FormatError as exc:
            raise exc.located(self.path) from None

    # ------------------------------------------------------------------ chunks
    def decode(self, rec, ci_index: int, name: str) -> bytes:
        """The decoded (unchecked) bytes of the chunk whose record is ``rec`` (stored and decoded offsets and
        sizes, ``compressed``) and whose chunk-info index is ``ci_index``."""
        info = None
        if self.batch:
            infos = self.infos
            if infos is not None and 0 <= ci_index < len(infos):
                info = infos[ci_index]
        if info is not None and info.flags & blob_meta.CI_BATCH:
            return self._from_batch(info, rec.uncompressed_size, name)
        raw = self.source.pread(rec.compressed_offset, rec.compressed_size, name)
        if self.cipher is not None:
            raw = self.cipher.decrypt(raw, name, rec.compressed_offset)
        if rec.compressed:
            return codecs.decompress(raw, self.compressor, rec.uncompressed_size, name, rec.compressed_offset)
        if len(raw) != rec.uncompressed_size:
            raise FormatError(name, "uncompressed chunk with differing sizes", offset=rec.compressed_offset)
        return raw

    def _from_batch(self, info, size: int, name: str) -> bytes:
        index, start = info.data >> 32, info.data & 0xFFFFFFFF
        batches = self.batches
        if index >= len(batches):
            raise FormatError(
                name, f"batch index {index} of {len(batches)} batches", field="batch_index", value=index
            )
        csize, usize = batches[index]
        if start + size > usize or size != info.uncompressed_size:
            raise FormatError(
                name,
                f"{size} bytes at {start} of batch {index} lie outside its {usize} decoded bytes",
                field="batch_offset",
                value=start,
            )
        with self._lock:
            data = self._batches.get(index)
        if data is None:
            off = info.compressed_offset
            raw = self.source.pread(off, csize, f"batch {index}")
            if self.cipher is not None:
                raw = self.cipher.decrypt(raw, f"batch {index}", off)
            if csize != usize:
                data = codecs.decompress(raw, self.compressor, usize, f"batch {index}", off)
            elif len(raw) != usize:
                raise FormatError(f"batch {index}", "stored batch with differing sizes", offset=off)
            else:
                data = raw
            data = bytes(data)
            with self._lock:
                if len(self._batches) >= self.BATCHES_KEPT:
                    self._batches.pop(next(iter(self._batches)))
                self._batches[index] = data
        return data[start : start + size]

    def stored_range(self, rec, ci_index: int) -> tuple[int, int]:
        """(offset, size) of the stored bytes a chunk is read from: its batch's for a batch chunk."""
        if self.batch and self.infos is not None and 0 <= ci_index < len(self.infos):
            info = self.infos[ci_index]
            if info.flags & blob_meta.CI_BATCH:
                index = info.data >> 32
                if index < len(self.batches):
                    return info.compressed_offset, self.batches[index][0]
        return rec.compressed_offset, rec.compressed_size
