"""Checks of a RAFS v5 bootstrap and its data blobs (``bootstrap``, ``bootstrap.super``, ``bootstrap.inode``,
``bootstrap.dir``, ``bootstrap.nlink``, ``bootstrap.chunks``, ``blob.missing``, ``chunk.read``,
``chunk.digest``): the superblock's tables lie where nydusd accepts them, the tree walks (the model's one
walk), each inode's ``i_digest`` is what nydus-image computes (a file: of its chunk digests; a symlink: of its
target; a directory: of its children's digests; anything else: of nothing), link counts agree with the names,
and every chunk reads, decompresses and has the digest its record gives.

v5 blobs carry no ToC, blob.meta or blob.digest: the bootstrap's records are all there is to check against.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import FormatError, NydusInspectError, UsageError
from ..formats import rafs_v5
from ..model import DIR, REG, SYMLINK, WalkError, fsdecode, node_type
from ..query import FileIndex
from .findings import Finding, _check_nlinks, _exc_finding

#: RafsSuperFlags nydus knows: compressors, digesters, explicit uid/gid, xattrs, inlined digests, tarfs,
#: and the two cipher bits.
_KNOWN_FLAGS = 0x3FF | 0x0300_0000

if TYPE_CHECKING:
    from ..model_v5 import RafsV5Model
    from .run import _Run


def _check_v5(run: _Run) -> None:
    layer = run.layer
    try:
        r: RafsV5Model = layer.rafs
    except NydusInspectError as exc:
        run.add(_exc_finding("bootstrap", exc, file=layer.path))
        return
    _check_super(run, r)
    files = _check_tree(run, r)
    _check_chunks(run, r, files)


def _check_super(run: _Run, r: RafsV5Model) -> None:
    """The table placement nydusd's RafsV5SuperBlock::validate requires (the parser needed less)."""
    sb, size = r.sb, r.size
    # table -> (offset field, offset, size)
    ranges = {
        "inode table": ("s_inode_table_offset", sb.s_inode_table_offset, 4 * sb.s_inode_table_entries),
        "blob table": ("s_blob_table_offset", sb.s_blob_table_offset, sb.s_blob_table_size),
        "extended blob table": (
            "s_extended_blob_table_offset",
            sb.s_extended_blob_table_offset,
            rafs_v5.EXT_BLOB.size * sb.s_extended_blob_table_entries,
        ),
        "prefetch table": (
            "s_prefetch_table_offset",
            sb.s_prefetch_table_offset,
            4 * sb.s_prefetch_table_entries,
        ),
    }

    def bad(field: str, message: str, expected: str, found: object) -> None:
        run.add(
            Finding(
                "bootstrap.super",
                message,
                structure="rafs v5 superblock",
                file=run.layer.path,
                offset=rafs_v5.SUPERBLOCK.offsets[field],
                field=field,
                expected=expected,
                found=str(found),
            )
        )

    if sb.s_inodes_count > sb.s_inode_table_entries:
        bad(
            "s_inodes_count",
            "more inodes than inode table entries",
            f"<= {sb.s_inode_table_entries}",
            sb.s_inodes_count,
        )
    if sb.s_flags & ~_KNOWN_FLAGS:
        bad("s_flags", "unknown superblock flag bits", f"within {_KNOWN_FLAGS:#x}", hex(sb.s_flags))
    placed = [(name, f, o, n) for name, (f, o, n) in ranges.items() if n]
    for name, field, off, length in placed:
        if off < rafs_v5.SUPERBLOCK_SIZE or off + length > size:
            bad(
                field,
                f"{name} outside the bootstrap after the superblock",
                f"inside {size} bytes",
                f"{off}+{length}",
            )
    for i, (a, field, ao, al) in enumerate(placed):
        for b, _, bo, bl in placed[i + 1 :]:
            if ao < bo + bl and bo < ao + al:
                bad(field, f"{a} overlaps the {b}", "disjoint tables", f"{ao}+{al}, {bo}+{bl}")
    run.count("superblock")


def _check_tree(run: _Run, r: RafsV5Model) -> list:
    layer = run.layer
    index = FileIndex()
    run.index = index
    total = r.inode_count()

    def bad_walk(err: WalkError) -> None:
        index.errors.append(err)
        check = "bootstrap.inode" if err.kind == "decode" else "bootstrap.dir"
        run.add(_exc_finding(check, err.error, path=fsdecode(err.path), file=layer.path))

    names: dict[int, int] = {}  # nid -> names (non-directories) or subdirectories + 2 (directories)
    first: dict[int, tuple[int, bytes, str]] = {}  # nid -> (i_nlink, first path, type)
    dirs: dict[bytes, int] = {}
    files = []
    run.tick("bootstrap", 0, total)
    for n, node in enumerate(r.walk(on_error=bad_walk)):
        index.add_path(node.path, node.type == DIR)
        if node.type == DIR:
            names.setdefault(node.nid, 2)
            parent = dirs.get(node.path.rsplit(b"/", 1)[0] or b"/")
            if node.path != b"/" and parent is not None:
                names[parent] += 1
            dirs[node.path] = node.nid
        else:
            names[node.nid] = names.get(node.nid, 0) + 1
        if node.nid not in first:
            first[node.nid] = (node.nlink, node.path, node.type)
            if node.type == REG:
                index.files += 1
                files.append(node)
        if node.type == DIR:
            # Each name's own inode (hard-linked names are inodes of their own, which the walk's nodes,
            # resolved to the first of them, do not show): the directory's, then its non-directories'.
            try:
                ino = r.inode(node.nid)
                _check_digest(run, r, ino, node.path)
                base = node.path.rstrip(b"/") + b"/"
                for k in r.v5.child_range(ino):
                    kid = r.v5.inode(k)
                    if not kid.is_dir:
                        _check_digest(run, r, kid, base + kid.name)
                        _check_link(run, r, kid, base + kid.name)
            except NydusInspectError as exc:
                run.add(_exc_finding("bootstrap.inode", exc, path=fsdecode(node.path), file=layer.path))
        if n & 1023 == 1023:
            run.tick("bootstrap", n + 1, total)
    _check_nlinks(run, names, first, "bootstrap.nlink", "rafs v5 inode")
    run.count("inodes", len(names))
    run.tick("bootstrap", total, total)
    return files


def _check_link(run: _Run, r: RafsV5Model, ino, path: bytes) -> None:
    """A hard-linked name's own inode holds what its file's first inode holds (readers take the first)."""
    nid = r.readdir_target(ino)
    if nid == ino.offset >> 3:
        return
    first = r.inode(nid)
    if (ino.i_size, r.v5.chunk_records(ino)) != (first.i_size, r.v5.chunk_records(first)):
        run.add(
            Finding(
                "bootstrap.nlink",
                f"a name of a hard-linked file differs in size or chunks from its first inode ({first.index})",
                structure="rafs v5 inode",
                file=run.layer.path,
                path=fsdecode(path),
                offset=ino.offset,
                field="i_size",
                expected=str(first.i_size),
                found=str(ino.i_size),
            )
        )


def _check_digest(run: _Run, r: RafsV5Model, ino, path: bytes) -> None:
    """``i_digest`` as nydus-image computes it for the inode's type."""
    kind = node_type(ino.i_mode)
    if kind == REG:
        parts = [rec[0] for rec in r.v5.chunk_records(ino)]
    elif kind == SYMLINK:
        parts = [ino.symlink]
    elif kind == DIR:
        parts = [r.v5.inode(k).i_digest for k in r.v5.child_range(ino)]
    else:
        parts = []
    got = r.digester.digest(b"".join(parts))
    if got != ino.i_digest:
        of = {REG: "chunk digests", SYMLINK: "symlink target", DIR: "children's digests"}.get(
            kind, "(empty) data"
        )
        run.add(
            Finding(
                "bootstrap.inode",
                f"i_digest differs from the {r.digester.value} digest of the inode's {of}",
                structure="rafs v5 inode",
                file=run.layer.path,
                path=fsdecode(path),
                offset=ino.offset + rafs_v5.INODE.offsets["i_digest"],
                field="i_digest",
                expected=got.hex(),
                found=ino.i_digest.hex(),
            )
        )


def _check_chunks(run: _Run, r: RafsV5Model, files: list) -> None:
    layer = run.layer
    reader = layer.chunk_reader
    seen: set = set()
    missing: set[int] = set()
    run.tick("chunks", 0, len(files))
    for k, node in enumerate(files):
        path = fsdecode(node.path)
        try:
            chunks = r.chunks(node)
        except NydusInspectError as exc:
            run.add(_exc_finding("bootstrap.chunks", exc, path=path, file=layer.path))
            continue
        for c in chunks:
            if c.cache_key in seen or c.blob_index in missing:
                continue
            seen.add(c.cache_key)
            try:
                blob = layer.blob_file(c.blob_index)
            except UsageError as exc:  # the blob file is not found
                missing.add(c.blob_index)
                run.add(Finding("blob.missing", str(exc), blob_index=c.blob_index, file=layer.path))
                continue
            where = {"blob_index": c.blob_index, "chunk": c.ci_index, "path": path, "structure": "chunk"}
            try:
                data = reader.decode(c, verify=False)
            except NydusInspectError as exc:
                run.add(_exc_finding("chunk.read", exc, file=blob.path, offset=c.compressed_offset, **where))
                continue
            try:
                reader.check(blob, c, data)
            except FormatError as exc:
                run.add(_exc_finding("chunk.digest", exc, **where))
                continue
            run.count("chunks")
            run.count("bytes", c.uncompressed_size)
        node.chunks = None
        run.tick("chunks", k + 1, len(files))
    run.count("files", len(files))
