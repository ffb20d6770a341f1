"""Fault injection (issue 6, acceptance criterion 1): random single-bit flips and truncations of packed layers
and of the real vectors must make ``verify`` fail (exit 1) or the layer unreadable (exit 2), and a finding must
name the structure the flipped bit belongs to. A flip that leaves ``verify`` OK must lie in a region of the
``UNCOVERED`` table below, which says why the format cannot see it.

Targets: three packed inline layers (zstd, lz4_block, none chunks), the separate bootstrap of the zstd one
(verified with its blob), the real inline ToC blob ``2fa78…``, the real data blob ``be7d77…`` (verified through
its bootstrap ``rafs-v6-2.2.boot``) and that bootstrap itself (verified with the pristine blob).

Every target gets a byte-level *region map* (sections from the ToC and tar headers, ToC entry fields, blob.meta,
each chunk's compressed range; for bootstraps every superblock, device slot, blob table, inode, dirent, chunk
index and chunk-table field, and the unused bytes between them). A flip is:

* ``located``: a finding names the region (its entry, structure, chunk, field offset, or the path of the inode);
* ``entry``: a compressed chunk still decodes to the same bytes: only the sha256 of the stored image.blob
  catches it, which names the entry but cannot say which chunk;
* ``address``: no structural check sees it, but the file's content address (its name = its sha256, the
  ``blob.id`` check) does; the region must be in ``UNCOVERED``;
* ``unreadable``: ``open_layer`` refuses the file (the CLI's exit 2);
* ``uncovered``: ``verify`` is OK; the region must be in ``UNCOVERED`` and its condition must hold.

Knobs: ``NYDUS_FAULT_FLIPS`` (default 1000), ``NYDUS_FAULT_TRUNCATIONS`` (default 100), ``NYDUS_FAULT_SEED``.
After the module, the statistics and the uncovered-region table (exact bits per target) are printed (shown with
``-s``; xdist hides worker output) and written to ``NYDUS_FAULT_REPORT`` or ``<basetemp>/fault-injection-report.txt``,
merged across xdist workers. Each failure names the seed, target, bit and region, so it can be replayed.
"""

from __future__ import annotations

import bisect
import json
import os
import random
import shutil
import struct
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import VECTORS

from nydus_inspect import codecs
from nydus_inspect.codecs import Compressor
from nydus_inspect.corrupt import corrupt
from nydus_inspect.errors import FormatError, UsageError
from nydus_inspect.formats import blob_meta, rafs_v6, toc
from nydus_inspect.formats._struct import round_up
from nydus_inspect.formats.tar_header import BLOB_DIGEST, BLOB_META, BLOB_META_HEADER, IMAGE_BLOB, IMAGE_BOOT
from nydus_inspect.layer import open_layer
from nydus_inspect.model import DIR, REG, SYMLINK, RafsV6, fsdecode
from nydus_inspect.testing import CharDev, Dir, Fifo, File, Hardlink, Symlink, build_layer
from nydus_inspect.verify import Finding, verify

FLIPS = int(os.environ.get("NYDUS_FAULT_FLIPS", "1000"))
TRUNCATIONS = int(os.environ.get("NYDUS_FAULT_TRUNCATIONS", "100"))
SEED = int(os.environ.get("NYDUS_FAULT_SEED", "20240606"))
SHARD = 25  # flips per test item
#: Where flips go: structured metadata (everything but chunk data and unused bytes) most, chunk data and
#: unused bytes (padding, reserved areas no structure owns) some. An empty pool's share goes to the others.
SHARES = {"meta": 0.65, "chunk": 0.2, "unused": 0.15}
UNUSED_KINDS = frozenset({"unused", "pad.align", "pad.symlink", "boot"})

TOC_BLOB = "nydus/toc/2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca"
DATA_BLOB_ID = "be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef"
BOOTSTRAP = "nydus/bootstrap/rafs-v6-2.2.boot"

#: Target name -> weight of the flip and truncation budget.
TARGETS = {
    "pack-zstd": 15,
    "pack-lz4": 13,
    "pack-none": 13,
    "pack-boot": 15,
    "vec-toc": 15,
    "vec-data": 14,
    "vec-boot": 15,
}

_rng = random.Random(7)
SPEC = {
    "etc/motd": b"welcome to nydus\n" * 3,
    "etc/hosts": File(
        b"127.0.0.1 localhost\n", mode=0o600, uid=1000, gid=1000, xattrs={"user.note": b"hosts"}
    ),
    "srv/a.txt": b"".join(b"line %05d of a\n" % i for i in range(700)),  # 3 chunks of 4 KiB
    "srv/b.bin": bytes(_rng.getrandbits(8) for _ in range(5000)),  # incompressible: stored raw
    "srv/c.txt": b"unique content c\n",
    "srv/c-link.txt": Hardlink("srv/c.txt"),
    "srv/empty": b"",
    "srv/sub": Dir(),
    "bin/sh": Symlink("busybox"),
    "dev/null": CharDev(1, 3),
    "dev/fifo": Fifo(),
}


def _split(total: int) -> dict[str, int]:
    """``total`` spread over the targets by weight (largest remainders)."""
    weight = sum(TARGETS.values())
    raw = {t: total * w / weight for t, w in TARGETS.items()}
    out = {t: int(v) for t, v in raw.items()}
    for t in sorted(raw, key=lambda t: raw[t] - out[t], reverse=True)[: total - sum(out.values())]:
        out[t] += 1
    return out


FLIPS_PER_TARGET = _split(FLIPS)
TRUNCS_PER_TARGET = _split(TRUNCATIONS)
SHARDS = [(t, s) for t, n in FLIPS_PER_TARGET.items() for s in range(-(-n // SHARD))]


def _params(items: list) -> list:
    """pytest params of (target, ...) tuples; the real-vector targets carry the ``vectors`` mark."""
    out = []
    for item in items:
        item = item if isinstance(item, tuple) else (item,)
        marks = [pytest.mark.vectors] if item[0].startswith("vec-") else []
        out.append(pytest.param(*item, marks=marks, id="-".join(map(str, item))))
    return out


# ---------------------------------------------------------------------------- the region map
@dataclass
class Region:
    """Bytes ``[start, end)`` of a target, what they are, and which findings name them."""

    start: int
    end: int
    name: str  # human-readable: "ToC entry 2 (blob.meta.header) reserved2", "inode /srv/a.txt i_mode"
    kind: str  # key of the UNCOVERED table: "toc.reserved", "inode.i_mode", "unused", ...
    entries: frozenset = frozenset()  # Finding.entry values that name it
    structures: tuple = ()  # Finding.structure prefixes that name it
    checks: frozenset = frozenset()  # Finding.check values that name it
    chunks: frozenset = frozenset()  # (blob_index, chunk) pairs
    paths: frozenset = frozenset()  # image paths (exact), and everything under ``prefixes``
    prefixes: tuple = ()
    blobs: frozenset = frozenset()  # blob indexes whose blob-level findings name it
    own_offsets: bool = True  # a finding in the target file whose offset lies inside names it
    info: dict = field(default_factory=dict)

    def names(self, f: Finding, target_file: str) -> bool:
        if f.check == "blob.id":
            return False  # the content address names the whole file, never a structure
        if f.entry is not None and f.entry in self.entries:
            return True
        if f.structure is not None and any(f.structure.startswith(s) for s in self.structures):
            return True
        if f.check in self.checks:
            return True
        if f.chunk is not None and (f.blob_index, f.chunk) in self.chunks:
            return True
        if f.blob_index in self.blobs and f.check in BLOB_CHECKS:
            return True
        paths = {f.path, *f.paths} - {None}
        if paths & self.paths or any(p.startswith(x) for p in paths for x in self.prefixes):
            return True
        return (
            self.own_offsets
            and f.file == target_file
            and f.offset is not None
            and self.start <= f.offset < self.end
        )


BLOB_CHECKS = frozenset(
    {"blob.table", "blob_meta", "blob.missing", "blob.unreadable", "toc.digest", "blob.layout"}
)


class RegionMap:
    def __init__(self, size: int, regions: list[Region]) -> None:
        regions = sorted(regions, key=lambda r: (r.start, r.end))
        out: list[Region] = []
        pos = 0
        for r in regions:
            if r.start >= r.end:
                continue
            assert r.start >= pos, f"overlapping regions: {out[-1].name} and {r.name}"
            if r.start > pos:
                out.append(Region(pos, r.start, "unused bytes", "unused"))
            out.append(r)
            pos = r.end
        if pos < size:
            out.append(Region(pos, size, "unused bytes", "unused"))
        self.regions = out
        self.starts = [r.start for r in out]
        self.size = size

    def at(self, pos: int) -> Region:
        return self.regions[bisect.bisect_right(self.starts, pos) - 1]

    def total(self, pred: Callable[[Region], bool]) -> int:
        return sum(r.end - r.start for r in self.regions if pred(r))


def _fields(layout, base: int, label: str, kind: str, **kw) -> list[Region]:
    """One region per field of a Layout placed at ``base`` (padding fields become ``<kind>.reserved``)."""
    out = []
    for name, fmt in layout.fields:
        off = base + layout.offsets[name]
        size = struct.calcsize("<" + fmt)
        fname = "reserved" if name.startswith("_") else name
        out.append(
            Region(off, off + size, f"{label} {fname}", f"{kind}.{fname}", info={"field": fname}, **kw)
        )
    return out


def blob_regions(path: Path, blob_index: int | None, compressor: Compressor) -> list[Region]:
    """Sections, ToC fields and chunks of a nydus layer blob."""
    out: list[Region] = []
    own = frozenset({blob_index, None})
    with open_layer(str(path)) as layer:
        data = Path(path).read_bytes()
        for sec in layer.sections:
            hdr = Region(
                sec.header_offset,
                sec.header_offset + 512,
                f"{sec.name} tar header",
                "tar.header",
                entries=frozenset({sec.name}),
                structures=(f"{sec.name} tar header",),
            )
            if sec.name == "rafs.blob.toc":
                hdr.checks = frozenset({"blob.unreadable"})  # the tail header is what makes the file a blob
                hdr.structures += ("layer", "rafs.blob.toc")
            out.append(hdr)
        for ci in layer.chunk_infos or ():
            raw = data[ci.compressed_offset : ci.compressed_offset + ci.compressed_size]
            plain = codecs.decompress(raw, compressor, ci.uncompressed_size) if ci.compressed else raw
            out.append(
                Region(
                    ci.compressed_offset,
                    ci.compressed_offset + ci.compressed_size,
                    f"chunk {ci.index}",
                    "chunk",
                    chunks=frozenset((b, ci.index) for b in own),
                    info={"chunk": ci, "plain": plain, "compressor": compressor},
                )
            )
        for name in (BLOB_META, BLOB_META_HEADER, BLOB_DIGEST, IMAGE_BOOT):
            if not layer.has_entry(name):
                continue
            off, size, comp, usize, _ = layer.entry_location(name)
            raw = data[off : off + size]
            plain = codecs.decompress(raw, comp, usize) if comp is not Compressor.NONE else raw
            out.append(
                Region(
                    off,
                    off + size,
                    f"{name} data",
                    f"entry.{name}",
                    entries=frozenset({name}),
                    structures=(name,),
                    info={"compressor": comp, "plain": plain, "usize": usize},
                )
            )
        if layer.toc is not None:
            base = layer.size - 512 - len(layer.toc_bytes)
            for i, e in enumerate(layer.toc):
                for r in _fields(
                    toc.ENTRY,
                    base + i * toc.ENTRY_SIZE,
                    f"ToC entry {i} ({e.name})",
                    "toc",
                    entries=frozenset({e.name, "rafs.blob.toc"}),
                    structures=("rafs.blob.toc", "toc entry"),
                ):
                    out.append(r)
    return out


def _dir_regions(rafs: RafsV6, nid: int, ino, path: str, base_kw: dict) -> list[Region]:
    """Dirents, names and zero fill of a directory's blocks (inline tail included)."""
    out = []
    size = ino.i_size
    off = rafs.inode_offset(nid)
    full = size // 4096 * 4096
    spans = []
    if ino.datalayout == rafs_v6.LAYOUT_FLAT_INLINE:
        spans += [(ino.i_u * 4096 + b, 4096, True) for b in range(0, full, 4096)]
        spans.append((off + ino.inode_size + ino.xattr_size, size - full, False))
    else:
        nblocks = -(-size // 4096)
        spans += [(ino.i_u * 4096 + 4096 * b, 4096, True) for b in range(nblocks)]
    for k, (start, length, whole) in enumerate(spans):
        last = k == len(spans) - 1
        used_len = length if not (whole and last) else (size - (len(spans) - 1) * 4096)
        block = bytes(rafs.buf[start : start + used_len])
        ents = rafs_v6.parse_dir_block(block, start, nid)
        for j, d in enumerate(ents):
            dbase = start + 12 * j
            for fname, a, b in (
                ("nid", 0, 8),
                ("nameoff", 8, 10),
                ("file_type", 10, 11),
                ("reserved", 11, 12),
            ):
                out.append(
                    Region(
                        dbase + a,
                        dbase + b,
                        f"dirent {path}/{d.name!r} {fname}",
                        f"dirent.{fname}",
                        info={"dir": nid, "span": (start, used_len)},
                        **base_kw,
                    )
                )
        pos = start + 12 * len(ents)
        for d in ents:
            out.append(
                Region(
                    pos,
                    pos + len(d.name),
                    f"dirent name {path}/{d.name!r}",
                    "dirent.name",
                    info={"dir": nid, "span": (start, used_len)},
                    **base_kw,
                )
            )
            pos += len(d.name)
        if whole and pos < start + 4096:
            out.append(
                Region(
                    pos,
                    start + 4096,
                    f"dirent block zero fill of {path}",
                    "dir.zerofill",
                    info={"dir": nid, "span": (start, used_len)},
                    **base_kw,
                )
            )
    return out


def _xattr_regions(buf: bytes, off: int, size: int, nid: int, label: str, kw: dict) -> list[Region]:
    """The inline xattr area: ibody header (reserved bytes, shared count), then entries (head, name, value, pad)."""
    info = {"xattrs": nid}
    out = [
        Region(off, off + 4, f"xattr header of {label} h_reserved", "xattr.reserved", info=info, **kw),
        Region(off + 4, off + 5, f"xattr header of {label} h_shared_count", "xattr.shared", info=info, **kw),
        Region(off + 5, off + 12, f"xattr header of {label} reserved", "xattr.reserved", info=info, **kw),
    ]
    pos, end = off + 12 + 4 * buf[off + 4], off + size
    while pos + 4 <= end:
        name_len, _, value_size = struct.unpack_from("<BBH", buf, pos)
        total = 4 + name_len + value_size
        for a, b, what in (
            (pos, pos + 4, "head"),
            (pos + 4, pos + 4 + name_len, "name"),
            (pos + 4 + name_len, pos + total, "value"),
            (pos + total, pos + round_up(total, 4), "pad"),
        ):
            out.append(Region(a, b, f"xattr entry of {label} {what}", f"xattr.{what}", info=info, **kw))
        pos += round_up(total, 4)
    return out


def bootstrap_regions(path: Path) -> tuple[list[Region], dict]:
    """Every structure of a RAFS v6 bootstrap, field by field."""
    buf = Path(path).read_bytes()
    rafs = RafsV6(buf)
    sb, ext = rafs.sb, rafs.ext
    out: list[Region] = [Region(0, 1024, "boot area", "boot")]
    out += _fields(
        rafs_v6.SUPERBLOCK, 1024, "superblock", "sb", structures=("erofs superblock", "rafs v6 bootstrap")
    )
    locators = {
        "s_blob_table_offset": ("rafs v6 blob table", "rafs v6 device slot", "erofs superblock"),
        "s_blob_table_size": ("rafs v6 blob table", "rafs v6 device slot", "erofs superblock"),
        "s_chunk_table_offset": ("rafs chunk table", "rafs v6 bootstrap"),
        "s_chunk_table_size": ("rafs chunk table", "rafs v6 bootstrap"),
        "s_prefetch_table_offset": ("rafs v6 prefetch table", "rafs v6 bootstrap"),
        "s_prefetch_table_size": ("rafs v6 prefetch table", "rafs v6 bootstrap"),
        "s_chunk_size": ("rafs v6 blob table",),
        "s_flags": ("rafs v6 blob table",),
    }
    for r in _fields(rafs_v6.EXT_SUPERBLOCK, 1152, "ext superblock", "ext"):
        r.structures = ("rafs v6 ext superblock",) + locators.get(r.info["field"], ())
        out.append(r)
    n = len(rafs.blobs)
    for i in range(n):
        out += _fields(
            rafs_v6.DEVICE,
            1408 + 128 * i,
            f"device slot {i}",
            "dev",
            structures=("rafs v6 device slot",),
            blobs=frozenset({i}),
        )
        out += _fields(
            rafs_v6.BLOB_ENTRY,
            ext.s_blob_table_offset + 256 * i,
            f"blob table entry {i}",
            "blob",
            structures=("rafs v6 blob table",),
            blobs=frozenset({i}),
        )
    if ext.s_prefetch_table_offset and ext.s_prefetch_table_size:
        for i in range(ext.s_prefetch_table_size // 4):
            off = ext.s_prefetch_table_offset + 4 * i
            out.append(
                Region(
                    off, off + 4, f"prefetch entry {i}", "prefetch", structures=("rafs v6 prefetch table",)
                )
            )
    names: dict[int, list[str]] = defaultdict(list)
    nodes = {}
    for node in rafs.walk():
        names[node.nid].append(fsdecode(node.path))
        nodes.setdefault(node.nid, node)
    owners: dict[tuple[int, int], set[str]] = defaultdict(set)
    facts = {"s_inos": sb.s_inos, "xattrs": False, "nodes": {}, "has_boot_blob": set()}
    for nid, node in nodes.items():
        ino = rafs.inode(nid)
        off = rafs.inode_offset(nid)
        paths = frozenset(names[nid])
        prefixes = tuple(p.rstrip("/") + "/" for p in paths) if node.type == DIR else ()
        kw = {"paths": paths, "prefixes": prefixes}
        label = names[nid][0]
        layout = rafs_v6.INODE_EXTENDED if ino.extended else rafs_v6.INODE_COMPACT
        for r in _fields(layout, off, f"inode {label}", "inode", **kw):
            r.info.update(nid=nid, type=node.type, ino=ino, names=len(names[nid]))
            out.append(r)
        facts["nodes"][nid] = (node.type, ino, len(names[nid]))
        xoff = off + ino.inode_size
        if ino.xattr_size:
            facts["xattrs"] = True
            out += _xattr_regions(buf, xoff, ino.xattr_size, nid, label, kw)
        tail = xoff + ino.xattr_size
        if node.type == REG and ino.datalayout == rafs_v6.LAYOUT_CHUNK_BASED:
            start = round_up(tail, 8)
            if start > tail:
                out.append(Region(tail, start, f"chunk index alignment of {label}", "pad.align", **kw))
            for k, c in enumerate(rafs.chunks(node)):
                owners[(c.blob_index, c.ci_index)].update(paths)
                cio = start + 8 * k
                ckw = dict(kw, chunks=frozenset({(c.blob_index, c.ci_index)}))
                for fname, a, b in (("advise", 0, 2), ("device_id", 2, 4), ("blkaddr", 4, 8)):
                    out.append(
                        Region(
                            cio + a,
                            cio + b,
                            f"chunk index {k} of {label} {fname}",
                            f"chunkidx.{fname}",
                            **ckw,
                        )
                    )
        elif node.type == DIR:
            out += _dir_regions(rafs, nid, ino, label, kw)
        elif node.type == SYMLINK:
            size = ino.i_size
            if ino.datalayout == rafs_v6.LAYOUT_FLAT_INLINE:
                out.append(
                    Region(
                        tail,
                        tail + size,
                        f"symlink target of {label}",
                        "symlink.target",
                        info={"symlink": nid},
                        **kw,
                    )
                )
            else:
                blk = ino.i_u * 4096
                out.append(
                    Region(
                        blk,
                        blk + size,
                        f"symlink target of {label}",
                        "symlink.target",
                        info={"symlink": nid},
                        **kw,
                    )
                )
                out.append(
                    Region(
                        blk + size,
                        round_up(blk + size, 4096),
                        f"symlink block fill of {label}",
                        "pad.symlink",
                        **kw,
                    )
                )
    base = ext.s_chunk_table_offset
    for i, rec in enumerate(rafs.chunk_table_entries()):
        key = (rec.blob_index, rec.index)
        out += _fields(
            rafs_v6.CHUNK_TABLE_ENTRY,
            base + 80 * i,
            f"chunk table record {i}",
            "ct",
            structures=("rafs chunk table",),
            chunks=frozenset({key}),
            paths=frozenset(owners[key]),
        )
    facts["rafs"] = rafs
    return out, facts


# ---------------------------------------------------------------------------- what the format does not cover
def _bit_value(buf: bytes, r: Region, bit: int) -> tuple[int, int, int]:
    """(old field value, new field value, bit index inside the field) of a flip at absolute ``bit``."""
    raw = buf[r.start : r.end]
    old = int.from_bytes(raw, "little")
    k = bit - 8 * r.start
    return old, old ^ (1 << k), k


def _same_decoding(ctx: Ctx) -> bool:
    """The flipped stored bytes of a compressed span decode to the same bytes."""
    r = ctx.region
    comp = r.info.get("compressor")
    if comp in (None, Compressor.NONE):
        return False
    raw = ctx.flipped[r.start : r.end]
    size = r.info["chunk"].uncompressed_size if "chunk" in r.info else r.info["usize"]
    if "chunk" in r.info and not r.info["chunk"].compressed:
        return False
    try:
        return codecs.decompress(raw, comp, size) == r.info["plain"]
    except FormatError:
        return False


def _renamed_still_sorted(ctx: Ctx) -> bool:
    """The flip only renames entries of one directory, which still holds strictly sorted, valid names."""
    info = ctx.region.info
    nid = info.get("dir", info.get("nid") if info.get("type") == DIR else None)
    if nid is None:
        return False
    try:
        before = ctx.facts["rafs"].readdir(nid, include_dots=True)
        after = RafsV6(ctx.flipped).readdir(nid, include_dots=True)
    except FormatError:
        return False
    names = [d.name for d in after]
    return (
        [(d.nid, d.file_type) for d in before] == [(d.nid, d.file_type) for d in after]
        and names != [d.name for d in before]
        and all(a < b for a, b in zip(names, names[1:]))
        and all(b"\0" not in x for x in names)
        and names.count(b".") == 1
        and names.count(b"..") == 1
    )


def _symlink_retargeted(ctx: Ctx) -> bool:
    """A symlink's target bytes or length changed into another non-empty target without NUL."""
    info = ctx.region.info
    if ctx.region.kind == "inode.i_size" and info.get("type") != SYMLINK:
        return False
    nid = info.get("nid", info.get("symlink"))
    try:
        node = RafsV6(ctx.flipped).node(nid, b"/x")
    except FormatError:
        return False
    return bool(node.target) and b"\0" not in node.target


def _xattrs_still_decode(ctx: Ctx) -> bool:
    """The inode's xattrs still decode (to other names or values)."""
    nid = ctx.region.info["xattrs"]
    try:
        before = ctx.facts["rafs"].node(nid, b"/x").xattrs
        after = RafsV6(ctx.flipped).node(nid, b"/x").xattrs
    except FormatError:
        return False
    return after != before


def _mapped_other_rule(ctx: Ctx) -> bool:
    """mapped_blkaddr flipped to the value of another valid rule (0 = unmapped, or the other alignment)."""
    rafs = ctx.facts["rafs"]
    old, new, _ = _bit_value(ctx.original, ctx.region, ctx.bit)
    i = (ctx.region.start - 1408) // 128
    valid = {0}
    for align in (0x80000, 0x200000):
        prev = rafs.size
        for d in rafs.meta.devices[: i + 1]:
            mapped = round_up(prev, align) // 4096
            prev = (mapped + d.blocks) * 4096
        valid.add(mapped)
    return i == 0 and new in valid


def _ino_still_plausible(ctx: Ctx) -> bool:
    _, new, _ = _bit_value(ctx.original, ctx.region, ctx.bit)
    kind, ino, names = ctx.region.info["type"], ctx.region.info["ino"], ctx.region.info["names"]
    grouped = kind != DIR and ino.i_nlink > 1 and names == 1  # 2022-style hardlink: i_ino groups the names
    return new <= ctx.facts["s_inos"] and not grouped


def _unused_i_u(ctx: Ctx) -> bool:
    """i_u of an inode whose i_u nothing reads: all-inline dir or symlink, fifo or socket; or a device's rdev."""
    kind, ino = ctx.region.info["type"], ctx.region.info["ino"]
    if kind in (DIR, SYMLINK):
        return ino.datalayout == rafs_v6.LAYOUT_FLAT_INLINE and ino.i_size < 4096
    return kind not in (REG,)


def _file_sized_chunks(ctx: Ctx) -> bool:
    """A file's chunk format flipped to its next power of 2, which nydus v2.3 writes for contiguous chunks."""
    info = ctx.region.info
    if info.get("type") != REG:
        return False
    _, new, _ = _bit_value(ctx.original, ctx.region, ctx.bit)
    rafs = ctx.facts["rafs"]
    size = info["ino"].i_size
    if new != 0x20 | ((size - 1).bit_length() - 12) or size <= rafs.chunk_size:
        return False
    chunks = rafs.chunks(rafs.node(info["nid"], b"/x"))
    return all(
        b.blob_index == chunks[0].blob_index
        and b.uncompressed_offset == a.uncompressed_offset + rafs.chunk_size
        for a, b in zip(chunks, chunks[1:])
    )


def _perm_bit(ctx: Ctx) -> bool:
    return _bit_value(ctx.original, ctx.region, ctx.bit)[2] < 12


def _flag_switch(ctx: Ctx) -> bool:
    """s_flags bits with two valid values for this image."""
    k = _bit_value(ctx.original, ctx.region, ctx.bit)[2]
    bit = 1 << k
    if bit in (rafs_v6.EXPLICIT_UID_GID, rafs_v6.ENCRYPTION_NONE) or 26 <= k <= 31:
        return True
    return bit == rafs_v6.HAS_XATTR and not ctx.facts["xattrs"]


def _inline_fs_meta(ctx: Ctx) -> bool:
    k = _bit_value(ctx.original, ctx.region, ctx.bit)[2]
    return 1 << k == blob_meta.INLINED_FS_META and ctx.target.blob_has_boot


def _always(ctx: Ctx) -> bool:
    return True


@dataclass
class Uncovered:
    name: str
    kinds: tuple  # Region.kind values
    reason: str
    cond: Callable = _always  # which flips of those regions go unseen
    when: str = ""  # the condition, in words
    targets: tuple = ()  # only these targets (default: all)


UNCOVERED = [
    Uncovered(
        "ToC entry reserved bytes",
        ("toc.reserved",),
        "nydus's ToC reader ignores them, and blobs built before 2023-02 hold garbage in bytes 124..127 of every "
        "entry (the 124-byte struct padded to 128), so they cannot be required to be zero. Covered where the "
        "bootstrap records the ToC digest (non-inline blobs), and by the file's content address.",
        targets=("pack-zstd", "pack-lz4", "pack-none", "vec-toc"),
    ),
    Uncovered(
        "compressed entry bytes that decode identically",
        ("entry.image.boot", "entry.blob.meta"),
        "zstd (and lz4) streams carry bits decoders ignore (e.g. the zstd frame header's unused bit); the ToC's "
        "sha256 is over the uncompressed content by design, so a flip that decodes to the same bytes changes "
        "nothing a reader sees. Only the content address catches it.",
        cond=_same_decoding,
        when="the flipped stream decodes to the same bytes",
    ),
    Uncovered(
        "boot area",
        ("boot",),
        "EROFS reserves bytes 0..1023 for a boot loader; nydus writes zeros and no reader looks at them.",
    ),
    Uncovered(
        "superblock labels, build time and reserved bytes",
        ("sb.s_uuid", "sb.s_volume_name", "sb.s_build_time", "sb.s_build_time_nsec", "sb.reserved"),
        "uuid and volume name are free-form labels, the build time is only the mtime of compact inodes (nydus "
        "writes extended ones), the reserved bytes are ignored; nydus writes zeros, any value is a valid image.",
    ),
    Uncovered(
        "ext superblock flags with two valid values",
        ("ext.s_flags",),
        "EXPLICIT_UID_GID (2022 images carry real ids without it), ENCRYPTION_NONE (v2.3 writes it, older builders "
        "do not), HAS_XATTR when no inode has xattrs (merge always sets it) and the reserved-compatible bits 26..31.",
        cond=_flag_switch,
        when="the bit is one of those",
    ),
    Uncovered(
        "ext superblock padding and reserved bytes",
        ("ext.s_padding", "ext.reserved"),
        "ignored by every reader; nydus writes zeros.",
    ),
    Uncovered(
        "device slot and blob table reserved bytes",
        ("dev.reserved", "blob.reserved"),
        "ignored by every reader; nydus writes zeros.",
    ),
    Uncovered(
        "device slot mapped_blkaddr",
        ("dev.mapped_blkaddr",),
        "only the flat block-device export uses it, and three rules are valid (0 in v2.2, 512 KiB or 2 MiB "
        "alignment after the bootstrap): a flip onto another rule's value is another valid image.",
        cond=_mapped_other_rule,
        when="the new value is what another rule gives",
    ),
    Uncovered(
        "blob table INLINED_FS_META",
        ("blob.features",),
        "v2.3 sets it in a layer's own bootstrap and clears it when the blob is listed elsewhere; both values are "
        "valid for a blob that carries an inline bootstrap.",
        cond=_inline_fs_meta,
        when="the bit is INLINED_FS_META and the blob has an image.boot",
    ),
    Uncovered(
        "unused bytes",
        ("unused", "pad.align", "pad.symlink"),
        "no structure lives there (gaps between the fixed tables, the meta area's unused first block (nids 0..127), "
        "free space between inodes, alignment before chunk indexes, padding to 4 KiB); nydus writes zeros, "
        "readers never read them.",
    ),
    Uncovered(
        "inode attributes",
        ("inode.i_uid", "inode.i_gid", "inode.i_mtime", "inode.i_mtime_nsec", "inode.reserved"),
        "owner, times and reserved bytes: no checksum covers inode attributes and any value is valid "
        "(fsck.erofs accepts them too).",
    ),
    Uncovered(
        "inode permission bits",
        ("inode.i_mode",),
        "the 12 permission bits (rwx, setuid, setgid, sticky) of i_mode: any value is valid. The type bits are "
        "checked against the dirent.",
        cond=_perm_bit,
        when="the bit is one of the low 12",
    ),
    Uncovered(
        "inode number",
        ("inode.i_ino",),
        "nydusd uses the nid as the inode number; i_ino only has to stay <= s_inos, and groups the names of a "
        "2022-style hardlink.",
        cond=_ino_still_plausible,
        when="the new value is <= s_inos and the inode is not a 2022-style hardlink",
    ),
    Uncovered(
        "unused i_u",
        ("inode.i_u",),
        "the block address of a directory or symlink whose data is all inline is never read; for devices i_u is "
        "the device number, any value valid.",
        cond=_unused_i_u,
        when="all-inline dir or symlink, or a device/fifo/socket",
    ),
    Uncovered(
        "file chunk format",
        ("inode.i_u",),
        "a file whose chunks lie contiguous in one blob may record the image's chunk size or the file's next "
        "power of 2 (nydus v2.3 writes the latter, an EROFS page-cache optimisation; 2022 builders the former).",
        cond=_file_sized_chunks,
        when="the new chunk bits are the file's next power of 2 and its chunks are contiguous",
    ),
    Uncovered(
        "dirent reserved byte",
        ("dirent.reserved",),
        "EROFS and nydus ignore it; nydus writes 0.",
    ),
    Uncovered(
        "dirent names",
        ("dirent.name", "dir.zerofill", "dirent.nameoff", "inode.i_size"),
        "no checksum covers names: a flip in a name, in a nameoff (moving the boundary between two names), in the "
        "first zero-fill byte after a full block's last name, or in a directory's i_size (cutting its last name "
        "short) is a rename into another valid image when the names stay valid and sorted.",
        cond=_renamed_still_sorted,
        when="the directory's names stay valid, unique and sorted (simulated)",
    ),
    Uncovered(
        "symlink targets",
        ("symlink.target", "inode.i_size"),
        "any non-empty byte string without NUL is a valid target, and a shorter i_size is a shorter target.",
        cond=_symlink_retargeted,
        when="the target stays non-empty and NUL-free (simulated)",
    ),
    Uncovered(
        "xattr reserved bytes and padding",
        ("xattr.reserved", "xattr.pad"),
        "the ibody header's reserved bytes (h_reserved is EROFS's name filter, read only with the XATTR_FILTER "
        "compat feature nydus never sets) and the zero padding that aligns each entry to 4 bytes are ignored.",
    ),
    Uncovered(
        "xattr names and values",
        ("xattr.head", "xattr.name", "xattr.value", "xattr.shared"),
        "a flip in a name suffix or a value is another valid xattr (name indexes, lengths and the area size are "
        "checked by decoding).",
        cond=_xattrs_still_decode,
        when="the xattrs still decode (simulated)",
    ),
]
_BY_KIND: dict[str, list[Uncovered]] = defaultdict(list)
for _u in UNCOVERED:
    for _k in _u.kinds:
        _BY_KIND[_k].append(_u)


@dataclass
class Ctx:
    target: Target
    region: Region
    bit: int
    original: bytes
    flipped: bytes
    facts: dict


def uncovered_rule(ctx: Ctx) -> Uncovered | None:
    for u in _BY_KIND.get(ctx.region.kind, ()):
        if (not u.targets or ctx.target.name in u.targets) and u.cond(ctx):
            return u
    return None


# ---------------------------------------------------------------------------- targets
@dataclass
class Target:
    name: str
    pristine: Path  # the file that gets corrupted
    file_name: str  # name of the corrupted copy (content-addressed files keep theirs)
    open: Callable[[Path], tuple[str, dict]]  # corrupted copy -> (path to open, open_layer kwargs)
    regions: RegionMap
    facts: dict = field(default_factory=dict)
    blob_has_boot: bool = False

    def __post_init__(self) -> None:
        self.data = self.pristine.read_bytes()

    def pools(self) -> dict[str, list[Region]]:
        out: dict[str, list[Region]] = {"chunk": [], "unused": [], "meta": []}
        for r in self.regions.regions:
            out["chunk" if r.kind == "chunk" else "unused" if r.kind in UNUSED_KINDS else "meta"].append(r)
        return out

    def pick_bits(self, rng: random.Random, n: int) -> list[int]:
        """``n`` bit positions: SHARES of them in chunk data, unused bytes and structured metadata."""
        pools = self.pools()
        names = [k for k in SHARES if pools[k]]
        shares = [SHARES[k] for k in names]
        out = []
        for _ in range(n):
            pool = pools[rng.choices(names, shares)[0]]
            r = rng.choices(pool, [x.end - x.start for x in pool])[0]
            out.append(8 * rng.randrange(r.start, r.end) + rng.randrange(8))
        return out


@pytest.fixture(scope="module")
def targets(tmp_path_factory) -> dict[str, Target]:
    d = tmp_path_factory.mktemp("fault-targets")
    out: dict[str, Target] = {}
    comps = {"pack-zstd": "zstd", "pack-lz4": "lz4_block", "pack-none": "none"}
    for name, comp in comps.items():
        layer = build_layer(
            SPEC,
            d / f"{name}.blob",
            compressor=comp,
            chunk_size=0x1000,
            bootstrap=str(d / f"{name}.boot") if name == "pack-zstd" else None,
            # The bootstrap target carries a prefetch table, so that its flips are named too.
            prefetch=name == "pack-zstd",
        )
        regions = blob_regions(layer, 0, Compressor.parse(comp))
        out[name] = Target(
            name, layer, layer.name, lambda p: (str(p), {}), RegionMap(layer.stat().st_size, regions)
        )
    boot = d / "pack-zstd.boot"
    layer = d / "pack-zstd.blob"
    regions, facts = bootstrap_regions(boot)
    out["pack-boot"] = Target(
        "pack-boot",
        boot,
        "layer.boot",
        lambda p, lay=layer: (str(p), {"blobs": [str(lay)]}),
        RegionMap(boot.stat().st_size, regions),
        facts,
        blob_has_boot=True,
    )
    if not (VECTORS / "README.md").is_file():
        return out  # the vector shards skip (or fail in CI) through the vectors fixture
    vectors = VECTORS
    vt = vectors / TOC_BLOB
    out["vec-toc"] = Target(
        "vec-toc",
        vt,
        vt.name,
        lambda p: (str(p), {}),
        RegionMap(vt.stat().st_size, blob_regions(vt, 0, Compressor.ZSTD)),
    )
    vd = vectors / "nydus" / "blobs" / DATA_BLOB_ID
    vb = vectors / BOOTSTRAP
    out["vec-data"] = Target(
        "vec-data",
        vd,
        vd.name,
        lambda p, vb=vb: (str(vb), {"blob_dir": str(p.parent)}),
        RegionMap(vd.stat().st_size, blob_regions(vd, 0, Compressor.ZSTD)),
    )
    regions, facts = bootstrap_regions(vb)
    out["vec-boot"] = Target(
        "vec-boot",
        vb,
        vb.name,
        lambda p, blobs=vd.parent: (str(p), {"blob_dir": str(blobs)}),
        RegionMap(vb.stat().st_size, regions),
        facts,
    )
    return out


# ---------------------------------------------------------------------------- running one fault
@dataclass
class Outcome:
    kind: str  # located / entry / address / unreadable / uncovered / FAIL
    region: Region | None
    detail: str
    rule: Uncovered | None = None


def run_fault(target: Target, work: Path, *, bit: int | None = None, truncate: int | None = None) -> Outcome:
    work.mkdir(parents=True, exist_ok=True)
    bad = work / target.file_name
    corrupt(str(target.pristine), str(bad), flip_bit=bit, truncate=truncate)
    path, kw = target.open(bad)
    region = target.regions.at(bit // 8) if bit is not None else None
    try:
        layer = open_layer(path, **kw)
    except (FormatError, UsageError) as exc:
        return Outcome("unreadable", region, str(exc))
    try:
        with layer:
            report = verify(layer, workers=1)
    except Exception as exc:  # the contract: verify never raises on bad bytes
        return Outcome("FAIL", region, f"verify raised {type(exc).__name__}: {exc}")
    findings = report.findings
    text = "; ".join(str(f) for f in findings[:6]) or "verify OK"
    if truncate is not None:
        return Outcome("located" if not report.ok else "FAIL", None, text)
    ctx = Ctx(target, region, bit, target.data, bad.read_bytes(), target.facts)
    if any(region.names(f, path) for f in findings):
        return Outcome("located", region, text)
    if region.kind == "chunk" and _same_decoding(ctx):
        if any(f.check == "toc.entry" and f.entry == IMAGE_BLOB for f in findings):
            return Outcome("entry", region, text)
    rule = uncovered_rule(ctx)
    if report.ok:
        return Outcome("uncovered" if rule else "FAIL", region, text, rule)
    if rule is not None and all(f.check == "blob.id" for f in findings):
        return Outcome("address", region, text, rule)
    return Outcome("FAIL", region, "findings do not name the flipped region: " + text, rule)


# ---------------------------------------------------------------------------- the tests
_STATS: dict[str, Counter] = defaultdict(Counter)
_RULE_HITS: dict[str, Counter] = defaultdict(Counter)


def _target(targets: dict[str, Target], request, name: str) -> Target:
    if name not in targets:
        request.getfixturevalue("vectors")  # skips, or fails in CI, with the usual reason
    return targets[name]


def _flip_bits(target: Target, shard: int) -> list[int]:
    rng = random.Random(f"{SEED}:{target.name}")
    bits = target.pick_bits(rng, FLIPS_PER_TARGET[target.name])
    return bits[shard * SHARD : (shard + 1) * SHARD]


@pytest.mark.parametrize("name,shard", _params(SHARDS))
def test_bit_flips(targets, request, tmp_path, name, shard):
    target = _target(targets, request, name)
    failures = []
    for bit in _flip_bits(target, shard):
        out = run_fault(target, tmp_path / f"b{bit}", bit=bit)
        shutil.rmtree(tmp_path / f"b{bit}", ignore_errors=True)
        _STATS[name][out.kind] += 1
        if out.rule is not None:
            _RULE_HITS[out.rule.name][name] += 1
        if out.kind == "FAIL":
            failures.append(
                f"seed {SEED} target {name} bit {bit} (byte {bit // 8} bit {bit % 8}) region "
                f"{out.region.name} [{out.region.start}, {out.region.end}): {out.detail}"
            )
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name", _params(list(TARGETS)))
def test_truncations(targets, request, tmp_path, name):
    target = _target(targets, request, name)
    rng = random.Random(f"{SEED}:{name}:truncate")
    size = len(target.data)
    failures = []
    for _ in range(TRUNCS_PER_TARGET[name]):
        keep = rng.randrange(size)
        out = run_fault(target, tmp_path / f"t{keep}", truncate=keep)
        shutil.rmtree(tmp_path / f"t{keep}", ignore_errors=True)
        _STATS[name]["trunc-" + out.kind] += 1
        if out.kind == "FAIL":
            failures.append(f"seed {SEED} target {name} truncated to {keep} of {size} bytes: {out.detail}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name", _params(list(TARGETS)))
def test_truncation_at_every_section_boundary(targets, request, tmp_path, name):
    """Cutting a blob right after one of its tar headers leaves a well-formed shorter blob: still caught."""
    target = _target(targets, request, name)
    cuts = sorted({r.end for r in target.regions.regions if r.kind == "tar.header"} - {len(target.data)})
    failures = []
    for keep in [*cuts, 0, 4096]:
        if keep >= len(target.data):
            continue
        out = run_fault(target, tmp_path / f"t{keep}", truncate=keep)
        if out.kind == "FAIL":
            failures.append(f"target {name} truncated to {keep}: {out.detail}")
    assert not failures, "\n".join(failures)


def test_region_maps_are_complete(targets):
    """Every byte of every target lies in exactly one region, and the structural ones are where they should be."""
    for t in targets.values():
        assert t.regions.regions[0].start == 0 and t.regions.regions[-1].end == len(t.data)
        for a, b in zip(t.regions.regions, t.regions.regions[1:]):
            assert a.end == b.start, (t.name, a.name, b.name)
    kinds = {r.kind for r in targets["pack-boot"].regions.regions}
    assert kinds >= {
        "sb.s_magic",
        "inode.i_nlink",
        "dirent.name",
        "ct.block_id",
        "dev.blocks",
        "blob.blob_id",
    }
    kinds = {r.kind for r in targets["pack-zstd"].regions.regions}
    assert kinds >= {"chunk", "tar.header", "toc.flags", "entry.image.boot", "entry.blob.digest"}


#: One flip per check verify must name: (target, region kind, name part, bit inside the region, check).
WITNESSES = [
    ("pack-boot", "ct.crc32", "", 0, "chunk.crc"),
    ("pack-boot", "ct.file_offset", "", 13, "chunk.table"),
    ("pack-boot", "ct.flags", "", 1, "chunk.table"),
    ("pack-boot", "chunkidx.advise", "", 0, "chunk.table"),
    ("pack-boot", "dirent.file_type", "c.txt", 0, "bootstrap.dir"),
    ("pack-boot", "inode.i_nlink", "/srv/c-link.txt", 0, "bootstrap.nlink"),  # v2.3 hardlink: 2 names
    ("pack-boot", "inode.i_nlink", "/srv/sub", 0, "bootstrap.nlink"),
    ("pack-boot", "inode.i_ino", "", 20, "bootstrap.inode"),
    ("pack-boot", "inode.i_size", "inode / i_size", 5, "bootstrap.layout"),  # the root's dirents overrun
    ("pack-boot", "sb.s_inos", "", 0, "bootstrap.super"),
    ("pack-boot", "sb.s_meta_blkaddr", "", 0, "bootstrap.super"),
    ("pack-boot", "ext.s_flags", "", 5, "bootstrap.super"),  # HAS_XATTR cleared, /etc/hosts has xattrs
    ("pack-boot", "prefetch", "", 3, "bootstrap.prefetch"),
    ("pack-boot", "blob.uncompressed_size", "", 12, "blob.table"),
    ("pack-boot", "dev.blob_id", "", 0, "blob.table"),
    ("pack-boot", "dev.mapped_blkaddr", "", 0, "blob.table"),
    ("pack-none", "toc.flags", "", 8, "toc.format"),
    ("pack-none", "toc.name", "blob.digest", 8 * 14, "toc.format"),  # a bit after the name's NUL
    ("pack-none", "toc.compressed_offset", "image.blob", 0, "toc.format"),
    (
        "pack-none",
        "tar.header",
        "blob.meta",
        148 * 8 + 4,
        "tar.header",
    ),  # checksum "000…" -> " 00…": same value
    ("vec-data", "toc.reserved", "", 0, "toc.digest"),
    ("vec-toc", "toc.reserved", "", 0, "blob.id"),
    ("vec-boot", "blob.features", "", 1, "blob.table"),  # INLINED_FS_META, but the blob holds no image.boot
    ("vec-boot", "blob.blob_toc_size", "", 10, "blob.table"),  # 1024 -> 0 with the ToC digest still set
    (
        "vec-boot",
        "inode.i_mode",
        "/lib.rs",
        14,
        "bootstrap.dir",
    ),  # regular file -> socket: dirent type differs
]


@pytest.mark.parametrize(
    "name,kind,part,bit,check",
    [pytest.param(*w, marks=[pytest.mark.vectors] if w[0].startswith("vec-") else []) for w in WITNESSES],
    ids=[f"{w[4]}-{w[1]}" for w in WITNESSES],
)
def test_each_check_has_a_witness(targets, request, tmp_path, name, kind, part, bit, check):
    target = _target(targets, request, name)
    region = next(r for r in target.regions.regions if r.kind == kind and part in r.name)
    bad = tmp_path / target.file_name
    corrupt(str(target.pristine), str(bad), flip_bit=8 * region.start + bit)
    path, kw = target.open(bad)
    with open_layer(path, **kw) as layer:
        report = verify(layer)
    assert check in {f.check for f in report.findings}, [str(f) for f in report.findings]


def _rewrite_entry(path: Path, name: str, edit: Callable[[bytearray], None]) -> None:
    """Edit the stored bytes of an uncompressed ToC entry and record their new sha256 in the ToC."""
    import hashlib

    data = bytearray(path.read_bytes())
    with open_layer(str(path)) as layer:
        off, size = layer.entry_location(name)[:2]
        toc_start = layer.size - 512 - len(layer.toc_bytes)
        index = [e.name for e in layer.toc].index(name)
    body = bytearray(data[off : off + size])
    edit(body)
    data[off : off + size] = body
    at = toc_start + index * toc.ENTRY_SIZE + toc.ENTRY.offsets["uncompressed_digest"]
    data[at : at + 32] = hashlib.sha256(body).digest()
    path.write_bytes(bytes(data))


def test_chunk_layout_and_blob_layout(targets, tmp_path):
    """What one flip cannot reach: records that overlap (with blob.meta's sha256 kept right), and a blob cut
    right after image.boot's header (a well-formed blob without a ToC whose features say it has one)."""
    target = targets["pack-none"]
    bad = tmp_path / target.file_name
    shutil.copyfile(target.pristine, bad)

    def overlap(ci: bytearray) -> None:  # chunk 1 starts 8 bytes inside chunk 0 (v1 record, comp_info word)
        (comp,) = struct.unpack_from("<Q", ci, 16 + 8)
        struct.pack_into("<Q", ci, 16 + 8, comp - 8)

    _rewrite_entry(bad, BLOB_META, overlap)
    with open_layer(str(bad)) as layer:
        report = verify(layer)
    layout = [f for f in report.findings if f.check == "chunk.layout"]
    assert layout and {f.chunk for f in layout} <= {1, 2} and layout[0].chunk == 1, [str(f) for f in layout]
    assert "overlaps" in layout[0].message and layout[0].path == "/etc/motd"  # chunk 1 is /etc/motd
    boot = next(r for r in target.regions.regions if r.name == "image.boot tar header")
    cut = tmp_path / "cut.blob"
    corrupt(str(target.pristine), str(cut), truncate=boot.end)
    with open_layer(str(cut)) as layer:
        report = verify(layer)
    assert {"blob.layout"} <= {f.check for f in report.findings}, [str(f) for f in report.findings]


# ---------------------------------------------------------------------------- the report
@pytest.fixture(scope="module", autouse=True)
def _report(targets, tmp_path_factory):
    """After the module: merge this process's statistics with other xdist workers', print and save the report."""
    yield
    if not _STATS:
        return
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    stats_dir = shared / "fault-stats"
    stats_dir.mkdir(exist_ok=True)
    mine = stats_dir / f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}.json"
    tmp = mine.with_suffix(".tmp")
    tmp.write_text(json.dumps({"stats": _STATS, "rules": _RULE_HITS}))
    os.replace(tmp, mine)
    stats: dict[str, Counter] = defaultdict(Counter)
    rules: dict[str, Counter] = defaultdict(Counter)
    for f in sorted(stats_dir.glob("*.json")):
        data = json.loads(f.read_text())
        for k, v in data["stats"].items():
            stats[k].update(v)
        for k, v in data["rules"].items():
            rules[k].update(v)
    text = format_report(targets, stats, rules)
    dest = Path(os.environ.get("NYDUS_FAULT_REPORT") or shared / "fault-injection-report.txt")
    dest.write_text(text + "\n", encoding="utf-8")
    print(f"\n{text}\n(report written to {dest})")


def _ranges(spans: list[tuple[int, int]]) -> str:
    merged: list[list[int]] = []
    for a, b in sorted(spans):
        if merged and merged[-1][1] >= a:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    shown = ", ".join(f"{a}-{b - 1}" if b - a > 1 else str(a) for a, b in merged[:10])
    return shown + (f", ... ({len(merged)} ranges)" if len(merged) > 10 else "")


def exact_uncovered(target: Target, rule: Uncovered) -> tuple[int, list[tuple[int, int]]]:
    """(bits, byte spans) of ``target`` a flip of which ``rule`` declares unseen (conditions evaluated per bit)."""
    bits, spans = 0, []
    data = bytearray(target.data)
    for r in target.regions.regions:
        if r.kind not in rule.kinds:
            continue
        if rule.cond is _always:
            bits += 8 * (r.end - r.start)
            spans.append((r.start, r.end))
            continue
        for byte in range(r.start, r.end):
            hit = 0
            for b in range(8):
                data[byte] ^= 1 << b
                ctx = Ctx(target, r, 8 * byte + b, target.data, bytes(data), target.facts)
                try:
                    hit += bool(rule.cond(ctx))
                except Exception:  # a condition that cannot evaluate this flip does not hold
                    pass
                data[byte] ^= 1 << b
            if hit:
                bits += hit
                spans.append((byte, byte + 1))
    return bits, spans


def format_report(targets: dict[str, Target], stats: dict[str, Counter], rules: dict[str, Counter]) -> str:
    kinds = ["located", "entry", "address", "unreadable", "uncovered", "FAIL"]
    lines = [f"fault injection: seed {SEED}, {FLIPS} flips, {TRUNCATIONS} truncations"]
    head = f"{'target':<10} {'size':>6} {'meta':>6} {'chunks':>6} {'unused':>6} {'flips':>5} "
    lines.append(
        head + " ".join(f"{k:>10}" for k in kinds) + f" {'trunc':>5} {'t-unread':>8} {'t-caught':>8}"
    )
    total: Counter = Counter()
    for name in TARGETS:
        c = stats.get(name)
        if not c or name not in targets:
            continue
        total.update(c)
        pools = targets[name].pools()
        sizes = {k: sum(r.end - r.start for r in v) for k, v in pools.items()}
        flips = sum(c[k] for k in kinds)
        truncs = sum(v for k, v in c.items() if k.startswith("trunc-"))
        lines.append(
            f"{name:<10} {len(targets[name].data):>6} {sizes['meta']:>6} {sizes['chunk']:>6} {sizes['unused']:>6} "
            + f"{flips:>5} "
            + " ".join(f"{c[k]:>10}" for k in kinds)
            + f" {truncs:>5} {c['trunc-unreadable']:>8} {c['trunc-located']:>8}"
        )
    flips = sum(total[k] for k in kinds)
    truncs = sum(v for k, v in total.items() if k.startswith("trunc-"))
    lines.append(
        f"{'total':<10} {'':>6} {'':>6} {'':>6} {'':>6} {flips:>5} "
        + " ".join(f"{total[k]:>10}" for k in kinds)
        + f" {truncs:>5} {total['trunc-unreadable']:>8} {total['trunc-located']:>8}"
    )
    lines += [
        "",
        "located: a finding names the flipped structure; entry: a chunk that still decodes identically, caught by",
        "image.blob's sha256 (named at entry level); address: caught only by blob.id (file name = sha256);",
        "unreadable: open_layer refuses it (exit 2); uncovered: verify OK, in the table below; FAIL: none of these.",
        "",
        "Uncovered regions (exact bits per target where a flip is invisible to every structural check; flips seen):",
    ]
    for u in UNCOVERED:
        hits = rules.get(u.name, {})
        seen = ", ".join(f"{k} {v}" for k, v in sorted(hits.items())) or "none"
        lines.append(f"* {u.name} [{', '.join(u.kinds)}]" + (f", when {u.when}" if u.when else ""))
        lines.append(f"    why: {u.reason}")
        lines.append(f"    flips that hit it in this run: {seen}")
        for name, t in targets.items():
            if u.targets and name not in u.targets:
                continue
            bits, spans = exact_uncovered(t, u)
            if bits:
                lines.append(f"    {name}: {bits} bits in bytes {_ranges(spans)}")
    return "\n".join(lines)
