"""Layer analysis of a nydus image, in the spirit of dive: what each layer adds, changes and removes, where
each path of the final image comes from, the bytes the layers store that the image never reaches, and the
chunk-level figures dive cannot see (chunks stored again by an upper layer, compression, prefetch).

The image is given as an OCI layout of a converted image, as the layer blobs themselves (lowest first), or as
a merged bootstrap whose blob table names layer blobs; each layer is read through its own bootstrap. The
layers are applied with OCI rules, as ``merge`` applies them: a whiteout ``.wh.NAME`` and an opaque marker
``.wh..wh..opq`` act on the lower layers only, and a directory over a directory merges.

Definitions (the README repeats them):

- *added*: a path of the layer that no lower layer has; *modified*: one that replaces a lower path (a
  directory over a directory is a merge, not a change, and is not counted); *removed*: lower paths that the
  layer's whiteouts and opaque markers take away. Counts are of names; bytes are those of regular files,
  a hard-linked file's once (removed bytes: files whose last name goes).
- *stored bytes*: the sizes of the regular files each layer holds (a hard-linked file once per layer).
- *wasted bytes*: stored bytes that no path of the final image reaches: file versions that an upper layer
  overwrote or removed. Unlike dive, the version the image keeps is not counted as waste.
- *efficiency*: ``1 - wasted / stored`` (1.0 for an image that stores nothing).
- *user wasted fraction*: wasted bytes over the stored bytes of the layers above the lowest (dive's
  ``highestUserWastedPercent``), 0 for a single layer.
- *duplicate chunks*: chunks a layer's blob stores whose digest a lower layer's blob stores already; their
  compressed bytes are what a chunk dictionary shared by the layers would save.
- *compression ratio*: uncompressed over compressed bytes of the chunks a blob stores (per layer), and of
  the chunks of the final image's files under each top-level directory.
- *prefetch coverage*: the share of the final image's file bytes that the prefetch table names (a listed
  directory covers everything below it).
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from .errors import NydusInspectError, UsageError
from .formats.rafs_v6 import CHUNK_TABLE_ENTRY
from .model import DIR, REG, fsdecode

WHITEOUT = b".wh."
OPAQUE = b".wh..wh..opq"


@dataclass
class Tally:
    """How many names, and the bytes of the regular files among them."""

    count: int = 0
    bytes: int = 0

    def add(self, size: int) -> None:
        self.count += 1
        self.bytes += size

    def to_json(self) -> dict:
        return {"count": self.count, "bytes": self.bytes}


@dataclass
class Whiteout:
    layer: int
    path: str  # the whiteout's own path (/etc/.wh.motd, /var/.wh..wh..opq)
    kind: str  # "whiteout" (removes one name) or "opaque" (hides what lower layers put in the directory)
    target: str  # what it acts on (/etc/motd, /var)
    removed: Tally = field(default_factory=Tally)

    def to_json(self) -> dict:
        return {
            "layer": self.layer,
            "path": self.path,
            "kind": self.kind,
            "target": self.target,
            "removed": self.removed.to_json(),
        }

    def __str__(self) -> str:
        n = self.removed.count
        what = f"{n} {'name' if n == 1 else 'names'}, {self.removed.bytes} bytes"
        if self.kind == "opaque":
            return f"{self.path}: opaque: hides what lower layers put in {self.target} ({what})"
        if not self.removed.count:
            return f"{self.path}: removes {self.target}, which no lower layer has"
        return f"{self.path}: removes {self.target} ({what})"


@dataclass
class WastedFile:
    path: str
    layer: int  # the layer that stores the version no one reaches
    size: int
    by: int  # the layer that overwrote or removed it
    how: str  # "overwritten" or "removed"

    def to_json(self) -> dict:
        return {"path": self.path, "layer": self.layer, "bytes": self.size, "by": self.by, "how": self.how}


@dataclass
class LayerFigures:
    index: int
    path: str
    blob_id: str
    entries: int = 0  # names in the layer, whiteouts included
    files: int = 0  # regular-file names
    stored_bytes: int = 0
    added: Tally = field(default_factory=Tally)
    modified: Tally = field(default_factory=Tally)
    removed: Tally = field(default_factory=Tally)
    whiteouts: int = 0
    wasted_bytes: int = 0  # of this layer's stored bytes, those the final image does not reach
    final_entries: int = 0  # paths of the final image that come from this layer
    final_bytes: int = 0
    chunks: int = 0  # chunks the layer's blob stores
    chunk_bytes: int = 0  # their uncompressed bytes
    chunk_compressed: int = 0
    duplicate_chunks: int = 0  # of those, chunks a lower layer's blob stores already
    duplicate_bytes: int = 0  # their compressed bytes
    prefetch_entries: int = 0

    @property
    def compression_ratio(self) -> float:
        return self.chunk_bytes / self.chunk_compressed if self.chunk_compressed else 1.0

    def to_json(self) -> dict:
        return {
            "index": self.index,
            "path": self.path,
            "blob_id": self.blob_id,
            "entries": self.entries,
            "files": self.files,
            "stored_bytes": self.stored_bytes,
            "added": self.added.to_json(),
            "modified": self.modified.to_json(),
            "removed": self.removed.to_json(),
            "whiteouts": self.whiteouts,
            "wasted_bytes": self.wasted_bytes,
            "final_entries": self.final_entries,
            "final_bytes": self.final_bytes,
            "chunks": self.chunks,
            "chunk_bytes": self.chunk_bytes,
            "chunk_compressed_bytes": self.chunk_compressed,
            "compression_ratio": round(self.compression_ratio, 4),
            "duplicate_chunks": self.duplicate_chunks,
            "duplicate_chunk_bytes": self.duplicate_bytes,
            "prefetch_entries": self.prefetch_entries,
        }


@dataclass
class Analysis:
    source: str
    layers: list[LayerFigures] = field(default_factory=list)
    whiteouts: list[Whiteout] = field(default_factory=list)
    wasted: list[WastedFile] = field(default_factory=list)
    directories: list[dict] = field(default_factory=list)  # per top-level directory of the final image
    final_entries: int = 0
    final_files: int = 0
    final_bytes: int = 0
    prefetch_bytes: int = 0
    prefetch_source: str = ""
    #: The merged tree of the final image, kept for :meth:`origins` (a list of every path would cost more).
    _tree: object = field(default=None, repr=False)

    def origins(self) -> Iterator[tuple[str, int]]:
        """Every path of the final image with the index of the layer it comes from, sorted by path."""
        if self._tree is not None:
            for path, layer, *_rest in self._tree.final():
                yield fsdecode(path), layer

    @property
    def stored_bytes(self) -> int:
        return sum(lf.stored_bytes for lf in self.layers)

    @property
    def wasted_bytes(self) -> int:
        return sum(lf.wasted_bytes for lf in self.layers)

    @property
    def efficiency(self) -> float:
        return 1.0 - self.wasted_bytes / self.stored_bytes if self.stored_bytes else 1.0

    @property
    def user_wasted_fraction(self) -> float:
        user = sum(lf.stored_bytes for lf in self.layers[1:])
        return self.wasted_bytes / user if user else 0.0

    @property
    def duplicate_chunk_bytes(self) -> int:
        return sum(lf.duplicate_bytes for lf in self.layers)

    @property
    def duplicate_chunks(self) -> int:
        return sum(lf.duplicate_chunks for lf in self.layers)

    @property
    def compression_ratio(self) -> float:
        comp = sum(lf.chunk_compressed for lf in self.layers)
        return sum(lf.chunk_bytes for lf in self.layers) / comp if comp else 1.0

    @property
    def prefetch_coverage(self) -> float:
        return self.prefetch_bytes / self.final_bytes if self.final_bytes else 1.0

    def figures(self) -> dict:
        """The image-wide figures (what ``verify --rules`` thresholds apply to)."""
        return {
            "layers": len(self.layers),
            "final_entries": self.final_entries,
            "final_files": self.final_files,
            "final_bytes": self.final_bytes,
            "stored_bytes": self.stored_bytes,
            "wasted_bytes": self.wasted_bytes,
            "efficiency": round(self.efficiency, 6),
            "user_wasted_fraction": round(self.user_wasted_fraction, 6),
            "duplicate_chunks": self.duplicate_chunks,
            "duplicate_chunk_bytes": self.duplicate_chunk_bytes,
            "compression_ratio": round(self.compression_ratio, 4),
            "prefetch_bytes": self.prefetch_bytes,
            "prefetch_coverage": round(self.prefetch_coverage, 6),
            "prefetch_source": self.prefetch_source,
        }

    def to_json(self, with_origins: bool = True, array: Callable[[Iterator[dict]], object] = list) -> dict:
        """The report; its two lists that grow with the image (wasted files, origins) are made by ``array``
        from an iterator of their elements (a printer that writes them one at a time passes its own)."""
        out = {
            "source": self.source,
            "image": self.figures(),
            "layers": [lf.to_json() for lf in self.layers],
            "whiteouts": [w.to_json() for w in self.whiteouts],
            "wasted_files": array(w.to_json() for w in self.wasted),
            "directories": self.directories,
        }
        if with_origins:
            out["origins"] = array(self.origin_items())
        return out

    def origin_items(self) -> Iterator[dict]:
        """:meth:`origins` as the JSON report lists them."""
        return ({"path": p, "layer": i} for p, i in self.origins())


# ---------------------------------------------------------------------------- the merged tree
SOLE = ("sole",)


class _Ent:
    """One name of the merged tree: the layer it comes from, its regular-file bytes and inode, its children."""

    __slots__ = ("layer", "size", "inode", "kids", "usize", "csize", "top")

    def __init__(
        self, layer: int, size: int, inode, kids: dict | None, usize: int = 0, csize: int = 0
    ) -> None:
        self.layer = layer
        self.size = size  # regular files only, else 0
        # (layer, key) of a hard-linked file, shared by its names; SOLE for a regular file of one name (which
        # needs no books: its last name is its only one); None for the rest.
        self.inode = inode
        self.kids = kids  # a dict for directories
        self.usize = usize  # the file's chunk bytes, uncompressed and compressed
        self.csize = csize
        # A directory's names from the top layer that are no directories, as entries of that layer's
        # _Nodes: no layer comes after it to look them up by name, so they need no _Ent and no dict slot.
        self.top: array | None = None


class _Merger:
    """Applies layers one at a time and keeps the books: what each layer adds, replaces and removes, and which
    stored file versions lose their last name (wasted)."""

    def __init__(self, analysis: Analysis, last: int) -> None:
        self.a = analysis
        self.last = last  # the top layer's index
        self.top = _Nodes()  # the top layer's entries, once applied
        self.root = _Ent(-1, 0, None, {})
        self.names: dict[tuple, int] = {}  # inode -> names of it in the merged tree
        self.sizes: dict[tuple, int] = {}

    def _drop(self, ent: _Ent, path: bytes, by: int, how: str, tally: Tally) -> None:
        """``ent`` (and everything below it) leaves the merged tree because of layer ``by``."""
        stack = [(path, ent)]
        while stack:
            p, e = stack.pop()
            tally.count += 1
            if e.kids is not None:
                stack.extend((p + b"/" + k, c) for k, c in e.kids.items())
            if e.inode is None:
                continue
            if e.inode is SOLE:
                left, size = 0, e.size
            else:
                left = self.names[e.inode] - 1
                self.names[e.inode] = left
                size = self.sizes[e.inode]
            if left == 0:  # the data goes only with the last name of the file
                tally.bytes += size
                self.a.layers[e.layer].wasted_bytes += size
                if size:
                    self.a.wasted.append(WastedFile(fsdecode(p), e.layer, size, by, how))

    def _find(self, path: bytes) -> _Ent | None:
        ent = self.root
        for part in path.strip(b"/").split(b"/") if path != b"/" else ():
            if ent.kids is None:
                return None
            ent = ent.kids.get(part)
            if ent is None:
                return None
        return ent

    def apply(self, index: int, nodes: _Nodes) -> None:
        """Apply layer ``index``: its entries, parents before children."""
        lf = self.a.layers[index]
        # Whiteouts first: they act on what the lower layers hold, whatever their order in the layer.
        for k in nodes.whiteouts:
            path = nodes.paths[k]
            parent, _, name = path.rpartition(b"/")
            lf.whiteouts += 1
            dir_path = parent or b"/"
            low_dir = self._find(dir_path)
            if name == OPAQUE:
                wo = Whiteout(index, fsdecode(path), "opaque", fsdecode(dir_path))
                if low_dir is not None and low_dir.kids is not None and low_dir.layer < index:
                    for k, c in list(low_dir.kids.items()):
                        self._drop(c, dir_path.rstrip(b"/") + b"/" + k, index, "removed", wo.removed)
                    low_dir.kids.clear()
            else:
                target = name[len(WHITEOUT) :]
                tpath = dir_path.rstrip(b"/") + b"/" + target
                wo = Whiteout(index, fsdecode(path), "whiteout", fsdecode(tpath))
                if low_dir is not None and low_dir.kids is not None and target in low_dir.kids:
                    self._drop(low_dir.kids.pop(target), tpath, index, "removed", wo.removed)
            lf.removed.count += wo.removed.count
            lf.removed.bytes += wo.removed.bytes
            self.a.whiteouts.append(wo)
        # Then the entries, parents before children. A hard-linked file's bytes count once per layer.
        is_top = index == self.last
        if is_top:
            self.top = nodes
        counted: set = set()
        whiteouts = set(nodes.whiteouts)
        for k, (path, ntype, size, link, usize, csize) in enumerate(nodes):
            if k in whiteouts:
                continue
            if path == b"/":
                self.root.layer = index  # the root takes the top layer's attributes
                continue
            parent, _, name = path.rpartition(b"/")
            is_dir = ntype == DIR
            if ntype != REG:
                inode = None
            elif link is None:
                inode = SOLE
            else:
                inode = (index, link)
            pdir = self._find(parent or b"/")
            if pdir is None or pdir.kids is None:  # a walk gives parents first: cannot happen
                raise NydusInspectError(f"layer {index}: {fsdecode(path)} comes before its directory")
            low = pdir.kids.get(name)
            fsize = size if ntype == REG else 0
            if low is not None and low.kids is not None and is_dir:
                low.layer = index  # directories merge: upper metadata, both contents
                continue
            new_bytes = fsize if inode is SOLE or (inode is not None and inode not in counted) else 0
            if low is None:
                lf.added.add(new_bytes)
            else:
                lf.modified.add(new_bytes)
                self._drop(low, path, index, "overwritten", Tally())
            if inode is not None and inode is not SOLE:
                counted.add(inode)
                if inode not in self.sizes:
                    self.sizes[inode] = size
                self.names[inode] = self.names.get(inode, 0) + 1
            if is_top and not is_dir:
                if low is not None:
                    del pdir.kids[name]
                if pdir.top is None:
                    pdir.top = array("I")
                pdir.top.append(k)
                continue
            pdir.kids[name] = _Ent(index, fsize, inode, {} if is_dir else None, usize, csize)

    def _walk_order(self, ent: _Ent) -> list[tuple[str, bytes, bool, object]]:
        """The names of a directory of the merged tree in the order their paths sort, as (sort key, name,
        whether the item stands for what is below the name, its _Ent), or for a name of the top layer's
        files (sort key, its whole path, False, its entry in that layer): a directory's name sorts among its
        siblings, its contents as the name followed by "/" would, which need not come right after it ("a",
        "a-b", "a/c"). The keys are distinct: no name holds "/"."""
        keys: list[tuple[str, bytes, bool, object]] = []
        for name, child in ent.kids.items():
            text = fsdecode(name)
            keys.append((text, name, False, child))
            if child.kids or child.top is not None:
                keys.append((text + "/", name, True, child))
        if ent.top is not None:
            data, ends = self.top.paths.data, self.top.paths.ends
            for k in ent.top:
                path = bytes(data[ends[k - 1] if k else 0 : ends[k]])
                keys.append((fsdecode(path.rpartition(b"/")[2]), path, False, k))
        keys.sort(key=_first)
        return keys

    def final(self) -> Iterator[tuple[bytes, int, int, object, int, int]]:
        """Every path of the final image as (path, layer, regular-file bytes, inode as _Ent keeps it, chunk
        bytes, compressed chunk bytes), in the order ``sorted`` gives their decoded paths; the walk holds
        one directory's names per level, not a list of every path."""
        top, last = self.top, self.last
        codes, links, sizes, usizes, csizes = top.codes, top.links, top.sizes, top.usizes, top.csizes
        reg = top.type_names.index(REG) if REG in top.type_names else -1
        stack = [(b"", iter(self._walk_order(self.root)))]
        while stack:
            base, names = stack[-1]
            for _key, name, below, child in names:
                if below:
                    stack.append((base + b"/" + name, iter(self._walk_order(child))))
                    break
                if isinstance(child, _Ent):
                    yield base + b"/" + name, child.layer, child.size, child.inode, child.usize, child.csize
                elif codes[child] == reg:
                    link = links.get(child)
                    inode = SOLE if link is None else (last, link)
                    yield name, last, sizes[child], inode, usizes[child], csizes[child]
                else:
                    yield name, last, 0, None, usizes[child], csizes[child]
            else:
                stack.pop()


def _first(item: tuple):
    return item[0]


# ---------------------------------------------------------------------------- reading the layers
@dataclass
class _LayerSource:
    path: str
    layer: object  # an opened Layer whose own bootstrap describes this layer's tree


def _open_sources(
    paths: list[str], blob_dir: str | None, blobs: list[str] | None
) -> tuple[list, object | None]:
    """(the layers, lowest first; the image's bootstrap layer for its prefetch table, or None)."""
    from .layer import open_layer

    if len(paths) == 1 and os.path.isdir(paths[0]):
        from .oci import OciLayout, is_nydus_blob, is_nydus_bootstrap, select_images

        root = paths[0]
        layout = OciLayout(root)
        images = select_images(list(layout.images()), None, root)
        if len(images) > 1:
            raise UsageError(f"{root}: holds several images; analyze reads one")
        image = images[0]
        descs = image.manifest["layers"]
        layer_descs = [d for d in descs if is_nydus_blob(d)]
        boot_desc = next((d for d in reversed(descs) if is_nydus_bootstrap(d)), None)
        if not layer_descs or boot_desc is None:
            raise UsageError(
                f"{root}: image {image.digest} is not a nydus image; convert it first with `nydus-inspect convert`"
            )
        sources = []
        for i, d in enumerate(layer_descs):
            p = layout.check_blob(d, f"layer {i} of manifest {image.digest}")
            sources.append(_LayerSource(p, open_layer(p)))
        boot = open_layer(
            layout.check_blob(boot_desc, f"bootstrap layer of {image.digest}"), blob_dir=os.path.dirname(p)
        )
        return sources, boot
    if len(paths) > 1:
        return [_LayerSource(p, open_layer(p)) for p in paths], None
    top = open_layer(paths[0], blob_dir=blob_dir, blobs=blobs)
    if top.own_blob_index() is not None or not top.rafs.blobs:
        return [_LayerSource(paths[0], top)], None  # one layer blob (or a layer without data)
    # A merged or separate bootstrap: its blob table lists the layers, lowest first.
    sources = []
    for ent in top.rafs.blobs:
        bf = top.blob_file(ent.blob_index)
        if not bf.layer.has_bootstrap:
            if len(top.rafs.blobs) == 1:
                return [
                    _LayerSource(paths[0], top)
                ], None  # a bootstrap of one data blob: the layer is its tree
            raise UsageError(
                f"{paths[0]}: blob {ent.blob_index} ({bf.layer.path}) has no bootstrap of its own: analyze needs "
                "the layer blobs (or the image's OCI layout)"
            )
        sources.append(_LayerSource(bf.layer.path, bf.layer))
    return sources, top


DIGEST_SIZE = 32  # a chunk digest, sha256 or blake3
#: Decoded inodes a layer's walk keeps (RafsV6.cache_inodes).
WALK_INODES = 1024


class _Stored:
    """The chunks a layer's own blob stores: how many, and each chunk index's sizes in an array slot (chunk
    indexes are dense, 0 .. count-1: arrays index faster than a dict of a million keys, and hold 8 bytes a
    chunk, the two sizes being 32-bit fields wherever they are recorded, where a list holds a pointer and an
    int object). The digests and compressed sizes, a column each in record order, only where an upper layer's
    duplicate chunks are counted from them: a layer of its own has no other to share chunks with, and they
    are 36 bytes a chunk."""

    __slots__ = ("count", "usizes", "csizes", "far", "digests", "record_csizes")

    def __init__(self, size_hint: int, with_digests: bool) -> None:
        self.count = 0
        self.usizes = array("I", bytes(4 * size_hint))  # by chunk index, uncompressed and compressed size
        self.csizes = array("I", bytes(4 * size_hint))
        # Indexes far past every one before them (a hand-made or hostile table: one record of index 2**32
        # would otherwise size the arrays at 32 GiB), by index: (uncompressed, compressed) size.
        self.far: dict[int, tuple[int, int]] = {}
        # DIGEST_SIZE bytes a record, zeros where the layer records none; then its compressed size
        self.digests = bytearray() if with_digests else None
        self.record_csizes = array("I") if with_digests else None

    def add(self, digest: bytes, index: int, usize: int, csize: int) -> None:
        self.count += 1
        have = len(self.usizes)
        far = self.far
        # A later record of the same index wins, as it did when the sizes were first kept in record order.
        if (far and index in far) or (index >= have and index > 2 * max(self.count, have) + 1024):
            far[index] = (usize, csize)
        else:
            if index >= have:  # beyond the blob's chunk count, or what the arrays were sized for
                grow = bytes(4 * (index + 1 - have))
                self.usizes.frombytes(grow)
                self.csizes.frombytes(grow)
            self.usizes[index] = usize
            self.csizes[index] = csize
        if self.digests is not None:
            self.digests += digest if len(digest) == DIGEST_SIZE else bytes(DIGEST_SIZE)
            self.record_csizes.append(csize)

    def __len__(self) -> int:
        return self.count

    def drop_sizes(self) -> None:
        """Let go of the per-index sizes once the layer's files are summed up from them."""
        self.usizes, self.csizes, self.far = array("I"), array("I"), {}

    def digested(self) -> Iterator[tuple[bytes, int]]:
        """(digest, compressed size) of each chunk whose digest the layer records."""
        if self.digests is None:
            return
        none = bytes(DIGEST_SIZE)
        for k, csize in enumerate(self.record_csizes):
            digest = bytes(self.digests[k * DIGEST_SIZE : (k + 1) * DIGEST_SIZE])
            if digest != none:
                yield digest, csize


def _own_chunks(layer, with_digests: bool) -> _Stored:
    """The chunks the layer's own blob stores (their digests too if ``with_digests``)."""
    r = layer.rafs
    own = layer.own_blob_index()
    if own is None:
        own = 0 if len(r.blobs) == 1 else None
    if own is None:
        return _Stored(0, with_digests)
    # Sized for the blob's chunks up front, but never beyond the records the bootstrap can hold: a blob
    # table or a superblock may lie.
    records = min(r.chunk_table_records, r.size // CHUNK_TABLE_ENTRY.size)
    out = _Stored(min(r.blobs[own].chunk_count, records), with_digests)
    for e in r.chunk_table_entries():
        if e.blob_index == own:
            out.add(e.block_id, e.index, e.uncompressed_size, e.compressed_size)
    if len(out) or r.blobs[own].chunk_count == 0:
        return out
    infos, digests = layer.chunk_infos, layer.chunk_digests  # no chunk table: the blob's own records
    if infos is None:
        return out
    for ci in infos:
        digest = digests[ci.index] if digests and ci.index < len(digests) else b""
        out.add(digest, ci.index, ci.uncompressed_size, ci.compressed_size)
    return out


class _Covered:
    """The regular files a prefetch table of nids ``wanted`` names (a directory names everything below it),
    gathered in ``paths`` as a pre-order walk shows its nodes to :meth:`visit`."""

    __slots__ = ("wanted", "under", "paths")

    def __init__(self, wanted: set[int]) -> None:
        self.wanted = wanted
        self.under: list[bytes] = []  # directories the table names, on the walk's current path
        self.paths: set[bytes] = set()

    def visit(self, node) -> None:
        under, wanted = self.under, self.wanted
        while under and not node.path.startswith(under[-1]):
            under.pop()
        if node.type == DIR and node.nid in wanted:
            under.append(node.path.rstrip(b"/") + b"/")
        elif node.type == REG and (under or node.nid in wanted):
            self.paths.add(node.path)


def _prefetch_covered(rafs) -> set[bytes]:
    """Paths of the regular files the prefetch table names."""
    covered = _Covered(set(rafs.prefetch_paths()))
    if covered.wanted:
        for node in rafs.walk():
            covered.visit(node)
    return covered.paths


def analyze(
    paths: list[str],
    *,
    blob_dir: str | None = None,
    blobs: list[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Analysis:
    """Analyze the image made of ``paths`` (see the module docstring for what they can be)."""
    if not paths:
        raise UsageError("analyze needs an image: an OCI layout, layer blobs, or a merged bootstrap")
    sources, image_boot = _open_sources(list(paths), blob_dir, blobs)
    a = Analysis(source=paths[0] if len(paths) == 1 else ", ".join(paths))
    try:
        _analyze(a, sources, image_boot, progress)
    finally:
        for s in sources:
            s.layer.close()
        if image_boot is not None:
            image_boot.close()
    return a


class _Packed:
    """Byte strings end to end in one bytearray, with where each ends: a bytes object and its list slot cost
    about 50 bytes beside what they hold, which for short paths is most of what a layer's entries keep."""

    __slots__ = ("data", "ends")

    def __init__(self) -> None:
        self.data = bytearray()
        self.ends = array("Q")

    def append(self, item: bytes) -> None:
        self.data += item
        self.ends.append(len(self.data))

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, k: int) -> bytes:
        ends = self.ends
        return bytes(self.data[ends[k - 1] if k else 0 : ends[k]])

    def __iter__(self) -> Iterator[bytes]:
        data, start = self.data, 0
        for end in self.ends:
            yield bytes(data[start:end])
            start = end


class _Nodes:
    """A layer's entries in walk order, a column per field: a tuple per entry cost ~250 bytes at a million
    entries, the columns ~40 (the path's bytes, where it ends, a byte of type and 24 bytes of numbers)."""

    __slots__ = ("paths", "codes", "type_names", "sizes", "usizes", "csizes", "links", "whiteouts")

    def __init__(self) -> None:
        self.paths = _Packed()
        self.codes = array("B")  # the type of each entry, as its index in type_names
        self.type_names: list[str] = []  # the model's type names
        self.sizes = array("Q")
        self.usizes = array("Q")  # a regular file's chunk bytes, uncompressed and compressed
        self.csizes = array("Q")
        self.links: dict[int, int] = {}  # entry -> hard-link key, for the names of files with several
        self.whiteouts: list[int] = []  # entries named .wh.*

    def append(self, path: bytes, ntype: str, size: int, link: int | None, usize: int, csize: int) -> None:
        k = len(self.paths)
        self.paths.append(path)
        try:
            self.codes.append(self.type_names.index(ntype))
        except ValueError:
            self.codes.append(len(self.type_names))
            self.type_names.append(ntype)
        self.sizes.append(size)
        self.usizes.append(usize)
        self.csizes.append(csize)
        if link is not None:
            self.links[k] = link
        if path.rpartition(b"/")[2].startswith(WHITEOUT):
            self.whiteouts.append(k)

    def __len__(self) -> int:
        return len(self.paths)

    def paths_and_types(self) -> Iterator[tuple[bytes, str]]:
        names = self.type_names
        for path, code in zip(self.paths, self.codes):
            yield path, names[code]

    def __iter__(self) -> Iterator[tuple[bytes, str, int, int | None, int, int]]:
        """(path, type, size, hard-link key or None, chunk bytes, compressed chunk bytes) of each entry."""
        links, names, codes = self.links, self.type_names, self.codes
        for k, path in enumerate(self.paths):
            yield path, names[codes[k]], self.sizes[k], links.get(k), self.usizes[k], self.csizes[k]


@dataclass
class _Read:
    """What one pass over a layer learns: its figures so far, its tree and the chunks its blob stores."""

    figures: LayerFigures
    nodes: _Nodes
    stored: _Stored
    digester: str
    covered: set  # regular files its own prefetch table names
    digest: str  # the layer file's sha256: its blob id in a merged bootstrap


def _read_layer(src: _LayerSource, own_prefetch: bool, with_digests: bool) -> _Read:
    layer = src.layer
    r = layer.rafs
    own = layer.own_blob_index()
    blob_id = layer.digest if own is not None else (r.blobs[0].id if r.blobs else "-")
    lf = LayerFigures(0, src.path, blob_id)
    stored = _own_chunks(layer, with_digests)
    usizes, csizes, far = stored.usizes, stored.csizes, stored.far
    top = len(usizes)
    lf.chunks = len(stored)
    lf.chunk_bytes = sum(usizes) + sum(u for u, _ in far.values())
    lf.chunk_compressed = sum(csizes) + sum(c for _, c in far.values())
    nodes = _Nodes()
    counted: set = set()  # hard-linked files whose bytes are counted
    covered = _Covered(set(r.prefetch_paths()) if own_prefetch else set())
    # Each inode is looked at where the walk decodes it and right after (its chunk indexes): a few
    # directories' worth of decoded inodes serves the walk as well as the model's full cache, tens of MB.
    kept = r.cache_inodes(WALK_INODES)
    try:
        for node in r.walk():
            if covered.wanted:
                covered.visit(node)
            link = None
            usize = csize = 0
            if node.type == REG:
                link = node.hardlink
                lf.files += 1
                if link is None or link not in counted:
                    if link is not None:
                        counted.add(link)
                    lf.stored_bytes += node.size
                for b, k in r.chunk_refs(node):
                    if b == own or own is None:
                        if k < top:
                            usize += usizes[k]
                            csize += csizes[k]
                        if far and k in far:
                            usize += far[k][0]
                            csize += far[k][1]
            if node.path != b"/":
                lf.entries += 1
            nodes.append(node.path, node.type, node.size, link, usize, csize)
    finally:
        r.cache_inodes(kept)
    lf.prefetch_entries = len(r.prefetch_paths())
    r.drop_caches()  # this layer is walked once: its caches would stay while the others are read
    stored.drop_sizes()
    return _Read(lf, nodes, stored, r.digester.value, covered.paths, blob_id)


def _build_order(reads: list[_Read], image_boot) -> list[int]:
    """The layers' order, lowest first, as the image's merged bootstrap shows it.

    A converted image lists its blobs in the order the merged bootstrap first uses them, not in build order.
    The bootstrap tells the order apart where it matters: a file whose chunks come from layer X while layer Y
    has the same path puts Y below X; a path that layer Y has, that is gone from the image, and that only
    layer X whites out puts Y below X. Layers with nothing to tell keep the order they were given in."""
    n = len(reads)
    if n < 2 or image_boot is None:
        return list(range(n))
    r = image_boot.rafs
    by_digest = {rd.digest: i for i, rd in enumerate(reads)}
    blob_layer = {ent.blob_index: by_digest.get(image_boot.blob_id(ent.blob_index)) for ent in r.blobs}
    final: dict[bytes, int | None] = {}
    for node in r.walk():
        origin = None
        if node.type == REG and node.size:
            idx = r.chunk_indexes(node)
            origin = blob_layer.get(idx[0].blob_index) if idx else None
        final[node.path] = origin
    holders: dict[bytes, list[int]] = {}
    whiteouts: dict[bytes, list[int]] = {}
    for i, rd in enumerate(reads):
        for path, ntype in rd.nodes.paths_and_types():
            parent, _, name = path.rpartition(b"/")
            if name.startswith(WHITEOUT):
                if name != OPAQUE:
                    whiteouts.setdefault((parent or b"") + b"/" + name[len(WHITEOUT) :], []).append(i)
            elif ntype != DIR:
                holders.setdefault(path, []).append(i)
    below: set[tuple[int, int]] = set()  # (lower, upper)
    for path, layers in holders.items():
        origin = final.get(path)
        if origin is not None and len(layers) > 1:
            below.update((y, origin) for y in layers if y != origin)
        elif path not in final and len(whiteouts.get(path, ())) == 1:
            x = whiteouts[path][0]
            below.update((y, x) for y in layers if y != x)
    # A stable topological sort: among the layers whose lower ones are placed, the earliest given first.
    order: list[int] = []
    placed: set[int] = set()
    while len(order) < n:
        ready = [i for i in range(n) if i not in placed and all(lo in placed for lo, up in below if up == i)]
        if not ready:  # contradicting evidence (a cycle): keep the given order for the rest
            ready = [i for i in range(n) if i not in placed]
            order.extend(ready)
            break
        order.append(ready[0])
        placed.add(ready[0])
    return order


def _analyze(a: Analysis, sources: list[_LayerSource], image_boot, progress) -> None:
    def read(i: int, src: _LayerSource) -> _Read:
        rd = _read_layer(src, own_prefetch=image_boot is None, with_digests=len(sources) > 1)
        if progress is not None:
            progress(i + 1, len(sources))
        return rd

    if image_boot is None or len(sources) < 2:
        # The order is the one given: each layer is applied as soon as it is read and its lists let go,
        # so that memory follows the merged tree and one layer, not every layer's entries at once.
        reads: Iterable[_Read] = (read(i, src) for i, src in enumerate(sources))
    else:
        # The image bootstrap decides the order, from every layer's entries: all are read first.
        got = [read(i, src) for i, src in enumerate(sources)]
        reads = [got[i] for i in _build_order(got, image_boot)]
        del got
    last = len(sources) - 1
    merger = _Merger(a, last)
    seen_digests: set[tuple[str, bytes]] = set()
    per_layer_prefetch: list[set[bytes]] = []
    for i, rd in enumerate(reads):
        lf = rd.figures
        lf.index = i
        a.layers.append(lf)
        if seen_digests:  # chunks a lower layer's blob stores already
            for digest, csize in rd.stored.digested():
                if (rd.digester, digest) in seen_digests:
                    lf.duplicate_chunks += 1
                    lf.duplicate_bytes += csize
        if i < last:  # the top layer's chunks are no lower layer's
            seen_digests.update((rd.digester, d) for d, _c in rd.stored.digested())
        merger.apply(i, rd.nodes)
        per_layer_prefetch.append(rd.covered)
        rd.nodes, rd.stored = _Nodes(), _Stored(0, False)  # applied: what ``reads`` keeps lets go here
    # The final image: origins, per-directory compression, prefetch coverage.
    covered = _prefetch_covered(image_boot.rafs) if image_boot is not None else None
    a.prefetch_source = "image bootstrap" if image_boot is not None else "each layer's own prefetch table"
    dirs: dict[bytes, list[int]] = {}
    links_seen: set = set()
    layers = a.layers
    for path, layer, size, inode, usize, csize in merger.final():
        a.final_entries += 1
        layers[layer].final_entries += 1
        if inode is None:
            continue
        a.final_files += 1
        if inode is not SOLE:
            if inode in links_seen:
                continue
            links_seen.add(inode)
        a.final_bytes += size
        layers[layer].final_bytes += size
        top = path.split(b"/", 2)[1] if path.count(b"/") > 1 else b""
        d = dirs.setdefault(top, [0, 0, 0])
        d[0] += size
        d[1] += usize
        d[2] += csize
        is_covered = (path in covered) if covered is not None else (path in per_layer_prefetch[layer])
        if is_covered:
            a.prefetch_bytes += size
    a._tree = merger
    a.wasted.sort(key=lambda w: (-w.size, w.path))
    for top, (fbytes, usize, csize) in sorted(dirs.items()):
        a.directories.append(
            {
                "path": "/" + fsdecode(top) if top else "/ (files at the top)",
                "file_bytes": fbytes,
                "chunk_bytes": usize,
                "chunk_compressed_bytes": csize,
                "compression_ratio": round(usize / csize, 4) if csize else 1.0,
            }
        )


__all__ = ["Analysis", "LayerFigures", "Tally", "WastedFile", "Whiteout", "analyze"]
