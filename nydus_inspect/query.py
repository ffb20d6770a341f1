"""Queries over an opened layer (info, toc, chunks, ls, cat) as plain data for the front ends, and the file
index verify and the TUI build on (over :meth:`RafsV6.walk <nydus_inspect.model.RafsV6.walk>`, reporting).

Named so as not to shadow the standard library's ``inspect``."""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .errors import FormatError, UsageError
from .formats import blob_meta, rafs_v5, rafs_v6
from .formats.tar_header import IMAGE_BLOB
from .layer import KIND_BLOB_NO_TOC, KIND_BOOTSTRAP_V5, KIND_EROFS, Layer
from .model import DIR, REG, Node, WalkError, fsdecode


def info(layer: Layer) -> dict:
    from .overlay import LayerStack

    if isinstance(layer, LayerStack):
        # An image of several EROFS layers: each layer said as it is on its own, lowest first.
        out = {"path": layer.path, "kind": layer.kind, "size": layer.size, "sha256": None, "layers": []}
        for sub, desc in zip(layer.layers, layer.descriptors):
            one = info(sub)
            one["digest"] = desc.get("digest")
            one["media_type"] = desc.get("mediaType")
            out["layers"].append(one)
        return out
    table = getattr(layer.source, "table", None)  # a seekable EROFS layer's chunk table
    # Hashing a seekable layer's image decodes every frame: that is verify's work. Its own digests are in
    # its chunk table (below); the image's sha256, its diff ID, is in the image's config, not in the layer.
    digest = None if table is not None else layer.digest
    out: dict = {"path": layer.path, "kind": layer.kind, "size": layer.size, "sha256": digest}
    if layer.notes:
        out["notes"] = list(layer.notes)
    if layer.toc is not None:
        out["toc"] = {
            "entries": len(layer.toc),
            "digest": layer.toc_digest.hex(),
            "size": len(layer.toc_bytes) + 512,
        }
    elif layer.kind == KIND_BLOB_NO_TOC:
        out["sections"] = [{"name": s.name, "offset": s.offset, "size": s.size} for s in layer.sections]
    if layer.blob_meta_header is not None:
        out["blob_meta"] = layer.blob_meta_header.to_json()
    if layer.kind == "estargz":
        from .estargz import summary

        out["estargz"] = summary(layer.estargz_index)
    if layer.kind == KIND_EROFS:
        from .erofs import info as erofs_info

        out["erofs"] = erofs_info(layer.rafs)
        if table is not None:  # a seekable EROFS layer: the frames around the image
            out["seekable"] = {
                **table.to_json(),
                "stored_size": layer.source.stored_size,
                "dm_verity_root_digest": layer.source.verity_root(),
            }
    elif layer.kind == KIND_BOOTSTRAP_V5 or (layer.has_bootstrap and layer.is_v5):
        out["bootstrap"] = bootstrap_v5_info(layer.rafs_v5)
    elif layer.has_bootstrap:
        out["bootstrap"] = bootstrap_info(layer)
    return out


def bootstrap_info(layer: Layer) -> dict:
    r = layer.rafs
    sb, ext = r.sb, r.ext
    blobs = []
    for ent in r.blobs:
        j = ent.to_json()
        if ent.id == rafs_v6.PLACEHOLDER_BLOB_ID:
            # What the placeholder stands for is this file's sha256 (the top-level "sha256"); the text
            # output says so (blob_id_text).
            j["placeholder"] = True
        real = layer.blob_id(ent.blob_index)
        if real != ent.id:
            j["blob_id_resolved"] = real
        blobs.append(j)
    return {
        "version": 6,
        "size": r.size,
        "superblock": {
            "magic": f"{sb.s_magic:#x}",
            "feature_compat": f"{sb.s_feature_compat:#x}",
            "feature_incompat": f"{sb.s_feature_incompat:#x}",
            "block_size": 1 << sb.s_blkszbits,
            "root_nid": sb.s_root_nid,
            "inodes": sb.s_inos,
            "blocks": sb.s_blocks,
            "meta_blkaddr": sb.s_meta_blkaddr,
            "extra_devices": sb.s_extra_devices,
        },
        "ext_superblock": {
            "flags": f"{ext.s_flags:#x}",
            "flags_names": rafs_v6.super_flag_names(ext.s_flags),
            "compressor": ext.compressor.value,
            "digester": ext.digester.value,
            "explicit_uid_gid": bool(ext.s_flags & rafs_v6.EXPLICIT_UID_GID),
            "chunk_size": ext.s_chunk_size,
            "blob_table_offset": ext.s_blob_table_offset,
            "blob_table_size": ext.s_blob_table_size,
            "chunk_table_offset": ext.s_chunk_table_offset,
            "chunk_table_size": ext.s_chunk_table_size,
            "chunk_table_entries": ext.s_chunk_table_size // rafs_v6.CHUNK_TABLE_ENTRY.size,
            "prefetch_table_offset": ext.s_prefetch_table_offset,
            "prefetch_table_size": ext.s_prefetch_table_size,
        },
        "devices": [
            {
                "blob_id": d.blob_id.rstrip(b"\0").decode("ascii", "replace"),
                "blocks": d.blocks,
                "mapped_blkaddr": d.mapped_blkaddr,
            }
            for d in r.meta.devices
        ],
        "blobs": blobs,
        "prefetch": r.meta.prefetch,
    }


def blob_id_text(layer: Layer, blob_index: int) -> str:
    """A blob's id for a person: the stored id, or what nydus's placeholder id stands for.

    nydus writes a placeholder (64 x "x") as the id of a layer blob's own data, since the id (the
    file's sha256) is not known while the file is written: say so, with the digest it stands for,
    rather than a name taken from the file name."""
    ent = layer.rafs.blobs[blob_index]
    if ent.id != rafs_v6.PLACEHOLDER_BLOB_ID:
        return layer.blob_id(blob_index)
    if blob_index == layer.own_blob_index():
        return f"placeholder (this file: sha256 {layer.digest})"
    return "placeholder (no id stored)"


def bootstrap_v5_info(r: rafs_v5.RafsV5) -> dict:
    sb = r.sb
    return {
        "version": 5,
        "superblock": {
            "magic": f"{sb.s_magic:#x}",
            "flags": f"{sb.s_flags:#x}",
            "flags_names": rafs_v6.super_flag_names(sb.s_flags),
            "chunk_size": sb.s_block_size,
            "inodes": sb.s_inodes_count,
            "inode_table_entries": sb.s_inode_table_entries,
            "prefetch_table_entries": sb.s_prefetch_table_entries,
        },
        "blobs": [{"index": i, "blob_id": b} for i, b in enumerate(r.blob_ids())],
    }


def toc_report(layer: Layer) -> dict:
    if layer.toc is not None:
        entries = []
        for e in layer.toc:
            j = e.to_json()
            if e.name == IMAGE_BLOB and e.compressed_offset != 0:
                j["compressed_offset"] = 0
                j["compressed_offset_field"] = e.compressed_offset
            entries.append(j)
        return {
            "path": layer.path,
            "source": "toc",
            "entries": entries,
            "toc_digest": layer.toc_digest.hex(),
            "toc_size": len(layer.toc_bytes) + 512,
            "notes": list(layer.notes),
        }
    if layer.sections:
        entries = []
        for name in layer.entry_names():
            off, size, comp, usize, _ = layer.entry_location(name)
            entries.append(
                {
                    "name": name,
                    "compressor": comp.value,
                    "compressed_offset": off,
                    "compressed_size": size,
                    "uncompressed_size": usize if usize >= 0 else None,
                    "sha256": None,
                }
            )
        return {
            "path": layer.path,
            "source": "tar-headers",
            "entries": entries,
            "toc_digest": None,
            "notes": list(layer.notes),
        }
    raise UsageError(f"{layer.path}: a {layer.kind} has no ToC or tar sections; toc needs a nydus layer blob")


def chunks_report(layer: Layer) -> Iterator[dict]:
    """Yield the header dict first (``{"header": ...}``), then one dict per chunk."""
    table = getattr(layer.source, "table", None)
    if table is not None:  # a seekable EROFS layer: its chunks are the zstd frames of the image
        yield {"source": "seekable erofs chunk table", "header": table.to_json()}
        for f in table.frames:
            yield {
                "index": f.index,
                "compressed_offset": f.offset,
                "compressed_size": f.size,
                "uncompressed_offset": f.uncompressed_offset,
                "uncompressed_size": f.uncompressed_size,
                "compressed": True,
                "digest": f.checksum.hex() or None,
            }
        return
    infos = layer.chunk_infos
    if infos is not None:
        digests = layer.chunk_digests
        hdr = layer.blob_meta_header
        head = {"source": "blob.meta", "header": hdr.to_json()}
        if hdr.s_features & blob_meta.ZRAN:  # targz-ref: the inflate contexts the chunks point into
            from .formats import zran

            table = zran.parse_table(
                infos.data, hdr.s_ci_zran_offset, hdr.s_ci_zran_size, hdr.s_ci_zran_count
            )
            head["zran"] = [c.to_json() for c in table]
        yield head
        for ci in infos:
            j = ci.to_json()
            if digests is not None and ci.index < len(digests):
                j["digest"] = digests[ci.index].hex()
            yield j
        return
    if layer.has_bootstrap and layer.is_v5:
        yield from _v5_chunks_report(layer)
        return
    if layer.has_bootstrap and not layer.is_v5:
        r = layer.rafs
        yield {"source": "bootstrap chunk table", "header": {"entries": r.ext.s_chunk_table_size // 80}}
        for rec in r.chunk_table_entries():
            yield {
                "index": rec.index,
                "blob_index": rec.blob_index,
                "compressed_offset": rec.compressed_offset,
                "compressed_size": rec.compressed_size,
                "uncompressed_offset": rec.uncompressed_offset,
                "uncompressed_size": rec.uncompressed_size,
                "compressed": rec.compressed,
                "flags": rafs_v6.CHUNK_FLAG_NAMES
                and [n for b, n in rafs_v6.CHUNK_FLAG_NAMES.items() if rec.flags & b],
                "file_offset": rec.file_offset,
                "crc32": rec.crc32 if rec.flags & rafs_v6.CHUNK_HAS_CRC32 else None,
                "digest": rec.block_id.hex(),
            }
        return
    raise UsageError(f"{layer.path}: no blob.meta and no bootstrap: nothing describes chunks here")


def _v5_chunks_report(layer: Layer) -> Iterator[dict]:
    """A v5 bootstrap has no chunk table: each file's inode holds its chunk records. Each distinct record
    (blob, chunk index) once, in walk order, with the first file using it."""
    r = layer.rafs
    yield {"source": "rafs v5 inode chunk records", "header": {"chunk_size": r.chunk_size}}
    seen = set()
    for node in r.walk():
        if node.type != REG:
            continue
        for c in r.chunks(node):
            if (c.blob_index, c.ci_index) in seen:
                continue
            seen.add((c.blob_index, c.ci_index))
            yield {**c.to_json(), "index": c.ci_index, "file": fsdecode(node.path)}


def list_nodes(
    layer: Layer, path: str = "/", recursive: bool = False, with_chunks: bool = False, follow: bool = True
) -> Iterator[Node]:
    """Nodes under ``path``: the node itself when not a directory, else its children (all, with -R).

    Symlinks in ``path`` are followed (the last one too, unless ``follow`` is False)."""
    r = layer.rafs
    top = lookup_path(layer, path, follow=follow)
    if recursive:
        it = r.walk(top)
    elif top.type == DIR:
        it = r.children(top)
    else:
        it = iter([top])
    for node in it:
        if with_chunks and node.type == REG:
            r.chunks(node)
        yield node


def lookup_path(layer: Layer, path: str | bytes, *, follow: bool = True) -> Node:
    """The node a user's ``path`` names in the layer's tree, symlinks followed as the kernel would."""
    from .paths import PathError, resolve_in

    try:
        return resolve_in(layer.rafs, path, follow=follow)
    except PathError as exc:
        raise UsageError(f"{layer.path}: {exc}") from None


def cat(layer: Layer, path: str, *, follow: bool = True) -> Iterator[bytes]:
    node = lookup_path(layer, path, follow=follow)
    if node.type != REG:
        raise UsageError(f"{layer.path}: {fsdecode(node.path)} is a {node.type}, not a regular file")
    return layer.read_file(node)


# ---------------------------------------------------------------------------- file index
class PathTable:
    """Every path of a walk, in walk order, as (parent, last name) pairs: linear in the tree's size, where a
    list of full paths holds depth squared bytes (4,000 nested 255-byte names are 2 GB of paths).

    A sequence of full paths (``len``, ``[i]``, ``index``, iteration), each rebuilt when asked for. The names
    are kept end to end in one buffer with the end of each in an array (a list of bytes objects cost ~47
    bytes a name, most of it the objects' headers: tens of MB for a layer of a million files)."""

    def __init__(self) -> None:
        self._names = bytearray()
        self._ends = array("Q")
        self.parents = array("q")
        # The directories on the current walk path as (id, length of the path): the walk is pre-order, so a
        # new path's parent is the one whose length is where its last '/' is.
        self._open: list[tuple[int, int]] = []
        self._last: tuple[int, bytes] = (-1, b"")  # the last parent rebuilt: siblings ask for it in a row

    def append(self, path: bytes, is_dir: bool = False) -> int:
        i = len(self._ends)
        cut = path.rfind(b"/")
        if path == b"/" or cut < 0:
            parent, start, length = -1, 0, 0
        else:
            opened = self._open
            while opened and opened[-1][1] > cut:
                opened.pop()
            if opened and opened[-1][1] == cut:
                parent, start = opened[-1][0], cut + 1
            else:  # a path the walk did not reach through its parent: keep it whole
                parent, start = -1, 0
            length = len(path)
        names = self._names
        names += memoryview(path)[start:]
        self._ends.append(len(names))
        self.parents.append(parent)
        if is_dir:
            self._open.append((i, 0 if path == b"/" else length))
        return i

    def name(self, i: int) -> bytes:
        """The last name of path ``i`` as the walk gave it (the whole path where it had no parent)."""
        return bytes(self._names[self._ends[i - 1] if i else 0 : self._ends[i]])

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, i: int) -> bytes:
        if i < 0:
            i += len(self._ends)
        parent = self.parents[i]
        if parent < 0:
            return self.name(i)
        if self._last[0] != parent:
            self._last = (parent, self._rebuild(parent))
        base = self._last[1]
        return (b"" if base == b"/" else base) + b"/" + self.name(i)

    def _rebuild(self, i: int) -> bytes:
        parts = []
        while i >= 0:
            parts.append(self.name(i))
            i = self.parents[i]
        if parts[-1] == b"/":
            parts[-1] = b""
        return b"/".join(reversed(parts)) or b"/"

    def __iter__(self) -> Iterator[bytes]:
        return (self[i] for i in range(len(self._ends)))

    def index(self, path: bytes) -> int:
        name = path[path.rfind(b"/") + 1 :] or path
        for i in range(len(self._ends)):
            have = self.name(i)
            if (have == name or have == path) and self[i] == path:
                return i
        raise ValueError(f"{path!r} is not in the index")

    def __getstate__(self) -> dict:
        return {"names": self._names, "ends": self._ends, "parents": self.parents}

    def __setstate__(self, state: dict) -> None:
        self.__init__()
        self._names, self._ends, self.parents = state["names"], state["ends"], state["parents"]


#: Path ids and chunk positions up to this share a first-use slot (FileIndex.add_owner); beyond, a chunk's
#: owners are kept as its later ones are.
_SLOT = 1 << 31


@dataclass
class FileIndex:
    """What a full walk of a bootstrap learns, held compactly enough for millions of chunks.

    - ``paths``: every path, in walk order (search them with :meth:`search`);
    - chunk owners: which file(s) use chunk ``ci`` of blob ``b`` (:meth:`owners`);
    - hardlink groups: every name of an inode with several links (:meth:`hardlinks`);
    - ``errors``: the parts of the tree that did not decode.
    """

    paths: PathTable = field(default_factory=PathTable)
    errors: list[WalkError] = field(default_factory=list)
    files: int = 0
    chunk_refs: int = 0
    _first: dict[int, array] = field(default_factory=dict)
    _more: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    _links: dict[int, list[int]] = field(default_factory=dict)

    @classmethod
    def for_image(cls, rafs) -> FileIndex:
        """An empty index with room for an owner of every chunk of each of ``rafs``'s blobs."""
        idx = cls()
        # A plain EROFS image has no blob table, so no chunks to own.
        for b in () if getattr(rafs, "PLAIN_EROFS", False) else rafs.blobs:
            idx._first[b.blob_index] = array("q", [-1]) * b.chunk_count
        return idx

    def add_path(self, path: bytes, is_dir: bool = False) -> int:
        """Number the next path of the walk (``is_dir``: later paths may lie below it)."""
        return self.paths.append(path, is_dir)

    def add_owner(self, blob_index: int, ci_index: int, path_id: int, position: int = 0) -> bool:
        """Record that ``path_id`` uses the chunk (as its ``position``-th chunk); True when the chunk had no
        owner before. A chunk's first use, path and position, is one 8-byte slot (:meth:`first_use`): the
        one array per blob that grows with its chunks."""
        self.chunk_refs += 1
        first = self._first.get(blob_index)
        if first is not None and 0 <= ci_index < len(first) and path_id < _SLOT and position < _SLOT:
            slot = first[ci_index]
            if slot < 0:
                first[ci_index] = path_id << 32 | position
                return True
            if slot >> 32 == path_id:
                return False
        lst = self._more.setdefault((blob_index, ci_index), [])
        if path_id in lst:
            return False
        lst.append(path_id)
        return len(lst) == 1 and (first is None or not 0 <= ci_index < len(first))

    def owners(self, blob_index: int, ci_index: int) -> list[str]:
        """Paths of the files using chunk ``ci_index`` of blob ``blob_index`` (empty when none does)."""
        ids: list[int] = []
        first = self._first.get(blob_index)
        if first is not None and 0 <= ci_index < len(first) and first[ci_index] >= 0:
            ids.append(first[ci_index] >> 32)
        ids += self._more.get((blob_index, ci_index), ())
        return [fsdecode(self.paths[i]) for i in ids]

    def first_use(self, blob_index: int, ci_index: int) -> tuple[int, int] | None:
        """(path id, position of the chunk in that file) of the chunk's first use in the walk, or None when
        it has none recorded here."""
        first = self._first.get(blob_index)
        if first is not None and 0 <= ci_index < len(first) and first[ci_index] >= 0:
            slot = first[ci_index]
            return slot >> 32, slot & 0xFFFF_FFFF
        return None

    def add_hardlink(self, group: int, path_id: int) -> None:
        self._links.setdefault(group, []).append(path_id)

    def hardlinks(self, group: int | None) -> list[str]:
        if group is None:
            return []
        return [fsdecode(self.paths[i]) for i in self._links.get(group, ())]

    def search(self, text: str, start: int = 0) -> int | None:
        """Index of the next path (from ``start``, wrapping) containing ``text``, case-insensitively."""
        needle = text.lower().encode("utf-8", "surrogateescape")
        n = len(self.paths)
        for k in range(n):
            i = (start + k) % n
            if needle in self.paths[i].lower():
                return i
        return None


def index_walk(
    rafs,
    index: FileIndex,
    chunks_of: Callable[[Node], list | None],
    *,
    on_error: Callable[[WalkError], None] | None = None,
    readdir: Callable[[int], list] | None = None,
) -> Iterator[tuple[int, Node, list | None, list[bool]]]:
    """The one fill of a :class:`FileIndex`: walk the bootstrap (``RafsV6.walk``) and record every path, its
    hardlink group and, for a regular file, the chunks ``chunks_of(node)`` gives (anything with
    ``blob_index`` and ``ci_index``; None when they did not resolve, which ``chunks_of`` deals with).

    Yields ``(n, node, chunks, new)`` for each node in walk order, ``new[i]`` telling whether ``chunks[i]``
    got its first owner, so a caller (verify) checks what it checks once per chunk and counts progress.
    Walk errors go to ``index.errors`` and then to ``on_error``.
    """
    errors = index.errors

    def bad(err: WalkError) -> None:
        errors.append(err)
        if on_error is not None:
            on_error(err)

    add_path, add_owner = index.add_path, index.add_owner
    for n, node in enumerate(rafs.walk(on_error=bad, readdir=readdir)):
        pid = add_path(node.path, node.type == DIR)
        if node.hardlink is not None:
            index.add_hardlink(node.hardlink, pid)
        chunks, new = None, []
        if node.type == REG:
            index.files += 1
            chunks = chunks_of(node)
            if chunks:
                new = [add_owner(c.blob_index, c.ci_index, pid, k) for k, c in enumerate(chunks)]
        yield n, node, chunks, new


def file_index(
    layer: Layer,
    *,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> FileIndex:
    """Walk the whole bootstrap once: every path, chunk owners, hardlink groups, bad parts.

    Reads only inodes, directories and chunk indexes (no chunk data, no chunk table), so a
    100k-inode bootstrap takes about a second. ``progress(done, total)`` is called every 1024
    nodes (total: the superblock's inode count); ``cancel()`` returning True stops the walk early.
    """
    r = layer.rafs
    idx = FileIndex.for_image(r)
    total = r.inode_count()
    # A plain EROFS image has no blob table: its files own no nydus chunks, the index is of paths and links.
    plain = getattr(r, "PLAIN_EROFS", False)

    def chunks_of(node: Node) -> list | None:
        if plain:
            return []
        try:
            return r.chunk_indexes(node)
        except FormatError as exc:
            idx.errors.append(WalkError(node.path, node.nid, exc))
            return None

    for n, _, _, _ in index_walk(r, idx, chunks_of):
        if n & 1023 == 1023:
            if progress is not None:
                progress(n + 1, total)
            if cancel is not None and cancel():
                break
    return idx


__all__ = [
    "FileIndex",
    "PathTable",
    "blob_id_text",
    "WalkError",
    "blob_meta",
    "cat",
    "chunks_report",
    "file_index",
    "index_walk",
    "info",
    "list_nodes",
    "lookup_path",
    "toc_report",
]
