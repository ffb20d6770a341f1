"""What a mount serves: the opened layers, the file tree of ``rootfs/`` and the blob files of ``entries/``.

A LAYER argument is whatever :func:`nydus_inspect.layer.open_layer` opens: a nydus layer blob (inline
bootstrap), a bootstrap (raw RAFS v6, or a bootstrap layer tar) whose blobs are found with ``--blob-dir`` /
``--blob``, the OCI image layout of a nydus image, or a data-only blob (then it only serves the chunks of the
bootstraps given with it). One layer with a bootstrap is shown as it is; several are merged in memory with
OCI whiteout semantics (:func:`nydus_inspect.merge.merge_bootstrap`), lowest first.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from ..chunks.decode import ChunkCache, ChunkReader
from ..chunks.resolve import Blob
from ..errors import NydusInspectError, UsageError
from ..layer import KIND_EROFS, Layer, open_layer
from ..model import RafsV6
from ..overlay import LayerStack


@dataclass
class BlobView:
    """One file shown as ``entries/<name>/``."""

    name: str
    layer: Layer


@dataclass
class Image:
    """The tree of ``rootfs/``: a RAFS v6 bootstrap, and the blob file of each entry of its blob table."""

    rafs: RafsV6
    blob_files: list[Blob]  # index = blob index
    description: str

    #: Chunks of a file all hold chunk_size bytes (the last one less), so a file offset's chunk is a division.
    uniform_chunks = True

    def blob(self, blob_index: int) -> Blob:
        return self.blob_files[blob_index]

    def chunk_reader(self, cache: ChunkCache) -> ChunkReader:
        """The chunk service over this tree's blobs, with the mount's cache."""
        return ChunkReader(self.blob, cache)

    @property
    def chunk_size(self) -> int:
        return self.rafs.chunk_size

    @property
    def uncompressed_size(self) -> int:
        return sum(b.uncompressed_size for b in self.rafs.blobs)


class PlainErofsImage(Image):
    """A plain EROFS image's tree: its file data is in the image itself (and zeros for holes), so the blobs a
    chunk names are the ones the model resolves for the layer, not entries of a blob table."""

    def __init__(self, layer: Layer) -> None:
        super().__init__(layer.rafs, [], layer.path)
        self.layer = layer
        from ..erofs import DEVICE_BLOB

        # Files on an extra device (a --tar=i index's tar, a --blobdev file) read from the file given with
        # --blob: a missing or short one is one line now, not EIO on every read.
        for k in range(1, len(layer.rafs.esb.devices) + 1):
            layer.blob_file(DEVICE_BLOB + k)

    #: A file's chunks are its pieces and its compressed extents (nydus_inspect.erofs), of varying sizes.
    uniform_chunks = False

    def blob(self, blob_index: int) -> Blob:
        return self.layer.blob_file(blob_index)

    def chunk_reader(self, cache: ChunkCache) -> ChunkReader:
        from ..erofs import ErofsChunkReader

        return ErofsChunkReader(self.blob, cache)

    @property
    def chunk_size(self) -> int:
        from ..erofs import PIECE

        return PIECE  # what sizes the read-ahead: the largest piece of a file one chunk reference covers

    @property
    def uncompressed_size(self) -> int:
        return self.rafs.size


class StackImage(Image):
    """The tree of the layers of a containerd EROFS image overlaid (overlay.ErofsOverlay): each chunk names its
    layer in its blob index, and the chunk service of that layer decodes it."""

    uniform_chunks = False

    def __init__(self, stack: LayerStack, description: str) -> None:
        super().__init__(stack.rafs, [], description)
        self.stack = stack

    def blob(self, blob_index: int) -> Blob:
        return self.stack.blob_file(blob_index)

    def chunk_reader(self, cache: ChunkCache) -> ChunkReader:
        from ..overlay import OverlayChunkReader

        return OverlayChunkReader(self.stack.layers, cache)

    @property
    def chunk_size(self) -> int:
        from ..erofs import PIECE

        return PIECE

    @property
    def uncompressed_size(self) -> int:
        return self.rafs.size


@dataclass
class Sources:
    layers: list[Layer]
    image: Image
    views: list[BlobView] = field(default_factory=list)
    _extra: list[Layer] = field(default_factory=list)

    def close(self) -> None:
        for layer in self.layers + self._extra:
            layer.close()


def _unique(name: str, taken: set[str]) -> str:
    out, n = name, 1
    while out in taken or out in ("", ".", ".."):
        n += 1
        out = f"{name}~{n}"
    taken.add(out)
    return out


def open_sources(paths: list[str], *, blob_dir: str | None = None, blobs: list[str] | None = None) -> Sources:
    """Open every LAYER, resolve every blob the tree needs (failing now, not on first read), merge if several."""
    if not paths:
        raise UsageError("mount needs at least one layer")
    layers: list[Layer] = []
    try:
        for p in paths:
            got = open_layer(p, blob_dir=blob_dir, blobs=blobs)
            if isinstance(got, LayerStack):
                # The layers of a containerd EROFS image: shown overlaid, each under entries/.
                layers.extend(got.layers)  # closed with the others if anything below fails
                if len(paths) > 1:
                    raise UsageError(f"{p}: an image of several EROFS layers is mounted on its own")
                image = StackImage(got, got.path)
                return Sources(got.layers, image, _views(got.layers, image))
            layers.append(got)
        with_boot = [layer for layer in layers if layer.has_bootstrap]
        data_only = [layer for layer in layers if not layer.has_bootstrap]
        if not with_boot:
            raise UsageError(
                f"{paths[0]}: no bootstrap among the layers given (data-only blobs); give the bootstrap too, "
                "with these blobs in --blob-dir or as further arguments"
            )
        for layer in with_boot:
            # Data-only blobs given as layers serve the chunks of the bootstraps given with them.
            layer.extra_blobs.extend(d.path for d in data_only)
        image = _image(with_boot)
        return Sources(layers, image, _views(layers, image))
    except BaseException:
        for layer in layers:
            layer.close()
        raise


def _image(layers: list[Layer]) -> Image:
    erofs = [layer for layer in layers if layer.kind == KIND_EROFS]
    if erofs:
        if len(erofs) != len(layers):
            raise UsageError(
                f"{erofs[0].path}: a plain EROFS image is not merged with nydus layers; several EROFS images "
                "are overlaid, lowest first, as containerd's snapshotter mounts an image's layers"
            )
        if len(layers) == 1:
            return PlainErofsImage(erofs[0])
        description = f"{len(layers)} EROFS layers overlaid: " + " ".join(layer.path for layer in layers)
        return StackImage(LayerStack(layers, layers[-1].path), description)
    if len(layers) == 1:
        layer = layers[0]
        rafs = layer.rafs
        blob_files = [layer.blob_file(i) for i in range(len(rafs.blobs))]
        return Image(rafs, blob_files, layer.path)
    from ..merge import merge_bootstrap

    # The mount never writes this table: name each layer's own blob by its path, not by hashing the file.
    merged = merge_bootstrap(
        layers,
        prefetch=False,
        own_blob_id=lambda layer: hashlib.sha256(os.path.abspath(layer.path).encode()).hexdigest(),
    )
    blob_files = [src.layer.blob_file(src.index) for src in merged.sources]

    try:
        rafs = RafsV6(merged.boot, ci_source=lambda blob_index: blob_files[blob_index].records())
    except NydusInspectError as exc:  # our own bootstrap not decoding is a bug, but say where it came from
        raise UsageError(f"merging {len(layers)} layers gave an unreadable bootstrap: {exc}") from None
    return Image(
        rafs, blob_files, f"{len(layers)} layers merged: " + " ".join(layer.path for layer in layers)
    )


def _views(layers: list[Layer], image: Image) -> list[BlobView]:
    """Each layer given, then each other blob file the tree reads from, once."""
    taken: set[str] = set()
    seen: set[str] = set()
    views = []
    for layer in layers:
        seen.add(os.path.realpath(layer.path))
        views.append(BlobView(_unique(layer.name, taken), layer))
    for bf in image.blob_files:
        real = os.path.realpath(bf.layer.path)
        if real in seen:
            continue
        seen.add(real)
        views.append(BlobView(_unique(bf.layer.name, taken), bf.layer))
    return views
