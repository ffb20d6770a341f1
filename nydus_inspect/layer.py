"""Open what a nydus user has in hand and find its parts.

A *layer* is one of: a nydus layer blob (tar-like, with or without ToC; inline
bootstrap or data only), a raw RAFS v6 or v5 bootstrap, or a bootstrap layer
(tar / tar.gz holding ``image/image.boot``). :func:`open_layer` sniffs which,
locates the sections (ToC first, tar-header walk as fallback, tolerating the
old-blob quirks), and gives access to the bootstrap model and the chunk data
of every blob the bootstrap lists.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import mmap
import os
import stat
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from . import codecs
from .boot_tar import bootstrap_in_tar
from .chunks.decode import ChunkReader
from .chunks.ref import ChunkRef
from .chunks.resolve import Blob
from .chunks.sections import ChunkSections, decoded_into_file
from .chunks.source import BlobSource, LocalFile, PieceReader, SourceBytes
from .codecs import Compressor
from .errors import FormatError, NydusInspectError, UsageError
from .formats import blob_meta, rafs_v6, tar_header, toc
from .formats.tar_header import (
    BLOB_DIGEST,
    BLOB_META,
    BLOB_META_HEADER,
    IMAGE_BLOB,
    IMAGE_BOOT,
    RAFS_BLOB_TOC,
)
from .model import Node, RafsV6

if TYPE_CHECKING:
    from .formats.rafs_v5 import RafsV5

log = logging.getLogger(__name__)

SECTION_NAMES = (IMAGE_BLOB, BLOB_META, BLOB_DIGEST, IMAGE_BOOT, RAFS_BLOB_TOC)
ENTRY_NAMES = (IMAGE_BLOB, BLOB_META, BLOB_META_HEADER, BLOB_DIGEST, IMAGE_BOOT, RAFS_BLOB_TOC)
#: Largest bootstrap we load (uncompressed). A 1M-inode image is far below this.
MAX_BOOTSTRAP = 1 << 30
#: A compressed image.boot that decodes to more than this is kept in a temporary file and mapped (see
#: Layer._bootstrap_entry), not held as bytes.
SPILL_BOOTSTRAP = 32 << 20

KIND_BLOB_TOC = "nydus-blob"  # layer blob with rafs.blob.toc
KIND_BLOB_NO_TOC = "nydus-blob-no-toc"  # layer blob found by tar-header walk only
KIND_BOOTSTRAP = "bootstrap"  # raw RAFS v6 bootstrap
KIND_BOOTSTRAP_V5 = "bootstrap-v5"
KIND_BOOTSTRAP_LAYER = "bootstrap-layer"  # tar(.gz) holding image/image.boot
KIND_DATA_BLOB = "data-blob"  # chunk data named by a bootstrap's blob table (nydus-image without inline meta)
KIND_EROFS = "erofs"  # a plain EROFS image (mkfs.erofs, containerd's EROFS layers): no RAFS v6 compat bit
#: A blob.meta on its own: a targz-ref meta blob ([ci data][header]) or the cache-file form nydusd and the
#: snapshotter keep as ``<blob id>.blob.meta`` ([uncompressed ci data, padded to 4K][header]).
KIND_BLOB_META = "blob-meta"
KIND_ESTARGZ = (
    "estargz"  # an eStargz layer: its TOC read as the bootstrap nydus's stargz builder writes over it
)


@dataclass(frozen=True)
class Section:
    """A region of a blob file found by the tar-header walk: ``[offset, offset+size)`` then its header."""

    name: str
    offset: int
    size: int
    header_offset: int


class Layer:
    """One opened layer. Cheap to create; everything is decoded on first use."""

    def __init__(
        self,
        path: str,
        *,
        blob_dir: str | None = None,
        blobs: list[str] | None = None,
        data_blob: bool = False,
        source: BlobSource | None = None,
        name: str | None = None,
        blob_opener: Callable[[str], Layer | None] | None = None,
    ) -> None:
        """``data_blob``: the file is a bootstrap's data blob, which may be chunk data with nothing around
        it (``nydus-image create`` without ``--blob-inline-meta`` writes that): accept it as such.
        ``source``: where the bytes come from when they are not the local file ``path`` (a registry blob;
        ``path`` then only names it in messages, ``name`` in listings). ``blob_opener(blob_id)``: a layer of
        a blob the bootstrap names that is not found as a file (a registry blob, opened lazily), or None."""
        self.path = path
        self.name = name or os.path.basename(path)
        #: Where this file's bytes come from: every read of chunk data goes through it (chunks.source).
        self.source = source if source is not None else LocalFile(path)
        self._fd = self.source.fd
        self.size = self.source.size
        if source is not None:
            self._map = SourceBytes(source)
        else:
            self._map = mmap.mmap(self._fd, 0, prot=mmap.PROT_READ) if self.size else b""
        self.blob_dir = blob_dir
        self.extra_blobs = list(blobs or [])
        self.blob_opener = blob_opener
        #: Documents of the image this layer was opened from (a registry reference): (file name, bytes).
        self.documents: list[tuple[str, bytes]] = []
        self.kind = ""
        self.toc: list[toc.TocEntry] | None = None
        self.toc_bytes = b""
        self.toc_header = b""
        self._sections: list[Section] | None = None
        self.notes: list[str] = []
        self._bootstrap_raw: bytes | None = None
        self._spilled: mmap.mmap | None = None  # a large bootstrap decoded into a temporary file
        #: blob.meta's records and blob.digest, and the temporary files large ones were decoded into.
        self._chunk_sections = ChunkSections(self)
        self._blob_files: dict[int, Blob] = {}
        #: For a data blob opened from a bootstrap: its blob-table entry, which locates its blob.meta when
        #: nothing in the file does (:meth:`_entry_from_blob_table`).
        self.table_entry: rafs_v6.BlobTableEntry | None = None
        #: For a data blob that ends in its blob.meta header (:meth:`_try_bare_data_blob`): that header.
        self.own_meta: blob_meta.BlobMetaHeader | None = None
        self._meta_layers: list[Layer] = []
        try:
            self._sniff()
            if data_blob and self.kind in (KIND_BOOTSTRAP_LAYER, KIND_ESTARGZ):
                # A bootstrap's data blob that is a tar or tar.gz holds chunk data, not a bootstrap: a tarfs
                # layer's raw tar, or a targz-ref layer's original tar.gz (read through zran).
                self.kind = KIND_DATA_BLOB
        except FormatError as exc:
            if data_blob and self.size:
                self.kind = KIND_DATA_BLOB
                return
            self.close()
            raise exc.located(path) from None

    # ------------------------------------------------------------------ life cycle
    def close(self) -> None:
        for bf in self._blob_files.values():
            if bf.layer is not self:
                bf.close()
        self._blob_files.clear()
        for meta in self._meta_layers:
            meta.close()
        self._meta_layers.clear()
        close_opener = getattr(self.blob_opener, "close", None)
        if close_opener is not None:
            close_opener()
        for mapped in (self._map, self._spilled):
            if isinstance(mapped, mmap.mmap):
                try:
                    mapped.close()
                except BufferError:
                    pass
        self._chunk_sections.close()
        self.source.close()
        self._fd = -1

    def __enter__(self) -> Layer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ raw access
    def pread(self, offset: int, size: int, what: str = "data") -> bytes:
        """Bytes of the file (:meth:`LocalFile.pread`)."""
        return self.source.pread(offset, size, what)

    def will_need(self, offset: int = 0, size: int = 0) -> None:
        """Let the kernel start reading ``size`` bytes from ``offset`` now (by default the whole file)."""
        self.source.will_need(offset, size)

    @cached_property
    def digest(self) -> str:
        """sha256 of the whole file (the OCI layer digest)."""
        h = hashlib.sha256()
        for off in range(0, self.size, 1 << 22):
            h.update(self.pread(off, min(1 << 22, self.size - off), "layer"))
        return h.hexdigest()

    # ------------------------------------------------------------------ sniffing
    def _sniff(self) -> None:
        m = self._map
        if self.size == 0:
            raise FormatError("layer", "the file is empty", offset=0)
        # A source that holds an EROFS image and nothing else (a seekable layer's frames) is not looked at
        # for a nydus blob's ToC at its end: that would decode the last frame for nothing.
        only_erofs = getattr(self.source, "HOLDS_EROFS", False)
        if self.size >= 512 and not only_erofs and self._try_blob():
            return
        # The EROFS magic lies inside a v5 superblock's reserved bytes, so the two never both match.
        if _is_v6(m):
            # Without the RAFS v6 compat bit it is a plain EROFS image; a file too short to say stays a
            # bootstrap, whose reader names what is missing.
            at = rafs_v6.SUPERBLOCK_OFFSET + 8
            compat = (
                struct.unpack("<I", m[at : at + 4])[0]
                if self.size >= at + 4
                else rafs_v6.FEATURE_COMPAT_RAFS_V6
            )
            self.kind = KIND_BOOTSTRAP if compat & rafs_v6.FEATURE_COMPAT_RAFS_V6 else KIND_EROFS
            return
        if only_erofs:
            raise FormatError(
                "erofs superblock", "no EROFS magic in the image inside", offset=rafs_v6.SUPERBLOCK_OFFSET
            )
        if _is_v5(m):
            self.kind = KIND_BOOTSTRAP_V5
            return
        if self._try_bare_data_blob() or self._try_blob_meta():
            return
        if self.size >= 2 and m[:2] == b"\x1f\x8b" and _is_estargz(m, self.size):
            self.kind = KIND_ESTARGZ
            return
        if self.size >= 2 and m[:2] == b"\x1f\x8b" or self.size >= 265 and m[257:262] == b"ustar":
            self.kind = KIND_BOOTSTRAP_LAYER
            return
        raise FormatError(
            "layer",
            "not a nydus layer blob, RAFS bootstrap or bootstrap layer (no ToC, no tar header at the end, "
            "no RAFS magic, no tar or gzip signature)",
            offset=0,
        )

    def _try_bare_data_blob(self) -> bool:
        """A data blob of chunks, chunk-info array and its 4096-byte header, and nothing else (nydus up to
        v2.1; nydus-image without --blob-inline-meta or blob-toc): its last 4096 bytes are a blob.meta header
        whose chunk-info array ends where the header starts."""
        size = blob_meta.HEADER_SIZE
        if self.size < size:
            return False
        at = self.size - size
        try:
            hdr = blob_meta.BlobMetaHeader.parse(self._map[at:], 0, at)
        except FormatError:
            return False
        # A chunk-info array at offset 0 is a blob.meta file of its own (_try_blob_meta), not a blob of chunks.
        if hdr.s_ci_offset == 0 or hdr.s_ci_offset + hdr.s_ci_compressed_size != at:
            return False
        self.kind = KIND_DATA_BLOB
        self.own_meta = hdr
        self.notes.append("no tar headers and no ToC: blob.meta found by its header at the end of the file")
        return True

    def _try_blob(self) -> bool:
        tail_off = self.size - 512
        tail = self._map[tail_off:]
        try:
            hdr = tar_header.parse(tail, tail_off)
        except FormatError:
            return False
        if hdr.name not in SECTION_NAMES:
            return False
        if hdr.name == RAFS_BLOB_TOC:
            self._read_toc(hdr)
            self.kind = KIND_BLOB_TOC
        else:
            self.kind = KIND_BLOB_NO_TOC
            self.notes.append("no rafs.blob.toc: sections found by walking the tar headers")
            self._sections = self._walk_sections()
        return True

    def _try_blob_meta(self) -> bool:
        """A file that is one blob.meta: its header is the last 4096 bytes and says how big the file is."""
        hs = blob_meta.HEADER_SIZE
        if self.size < hs:
            return False
        at = self.size - hs
        raw = self.pread(at, hs, "blob.meta.header")
        if struct.unpack_from("<I", raw, 0)[0] != blob_meta.MAGIC or raw[-4:] != raw[:4]:
            return False
        hdr = blob_meta.BlobMetaHeader.parse(raw, 0, at)
        if at == hdr.s_ci_compressed_size and (
            hdr.s_ci_compressor == 0 or self.pread(0, 4, "blob.meta") == b"\x28\xb5\x2f\xfd"
        ):
            self._meta_form = (0, at, Compressor.from_algo(hdr.s_ci_compressor), hdr.s_ci_uncompressed_size)
        elif self.size == blob_meta.cache_file_size(hdr.s_ci_uncompressed_size):
            n = hdr.s_ci_uncompressed_size
            self._meta_form = (0, n, Compressor.NONE, n)
        else:
            raise FormatError(
                "blob.meta.header",
                f"a {self.size}-byte file is neither the meta blob ({hdr.s_ci_compressed_size}+{hs} bytes) nor "
                f"the cache-file form ({blob_meta.cache_file_size(hdr.s_ci_uncompressed_size)} bytes) it describes",
                field="s_ci_compressed_size",
                offset=at + 24,
                value=hdr.s_ci_compressed_size,
            )
        self.kind = KIND_BLOB_META
        return True

    @property
    def sections(self) -> list[Section]:
        """Sections found by the tar-header walk. With a ToC this is only walked on demand (verify,
        the no-ToC fallback), so a damaged header elsewhere does not hide entries the ToC locates."""
        if self._sections is None:
            if self.kind not in (KIND_BLOB_TOC, KIND_BLOB_NO_TOC):
                return []
            try:
                self._sections = self._walk_sections()
            except FormatError as exc:
                raise exc.located(self.path) from None
        return self._sections

    def _read_toc(self, hdr: tar_header.TarHeader) -> None:
        if not hdr.gnu:
            raise FormatError("rafs.blob.toc tar header", "not an old-GNU header", offset=hdr.offset + 257)
        if hdr.size > toc.MAX_TOC_SIZE or hdr.size > hdr.offset:
            raise FormatError(
                "rafs.blob.toc tar header",
                "size larger than 1 MiB or than the data before it",
                field="size",
                offset=hdr.offset + 124,
                value=hdr.size,
            )
        start = hdr.offset - hdr.size
        self.toc_bytes = self.pread(start, hdr.size, "rafs.blob.toc")
        self.toc_header = self.pread(hdr.offset, 512, "rafs.blob.toc tar header")
        entries = toc.parse(self.toc_bytes, start)
        limit = start  # entries describe bytes before the ToC
        for i, ent in enumerate(entries):
            where = start + i * toc.ENTRY_SIZE
            off = self._entry_offset(ent)
            if off + ent.compressed_size > limit:
                raise toc.ENTRY.error(
                    "compressed_size",
                    where,
                    f"entry {ent.name} runs past the data before the ToC ({limit} bytes)",
                    ent.compressed_size,
                )
            if (
                ent.compressor is Compressor.NONE
                and ent.name != IMAGE_BLOB
                and ent.compressed_size != ent.uncompressed_size
            ):
                raise toc.ENTRY.error(
                    "uncompressed_size",
                    where,
                    f"uncompressed entry {ent.name} has a different stored size",
                    ent.uncompressed_size,
                )
            if ent.uncompressed_size > codecs.MAX_UNCOMPRESSED and ent.name != IMAGE_BLOB:
                raise toc.ENTRY.error(
                    "uncompressed_size", where, "entry larger than 1 GiB", ent.uncompressed_size
                )
        self.toc = entries
        blob = self.toc_entry(IMAGE_BLOB)
        if blob is not None and blob.compressed_offset != 0:
            self.notes.append(
                f"image.blob ToC offset field is {blob.compressed_offset} (old-blob quirk); its data starts at 0"
            )

    @staticmethod
    def _entry_offset(ent: toc.TocEntry) -> int:
        # Blobs built before 2023 record image.blob at the *end* of the chunk data; it always starts at 0.
        return 0 if ent.name == IMAGE_BLOB else ent.compressed_offset

    def _walk_sections(self) -> list[Section]:
        """The seed converter's tar walk: from the end, each header's data sits right before it."""
        out: list[Section] = []
        cur = self.size - 512
        while cur >= 0:
            hdr = tar_header.parse(self._map[cur : cur + 512], cur)
            if hdr.size > cur:
                raise FormatError(
                    f"{hdr.name} tar header",
                    "size larger than the data before it",
                    field="size",
                    offset=cur + 124,
                    value=hdr.size,
                )
            out.append(Section(hdr.name, cur - hdr.size, hdr.size, cur))
            cur = cur - hdr.size - 512
            if cur < 0:
                # Data must start exactly at offset 0.
                if cur != -512:
                    raise FormatError(
                        "tar header walk", "sections do not start at offset 0", offset=cur + 512
                    )
                break
        out.reverse()
        return out

    # ------------------------------------------------------------------ entries
    def toc_entry(self, name: str) -> toc.TocEntry | None:
        for ent in self.toc or ():
            if ent.name == name:
                return ent
        return None

    def section(self, name: str) -> Section | None:
        for sec in self.sections:
            if sec.name == name:
                return sec
        return None

    def entry_names(self) -> list[str]:
        if self.kind == KIND_BLOB_META:
            return [BLOB_META, BLOB_META_HEADER]
        if self.toc is not None:
            return [e.name for e in self.toc] + [RAFS_BLOB_TOC]
        names = []
        if self.kind == KIND_DATA_BLOB and (
            self.own_meta is not None
            or self.table_entry is not None
            and self.table_entry.ci_uncompressed_size
        ):
            names += [BLOB_META, BLOB_META_HEADER]
        for sec in self.sections:
            if sec.name == BLOB_META:
                names += [BLOB_META, BLOB_META_HEADER]
            else:
                names.append(sec.name)
        return names

    def entry_location(self, name: str) -> tuple[int, int, Compressor, int, bytes | None]:
        """(stored offset, stored size, compressor, uncompressed size, sha256 or None) of entry ``name``."""
        if self.kind == KIND_BLOB_META and name in (BLOB_META, BLOB_META_HEADER):
            hs = blob_meta.HEADER_SIZE
            if name == BLOB_META_HEADER:
                return self.size - hs, hs, Compressor.NONE, hs, None
            return (*self._meta_form, None)
        if name == RAFS_BLOB_TOC and self.toc is not None:
            start = self.size - 512 - len(self.toc_bytes)
            return start, len(self.toc_bytes), Compressor.NONE, len(self.toc_bytes), None
        ent = self.toc_entry(name)
        if ent is not None:
            return (
                self._entry_offset(ent),
                ent.compressed_size,
                ent.compressor,
                ent.uncompressed_size,
                ent.uncompressed_digest,
            )
        # Tar-walk fallback (no ToC, or a name the ToC does not list).
        if name == BLOB_META_HEADER:
            sec = self.section(BLOB_META)
            if sec and sec.size >= blob_meta.HEADER_SIZE:
                return (
                    sec.offset + sec.size - blob_meta.HEADER_SIZE,
                    blob_meta.HEADER_SIZE,
                    Compressor.NONE,
                    blob_meta.HEADER_SIZE,
                    None,
                )
        elif name == BLOB_META:
            sec = self.section(BLOB_META)
            if sec and sec.size >= blob_meta.HEADER_SIZE:
                at = sec.offset + sec.size - blob_meta.HEADER_SIZE
                hdr = blob_meta.BlobMetaHeader.parse(self._map[at : at + blob_meta.HEADER_SIZE], 0, at)
                comp = Compressor.from_algo(hdr.s_ci_compressor)
                return sec.offset, sec.size - blob_meta.HEADER_SIZE, comp, hdr.s_ci_uncompressed_size, None
        else:
            sec = self.section(name)
            if sec is not None:
                if name == IMAGE_BOOT and self.toc is None:
                    # Without a ToC nydus stores the bootstrap raw, unless it is a zstd frame.
                    comp = (
                        Compressor.ZSTD
                        if self._map[sec.offset : sec.offset + 4] == b"\x28\xb5\x2f\xfd"
                        else Compressor.NONE
                    )
                    usize = sec.size if comp is Compressor.NONE else -1
                    return sec.offset, sec.size, comp, usize, None
                return sec.offset, sec.size, Compressor.NONE, sec.size, None
        located = self._entry_from_blob_table(name)
        if located is not None:
            return located
        raise UsageError(
            f"{self.path}: no entry named {name!r} (this layer has: {', '.join(self.entry_names()) or 'none'})"
        )

    def _entry_from_blob_table(self, name: str) -> tuple[int, int, Compressor, int, None] | None:
        """blob.meta and its header in a data blob with neither tar headers nor ToC (nydus up to v2.1, and
        ``nydus-image create`` without ``--blob-inline-meta`` or ``--features blob-toc`` since): only the
        bootstrap's blob-table entry (:attr:`table_entry`) says where the chunk-info array lies; its
        4096-byte header follows it, where nydusd reads both in one go."""
        if self.kind != KIND_DATA_BLOB or name not in (BLOB_META, BLOB_META_HEADER):
            return None
        ent, own = self.table_entry, self.own_meta
        if ent is not None and ent.features & blob_meta.SEPARATE:
            return None  # its blob.meta lies apart (targz-ref: the data is the original .tar.gz)
        if ent is not None and ent.ci_uncompressed_size:
            place = (ent.ci_offset, ent.ci_compressed_size, ent.ci_compressor, ent.ci_uncompressed_size)
        elif own is not None:
            place = (
                own.s_ci_offset,
                own.s_ci_compressed_size,
                own.s_ci_compressor,
                own.s_ci_uncompressed_size,
            )
        else:
            return None  # no blob.meta: the bootstrap's chunk table is all that locates the chunks
        ci_offset, ci_size, ci_comp, ci_usize = place
        at = ci_offset + ci_size
        if at + blob_meta.HEADER_SIZE > self.size:
            raise rafs_v6.BLOB_ENTRY.error(
                "ci_offset",
                0,
                f"the blob table places blob.meta ({ci_size} bytes at {ci_offset}) and its "
                f"{blob_meta.HEADER_SIZE}-byte header past the end of the {self.size}-byte blob file",
                ci_offset,
            ).located(self.path)
        if name == BLOB_META_HEADER:
            return at, blob_meta.HEADER_SIZE, Compressor.NONE, blob_meta.HEADER_SIZE, None
        return ci_offset, ci_size, Compressor.from_algo(ci_comp), ci_usize, None

    def entry_raw(self, name: str) -> bytes:
        off, size, _, _, _ = self.entry_location(name)
        return self.pread(off, size, name)

    def entry(self, name: str, verify: bool = True) -> bytes:
        """The decompressed bytes of entry ``name``, checked against the ToC's size and sha256."""
        off, size, comp, usize, digest = self.entry_location(name)
        raw = self.pread(off, size, name)
        if name in (BLOB_META, BLOB_META_HEADER):
            raw = self._decrypted_meta(raw, name, off)
        if usize < 0:  # zstd bootstrap without a ToC: size from the frame, bounded
            usize = _zstd_frame_size(raw, name, off)
        if comp is Compressor.NONE:
            data = raw
        else:  # entries are kept as bytes (a bootstrap's names are sliced from it as dict keys)
            try:
                data = codecs.decompress(raw, comp, usize, name, off, as_bytes=True)
            except FormatError as exc:
                raise exc.located(self.path) from None  # (blob.meta is read on a chunk's behalf: say where)
            del raw
        if not isinstance(data, bytes):
            data = bytes(data)
        if verify and digest is not None:
            self._check_entry_digest(name, hashlib.sha256(data), off, size, digest)
        return data

    def entry_sha256(self, name: str):
        """The sha256 (a hashlib object) of entry ``name`` as read, not checked against the ToC: streamed as
        :meth:`iter_entry` reads it (a bootstrap may decode to hundreds of MiB)."""
        h = hashlib.sha256()
        for piece in self.iter_entry(name, decode_zstd=True, verify=False):
            h.update(piece)
        return h

    @cached_property
    def meta_in_clear(self) -> bool:
        """Whether this file's blob.meta is stored in the clear: its header then shows its magic where an
        encrypted blob's holds ciphertext."""
        try:
            off, size, _, _, _ = self.entry_location(BLOB_META_HEADER)
            raw = self.pread(off, min(size, 4), BLOB_META_HEADER)
        except NydusInspectError:
            return True  # no header to decrypt: whoever reads it says what is wrong
        return raw == blob_meta.MAGIC.to_bytes(4, "little")

    def _decrypted_meta(self, raw: bytes, name: str, off: int) -> bytes:
        """blob.meta and its header as stored by an encrypted blob (``--encrypt``) are ciphertext, and the ToC
        records the plaintext's sha256: decrypted with the key the blob's table entry keeps (chunks.variants),
        the entry found by where its blob.meta lies. Unchanged for a blob that is not encrypted."""
        if self.meta_in_clear:
            return raw  # the common case, told without decoding the bootstrap (which may be large)
        if self.kind == KIND_DATA_BLOB:
            # A data blob with no ToC: the bootstrap that opened it gave it its table entry.
            blobs = [self.table_entry] if self.table_entry is not None else []
        elif self.kind not in (KIND_BLOB_TOC, KIND_BLOB_NO_TOC) or not self.has_entry(IMAGE_BOOT):
            return raw
        else:
            try:
                blobs = self.rafs.blobs
            except NydusInspectError:
                return raw  # the bootstrap's own reader says what is wrong with it
        for ent in blobs:
            at = ent.ci_offset if name == BLOB_META else ent.ci_offset + ent.ci_compressed_size
            if ent.cipher_algo and ent.ci_compressed_size and at == off:
                from .chunks.variants import Cipher

                cipher = Cipher.of_entry(ent)
                return cipher.decrypt(raw, name, off) if cipher is not None else raw
        return raw

    def _check_entry_digest(self, name: str, h, off: int, size: int, digest: bytes) -> None:
        """Compare a ToC entry's sha256; image.blob's covers its trailing tar header too (nydus quirk)."""
        if name == IMAGE_BLOB:
            h.update(self.pread(off + size, 512, "image.blob tar header"))
        if h.digest() != digest:
            raise FormatError(
                "toc entry",
                f"sha256 of {name} is {h.hexdigest()}, the ToC says {digest.hex()}",
                field="uncompressed_digest",
                offset=off,
            ).located(self.path)

    def iter_entry(
        self, name: str, block: int = 1 << 20, *, decode_zstd: bool = False, verify: bool = True
    ) -> Iterator[bytes]:
        """Stream an entry, checked as :meth:`entry` checks it (unless not ``verify``); uncompressed entries
        (image.blob) are never loaded whole. With ``decode_zstd``, neither are zstd ones (a bootstrap), read and
        decoded a piece at a time: their sha256 is then checked after the last piece, not before the first,
        for a caller that can drop what it got (a temporary file)."""
        off, size, comp, usize, digest = self.entry_location(name)
        streamed = (Compressor.NONE, Compressor.ZSTD) if decode_zstd else (Compressor.NONE,)
        if comp not in streamed or name == BLOB_META_HEADER or (name == BLOB_META and not self.meta_in_clear):
            yield self.entry(name, verify)  # small, or encrypted
            return
        h = hashlib.sha256()
        if comp is Compressor.ZSTD:
            if usize < 0:  # zstd bootstrap without a ToC: size from the frame, bounded
                raw = self.pread(off, size, name)
                usize = _zstd_frame_size(raw, name, off)
            else:
                raw = PieceReader(self.source, off, size, name, codecs.STREAM_PIECE)
            pieces = codecs.iter_zstd(raw, usize, name, off)
        else:
            pieces = (
                self.pread(pos, min(block, off + size - pos), name) for pos in range(off, off + size, block)
            )
        for piece in pieces:
            h.update(piece)
            yield piece
        if verify and digest is not None:
            self._check_entry_digest(name, h, off, size, digest)

    @cached_property
    def toc_digest(self) -> bytes | None:
        if self.toc is None:
            return None
        return toc.toc_digest(self.toc_bytes, self.toc_header)

    # ------------------------------------------------------------------ blob.meta
    def has_entry(self, name: str) -> bool:
        try:
            self.entry_location(name)
        except UsageError:
            return False
        return True

    @cached_property
    def blob_meta_header(self) -> blob_meta.BlobMetaHeader | None:
        if not self.has_entry(BLOB_META_HEADER):
            return None
        off, size, _, _, _ = self.entry_location(BLOB_META_HEADER)
        try:
            return blob_meta.BlobMetaHeader.parse(self.entry(BLOB_META_HEADER), 0, off)
        except FormatError as exc:
            raise exc.located(self.path) from None

    @cached_property
    def chunk_infos(self) -> blob_meta.ChunkInfoArray | None:
        """blob.meta's chunk-info array (chunks.sections), or None without a blob.meta header."""
        # A blob.meta file on its own starts its data at 0 (the header keeps the blob's offsets).
        return self._chunk_sections.infos(located_by_header=self.kind != KIND_BLOB_META)

    @cached_property
    def chunk_digests(self) -> blob_meta.DigestArray | None:
        """blob.digest's digests (chunks.sections), or None without that section."""
        return self._chunk_sections.digests()

    # ------------------------------------------------------------------ bootstrap
    @property
    def has_bootstrap(self) -> bool:
        return self.kind in (
            KIND_BOOTSTRAP,
            KIND_BOOTSTRAP_LAYER,
            KIND_BOOTSTRAP_V5,
            KIND_EROFS,
            KIND_ESTARGZ,
        ) or self.has_entry(IMAGE_BOOT)

    def bootstrap_bytes(self):
        if self._bootstrap_raw is not None:
            return self._bootstrap_raw
        try:
            if self.kind == KIND_EROFS:
                # The image itself, read where it is looked at: the mmap of a local file, else a view that
                # reads the source a few pages at a time (a seekable layer decodes only the frames touched, a
                # remote one fetches only the ranges read), never the whole image with all its file data.
                data = self._map
            elif self.kind in (KIND_BOOTSTRAP, KIND_BOOTSTRAP_V5):
                # All metadata, and RafsV6 indexes its chunk table through a memoryview: held whole.
                data = self._map if not isinstance(self._map, SourceBytes) else self._map[: self.size]
            elif self.kind == KIND_BOOTSTRAP_LAYER:
                data = bootstrap_in_tar(self._map, self.size, MAX_BOOTSTRAP)
            elif self.kind == KIND_ESTARGZ:
                from .estargz import ref_bootstrap

                data = ref_bootstrap(self.estargz_index, self.digest)[0]
            elif self.has_entry(IMAGE_BOOT):
                data = self._bootstrap_entry()
            else:
                raise UsageError(
                    f"{self.path}: this blob holds no bootstrap (image.boot); pass the bootstrap instead, "
                    "with this blob in --blob-dir"
                )
        except FormatError as exc:
            raise exc.located(self.path) from None
        self._bootstrap_raw = data
        return data

    def _bootstrap_entry(self):
        """The blob's image.boot: as bytes, or when large and compressed, decoded into an unlinked temporary
        file and mapped from it. Bytes stay resident for as long as the layer is open; the pages of a map are
        given back to the kernel as the walks go (RafsV6.release_pages). Checked against the ToC either way."""
        _, _, comp, usize, _ = self.entry_location(IMAGE_BOOT)
        if comp is not Compressor.ZSTD or usize < SPILL_BOOTSTRAP:
            return self.entry(IMAGE_BOOT)
        fd = decoded_into_file(self, IMAGE_BOOT, "bootstrap")
        try:
            self._spilled = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
        finally:
            os.close(fd)  # the map keeps the file
        return self._spilled

    @cached_property
    def estargz_index(self):
        """An eStargz layer's footer and TOC, checked (estargz.Index)."""
        from .estargz import read_index

        try:
            return read_index(self.source, self.size)
        except FormatError as exc:
            raise exc.located(self.path) from None

    @cached_property
    def rafs(self) -> RafsV6:
        data = self.bootstrap_bytes()
        try:
            if not _is_v6(data) and _is_v5(data):
                # v5 through the same model and chunk service: RafsV6's interface over v5 inodes.
                from .model_v5 import RafsV5Model

                return RafsV5Model(data, ci_source=self._ci_source)
            if self.kind == KIND_EROFS:
                from .erofs import Erofs

                r = Erofs(data, self.path)
            else:
                r = RafsV6(data, ci_source=self._ci_source)
            if isinstance(data, mmap.mmap):  # a map of a file (this one or a temporary one), never anonymous
                r.release_pages = functools.partial(data.madvise, mmap.MADV_DONTNEED)
            return r
        except FormatError as exc:
            raise exc.located(self.path) from None

    @cached_property
    def rafs_v5(self) -> RafsV5:
        try:
            return _rafs_v5().RafsV5(self.bootstrap_bytes())
        except FormatError as exc:
            raise exc.located(self.path) from None

    @property
    def is_v5(self) -> bool:
        return _is_v5(self.bootstrap_bytes())

    def _ci_source(self, blob_index: int):
        blob = self.blob_file(blob_index, required=False)
        return blob.records() if blob is not None else None

    # ------------------------------------------------------------------ blob files
    def own_blob_index(self) -> int | None:
        """The blob-table index of this layer's own data, for a blob with an inline bootstrap.

        v2.3 writes the placeholder id and INLINED_FS_META; 2022 builders wrote the real id. The blob
        whose blob.meta sits where this file's blob.meta is, or the only blob, is this file's own.
        """
        if self.kind == KIND_ESTARGZ:
            return 0  # the bootstrap made from its TOC lists this blob alone
        if self.kind not in (KIND_BLOB_TOC, KIND_BLOB_NO_TOC) or not self.has_entry(IMAGE_BLOB):
            return None
        if "_own" in self.__dict__:
            return self.__dict__["_own"]
        blobs = self.rafs.blobs
        own = None
        for ent in blobs:
            if (
                ent.id in (rafs_v6.PLACEHOLDER_BLOB_ID, self.name.split(".")[0])
                or ent.features & blob_meta.INLINED_FS_META
            ):
                own = ent.blob_index
                break
        else:
            hdr = self.blob_meta_header
            for ent in blobs:
                if (
                    hdr is not None
                    and ent.ci_offset == hdr.s_ci_offset
                    and ent.chunk_count == hdr.s_ci_entries
                ):
                    own = ent.blob_index
                    break
            else:
                if len(blobs) == 1:
                    own = 0
        self.__dict__["_own"] = own
        return own

    def blob_id(self, blob_index: int) -> str:
        """The real id of a blob: the placeholder of an inline layer becomes the layer file's name."""
        ent = self.rafs.blobs[blob_index]
        if blob_index == self.own_blob_index() and (
            ent.id == rafs_v6.PLACEHOLDER_BLOB_ID or ent.features & blob_meta.INLINED_FS_META
        ):
            return self.name.split(".")[0]
        return ent.id

    def blob_file(self, blob_index: int, required: bool = True) -> Blob | None:
        """The blob-table entry ``blob_index`` resolved (chunks.resolve): its file, compressor and digester."""
        bf = self._blob_files.get(blob_index)
        if bf is not None:
            return bf
        if self.kind == KIND_EROFS:
            bf = self._blob_files[blob_index] = self.rafs.blob(blob_index, self)
            return bf
        if blob_index == self.own_blob_index():
            bf = Blob(blob_index, self, self.rafs.blobs[blob_index])
        else:
            ent = self.rafs.blobs[blob_index]
            path = self._find_blob(ent)
            if path is None and self.blob_opener is not None:
                layer = self.blob_opener(ent.id)
                if layer is not None:
                    bf = Blob(blob_index, layer, ent)
                    self._blob_files[blob_index] = bf
                    return bf
            if path is None:
                cached = self._find_cache_data(ent)
                if cached is not None:
                    layer = Layer(cached, data_blob=True)
                    layer.table_entry = ent
                    bf = self._blob_files[blob_index] = Blob(blob_index, layer, ent, cache_data=True)
                    return bf
            if path is None:
                if not required:
                    return None
                where = self.blob_dir or os.path.dirname(os.path.abspath(self.path))
                # An external blob is no nydus blob: the file the layer references (a model file's layer, say).
                what = "external blob" if blob_index in self.rafs.external else "blob"
                raise UsageError(
                    f"{self.path}: {what} {blob_index} ({ent.id}) not found; give it with --blob FILE or "
                    f"--blob-dir DIR (looked in {where})"
                )
            layer = Layer(path, data_blob=True)
            layer.table_entry = ent
            bf = Blob(blob_index, layer, ent, meta=self._separate_meta(ent))
        self._blob_files[blob_index] = bf
        return bf

    def _separate_meta(self, ent: rafs_v6.BlobTableEntry) -> Layer | None:
        """Where the blob.meta of a blob kept apart from its metadata (SEPARATE: a targz-ref blob, whose data
        is the original .tar.gz) lies: in this layer when it holds it (nydus-image ``--blob-inline-meta``),
        else the file ``<blob id>.blob.meta`` (nydusd's and the snapshotter's cache-file form) or the meta
        blob named by its digest (``--blob-dir``), given with ``--blob`` or in the blob directory."""
        if not ent.features & blob_meta.SEPARATE:
            return None
        hdr = (
            self.blob_meta_header if self.kind in (KIND_BLOB_TOC, KIND_BLOB_NO_TOC, KIND_BLOB_META) else None
        )
        if hdr is not None and hdr.s_ci_entries == ent.chunk_count and hdr.s_ci_offset == ent.ci_offset:
            return self
        names = [ent.id + ".blob.meta", ent.blob_meta_digest.hex()]
        directory = self.blob_dir or os.path.dirname(os.path.abspath(self.path))
        cands = [p for p in self.extra_blobs if os.path.basename(p) in names]
        cands += [os.path.join(directory, n) for n in names if _plain_name(n)]
        for p in cands:
            if os.path.isfile(p):
                meta = Layer(p)
                if meta.kind != KIND_BLOB_META:
                    meta.close()
                    raise UsageError(f"{p}: not a blob.meta file (it is a {meta.kind})")
                self._meta_layers.append(meta)
                return meta
        return None

    def _find_blob(self, ent: rafs_v6.BlobTableEntry) -> str | None:
        blob_id = ent.id
        if not _plain_name(blob_id):
            # The id comes from the bootstrap; used as a path it could name any file on the machine.
            raise rafs_v6.BLOB_ENTRY.error(
                "blob_id",
                self.rafs.meta.ext.s_blob_table_offset + ent.blob_index * rafs_v6.BLOB_ENTRY.size,
                f"blob {ent.blob_index}'s id is not a plain file name, so it names no file in a blob directory",
                _shown(blob_id),
            ).located(self.path)
        found = find_blob(
            blob_id,
            ent.compressed_size,
            files=self.extra_blobs,
            directory=self.blob_dir or os.path.dirname(os.path.abspath(self.path)),
        )
        if (
            found is None
            and len(self.extra_blobs) == 1
            and len(self.rafs.blobs) == 1
            # The blob's blob-cache files are not the blob (_find_cache_data, _separate_meta).
            and os.path.basename(self.extra_blobs[0]) not in (blob_id + ".blob.data", blob_id + ".blob.meta")
        ):
            return self.extra_blobs[0]
        return found

    def _find_cache_data(self, ent: rafs_v6.BlobTableEntry) -> str | None:
        """``<blob id>.blob.data``, given with --blob or in the blob directory: the blob in nydus's blob-cache
        form (nydus-image --blob-cache-dir writes it instead of the blob; nydusd keeps one per blob), when it
        is as large as the blob's uncompressed size says."""
        name = ent.id + ".blob.data"
        directory = self.blob_dir or os.path.dirname(os.path.abspath(self.path))
        cands = [p for p in self.extra_blobs if os.path.basename(p) == name] + [os.path.join(directory, name)]
        for p in cands:
            try:
                st = os.stat(p)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_size >= ent.uncompressed_size:
                return p
        return None

    def content_sha256(self) -> str:
        """The sha256 of the whole file (of a local one once per process, shared with the search of a blob by
        its content)."""
        if os.path.isfile(self.path):
            got = _file_sha256(self.path)
            if got is not None:
                return got
        h = hashlib.sha256()
        for pos in range(0, self.size, 4 << 20):
            h.update(self.pread(pos, min(4 << 20, self.size - pos), "blob"))
        return h.hexdigest()

    @cached_property
    def chunk_reader(self) -> ChunkReader:
        """The chunk service over this layer's blob table: decode, check and cache chunk data."""
        if self.kind == KIND_EROFS:
            from .erofs import ErofsChunkReader

            return ErofsChunkReader(self.blob_file)
        return ChunkReader(self.blob_file)

    def read_chunk(self, chunk: ChunkRef) -> bytes:
        return self.chunk_reader.read(chunk)

    def read_file(self, node: Node) -> Iterator[bytes]:
        """A regular file's checked bytes, chunk by chunk."""
        chunks = node.chunks if node.chunks is not None else self.rafs.chunks(node)
        return self.chunk_reader.read_file(chunks)


def find_blob(blob_id: str, compressed_size: int, *, files: list[str], directory: str) -> str | None:
    """The file holding blob ``blob_id``: among ``files`` (``--blob``) and in ``directory`` (``--blob-dir``),
    by name (``ID`` or ``ID.blob``), else by content (the sha256 of the file, as ``merge`` and OCI layouts
    name a layer blob). Only files whose size fits ``compressed_size`` (the blob table's) are hashed, so a
    large directory costs a listing, not a read of every file. ``blob_id`` must be a plain name.
    """
    for p in files:
        name = os.path.basename(p)
        # (ID.blob.meta and ID.blob.data are the blob's cache files, not the blob: Layer._separate_meta and
        # Layer._find_cache_data look for them.)
        if name.split(".")[0] == blob_id and not name.endswith((".blob.meta", ".blob.data")):
            return p
    for cand in (blob_id, blob_id + ".blob"):
        p = os.path.join(directory, cand)
        if os.path.isfile(p):
            return p
    for p, size in [*_sized(files), *_dir_files(directory)]:
        if _size_fits(p, size, compressed_size) and _file_sha256(p) == blob_id:
            return p
    return None


def _plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name


def _shown(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _sized(paths: list[str]) -> Iterator[tuple[str, int]]:
    """(path, size) of the regular files among ``paths`` (a FIFO would block the hash that follows)."""
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            yield p, st.st_size


def _dir_files(directory: str) -> Iterator[tuple[str, int]]:
    """(path, size) of the regular files in ``directory``, from the listing's own stat calls."""
    try:
        with os.scandir(directory) as it:
            for entry in it:
                try:
                    if entry.is_file():
                        yield entry.path, entry.stat().st_size
                except OSError:
                    continue
    except OSError:
        return


def _size_fits(path: str, size: int, compressed_size: int) -> bool:
    """Could the ``size``-byte file ``path`` be a blob whose blob-table compressed size is ``compressed_size``?

    A data blob's compressed size is its file size. A layer blob with its bootstrap inline records where its
    ``image.boot`` data starts (a tar header ends there), or, built before 2023, where its chunk data ends
    (the ``image.blob`` tar header starts there): at most two 512-byte reads decide.
    """
    if size == compressed_size:
        return True
    if compressed_size <= 0 or size < compressed_size + 512:
        return False
    try:
        with open(path, "rb") as f:
            for at in (compressed_size - 512, compressed_size):
                if at < 0:
                    continue
                try:
                    hdr = tar_header.parse(os.pread(f.fileno(), 512, at), at)
                except FormatError:
                    continue
                if hdr.name in SECTION_NAMES:
                    return True
    except OSError:
        return False
    return False


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def _file_sha256(path: str) -> str | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def _zstd_frame_size(raw: bytes, what: str, offset: int) -> int:
    import zstandard

    try:
        size = zstandard.frame_content_size(raw)
    except zstandard.ZstdError as exc:
        raise FormatError(what, f"bad zstd frame: {exc}", offset=offset) from None
    if size < 0 or size > MAX_BOOTSTRAP:
        raise FormatError(what, "zstd frame without a usable content size", offset=offset, value=size)
    return size


def open_layer(path: str, *, blob_dir: str | None = None, blobs: list[str] | None = None) -> Layer:
    """Open a nydus blob, bootstrap, bootstrap layer, EROFS image (plain or seekable), the OCI image layout of
    a nydus image or of a containerd EROFS image (of several layers: an overlay.LayerStack of them), or an
    image reference (docker://, oci:, oci-archive:, docker-archive:); raises FormatError / UsageError."""
    from . import imageref

    if imageref.is_reference(path) and path.startswith("docker://"):
        return imageref.open_lazy(path, blob_dir=blob_dir, blobs=blobs)
    path = imageref.materialise(path)
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such file")
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "oci-layout")):
            # A converted image: its bootstrap layer, with the layout's blobs (named by digest = blob id);
            # or the layers of an EROFS image: one holds its whole file system, several are overlaid.
            from .oci import is_erofs_layer, readable_layers_of_layout

            _, descs, paths = readable_layers_of_layout(path, imageref.OPTIONS.platforms)
            if not is_erofs_layer(descs[0]):
                return Layer(
                    paths[0], blob_dir=blob_dir or os.path.join(path, "blobs", "sha256"), blobs=blobs
                )
            if len(descs) == 1:
                return open_file(
                    paths[0], blob_dir=blob_dir, blobs=blobs, annotations=descs[0].get("annotations")
                )
            from .overlay import open_stack

            return open_stack(
                path, descs, lambda i, desc: open_file(paths[i], annotations=desc.get("annotations"))
            )
        raise UsageError(
            f"{path}: is a directory; give a layer blob, a bootstrap file or an OCI image layout"
        )
    return open_file(path, blob_dir=blob_dir, blobs=blobs)


def open_file(
    path: str, *, blob_dir: str | None = None, blobs: list[str] | None = None, annotations: dict | None = None
) -> Layer:
    """The layer in the file ``path``: whatever :class:`Layer` reads, or a seekable EROFS layer (located by
    the layer descriptor's ``annotations``, when they are known)."""
    try:
        return Layer(path, blob_dir=blob_dir, blobs=blobs)
    except FormatError as exc:
        # Not a nydus layer: a file of zstd frames may be a seekable EROFS layer (the image inside it is read).
        from .seekable import looks_seekable, open_seekable

        if not (
            exc.structure == "layer" and exc.detail.startswith("not a nydus layer") and looks_seekable(path)
        ):
            raise  # a nydus layer that is damaged says so as it is
        try:
            return open_seekable(path, blob_dir=blob_dir, blobs=blobs, annotations=annotations)
        except FormatError as seek_exc:
            raise FormatError(
                "layer",
                f"{exc.detail}; nor a seekable EROFS layer: {str(seek_exc).removeprefix(path + ': ')}",
                offset=0,
            ).located(path) from None


def _rafs_v5():
    """The RAFS v5 module, imported when a v5 bootstrap turns up (v6 layers never need it)."""
    from .formats import rafs_v5

    return rafs_v5


def _is_estargz(data, size: int) -> bool:
    from .formats.estargz import FOOTER_SIZE, is_estargz

    return is_estargz(data[max(size - FOOTER_SIZE, 0) : size], data[:2], size)


def _is_v6(data) -> bool:
    return len(data) >= 1028 and struct.unpack("<I", data[1024:1028])[0] == rafs_v6.EROFS_MAGIC


def _is_v5(data) -> bool:
    v5 = _rafs_v5()
    return len(data) >= 8 and struct.unpack("<II", data[0:8]) == (v5.MAGIC, v5.VERSION)
