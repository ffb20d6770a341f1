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
                       non-empty without NUL
``bootstrap.dir``      every directory: dirents sorted by raw bytes, '.' and '..' pointing to self and
                       parent, file types equal to the inodes', i_size = size of its dirents, blocks packed
                       and zero-filled as nydus writes them, names without NUL or '/', reached once
``bootstrap.nlink``    dirs: 2 + subdirs; others: the number of names (v2.3: names sharing a nid; 2022:
                       inodes sharing an i_ino)
``bootstrap.chunks``   every file's chunks resolve to a blob and a chunk record
``bootstrap.layout``   inodes, their data and chunk indexes, and the fixed tables never overlap
``bootstrap.prefetch`` prefetch table entries are inodes of the tree
``roundtrip``          the layer's tree equals the source tar's (``source=``)
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

import hashlib
import os
import re
import struct
import sys
import threading
from array import array
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields

from .chunks.decode import RUN_BYTES, Failed, iter_decoded
from .chunks.resolve import Blob
from .codecs import Compressor
from .digests import crc32c
from .errors import FormatError, NydusInspectError, UsageError
from .formats import blob_meta, rafs_v6, tar_header, toc
from .formats._struct import round_up
from .formats.tar_header import (
    BLOB_DIGEST,
    BLOB_META,
    BLOB_META_HEADER,
    IMAGE_BLOB,
    IMAGE_BOOT,
    RAFS_BLOB_TOC,
)
from .inspect import FileIndex, WalkError, walk_tree
from .layer import ENTRY_NAMES, KIND_BLOB_NO_TOC, KIND_BLOB_TOC, SECTION_NAMES, Layer
from .model import DIR, FT_OF_TYPE, REG, SYMLINK, fsdecode, node_type

#: Findings kept per check; the rest are only counted (a badly broken blob would otherwise list millions).
DEFAULT_LIMIT = 1000
#: Chunks read per batch in the chunk pass.
BATCH = 256
#: Findings that chunk batches checked ahead of their turn may hold before the report collects them.
AHEAD_FINDINGS = 20000

STAGES = ("bootstrap", "toc", "blob.meta", "chunks", "roundtrip")

Progress = Callable[[str, int, int], None]


class Cancelled(NydusInspectError):
    """Verification stopped because ``cancel()`` said so."""


@dataclass(frozen=True)
class Finding:
    """One failed check, with where it is."""

    check: str
    message: str
    structure: str | None = None  # the on-disk structure: "rafs.blob.toc", "blob.meta.header", "chunk", ...
    file: str | None = None  # which file on disk (the layer, or one of its blob files)
    entry: str | None = None  # ToC entry name
    blob_index: int | None = None
    chunk: int | None = None  # chunk index in the blob's blob.meta
    path: str | None = None  # the file in the image (for chunks: the first file using it)
    paths: tuple[str, ...] = ()  # every file using the chunk
    offset: int | None = None  # absolute offset in ``file``
    field: str | None = None
    expected: str | None = None
    found: str | None = None

    @property
    def where(self) -> str:
        parts = []
        if self.entry is not None:
            parts.append(f"entry {self.entry}")
        if self.chunk is not None:
            parts.append(
                f"chunk {self.chunk}" + (f" of blob {self.blob_index}" if self.blob_index is not None else "")
            )
        elif self.blob_index is not None:
            parts.append(f"blob {self.blob_index}")
        if self.structure is not None and self.entry is None and self.chunk is None:
            parts.append(self.structure)
        if self.field is not None:
            parts.append(f"field {self.field}")
        if self.offset is not None:
            parts.append(f"offset {self.offset}")
        if self.paths:
            shown = ", ".join(self.paths[:3]) + (
                f" (+{len(self.paths) - 3} more)" if len(self.paths) > 3 else ""
            )
            parts.append(f"file {shown}")
        elif self.path is not None:
            parts.append(f"file {self.path}")
        return ", ".join(parts) or "layer"

    def to_json(self) -> dict:
        out: dict = {"check": self.check, "message": self.message, "where": self.where}
        for f in fields(self):
            if f.name in ("check", "message"):
                continue
            value = getattr(self, f.name)
            if value is None or value == ():
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def __str__(self) -> str:
        text = f"{self.check}: {self.where}: {self.message}"
        if self.expected is not None or self.found is not None:
            text += f" (expected {self.expected}, found {self.found})"
        return text


@dataclass
class Report:
    """What :func:`verify` found. ``ok`` is True when no check failed."""

    path: str
    findings: list[Finding] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)  # items checked per stage
    suppressed: dict[str, int] = field(default_factory=dict)  # findings over the limit, per check
    notes: list[str] = field(default_factory=list)  # assumptions made, checks that could not run
    cancelled: bool = False

    @property
    def ok(self) -> bool:
        return not self.findings and not self.suppressed and not self.cancelled

    @property
    def failures(self) -> int:
        return len(self.findings) + sum(self.suppressed.values())

    def summary(self) -> str:
        done = ", ".join(f"{n} {k}" for k, n in self.checked.items() if n)
        if self.cancelled:
            return f"cancelled after checking {done or 'nothing'}"
        if self.ok:
            return f"OK: checked {done or 'nothing'}"
        return f"FAILED: {self.failures} finding(s); checked {done}"

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "ok": self.ok,
            "failures": self.failures,
            "checked": dict(self.checked),
            "findings": [f.to_json() for f in self.findings],
            "suppressed": dict(self.suppressed),
            "notes": list(self.notes),
            "cancelled": self.cancelled,
        }


# ---------------------------------------------------------------------------- the driver
class _Run:
    def __init__(
        self,
        layer: Layer,
        progress: Progress | None,
        cancel: Callable[[], bool] | None,
        limit: int,
        workers: int,
    ) -> None:
        self.layer = layer
        self.report = Report(layer.path)
        self.progress = progress
        self.cancel = cancel
        self.limit = limit
        self.workers = workers or os.cpu_count() or 1
        self.index: FileIndex | None = None
        self._counts: dict[str, int] = {}
        self.ahead = _Ahead(self)
        self.columns: tuple | None = None  # (chunk-info array, _columns of it)

    def add(self, finding: Finding) -> None:
        n = self._counts.get(finding.check, 0) + 1
        self._counts[finding.check] = n
        if n > self.limit:
            self.report.suppressed[finding.check] = self.report.suppressed.get(finding.check, 0) + 1
        else:
            self.report.findings.append(finding)

    def tick(self, stage: str, done: int, total: int) -> None:
        if self.cancel is not None and self.cancel():
            raise Cancelled(f"verification cancelled during {stage}")
        if self.progress is not None:
            self.progress(stage, done, total)

    def count(self, stage: str, n: int = 1) -> None:
        self.report.checked[stage] = self.report.checked.get(stage, 0) + n

    def owners(self, blob_index: int | None, ci: int) -> tuple[str, ...]:
        if self.index is None or blob_index is None:
            return ()
        return tuple(self.index.owners(blob_index, ci))


def verify(
    layer: Layer,
    source: str | None = None,
    progress: Progress | None = None,
    *,
    cancel: Callable[[], bool] | None = None,
    limit: int = DEFAULT_LIMIT,
    workers: int = 0,
) -> Report:
    """Run every check that applies to ``layer`` (and the round trip against the tar ``source``).

    Never raises for bad bytes: each problem becomes a :class:`Finding`. ``progress(stage, done,
    total)`` reports each stage (see ``STAGES``); when ``cancel()`` returns True the run stops and
    the report says ``cancelled``.
    """
    run = _Run(layer, progress, cancel, limit, workers)
    try:
        run.ahead.start()
        _guard(run, "bootstrap", layer.path, _check_bootstrap, run)
        blobs = list(_blob_layers(run))
        for blob_index, blob_layer, entry in blobs:
            _guard(run, "tar.header", blob_layer.path, _check_layout, run, blob_layer, blob_index, entry)
            _guard(run, "toc.entry", blob_layer.path, _check_toc, run, blob_layer, blob_index, entry)
        for blob_index, blob_layer, entry in blobs:
            _guard(run, "blob_meta", blob_layer.path, _check_blob_meta, run, blob_layer, blob_index, entry)
            _guard(run, "blob.table", blob_layer.path, _check_blob_entry, run, blob_layer, blob_index, entry)
            _guard(run, "chunk.layout", blob_layer.path, _check_chunk_layout, run, blob_layer, blob_index)
        for blob_index, blob_layer, entry in blobs:
            _guard(run, "chunk.read", blob_layer.path, _check_chunks, run, blob_layer, blob_index, entry)
        _guard(run, "blob.id", layer.path, _check_blob_ids, run, blobs)
        if source is not None:
            _check_roundtrip(run, source)
    except Cancelled:
        run.report.cancelled = True
    finally:
        run.ahead.close()
    return run.report


class _Ahead:
    """The GIL-free work of a run (chunk decompression and digests, ToC entry sha256s), started in worker
    threads before the bootstrap walk so that it overlaps the Python-bound structural checks.

    Only a head start: each stage takes its results in its turn, in the same order, so the report is the
    one a sequential run makes. Whatever cannot be set up early is left to its stage, which then does it
    (and reports its problems) itself.
    """

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.pool: ThreadPoolExecutor | None = None
        self.chunks: dict[tuple[int | None, str], tuple[ChunkVerifier, _Batches]] = {}
        self.entries: dict[tuple[str, str], object] = {}
        self.contents: dict[str, object] = {}  # blob path -> future of _content_digests (blob.id)

    def start(self) -> None:
        self.run.layer.will_need()  # every byte of it is read: the disk can start while the bootstrap decodes
        try:
            targets = self._targets()
        except Exception:  # noqa: BLE001 - the stages meet (and report) the same problem in their turn
            return
        if not targets:
            return
        for _, blob in targets:
            if blob is not self.run.layer:
                blob.will_need()
        # One thread fewer than the CPUs: the main thread has the bootstrap walk to do meanwhile, and takes
        # its share of the chunk batches still waiting when it gets to them (take_chunks).
        self.pool = ThreadPoolExecutor(max_workers=max(1, self.run.workers - 1), thread_name_prefix="verify")
        try:
            ids = self._id_blobs(targets)
        except Exception:  # noqa: BLE001
            ids = set()
        for _, blob in targets:
            try:
                shared = None
                if blob.path in ids:
                    # One read of the file for its blob id, and for the image.blob entry when that is a prefix.
                    shared = _blob_id_pass(blob)
                    self.contents[blob.path] = self.pool.submit(_content_digests, blob, shared)
                if blob.toc is not None:
                    for e in blob.toc:
                        key = (blob.path, e.name)
                        if shared is not None and e.name == IMAGE_BLOB:
                            self.entries[key] = self.contents[blob.path]
                        else:
                            self.entries[key] = self.pool.submit(entry_check, blob, e.name)
            except Exception:  # noqa: BLE001
                pass
        for blob_index, blob in targets:
            try:
                blob.chunk_infos  # noqa: B018
                cv = ChunkVerifier(self.run.layer, blob_index) if blob_index is not None else ChunkVerifier(blob)
                cv.table  # noqa: B018
            except Exception:  # noqa: BLE001
                continue
            self.chunks[(blob_index, blob.path)] = (cv, _Batches(self.pool, cv, 2 * self.pool._max_workers))

    def _targets(self) -> list[tuple[int | None, Layer]]:
        """(blob index, blob layer) pairs as :func:`_blob_layers` will find them (a subset of them)."""
        layer = self.run.layer
        if layer.has_bootstrap and not layer.is_v5:
            out = []
            for ent in layer.rafs.blobs:
                bf = layer.blob_file(ent.blob_index, required=False)
                if bf is not None:
                    out.append((ent.blob_index, bf.layer))
            return out
        if not layer.has_bootstrap and layer.kind in (KIND_BLOB_TOC, KIND_BLOB_NO_TOC):
            return [(None, layer)]
        return []

    def _id_blobs(self, targets) -> set[str]:
        """Paths of the blobs whose blob id :func:`_check_blob_ids` will check (as it chooses them)."""
        layer = self.run.layer
        out = set()
        if layer.kind in (KIND_BLOB_TOC, KIND_BLOB_NO_TOC) and _HEX64.fullmatch(layer.name.split(".")[0]):
            out.add(layer.path)
        rafs = layer.rafs if layer.has_bootstrap and not layer.is_v5 else None
        for blob_index, blob in targets:
            if rafs is not None and blob_index is not None and blob is not layer:
                if _HEX64.fullmatch(rafs.blobs[blob_index].id):
                    out.add(blob.path)
        return out

    def entry_check(self, blob: Layer, name: str) -> Finding | None:
        fut = self.entries.pop((blob.path, name), None)
        if fut is not None and fut is self.contents.get(blob.path):
            try:
                got = fut.result()[2]
                recorded = blob.entry_location(name)[4]
            except Exception:  # noqa: BLE001 - checked the ordinary way, which reports it
                return entry_check(blob, name)
            return _entry_finding(blob, name, recorded.hex() if recorded is not None else "", got)
        return fut.result() if fut is not None else entry_check(blob, name)

    def content_digests(self, blob: Layer) -> tuple[str, str | None]:
        fut = self.contents.pop(blob.path, None)
        if fut is not None:
            try:
                return fut.result()[:2]
            except Exception:  # noqa: BLE001 - read again the ordinary way, which raises it in its turn
                pass
        return _content_digests(blob)[:2]

    def take_chunks(self, blob_index: int | None, blob: Layer) -> tuple[ChunkVerifier, _Batches] | None:
        return self.chunks.pop((blob_index, blob.path), None)

    def close(self) -> None:
        for _, batches in self.chunks.values():
            batches.stop()
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


def _guard(run: _Run, check: str, path: str, fn, *args) -> None:
    """Run one stage; bad bytes it did not foresee become a finding instead of ending the run."""
    try:
        fn(*args)
    except Cancelled:
        raise
    except NydusInspectError as exc:
        run.add(_exc_finding(check, exc, file=path))


def _exc_finding(check: str, exc: NydusInspectError, **kw) -> Finding:
    if isinstance(exc, FormatError):
        kw.setdefault("structure", exc.structure)
        kw.setdefault("offset", exc.offset)
        kw.setdefault("field", exc.field)
        if exc.where is not None:
            kw.setdefault("file", exc.where)
        if exc.value is not None:
            kw.setdefault("found", _show(exc.value))
        return Finding(check, exc.detail, **kw)
    return Finding(check, str(exc), **kw)


def _show(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return str(value)


# ---------------------------------------------------------------------------- bootstrap
def _check_bootstrap(run: _Run) -> None:
    layer = run.layer
    try:
        has = layer.has_bootstrap
    except NydusInspectError as exc:
        run.add(_exc_finding("bootstrap", exc, file=layer.path))
        return
    if not has:
        run.report.notes.append("no bootstrap: file and bootstrap checks skipped")
        return
    try:
        if layer.is_v5:
            run.report.notes.append("RAFS v5 bootstrap: tree checks need RAFS v6 and were skipped")
            return
        rafs = layer.rafs
    except NydusInspectError as exc:
        run.add(_exc_finding("bootstrap", exc, file=layer.path, entry=IMAGE_BOOT if layer.toc else None))
        return
    index = FileIndex()
    for b in rafs.blobs:
        index._first[b.blob_index] = array("q", [-1]) * b.chunk_count
    run.index = index
    total = rafs.inode_count()
    nblobs = len(rafs.blobs)
    tree = _Tree(run, rafs)
    tree.check_super()
    tree.check_blob_table()
    try:
        records = rafs._chunk_records()
    except (NydusInspectError, struct.error) as exc:
        run.add(
            Finding("chunk.table", f"chunk table does not decode: {exc}", structure=_CT.name, file=layer.path)
        )
        records = {}

    def bad_walk(err: WalkError) -> None:
        index.errors.append(err)
        run.add(_exc_finding("bootstrap.inode", err.error, path=fsdecode(err.path), file=layer.path))

    seen_nids = tree.nids
    paths = inodes = 0
    run.tick("bootstrap", 0, total)
    for n, node in enumerate(walk_tree(_WalkView(rafs, tree.dirents), on_error=bad_walk)):
        pid = index.add_path(node.path)
        first_visit = node.nid not in seen_nids
        seen_nids.add(node.nid)
        paths += 1
        tree.visit(node, first_visit)
        if first_visit:
            inodes += 1
        if node.hardlink is not None:
            index.add_hardlink(node.hardlink, pid)
        if node.type == REG:
            index.files += 1
            try:
                chunks = rafs.chunks(node)
            except NydusInspectError as exc:
                run.add(_exc_finding("bootstrap.chunks", exc, path=fsdecode(node.path), file=layer.path))
                chunks = []
            tree.file_chunks(node, chunks, records, first_visit)
            for c in chunks:
                new = index.add_owner(c.blob_index, c.ci_index, pid)
                if first_visit and 0 <= c.blob_index < nblobs:
                    count = rafs.blobs[c.blob_index].chunk_count
                    if new and c.ci_index >= count:
                        run.add(
                            Finding(
                                "bootstrap.chunks",
                                f"chunk index beyond the blob's {count} chunks",
                                structure="erofs chunk index",
                                file=layer.path,
                                blob_index=c.blob_index,
                                chunk=c.ci_index,
                                path=fsdecode(node.path),
                                expected=f"< {count}",
                                found=str(c.ci_index),
                            )
                        )
            node.chunks = None  # keep memory flat on big images
        if n & 1023 == 1023:
            run.count("paths", paths)
            run.count("inodes", inodes)
            paths = inodes = 0
            run.tick("bootstrap", n + 1, total)
    run.count("paths", paths)
    run.count("inodes", inodes)
    tree.dirents.clear()
    tree.finish(complete=not index.errors)
    run.tick("bootstrap", total, total)


class _WalkView:
    """What :func:`walk_tree` reads of a bootstrap, handing it the directories that :meth:`_Tree._dir` has
    just decoded instead of decoding them a second time."""

    def __init__(self, rafs, dirents: dict) -> None:
        self.rafs = rafs
        self.root_nid = rafs.root_nid
        self.dirents = dirents

    def root(self):
        return self.rafs.root()

    def node(self, nid: int, path: bytes):
        return self.rafs.node(nid, path)

    def readdir(self, nid: int):
        ents = self.dirents.pop(nid, None)
        return ents if ents is not None else self.rafs.readdir(nid)


_SB, _EXT, _DEV, _BLOB, _CT = (
    rafs_v6.SUPERBLOCK,
    rafs_v6.EXT_SUPERBLOCK,
    rafs_v6.DEVICE,
    rafs_v6.BLOB_ENTRY,
    rafs_v6.CHUNK_TABLE_ENTRY,
)
_KNOWN_SUPER_FLAGS = sum(rafs_v6.SUPER_FLAG_NAMES)
#: s_flags bits 26..31: reserved but compatible (readers ignore them).
_COMPAT_SUPER_FLAGS = 0xFC00_0000
_CHUNK_FLAGS = (
    rafs_v6.CHUNK_COMPRESSED
    | rafs_v6.CHUNK_HOLE
    | rafs_v6.CHUNK_ENCRYPTED
    | rafs_v6.CHUNK_BATCH
    | rafs_v6.CHUNK_HAS_CRC32
)
#: Fixed tables of the overlap check (tags -1, -2, ...).
_TABLES = ("superblocks", "device table", "blob table", "prefetch table", "chunk table")
#: mapped_blkaddr alignments seen in real images: v2.3 (512 KiB) and 2023 development builds (2 MiB).
_MAPPED_ALIGNS = (0x80000, 0x200000)
_NOT_TILED = blob_meta.BATCH | blob_meta.ZRAN | blob_meta.SEPARATE


class _Tree:
    """Structure checks of a RAFS v6 bootstrap, fed node by node by the tree walk."""

    def __init__(self, run: _Run, rafs) -> None:
        self.run = run
        self.rafs = rafs
        self.path = run.layer.path
        self.sb, self.ext = rafs.sb, rafs.ext
        self.chunk_bits = rafs.chunk_size.bit_length() - 1
        self.names = 0
        self.dirs_reached: dict[int, int] = {}
        self.parent: dict[int, int] = {rafs.root_nid: rafs.root_nid}
        self.links: dict[int, list] = {}  # non-dir nid -> [names, nlink, i_ino, path, offset]
        # Extents for the overlap check, flat: tag 2*nid = the inode record, 2*nid+1 = its data blocks,
        # negative = a fixed table (_TABLES). Paths are looked up again only for a finding.
        self._starts, self._ends, self._tags = array("q"), array("q"), array("q")
        # File offset at which files use each chunk: the first per blob chunk, the rest (dedup) in a dict.
        self._first_off: dict[int, array] = {}
        self._more_off: dict[tuple[int, int], set[int]] = {}
        self.has_xattrs: str | bool = False  # the first path with xattrs
        self.nids: set[int] = set()  # every inode the walk reached
        # nid -> what RafsV6.readdir returns for it, from _dir, until the walk asks for it (_WalkView).
        self.dirents: dict[int, list] = {}

    def bad(self, check: str, message: str, **kw) -> None:
        kw.setdefault("file", self.path)
        for key in ("expected", "found"):
            if key in kw and kw[key] is not None and not isinstance(kw[key], str):
                kw[key] = _show(kw[key])
        self.run.add(Finding(check, message, **kw))

    # ------------------------------------------------------------------ fixed part
    def check_super(self) -> None:
        sb, ext, rafs = self.sb, self.ext, self.rafs

        sb_bad = self._field_reporter("bootstrap.super", _SB, rafs_v6.SUPERBLOCK_OFFSET)

        for fld in ("s_checksum", "s_extslots", "s_xattr_blkaddr", "s_u"):
            if getattr(sb, fld):
                sb_bad(fld, "must be 0 in RAFS v6", 0, getattr(sb, fld))
        if sb.s_feature_compat != rafs_v6.FEATURE_COMPAT_RAFS_V6:
            sb_bad(
                "s_feature_compat",
                "compat features other than RAFS_V6",
                hex(rafs_v6.FEATURE_COMPAT_RAFS_V6),
                hex(sb.s_feature_compat),
            )
        if sb.s_feature_incompat != rafs_v6.FEATURE_INCOMPAT:
            sb_bad(
                "s_feature_incompat",
                "must be exactly CHUNKED_FILE | DEVICE_TABLE",
                hex(rafs_v6.FEATURE_INCOMPAT),
                hex(sb.s_feature_incompat),
            )
        want_bits = 9 if ext.s_flags & rafs_v6.TARFS_MODE else 12
        if sb.s_blkszbits != want_bits:
            sb_bad("s_blkszbits", "block size does not match the tarfs mode flag", want_bits, sb.s_blkszbits)
        if sb.s_root_nid != rafs_v6.ROOT_NID:
            sb_bad("s_root_nid", "nydus always places the root at nid 128", rafs_v6.ROOT_NID, sb.s_root_nid)
        if rafs.size % rafs_v6.BLOCK_SIZE:
            self.bad(
                "bootstrap.super",
                "bootstrap size is not a multiple of 4096",
                structure="rafs v6 bootstrap",
                offset=rafs.size,
                expected="a multiple of 4096",
                found=rafs.size,
            )
        blocks = sum(d.blocks for d in rafs.meta.devices)
        if sb.s_blocks not in (blocks, 4096):  # 4096: a constant legacy builders wrote
            sb_bad("s_blocks", "differs from the sum of the device slots' blocks", blocks, sb.s_blocks)
        # The meta area starts at the first block after the blob and prefetch tables (at 0 without blobs).
        if rafs.blobs:
            tables_end = max(
                ext.s_blob_table_offset + ext.s_blob_table_size,
                ext.s_prefetch_table_offset + ext.s_prefetch_table_size,
            )
            want_meta = round_up(tables_end, rafs_v6.BLOCK_SIZE) // rafs_v6.BLOCK_SIZE
        else:
            want_meta = 0
        if sb.s_meta_blkaddr != want_meta:
            sb_bad(
                "s_meta_blkaddr",
                "the meta area starts at the first block after the blob and prefetch tables",
                want_meta,
                sb.s_meta_blkaddr,
            )

        ext_bad = self._field_reporter("bootstrap.super", _EXT, rafs_v6.EXT_SUPERBLOCK_OFFSET)

        if bool(ext.s_prefetch_table_offset) != bool(ext.s_prefetch_table_size):
            ext_bad(
                "s_prefetch_table_size",
                "prefetch table offset and size must both be 0 or both be set",
                "both or neither",
                f"{ext.s_prefetch_table_offset}+{ext.s_prefetch_table_size}",
            )
        elif (
            ext.s_prefetch_table_size
            and ext.s_prefetch_table_offset != ext.s_blob_table_offset + ext.s_blob_table_size
        ):
            ext_bad(
                "s_prefetch_table_offset",
                "the prefetch table follows the blob table",
                ext.s_blob_table_offset + ext.s_blob_table_size,
                ext.s_prefetch_table_offset,
            )
        flags = ext.s_flags
        unknown = flags & ~(_KNOWN_SUPER_FLAGS | _COMPAT_SUPER_FLAGS)
        if unknown:
            ext_bad("s_flags", "unknown flag bits", "none", hex(unknown))
        blobs = rafs.blobs
        if blobs:
            every = all(b.features & blob_meta.INLINED_CHUNK_DIGEST for b in blobs)
            if bool(flags & rafs_v6.INLINED_CHUNK_DIGEST) != every:
                ext_bad(
                    "s_flags",
                    "INLINED_CHUNK_DIGEST disagrees with the blobs' features",
                    every,
                    bool(flags & rafs_v6.INLINED_CHUNK_DIGEST),
                )
            tarfs = [bool(b.features & blob_meta.TARFS) for b in blobs]
            if any(t != bool(flags & rafs_v6.TARFS_MODE) for t in tarfs):
                ext_bad(
                    "s_flags",
                    "TARFS_MODE disagrees with the blobs' features",
                    any(tarfs),
                    bool(flags & rafs_v6.TARFS_MODE),
                )
        enc = [bool(b.features & blob_meta.ENCRYPTED) for b in blobs]
        if flags & rafs_v6.ENCRYPTION_NONE and flags & rafs_v6.ENCRYPTION_ASE_128_XTS:
            ext_bad("s_flags", "both ENCRYPTION_NONE and an encryption algorithm", "one", hex(flags))
        if any(enc) and not flags & rafs_v6.ENCRYPTION_ASE_128_XTS:
            ext_bad(
                "s_flags",
                "an encrypted blob in an image without an encryption flag",
                "encryption flag",
                hex(flags),
            )
        if flags & rafs_v6.ENCRYPTION_ASE_128_XTS and not all(enc):
            ext_bad("s_flags", "encryption flag, but not every blob is encrypted", "all encrypted", enc)
        self._extent(rafs_v6.SUPERBLOCK_OFFSET, rafs_v6.DEVICE_TABLE_OFFSET, -1)
        if blobs:
            self._extent(
                rafs_v6.DEVICE_TABLE_OFFSET, rafs_v6.DEVICE_TABLE_OFFSET + _DEV.size * len(blobs), -2
            )
            self._extent(ext.s_blob_table_offset, ext.s_blob_table_offset + ext.s_blob_table_size, -3)
        if ext.s_prefetch_table_offset and ext.s_prefetch_table_size:
            self._extent(
                ext.s_prefetch_table_offset, ext.s_prefetch_table_offset + ext.s_prefetch_table_size, -4
            )
        if ext.s_chunk_table_size:
            self._extent(ext.s_chunk_table_offset, ext.s_chunk_table_offset + ext.s_chunk_table_size, -5)

    def _extent(self, start: int, stop: int, tag: int) -> None:
        # Sizes are u64 on disk: clamp, an end past the bootstrap is reported as such anyway.
        self._starts.append(min(start, 1 << 62))
        self._ends.append(min(stop, 1 << 62))
        self._tags.append(tag)

    def _field_reporter(self, check: str, layout, base: int, blob_index: int | None = None, path: str | None = None):
        """``bad(field, message, expected, found)`` for a field of ``layout`` placed at ``base``."""

        def bad(fld: str, message: str, expected, found) -> None:
            self.bad(
                check,
                message,
                structure=layout.name,
                blob_index=blob_index,
                path=path,
                field=fld,
                offset=base + layout.offsets[fld],
                expected=expected,
                found=found,
            )

        return bad

    def check_blob_table(self) -> None:
        rafs, ext = self.rafs, self.ext
        devices, blobs = rafs.meta.devices, rafs.blobs
        single = len(blobs) == 1
        ids: dict[bytes, int] = {}
        for i, (dev, ent) in enumerate(zip(devices, blobs)):
            doff = rafs_v6.DEVICE_TABLE_OFFSET + i * _DEV.size
            boff = ext.s_blob_table_offset + i * _BLOB.size

            dbad = self._field_reporter("blob.table", _DEV, doff, i)
            bbad = self._field_reporter("blob.table", _BLOB, boff, i)

            if dev.blob_id != ent.blob_id:
                dbad(
                    "blob_id",
                    "device slot blob id differs from the blob table's",
                    ent.id,
                    dev.blob_id.rstrip(b"\0").decode("ascii", "replace"),
                )
            for raw, bad in ((ent.blob_id, bbad), (dev.blob_id, dbad)):
                nul = raw.find(b"\0")
                if nul >= 0 and any(raw[nul:]):
                    bad("blob_id", "blob id is not NUL-padded", "zero padding", raw[nul:].hex())
            if ent.blob_id in ids:
                bbad("blob_id", f"blob id also used by blob {ids[ent.blob_id]}", "unique", ent.id)
            ids.setdefault(ent.blob_id, i)
            if ent.uncompressed_size % rafs_v6.BLOCK_SIZE:
                bbad(
                    "uncompressed_size",
                    "not a multiple of 4096 (chunks are 4K-aligned)",
                    "4K multiple",
                    ent.uncompressed_size,
                )
            want_blocks = ent.uncompressed_size // rafs_v6.BLOCK_SIZE
            if dev.blocks != want_blocks or dev.blocks == 0:
                dbad(
                    "blocks",
                    "device blocks differ from the blob's uncompressed_size / 4096",
                    want_blocks,
                    dev.blocks,
                )
            # Each blob of a merged bootstrap keeps its own layer's algorithms and the superblock holds the
            # last layer's (nydus-image merge), so only the blob of a single-blob table must agree with it.
            if single and ent.digest_algo != ext.digester.algo:
                bbad(
                    "digest_algo",
                    "differs from the superblock's digester",
                    ext.digester.algo,
                    ent.digest_algo,
                )
            if single and ent.compression_algo != ext.compressor.algo:
                bbad(
                    "compression_algo",
                    "differs from the superblock's compressor",
                    ext.compressor.algo,
                    ent.compression_algo,
                )
            feats = ent.features
            if not feats & blob_meta.ALIGNED and not feats & blob_meta.TARFS:
                bbad("features", "ALIGNED is required on RAFS v6 blobs", "aligned", hex(feats))
            if feats & blob_meta.V5_NO_EXT_BLOB_TABLE:
                bbad("features", "V5_NO_EXT_BLOB_TABLE is internal and never on disk", "clear", hex(feats))
            v2 = bool(feats & blob_meta.CHUNK_INFO_V2)
            if feats & (blob_meta.BATCH | blob_meta.ZRAN | blob_meta.ENCRYPTED) and not v2:
                bbad("features", "BATCH, ZRAN and ENCRYPTED need CHUNK_INFO_V2", "chunk_info_v2", hex(feats))
            rec = 24 if v2 else 16
            extra = feats & (blob_meta.BATCH | blob_meta.ZRAN | blob_meta.ENCRYPTED)
            if ent.ci_uncompressed_size != rec * ent.chunk_count and not (
                extra and ent.ci_uncompressed_size >= rec * ent.chunk_count
            ):
                bbad(
                    "ci_uncompressed_size",
                    f"does not hold {ent.chunk_count} records of {rec} bytes",
                    rec * ent.chunk_count,
                    ent.ci_uncompressed_size,
                )
            if not feats & blob_meta.ENCRYPTED:
                for fld in ("cipher_algo", "cipher_iv"):
                    if getattr(ent, fld):
                        bbad(fld, "set on a blob that is not encrypted", 0, getattr(ent, fld))
                if not feats & blob_meta.SEPARATE:
                    if ent.blob_meta_size:
                        bbad(
                            "blob_meta_size",
                            "set on a blob that is neither separate nor encrypted",
                            0,
                            ent.blob_meta_size,
                        )
                    if any(ent.blob_meta_digest):
                        bbad(
                            "blob_meta_digest",
                            "set on a blob that is neither separate nor encrypted",
                            "zero",
                            ent.blob_meta_digest.hex(),
                        )
            if ent.blob_toc_size and (ent.blob_toc_size % 128 or not 512 <= ent.blob_toc_size <= 65536):
                bbad("blob_toc_size", "not a multiple of 128 in 512..65536", "128*k", ent.blob_toc_size)
            if any(ent.blob_toc_digest) and not ent.blob_toc_size and not feats & blob_meta.SEPARATE:
                bbad(
                    "blob_toc_size",
                    "a ToC digest without its size (only ref/zran merges record one alone)",
                    "non-zero",
                    0,
                )
            if ent.compressed_size >= 1 << 40 or ent.uncompressed_size >= 1 << 44:
                bbad(
                    "compressed_size",
                    "beyond 2^40 (compressed) or 2^44 (uncompressed)",
                    "smaller",
                    ent.compressed_size,
                )
        # mapped_blkaddr: every slot follows one rule (0 = not mapped, or devices packed after the bootstrap).
        if devices:
            found = [d.mapped_blkaddr for d in devices]
            rules = [[0] * len(devices)]
            for align in _MAPPED_ALIGNS:
                prev, out = rafs.size, []
                for d in devices:
                    mapped = round_up(prev, align) // rafs_v6.BLOCK_SIZE
                    out.append(mapped)
                    prev = (mapped + d.blocks) * rafs_v6.BLOCK_SIZE
                rules.append(out)
            if found not in rules:
                best = max(rules, key=lambda r: sum(a == b for a, b in zip(r, found)))
                for i, (want, got) in enumerate(zip(best, found)):
                    if want != got:
                        self.bad(
                            "blob.table",
                            "mapped_blkaddr follows no known rule (0, or packed after the "
                            "bootstrap at 512 KiB or 2 MiB alignment)",
                            structure=_DEV.name,
                            blob_index=i,
                            field="mapped_blkaddr",
                            offset=rafs_v6.DEVICE_TABLE_OFFSET + i * _DEV.size + 68,
                            expected=want,
                            found=got,
                        )

    # ------------------------------------------------------------------ the tree
    def visit(self, node, first: bool) -> None:
        self.names += 1
        rafs = self.rafs
        try:
            ino = rafs.inode(node.nid)
        except NydusInspectError:
            return
        off = rafs.inode_offset(node.nid)
        if node.type == DIR:
            reached = self.dirs_reached.get(node.nid, 0) + 1
            self.dirs_reached[node.nid] = reached
            if reached == 2:
                self.bad(
                    "bootstrap.dir",
                    "directory reached through several names",
                    structure="erofs dirent",
                    path=fsdecode(node.path),
                    offset=off,
                    found=node.nid,
                )
        elif ino.i_nlink > 1 or not first:
            link = self.links.get(node.nid)
            if link is None:
                self.links[node.nid] = [1, ino.i_nlink, ino.i_ino, fsdecode(node.path), off]
            else:
                link[0] += 1
        if not first:
            return
        try:
            self._inode(node, ino, off)
            if node.type == DIR:
                self._dir(node, ino, off)
        except NydusInspectError:
            pass  # the walk reports what does not decode

    def _inode(self, node, ino, off: int) -> None:
        ibad = self._field_reporter("bootstrap.inode", ino.layout, off, path=fsdecode(node.path))
        if ino.i_ino > self.sb.s_inos:
            ibad("i_ino", "inode number beyond the superblock's s_inos", f"<= {self.sb.s_inos}", ino.i_ino)
        if node.xattrs and not self.has_xattrs:
            self.has_xattrs = fsdecode(node.path)
        head = ino.inode_size + ino.xattr_size
        size = ino.i_size
        if node.type == REG:
            if ino.datalayout != rafs_v6.LAYOUT_CHUNK_BASED:
                ibad("i_format", "regular files are chunk-based", rafs_v6.LAYOUT_CHUNK_BASED, ino.datalayout)
                return
            fmt = ino.i_u
            bits = (fmt & rafs_v6.CHUNK_FORMAT_BLKBITS_MASK) + 12
            if fmt & ~0x3F or not fmt & rafs_v6.CHUNK_FORMAT_INDEXES:
                ibad(
                    "i_u",
                    "chunk format: unknown bits or no chunk indexes",
                    hex(0x20 | (self.chunk_bits - 12)),
                    hex(fmt),
                )
            elif bits != self.chunk_bits and not (
                size > self.rafs.chunk_size and bits == (size - 1).bit_length()
            ):
                ibad(
                    "i_u",
                    "chunk size bits are neither the image's nor the file's next power of 2",
                    self.chunk_bits,
                    bits,
                )
            count = -(-size // self.rafs.chunk_size)
            self._extent(off, round_up(off + head, 8) + 8 * count, 2 * node.nid)
        elif node.type in (DIR, SYMLINK):
            if node.type == SYMLINK and (not node.target or b"\0" in node.target):
                ibad(
                    "i_size",
                    "a symlink target is non-empty and holds no NUL",
                    "no NUL",
                    repr(node.target[:64]),
                )
            full = size // rafs_v6.BLOCK_SIZE * rafs_v6.BLOCK_SIZE
            if ino.datalayout == rafs_v6.LAYOUT_FLAT_INLINE:
                self._extent(off, off + head + size - full, 2 * node.nid)
            else:
                self._extent(off, off + head, 2 * node.nid)
                full = round_up(size, rafs_v6.BLOCK_SIZE)
            if full:
                start = ino.i_u * rafs_v6.BLOCK_SIZE
                self._extent(start, start + full, 2 * node.nid + 1)
        else:
            if ino.datalayout != rafs_v6.LAYOUT_FLAT_PLAIN:
                ibad("i_format", f"a {node.type} has no data: flat plain layout", 0, ino.datalayout)
            if size:
                ibad("i_size", f"a {node.type} has size 0", 0, size)
            self._extent(off, off + head, 2 * node.nid)

    def _dir(self, node, ino, off: int) -> None:
        rafs, nid = self.rafs, node.nid
        path = fsdecode(node.path)
        data = rafs._inline_data(nid, ino, 1 << 24)
        ents: list[tuple[bytes, int, int, int]] = []  # name, nid, file type, dirent offset
        listed: list = []  # the Dirents, for the walk
        used = 0
        prev_used = None
        block = rafs_v6.BLOCK_SIZE
        for bstart in range(0, len(data), block):
            raw = data[bstart : bstart + block]
            base = rafs._dir_block_base(nid, ino, bstart)
            block_ents = rafs_v6.parse_dir_block(raw, base, nid)
            used = 12 * len(block_ents) + sum(len(d.name) for d in block_ents)
            if prev_used is not None and prev_used + 12 + len(block_ents[0].name) <= block:
                self.bad(
                    "bootstrap.dir",
                    "a dirent block ends early: the next entry would have fit",
                    structure="erofs dir block",
                    path=path,
                    offset=base,
                    found=prev_used,
                )
            for i, d in enumerate(block_ents):
                ents.append((d.name, d.nid, d.file_type, base + 12 * i))
            listed += block_ents
            if bstart + block < len(data):
                prev_used = used
                tail = raw[used:]
                if any(tail):
                    first = next(i for i, b in enumerate(tail) if b)
                    self.bad(
                        "bootstrap.dir",
                        "non-zero bytes after the names of a dirent block",
                        structure="erofs dir block",
                        path=path,
                        offset=base + used + first,
                        expected="zero",
                        found=tail[first],
                    )
        # What RafsV6.readdir would return (it refuses a name with '/': then the walk asks it and reports that).
        listed = [d for d in listed if d.name != b"." and d.name != b".."]
        if not any(b"/" in d.name for d in listed):
            self.dirents[nid] = listed
        want_size = (len(data) - 1) // block * block + used if data else 0
        if ino.i_size != want_size:
            self._field_reporter("bootstrap.dir", ino.layout, off, path=path)(
                "i_size", "directory i_size differs from the size of its dirents", want_size, ino.i_size
            )
        if ino.datalayout == rafs_v6.LAYOUT_FLAT_PLAIN and ino.i_size % block:
            end = ino.i_u * block + ino.i_size
            pad = bytes(rafs.buf[end : round_up(end, block)])
            if any(pad):
                first = next(i for i, b in enumerate(pad) if b)
                self.bad(
                    "bootstrap.dir",
                    "non-zero bytes after the last dirent block's data",
                    structure="erofs dir block",
                    path=path,
                    offset=end + first,
                    expected="zero",
                    found=pad[first],
                )
        subdirs = 0
        dots = {b".": [], b"..": []}
        prefix = node.path.rstrip(b"/") + b"/"
        inode, parent = rafs.inode, self.parent
        for i, (name, cnid, ftype, doff) in enumerate(ents):
            if i and name <= ents[i - 1][0]:
                self.bad(
                    "bootstrap.dir",
                    "dirents not sorted by raw bytes (or a duplicate name)",
                    structure="erofs dirent",
                    path=fsdecode(prefix + name),
                    offset=doff,
                    expected=f"> {ents[i - 1][0]!r}",
                    found=repr(name),
                )
            if b"\0" in name or b"/" in name:
                self.bad(
                    "bootstrap.dir",
                    "name holds a NUL or '/'",
                    structure="erofs dirent",
                    path=fsdecode(prefix + name),
                    offset=doff,
                    found=repr(name),
                )
            if name in dots:
                dots[name].append((cnid, ftype, doff))
                continue
            try:
                cino = inode(cnid)
            except NydusInspectError:
                continue  # the walk reports it
            ctype = node_type(cino.i_mode)
            want = FT_OF_TYPE.get(ctype)
            if want is not None and ftype != want:
                self.bad(
                    "bootstrap.dir",
                    f"dirent file type differs from the inode's ({ctype})",
                    structure="erofs dirent",
                    path=fsdecode(prefix + name),
                    field="file_type",
                    offset=doff + 10,
                    expected=want,
                    found=ftype,
                )
            if ctype == DIR:
                subdirs += 1
                parent.setdefault(cnid, nid)
        for name, want_nid in ((b".", nid), (b"..", self.parent.get(nid))):
            found = dots[name]
            if len(found) != 1:
                self.bad(
                    "bootstrap.dir",
                    f"needs exactly one {name.decode()!r} entry",
                    structure="erofs dirent",
                    path=path,
                    expected=1,
                    found=len(found),
                )
                continue
            dnid, ftype, doff = found[0]
            if want_nid is not None and dnid != want_nid:
                self.bad(
                    "bootstrap.dir",
                    f"{name.decode()!r} does not point to the "
                    f"{'directory itself' if name == b'.' else 'parent'}",
                    structure="erofs dirent",
                    path=path,
                    field="nid",
                    offset=doff,
                    expected=want_nid,
                    found=dnid,
                )
            if ftype != rafs_v6.FT_DIR:
                self.bad(
                    "bootstrap.dir",
                    f"{name.decode()!r} is not typed a directory",
                    structure="erofs dirent",
                    path=path,
                    field="file_type",
                    offset=doff + 10,
                    expected=rafs_v6.FT_DIR,
                    found=ftype,
                )
        if ino.i_nlink != 2 + subdirs:
            self._field_reporter("bootstrap.nlink", ino.layout, off, path=path)(
                "i_nlink", "a directory's nlink is 2 + its sub-directories", 2 + subdirs, ino.i_nlink
            )

    def file_chunks(self, node, chunks, records, first: bool) -> None:
        """Every chunk index has a chunk-table record; remember which file offsets use each chunk."""
        if not first:
            return
        cs = self.rafs.chunk_size
        first_off = self._first_off
        for k, c in enumerate(chunks):
            bi, ci = c.blob_index, c.ci_index
            if records and (bi, ci) not in records:
                self.bad(
                    "chunk.table",
                    "no chunk table record for this chunk index",
                    structure=_CT.name,
                    blob_index=bi,
                    chunk=ci,
                    path=fsdecode(node.path),
                )
            # _used_at, inline for the common case: the first file offset seen for the chunk.
            offs = first_off.get(bi)
            if offs is not None and 0 <= ci < len(offs) and offs[ci] == -1:
                offs[ci] = k * cs
            else:
                self._used_at(bi, ci, k * cs)
        if chunks and len(chunks) > 1:
            try:
                ino = self.rafs.inode(node.nid)
            except NydusInspectError:
                return
            bits = (ino.i_u & rafs_v6.CHUNK_FORMAT_BLKBITS_MASK) + 12
            if bits != self.chunk_bits:
                contiguous = all(
                    b.blob_index == chunks[0].blob_index
                    and b.uncompressed_offset == a.uncompressed_offset + cs
                    for a, b in zip(chunks, chunks[1:])
                )
                if not contiguous:
                    off = self.rafs.inode_offset(node.nid)
                    self.bad(
                        "bootstrap.inode",
                        "a file-sized chunk format needs contiguous chunks in one blob",
                        structure="erofs extended inode" if ino.extended else "erofs compact inode",
                        path=fsdecode(node.path),
                        field="i_u",
                        offset=off + 16,
                        expected=self.chunk_bits,
                        found=bits,
                    )

    def _used_at(self, blob_index: int, ci: int, file_offset: int) -> None:
        first = self._first_off.get(blob_index)
        if first is None and 0 <= blob_index < len(self.rafs.blobs):
            first = self._first_off[blob_index] = array("q", [-1]) * self.rafs.blobs[blob_index].chunk_count
        if first is not None and 0 <= ci < len(first) and first[ci] in (-1, file_offset):
            first[ci] = file_offset
        else:
            self._more_off.setdefault((blob_index, ci), set()).add(file_offset)

    def _offsets_of(self, blob_index: int, ci: int) -> set[int]:
        """The file offsets at which files use chunk ``ci`` of blob ``blob_index`` (empty: no file does)."""
        out = set(self._more_off.get((blob_index, ci), ()))
        first = self._first_off.get(blob_index)
        if first is not None and 0 <= ci < len(first) and first[ci] >= 0:
            out.add(first[ci])
        return out

    # ------------------------------------------------------------------ after the walk
    def finish(self, complete: bool) -> None:
        sb = self.sb
        if complete and sb.s_inos != self.names:
            self.bad(
                "bootstrap.super",
                "s_inos differs from the number of names in the tree",
                structure=_SB.name,
                field="s_inos",
                offset=rafs_v6.SUPERBLOCK_OFFSET + _SB.offsets["s_inos"],
                expected=self.names,
                found=sb.s_inos,
            )
        if self.has_xattrs and not self.ext.s_flags & rafs_v6.HAS_XATTR:
            self.bad(
                "bootstrap.super",
                "inodes have xattrs but the HAS_XATTR flag is clear",
                structure=_EXT.name,
                field="s_flags",
                offset=rafs_v6.EXT_SUPERBLOCK_OFFSET,
                path=self.has_xattrs,
                expected="has_xattr",
                found=hex(self.ext.s_flags),
            )
        self._nlinks()
        self._prefetch()
        self._layout()
        self._chunk_table(complete)

    def _nlinks(self) -> None:
        groups: dict[int, list] = {}
        for link in self.links.values():
            names, nlink, i_ino, path, off = link
            if names > 1 or nlink == 1:
                if names != nlink:
                    self._nlink_bad(path, off, names, nlink)
            else:
                groups.setdefault(i_ino, []).append(link)
        for members in groups.values():  # 2022 images: one inode per name, the names share i_ino
            for _names, nlink, _, path, off in members:
                if nlink != len(members):
                    self._nlink_bad(path, off, len(members), nlink)

    def _nlink_bad(self, path: str, off: int, want: int, found: int) -> None:
        self.bad(
            "bootstrap.nlink",
            "nlink differs from the number of names of this inode",
            structure="erofs inode",
            path=path,
            field="i_nlink",
            offset=off,
            expected=want,
            found=found,
        )

    def _prefetch(self) -> None:
        ext = self.ext
        if not (ext.s_prefetch_table_offset and ext.s_prefetch_table_size):
            return
        count = ext.s_prefetch_table_size // 4
        raw = struct.unpack_from(f"<{count}I", self.rafs.buf, ext.s_prefetch_table_offset)
        for i, nid in enumerate(raw):
            if nid not in self.nids:
                self.bad(
                    "bootstrap.prefetch",
                    "prefetch entry is not an inode of the tree",
                    structure="rafs v6 prefetch table",
                    offset=ext.s_prefetch_table_offset + 4 * i,
                    found=nid,
                )

    def _layout(self) -> None:
        starts, ends, tags = self._starts, self._ends, self._tags
        size = self.rafs.size
        end, owner = 0, None
        bad: list[tuple[str, int, int, int | None, int, str]] = []  # (what, start, stop, owner, tag, reason)
        for i in sorted(range(len(starts)), key=starts.__getitem__):
            start, stop, tag = starts[i], ends[i], tags[i]
            if stop > size:
                bad.append(("past", start, stop, None, tag, f"<= {size}"))
            if start < end:
                bad.append(("overlap", start, stop, owner, tag, f">= {end}"))
            if stop > end:
                end, owner = stop, tag
            if len(bad) > self.run.limit:
                break
        if not bad:
            return
        names = self._tag_names({t for b in bad for t in (b[3], b[4]) if t is not None})
        for kind, start, stop, own, tag, expected in bad:
            paths = tuple(names[t][1] for t in (own, tag) if t is not None and names[t][1])
            if kind == "past":
                message, found = f"{names[tag][0]} runs past the end of the bootstrap", stop
            else:
                message, found = f"{names[tag][0]} overlaps {names[own][0]}", start
            self.bad(
                "bootstrap.layout",
                message,
                structure="rafs v6 bootstrap",
                offset=start,
                paths=paths,
                path=paths[0] if paths else None,
                expected=expected,
                found=found,
            )

    def _tag_names(self, tags: set[int]) -> dict[int, tuple[str, str | None]]:
        """tag -> (description, image path or None); walks the tree again to name the inodes involved."""
        out: dict[int, tuple[str, str | None]] = {t: (_TABLES[-t - 1], None) for t in tags if t < 0}
        want = {t // 2 for t in tags if t >= 0}
        found: dict[int, str] = {}
        for node in walk_tree(self.rafs):
            if node.nid in want and node.nid not in found:
                found[node.nid] = fsdecode(node.path)
                if len(found) == len(want):
                    break
        for t in tags:
            if t >= 0:
                path = found.get(t // 2, f"nid {t // 2}")
                out[t] = (path + (" (data blocks)" if t & 1 else ""), path if path.startswith("/") else None)
        return out

    def _chunk_table(self, complete: bool) -> None:
        rafs, ext = self.rafs, self.ext
        base = ext.s_chunk_table_offset
        blobs = rafs.blobs
        seen: dict[tuple[int, int], int] = {}
        crc_flags: dict[int, list[int]] = {}
        cs = rafs.chunk_size
        rows = _CT.struct.iter_unpack(rafs.buf[base : base + ext.s_chunk_table_size])
        for i, vals in enumerate(rows):
            (_, bi, flags, csize, usize, coff, uoff, foff, idx, crc) = vals
            off = base + i * _CT.size

            def tbad(fld: str, message: str, expected, found, off=off, bi=bi, idx=idx) -> None:
                self.bad(
                    "chunk.table",
                    message,
                    structure=_CT.name,
                    blob_index=bi,
                    chunk=idx,
                    field=fld,
                    offset=off + _CT.offsets[fld],
                    expected=expected,
                    found=found,
                )

            key = (bi, idx)
            if key in seen:
                tbad("index", f"duplicate record (also record {seen[key]})", "unique", idx)
            seen.setdefault(key, i)
            if not 0 <= bi < len(blobs):
                tbad("blob_index", f"outside the {len(blobs)}-entry blob table", f"< {len(blobs)}", bi)
                continue
            ent = blobs[bi]
            if idx >= ent.chunk_count:
                tbad("index", f"beyond the blob's {ent.chunk_count} chunks", f"< {ent.chunk_count}", idx)
            if flags & ~_CHUNK_FLAGS or flags & rafs_v6.CHUNK_HOLE:
                tbad("flags", "unknown flag bits (or the v5 hole flag)", "known", hex(flags))
            if flags & rafs_v6.CHUNK_ENCRYPTED and not ent.features & blob_meta.ENCRYPTED:
                tbad("flags", "encrypted chunk in a blob that is not encrypted", "clear", hex(flags))
            if flags & rafs_v6.CHUNK_BATCH and not ent.features & blob_meta.BATCH:
                tbad("flags", "batch chunk in a blob without batches", "clear", hex(flags))
            crc_flags.setdefault(bi, []).append(i if flags & rafs_v6.CHUNK_HAS_CRC32 else ~i)
            if crc and not flags & rafs_v6.CHUNK_HAS_CRC32:
                tbad("crc32", "crc32 set but the HAS_CRC32 flag is not", 0, crc)
            if not 0 < usize <= cs:
                tbad("uncompressed_size", "outside 1..chunk size", f"1..{cs}", usize)
            if (
                uoff % rafs_v6.BLOCK_SIZE
                or uoff + round_up(usize, rafs_v6.BLOCK_SIZE) > ent.uncompressed_size
            ):
                tbad(
                    "uncompressed_offset",
                    "not 4K-aligned or beyond the blob's uncompressed size",
                    f"<= {ent.uncompressed_size}",
                    uoff,
                )
            if not ent.features & _NOT_TILED:
                if csize == 0 or (ent.compressed_size and coff + csize > ent.compressed_size):
                    tbad(
                        "compressed_offset",
                        "compressed range empty or beyond the blob's compressed_size",
                        f"<= {ent.compressed_size}",
                        f"{coff}+{csize}",
                    )
                if not flags & rafs_v6.CHUNK_COMPRESSED and csize != usize:
                    tbad("compressed_size", "uncompressed chunk with differing sizes", usize, csize)
            if complete:
                have = self._offsets_of(bi, idx)
                if not have:
                    tbad("index", "no file uses this chunk record", "used", idx)
                elif foff not in have:
                    tbad("file_offset", "no file uses this chunk at this offset", sorted(have), foff)
        for bi, marks in crc_flags.items():
            with_crc = [m for m in marks if m >= 0]
            if with_crc and len(with_crc) != len(marks):
                odd = [~m for m in marks if m < 0] if len(with_crc) * 2 >= len(marks) else with_crc
                for i in odd:
                    self.bad(
                        "chunk.table",
                        f"HAS_CRC32 differs from the other records of blob {bi}",
                        structure=_CT.name,
                        blob_index=bi,
                        field="flags",
                        offset=base + i * _CT.size + 36,
                        found=f"{len(with_crc)} of {len(marks)} records with a crc",
                    )


# ---------------------------------------------------------------------------- which blob files
def _blob_layers(run: _Run) -> Iterator[tuple[int | None, Layer, object]]:
    """(blob index or None, the Layer holding that blob's data, its blob-table entry or None)."""
    layer = run.layer
    rafs = None
    if run.index is not None:
        try:
            rafs = layer.rafs
        except NydusInspectError:
            rafs = None
    if rafs is None:
        if layer.kind in (KIND_BLOB_TOC, KIND_BLOB_NO_TOC):
            yield None, layer, None
        return
    own_seen = False
    for ent in rafs.blobs:
        try:
            bf = layer.blob_file(ent.blob_index, required=False)
        except FormatError as exc:
            run.add(_exc_finding("blob.unreadable", exc, blob_index=ent.blob_index, file=layer.path))
            continue
        except NydusInspectError as exc:
            run.add(_exc_finding("blob.missing", exc, blob_index=ent.blob_index, file=layer.path))
            continue
        if bf is None:
            run.add(
                Finding(
                    "blob.missing",
                    f"blob {ent.id} not found; give it with --blob or --blob-dir",
                    structure="rafs v6 blob table",
                    blob_index=ent.blob_index,
                    file=layer.path,
                    expected=ent.id,
                    found="absent",
                )
            )
            continue
        own_seen = own_seen or bf.layer is layer
        yield ent.blob_index, bf.layer, ent
    if not own_seen and layer.kind == KIND_BLOB_TOC and layer.has_entry(IMAGE_BLOB):
        # A blob whose data no blob-table entry claims (an inline bootstrap naming other blobs only).
        yield None, layer, None


# ---------------------------------------------------------------------------- tar headers, ToC format, layout
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _entry_before(blob: Layer, offset: int | None) -> str | None:
    """The ToC entry whose data ends right before the tar header at ``offset`` (for naming a bad header)."""
    if offset is None or blob.toc is None:
        return None
    hdr = offset
    for e in blob.toc:
        start = 0 if e.name == IMAGE_BLOB else e.compressed_offset
        end = start + e.compressed_size
        if e.name == BLOB_META:
            continue
        if end <= hdr < end + 512:
            return BLOB_META if e.name == BLOB_META_HEADER else e.name
    toc_start = blob.size - 512 - len(blob.toc_bytes)
    if toc_start + len(blob.toc_bytes) <= hdr:
        return RAFS_BLOB_TOC
    return None


def _check_layout(run: _Run, blob: Layer, blob_index: int | None, ent) -> None:
    """Tar headers, the ToC's own format, and which sections a blob holds against its features."""
    if blob.kind not in (KIND_BLOB_TOC, KIND_BLOB_NO_TOC):
        return
    try:
        sections = blob.sections
    except FormatError as exc:
        run.add(
            _exc_finding(
                "tar.header",
                exc,
                file=blob.path,
                blob_index=blob_index,
                entry=_entry_before(blob, exc.offset),
            )
        )
        sections = None
    names = [sec.name for sec in sections or ()]
    for sec in sections or ():
        raw = blob.pread(sec.header_offset, 512, f"{sec.name} tar header")
        try:
            want = tar_header.build(sec.name, sec.size)
        except ValueError:
            want = None
        if sec.name not in SECTION_NAMES:
            run.add(
                Finding(
                    "tar.header",
                    "unknown section name",
                    structure=f"{sec.name} tar header",
                    file=blob.path,
                    blob_index=blob_index,
                    offset=sec.header_offset,
                    expected=" / ".join(SECTION_NAMES),
                    found=sec.name,
                )
            )
        elif raw != want:
            i = next(k for k in range(512) if raw[k] != want[k])
            run.add(
                Finding(
                    "tar.header",
                    "differs from the header nydus writes for this name and size",
                    structure=f"{sec.name} tar header",
                    file=blob.path,
                    entry=sec.name,
                    blob_index=blob_index,
                    offset=sec.header_offset + i,
                    expected=want[i : i + 8].hex(),
                    found=raw[i : i + 8].hex(),
                )
            )
    known = [n for n in names if n in SECTION_NAMES]
    if len(set(known)) != len(known) or known != sorted(known, key=SECTION_NAMES.index):
        run.add(
            Finding(
                "tar.header",
                "sections duplicated or out of nydus's order",
                structure="tar sections",
                file=blob.path,
                blob_index=blob_index,
                expected=" < ".join(SECTION_NAMES),
                found=", ".join(names),
            )
        )
    if blob.toc is not None:
        _check_toc_format(run, blob, blob_index, names)
    _check_sections_vs_features(run, blob, blob_index, ent)


def _check_toc_format(run: _Run, blob: Layer, blob_index: int | None, sections: list[str]) -> None:
    raw = blob.toc_bytes
    base = blob.size - 512 - len(raw)
    seen: set[str] = set()
    entry_names = [n for n in ENTRY_NAMES if n != RAFS_BLOB_TOC]

    def bad(e, i: int, fld: str, message: str, expected, found) -> None:
        run.add(
            Finding(
                "toc.format",
                message,
                structure="rafs.blob.toc",
                file=blob.path,
                entry=e.name,
                blob_index=blob_index,
                field=fld,
                offset=base + i * toc.ENTRY_SIZE + toc.ENTRY.offsets[fld],
                expected=str(expected),
                found=str(found),
            )
        )

    for i, e in enumerate(blob.toc):
        if e.flags & ~toc.COMPRESSOR_MASK:
            bad(
                e,
                i,
                "flags",
                "flag bits outside the compressor mask",
                hex(e.flags & toc.COMPRESSOR_MASK),
                hex(e.flags),
            )
        field_raw = raw[i * toc.ENTRY_SIZE + 8 : i * toc.ENTRY_SIZE + 24]
        nul = field_raw.find(b"\0")
        if nul >= 0 and any(field_raw[nul:]):
            bad(e, i, "name", "name not NUL-padded", "zero padding", field_raw[nul:].hex())
        if e.name not in entry_names:
            bad(e, i, "name", "unknown entry name", " / ".join(entry_names), e.name)
        if e.name in seen:
            bad(e, i, "name", "entry listed twice", "unique", e.name)
        seen.add(e.name)
        if e.name == IMAGE_BLOB and e.compressed_offset not in (0, e.compressed_size):
            bad(
                e,
                i,
                "compressed_offset",
                "image.blob starts at 0 (2022 builders wrote its end)",
                f"0 or {e.compressed_size}",
                e.compressed_offset,
            )
    for sec in sections:
        wanted = [BLOB_META, BLOB_META_HEADER] if sec == BLOB_META else [sec]
        for name in wanted:
            if sec in SECTION_NAMES and sec != RAFS_BLOB_TOC and name not in seen:
                run.add(
                    Finding(
                        "toc.format",
                        f"section {sec} has no ToC entry {name}",
                        structure="rafs.blob.toc",
                        file=blob.path,
                        entry=name,
                        blob_index=blob_index,
                        expected=name,
                        found="absent",
                    )
                )


def _check_sections_vs_features(run: _Run, blob: Layer, blob_index: int | None, ent) -> None:
    def bad(message: str, expected, found, entry: str | None = None) -> None:
        run.add(
            Finding(
                "blob.layout",
                message,
                structure="blob.meta.header" if entry is None else entry,
                file=blob.path,
                entry=entry,
                blob_index=blob_index,
                expected=str(expected),
                found=str(found),
            )
        )

    has = {n: blob.has_entry(n) for n in (IMAGE_BLOB, BLOB_META, BLOB_DIGEST, IMAGE_BOOT)}
    if blob.toc is None:
        if has[BLOB_DIGEST]:
            bad(
                "a blob.digest section without a ToC (nydus writes both or neither)",
                "rafs.blob.toc",
                "absent",
                BLOB_DIGEST,
            )
        if has[IMAGE_BOOT] and blob.entry_location(IMAGE_BOOT)[2] is not Compressor.NONE:
            bad(
                "image.boot is compressed but there is no ToC to say so (nydus reads it raw)",
                "raw",
                "zstd",
                IMAGE_BOOT,
            )
    if has[IMAGE_BLOB] and not has[BLOB_META] and not has[IMAGE_BOOT]:
        bad(
            "chunk data with neither blob.meta nor a bootstrap to describe it",
            "blob.meta or image.boot",
            "absent",
            IMAGE_BLOB,
        )
    try:
        hdr = blob.blob_meta_header
    except NydusInspectError:
        return  # the blob.meta pass reports it
    if hdr is None:
        return
    feats = hdr.s_features
    if feats & blob_meta.HAS_TOC and blob.toc is None:
        bad("features say HAS_TOC but the blob has no ToC", "rafs.blob.toc", "absent")
    if feats & blob_meta.INLINED_CHUNK_DIGEST and not has[BLOB_DIGEST]:
        bad("features say INLINED_CHUNK_DIGEST but there is no blob.digest", "blob.digest", "absent")
    if has[BLOB_DIGEST] and not feats & blob_meta.INLINED_CHUNK_DIGEST:
        bad(
            "a blob.digest section without the INLINED_CHUNK_DIGEST feature",
            "inlined_chunk_digest",
            hex(feats),
        )
    if feats & blob_meta.INLINED_FS_META and not has[IMAGE_BOOT]:
        bad("features say INLINED_FS_META but there is no image.boot", "image.boot", "absent")
    if not feats & blob_meta.ALIGNED and not feats & blob_meta.TARFS:
        bad("ALIGNED is required on RAFS v6 blobs", "aligned", hex(feats))
    if (
        feats & (blob_meta.BATCH | blob_meta.ZRAN | blob_meta.ENCRYPTED)
        and not feats & blob_meta.CHUNK_INFO_V2
    ):
        bad("BATCH, ZRAN and ENCRYPTED need CHUNK_INFO_V2", "chunk_info_v2", hex(feats))
    zran = feats & (blob_meta.ZRAN | blob_meta.BATCH)
    if not zran and (hdr.s_ci_zran_offset or hdr.s_ci_zran_size or hdr.s_ci_zran_count):
        bad(
            "zran/batch context fields set on a blob without zran or batches",
            0,
            f"{hdr.s_ci_zran_offset}/{hdr.s_ci_zran_size}/{hdr.s_ci_zran_count}",
        )


# ---------------------------------------------------------------------------- ToC
def _entry_sha256(blob: Layer, name: str) -> tuple[str, str]:
    """(recorded, recomputed) sha256 of entry ``name``; raises FormatError when it does not read."""
    off, size, comp, usize, digest = blob.entry_location(name)
    h = hashlib.sha256()
    if comp is Compressor.NONE:
        step = 4 << 20
        for pos in range(off, off + size, step):
            h.update(blob.pread(pos, min(step, off + size - pos), name))
    else:
        h.update(blob.entry(name, verify=False))
    if name == IMAGE_BLOB:
        h.update(blob.pread(off + size, 512, "image.blob tar header"))
    return (digest.hex() if digest is not None else ""), h.hexdigest()


def entry_check(blob: Layer, name: str) -> Finding | None:
    """Recompute the sha256 of one ToC entry; a Finding when it differs or does not read (else None)."""
    try:
        recorded, got = _entry_sha256(blob, name)
    except NydusInspectError as exc:
        return _exc_finding("toc.entry", exc, entry=name, file=blob.path)
    return _entry_finding(blob, name, recorded, got)


def _entry_finding(blob: Layer, name: str, recorded: str, got: str) -> Finding | None:
    if recorded and recorded != got:
        off = blob.entry_location(name)[0]
        return Finding(
            "toc.entry",
            "sha256 differs from the ToC",
            structure="rafs.blob.toc",
            file=blob.path,
            entry=name,
            offset=off,
            field="uncompressed_digest",
            expected=recorded,
            found=got,
        )
    return None


def _check_toc(run: _Run, blob: Layer, blob_index: int | None, ent) -> None:
    if blob.toc is None:
        if ent is not None and (ent.blob_toc_size or any(ent.blob_toc_digest)):
            run.add(
                Finding(
                    "toc.digest",
                    "the bootstrap's blob table records a ToC, but the blob has none",
                    structure="rafs.blob.toc",
                    file=blob.path,
                    blob_index=blob_index,
                    expected=f"{ent.blob_toc_size}-byte ToC {ent.blob_toc_digest.hex()}",
                    found="no ToC",
                )
            )
        if blob.kind == KIND_BLOB_NO_TOC:
            run.report.notes.append(
                f"{blob.name}: no ToC; entries found by the tar-header walk, no sha256 to check"
            )
        return
    names = [e.name for e in blob.toc]
    for i, name in enumerate(names):
        run.tick("toc", i, len(names))
        finding = run.ahead.entry_check(blob, name)
        run.count("toc entries")
        if finding is not None:
            run.add(finding if blob_index is None else _with(finding, blob_index=blob_index))
        _check_section(run, blob, name, blob_index)
    run.tick("toc", len(names), len(names))
    # The ToC digest, recomputed, against what the bootstrap recorded for this blob.
    got = blob.toc_digest.hex()
    size = len(blob.toc_bytes) + 512
    if ent is not None and any(ent.blob_toc_digest):
        want = ent.blob_toc_digest.hex()
        if want != got:
            run.add(
                Finding(
                    "toc.digest",
                    "recomputed ToC digest differs from the bootstrap's blob table",
                    structure="rafs.blob.toc",
                    file=blob.path,
                    blob_index=blob_index,
                    offset=blob.size - size,
                    expected=want,
                    found=got,
                )
            )
    if ent is not None and ent.blob_toc_size and ent.blob_toc_size != size:
        run.add(
            Finding(
                "toc.digest",
                "ToC size differs from the bootstrap's blob table",
                structure="rafs.blob.toc",
                file=blob.path,
                blob_index=blob_index,
                field="blob_toc_size",
                expected=str(ent.blob_toc_size),
                found=str(size),
            )
        )
    run.count("toc digests")


def _check_section(run: _Run, blob: Layer, name: str, blob_index: int | None) -> None:
    """The ToC's location of an entry against the tar header after the entry's data."""
    sec_name = BLOB_META if name == BLOB_META_HEADER else name
    try:
        sec = blob.section(sec_name)
    except FormatError as exc:  # the tar-header walk is lazy: a damaged header surfaces here
        run.add(_exc_finding("toc.section", exc, file=blob.path, entry=name, blob_index=blob_index))
        return
    if sec is None:
        run.add(
            Finding(
                "toc.section",
                f"no tar header named {sec_name} follows the data",
                file=blob.path,
                entry=name,
                blob_index=blob_index,
            )
        )
        return
    off, size, _, _, _ = blob.entry_location(name)
    if name == BLOB_META:
        want = (sec.offset, sec.size - blob_meta.HEADER_SIZE)
    elif name == BLOB_META_HEADER:
        want = (sec.offset + sec.size - blob_meta.HEADER_SIZE, blob_meta.HEADER_SIZE)
    else:
        want = (sec.offset, sec.size)
    if (off, size) != want:
        run.add(
            Finding(
                "toc.section",
                "ToC location differs from the tar headers",
                structure="rafs.blob.toc",
                file=blob.path,
                entry=name,
                blob_index=blob_index,
                offset=off,
                expected=f"{want[0]}+{want[1]}",
                found=f"{off}+{size}",
            )
        )


def _with(f: Finding, **kw) -> Finding:
    return Finding(**{**{x.name: getattr(f, x.name) for x in fields(f)}, **kw})


# ---------------------------------------------------------------------------- blob.meta
def _check_blob_meta(run: _Run, blob: Layer, blob_index: int | None, ent) -> None:
    run.tick("blob.meta", 0, 1)
    try:
        hdr = blob.blob_meta_header
    except NydusInspectError as exc:
        run.add(_exc_finding("blob_meta", exc, entry=BLOB_META_HEADER, blob_index=blob_index, file=blob.path))
        return
    if hdr is None:
        if blob.has_entry(IMAGE_BLOB):
            run.report.notes.append(
                f"{blob.name}: no blob.meta; chunks are checked from the bootstrap chunk table"
            )
        return
    run.count("blob.meta headers")

    def bad(
        message: str,
        field_name: str,
        expected: object,
        found: object,
        structure: str = "blob.meta.header",
        entry: str = BLOB_META_HEADER,
    ) -> None:
        run.add(
            Finding(
                "blob_meta",
                message,
                structure=structure,
                file=blob.path,
                entry=entry,
                blob_index=blob_index,
                field=field_name,
                expected=str(expected),
                found=str(found),
            )
        )

    try:
        off, size, comp, usize, _ = blob.entry_location(BLOB_META)
    except NydusInspectError as exc:
        run.add(_exc_finding("blob_meta", exc, entry=BLOB_META, blob_index=blob_index, file=blob.path))
        return
    if hdr.s_ci_offset != off:
        bad("chunk-info offset differs from the blob.meta entry", "s_ci_offset", off, hdr.s_ci_offset)
    if hdr.s_ci_compressed_size != size:
        bad(
            "chunk-info stored size differs from the blob.meta entry",
            "s_ci_compressed_size",
            size,
            hdr.s_ci_compressed_size,
        )
    if usize >= 0 and hdr.s_ci_uncompressed_size != usize:
        bad(
            "chunk-info size differs from the blob.meta entry",
            "s_ci_uncompressed_size",
            usize,
            hdr.s_ci_uncompressed_size,
        )
    try:
        hdr_comp = Compressor.from_algo(hdr.s_ci_compressor)
    except ValueError:
        hdr_comp = None
    if blob.toc is not None and hdr_comp is not None and hdr_comp is not comp:
        bad("chunk-info compressor differs from the ToC's", "s_ci_compressor", comp.value, hdr_comp.value)
    hoff = blob.entry_location(BLOB_META_HEADER)[0]
    if blob.toc is not None and hoff != off + size:
        bad(
            "header does not follow the chunk-info array",
            "s_ci_offset",
            off + size,
            hoff,
            structure="rafs.blob.toc",
        )
    if ent is not None:
        for name, mine, theirs in (
            ("ci_offset", hdr.s_ci_offset, ent.ci_offset),
            ("ci_compressed_size", hdr.s_ci_compressed_size, ent.ci_compressed_size),
            ("ci_uncompressed_size", hdr.s_ci_uncompressed_size, ent.ci_uncompressed_size),
            ("ci_compressor", hdr.s_ci_compressor, ent.ci_compressor),
            ("chunk_count", hdr.s_ci_entries, ent.chunk_count),
        ):
            if mine != theirs:
                run.add(
                    Finding(
                        "blob_meta",
                        f"blob table {name} differs from the blob.meta header",
                        structure="rafs v6 blob table",
                        file=run.layer.path,
                        blob_index=blob_index,
                        field=name,
                        expected=str(mine),
                        found=str(theirs),
                    )
                )
    try:
        infos = blob.chunk_infos
        if infos is not None and len(infos) != hdr.s_ci_entries:
            bad(
                "chunk-info array length differs from the header",
                "s_ci_entries",
                hdr.s_ci_entries,
                len(infos),
            )
    except NydusInspectError as exc:
        run.add(_exc_finding("blob_meta", exc, entry=BLOB_META, blob_index=blob_index, file=blob.path))
    if blob.has_entry(BLOB_DIGEST):
        try:
            digests = blob.chunk_digests
            if digests is not None and len(digests) != hdr.s_ci_entries:
                bad(
                    "blob.digest count differs from the chunk count",
                    "s_ci_entries",
                    hdr.s_ci_entries,
                    len(digests),
                    structure="blob.digest",
                    entry=BLOB_DIGEST,
                )
        except NydusInspectError as exc:
            run.add(_exc_finding("blob_meta", exc, entry=BLOB_DIGEST, blob_index=blob_index, file=blob.path))
    run.tick("blob.meta", 1, 1)


def _check_blob_entry(run: _Run, blob: Layer, blob_index: int | None, ent) -> None:
    """The bootstrap's blob-table entry against the blob file it names."""
    if ent is None or blob_index is None:
        return
    base = run.layer.rafs.ext.s_blob_table_offset + blob_index * _BLOB.size

    def bad(fld: str, message: str, expected, found, entry: str | None = None) -> None:
        run.add(
            Finding(
                "blob.table",
                message,
                structure=_BLOB.name,
                file=run.layer.path,
                entry=entry,
                blob_index=blob_index,
                field=fld,
                offset=base + _BLOB.offsets[fld],
                expected=_show(expected),
                found=_show(found),
            )
        )

    try:
        hdr = blob.blob_meta_header
    except NydusInspectError:
        hdr = None
    if hdr is not None and (hdr.s_features ^ ent.features) & ~blob_meta.INLINED_FS_META:
        bad(
            "features",
            "differ from the blob.meta header's (beyond INLINED_FS_META)",
            hex(hdr.s_features),
            hex(ent.features),
        )
    try:
        infos = blob.chunk_infos
    except NydusInspectError:
        infos = None
    if infos is not None and len(infos) == ent.chunk_count:
        _, _, _, usizes, ok = _columns(run, infos)
        # The sum of the 4K-rounded sizes; none when a record does not decode (the chunk pass reports it).
        want = sum((u + 4095) // 4096 * 4096 for u in usizes) if all(ok) else None
        if want is not None and ent.uncompressed_size != want:
            bad(
                "uncompressed_size",
                "differs from the sum of the 4K-rounded chunk sizes in blob.meta",
                want,
                ent.uncompressed_size,
            )
    te = blob.toc_entry(IMAGE_BLOB)
    if te is not None and te.uncompressed_size != ent.uncompressed_size:
        bad(
            "uncompressed_size",
            "differs from the ToC's image.blob uncompressed_size",
            te.uncompressed_size,
            ent.uncompressed_size,
            entry=IMAGE_BLOB,
        )
    if ent.features & blob_meta.INLINED_FS_META and not blob.has_entry(IMAGE_BOOT):
        bad(
            "features",
            "INLINED_FS_META, but the blob holds no bootstrap (image.boot)",
            "clear",
            hex(ent.features),
        )
    if ent.features & blob_meta.SEPARATE:
        return
    # compressed_size: the blob's size (non-inline), or where image.boot starts (inline, v2.3), or the end of
    # the chunk data (2022 builders).
    sizes = {blob.size}
    for name, end in ((IMAGE_BOOT, False), (IMAGE_BLOB, True)):
        try:
            if blob.has_entry(name):
                off, size = blob.entry_location(name)[:2]
                sizes.add(off + size if end else off)
        except NydusInspectError:
            pass
    if ent.compressed_size not in sizes:
        bad(
            "compressed_size",
            "is neither the blob's size, where its image.boot starts, nor its chunk data size",
            " or ".join(str(x) for x in sorted(sizes)),
            ent.compressed_size,
        )


def _check_chunk_layout(run: _Run, blob: Layer, blob_index: int | None) -> None:
    """blob.meta records in write order: compressed data tiles image.blob, uncompressed offsets increase."""
    try:
        infos = blob.chunk_infos
        hdr = blob.blob_meta_header
    except NydusInspectError:
        return  # reported by the blob.meta pass
    if infos is None or hdr is None:
        return
    data_end = None
    if blob.has_entry(IMAGE_BLOB):
        data_end = blob.entry_location(IMAGE_BLOB)[1]
    tiled = data_end is not None and not hdr.s_features & _NOT_TILED

    def bad(index: int, message: str, expected, found) -> None:
        owners = run.owners(blob_index, index)
        run.add(
            Finding(
                "chunk.layout",
                message,
                structure="chunk",
                file=blob.path,
                blob_index=blob_index,
                chunk=index,
                offset=coffs[index],
                paths=owners,
                path=owners[0] if owners else None,
                expected=str(expected),
                found=str(found),
            )
        )

    coffs, csizes, uoffs, usizes, ok = _columns(run, infos)
    expect = 0
    prev = -1
    floor = 0
    for i in range(len(coffs)):
        if not ok[i]:
            continue  # unknown v2 flags: the chunk pass reports it
        coff = coffs[i]
        if tiled and coff != expect:
            what = "a gap before it" if coff > expect else "overlaps the chunk before it"
            bad(i, f"compressed data not contiguous in write order: {what}", expect, coff)
        expect = coff + csizes[i]
        if prev >= 0 and uoffs[i] < floor:
            bad(
                i,
                f"uncompressed offset not after chunk {prev}'s data (offsets increase in write order)",
                f">= {floor}",
                uoffs[i],
            )
        prev = i
        floor = uoffs[i] + (usizes[i] + 4095) // 4096 * 4096
    if tiled and prev >= 0 and expect != data_end:
        bad(prev, "chunk data does not end where image.blob does", data_end, expect)


def _columns(run: _Run, infos) -> tuple[list[int], list[int], list[int], list[int], list[bool]]:
    """compressed offsets, compressed sizes, uncompressed offsets, uncompressed sizes of a blob.meta chunk-info
    array, and whether each record decodes (v2: no unknown flag bits), all at once: the arithmetic of
    ``blob_meta.decode_v1`` / ``decode_v2`` without building a record object per chunk. Kept for the
    run (blob.table and chunk.layout both need them)."""
    got = run.columns
    if got is not None and got[0] is infos:
        return got[1]
    raw = memoryview(infos.data)[: infos.count * infos.record_size]
    if infos.v2:
        rows = list(struct.iter_unpack("<QQQ", raw))
        us = [r[0] for r in rows]
        cs = [r[1] for r in rows]
        cols = (
            [c & 0xFF_FFFF_FFFF for c in cs],
            [c >> 40 for c in cs],
            [(u & 0xFFFFFFFF) << 12 for u in us],
            [((u >> 32) & 0xFFFFFF) + 1 for u in us],
            [not (u >> 56) & ~blob_meta.CI_KNOWN for u in us],
        )
    else:
        flat = array("Q")
        flat.frombytes(raw)
        if sys.byteorder != "little":
            flat.byteswap()
        us, cs = flat[0::2], flat[1::2]
        cols = (
            [c & 0xFF_FFFF_FFFF for c in cs],
            [((((c >> 40) & 0xF) << 20) | ((c >> 44) & 0xFFFFF)) + 1 for c in cs],
            [u & 0xFFF_FFFF_F000 for u in us],
            [((((u >> 8) & 0xF) << 20) | ((u >> 44) & 0xFFFFF)) + 1 for u in us],
            [True] * infos.count,
        )
    run.columns = (infos, cols)  # one array at a time: the checks of a blob run one after the other
    return cols


# ---------------------------------------------------------------------------- chunks
@dataclass(frozen=True)
class ChunkRecord:
    """A chunk row of the bootstrap chunk table, for blobs without blob.meta (same fields as ChunkInfo)."""

    index: int
    compressed_offset: int
    compressed_size: int
    uncompressed_offset: int
    uncompressed_size: int
    compressed: bool
    flags: int = 0
    crc32: int | None = None


def _table_records(layer: Layer, blob_index: int) -> list[ChunkRecord]:
    rows: dict[int, ChunkRecord] = {}
    for rec in layer.rafs.chunk_table_entries():
        if rec.blob_index == blob_index and rec.index not in rows:
            rows[rec.index] = ChunkRecord(
                rec.index,
                rec.compressed_offset,
                rec.compressed_size,
                rec.uncompressed_offset,
                rec.uncompressed_size,
                rec.compressed,
                rec.flags,
                rec.crc32 if rec.flags & rafs_v6.CHUNK_HAS_CRC32 else None,
            )
    return [rows[k] for k in sorted(rows)]


class ChunkVerifier:
    """The chunks of one blob, and the checks of each: read, decompress, digest, agreement with the bootstrap.

    ``records`` is the blob's blob.meta chunk-info array (decoded on access), or, for a blob without
    blob.meta, its rows of the bootstrap chunk table. ``blob_index`` None means the layer's own data
    (a blob opened without its bootstrap, or the blob an inline bootstrap calls its own). Used by
    :func:`verify` for every chunk and by front ends to check one chunk on demand.
    """

    def __init__(self, layer: Layer, blob_index: int | None = None) -> None:
        self.layer = layer
        self.notes: list[str] = []
        self.rafs = None
        ent = None
        if layer.has_bootstrap and not layer.is_v5:
            self.rafs = layer.rafs
            if blob_index is None:
                blob_index = layer.own_blob_index()
                if (
                    blob_index is None
                    and layer.kind not in (KIND_BLOB_TOC, KIND_BLOB_NO_TOC)
                    and self.rafs.blobs
                ):
                    blob_index = 0  # a bootstrap: its first blob
        resolved = None
        if self.rafs is not None and blob_index is not None:
            ent = self.rafs.blobs[blob_index]
            resolved = layer.blob_file(blob_index)
            self.blob = resolved.layer
        else:
            self.blob = layer
        self.blob_index = blob_index
        self.entry = ent
        infos = self.blob.chunk_infos
        if infos is not None:
            self.records = infos
            self.source = "blob.meta"
        elif self.rafs is not None and blob_index is not None:
            self.records = _table_records(layer, blob_index)
            self.source = "bootstrap chunk table"
        else:
            raise UsageError(
                f"{layer.path}: no blob.meta and no bootstrap chunk table: nothing describes chunks"
            )
        # Unchecked here: a damaged blob.digest is the ToC pass's finding; the chunks are still compared with it.
        self.digests: bytes | None = (
            self.blob.entry(BLOB_DIGEST, verify=False) if self.blob.has_entry(BLOB_DIGEST) else None
        )
        # Compressor and digester as every reader resolves them (chunks.resolve): the blob's own.
        if resolved is None:
            resolved = Blob.without_bootstrap(self.blob, self.records, self.digests)
            self.notes.append(
                f"{self.blob.name}: no bootstrap names this blob's compressor and digester; its chunks say "
                f"{resolved.compressor.value} and {resolved.digester.value}"
            )
        self.compressor, self.digester = resolved.compressor, resolved.digester
        try:
            self.data_end = (
                self.blob.entry_location(IMAGE_BLOB)[1] if self.blob.has_entry(IMAGE_BLOB) else self.blob.size
            )
        except NydusInspectError:
            self.data_end = self.blob.size
        self._table: dict | None = None

    def __len__(self) -> int:
        return len(self.records)

    def digest(self, index: int) -> bytes | None:
        """The recorded digest of chunk ``index``: blob.digest, else the bootstrap chunk table's."""
        if self.digests is not None and 32 * index + 32 <= len(self.digests):
            return self.digests[32 * index : 32 * index + 32]
        row = self._row(index)
        return row[0] if row is not None else None

    @property
    def table(self) -> dict:
        """The bootstrap chunk table keyed by (blob index, chunk index), each record as the tuple of its
        fields (``rafs_v6.ChunkTableEntry`` order); built on first use, and shared with the bootstrap checks."""
        if self._table is None:
            self._table = self.rafs._chunk_records() if self.rafs is not None else {}
        return self._table

    def _row(self, index: int) -> tuple | None:
        if self.rafs is None or self.blob_index is None:
            return None
        if self._table is None and self.digests is not None:
            row = self._find_by_digest(index)
            if row is not None:
                return row
        return self.table.get((self.blob_index, index))

    def _find_by_digest(self, index: int):
        """One record without building the whole table: tables nydus-inspect and nydus-image write are
        sorted by digest, so a binary search on the chunk's blob.digest finds it (None when it does not)."""
        want = self.digests[32 * index : 32 * index + 32]
        layout = rafs_v6.CHUNK_TABLE_ENTRY
        ext = self.rafs.ext
        buf, base, n = self.rafs.buf, ext.s_chunk_table_offset, ext.s_chunk_table_size // layout.size
        if len(want) != 32 or n < 4096:
            return None  # a small table is cheap to build
        lo, hi = 0, n
        while lo < hi:
            mid = (lo + hi) // 2
            off = base + mid * layout.size
            if bytes(buf[off : off + 32]) < want:
                lo = mid + 1
            else:
                hi = mid
        for k in range(lo, min(n, lo + 8)):
            off = base + k * layout.size
            if bytes(buf[off : off + 32]) != want:
                break
            row = layout.struct.unpack_from(buf, off)
            if row[1] == self.blob_index and row[8] == index:
                return row
        return None

    def finding(self, check: str, rec, message: str, **kw) -> Finding:
        kw.setdefault("offset", rec.compressed_offset)
        return Finding(
            check,
            message,
            structure="chunk",
            file=self.blob.path,
            blob_index=self.blob_index,
            chunk=rec.index,
            **kw,
        )

    def check(self, index: int) -> tuple[bytes | None, list[Finding]]:
        """(decompressed bytes or None, findings) of chunk ``index``."""
        rec = self.records[index]
        f = self.check_range(rec)
        if f is not None:
            return None, [f]
        out: list[Finding] = []
        data = None
        for _, got in iter_decoded(self.blob.source, self.compressor, [rec]):
            data = self._checked(rec, got, out)
        return (bytes(data) if data is not None else None), out

    def check_batch(self, start: int, stop: int) -> tuple[int, list[Finding]]:
        out: list[Finding] = []
        good = []
        for i in range(start, stop):
            rec = self.records[i]
            f = self.check_range(rec)
            if f is not None:
                out.append(f)
            else:
                good.append(rec)
        # The chunk service's batched decoder; each run's bytes are checked before the next run reuses the buffer.
        for i, got in iter_decoded(self.blob.source, self.compressor, good, out_buffer=_out_buffer):
            self._checked(good[i], got, out)
        return stop - start, out

    def _checked(self, rec, got, out: list[Finding]):
        """The checks of one decoded chunk (``got`` from ``iter_decoded``): its bytes, or None when it failed."""
        if isinstance(got, Failed):
            if got.stage == "read":
                out.append(self.finding("chunk.read", rec, str(got.error)))
            else:
                out.append(self.finding("chunk.read", rec, f"does not decompress: {got.error.detail}"))
            return None
        return self.check_decoded(rec, got, out)

    def _clean(self, rec, data, got: bytes) -> bool:
        """True when every check of :meth:`check_decoded` passes (its common case, decided with fewer steps);
        False sends the chunk through those checks, which say what differs."""
        table = self._table
        if table is None or self.blob_index is None:
            return False
        idx = rec.index
        digests = self.digests
        if digests is not None and 32 * idx + 32 <= len(digests) and digests[32 * idx : 32 * idx + 32] != got:
            return False
        row = table.get((self.blob_index, idx))
        crc = rec.crc32
        if row is not None:
            flags = row[2]
            if (
                row[0] != got
                or row[5] != rec.compressed_offset
                or row[3] != rec.compressed_size
                or row[6] != rec.uncompressed_offset
                or row[4] != rec.uncompressed_size
                or bool(flags & rafs_v6.CHUNK_COMPRESSED) != rec.compressed
            ):
                return False
            if flags & rafs_v6.CHUNK_HAS_CRC32 and self.source != "bootstrap chunk table":
                if crc is not None and crc != row[9]:
                    return False
                crc = row[9]
        return crc is None or crc32c(data) == crc

    def check_range(self, rec) -> Finding | None:
        if rec.compressed_size <= 0 or rec.compressed_offset + rec.compressed_size > self.data_end:
            return self.finding(
                "chunk.range",
                rec,
                f"compressed range lies outside image.blob ({self.data_end} bytes)",
                expected=f"<= {self.data_end}",
                found=f"{rec.compressed_offset}+{rec.compressed_size}",
            )
        if rec.uncompressed_offset % 4096:
            return self.finding(
                "chunk.range",
                rec,
                "uncompressed offset is not 4K-aligned",
                field="uncompressed_offset",
                found=str(rec.uncompressed_offset),
            )
        if not rec.compressed and rec.compressed_size != rec.uncompressed_size:
            return self.finding(
                "chunk.range",
                rec,
                "uncompressed chunk with differing sizes",
                expected=str(rec.uncompressed_size),
                found=str(rec.compressed_size),
            )
        return None

    def check_decoded(self, rec, data, out: list[Finding]):
        """The checks of a chunk's decoded bytes: its digest, CRC32C and bootstrap chunk-table record."""
        got = self.digester.digest(data)
        if self._clean(rec, data, got):
            return data
        before = len(out)
        if self.digests is not None and 32 * rec.index + 32 <= len(self.digests):
            want = self.digests[32 * rec.index : 32 * rec.index + 32]
            if got != want:
                out.append(
                    self.finding(
                        "chunk.digest",
                        rec,
                        f"{self.digester.value} digest differs from blob.digest",
                        expected=want.hex(),
                        found=got.hex(),
                    )
                )
        # row: block_id, blob_index, flags, compressed_size, uncompressed_size, compressed_offset,
        # uncompressed_offset, file_offset, index, crc32
        row = self._row(rec.index)
        # The CRC32C only adds news when the digests do not already condemn the data: then a mismatch means
        # the recorded crc32 itself is wrong.
        condemned = len(out) > before or (row is not None and row[0] != got)
        crcs = [(self.source, rec.crc32)] if rec.crc32 is not None else []
        if row is not None and row[2] & rafs_v6.CHUNK_HAS_CRC32 and self.source != "bootstrap chunk table":
            crcs.append(("bootstrap chunk table", row[9]))
        if crcs and not condemned:
            crc = crc32c(data)
            for where, want_crc in crcs:
                if want_crc != crc:
                    out.append(
                        self.finding(
                            "chunk.crc",
                            rec,
                            f"CRC32C differs from the {where}",
                            expected=f"{want_crc:#010x}",
                            found=f"{crc:#010x}",
                        )
                    )
        if row is not None:
            if row[0] != got:
                out.append(
                    self.finding(
                        "chunk.table",
                        rec,
                        f"{self.digester.value} digest differs from the bootstrap chunk table",
                        expected=row[0].hex(),
                        found=got.hex(),
                    )
                )
            mine = (
                rec.compressed_offset,
                rec.compressed_size,
                rec.uncompressed_offset,
                rec.uncompressed_size,
                rec.compressed,
            )
            theirs = (row[5], row[3], row[6], row[4], bool(row[2] & rafs_v6.CHUNK_COMPRESSED))
            if mine != theirs:
                out.append(
                    self.finding(
                        "chunk.table",
                        rec,
                        f"bootstrap chunk table record differs from {self.source}",
                        expected=_fmt_rec(mine),
                        found=_fmt_rec(theirs),
                    )
                )
        return data


_local = threading.local()


def _out_buffer(size: int) -> memoryview:
    """A buffer of ``size`` bytes for this thread's next run of decoded chunks, reused from run to run: fresh
    buffers of megabytes cost page faults and zeroing."""
    buf = getattr(_local, "buf", None)
    if buf is None or len(buf) < size:
        buf = _local.buf = bytearray(max(size, RUN_BYTES))
    return memoryview(buf)[:size]


def _fmt_rec(t: tuple) -> str:
    return f"c {t[0]}+{t[1]} u {t[2]}+{t[3]} {'compressed' if t[4] else 'raw'}"


def _check_chunks(run: _Run, blob: Layer, blob_index: int | None, ent) -> None:
    try:
        blob.chunk_infos  # noqa: B018
    except NydusInspectError:
        return  # the blob.meta pass has reported it
    ahead = run.ahead.take_chunks(blob_index, blob)
    try:
        if ahead is not None:
            cv = ahead[0]
        else:
            cv = ChunkVerifier(run.layer, blob_index) if blob_index is not None else ChunkVerifier(blob)
    except UsageError as exc:
        run.report.notes.append(str(exc))
        return
    except NydusInspectError as exc:
        run.add(_exc_finding("chunk.read", exc, blob_index=blob_index, file=blob.path))
        return
    run.report.notes.extend(cv.notes)
    total = len(cv)
    stage = "chunks"
    if ahead is not None:
        ahead[1].collect(run, stage)
        return
    try:
        cv.table  # noqa: B018 - build the bootstrap chunk table once, before the workers need it
    except NydusInspectError as exc:
        run.add(_exc_finding("chunk.table", exc, file=run.layer.path))
        cv._table = {}
    run.tick(stage, 0, total)
    with ThreadPoolExecutor(max_workers=run.workers, thread_name_prefix="verify") as pool:
        pending = []
        done = 0
        for start in range(0, total, BATCH):
            pending.append(pool.submit(cv.check_batch, start, min(total, start + BATCH)))
            if len(pending) >= 2 * run.workers:
                done += _collect(run, pending.pop(0).result())
                run.tick(stage, done, total)
        for fut in pending:
            done += _collect(run, fut.result())
            run.tick(stage, done, total)
    run.tick(stage, total, total)


class _Batches:
    """The chunk batches of one blob: the pool checks them ahead of their turn, from the front, while the main
    thread is busy elsewhere; :meth:`collect` then adds their findings in batch order (the report of a
    sequential run), taking the batches no worker has started from the back itself meanwhile.

    Finished batches hold their findings until collected: past AHEAD_FINDINGS of them no more batches start
    early, so a badly broken blob does not hold millions of findings at once.
    """

    def __init__(self, pool: ThreadPoolExecutor, cv: ChunkVerifier, queue: int) -> None:
        total = len(cv)
        self.pool, self.cv, self.queue = pool, cv, queue
        self.spans = [(s, min(total, s + BATCH)) for s in range(0, total, BATCH)]
        self.futures: list = [None] * len(self.spans)
        self.lock = threading.RLock()  # a done callback may run in the thread that adds it
        self.next = 0  # the next batch a worker may start
        self.end = len(self.spans)  # batches from here on were taken by the main thread
        self.running = 0  # submitted and not finished
        self.held = 0  # findings of finished batches not collected yet
        self.stopped = False
        self.feed()

    def feed(self) -> None:
        with self.lock:
            while (
                not self.stopped
                and self.next < self.end
                and self.running < self.queue
                and self.held < AHEAD_FINDINGS
            ):
                k = self.next
                try:
                    fut = self.pool.submit(self.cv.check_batch, *self.spans[k])
                except RuntimeError:  # the pool is shutting down
                    self.stopped = True
                    return
                self.futures[k] = fut
                self.next += 1
                self.running += 1
                fut.add_done_callback(self._done)

    def _done(self, fut) -> None:
        with self.lock:
            self.running -= 1
            if not fut.cancelled() and fut.exception() is None:
                self.held += len(fut.result()[1])
            self.feed()

    def stop(self) -> None:
        with self.lock:
            self.stopped = True

    def _take(self, k: int) -> bool:
        """Claim batch ``k`` for the main thread when no worker has started it."""
        with self.lock:
            fut = self.futures[k]
            if fut is None:
                if k == self.next:
                    self.next += 1
                return True
        return fut.cancel()

    def _steal(self, k: int) -> int | None:
        """The last batch after ``k`` that no worker will take, claimed for the main thread; None if none."""
        with self.lock:
            j = self.end - 1
            if j <= k or j < self.next or self.held >= AHEAD_FINDINGS:
                return None
            self.end = j
            return j

    def collect(self, run: _Run, stage: str) -> None:
        total = len(self.cv)
        run.tick(stage, 0, total)
        mine: dict[int, tuple[int, list[Finding]] | Exception] = {}
        done = 0
        k = 0
        while k < len(self.spans):
            fut = self.futures[k]
            if k in mine:
                result = mine.pop(k)
                if isinstance(result, Exception):
                    raise result  # in its turn, as a sequential run meets it
                with self.lock:
                    self.held -= len(result[1])
            elif self._take(k):
                result = self.cv.check_batch(*self.spans[k])
            elif not fut.done() and (j := self._steal(k)) is not None:
                try:
                    mine[j] = got = self.cv.check_batch(*self.spans[j])
                except Exception as exc:  # noqa: BLE001 - raised when its turn comes
                    mine[j] = exc
                else:
                    with self.lock:
                        self.held += len(got[1])
                if run.cancel is not None and run.cancel():  # progress is told in batch order
                    raise Cancelled(f"verification cancelled during {stage}")
                continue
            else:
                result = fut.result()
                with self.lock:
                    self.held -= len(result[1])
                    self.feed()
            done += _collect(run, result)
            run.tick(stage, done, total)
            k += 1
        run.tick(stage, total, total)


def _collect(run: _Run, result: tuple[int, list[Finding]]) -> int:
    n, findings = result
    run.count("chunks", n)
    for f in findings:
        owners = run.owners(f.blob_index, f.chunk) if f.chunk is not None else ()
        run.add(_with(f, paths=owners, path=owners[0]) if owners else f)
    return n


# ---------------------------------------------------------------------------- content addresses
def _check_blob_ids(run: _Run, blobs: list) -> None:
    """A blob file named by a 64-hex id hashes to it (OCI layouts and blob dirs name blobs by digest)."""
    layer = run.layer
    todo: list[tuple[Layer, str, int | None]] = []
    if layer.kind in (KIND_BLOB_TOC, KIND_BLOB_NO_TOC):
        stem = layer.name.split(".")[0]
        if _HEX64.fullmatch(stem):
            todo.append((layer, stem, None))
    for blob_index, blob, ent in blobs:
        if blob is not layer and ent is not None and _HEX64.fullmatch(ent.id):
            todo.append((blob, ent.id, blob_index))
    for blob, want, blob_index in todo:
        if run.cancel is not None and run.cancel():
            raise Cancelled("verification cancelled during blob.id")
        full, partial = run.ahead.content_digests(blob)
        run.count("blob ids")
        if want not in (full, partial):
            run.add(
                Finding(
                    "blob.id",
                    "the blob's sha256 (whole file, or without the blob.digest array) is not its id",
                    structure="blob file",
                    file=blob.path,
                    blob_index=blob_index,
                    expected=want,
                    found=full,
                )
            )


def _content_digests(blob: Layer, prefix: int | None = None) -> tuple[str, str | None, str | None]:
    """(sha256 of the file, sha256 of the file without its blob.digest array or None, sha256 of its first
    ``prefix`` bytes or None), in one read of the file."""
    skip = None
    try:
        if blob.has_entry(BLOB_DIGEST):
            off, size = blob.entry_location(BLOB_DIGEST)[:2]
            if 0 <= off <= off + size <= blob.size:
                skip = (off, off + size)
    except NydusInspectError:
        skip = None
    full = hashlib.sha256()
    part = hashlib.sha256() if skip else None
    head = None
    step = 4 << 20
    pos = 0
    while pos < blob.size:
        stop = min(blob.size, pos + step)
        if skip and pos < skip[1] and skip[0] < stop:
            stop = skip[0] if pos < skip[0] else skip[1]
        if prefix is not None and pos < prefix < stop:
            stop = prefix
        data = blob.pread(pos, stop - pos, "blob")
        full.update(data)
        if part is not None and not (skip[0] <= pos < skip[1]):
            part.update(data)
        pos = stop
        if pos == prefix:
            head = full.hexdigest()
    return full.hexdigest(), part.hexdigest() if part is not None else None, head


def _blob_id_pass(blob: Layer) -> int | None:
    """Where the sha256 of the image.blob ToC entry (its data, then its tar header) ends when it is a prefix of
    the file, so that the blob-id pass can give it too; else None."""
    if blob.toc is None:
        return None
    try:
        off, size, comp, _, _ = blob.entry_location(IMAGE_BLOB)
    except NydusInspectError:
        return None
    if off != 0 or comp is not Compressor.NONE or size + 512 > blob.size:
        return None
    return size + 512


# ---------------------------------------------------------------------------- round trip
def _check_roundtrip(run: _Run, source: str) -> None:
    from .diff import compare, describe_layer, describe_tar

    run.tick("roundtrip", 0, 2)
    try:
        expected = describe_tar(source)
    except NydusInspectError as exc:
        run.add(_exc_finding("roundtrip", exc, file=source))
        return
    run.tick("roundtrip", 1, 2)
    try:
        found = describe_layer(run.layer)
    except NydusInspectError as exc:
        detail = exc.detail if isinstance(exc, FormatError) else str(exc)
        run.add(
            Finding(
                "roundtrip",
                f"the layer's tree does not read back: {detail}",
                structure=getattr(exc, "structure", None),
                file=run.layer.path,
                offset=getattr(exc, "offset", None),
            )
        )
        return
    n = 0
    for d in compare(expected, found):
        j = d.to_json()
        run.add(
            Finding(
                "roundtrip",
                f"{d.field} differs from the source tar",
                path=j["path"],
                field=d.field,
                file=run.layer.path,
                expected=_short(j["expected"]),
                found=_short(j["found"]),
            )
        )
        n += 1
    run.count("roundtrip entries", len(expected.entries))
    run.tick("roundtrip", 2, 2)


def _short(value: object) -> str:
    text = str(value)
    return text if len(text) <= 200 else text[:197] + "..."


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

