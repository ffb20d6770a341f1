"""diff: compare two file trees (a layer tar, a nydus layer, or a bootstrap with its blobs) entry by entry."""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field

from .errors import FormatError, UsageError
from .filedata import iter_file_data
from .layer import KIND_BOOTSTRAP_LAYER, KIND_EROFS, Layer, open_layer
from .model import BLK, CHR, REG, fsdecode
from .tarstream import LINK_HEADER, hardlink_rule, open_tar_input, read_tar, storable_xattr

#: Decoded inodes a layer's walk keeps (RafsV6.cache_inodes), as verify's walk keeps them.
WALK_INODES = 8192

FIELDS = ("type", "mode", "uid", "gid", "mtime", "size", "target", "rdev", "xattrs", "sha256", "hardlinks")


@dataclass(slots=True)  # slots: a tree holds one per entry
class Entry:
    type: str
    mode: int
    uid: int
    gid: int
    mtime: int
    size: int
    target: bytes | None = None
    rdev: int = 0
    xattrs: dict[bytes, bytes] = field(default_factory=dict)
    sha256: str | None = None
    hardlinks: tuple[bytes, ...] = ()  # every name of this inode, when it has more than one


@dataclass
class Difference:
    path: bytes
    field: str
    expected: object
    found: object

    def to_json(self) -> dict:
        return {
            "path": fsdecode(self.path),
            "field": self.field,
            "expected": self._show(self.expected),
            "found": self._show(self.found),
        }

    def __str__(self) -> str:
        return f"{fsdecode(self.path)}: {self.field}: expected {self._show(self.expected)}, found {self._show(self.found)}"

    def _show(self, v: object) -> object:
        # Permission bits are read in octal by everyone (ls, chmod, tar tv); a decimal 493 means nothing.
        if self.field == "mode" and isinstance(v, int):
            return f"{v:04o}"
        return _show(v)


def _show(v: object) -> object:
    if isinstance(v, bytes):
        return fsdecode(v)
    if isinstance(v, tuple):
        return [_show(x) for x in v]
    if isinstance(v, dict):
        return {fsdecode(k): _show(x) for k, x in sorted(v.items())}
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    return v


@dataclass
class Tree:
    entries: dict[bytes, Entry]
    explicit_root: bool = True
    #: The hard-link rule (tarstream) a tar was read with, or the one a layer's format follows.
    hardlinks: str = LINK_HEADER
    #: Read from a layer tar (whose tree depends on the rule it is read with), not from a layer.
    tar: bool = False

    def items(self) -> Iterator[tuple[bytes, Entry]]:
        """(path, entry) in path order, as :func:`compare` takes them from every side."""
        return iter(sorted(self.entries.items()))


class _Names:
    """The names of one hard-linked inode of a layer, complete once its walk has ended (a name's entry is
    compared before the later names are met)."""

    __slots__ = ("names", "_links")

    def __init__(self) -> None:
        self.names: list[bytes] = []
        self._links: tuple[bytes, ...] | None = None

    def links(self) -> tuple[bytes, ...]:
        """The sorted names, made once (every name of the group asks, once the walk has ended)."""
        if self._links is None:
            self._links = tuple(sorted(self.names)) if len(self.names) > 1 else ()
        return self._links


class TarEntries:
    """A layer tar's tree, its entries made as :func:`compare` takes them (the tree is held: a tar's order is
    not its paths' order); :meth:`tree` keeps them all."""

    explicit_root: bool
    tar = True

    def __init__(self, path: str, hardlinks: str = LINK_HEADER) -> None:
        # Each file's sha256, 32 bytes in a column by its number among the tar's files: a bytes object per
        # file kept on the tree would cost several times the digest.
        digests = bytearray()

        def on_file(node, fobj, _ref=None) -> None:
            h = hashlib.sha256()
            remaining = node.size
            while remaining:
                data = fobj.read(min(remaining, 1 << 20))
                if not data:
                    raise FormatError("tar", f"{fsdecode(node.path)}: data ends early")
                h.update(data)
                remaining -= len(data)
            digests.extend(h.digest())

        def file_view(fileno: int, node) -> None:
            node.data = bytes(digests[32 * fileno : 32 * fileno + 32])

        with open_tar_input(path) as stream:
            self._tt = read_tar(stream, on_file, path, hardlinks=hardlinks)
        self._tt.file_view = file_view
        self.explicit_root = self._tt.explicit_root
        self.hardlinks = hardlinks
        # Only names of inodes with more than one name are collected (the builder counts them in nlink).
        names: dict[int, list[bytes]] = {}
        self._count = 0
        for p, i in self._tt.walk_ids():
            self._count += 1
            group = self._tt.hardlink.get(i)
            if group is not None:
                names.setdefault(group, []).append(p)
        # One tuple per hard-linked inode, shared by its names: a tuple per name would hold names squared.
        self._links = {key: tuple(sorted(group)) for key, group in names.items() if len(group) > 1}

    def __len__(self) -> int:
        """How many paths the tree has (a hard-linked inode counts once per name)."""
        return self._count

    def items(self) -> Iterator[tuple[bytes, Entry]]:
        for p, node in self._tt.walk(path_order=True):
            yield p, _entry(node, node.data, self._links.get(node.hardlink, ()) if node.hardlink else ())

    def tree(self) -> Tree:
        return Tree(dict(self.items()), self.explicit_root, self.hardlinks, tar=True)


class LayerEntries:
    """A layer's entries in path order, each made from its node (and its file's data hashed) as
    :func:`compare` takes it: nothing of the layer is held but the walk."""

    explicit_root = True
    tar = False

    def __init__(self, layer: Layer) -> None:
        self.layer = layer
        self.hardlinks = layer_hardlinks(layer)

    def items(self) -> Iterator[tuple[bytes, Entry]]:
        groups: dict[int, _Names] = {}
        hashed: dict[int, bytes] = {}  # hard-link group -> its inode's digest: hashed at its first name only
        rafs = self.layer.rafs
        # Each inode is looked at where the walk decodes it and right after (its file's chunks): a few
        # directories' worth of decoded inodes serves the walk as well as the model's full cache (65,536
        # inodes, some 25 MB that a layer of many files fills).
        kept = rafs.cache_inodes(WALK_INODES)
        try:
            yield from self._items(rafs, groups, hashed)
        finally:
            rafs.cache_inodes(kept)

    def _items(
        self, rafs, groups: dict[int, _Names], hashed: dict[int, bytes]
    ) -> Iterator[tuple[bytes, Entry]]:
        walk = rafs.walk(path_order=True)
        for node, data in iter_file_data(self.layer, walk):
            digest = None
            if data is not None:
                digest = hashed.get(node.hardlink) if node.hardlink is not None else None
                if digest is None:
                    h = hashlib.sha256()
                    for chunk in data:
                        h.update(chunk)
                    digest = h.digest()
                    if node.hardlink is not None:
                        hashed[node.hardlink] = digest
            links: tuple[bytes, ...] | _Names = ()
            if node.hardlink is not None:
                links = groups.get(node.hardlink)
                if links is None:
                    links = groups[node.hardlink] = _Names()
                links.names.append(node.path)
            yield node.path, _entry(node, digest, links)

    def tree(self) -> Tree:
        entries = dict(self.items())
        # Every name is known now: each group's names become one tuple, shared by them.
        done: dict[int, tuple[bytes, ...]] = {}
        for e in entries.values():
            if isinstance(e.hardlinks, _Names):
                key = id(e.hardlinks)
                if key not in done:
                    done[key] = e.hardlinks.links()
                e.hardlinks = done[key]
        return Tree(entries, hardlinks=self.hardlinks)


def describe_tar(path: str, hardlinks: str = LINK_HEADER) -> Tree:
    """The tree of the layer tar at ``path``, its hard links' headers taken as ``hardlinks`` says: the rule of
    the layer it is to be compared with (:func:`layer_hardlinks`)."""
    return TarEntries(path, hardlinks).tree()


def layer_hardlinks(layer: Layer) -> str:
    """The hard-link rule of the tool that writes layers of this one's format."""
    from .overlay import KIND_EROFS_STACK

    return hardlink_rule(erofs=layer.kind in (KIND_EROFS, KIND_EROFS_STACK))


def describe_layer(layer: Layer) -> Tree:
    return LayerEntries(layer).tree()


def _entry(node, digest: bytes | None, links) -> Entry:
    return Entry(
        type=node.type,
        mode=node.mode & 0o7777,
        uid=node.uid,
        gid=node.gid,
        mtime=node.mtime,
        size=node.size if node.type == REG else 0,
        target=node.target,
        rdev=node.rdev if node.type in (CHR, BLK) else 0,
        xattrs={k: v for k, v in node.xattrs.items() if storable_xattr(k)},
        sha256=None if digest is None else digest.hex(),
        hardlinks=links,
    )


def describe(
    path: str, blob_dir: str | None = None, blobs: list[str] | None = None, hardlinks: str = LINK_HEADER
) -> Tree:
    """A tree from a nydus layer / bootstrap, or else from a (compressed) tar (read with the hard-link rule
    ``hardlinks``); either may be an image reference (docker://, oci:, oci-archive:, docker-archive:) of a
    nydus image."""
    with contextlib.ExitStack() as stack:
        return entries_of(path, stack, blob_dir, blobs, hardlinks).tree()


def entries_of(
    path: str,
    stack: contextlib.ExitStack,
    blob_dir: str | None = None,
    blobs: list[str] | None = None,
    hardlinks: str = LINK_HEADER,
) -> TarEntries | LayerEntries:
    """What :func:`describe` reads, as entries for :func:`compare` to take one by one; a layer stays open on
    ``stack`` until they have been taken."""
    from .imageref import materialise

    if path == "-":  # a tar on stdin, as pack takes it
        return TarEntries(path, hardlinks)
    path = materialise(path)
    layer = _open(path, blob_dir, blobs)
    if layer is None:
        return TarEntries(path, hardlinks)
    with contextlib.ExitStack() as guard:
        guard.enter_context(layer)
        tar = False
        if layer.kind == KIND_BOOTSTRAP_LAYER:
            # A tar is a bootstrap layer only if it holds image/image.boot; otherwise it is a layer tar,
            # read once the layer is closed and the check's error gone: what they held is freed with them.
            try:
                layer.bootstrap_bytes()
            except FormatError:
                tar = True
        if not tar and layer.has_bootstrap:
            stack.enter_context(guard.pop_all())
            return LayerEntries(layer)
    return TarEntries(path, hardlinks)


def _open(path: str, blob_dir: str | None, blobs: list[str] | None) -> Layer | None:
    """The layer at ``path`` (a materialised one), opened; None when it is none (then it is read as a tar)."""
    try:
        if os.path.isdir(path):  # the OCI image layout of a nydus image
            return open_layer(path, blob_dir=blob_dir, blobs=blobs)
        return Layer(path, blob_dir=blob_dir, blobs=blobs)
    except FormatError:
        return None


def _hardlinks_of(paths: list[str], blob_dir: str | None, blobs: list[str] | None) -> str:
    """The hard-link rule of the first of ``paths`` that opens as a layer (stdin is not tried: it is read
    once, by describe); the default rule when none does."""
    from .imageref import materialise

    for path in paths:
        if path == "-":
            continue
        layer = _open(materialise(path), blob_dir, blobs)
        if layer is not None:
            with layer:
                return layer_hardlinks(layer)
    return LINK_HEADER


def compare(expected, found) -> Iterator[Difference]:
    """Differences from ``expected`` to ``found`` (each a :class:`Tree`, :class:`TarEntries` or
    :class:`LayerEntries`), in path order. Both sides are taken in step, in path order: a side read from a
    layer is never held whole."""
    pending: list[tuple[bytes, object, object]] = []  # hard links whose names a layer's walk is still finding
    held: list[Difference] = []
    for d in _merge(expected, found, pending):
        if pending:
            held.append(d)  # to be merged with the hard links' differences, once they are known
        else:
            yield d
    if not pending:
        return
    links: list[Difference] = []
    same_groups: dict[tuple[int, int], bool] = {}
    for p, va, vb in pending:
        va = va.links() if isinstance(va, _Names) else va
        vb = vb.links() if isinstance(vb, _Names) else vb
        # As in _merge: every name of a group shares one tuple on each side, compared once per pair.
        key = (id(va), id(vb))
        same = same_groups.get(key)
        if same is None:
            same = same_groups[key] = va == vb
        if not same:
            links.append(Difference(p, "hardlinks", va, vb))
    # A path's hard links come after its other fields (the last of FIELDS): merge keeps that, being stable.
    yield from heapq.merge(held, links, key=_path_of)


def _path_of(d: Difference) -> bytes:
    return d.path


def _merge(expected, found, pending: list) -> Iterator[Difference]:
    both_roots = expected.explicit_root and found.explicit_root
    same_groups: dict[tuple[int, int], bool] = {}
    ia, ib = expected.items(), found.items()
    a = next(ia, None)
    b = next(ib, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            p, ea = a
            if p != b"/" or both_roots:
                yield Difference(p, "presence", ea.type, "absent")
            a = next(ia, None)
            continue
        if a is None or b[0] < a[0]:
            p, eb = b
            if p != b"/" or both_roots:
                yield Difference(p, "presence", "absent", eb.type)
            b = next(ib, None)
            continue
        p, ea = a
        eb = b[1]
        a = next(ia, None)
        b = next(ib, None)
        if p == b"/" and not both_roots:
            continue  # a tar without a './' entry says nothing about the root's attributes
        for name in FIELDS:
            va, vb = getattr(ea, name), getattr(eb, name)
            if name == "mode" and ea.type == "symlink":
                continue  # symlink permission bits are not meaningful on Linux
            if name != "hardlinks":
                if va != vb:
                    yield Difference(p, name, va, vb)
            elif isinstance(va, _Names) or isinstance(vb, _Names):
                pending.append((p, va, vb))
            elif va and vb:
                # Every name of a group shares one tuple on each side: compare each pair of groups once.
                key = (id(va), id(vb))
                same = same_groups.get(key)
                if same is None:
                    same = same_groups[key] = va == vb
                if not same:
                    yield Difference(p, name, va, vb)
            elif va != vb:
                yield Difference(p, name, va, vb)


def diff_paths(
    a: str, b: str, blob_dir: str | None = None, blobs: list[str] | None = None
) -> list[Difference]:
    """Differences from the tree at ``a`` (the source) to the layer at ``b``.

    An empty file is a tar of no entries as a source (as pack takes it), but not a layer: read as one,
    it would compare as a tree that lost every file (exit 1) instead of an input that is no layer (exit 2).
    """
    try:
        st = os.stat(b)
        empty = st.st_size == 0 and stat.S_ISREG(st.st_mode)  # a pipe (<(zcat x.tar.gz)) has no size
    except OSError:
        empty = False  # missing: the opener says so
    if empty:
        raise UsageError(f"{b}: empty file: not a nydus layer, bootstrap or layer tar")
    if a == b == "-":
        raise UsageError("-: only one side of diff can be read from stdin")
    # A tar side takes the hard-link rule of the layer it is compared with: the layer is opened once to learn
    # its format. Then ``a`` is described first: the source is usually the tar, whose tree (the
    # largest thing either side builds) is then made while the other side's entries are not yet held.
    rule = _hardlinks_of([b, a], blob_dir, blobs)
    with contextlib.ExitStack() as stack:
        expected = entries_of(a, stack, blob_dir, blobs, rule)
        found = entries_of(b, stack, blob_dir, blobs, rule)
        return list(compare(expected, found))


__all__ = [
    "Difference",
    "Entry",
    "LayerEntries",
    "TarEntries",
    "Tree",
    "compare",
    "describe",
    "describe_layer",
    "describe_tar",
    "diff_paths",
    "entries_of",
    "layer_hardlinks",
]
