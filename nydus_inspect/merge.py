"""merge: per-layer bootstraps -> one RAFS v6 bootstrap for the whole image.

The lowest layer's tree is the base, taken as it is. Each upper layer is
applied with OCI whiteout rules, one directory at a time: first ``.wh.NAME``
removes the lower NAME and ``.wh..wh..opq`` removes every lower child, then
every other upper entry replaces the lower one of the same name (two
directories merge, keeping the upper metadata). Whiteouts never reach the
result. The blob table is rebuilt in first-use order over the merged tree;
each layer's own blob is named by the layer's sha256 digest (the OCI layer
digest, as the snapshotter names it), and INLINED_FS_META is cleared.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from .builder import build_bootstrap
from .errors import FormatError, UsageError
from .formats import blob_meta, rafs_v6
from .fsutil import atomic_output
from .layer import Layer, open_layer
from .model import DIR, REG, Node, RafsV6, fsdecode
from .overlay import DIRECTORY, OPAQUE_DIRECTORY, OTHER, WHITEOUT, stack_names

WHITEOUT_PREFIX = b".wh."
OPAQUE = b".wh..wh..opq"


@dataclass
class MergeResult:
    """What ``merge`` wrote: the bootstrap and the blobs it names, in blob-table order."""

    output: str
    blobs: list[str] = field(default_factory=list)
    bootstrap_size: int = 0
    layers: int = 0

    def to_json(self) -> dict:
        return {
            "bootstrap": self.output,
            "blobs": self.blobs,
            "fs_version": "6",
            "layers": self.layers,
            "bootstrap_size": self.bootstrap_size,
        }


@dataclass
class BlobSource:
    """Where a blob of the merged table comes from: ``layer``'s blob-table entry ``index``."""

    blob_id: str
    entry: rafs_v6.BlobTableEntry
    layer: Layer | None = None
    index: int = 0


@dataclass
class MergedBootstrap:
    """A merged bootstrap in memory and its blob table."""

    boot: bytes
    blobs: list[rafs_v6.BlobTableEntry]
    sources: list[BlobSource]  # one per entry of ``blobs``, same order


def _layer_digest(layer: Layer) -> str:
    return layer.digest


class _Ent:
    """One name of a layer's tree before decoding: which layer, which inode, and for directories the names
    below. The overlay works on these; only what survives it is decoded into Nodes."""

    __slots__ = ("src", "nid", "is_dir", "kids")

    def __init__(self, src: int, nid: int, is_dir: bool, kids: dict[bytes, _Ent] | None) -> None:
        self.src = src
        self.nid = nid
        self.is_dir = is_dir
        self.kids = kids


def _skeleton(r: RafsV6, src: int, max_depth: int = 4096) -> _Ent:
    """A layer's name tree from its directory blocks alone (the dirent file types say which are directories).

    A directory inode named twice (a cycle, or a DAG whose paths would multiply) is refused. What is kept per
    directory is its depth, not its ancestors: 4,000 nested directories cost 4,000 entries, not 8 million."""
    root = _Ent(src, r.root_nid, True, {})
    seen = {r.root_nid}
    stack: list[tuple[_Ent, int]] = [(root, 0)]
    while stack:
        ent, depth = stack.pop()
        kids = ent.kids
        assert kids is not None
        for d in r.readdir(ent.nid):
            if d.file_type == rafs_v6.FT_DIR:
                if d.nid in seen:
                    raise FormatError(
                        "erofs dirent",
                        f"directory nid {d.nid} is named twice (a directory cycle?)",
                        value=fsdecode(d.name),
                    )
                if depth + 1 >= max_depth:
                    raise FormatError(
                        "erofs directory tree", f"deeper than {max_depth} levels", value=fsdecode(d.name)
                    )
                seen.add(d.nid)
                child = _Ent(src, d.nid, True, {})
                stack.append((child, depth + 1))
            else:
                child = _Ent(src, d.nid, False, None)
            kids[d.name] = child
    return root


def overlay(lower: _Ent, upper: _Ent) -> None:
    """Apply the upper layer's directory ``upper`` onto ``lower`` in place, with OCI whiteout rules: each
    directory pair by the one overlay rule (:func:`.overlay.stack_names`), the upper layer over the lower
    ones unless it is opaque.

    ``lower`` takes the upper directory's metadata (for the root too), keeping its children merged."""
    lower.src, lower.nid = upper.src, upper.nid
    todo = [(lower, upper)]
    while todo:
        low, up = todo.pop()
        kids, ukids = low.kids, up.kids
        assert kids is not None and ukids is not None
        levels = [_oci_level(ukids)] if OPAQUE in ukids else [_oci_level(ukids), _oci_level(kids)]
        merged: dict[bytes, _Ent] = {}
        for name, found in stack_names(levels).items():
            top = found[0]
            if len(found) > 1:
                # Two directories merge: the upper one's metadata, both contents (the lower's, updated).
                top = _Ent(top.src, top.nid, True, found[1].kids)
                todo.append((top, found[0]))
            merged[name] = top
        kids.clear()
        kids.update(merged)


def _oci_level(kids: dict[bytes, _Ent]):
    """One layer's directory in the overlay rule's terms: ``.wh.NAME`` a whiteout of NAME, a directory holding
    ``.wh..wh..opq`` an opaque one (the marker itself is no name)."""
    for name, ent in kids.items():
        if name == OPAQUE:
            continue
        if name[:4] == WHITEOUT_PREFIX:
            yield name[4:], WHITEOUT, ent
        elif ent.is_dir:
            yield name, OPAQUE_DIRECTORY if ent.kids and OPAQUE in ent.kids else DIRECTORY, ent
        else:
            yield name, OTHER, ent


class _Materialiser:
    """Decode the merged name tree into Nodes breadth first, names sorted (nydus's first-use walk), giving each
    blob its new table position when its first chunk is met and rewriting chunk blob indexes to match."""

    def __init__(self, layers: list[Layer], remaps: list[dict[int, int]]) -> None:
        self.rafs = [layer.rafs for layer in layers]
        self.remaps = remaps
        self.order: list[int] = []  # source indexes in first-use order
        self.new_index: dict[int, int] = {}
        # One Node per inode of a layer: keyed (layer, -nid) for every name decoded, and (layer, hardlink
        # group) so that 2022 images, which gave each name of a hard link its own inode, stay linked too.
        self.shared: dict[tuple[int, int], Node] = {}
        self.src = 0  # the layer being decoded, for error messages
        self.trail: tuple | None = None  # (name, parent's trail) of the entry being decoded, for messages

    def run(self, root_ent: _Ent) -> Node:
        root = self.rafs[root_ent.src].node(root_ent.nid, b"/")
        if root.type != DIR:
            raise FormatError("erofs inode", "the root is not a directory", value=root.type)
        root.children = {}
        # Nodes are named by their last component only (the builder needs no paths, and full paths of a deep
        # tree sum to depth squared); ``trail`` links each directory to its parent's, for messages.
        queue: deque[tuple[_Ent, Node, tuple | None]] = deque([(root_ent, root, None)])
        while queue:
            ent, node, trail = queue.popleft()
            children = node.children
            kids = ent.kids
            for name in sorted(kids):
                if name[:4] == WHITEOUT_PREFIX:
                    continue  # whiteouts never reach the image, not even those of the lowest layer
                child_ent = kids[name]
                self.src = child_ent.src
                self.trail = (name, trail)
                if child_ent.is_dir:
                    child = self.rafs[child_ent.src].node(child_ent.nid, name)
                    if child.type != DIR:
                        raise FormatError(
                            "erofs dirent",
                            "a directory dirent names an inode that is not one",
                            value=_path(self.trail),
                        )
                    child.children = {}
                    queue.append((child_ent, child, self.trail))
                else:
                    child = self.shared.get((child_ent.src, -child_ent.nid))
                    if child is None:
                        child = self._decode(child_ent, name)
                    elif child.hardlink is None:
                        # A second name of an inode that did not say it has several (an nlink of 1): the
                        # builder looks up by identity only the nodes that do.
                        child.hardlink = child_ent.nid
                children[name] = child
        return root

    def _decode(self, ent: _Ent, name: bytes) -> Node:
        r = self.rafs[ent.src]
        node = r.node(ent.nid, name)
        if node.type == DIR:
            raise FormatError(
                "erofs dirent", "a non-directory dirent names a directory inode", value=_path(self.trail)
            )
        if node.hardlink is not None:
            first = self.shared.get((ent.src, node.hardlink))
            if first is not None:
                self.shared[(ent.src, -ent.nid)] = first
                return first
            self.shared[(ent.src, node.hardlink)] = node
        self.shared[(ent.src, -ent.nid)] = node
        if node.type == REG:
            remap = self.remaps[ent.src]
            new_index = self.new_index
            # Fresh ChunkRefs, rewritten in place: kept as a list (a file of many chunks gets a LazyChunks,
            # which would decode unrewritten ones again).
            chunks = node.chunks = list(r.chunks(node))
            for c in chunks:
                src = remap[c.blob_index]
                idx = new_index.get(src)
                if idx is None:
                    idx = new_index[src] = len(self.order)
                    self.order.append(src)
                c.blob_index = idx
        return node


def _path(trail: tuple | None, limit: int = 200) -> str:
    """The path a trail of names leads to, for a message (its last ``limit`` bytes)."""
    parts: list[bytes] = []
    size = 0
    while trail is not None and size <= limit:
        parts.append(trail[0])
        size += len(trail[0]) + 1
        trail = trail[1]
    path = b"/" + b"/".join(reversed(parts))
    return fsdecode(path if trail is None else b"..." + path[-limit:])


def _check_compatible(layers: list[Layer]) -> None:
    """What nydus-image merge requires the layers to share. Compressor and digester may differ: each blob
    keeps its own in the blob table."""
    base = layers[0].rafs
    for layer in layers[1:]:
        r = layer.rafs
        for what, a, b in (
            ("chunk size", base.chunk_size, r.chunk_size),
            (
                "explicit uid/gid",
                base.ext.s_flags & rafs_v6.EXPLICIT_UID_GID,
                r.ext.s_flags & rafs_v6.EXPLICIT_UID_GID,
            ),
        ):
            if a != b:
                raise UsageError(
                    f"{layer.path}: {what} {b} differs from {layers[0].path}'s {a}; layers must agree"
                )


def merge_bootstrap(
    layers: list[Layer], *, prefetch: bool = True, own_blob_id: Callable[[Layer], str] = _layer_digest
) -> MergedBootstrap:
    """Merge opened ``layers`` (lowest first) into bootstrap bytes, in memory.

    ``own_blob_id(layer)`` names a layer's own (inline) blob in the new table: the layer file's sha256 by
    default, as the snapshotter names it; the mount passes something cheaper. ``sources`` says which layer
    and blob-table entry each blob of the result comes from.

    Only names are read to overlay the layers (directory blocks, whose dirents say which names are
    directories); the inodes and chunks of what survives are decoded afterwards, once.
    """
    if not layers:
        raise UsageError("merge needs at least one layer")
    for layer in layers:
        if not layer.has_bootstrap or layer.is_v5:
            raise UsageError(f"{layer.path}: merge needs RAFS v6 layers with a bootstrap ({layer.kind})")
        if layer.rafs.tarfs:
            # Its metadata counts 512-byte blocks and its files' blocks are the tar's: this writer makes 4K ones.
            raise UsageError(
                f"{layer.path}: a tarfs layer (nydus-image --type tar-tarfs); merge writes no tarfs "
                "bootstrap, nydus-image merge does"
            )
    _check_compatible(layers)
    sources: list[BlobSource] = []
    index: dict[str, int] = {}
    remaps: list[dict[int, int]] = []
    for layer in layers:
        own = layer.own_blob_index()
        remap: dict[int, int] = {}
        for ent in layer.rafs.blobs:
            bid = own_blob_id(layer) if ent.blob_index == own else ent.id
            if bid not in index:
                index[bid] = len(sources)
                sources.append(BlobSource(bid, ent, layer, ent.blob_index))
            remap[ent.blob_index] = index[bid]
        remaps.append(remap)
    root_ent = None
    for i, layer in enumerate(layers):
        try:
            tree = _skeleton(layer.rafs, i)
        except FormatError as exc:
            raise exc.located(layer.path) from None
        if root_ent is None:
            root_ent = tree
        else:
            overlay(root_ent, tree)
    assert root_ent is not None
    mat = _Materialiser(layers, remaps)
    try:
        root = mat.run(root_ent)
    except FormatError as exc:
        raise exc.located(layers[mat.src].path) from None
    blobs = []
    for i, s in enumerate(mat.order):
        ent = sources[s].entry
        blobs.append(
            replace(
                ent,
                blob_id=sources[s].blob_id.encode(),
                blob_index=i,
                features=ent.features & ~blob_meta.INLINED_FS_META,
            )
        )
    base, top = layers[0].rafs, layers[-1].rafs
    # Each blob keeps its own compressor and digester in the blob table; the superblock gets the last
    # layer's, as nydus-image merge writes it.
    boot = build_bootstrap(
        root,
        blobs,
        chunk_size=base.chunk_size,
        compressor=top.compressor,
        digester=top.digester,
        prefetch=prefetch,
        force_has_xattr=True,
        explicit_uid_gid=bool(base.ext.s_flags & rafs_v6.EXPLICIT_UID_GID),
    )
    return MergedBootstrap(boot, blobs, [sources[s] for s in mat.order])


def merge(
    paths: list[str],
    output: str,
    *,
    with_tar: bool = False,
    blob_dir: str | None = None,
    prefetch: bool = True,
) -> MergeResult:
    """Merge the layers at ``paths`` (lowest first) into the bootstrap ``output``."""
    if not paths:
        raise UsageError("merge needs at least one layer")
    layers: list[Layer] = []
    try:
        for p in paths:
            layers.append(open_layer(p, blob_dir=blob_dir))
        merged = merge_bootstrap(layers, prefetch=prefetch)
    finally:
        for layer in layers:
            layer.close()
    boot, blobs = merged.boot, merged.blobs
    with atomic_output(output) as f:
        f.write(bootstrap_layer(boot, gz=output.endswith((".gz", ".tgz"))) if with_tar else boot)
    return MergeResult(output, [b.blob_id.decode() for b in blobs], len(boot), len(paths))


def bootstrap_layer(boot: bytes, gz: bool = False) -> bytes:
    """The bootstrap layer form: a tar holding ``image/`` and ``image/image.boot`` (gzip when asked)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        d = tarfile.TarInfo("image")
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        tf.addfile(d)
        f = tarfile.TarInfo("image/image.boot")
        f.mode, f.size = 0o444, len(boot)
        tf.addfile(f, io.BytesIO(boot))
        end = tf.offset
    # The two end-of-archive blocks and no record padding, as Go's archive/tar writes it: nydusify check
    # hashes only what a tar reader consumes, and compares that with the config's diff_id.
    data = buf.getvalue()[: end + 2 * tarfile.BLOCKSIZE]
    return gzip.compress(data, mtime=0) if gz else data


__all__ = [
    "BlobSource",
    "MergeResult",
    "MergedBootstrap",
    "bootstrap_layer",
    "merge",
    "merge_bootstrap",
    "overlay",
]
