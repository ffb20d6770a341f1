"""Checks ``bootstrap``, ``bootstrap.super``, ``bootstrap.inode``, ``bootstrap.dir``, ``bootstrap.nlink``,
``bootstrap.chunks``, ``bootstrap.layout``, ``bootstrap.prefetch``, the device and blob tables (``blob.table``)
and the bootstrap chunk table (``chunk.table``): the structure of a RAFS v6 bootstrap, fed node by node
by one tree walk.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..codecs import Compressor
from ..errors import NydusInspectError
from ..formats import blob_meta, rafs_v6
from ..formats._struct import round_up
from ..formats.tar_header import (
    IMAGE_BOOT,
)
from ..model import (
    DIR,
    FT_OF_TYPE,
    KERNEL_MAX,
    NAME_MAX,
    PATH_MAX,
    REG,
    RELEASE_EVERY,
    SYMLINK,
    WALK_LINKED_TWICE,
    WalkError,
    fsdecode,
    node_type,
)
from ..query import FileIndex, index_walk
from .findings import Finding, _exc_finding, _show

if TYPE_CHECKING:
    from .run import _Run


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
    index = FileIndex.for_image(rafs)
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
        if err.kind != WALK_LINKED_TWICE:  # _Tree.visit reports a directory reached through several names
            run.add(_exc_finding("bootstrap.inode", err.error, path=fsdecode(err.path), file=layer.path))

    seen_nids = tree.nids
    paths = inodes = 0
    run.tick("bootstrap", 0, total)

    def readdir(nid: int) -> list:
        # The directories _Tree._dir has just decoded, rather than decoding them a second time.
        ents = tree.dirents.pop(nid, None)
        return ents if ents is not None else rafs.readdir(nid)

    def chunks_of(node) -> list:
        try:
            return rafs.chunks(node)
        except NydusInspectError as exc:
            run.add(_exc_finding("bootstrap.chunks", exc, path=fsdecode(node.path), file=layer.path))
            return []

    # The walk decodes an inode where its directory lists it (_Tree._dir) and looks at it again when it gets
    # there: soon after for the directory's files, after their subtrees for its subdirectories (decoded once
    # more then, which costs little). A few directories' worth of inodes serves it as well as the model's
    # full cache, which held tens of MB.
    kept = rafs.cache_inodes(WALK_INODES)
    try:
        for n, node, chunks, new in index_walk(rafs, index, chunks_of, on_error=bad_walk, readdir=readdir):
            first_visit = node.nid not in seen_nids
            seen_nids.add(node.nid)
            paths += 1
            tree.visit(node, first_visit)
            if first_visit:
                inodes += 1
            if chunks is not None:
                tree.file_chunks(node, chunks, records, first_visit)
                if first_visit:
                    for c, got_first in zip(chunks, new, strict=True):
                        if got_first and 0 <= c.blob_index < nblobs:
                            count = rafs.blobs[c.blob_index].chunk_count
                            if c.ci_index >= count:
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
    finally:
        rafs.cache_inodes(kept)
    run.count("paths", paths)
    run.count("inodes", inodes)
    tree.dirents.clear()
    # The walk is done with the decoded inodes it kept; the checks below decode the few they look at again.
    # The chunk records stay: the chunk pass looks every chunk up in them.
    rafs.drop_caches(chunk_records=False)
    tree.finish(complete=not index.errors)
    run.tick("bootstrap", total, total)


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


#: Decoded inodes the bootstrap walk keeps (RafsV6.cache_inodes): a directory of more entries has the
#: first of them decoded twice.
WALK_INODES = 8192
#: Extents a bucket of _by_start sorts at once.
_SORT_BUCKET = 1 << 16


def _by_start(starts: array, size: int) -> Iterable[int]:
    """The positions of ``starts`` in order of start, equal starts in order of position (a stable sort). A
    list of a million ints to sort costs tens of MB: the positions are first put in buckets of neighbouring
    starts (arrays, 8 bytes a position; the bucket of a start grows with it), and one bucket at a time sorted."""
    count = len(starts)
    nb = max(1, count // _SORT_BUCKET)
    # Buckets split the bootstrap's ``size`` bytes evenly; a start past it (a finding) goes in the last one.
    width = size // nb + 1
    buckets = [array("q") for _ in range(nb)]
    for i, start in enumerate(starts):
        buckets[min(nb - 1, max(0, start // width))].append(i)
    for k in range(nb):
        bucket, buckets[k] = buckets[k], None
        # Positions went in in increasing order, and sorted() is stable: ties stay in position order.
        yield from sorted(bucket, key=starts.__getitem__)


class _NidSet:
    """A set of inode numbers below ``limit`` (an inode takes 32 bytes of the bootstrap at least), a bit
    each: a set of a million ints held ~40 MB. A number past the limit (a v5 inode table) goes in a set."""

    __slots__ = ("bits", "limit", "more")

    def __init__(self, limit: int) -> None:
        self.bits = bytearray((limit + 7) >> 3)
        self.limit = limit
        self.more: set[int] = set()

    def add(self, nid: int) -> None:
        if 0 <= nid < self.limit:
            self.bits[nid >> 3] |= 1 << (nid & 7)
        else:
            self.more.add(nid)

    def __contains__(self, nid: int) -> bool:
        if 0 <= nid < self.limit:
            return bool(self.bits[nid >> 3] & (1 << (nid & 7)))
        return nid in self.more


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
        # File offsets at which files use each chunk: the first is the run's file index's first use of it
        # (FileIndex.first_use), the rest (dedup) in a dict.
        self._index = run.index
        self._more_off: dict[tuple[int, int], set[int]] = {}
        self.has_xattrs: str | bool = False  # the first path with xattrs
        self.nids = _NidSet(len(rafs.buf) // 32 + 1)  # every inode the walk reached
        # nid -> what RafsV6.readdir returns for it, from _dir, until the walk asks for it.
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
            want_meta = round_up(tables_end, rafs_v6.BLOCK_SIZE) // rafs.block_size  # 512 in tarfs
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

    def _field_reporter(
        self, check: str, layout, base: int, blob_index: int | None = None, path: str | None = None
    ):
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
            # An external blob is a file nydus references as it is (its chunks raw, anywhere in it, with no
            # blob.meta), so none of the rules of a blob nydus wrote about its blocks or metadata apply.
            external = bool(ent.features & blob_meta.EXTERNAL)
            # A tarfs blob is the tar itself: its size counts 512-byte blocks.
            ebs = 512 if ent.features & blob_meta.TARFS else rafs_v6.BLOCK_SIZE
            if ent.uncompressed_size % ebs and not external:
                bbad(
                    "uncompressed_size",
                    "not a multiple of 4096 (chunks are 4K-aligned)",
                    "4K multiple",
                    ent.uncompressed_size,
                )
            want_blocks = ent.uncompressed_size // rafs.block_size
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
            if external:
                if ent.compression_algo != Compressor.NONE.algo:
                    bbad(
                        "compression_algo",
                        "an external blob's chunks are raw",
                        Compressor.NONE.algo,
                        ent.compression_algo,
                    )
            elif single and ent.compression_algo != ext.compressor.algo:
                bbad(
                    "compression_algo",
                    "differs from the superblock's compressor",
                    ext.compressor.algo,
                    ent.compression_algo,
                )
            feats = ent.features
            if not feats & (blob_meta.ALIGNED | blob_meta.TARFS | blob_meta.EXTERNAL):
                bbad("features", "ALIGNED is required on RAFS v6 blobs", "aligned", hex(feats))
            if feats & blob_meta.V5_NO_EXT_BLOB_TABLE:
                bbad("features", "V5_NO_EXT_BLOB_TABLE is internal and never on disk", "clear", hex(feats))
            v2 = bool(feats & blob_meta.CHUNK_INFO_V2)
            if feats & (blob_meta.BATCH | blob_meta.ZRAN | blob_meta.ENCRYPTED) and not v2:
                bbad("features", "BATCH, ZRAN and ENCRYPTED need CHUNK_INFO_V2", "chunk_info_v2", hex(feats))
            rec = 24 if v2 else 16
            extra = feats & (blob_meta.BATCH | blob_meta.ZRAN | blob_meta.ENCRYPTED)
            if (
                ent.ci_uncompressed_size != rec * ent.chunk_count
                and not (extra and ent.ci_uncompressed_size >= rec * ent.chunk_count)
                and not (feats & (blob_meta.TARFS | blob_meta.EXTERNAL) and not ent.ci_uncompressed_size)
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
                    mapped = round_up(prev, align) // rafs.block_size
                    out.append(mapped)
                    prev = (mapped + d.blocks) * rafs.block_size
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
        # Values no kernel takes: a mount must refuse the inode (EIO) or show another value than recorded.
        if ino.i_size > KERNEL_MAX:
            ibad("i_size", "size past the largest a kernel takes (2^63 - 1)", f"<= {KERNEL_MAX}", ino.i_size)
        if ino.extended and ino.i_mtime > KERNEL_MAX:
            ibad(
                "i_mtime",
                "time past the largest a kernel takes (2^63 - 1 s)",
                f"<= {KERNEL_MAX}",
                ino.i_mtime,
            )
        if ino.extended and ino.i_mtime_nsec >= 1_000_000_000:
            ibad(
                "i_mtime_nsec",
                "nanoseconds past a second: no kernel takes them",
                "< 1000000000",
                ino.i_mtime_nsec,
            )
        if node.xattrs and not self.has_xattrs:
            self.has_xattrs = fsdecode(node.path)
        if ino.i_xattr_icount and self.rafs.buf[off + ino.inode_size + 4]:
            # Readers disagree on such an inode: the kernel (and we) read the ids from the shared xattr area,
            # nydusd ignores the count and decodes the ids as inline entries.
            self.bad(
                "bootstrap.inode",
                "shared xattrs: nydus never writes them and nydusd does not read them",
                structure="erofs xattr ibody header",
                path=fsdecode(node.path),
                field="h_shared_count",
                offset=off + ino.inode_size + 4,
                expected=0,
                found=self.rafs.buf[off + ino.inode_size + 4],
            )
        head = ino.inode_size + ino.xattr_size
        size = ino.i_size
        if node.type == REG:
            if ino.datalayout != rafs_v6.LAYOUT_CHUNK_BASED:
                ibad("i_format", "regular files are chunk-based", rafs_v6.LAYOUT_CHUNK_BASED, ino.datalayout)
                return
            fmt = ino.i_u
            bits = (fmt & rafs_v6.CHUNK_FORMAT_BLKBITS_MASK) + self.rafs.sb.s_blkszbits
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
            elif node.type == SYMLINK and len(node.target) >= PATH_MAX:
                ibad(
                    "i_size",
                    f"symlink target of PATH_MAX ({PATH_MAX}) bytes or more: no file system can create it",
                    f"< {PATH_MAX}",
                    size,
                )
            bs = self.rafs.block_size  # 512 in a tarfs bootstrap
            full = size // bs * bs
            if ino.datalayout == rafs_v6.LAYOUT_FLAT_INLINE:
                self._extent(off, off + head + size - full, 2 * node.nid)
            else:
                self._extent(off, off + head, 2 * node.nid)
                full = round_up(size, bs)
            if full:
                start = ino.i_u * bs
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
        block = rafs.block_size
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
            if len(name) > NAME_MAX:
                self.bad(
                    "bootstrap.dir",
                    f"name longer than {NAME_MAX} bytes: no file system can create it",
                    structure="erofs dirent",
                    path=fsdecode(prefix + name),
                    offset=doff,
                    expected=f"<= {NAME_MAX} bytes",
                    found=f"{len(name)} bytes",
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
        if not first or self.rafs.tarfs:
            return  # tarfs records no chunks: a file's chunks are where the tar holds them
        cs = self.rafs.chunk_size
        first_use = self._index.first_use
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
            # The walk recorded the chunk's first use (this file, or one before it): its position is one of
            # the chunk's offsets already.
            use = first_use(bi, ci)
            if use is None or use[1] != k:
                self._more_off.setdefault((bi, ci), set()).add(k * cs)
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

    def _offsets_of(self, blob_index: int, ci: int) -> set[int]:
        """The file offsets at which files use chunk ``ci`` of blob ``blob_index`` (empty: no file does)."""
        out = set(self._more_off.get((blob_index, ci), ()))
        use = self._index.first_use(blob_index, ci)
        if use is not None:
            out.add(use[1] * self.rafs.chunk_size)
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
        for nid, link in self.links.items():
            names, nlink, i_ino, path, off = link
            if names > 1 or nlink == 1:
                if names != nlink:
                    self._nlink_bad(path, off, names, nlink)
            else:
                groups.setdefault(i_ino, []).append((nid, *link))
        for members in groups.values():  # 2022 images: one inode per name, the names share i_ino
            for _nid, _names, nlink, _, path, off in members:
                if nlink != len(members):
                    self._nlink_bad(path, off, len(members), nlink)
            if len(members) > 1:
                self._same_file(members)

    def _same_file(self, members: list) -> None:
        """Inodes that share an i_ino stand for the names of one file only if they hold the same file: readers
        take each nid for a file of its own (as nydusd does), so inodes that differ are a crafted or broken
        group, whose names a reader grouping by i_ino would mix up (another file's bytes, a symlink)."""
        rafs = self.rafs
        first = None
        for nid, _names, _nlink, i_ino, path, off in members:
            try:
                ino = rafs.inode(nid)
                node = rafs.node(nid, b"")
                data = (
                    [(c.blob_index, c.ci_index) for c in rafs.chunk_indexes(node)]
                    if node.type == REG
                    else node.target
                )
            except NydusInspectError:
                return  # the walk reported it
            seen = {
                "i_mode": ino.i_mode,
                "i_uid": ino.i_uid,
                "i_gid": ino.i_gid,
                "i_size": ino.i_size,
                "data": data,
                "xattrs": node.xattrs,
            }
            if first is None:
                first = (seen, path)
                continue
            differ = [k for k in seen if seen[k] != first[0][k]]
            if differ:
                self.bad(
                    "bootstrap.nlink",
                    f"inodes sharing i_ino {i_ino} as the names of one hard-linked file differ in "
                    f"{', '.join(differ)}: they are two files",
                    structure=ino.layout.name,
                    path=path,
                    paths=(first[1], path),
                    field="i_ino",
                    offset=off + ino.layout.offsets["i_ino"],
                    expected=f"the {first[1]} inode",
                    found=i_ino,
                )

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
        for i in _by_start(starts, size):
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
        for node in self.rafs.walk(on_error=lambda err: None):
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
        # This check keeps nothing per record and reads the table in place: the index
        # of first records by key that every reader uses tells duplicates (a dict of the keys and a copy of
        # the table held hundreds of bytes a record, gigabytes for tens of millions of chunks).
        try:
            first_of = rafs._chunk_records().first
        except (NydusInspectError, struct.error):  # reported by the walk; duplicates are not looked for
            first_of = None
        # Per blob, how many records carry HAS_CRC32 and how many there are: a blob's records all do or all
        # don't, and the few that differ from the rest are found by a second pass, only when some do.
        crc_counts: dict[int, list[int]] = {}
        cs = rafs.chunk_size
        rows = _CT.struct.iter_unpack(memoryview(rafs.buf)[base : base + ext.s_chunk_table_size])
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

            if first_of is not None:
                first = first_of((bi, idx))
                if first is not None and first != i:
                    tbad("index", f"duplicate record (also record {first})", "unique", idx)
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
            counts = crc_counts.get(bi)
            if counts is None:
                counts = crc_counts[bi] = [0, 0]
            counts[0] += bool(flags & rafs_v6.CHUNK_HAS_CRC32)
            counts[1] += 1
            # The table is read once from end to end here: its pages need not stay (RafsV6.release_pages).
            if i % RELEASE_EVERY == RELEASE_EVERY - 1 and rafs.release_pages is not None:
                rafs.release_pages()
            if crc and not flags & rafs_v6.CHUNK_HAS_CRC32:
                tbad("crc32", "crc32 set but the HAS_CRC32 flag is not", 0, crc)
            if not 0 < usize <= cs:
                tbad("uncompressed_size", "outside 1..chunk size", f"1..{cs}", usize)
            # tarfs: a chunk is where the tar holds it, on a 512-byte block.
            ublock = 512 if ent.features & blob_meta.TARFS else rafs_v6.BLOCK_SIZE
            if ent.features & blob_meta.EXTERNAL:
                ublock = 1  # raw bytes anywhere in the blob
            if uoff % ublock or uoff + round_up(usize, ublock) > ent.uncompressed_size:
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
                # Encryption pads data shorter than one 16-byte unit to 18 bytes (chunks.variants).
                stored = 18 if ent.cipher_algo and usize < 16 else usize
                if not flags & rafs_v6.CHUNK_COMPRESSED and csize != stored:
                    tbad("compressed_size", "uncompressed chunk with differing sizes", stored, csize)
            if complete and not self.rafs.tarfs:  # tarfs files name no records
                have = self._offsets_of(bi, idx)
                if not have:
                    tbad("index", "no file uses this chunk record", "used", idx)
                elif foff not in have:
                    tbad("file_offset", "no file uses this chunk at this offset", sorted(have), foff)
        # The minority of a mixed blob is what is odd: records without a crc where most have one, else those
        # with one.
        odd_has = {bi: n * 2 < total for bi, (n, total) in crc_counts.items() if 0 < n < total}
        if odd_has:
            rows = _CT.struct.iter_unpack(memoryview(rafs.buf)[base : base + ext.s_chunk_table_size])
            for i, vals in enumerate(rows):
                bi, flags = vals[1], vals[2]
                want = odd_has.get(bi)
                if want is not None and bool(flags & rafs_v6.CHUNK_HAS_CRC32) == want:
                    with_crc, total = crc_counts[bi]
                    self.bad(
                        "chunk.table",
                        f"HAS_CRC32 differs from the other records of blob {bi}",
                        structure=_CT.name,
                        blob_index=bi,
                        field="flags",
                        offset=base + i * _CT.size + 36,
                        found=f"{with_crc} of {total} records with a crc",
                    )
                if i % RELEASE_EVERY == RELEASE_EVERY - 1 and rafs.release_pages is not None:
                    rafs.release_pages()
