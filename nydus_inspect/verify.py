"""verify: check a nydus layer end to end and say where every failure is.

``verify(layer, source=None, progress=None) -> Report`` runs these checks (the
``check`` name of each :class:`Finding`):

==================  ==========================================================================
``toc.entry``       every ToC entry reads, decompresses and has the sha256 the ToC records
``toc.section``     each ToC entry agrees with the tar header that follows its data
``toc.digest``      the recomputed ToC digest (and size) equal what the bootstrap's blob table records
``blob_meta``       blob.meta header against the ToC, the blob table and blob.digest
``chunk.range``     a chunk record lies inside image.blob, its uncompressed offset 4K-aligned
``chunk.read``      a chunk reads and decompresses to its recorded size
``chunk.digest``    the digest of a chunk's bytes equals blob.digest
``chunk.table``     ...equals the bootstrap chunk table, whose record agrees with blob.meta
``bootstrap``       the bootstrap decodes (superblocks, blob table)
``bootstrap.inode`` every inode decodes and every directory lists
``bootstrap.chunks`` every file's chunks resolve to a blob and a chunk record
``blob.missing``    a blob the bootstrap names cannot be found
``roundtrip``       the layer's tree equals the source tar's (``source=``)
==================  ==========================================================================

A chunk finding names the blob, the chunk index, its compressed offset in the
blob file and the file(s) that use it. Operations layer: no printing; progress
is a callback ``progress(stage, done, total)``.
"""

from __future__ import annotations

import hashlib
import os
from array import array
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields

from . import codecs
from .codecs import Compressor
from .digests import Digester
from .errors import FormatError, NydusInspectError, UsageError
from .formats import blob_meta, rafs_v6
from .formats.tar_header import BLOB_DIGEST, BLOB_META, BLOB_META_HEADER, IMAGE_BLOB, IMAGE_BOOT
from .inspect import FileIndex, WalkError, walk_tree
from .layer import KIND_BLOB_NO_TOC, KIND_BLOB_TOC, Layer
from .model import REG, fsdecode

#: Findings kept per check; the rest are only counted (a badly broken blob would otherwise list millions).
DEFAULT_LIMIT = 1000
#: Chunks read per batch in the chunk pass, and the largest span one batch reads at once.
BATCH = 256
MAX_SPAN = 32 << 20

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
        _check_bootstrap(run)
        blobs = list(_blob_layers(run))
        for blob_index, blob_layer, entry in blobs:
            _check_toc(run, blob_layer, blob_index, entry)
        for blob_index, blob_layer, entry in blobs:
            _check_blob_meta(run, blob_layer, blob_index, entry)
        for blob_index, blob_layer, entry in blobs:
            _check_chunks(run, blob_layer, blob_index, entry)
        if source is not None:
            _check_roundtrip(run, source)
    except Cancelled:
        run.report.cancelled = True
    return run.report


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

    def bad_walk(err: WalkError) -> None:
        index.errors.append(err)
        run.add(_exc_finding("bootstrap.inode", err.error, path=fsdecode(err.path), file=layer.path))

    seen_nids: set[int] = set()
    run.tick("bootstrap", 0, total)
    for n, node in enumerate(walk_tree(rafs, on_error=bad_walk)):
        pid = index.add_path(node.path)
        first_visit = node.nid not in seen_nids
        seen_nids.add(node.nid)
        run.count("paths")
        if first_visit:
            run.count("inodes")
        if node.hardlink is not None:
            index.add_hardlink(node.hardlink, pid)
        if node.type == REG:
            index.files += 1
            try:
                chunks = rafs.chunks(node)
            except NydusInspectError as exc:
                run.add(_exc_finding("bootstrap.chunks", exc, path=fsdecode(node.path), file=layer.path))
                chunks = []
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
            run.tick("bootstrap", n + 1, total)
    run.tick("bootstrap", total, total)


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
        if blob.kind == KIND_BLOB_NO_TOC:
            run.report.notes.append(
                f"{blob.name}: no ToC; entries found by the tar-header walk, no sha256 to check"
            )
        return
    names = [e.name for e in blob.toc]
    for i, name in enumerate(names):
        run.tick("toc", i, len(names))
        finding = entry_check(blob, name)
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
        if ent.blob_toc_size and ent.blob_toc_size != size:
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
            )
    return [rows[k] for k in sorted(rows)]


def _guess_codec(blob: Layer, records, digests: bytes | None) -> tuple[Compressor, Digester]:
    """A blob without a bootstrap does not say its chunk compressor or digester: ask its first chunk."""
    comp, dig = Compressor.ZSTD, Digester.BLAKE3
    for rec in records:
        if rec.compressed:
            raw = blob.pread(rec.compressed_offset, min(rec.compressed_size, 4), "chunk")
            comp = Compressor.ZSTD if raw[:4] == b"\x28\xb5\x2f\xfd" else Compressor.LZ4_BLOCK
            break
    if digests and len(records):
        rec = records[0]
        try:
            raw = blob.pread(rec.compressed_offset, rec.compressed_size, "chunk")
            data = codecs.decompress(raw, comp, rec.uncompressed_size) if rec.compressed else raw
            for d in (Digester.BLAKE3, Digester.SHA256):
                if d.digest(data) == digests[:32]:
                    dig = d
                    break
        except NydusInspectError:
            pass
    return comp, dig


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
        if self.rafs is not None and blob_index is not None:
            ent = self.rafs.blobs[blob_index]
            bf = layer.blob_file(blob_index)
            self.blob = bf.layer
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
        if self.rafs is not None and blob_index is not None:
            self.digester = self.rafs.digester
            self.compressor = ent.compressor
        else:
            self.compressor, self.digester = _guess_codec(self.blob, self.records, self.digests)
            self.notes.append(
                f"{self.blob.name}: no bootstrap names this blob's compressor and digester; its chunks say "
                f"{self.compressor.value} and {self.digester.value}"
            )
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
        row = self.table_row(index)
        return row.block_id if row is not None else None

    @property
    def table(self) -> dict:
        """The bootstrap chunk table keyed by (blob index, chunk index); built on first use."""
        if self._table is None:
            self._table = self.rafs.chunk_table() if self.rafs is not None else {}
        return self._table

    def table_row(self, index: int):
        """The bootstrap chunk-table record of chunk ``index`` of this blob, or None."""
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
            row = rafs_v6.ChunkTableEntry(*layout.struct.unpack_from(buf, off))
            if row.blob_index == self.blob_index and row.index == index:
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
        out: list[Finding] = []
        f = self.check_range(rec)
        if f is not None:
            return None, [f]
        pairs = self.read([rec], out)
        data = None
        for r, raw in pairs:
            data = self.check_data(r, raw, out)
        return data, out

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
        for rec, raw in self.read(good, out):
            self.check_data(rec, raw, out)
        return stop - start, out

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

    def read(self, recs, out: list[Finding]):
        """(record, stored bytes) pairs, reading a contiguous span at once when the chunks lie close."""
        if not recs:
            return []
        lo = min(r.compressed_offset for r in recs)
        hi = max(r.compressed_offset + r.compressed_size for r in recs)
        stored = sum(r.compressed_size for r in recs)
        if hi - lo <= MAX_SPAN and hi - lo <= 2 * stored + (1 << 20):
            try:
                span = self.blob.pread(lo, hi - lo, "chunk data")
                return [
                    (r, span[r.compressed_offset - lo : r.compressed_offset - lo + r.compressed_size])
                    for r in recs
                ]
            except NydusInspectError:
                pass  # fall back to one read per chunk, to name the bad one
        pairs = []
        for r in recs:
            try:
                pairs.append((r, self.blob.pread(r.compressed_offset, r.compressed_size, "chunk data")))
            except NydusInspectError as exc:
                out.append(self.finding("chunk.read", r, str(exc)))
        return pairs

    def check_data(self, rec, raw: bytes, out: list[Finding]) -> bytes | None:
        if rec.compressed:
            try:
                data = codecs.decompress(
                    raw, self.compressor, rec.uncompressed_size, "chunk", rec.compressed_offset
                )
            except NydusInspectError as exc:
                detail = exc.detail if isinstance(exc, FormatError) else str(exc)
                out.append(self.finding("chunk.read", rec, f"does not decompress: {detail}"))
                return None
        else:
            data = bytes(raw)
        got = self.digester.digest(data)
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
        row = self.table_row(rec.index)
        if row is not None:
            if row.block_id != got:
                out.append(
                    self.finding(
                        "chunk.table",
                        rec,
                        f"{self.digester.value} digest differs from the bootstrap chunk table",
                        expected=row.block_id.hex(),
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
            theirs = (
                row.compressed_offset,
                row.compressed_size,
                row.uncompressed_offset,
                row.uncompressed_size,
                row.compressed,
            )
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


def _fmt_rec(t: tuple) -> str:
    return f"c {t[0]}+{t[1]} u {t[2]}+{t[3]} {'compressed' if t[4] else 'raw'}"


def _check_chunks(run: _Run, blob: Layer, blob_index: int | None, ent) -> None:
    try:
        blob.chunk_infos  # noqa: B018
    except NydusInspectError:
        return  # the blob.meta pass has reported it
    try:
        cv = ChunkVerifier(run.layer, blob_index) if blob_index is not None else ChunkVerifier(blob)
    except UsageError as exc:
        run.report.notes.append(str(exc))
        return
    except NydusInspectError as exc:
        run.add(_exc_finding("chunk.read", exc, blob_index=blob_index, file=blob.path))
        return
    run.report.notes.extend(cv.notes)
    try:
        cv.table  # noqa: B018 - build the bootstrap chunk table once, before the workers need it
    except NydusInspectError as exc:
        run.add(_exc_finding("chunk.table", exc, file=run.layer.path))
        cv._table = {}
    total = len(cv)
    stage = "chunks"
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


def _collect(run: _Run, result: tuple[int, list[Finding]]) -> int:
    n, findings = result
    run.count("chunks", n)
    for f in findings:
        owners = run.owners(f.blob_index, f.chunk) if f.chunk is not None else ()
        run.add(_with(f, paths=owners, path=owners[0]) if owners else f)
    return n


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
