"""What the screens show, computed from an opened layer. No textual here: this is plain, testable code.

:class:`LayerView` wraps one :class:`nydus_inspect.Layer` with the summaries, rows and previews the
screens need; :class:`ChunkSource` is one blob's chunk table, read record by record so that a
million chunks cost nothing until they are on screen. Everything that may take long (loading the
bootstrap, walking the tree, filtering a million chunks) is a plain function that the app runs in a
worker thread.
"""

from __future__ import annotations

import stat
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

from nydus_inspect import ChunkRef, Layer, Node, NydusInspectError
from nydus_inspect.formats import rafs_v6
from nydus_inspect.layer import KIND_EROFS
from nydus_inspect.model import BLK, CHR, REG, SYMLINK, fsdecode
from nydus_inspect.query import FileIndex, blob_id_text, toc_report
from nydus_inspect.verify import ChunkVerifier, entry_check

#: How much of a file or entry the previews show.
PREVIEW_BYTES = 4096
#: Children of a directory added to the tree at once; the rest behind a "more" node.
DIR_PAGE = 1000

Pairs = list[tuple[str, str]]


# ---------------------------------------------------------------------------- formatting
def size_text(n: int | None) -> str:
    if n is None or n < 0:
        return "-"
    if n < 1024:
        return f"{n:,} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if n < 1024 or unit == "TiB":
            return f"{n:,.1f} {unit}"
    return str(n)


def bytes_text(n: int | None) -> str:
    """``12,288 (12.0 KiB)``: exact and readable."""
    if n is None or n < 0:
        return "-"
    return f"{n:,}" if n < 1024 else f"{n:,} ({size_text(n)})"


def time_text(sec: int, nsec: int = 0) -> str:
    try:
        text = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(sec))
    except (OverflowError, OSError, ValueError):
        return str(sec)
    return f"{text}.{nsec:09d} UTC" if nsec else f"{text} UTC"


@dataclass(frozen=True)
class HexDump:
    """A hex dump laid out for the width it is shown in: 16 bytes a line (the classic layout), or 8 or 4
    where that does not fit, so that a line never wraps. ``str()`` is the 16-byte layout."""

    data: bytes
    base: int = 0
    limit: int = PREVIEW_BYTES

    #: Characters of a line holding n bytes: offset, hex (16 have a gap in the middle), the text column.
    WIDTHS = ((16, 78), (8, 45), (4, 29))

    def text(self, width: int = 78) -> str:
        per = next((n for n, need in self.WIDTHS if need <= width), 4)
        lines = []
        shown = self.data[: self.limit]
        for off in range(0, len(shown), per):
            row = shown[off : off + per]
            if per == 16:
                hexes = " ".join(f"{b:02x}" for b in row[:8]) + "  " + " ".join(f"{b:02x}" for b in row[8:])
            else:
                hexes = " ".join(f"{b:02x}" for b in row)
            text = "".join(chr(b) if 32 <= b < 127 else "." for b in row)
            lines.append(f"{self.base + off:08x}  {hexes:<{3 * per - 1 + (per == 16)}}  |{text}|")
        if len(self.data) > self.limit:
            lines.append(f"... {len(self.data) - self.limit:,} more bytes")
        if not self.data:
            lines.append("(empty)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()


def hexdump(data: bytes, base: int = 0, limit: int = PREVIEW_BYTES) -> HexDump:
    """A hex dump of ``data`` with offsets counted from ``base`` (see :class:`HexDump`)."""
    return HexDump(bytes(data), base, limit)


def looks_like_text(data: bytes) -> bool:
    if not data:
        return True
    if b"\0" in data[:PREVIEW_BYTES]:
        return False
    try:
        data[:PREVIEW_BYTES].decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the preview is still text.
        if exc.start < len(data[:PREVIEW_BYTES]) - 4:
            return False
    return True


def content_preview(data: bytes, base: int = 0, limit: int = PREVIEW_BYTES) -> tuple[str, str | HexDump]:
    """("text" or "hex", the preview) of ``data``."""
    if looks_like_text(data):
        text = data[:limit].decode("utf-8", "replace")
        if len(data) > limit:
            text += f"\n... {len(data) - limit:,} more bytes"
        return "text", text
    return "hex", hexdump(data, base, limit)


def short_hex(digest: bytes | None, width: int = 16) -> str:
    if not digest:
        return "-"
    text = digest.hex()
    return text if len(text) <= width else text[:width] + "…"


def record_fields(obj, skip: Sequence[str] = ()) -> Pairs:
    """The fields of a decoded on-disk record (a dataclass), hex for integers that read better so."""
    out = []
    for f in fields(obj):
        if f.name.startswith("_") or f.name in skip:
            continue
        v = getattr(obj, f.name)
        if isinstance(v, bytes | bytearray):
            text = bytes(v).rstrip(b"\0")
            shown = text.decode("ascii") if text.isascii() and bytes(text).isalnum() else bytes(v).hex()
            out.append((f.name, shown or "0"))
        elif isinstance(v, bool):
            out.append((f.name, "yes" if v else "no"))
        elif isinstance(v, int) and f.name.endswith(
            ("magic", "magic2", "flags", "features", "compat", "incompat", "chunk_size")
        ):
            out.append((f.name, f"{v:#x}"))
        elif isinstance(v, int):
            out.append((f.name, f"{v:,}" if v >= 10000 else str(v)))
        else:
            out.append((f.name, str(v)))
    return out


# ---------------------------------------------------------------------------- ToC rows and previews
@dataclass
class TocRow:
    name: str
    compressor: str
    offset: int
    stored: int
    size: int | None
    sha256: str | None  # None: not recorded (no ToC)

    def cells(self) -> list[str]:
        return [
            self.name,
            self.compressor,
            f"{self.offset:,}",
            f"{self.stored:,}",
            "-" if self.size is None else f"{self.size:,}",
            (self.sha256[:16] + "…") if self.sha256 else "-",
        ]


@dataclass
class Preview:
    title: str
    fields: Pairs = field(default_factory=list)
    body: str | HexDump = ""  # hex dump or text
    body_kind: str = "hex"
    note: str = ""


@dataclass
class EntryCheck:
    name: str
    ok: bool | None  # None: nothing recorded to compare with
    recorded: str
    found: str
    message: str

    @property
    def label(self) -> str:
        return {True: "match", False: "MISMATCH", None: "no sha256"}[self.ok]


# ---------------------------------------------------------------------------- chunks
class ChunkSource:
    """One blob's chunk table for the chunks screen: records decoded on access, digests and owners.

    Wraps :class:`nydus_inspect.verify.ChunkVerifier`, so the table shows exactly what verify checks
    and the per-chunk verify action is verify's own check.
    """

    def __init__(self, view: LayerView, blob_index: int | None, label: str) -> None:
        self.view = view
        self.label = label
        self.verifier = ChunkVerifier(view.layer, blob_index)
        self.blob_index = self.verifier.blob_index
        self.records = self.verifier.records
        if self.verifier.digests is None and self.verifier.rafs is not None:
            view.key_chunk_table()  # digests from the bootstrap chunk table, keyed here (a worker)
            with view.lock:
                self.verifier.table  # noqa: B018 - the table just keyed

    def __len__(self) -> int:
        return len(self.records)

    def record(self, i: int):
        return self.records[i]

    def digest(self, i: int) -> bytes | None:
        return self.verifier.digest(self.records[i].index)

    def owners(self, i: int) -> list[str] | None:
        """Files using chunk ``i``; None while the file index is being built."""
        idx = self.view.index
        if idx is None:
            return None if self.view.is_v6 and not self.view.index_error else []
        if self.blob_index is None:
            return []
        return idx.owners(self.blob_index, self.records[i].index)

    def column_bounds(self) -> tuple[int, int, int, int, int]:
        """Upper bounds of the table's numbers (index, compressed offset and size, uncompressed offset and
        size), from the blob's facts and its first and last records: no scan of a million records."""
        n = len(self.records)
        if not n:
            return (0, 0, 0, 0, 0)
        ends = [self.records[0], self.records[n - 1]]
        ent = self.verifier.entry
        chunk = ent.chunk_size if ent is not None else 0
        return (
            max(r.index for r in ends),
            max(self.verifier.data_end, *(r.compressed_offset for r in ends)),
            max(chunk, *(r.compressed_size for r in ends)),
            max(
                ent.uncompressed_size if ent is not None else 0,
                *(r.uncompressed_offset + r.uncompressed_size for r in ends),
            ),
            max(chunk, *(r.uncompressed_size for r in ends)),
        )

    def cells(self, i: int) -> list[str]:
        rec = self.records[i]
        owners = self.owners(i)
        if owners is None:
            who = "…"
        elif not owners:
            who = "-"
        else:
            who = owners[0] + (f" (+{len(owners) - 1})" if len(owners) > 1 else "")
        return [
            str(rec.index),
            f"{rec.compressed_offset:,}",
            f"{rec.compressed_size:,}",
            f"{rec.uncompressed_offset:,}",
            f"{rec.uncompressed_size:,}",
            "yes" if rec.compressed else "no",
            short_hex(self.digest(i)),
            who,
        ]

    def detail(self, i: int) -> Pairs:
        rec = self.records[i]
        out: Pairs = [
            ("chunk", f"{rec.index} of {len(self):,} ({self.label})"),
            ("compressed", f"offset {rec.compressed_offset:,} size {rec.compressed_size:,}"),
            ("uncompressed", f"offset {rec.uncompressed_offset:,} size {rec.uncompressed_size:,}"),
            ("stored", "compressed" if rec.compressed else "raw (compression did not help)"),
        ]
        flags = getattr(rec, "flags", 0)
        if flags:
            out.append(("flags", f"{flags:#x}"))
        crc = getattr(rec, "crc32", None)
        if crc is not None:
            out.append(("crc32c", f"{crc:#010x}"))
        digest = self.digest(i)
        out.append((f"digest ({self.verifier.digester.value})", digest.hex() if digest else "-"))
        owners = self.owners(i)
        if owners is None:
            out.append(("files", "(indexing the file tree…)"))
        elif not owners:
            out.append(("files", "none (no file uses this chunk)"))
        else:
            for k, p in enumerate(owners[:20]):
                out.append(("files" if k == 0 else "", p))
            if len(owners) > 20:
                out.append(("", f"... {len(owners) - 20} more"))
        return out

    # -- navigation
    def bisect(self, offset: int, compressed: bool = True) -> int:
        """Row of the chunk holding ``offset`` (compressed or uncompressed), records being in offset order."""
        lo, hi = 0, len(self.records)
        while lo < hi:
            mid = (lo + hi) // 2
            rec = self.records[mid]
            start = rec.compressed_offset if compressed else rec.uncompressed_offset
            if start <= offset:
                lo = mid + 1
            else:
                hi = mid
        return max(0, lo - 1)

    def matcher(self, expr: str) -> Callable[[int], bool]:
        """A predicate over rows for the filter syntax (see :data:`FILTER_HELP`); ValueError when bad."""
        tests: list[Callable[[int], bool]] = []
        for term in expr.split():
            low = term.lower()
            if low in ("compressed", "comp"):
                tests.append(lambda i: self.records[i].compressed)
            elif low in ("raw", "uncompressed"):
                tests.append(lambda i: not self.records[i].compressed)
            elif low.startswith("digest:"):
                want = low[7:]
                tests.append(lambda i, w=want: (self.digest(i) or b"").hex().startswith(w))
            elif low.startswith(("owner:", "file:")):
                want = term.split(":", 1)[1]
                tests.append(lambda i, w=want: any(w in p for p in (self.owners(i) or ())))
            elif low in ("orphan", "unused"):
                tests.append(lambda i: self.owners(i) == [])
            elif low == "shared":
                tests.append(lambda i: len(self.owners(i) or ()) > 1)
            elif low[:5] in ("size>", "size<") or low[:6] in ("csize>", "csize<"):
                key, op, num = (
                    ("compressed_size", low[5], low[6:])
                    if low[0] == "c"
                    else ("uncompressed_size", low[4], low[5:])
                )
                n = int(num, 0)
                if op == ">":
                    tests.append(lambda i, k=key, n=n: getattr(self.records[i], k) > n)
                else:
                    tests.append(lambda i, k=key, n=n: getattr(self.records[i], k) < n)
            else:
                raise ValueError(f"unknown filter term {term!r}")
        return lambda i: all(t(i) for t in tests)

    def filter(
        self,
        expr: str,
        progress: Callable[[int, int], None] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> array:
        match = self.matcher(expr)
        out = array("q")
        n = len(self)
        for i in range(n):
            if match(i):
                out.append(i)
            if i & 0xFFFF == 0xFFFF:
                if progress is not None:
                    progress(i + 1, n)
                if cancel is not None and cancel():
                    break
        return out

    def search(self, text: str, rows: Sequence[int], start: int) -> int | None:
        """Position in ``rows`` (from ``start``, wrapping) of the next chunk whose index is ``text``, whose
        digest starts with ``text`` or one of whose files contains it."""
        text = text.strip()
        n = len(rows)
        if not n or not text:
            return None
        low = text.lower()
        for k in range(n):
            pos = (start + k) % n
            i = rows[pos]
            if str(self.records[i].index) == text:
                return pos
            d = self.digest(i)
            if d is not None and d.hex().startswith(low):
                return pos
            if any(text in p for p in (self.owners(i) or ())):
                return pos
        return None

    def check(self, i: int):
        """verify's check of chunk ``i``: (decompressed bytes or None, findings)."""
        return self.verifier.check(self.records[i].index)


FILTER_HELP = (
    "terms (all must match): compressed | raw | digest:HEX | owner:TEXT | orphan | shared | "
    "size>N | size<N | csize>N | csize<N"
)
JUMP_HELP = "N: chunk index | @OFF: compressed offset | u@OFF: uncompressed offset (0x.. for hex)"


def parse_jump(text: str) -> tuple[str, int]:
    """("index" | "compressed" | "uncompressed", number) from the jump prompt; ValueError when bad."""
    t = text.strip().lower().replace(",", "").replace("_", "")
    if t.startswith("u@"):
        return "uncompressed", int(t[2:], 0)
    if t.startswith(("@", "c@")):
        return "compressed", int(t.split("@", 1)[1], 0)
    if t.startswith("#"):
        t = t[1:]
    return "index", int(t, 0)


# ---------------------------------------------------------------------------- files
@dataclass
class FileRef:
    """A tree node of the files screen: cheap until highlighted (only the dirent is known)."""

    path: bytes
    nid: int
    is_dir: bool
    node: Node | None = None
    ftype: int = 0  # EROFS dirent file type (7: symlink)

    @property
    def label(self) -> str:
        name = fsdecode(self.path.rsplit(b"/", 1)[-1]) if self.path != b"/" else "/"
        if self.path == b"/":
            return "/"
        return name + ("/" if self.is_dir else "@" if self.ftype == 7 else "")


@dataclass
class DirPage:
    """A "more entries" node: the rest of a big directory from ``start``."""

    parent: FileRef
    start: int


def mode_text(node: Node) -> str:
    return f"{stat.filemode(node.mode)} ({node.perm:04o})"


# ---------------------------------------------------------------------------- one layer
class LayerView:
    """One opened layer, as the app shows it. Methods that can be slow are marked; run them in workers."""

    def __init__(self, layer: Layer, source: str | None = None) -> None:
        self.layer = layer
        self.path = layer.path
        self.name = layer.name
        self.source = source
        self.index: FileIndex | None = None  # set when the full walk is done
        self.index_error: str | None = None
        self.lock = threading.Lock()
        self._keying = threading.Lock()  # one thread keys the chunk table (key_chunk_table), the others wait
        self._dirs: dict[int, list] = {}
        self._sources: list[ChunkSource] | None = None
        self.toc_checks: dict[str, EntryCheck] = {}

    # -- overview ------------------------------------------------------------------------------
    @property
    def is_v6(self) -> bool:
        try:
            return self.layer.has_bootstrap and not self.layer.is_v5
        except NydusInspectError:
            return False

    @property
    def is_erofs(self) -> bool:
        """A plain EROFS image (mkfs.erofs): a tree, no blob table, ToC or nydus chunks."""
        return self.layer.kind == KIND_EROFS

    def erofs_summary(self) -> Pairs:
        """A plain EROFS image's superblock, as ``info`` shows it (cheap: the superblock is parsed on open)."""
        from nydus_inspect.erofs import info

        e = info(self.layer.rafs)
        return [
            ("fs version", "plain EROFS (no RAFS: file data in the image)"),
            ("image size", bytes_text(e["size"])),
            ("block size", bytes_text(e["block_size"])),
            ("inodes", f"{e['inodes']:,}"),
            ("blocks", f"{e['blocks']:,}"),
            ("features", ", ".join(e["feature_compat_names"] + e["feature_incompat_names"]) or "-"),
            ("compression", ", ".join(e["compression_algorithms"]) or "-"),
            ("root nid", str(e["root_nid"])),
            ("packed nid", str(e["packed_nid"]) if e["packed_nid"] else "-"),
            ("long xattr prefixes", ", ".join(e["long_xattr_prefixes"]) or "-"),
            ("uuid", e["uuid"]),
            ("volume name", e["volume_name"] or "-"),
            ("build time", time_text(e["build_time"])),
        ]

    def summary(self) -> Pairs:
        """What the file is, from its tail: cheap (no bootstrap, no digest)."""
        ly = self.layer
        out: Pairs = [("path", ly.path), ("kind", ly.kind), ("file size", bytes_text(ly.size))]
        if ly.toc is not None:
            out.append(("ToC", f"{len(ly.toc)} entries, digest {ly.toc_digest.hex()}"))
            blob = ly.toc_entry("image.blob")
            if blob is not None:
                out.append(
                    (
                        "chunk data",
                        f"{bytes_text(blob.compressed_size)} stored, "
                        f"{bytes_text(blob.uncompressed_size)} uncompressed",
                    )
                )
        elif ly.sections:
            out.append(("sections", ", ".join(s.name for s in ly.sections) + " (no ToC: tar-header walk)"))
        try:
            hdr = ly.blob_meta_header
        except NydusInspectError as exc:
            out.append(("blob.meta", f"unreadable: {exc}"))
            hdr = None
        if hdr is not None:
            j = hdr.to_json()
            out.append(
                (
                    "chunks",
                    f"{hdr.s_ci_entries:,} (blob.meta, {j['ci_compressor']}, "
                    f"{'v2' if hdr.record_size == 24 else 'v1'} records)",
                )
            )
            out.append(("blob features", f"{j['features']} {', '.join(j['features_names'])}"))
        for note in ly.notes:
            out.append(("note", note))
        return out

    def bootstrap_summary(self) -> Pairs:
        """Superblock facts: loads (and decompresses) the bootstrap. Slow on big layers: run in a worker."""
        ly = self.layer
        try:
            if not ly.has_bootstrap:
                return [("bootstrap", "none in this file (a data blob: open its bootstrap to see files)")]
            if ly.is_v5:
                sb = ly.rafs_v5.sb
                return [
                    ("fs version", "RAFS v5"),
                    ("inodes", f"{sb.s_inodes_count:,}"),
                    ("chunk size", f"{sb.s_block_size:#x}"),
                    ("blobs", str(len(ly.rafs_v5.blob_ids()))),
                ]
            r = ly.rafs
            if self.is_erofs:
                return self.erofs_summary()
        except NydusInspectError as exc:
            return [("bootstrap", f"unreadable: {exc}")]
        ext = r.ext
        chunk_rows = r.chunk_table_records
        return [
            ("fs version", "RAFS v6 (EROFS-compatible)"),
            ("bootstrap size", bytes_text(r.size)),
            ("compressor", ext.compressor.value),
            ("digester", ext.digester.value),
            ("chunk size", f"{ext.s_chunk_size:#x} ({size_text(ext.s_chunk_size)})"),
            ("inodes", f"{r.inode_count():,}"),
            ("chunk table", f"{chunk_rows:,} records"),
            ("blobs", str(len(r.blobs))),
            ("root nid", str(r.root_nid)),
            ("prefetch", " ".join(map(str, r.meta.prefetch)) or "-"),
        ]

    def blob_rows(self) -> list[list[str]]:
        """The bootstrap's blob table (slow: loads the bootstrap)."""
        ly = self.layer
        try:
            if not ly.has_bootstrap or ly.is_v5 or self.is_erofs:
                return []
            r = ly.rafs
        except NydusInspectError:
            return []
        rows = []
        for ent in r.blobs:
            try:
                bf = ly.blob_file(ent.blob_index, required=False)
                where = (
                    "this file"
                    if bf is not None and bf.layer is ly
                    else ("found" if bf is not None else "missing")
                )
            except NydusInspectError as exc:
                where = f"error: {exc}"
            rows.append(
                [
                    str(ent.blob_index),
                    blob_id_text(ly, ent.blob_index),
                    f"{ent.chunk_count:,}",
                    ent.compressor.value,
                    ent.digester.value,
                    f"{ent.compressed_size:,}",
                    f"{ent.uncompressed_size:,}",
                    f"{ent.features:#x}",
                    where,
                ]
            )
        return rows

    # -- ToC -----------------------------------------------------------------------------------
    def toc_rows(self) -> tuple[list[TocRow], str]:
        """(rows, a line about where they come from)."""
        try:
            rep = toc_report(self.layer)
        except NydusInspectError as exc:
            return [], str(exc)
        rows = [
            TocRow(
                e["name"],
                e["compressor"],
                e["compressed_offset"],
                e["compressed_size"],
                e["uncompressed_size"],
                e["sha256"],
            )
            for e in rep["entries"]
        ]
        if rep["toc_digest"]:
            about = f"ToC digest {rep['toc_digest']} ({rep['toc_size']} bytes)"
        else:
            about = "no ToC: entries found by walking the tar headers (no sha256 recorded)"
        return rows, about

    def verify_entry(self, name: str) -> EntryCheck:
        """Recompute the sha256 of one entry (reads the whole entry)."""
        ent = self.layer.toc_entry(name)
        if ent is None:
            res = EntryCheck(name, None, "-", "-", "no sha256 recorded for this entry (no ToC)")
        else:
            f = entry_check(self.layer, name)
            recorded = ent.uncompressed_digest.hex()
            if f is None:
                res = EntryCheck(name, True, recorded, recorded, "sha256 matches the ToC")
            else:
                res = EntryCheck(name, False, recorded, f.found or "-", f.message)
        self.toc_checks[name] = res
        return res

    def entry_preview(self, name: str) -> Preview:
        """Decoded fields for the structured entries, a hex dump for the rest (slow for image.boot)."""
        ly = self.layer
        try:
            off, size, comp, usize, _ = ly.entry_location(name)
            if name == "image.blob":
                raw = ly.pread(off, min(size, PREVIEW_BYTES), name)
                return Preview(
                    f"{name}: chunk data (stored bytes)",
                    [
                        ("offset", f"{off:,}"),
                        ("stored", bytes_text(size)),
                        ("uncompressed", bytes_text(usize)),
                    ],
                    hexdump(raw, off),
                    note="see the chunks screen for its chunks",
                )
            if name == "blob.meta.header":
                hdr = ly.blob_meta_header
                data = ly.entry(name, verify=False)
                pairs = record_fields(hdr)
                pairs.append(("features (names)", ", ".join(hdr.to_json()["features_names"]) or "-"))
                return Preview(
                    f"{name}: decoded", pairs, hexdump(data[:64], off), note="4032 reserved bytes not shown"
                )
            if name == "image.boot":
                r = ly.rafs
                sb_at, ext_at = rafs_v6.SUPERBLOCK_OFFSET, rafs_v6.EXT_SUPERBLOCK_OFFSET
                pairs = [("-- erofs superblock", f"@{sb_at}")] + record_fields(r.sb)
                pairs += [("-- rafs v6 ext superblock", f"@{ext_at}")] + record_fields(r.ext)
                pairs.append(("compressor", r.ext.compressor.value))
                pairs.append(("digester", r.ext.digester.value))
                for b in r.blobs:
                    pairs.append((f"-- blob table [{b.blob_index}]", ly.blob_id(b.blob_index)))
                    pairs += record_fields(b, skip=("blob_id", "blob_index"))
                return Preview(
                    f"{name}: superblocks ({comp.value}, {bytes_text(usize)} uncompressed)",
                    pairs,
                    hexdump(bytes(ly.bootstrap_bytes()[sb_at : sb_at + rafs_v6.SUPERBLOCK.size]), sb_at),
                )
            if name == "blob.meta":
                infos = ly.chunk_infos
                pairs = [
                    ("records", f"{len(infos):,} x {infos.record_size} bytes"),
                    ("compressor", comp.value),
                ]
                for ci in list(infos[i] for i in range(min(8, len(infos)))):
                    pairs.append(
                        (
                            f"chunk {ci.index}",
                            f"c {ci.compressed_offset:,}+{ci.compressed_size:,} "
                            f"u {ci.uncompressed_offset:,}+{ci.uncompressed_size:,} "
                            f"{'compressed' if ci.compressed else 'raw'}",
                        )
                    )
                data = ly.entry(name, verify=False)
                return Preview(f"{name}: chunk-info array", pairs, hexdump(data[:256]))
            if name == "blob.digest":
                data = ly.entry(name, verify=False)
                pairs = [("digests", f"{len(data) // 32:,} x 32 bytes")]
                for i in range(min(8, len(data) // 32)):
                    pairs.append((f"chunk {i}", data[32 * i : 32 * i + 32].hex()))
                return Preview(f"{name}: chunk digests", pairs, hexdump(data[:256], off))
            if name == "rafs.blob.toc":
                pairs = [(e.name, f"flags {e.flags:#x} at {e.compressed_offset:,}") for e in ly.toc or ()]
                return Preview(
                    f"{name}: {len(ly.toc or ())} entries", pairs, hexdump(ly.toc_bytes[:512], off)
                )
            data = ly.entry(name, verify=False)
            kind, body = content_preview(data, 0)
            return Preview(name, [("size", bytes_text(len(data)))], body, kind)
        except NydusInspectError as exc:
            return Preview(f"{name}: unreadable", [("error", str(exc))])

    # -- chunks --------------------------------------------------------------------------------
    def chunk_sources(self) -> list[ChunkSource]:
        """One source per blob with a chunk table (slow: decodes blob.meta and the digests)."""
        if self._sources is not None:
            return self._sources
        out: list[ChunkSource] = []
        ly = self.layer
        if self.is_erofs:
            self._sources = out
            return out
        if self.is_v6:
            r = ly.rafs
            for ent in r.blobs:
                try:
                    bf = ly.blob_file(ent.blob_index, required=False)
                    if bf is None and not r.chunk_table_records:
                        continue
                    own = " (this file)" if bf is not None and bf.layer is ly else ""
                    label = f"blob {ent.blob_index}{own} {ly.blob_id(ent.blob_index)[:16]}"
                    out.append(ChunkSource(self, ent.blob_index, label))
                except NydusInspectError:
                    continue
        if not out and ly.kind.startswith("nydus-blob"):
            try:
                out.append(ChunkSource(self, None, f"{ly.name[:16]} (blob.meta)"))
            except NydusInspectError:
                pass
        self._sources = out
        return out

    # -- files ---------------------------------------------------------------------------------
    def root_ref(self) -> FileRef:
        r = self.layer.rafs
        return FileRef(b"/", r.root_nid, True, r.root())

    def children(self, ref: FileRef, start: int = 0, count: int = DIR_PAGE) -> tuple[list[FileRef], int]:
        """(a page of ``ref``'s children, how many there are in all)."""
        ents = self._dirs.get(ref.nid)
        if ents is None:
            with self.lock:
                ents = self._dirs[ref.nid] = self.layer.rafs.readdir(ref.nid)
        base = ref.path.rstrip(b"/")
        page = [
            FileRef(base + b"/" + d.name, d.nid, d.file_type == 2, None, d.file_type)
            for d in ents[start : start + count]
        ]
        return page, len(ents)

    def dir_size(self, ref: FileRef) -> int | None:
        """How many entries directory ``ref`` has, once it has been listed."""
        ents = self._dirs.get(ref.nid)
        return None if ents is None else len(ents)

    def position(self, ref: FileRef, name: bytes) -> int | None:
        ents = self._dirs.get(ref.nid)
        if ents is None:
            self.children(ref, 0, 0)
            ents = self._dirs[ref.nid]
        for i, d in enumerate(ents):
            if d.name == name:
                return i
        return None

    def node(self, ref: FileRef) -> Node:
        if ref.node is None:
            with self.lock:
                ref.node = self.layer.rafs.node(ref.nid, ref.path)
        return ref.node

    def digest_if_known(self) -> str | None:
        """The layer's sha256 if already computed (hashing a big layer takes seconds)."""
        return self.layer.__dict__.get("digest")

    def node_detail(self, node: Node) -> Pairs:
        out: Pairs = [
            ("path", fsdecode(node.path)),
            ("type", node.type),
            ("mode", mode_text(node)),
            ("owner", f"uid {node.uid}, gid {node.gid}"),
            ("mtime", time_text(node.mtime, node.mtime_nsec)),
            ("size", bytes_text(node.size)),
            ("links", str(node.nlink)),
            ("nid / ino", f"{node.nid} / {node.ino}"),
        ]
        if node.type in (CHR, BLK):
            import os

            out.append(("device", f"{os.major(node.rdev)}, {os.minor(node.rdev)}"))
        if node.type == SYMLINK and node.target is not None:
            out.append(("target", fsdecode(node.target)))
        if node.xattrs:
            for k, v in sorted(node.xattrs.items()):
                out.append(("xattr", f"{fsdecode(k)} = {_xattr_text(k, v)}"))
        else:
            out.append(("xattrs", "none"))
        if node.hardlink is not None:
            if self.index is not None:
                names = self.index.hardlinks(node.hardlink)
                out.append(("hardlinks", f"group {node.hardlink}: " + ", ".join(names)))
            else:
                out.append(("hardlinks", f"group {node.hardlink} ({node.nlink} names; indexing the tree…)"))
        return out

    def key_chunk_table(self) -> None:
        """Key the bootstrap chunk table (once per layer). Slow: seconds for millions of chunks; run it in a
        worker. It is keyed outside ``lock``, which the event loop takes to decode a node as the cursor moves:
        held for the keying, every row moved to froze the app until it ended. Its own lock makes any other
        worker that needs it wait for the one keying it, and never key it twice."""
        with self._keying:
            self.layer.rafs.index_chunk_table()

    def node_chunks(self, node: Node) -> Sequence[ChunkRef]:
        """The file's chunks with their blob offsets, digests and CRC32Cs (also stored in ``node.chunks``),
        resolved as every other reader resolves them (``RafsV6.chunks``: the bootstrap chunk table's record,
        else blob.meta's), so that the preview refuses what cat, the mount and verify refuse. The chunk
        table's first use keys every chunk of the image (once per view)."""
        if node.type != REG:
            return []
        if node.chunks is not None:
            return node.chunks
        self.key_chunk_table()
        with self.lock:
            return self.layer.rafs.chunks(node)

    def read_head(self, node: Node, limit: int = PREVIEW_BYTES) -> bytes:
        """The first ``limit`` bytes of a regular file, read chunk by chunk through the chunk reader (checked
        against every digest and CRC32C recorded for them)."""
        self.node_chunks(node)
        out = bytearray()
        for piece in self.layer.read_file(node):
            out += piece
            if len(out) >= limit:
                break
        return bytes(out[:limit])

    def close(self) -> None:
        self.layer.close()


def _xattr_text(name: bytes, value: bytes) -> str:
    if name == b"security.capability":
        from nydus_inspect.formats.vfs_cap import describe

        caps = describe(value)  # as getcap prints them; a value that does not decode stays hex
        if caps is not None:
            return caps
    return _show(value)


def _show(value: bytes) -> str:
    try:
        text = value.decode("utf-8")
        if text.isprintable():
            return repr(text)
    except UnicodeDecodeError:
        pass
    return "0x" + value.hex()
