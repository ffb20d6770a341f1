"""Layers stacked as overlayfs stacks them: the one rule, and a read-only tree of several EROFS layers.

:func:`stack_names` is the rule, for one directory: given what each layer of its stack holds there, top
layer first, which names survive and, for each directory among them, the stack of directories it merges.
``merge`` applies it to OCI layers (``.wh.NAME``, ``.wh..wh..opq``), :class:`ErofsOverlay` to containerd's
EROFS layers, whose whiteouts ``mkfs.erofs --aufs`` made overlayfs ones (a 0/0 character device NAME hides
NAME below it; a directory with ``trusted.overlay.opaque=y`` hides the directories below it).

:class:`ErofsOverlay` is shaped as :class:`~nydus_inspect.model.RafsV6` is (``node``, ``attrs``,
``readdir``, ``dir_entries``, ``lookup``, ``walk``, ``chunks``), so every command that reads one layer's tree
reads the stack's. It is lazy as the layers' readers are: a directory's stack is worked out when its parent
is first listed, by listing the parent's stack, and nothing is merged up front. A node's nid is global,
``nid * layers + layer``; a chunk's blob index carries its layer the same way, ``blob * layers + layer``, so
that :class:`OverlayChunkReader` hands it to the chunk service of the layer that holds its bytes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator
from functools import cached_property
from typing import TYPE_CHECKING, TypeVar

from .chunks.decode import ChunkCache, ChunkReader
from .chunks.ref import ChunkRef
from .erofs import _NotNydus
from .errors import FormatError, UsageError
from .formats import rafs_v6
from .model import _LRU, DIR, Node, RafsV6, node_type

if TYPE_CHECKING:
    from .chunks.resolve import Blob
    from .layer import Layer

#: What a name is in one layer of a directory's stack, for :func:`stack_names`.
WHITEOUT, DIRECTORY, OPAQUE_DIRECTORY, OTHER = "whiteout", "dir", "opaque-dir", "other"
#: overlayfs's own xattrs: never shown through the overlay (the kernel hides them too).
OVERLAY_XATTR_PREFIX = b"trusted.overlay."
XATTR_OPAQUE = b"trusted.overlay.opaque"

T = TypeVar("T")


def stack_names(levels: Iterable[Iterable[tuple[bytes, str, T]]]) -> dict[bytes, list[T]]:
    """The names one directory shows, given the entries ``(name, kind, payload)`` each layer of its stack holds
    there, top layer first (a stack that ends at an opaque directory lists no layer below it).

    A name is taken from the topmost layer that has it; a whiteout there hides it. Each surviving name maps to
    the payloads it stacks, top first: one for anything but a directory; for a directory, it and the
    directories of the same name below it, down to the first layer where the name is something else or a
    whiteout, or to an opaque directory (included). A whiteout acts on the layers below its own: a layer
    holding both NAME and a whiteout of NAME (an OCI layer may) shows its NAME, and nothing of NAME below.
    Kinds: WHITEOUT, DIRECTORY, OPAQUE_DIRECTORY, OTHER."""
    out: dict[bytes, list[T]] = {}
    hidden: set[bytes] = set()
    growing: set[bytes] = set()  # directories whose stack lower layers may still extend
    for entries in levels:
        whiteouts = []
        for name, kind, payload in entries:
            if kind == WHITEOUT:
                whiteouts.append(name)
            elif name in growing:
                if kind in (DIRECTORY, OPAQUE_DIRECTORY):
                    out[name].append(payload)
                if kind != DIRECTORY:
                    growing.discard(name)  # an opaque directory or a non-directory ends the stack
            elif name not in out and name not in hidden:
                out[name] = [payload]
                if kind == DIRECTORY:
                    growing.add(name)
        for name in whiteouts:
            growing.discard(name)
            if name not in out:
                hidden.add(name)
    return out


class ErofsOverlay(RafsV6):
    """The read-only overlay of EROFS images (``images``, lowest first; each an :class:`~.erofs.Erofs`).

    A merged directory has the attributes of its topmost directory, and a link count of 1 (what overlayfs
    says of a merged directory, rather than count the subdirectories of every layer). Hard links stay within
    their layer: a file's hard-link group is its global nid."""

    PLAIN_EROFS = True
    release_pages = None

    def __init__(self, images: list[RafsV6], name: str = "image", paths: list[str] | None = None) -> None:
        """``paths``: each image's file, named by the errors its bytes raise (offsets are the image's own)."""
        # Not RafsV6.__init__: there is no one buffer; every inode is read by the image that holds it.
        self.images = images
        self.paths = paths or [f"{name} layer {k + 1}" for k in range(len(images))]
        self.n = len(images)
        self.name = name
        self.size = sum(im.size for im in images)
        self.block_size = max(im.block_size for im in images)
        self.chunk_size = max(im.chunk_size for im in images)
        stack = "an image of several EROFS layers"
        self.sb = self.ext = self.meta = _NotNydus(name, "RAFS superblock", stack)
        self.digester = _NotNydus(name, "chunk digester", stack)
        self.compressor = _NotNydus(name, "chunk compressor", stack)
        self.prefixes: list[bytes] = []
        # Merged directory (global nid) -> its stack [(layer, nid)], top first; a directory not here is
        # its own layer's alone. Filled as directories are listed: each is listed before its children are.
        self._stacks: dict[int, tuple[tuple[int, int], ...]] = {}
        self._parents: dict[int, int] = {}  # directory -> its parent (for ``..``)
        self._listings: _LRU = _LRU(4096)
        top = self.n - 1
        root_stack = []
        for k in range(top, -1, -1):
            root_stack.append((k, images[k].root_nid))
            try:
                if self._opaque(k, images[k].root_nid):
                    break
            except FormatError as exc:
                raise self._located(k, exc) from None
        self._root = self.gnid(top, images[top].root_nid)
        if len(root_stack) > 1:
            self._stacks[self._root] = tuple(root_stack)
        self._parents[self._root] = self._root

    @property
    def blobs(self):
        return self.meta.blobs

    # ------------------------------------------------------------------ nids
    def gnid(self, layer: int, nid: int) -> int:
        return nid * self.n + layer

    def split(self, gnid: int) -> tuple[int, int]:
        """(layer, nid in that layer) of a global nid."""
        nid, layer = divmod(gnid, self.n)
        return layer, nid

    @property
    def root_nid(self) -> int:
        return self._root

    def stack(self, gnid: int) -> tuple[tuple[int, int], ...]:
        """The (layer, nid) of each directory merged as ``gnid``, top first."""
        got = self._stacks.get(gnid)
        return got if got is not None else (self.split(gnid),)

    # ------------------------------------------------------------------ inodes
    def _located(self, k: int, exc: FormatError) -> FormatError:
        return exc.located(self.paths[k])

    def inode(self, gnid: int) -> rafs_v6.Inode:
        k, nid = self.split(gnid)
        try:
            return self.images[k].inode(nid)
        except FormatError as exc:
            raise self._located(k, exc) from None

    def inode_offset(self, gnid: int) -> int:
        k, nid = self.split(gnid)
        return self.images[k].inode_offset(nid)

    def has_xattrs(self, gnid: int) -> bool:
        k, nid = self.split(gnid)
        try:
            return self.images[k].has_xattrs(nid)
        except FormatError as exc:
            raise self._located(k, exc) from None

    @property
    def may_have_xattrs(self) -> bool:
        return True

    def node(self, gnid: int, path: bytes) -> Node:
        k, nid = self.split(gnid)
        try:
            n = self.images[k].node(nid, path)
        except FormatError as exc:
            raise self._located(k, exc) from None
        n.nid = gnid
        if n.hardlink is not None:
            n.hardlink = gnid
        if n.xattrs and any(x.startswith(OVERLAY_XATTR_PREFIX) for x in n.xattrs):
            n.xattrs = {x: v for x, v in n.xattrs.items() if not x.startswith(OVERLAY_XATTR_PREFIX)}
        if n.type == DIR and gnid in self._stacks:
            n.nlink = 1
        return n

    def attrs(self, gnid: int) -> tuple[int, int, int, int, int, int, int, int, int]:
        k, nid = self.split(gnid)
        try:
            t = self.images[k].attrs(nid)
        except FormatError as exc:
            raise self._located(k, exc) from None
        if gnid in self._stacks:
            t = (t[0], 1, *t[2:])
        return t

    def layout_name(self, gnid: int) -> str:
        k, nid = self.split(gnid)
        return self.images[k].layout_name(nid)

    def _opaque(self, k: int, nid: int) -> bool:
        image = self.images[k]
        return image.has_xattrs(nid) and image.node(nid, b"").xattrs.get(XATTR_OPAQUE) == b"y"

    def _kind(self, k: int, d: rafs_v6.Dirent) -> str:
        if d.file_type == rafs_v6.FT_DIR:
            return OPAQUE_DIRECTORY if self._opaque(k, d.nid) else DIRECTORY
        if d.file_type == rafs_v6.FT_CHR:
            mode, _, _, rdev = self.images[k].attrs(d.nid)[:4]
            if node_type(mode) == "char" and rdev == 0:
                return WHITEOUT
        return OTHER

    # ------------------------------------------------------------------ directories
    def readdir(self, gnid: int, include_dots: bool = False) -> list[rafs_v6.Dirent]:
        """The merged directory ``gnid``: its names sorted, each naming the global nid of its topmost entry."""
        listing = self._listings.get(gnid)
        if listing is None:
            stack = self.stack(gnid)
            if node_type(self.inode(gnid).i_mode) != DIR:
                raise FormatError("erofs inode", f"nid {gnid} is not a directory", value=gnid)
            levels = (self._level(k, nid) for k, nid in stack)
            listing = []
            for name, found in sorted(stack_names(levels).items()):
                k, d = found[0]
                g = self.gnid(k, d.nid)
                if d.file_type == rafs_v6.FT_DIR:
                    self._parents[g] = gnid
                    if len(found) > 1:
                        self._stacks[g] = tuple((k2, d2.nid) for k2, d2 in found)
                listing.append(rafs_v6.Dirent(name, g, d.file_type))
            self._listings.put(gnid, listing)
        if include_dots:
            parent = self._parents.get(gnid, gnid)
            return [
                rafs_v6.Dirent(b".", gnid, rafs_v6.FT_DIR),
                rafs_v6.Dirent(b"..", parent, rafs_v6.FT_DIR),
                *listing,
            ]
        return list(listing)

    def _level(self, k: int, nid: int) -> list[tuple[bytes, str, tuple[int, rafs_v6.Dirent]]]:
        """Directory ``nid`` of layer ``k`` in the overlay rule's terms."""
        try:
            return [(d.name, self._kind(k, d), (k, d)) for d in self.images[k].readdir(nid)]
        except FormatError as exc:
            raise self._located(k, exc) from None

    def dir_entries(self, gnid: int) -> list[tuple[bytes, int]]:
        return [(d.name, d.nid) for d in self.readdir(gnid, include_dots=True)]

    # ------------------------------------------------------------------ file data
    def chunks(self, node: Node) -> list[ChunkRef]:
        """The file's chunks as its layer gives them, each blob index made global (``blob * layers + layer``)."""
        k, nid = self.split(node.nid)
        try:
            local = self.images[k].chunks(dataclasses.replace(node, nid=nid, chunks=None))
        except FormatError as exc:
            raise self._located(k, exc) from None
        out = [dataclasses.replace(c, blob_index=c.blob_index * self.n + k) for c in local]
        node.chunks = out
        return out

    def chunk_refs(self, node: Node) -> list[tuple[int, int]]:
        return [(c.blob_index, c.ci_index) for c in self.chunks(node)]

    @property
    def chunk_table_records(self) -> int:
        return 0

    def chunk_table_entries(self):
        return iter(())

    def index_chunk_table(self) -> None:
        pass

    def inode_count(self) -> int:
        return sum(im.inode_count() for im in self.images)

    def prefetch_paths(self) -> list[int]:
        return []

    def cache_inodes(self, limit: int) -> int:
        return max(im.cache_inodes(limit) for im in self.images)

    def drop_caches(self, chunk_records: bool = True) -> None:
        self._listings.clear()
        for im in self.images:
            im.drop_caches(chunk_records)


class OverlayChunkReader(ChunkReader):
    """The chunk service of a stack: each chunk decoded by the chunk service of the layer its blob index names
    (whose blobs are the image itself, zeros, compressed extents...), through this reader's one cache."""

    def __init__(self, layers: list[Layer], cache: ChunkCache | None = None) -> None:
        super().__init__(self._blob, cache)
        self.layers = layers
        self.n = len(layers)

    def _local(self, ref: ChunkRef) -> tuple[ChunkReader, ChunkRef]:
        blob, k = divmod(ref.blob_index, self.n)
        return self.layers[k].chunk_reader, dataclasses.replace(ref, blob_index=blob)

    def _blob(self, blob_index: int) -> Blob:
        blob, k = divmod(blob_index, self.n)
        return self.layers[k].blob_file(blob)

    def decode(self, ref: ChunkRef, verify: bool = True) -> bytes:
        reader, local = self._local(ref)
        return reader.decode(local, verify)

    def decode_many(self, refs: list[ChunkRef], verify: bool = True) -> list:
        if not refs:
            return []
        reader, _ = self._local(refs[0])  # one blob, so one layer
        return reader.decode_many([self._local(r)[1] for r in refs], verify)


class _OneLayerOnly(UsageError, AttributeError):
    """What a stack says of a part only one layer has."""


#: The kind of a stack of EROFS layers opened as one tree.
KIND_EROFS_STACK = "erofs-stack"


class LayerStack:
    """The layers of a containerd EROFS image (lowest first) opened as the one tree the image is: what the
    commands read of a :class:`~.layer.Layer` (``rafs``, ``chunk_reader``, ``read_file``, ``blob_file``), over
    :class:`ErofsOverlay` and :class:`OverlayChunkReader`; ``layers`` for what is done layer by layer (info,
    verify, the mount's ``entries/``)."""

    kind = KIND_EROFS_STACK
    has_bootstrap = True
    is_v5 = False
    toc = None
    blob_meta_header = None

    def __init__(self, layers: list[Layer], path: str, descriptors: list[dict] | None = None) -> None:
        self.layers = layers
        self.path = path
        self.name = os.path.basename(path.rstrip("/")) or path
        self.descriptors = descriptors or [{} for _ in layers]
        self.size = sum(layer.size for layer in layers)
        self.notes: list[str] = []
        self.documents: list[tuple[str, bytes]] = []
        self.extra_blobs: list[str] = []

    @cached_property
    def rafs(self) -> ErofsOverlay:
        # Decoded when the tree is first read, not when the stack is opened: verify, which takes the layers
        # one by one, reports a layer whose superblock does not decode as it would the layer alone.
        for i, layer in enumerate(self.layers):
            if layer.rafs.esb.devices:
                raise UsageError(
                    f"{self.path}: layer {i + 1} of {len(self.layers)} ({layer.path}) keeps its data on extra "
                    "devices; overlaid layers must hold their own data"
                )
        return ErofsOverlay(
            [layer.rafs for layer in self.layers], self.path, [layer.path for layer in self.layers]
        )

    @cached_property
    def chunk_reader(self) -> OverlayChunkReader:
        return OverlayChunkReader(self.layers)

    def blob_file(self, blob_index: int, required: bool = True) -> Blob | None:
        blob, k = divmod(blob_index, len(self.layers))
        return self.layers[k].blob_file(blob, required)

    def own_blob_index(self) -> int | None:
        return None

    def read_chunk(self, chunk: ChunkRef) -> bytes:
        return self.chunk_reader.read(chunk)

    def read_file(self, node: Node) -> Iterator[bytes]:
        chunks = node.chunks if node.chunks is not None else self.rafs.chunks(node)
        return self.chunk_reader.read_file(chunks)

    def close(self) -> None:
        for layer in self.layers:
            layer.close()

    def __getattr__(self, name: str):
        # Any other part of a layer (a ToC, entries, a blob table, the bytes of one file): the command that
        # wants it reads one layer, and says so in one line. An AttributeError too, so that a probe with
        # getattr or hasattr finds the part missing.
        if name.startswith("__"):
            raise AttributeError(name)
        raise _OneLayerOnly(
            f"{self.path}: an image of {len(self.layers)} EROFS layers is read as one tree by info, ls, cat, "
            "unpack, diff, verify and mount; this command reads one layer: give its file "
            "(blobs/sha256/<digest> of the layout)"
        )

    def __enter__(self) -> LayerStack:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_stack(
    path: str, descriptors: list[dict], open_one: Callable[[int, dict], Layer], documents=None
) -> LayerStack:
    """The stack of ``descriptors`` (lowest first), each layer opened by ``open_one(index, descriptor)``: each
    must be a plain EROFS image (a seekable layer is one once opened)."""
    from .layer import KIND_EROFS

    layers: list[Layer] = []
    try:
        for i, desc in enumerate(descriptors):
            layer = open_one(i, desc)
            layers.append(layer)
            if layer.kind != KIND_EROFS:
                raise UsageError(
                    f"{path}: layer {i + 1} of {len(descriptors)} ({desc.get('digest')}) is a {layer.kind}, "
                    "not an EROFS image"
                )
    except BaseException:
        for layer in layers:
            layer.close()
        raise
    stack = LayerStack(layers, path, descriptors)
    if documents:
        stack.documents = documents
    return stack
