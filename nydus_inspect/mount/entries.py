"""The virtual part of a mount: its root, and ``entries/`` with one directory per blob file.

``entries/<name>/`` holds one file per ToC entry of that file (``image.boot``, ``blob.meta``,
``blob.meta.header``, ``blob.digest``, ``image.blob``, ``rafs.blob.toc``: the bytes ``nydus-inspect entry``
prints), ``raw/`` with the same names holding the stored (compressed) bytes (``entry --raw``), and JSON
sidecars: ``toc.json`` (``toc --json``), ``blob.meta.header.json``, ``chunks.json`` (``chunks --json``) and
``superblock.json`` (the ``bootstrap`` part of ``info --json``). Every entry file carries ``user.nydus.*``
xattrs: ``sha256`` of its content, ``compressor``, ``compressed_offset``, ``compressed_size``,
``uncompressed_size`` and, when the ToC records one, ``toc_sha256``.

Content that grows with the layer (an entry that decompresses to more than SPILL_LIMIT, chunks.json) is made
a piece at a time into an unlinked temporary file and read from there (:class:`Streamed`), so that listing or
reading entries/ of a big layer holds none of it in memory. Such content whose size is not known before it is
made (chunks.json) is made by the first read only, never to answer a stat: listing entries/ of a big layer
(``find``, ``ls -lR``) would otherwise make every chunks.json in it. Until then the file shows size 0, as
procfs and sysfs files do, and is read with direct I/O (the kernel reads it to a short read, not to its
size); once made it shows its size.

No FUSE here: nodes, content makers and xattr values only. Makers are blocking and thread-safe; the file
system runs them in worker threads.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator

from ..codecs import Compressor
from ..errors import FormatError
from ..formats.tar_header import IMAGE_BLOB
from ..layer import KIND_EROFS, Layer, _zstd_frame_size
from ..model import NAME_MAX
from .sources import BlobView

#: Virtual inode numbers start here; image inodes are RAFS nids, far below (a bootstrap is at most 1 GiB).
VIRTUAL_BASE = 1 << 56
ROOT_INODE = 1
#: Entries at most this large (decompressed) are produced whole and checked against the ToC's sha256 when
#: read; larger uncompressed ones (image.blob) are served by range straight from the file.
WHOLE_LIMIT = 64 << 20
#: Made content larger than this (decompressed) is written into a temporary file as it is made and read from
#: there: a bootstrap or chunks.json grows with the layer, and the mount's memory must not.
SPILL_LIMIT = 4 << 20
#: An xattr value computed by the file system from the file's content.
SHA256_OF_CONTENT = object()

XATTR_PREFIX = b"user.nydus."
PID_XATTR = b"user.nydus.mount.pid"
LOG_XATTR = b"user.nydus.mount.log"


class Generated:
    """Content produced whole by ``make()`` (blocking); ``size`` may be unknown until it runs."""

    #: Made whole in memory, a few KiB (a ToC, a superblock, a header): a stat may make it to learn its size.
    #: Ranged content (Stored, Streamed) is never made for a stat (see the module's docstring).
    ranged = False

    def __init__(self, make: Callable[[], bytes], size: int | None = None, what: str = "") -> None:
        self.make = make
        self.size = size
        self.what = what


class Stored:
    """A byte range of a file, read with pread (nothing held in memory)."""

    ranged = True

    def __init__(self, layer: Layer, offset: int, size: int, what: str = "") -> None:
        self.layer = layer
        self.offset = offset
        self.size = size
        self.what = what

    def read(self, off: int, n: int) -> bytes:
        n = max(0, min(n, self.size - off))
        return self.layer.pread(self.offset + off, n, self.what) if n else b""

    def sha256(self) -> str:
        h = hashlib.sha256()
        for pos in range(0, self.size, 4 << 20):
            h.update(self.read(pos, 4 << 20))
        return h.hexdigest()


class Streamed:
    """Content made a piece at a time by ``pieces()`` (blocking), into an unlinked temporary file when it is
    first read or its sha256 asked for (never for a stat), then read from that file with pread: for content
    that grows with the layer (the bootstrap, chunks.json). Made once, whatever the number of threads asking;
    thread-safe."""

    ranged = True

    def __init__(
        self, pieces: Callable[[], Iterable[bytes]], size: int | None = None, what: str = ""
    ) -> None:
        self.pieces = pieces
        self.size = size
        self.what = what
        self._file = None
        self._lock = threading.Lock()

    def prepare(self) -> None:
        """Make the content now, if it is not made yet (then ``size`` is known)."""
        with self._lock:
            if self._file is not None:
                return
            f = tempfile.TemporaryFile(prefix="nydus-inspect-entry-")
            try:
                for piece in self.pieces():
                    f.write(piece)
                f.flush()
                size = f.tell()
                if self.size is not None and size != self.size:
                    raise FormatError(self.what or "entry", f"produced {size} bytes, expected {self.size}")
            except BaseException:
                f.close()
                raise
            self.size = size
            self._file = f

    def read(self, off: int, n: int) -> bytes:
        self.prepare()
        n = max(0, min(n, self.size - off))
        return os.pread(self._file.fileno(), n, off) if n else b""

    def sha256(self) -> str:
        self.prepare()
        h = hashlib.sha256()
        for pos in range(0, self.size, 4 << 20):
            h.update(self.read(pos, 4 << 20))
        return h.hexdigest()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class VNode:
    """A virtual directory (``children``: name -> inode) or file (``content``)."""

    __slots__ = ("ino", "name", "path", "parent", "children", "content", "xattrs", "mtime_ns")

    def __init__(
        self, ino: int, name: bytes, path: str, parent: int, *, content=None, mtime_ns: int = 0
    ) -> None:
        self.ino = ino
        self.name = name
        self.path = path  # for log lines, relative to the mount point
        self.parent = parent
        self.children: dict[bytes, int] | None = None if content is not None else {}
        self.content = content
        self.xattrs: dict[bytes, object] = {}
        self.mtime_ns = mtime_ns

    @property
    def is_dir(self) -> bool:
        return self.children is not None

    @property
    def mode(self) -> int:
        return stat.S_IFDIR | 0o555 if self.is_dir else stat.S_IFREG | 0o444


def json_bytes(obj: object) -> bytes:
    """Pretty JSON as the CLI prints it (names that are not UTF-8 fall back to \\u escapes)."""
    text = json.dumps(obj, indent=2, ensure_ascii=False)
    try:
        return (text + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(obj, indent=2, ensure_ascii=True) + "\n").encode("ascii")


def chunks_json(layer: Layer) -> Iterator[bytes]:
    """``nydus-inspect chunks --json``, byte for byte, a few thousand chunks at a time."""
    from ..query import chunks_report

    it = chunks_report(layer)
    head = next(it)
    parts = [f'{{"source": {json.dumps(head["source"])}, "header": {json.dumps(head["header"])}, "chunks": [']
    first = True
    for item in it:
        parts.append("\n  " if first else ",\n  ")
        parts.append(json.dumps(item, ensure_ascii=False))
        first = False
        if len(parts) >= 8192:
            yield "".join(parts).encode("utf-8", "surrogateescape")
            parts = []
    parts.append("\n]\n" if not first else "]\n")
    parts.append("}\n")
    yield "".join(parts).encode("utf-8", "surrogateescape")


def _sidecars(layer: Layer) -> Iterator[tuple[str, Generated | Streamed]]:
    from ..query import bootstrap_info, bootstrap_v5_info, toc_report

    if layer.kind == KIND_EROFS:
        # A plain EROFS image has no ToC, blob.meta or chunk table: its superblock is what there is to show.
        from ..erofs import info as erofs_info

        yield "superblock.json", Generated(lambda: json_bytes(erofs_info(layer.rafs)))
        return
    if layer.toc is not None or layer.sections:
        yield "toc.json", Generated(lambda: json_bytes(toc_report(layer)))
    if layer.has_entry("blob.meta.header"):
        yield "blob.meta.header.json", Generated(lambda: json_bytes(layer.blob_meta_header.to_json()))
    if layer.has_entry("blob.meta") or (layer.has_bootstrap and not layer.is_v5):
        yield "chunks.json", Streamed(lambda: chunks_json(layer))  # a line per chunk
    if layer.has_bootstrap:
        # Which version is decided when the file is read: the bootstrap of a remote blob is fetched only then.
        yield (
            "superblock.json",
            Generated(
                lambda: json_bytes(bootstrap_v5_info(layer.rafs_v5) if layer.is_v5 else bootstrap_info(layer))
            ),
        )


def _entry_maker(layer: Layer, name: str) -> Callable[[], bytes]:
    def make() -> bytes:
        return layer.entry(name, verify=True)

    return make


class Tree:
    """The virtual nodes of one mount, by inode number."""

    def close(self) -> None:
        """Drop the temporary files of made content."""
        for node in self.nodes.values():
            if isinstance(node.content, Streamed):
                node.content.close()

    def __init__(self, views: list[BlobView], rootfs_ino: int, *, mtime_ns: int = 0) -> None:
        self.nodes: dict[int, VNode] = {}
        self._next = VIRTUAL_BASE
        root = VNode(ROOT_INODE, b"", "", ROOT_INODE, mtime_ns=mtime_ns)
        self.nodes[ROOT_INODE] = root
        self.root = root
        entries = self._add(root, b"entries", mtime_ns=mtime_ns)
        root.children[b"rootfs"] = rootfs_ino
        for view in views:
            self._add_view(entries, view)
        for view in views:
            self._add_documents(entries, view.layer)
        self._add_fetch_counts(root, views)

    def _add(self, parent: VNode, name: bytes, *, content=None, mtime_ns: int = 0) -> VNode:
        name = self._fit(parent, name)
        ino = self._next
        self._next += 1
        path = f"{parent.path}/{os.fsdecode(name)}" if parent.path else os.fsdecode(name)
        node = VNode(ino, name, path, parent.ino, content=content, mtime_ns=mtime_ns)
        self.nodes[ino] = node
        assert parent.children is not None
        parent.children[name] = ino
        return node

    @staticmethod
    def _fit(parent: VNode, name: bytes) -> bytes:
        """``name`` as a file name the kernel can carry and look up, and unique in ``parent``: a ToC names its
        entries with any 16 bytes (none, a slash, a NUL, dots, or the name of a sidecar). Such a name is shown
        %-escaped, a second one of a name with ~2 after it."""
        if name in (b"", b".", b"..") or b"/" in name or b"\0" in name or len(name) > NAME_MAX:
            name = name.replace(b"%", b"%25").replace(b"/", b"%2F").replace(b"\0", b"%00")[: NAME_MAX - 8]
            name = name.replace(b".", b"%2E") if name in (b".", b"..") else name or b"%"
        assert parent.children is not None
        out, n = name, 1
        while out in parent.children:
            n += 1
            out = name + b"~%d" % n
        return out

    def _add_view(self, entries: VNode, view: BlobView) -> None:
        layer = view.layer
        try:
            mtime_ns = os.stat(layer.path).st_mtime_ns
        except OSError:
            mtime_ns = 0
        top = self._add(entries, os.fsencode(view.name), mtime_ns=mtime_ns)
        names = layer.entry_names() if (layer.toc is not None or layer.sections) else []
        raw = self._add(top, b"raw", mtime_ns=mtime_ns) if names else None
        for name in names:
            off, size, comp, usize, digest = layer.entry_location(name)
            if usize < 0:  # a zstd bootstrap without a ToC: its frame says how large it is
                usize = _zstd_frame_size(layer.pread(off, min(size, 18), name), name, off)
            what = f"{layer.path}: {name}"
            if comp is Compressor.NONE and (name == IMAGE_BLOB or usize > WHOLE_LIMIT):
                content = Stored(layer, off, size, what)
            elif usize > SPILL_LIMIT:
                content = Streamed(functools.partial(layer.iter_entry, name, decode_zstd=True), usize, what)
            else:
                content = Generated(_entry_maker(layer, name), usize, what)
            node = self._add(top, name.encode(), content=content, mtime_ns=mtime_ns)
            node.xattrs = self._location_xattrs(comp, off, size, usize)
            # The ToC's sha256 of image.blob also covers its tar header, so it is not the content's.
            if digest is not None and name != IMAGE_BLOB and not isinstance(content, Stored):
                node.xattrs[b"user.nydus.sha256"] = digest.hex().encode()
            else:
                node.xattrs[b"user.nydus.sha256"] = SHA256_OF_CONTENT
            if digest is not None:
                node.xattrs[b"user.nydus.toc_sha256"] = digest.hex().encode()
            rnode = self._add(
                raw, name.encode(), content=Stored(layer, off, size, what + " (stored)"), mtime_ns=mtime_ns
            )
            rnode.xattrs = self._location_xattrs(comp, off, size, None)
            rnode.xattrs[b"user.nydus.sha256"] = SHA256_OF_CONTENT
        for name, content in _sidecars(layer):
            content.what = f"{layer.path}: {name}"
            node = self._add(top, name.encode(), content=content, mtime_ns=mtime_ns)
            node.xattrs = {b"user.nydus.sha256": SHA256_OF_CONTENT}

    def _add_documents(self, entries: VNode, layer: Layer) -> None:
        """The registry's index, manifest and config of an image opened from a reference, beside the blobs."""
        for name, raw in layer.documents:
            base, n = name, 1
            while name.encode() in entries.children:
                n += 1
                stem, dot, ext = base.rpartition(".")
                name = f"{stem}~{n}{dot}{ext}"
            node = self._add(
                entries,
                name.encode(),
                content=Generated(lambda raw=raw: raw, len(raw), f"entries/{name}"),
                mtime_ns=entries.mtime_ns,
            )
            node.xattrs = {b"user.nydus.sha256": hashlib.sha256(raw).hexdigest().encode()}

    def _add_fetch_counts(self, root: VNode, views: list[BlobView]) -> None:
        """How much of each lazily read blob was fetched (on its directory), and of all of them (on the root),
        read when asked: ``user.nydus.fetched`` of ``user.nydus.size`` bytes."""
        remote = [v for v in views if getattr(v.layer.source, "fetched", None) is not None]
        if not remote:
            return
        for view in remote:
            top = self.nodes[self.nodes[root.children[b"entries"]].children[os.fsencode(view.name)]]
            src = view.layer.source
            top.xattrs = _Live(top.xattrs)
            top.xattrs[b"user.nydus.fetched"] = lambda src=src: str(src.fetched).encode()
            top.xattrs[b"user.nydus.size"] = str(src.size).encode()
        sources = [v.layer.source for v in remote]
        root.xattrs = _Live(root.xattrs)
        root.xattrs[b"user.nydus.fetched"] = lambda: str(sum(s.fetched for s in sources)).encode()
        root.xattrs[b"user.nydus.size"] = str(sum(s.size for s in sources)).encode()

    @staticmethod
    def _location_xattrs(comp: Compressor, off: int, size: int, usize: int | None) -> dict[bytes, object]:
        out: dict[bytes, object] = {
            b"user.nydus.compressor": comp.value.encode(),
            b"user.nydus.compressed_offset": str(off).encode(),
            b"user.nydus.compressed_size": str(size).encode(),
        }
        if usize is not None:
            out[b"user.nydus.uncompressed_size"] = str(usize).encode()
        return out


class _Live(dict):
    """Xattr values of a virtual node where a value may be a function, called each time it is read (counts
    that change while the mount serves)."""

    def get(self, name, default=None):
        value = super().get(name, default)
        return value() if callable(value) else value


def check_generated(data: bytes, content: Generated) -> bytes:
    if content.size is not None and len(data) != content.size:
        raise FormatError(content.what or "entry", f"produced {len(data)} bytes, expected {content.size}")
    return data
