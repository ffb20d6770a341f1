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
from dataclasses import dataclass, field, replace

from .builder import build_bootstrap
from .errors import UsageError
from .formats import blob_meta, rafs_v6
from .fsutil import atomic_output
from .layer import Layer, open_layer
from .model import DIR, REG, Chunk, Node, RafsV6

WHITEOUT_PREFIX = b".wh."
OPAQUE = b".wh..wh..opq"


@dataclass
class MergeResult:
    output: str
    blobs: list[str] = field(default_factory=list)
    bootstrap_size: int = 0
    layers: int = 0

    def to_json(self) -> dict:
        return {"bootstrap": self.output, "blobs": self.blobs, "fs_version": "6", "layers": self.layers,
                "bootstrap_size": self.bootstrap_size}


@dataclass
class _Source:
    blob_id: str
    entry: rafs_v6.BlobTableEntry


def layer_tree(layer: Layer, sources: list[_Source], index: dict[str, int]) -> Node:
    """A mutable copy of the layer's tree; chunk blob indexes point into ``sources``."""
    r: RafsV6 = layer.rafs
    own = layer.own_blob_index()
    remap: dict[int, int] = {}
    for ent in r.blobs:
        bid = layer.digest if ent.blob_index == own else ent.id
        if bid not in index:
            index[bid] = len(sources)
            sources.append(_Source(bid, ent))
        remap[ent.blob_index] = index[bid]
    dirs: dict[bytes, Node] = {}
    links: dict[int, Node] = {}
    root = None
    for node in r.walk():
        if node.path == b"/":
            node.children = {}
            root = dirs[b"/"] = node
            continue
        parent_path, name = node.path.rsplit(b"/", 1)
        parent = dirs[parent_path or b"/"]
        if node.hardlink is not None and node.hardlink in links:
            parent.children[name] = links[node.hardlink]
            continue
        if node.type == DIR:
            node.children = {}
            dirs[node.path] = node
        elif node.type == REG:
            node.chunks = [replace(c, blob_index=remap[c.blob_index]) for c in r.chunks(node)]
            if node.hardlink is not None:
                links[node.hardlink] = node
        parent.children[name] = node
    assert root is not None
    return root


def _strip_whiteouts(node: Node) -> Node:
    if node.type == DIR and node.children:
        node.children = {
            name: _strip_whiteouts(child) for name, child in node.children.items() if not name.startswith(WHITEOUT_PREFIX)
        }
    return node


def overlay(lower: Node, upper: Node) -> None:
    """Apply the upper directory ``upper`` onto ``lower`` in place (OCI whiteout rules)."""
    kids = lower.children
    assert kids is not None and upper.children is not None
    # Pass 1: whiteouts act on what the lower layers put here.
    if OPAQUE in upper.children:
        kids.clear()
    for name in upper.children:
        if name.startswith(WHITEOUT_PREFIX) and name != OPAQUE:
            kids.pop(name[len(WHITEOUT_PREFIX) :], None)
    # Pass 2: everything else replaces or merges.
    for name, un in upper.children.items():
        if name.startswith(WHITEOUT_PREFIX):
            continue
        ln = kids.get(name)
        if ln is not None and ln.type == DIR and un.type == DIR:
            merged = replace(un, children=ln.children)
            kids[name] = merged
            overlay(merged, un)
        else:
            kids[name] = _strip_whiteouts(un)


def merge_trees(trees: list[Node]) -> Node:
    # OCI semantics: whiteouts never appear in an image, not even in its lowest layer (nydus keeps those).
    root = _strip_whiteouts(trees[0])
    for upper in trees[1:]:
        overlay(root, upper)
    return root


def _first_use_order(root: Node, nsources: int) -> list[int]:
    order: list[int] = []
    seen: set[int] = set()
    queue = deque([root])
    visited: set[int] = set()
    while queue:
        node = queue.popleft()
        for name in sorted(node.children or {}):
            child = node.children[name]
            if id(child) in visited:
                continue
            visited.add(id(child))
            if child.type == DIR:
                queue.append(child)
            for c in child.chunks or ():
                if c.blob_index not in seen:
                    seen.add(c.blob_index)
                    order.append(c.blob_index)
    return order


def _check_compatible(layers: list[Layer]) -> None:
    base = layers[0].rafs
    for layer in layers[1:]:
        r = layer.rafs
        for what, a, b in (
            ("chunk size", base.chunk_size, r.chunk_size),
            ("compressor", base.compressor, r.compressor),
            ("digester", base.digester, r.digester),
            ("explicit uid/gid", base.ext.s_flags & rafs_v6.EXPLICIT_UID_GID, r.ext.s_flags & rafs_v6.EXPLICIT_UID_GID),
        ):
            if a != b:
                raise UsageError(f"{layer.path}: {what} {b} differs from {layers[0].path}'s {a}; layers must agree")


def merge(paths: list[str], output: str, *, with_tar: bool = False, blob_dir: str | None = None,
          prefetch: bool = True) -> MergeResult:
    """Merge the layers at ``paths`` (lowest first) into the bootstrap ``output``."""
    if not paths:
        raise UsageError("merge needs at least one layer")
    layers = [open_layer(p, blob_dir=blob_dir) for p in paths]
    try:
        for layer in layers:
            if not layer.has_bootstrap or layer.is_v5:
                raise UsageError(f"{layer.path}: merge needs RAFS v6 layers with a bootstrap ({layer.kind})")
        _check_compatible(layers)
        sources: list[_Source] = []
        index: dict[str, int] = {}
        trees = [layer_tree(layer, sources, index) for layer in layers]
        root = merge_trees(trees)
        order = _first_use_order(root, len(sources))
        new_index = {src: i for i, src in enumerate(order)}
        blobs = []
        for i, src in enumerate(order):
            ent = sources[src].entry
            blobs.append(replace(ent, blob_id=sources[src].blob_id.encode(), blob_index=i,
                                 features=ent.features & ~blob_meta.INLINED_FS_META))
        done: set[int] = set()
        for node in _all_nodes(root):
            if node.type == REG and id(node) not in done:
                done.add(id(node))
                node.chunks = [_remap(c, new_index) for c in node.chunks or ()]
        base = layers[0].rafs
        boot = build_bootstrap(root, blobs, chunk_size=base.chunk_size, compressor=base.compressor,
                               digester=base.digester, prefetch=prefetch, force_has_xattr=True,
                               explicit_uid_gid=bool(base.ext.s_flags & rafs_v6.EXPLICIT_UID_GID))
    finally:
        for layer in layers:
            layer.close()
    with atomic_output(output) as f:
        f.write(bootstrap_layer(boot, gz=output.endswith((".gz", ".tgz"))) if with_tar else boot)
    return MergeResult(output, [b.blob_id.decode() for b in blobs], len(boot), len(paths))


def _remap(c: Chunk, new_index: dict[int, int]) -> Chunk:
    return replace(c, blob_index=new_index[c.blob_index])


def _all_nodes(root: Node):
    stack = [root]
    while stack:
        node = stack.pop()
        yield node
        if node.type == DIR:
            stack.extend((node.children or {}).values())


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
    data = buf.getvalue()
    return gzip.compress(data, mtime=0) if gz else data


__all__ = ["MergeResult", "bootstrap_layer", "merge", "overlay"]
