"""verify: check a nydus layer end to end and say where every failure is.

``verify(layer, source=None, progress=None) -> Report`` runs these checks (the
``check`` name of each :class:`Finding`):

=====================  =======================================================================
``tar.header``         every section's trailing tar header parses and is byte for byte the old-GNU
                       header nydus writes for its name and size; sections are known, unique, in order
``toc.format``         ToC entries: no flag bits outside the compressor mask, NUL-padded known and
                       unique names, image.blob offset 0 (or its size, the 2022 quirk), every section listed
``toc.entry``          every ToC entry reads, decompresses and has the sha256 the ToC records
``toc.section``        each ToC entry agrees with the tar header that follows its data
``toc.digest``         the recomputed ToC digest and size equal what the bootstrap's blob table records
                       (and a blob the table gives a ToC has one)
``blob.layout``        the sections present agree with the blob.meta features (HAS_TOC, INLINED_CHUNK_DIGEST,
                       INLINED_FS_META, ALIGNED, CHUNK_INFO_V2, zran fields) and with each other (no zstd
                       image.boot or blob.digest without a ToC; chunk data needs blob.meta or a bootstrap)
``blob_meta``          blob.meta header against the ToC, the blob table and blob.digest
``blob.table``         blob table and device slots: ids equal, NUL-padded and unique, blocks =
                       uncompressed_size/4096, mapped_blkaddr (0, or packed at 512 KiB / 2 MiB), digester and
                       compressor = the superblock's (one blob; merged tables keep each layer's), feature, cipher, ci-size and ToC-size rules; against the
                       blob: features = blob.meta header's (but INLINED_FS_META, which needs an image.boot),
                       uncompressed_size = ToC image.blob's = sum of 4K-rounded chunk sizes, compressed_size =
                       where image.boot starts (inline), the blob's size, or its chunk data size (2022)
``blob.missing``       a blob the bootstrap names cannot be found
``blob.unreadable``    a blob the bootstrap names is found but does not open
``blob.id``            a blob file named by a 64-hex id (the bootstrap's blob id, or the layer's own file
                       name) hashes to it: sha256 of the file, or without its blob.digest array (nydus)
``chunk.layout``       blob.meta records in write order: compressed ranges tile image.blob without gaps or
                       overlaps, uncompressed offsets increase without overlapping
``chunk.range``        a chunk record lies inside image.blob, its uncompressed offset 4K-aligned
``chunk.read``         a chunk reads and decompresses to its recorded size
``chunk.digest``       the digest of a chunk's bytes equals blob.digest
``chunk.crc``          the CRC32C of a chunk's bytes equals the crc32 of the chunk table (flag HAS_CRC32) and
                       of v2 blob.meta, when its digests do not already condemn the chunk
``chunk.table``        ...equals the bootstrap chunk table, whose record agrees with blob.meta; every
                       record is unique, used by a file at its file_offset, with known flags (HAS_CRC32
                       alike per blob, no crc32 without it) and sizes inside its blob; every chunk index has
                       a record
``bootstrap``          the bootstrap decodes (superblocks, blob table)
``bootstrap.super``    superblock fields nydus fixes (checksum, compat/incompat, block size, root nid 128,
                       xattr blkaddr, s_u, meta_blkaddr after the tables, s_blocks, s_inos = number of
                       names), ext-superblock flag bits (unknown, INLINED_CHUNK_DIGEST, TARFS, encryption,
                       HAS_XATTR when inodes have xattrs), prefetch table placement, size a 4K multiple
``bootstrap.inode``    every inode decodes and lies in range, its layout fits its type (files chunk-based,
                       devices and fifos empty), i_ino <= s_inos, chunk format (i_u), symlink targets
                       non-empty without NUL, xattrs decode (shared ones too) and none is shared (nydusd
                       reads no shared xattr area)
``bootstrap.dir``      every directory: dirents sorted by raw bytes, '.' and '..' pointing to self and
                       parent, file types equal to the inodes', i_size = size of its dirents, blocks packed
                       and zero-filled as nydus writes them, names without NUL or '/', reached once
``bootstrap.nlink``    dirs: 2 + subdirs; others: the number of names (v2.3: names sharing a nid; 2022:
                       inodes sharing an i_ino, which must then hold the same file)
``bootstrap.chunks``   every file's chunks resolve to a blob and a chunk record
``bootstrap.layout``   inodes, their data and chunk indexes, and the fixed tables never overlap
``bootstrap.prefetch`` prefetch table entries are inodes of the tree
``roundtrip``          the layer's tree equals the source tar's (``source=``)
``erofs.*``            a plain EROFS image instead of all the above but ``roundtrip``: superblock, inodes
                       and directories, link counts, every file's data reads (``verify.erofs``)
``estargz.*``          an eStargz layer instead of all the above but ``roundtrip``: footer and TOC decode, the
                       TOC digest (when given), every chunk's chunkDigest, every file's digest
                       (``verify.estargz``)
=====================  =======================================================================

The checks live in one module each, by the structure they check (this package's index):

=====================  =======================================================================
``bootstrap``          bootstrap.*, blob.table (bootstrap side), chunk.table (bootstrap side)
``blobs``              blob.missing, blob.unreadable
``layout``             tar.header, toc.format, blob.layout
``toc``                toc.entry, toc.section, toc.digest
``blob_meta``          blob_meta, chunk.layout
``blob_table``         blob.table (against the blob file)
``chunks``             chunk.range, chunk.read, chunk.digest, chunk.crc, chunk.table (per chunk)
``blob_ids``           blob.id
``roundtrip``          roundtrip
``findings``           Finding, Report; ``run``: a run's state; ``ahead``: its head start
=====================  =======================================================================

A chunk finding names the blob, the chunk index, its compressed offset in the
blob file and the file(s) that use it. Operations layer: no printing; progress
is a callback ``progress(stage, done, total)``.

The work that runs without the GIL (chunk decompression and digests, ToC entry and blob-id sha256s)
starts in worker threads before the bootstrap walk, whose structural checks are Python-bound, and
the main thread joins the chunk work when it gets there (:class:`_Ahead`, :class:`_Batches`). Each
stage still takes its results in its turn: the report is the one a sequential run makes.

What no check can see (bytes readers ignore, and fields a flip turns into another valid value) is
listed, with the reasons, in ``tests/test_fault_injection.py`` (``UNCOVERED``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import NydusInspectError
from ..layer import KIND_EROFS, KIND_ESTARGZ, Layer
from .blob_ids import _check_blob_ids
from .blob_meta import _check_blob_meta, _check_chunk_layout
from .blob_table import _check_blob_entry
from .blobs import _blob_layers
from .bootstrap import _check_bootstrap
from .chunks import ChunkRecord, ChunkVerifier, _check_chunks
from .erofs import _check_erofs, _check_seekable, _check_verity
from .findings import DEFAULT_LIMIT, STAGES, Cancelled, Finding, Report, _guard
from .layout import _check_layout
from .roundtrip import _check_roundtrip
from .run import _Run
from .toc import _check_toc, entry_check
from .v5 import _check_v5

if TYPE_CHECKING:
    from .findings import Progress


def verify(
    layer: Layer,
    source: str | None = None,
    progress: Progress | None = None,
    *,
    cancel: Callable[[], bool] | None = None,
    limit: int = DEFAULT_LIMIT,
    workers: int = 0,
    toc_digest: str | None = None,
    root_hash: bytes | None = None,
    verity_salt: bytes | None = None,
) -> Report:
    """Run every check that applies to ``layer`` (and the round trip against the tar ``source``).

    Never raises for bad bytes: each problem becomes a :class:`Finding`. ``progress(stage, done,
    total)`` reports each stage (see ``STAGES``); when ``cancel()`` returns True the run stops and
    the report says ``cancelled``.
    """
    run = _Run(layer, progress, cancel, limit, workers)
    # Layers whose checks are their own: the whole run is that check (and the round trip).
    whole = _whole_check(run, toc_digest, root_hash, verity_salt)
    if whole is not None:
        try:
            whole()
            if source is not None:
                _check_roundtrip(run, source)
        except Cancelled:
            run.report.cancelled = True
        return run.report
    try:
        run.ahead.start()
        _guard(run, "bootstrap", layer.path, _check_bootstrap, run)
        blobs = list(_blob_layers(run))
        # A blob present only in its blob-cache form holds decoded chunks and nothing else: no structure or
        # id of the blob to check, only its chunks (read where the cache keeps them, checked by their digests).
        cached = [b for b in blobs if _cache_data(run, b[0])]
        for blob_index, blob_layer, _ in cached:
            run.report.notes.append(
                f"blob {blob_index} is read from its blob-cache file {blob_layer.path}: its chunks are checked "
                "by their digests; the blob itself, and so its id, is not there to check"
            )
        whole_blobs = [b for b in blobs if b not in cached]
        # A blob kept apart from its metadata (targz-ref: the data is the original .tar.gz) has its structure
        # checked where its blob.meta lies; its chunks are read from the data.
        metas = [(i, _meta_layer(run, i, b), e) for i, b, e in whole_blobs]
        for blob_index, blob_layer, entry in metas:
            _guard(run, "tar.header", blob_layer.path, _check_layout, run, blob_layer, blob_index, entry)
            _guard(run, "toc.entry", blob_layer.path, _check_toc, run, blob_layer, blob_index, entry)
        for blob_index, blob_layer, entry in metas:
            _guard(run, "blob_meta", blob_layer.path, _check_blob_meta, run, blob_layer, blob_index, entry)
            _guard(run, "blob.table", blob_layer.path, _check_blob_entry, run, blob_layer, blob_index, entry)
            _guard(run, "chunk.layout", blob_layer.path, _check_chunk_layout, run, blob_layer, blob_index)
        for blob_index, blob_layer, entry in blobs:
            _guard(run, "chunk.read", blob_layer.path, _check_chunks, run, blob_layer, blob_index, entry)
        _guard(run, "blob.id", layer.path, _check_blob_ids, run, whole_blobs)
        if source is not None:
            _check_roundtrip(run, source)
    except Cancelled:
        run.report.cancelled = True
    finally:
        run.ahead.close()
    return run.report


def _whole_check(run: _Run, toc_digest, root_hash, verity_salt) -> Callable[[], None] | None:
    """The check that is the whole run for a layer that is not a RAFS v6 layer with blobs, or None."""
    layer = run.layer
    if _is_v5(layer):
        # A v5 bootstrap and its blobs: no ToC, blob.meta or blob.digest, the bootstrap's records only.
        return lambda: _check_v5(run)
    if layer.kind == KIND_ESTARGZ:
        # ``toc_digest``: the eStargz TOC digest (the toc.digest annotation) its TOC must hash to.
        from .estargz import _check_estargz

        return lambda: _guard(run, "estargz.toc", layer.path, _check_estargz, run, toc_digest)
    if layer.kind == KIND_EROFS:
        # A plain EROFS image may carry a dm-verity payload after it (``root_hash``: the one to trust).
        run.verity_root, run.verity_salt = root_hash, verity_salt

        def erofs() -> None:
            # A seekable layer's frames first: damage in one is then named as such, whatever reads it later.
            _guard(run, "seekable.frame", layer.path, _check_seekable, run)
            _guard(run, "erofs.super", layer.path, _check_erofs, run)
            _guard(run, "verity.payload", layer.path, _check_verity, run)

        return erofs
    return None


def _is_v5(layer: Layer) -> bool:
    try:
        return layer.has_bootstrap and layer.is_v5
    except NydusInspectError:
        return False  # the bootstrap check says what is wrong


def _resolved(run: _Run, blob_index: int | None):
    """Blob ``blob_index`` as the readers resolve it (chunks.resolve.Blob), or None (not found, or no index:
    the blob and bootstrap checks say what is wrong)."""
    if blob_index is None:
        return None
    try:
        return run.layer.blob_file(blob_index, required=False)
    except NydusInspectError:
        return None


def _cache_data(run: _Run, blob_index: int | None) -> bool:
    """Is blob ``blob_index`` read from its blob-cache file (chunks.variants.CacheData)?"""
    bf = _resolved(run, blob_index)
    return bf is not None and bf.cache_data


def _meta_layer(run: _Run, blob_index: int | None, blob_layer: Layer) -> Layer:
    """The layer holding the blob.meta of blob ``blob_index`` (chunks.resolve.Blob.meta): the blob itself,
    or, for a targz-ref blob, the layer or meta file beside the bootstrap."""
    bf = _resolved(run, blob_index)
    return bf.meta if bf is not None and bf.layer is blob_layer else blob_layer


__all__ = [
    "STAGES",
    "Cancelled",
    "ChunkRecord",
    "ChunkVerifier",
    "Finding",
    "Report",
    "entry_check",
    "verify",
]
