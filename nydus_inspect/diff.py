"""diff: compare two file trees (a layer tar, a nydus layer, or a bootstrap with its blobs) entry by entry."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field

from .errors import FormatError, UsageError
from .filedata import iter_file_data
from .layer import KIND_BOOTSTRAP_LAYER, KIND_EROFS, Layer, open_layer
from .model import BLK, CHR, REG, fsdecode
from .tarstream import LINK_HEADER, hardlink_rule, open_tar_input, read_tar, storable_xattr

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


def describe_tar(path: str, hardlinks: str = LINK_HEADER) -> Tree:
    """The tree of the layer tar at ``path``, its hard links' headers taken as ``hardlinks`` says: the rule of
    the layer it is to be compared with (:func:`layer_hardlinks`)."""

    def on_file(node, fobj, _ref=None) -> None:
        h = hashlib.sha256()
        remaining = node.size
        while remaining:
            data = fobj.read(min(remaining, 1 << 20))
            if not data:
                raise FormatError("tar", f"{fsdecode(node.path)}: data ends early")
            h.update(data)
            remaining -= len(data)
        # Kept on the node (this tree is our own, never packed): a dict by id() would cost an entry more.
        node.data = h.hexdigest()

    with open_tar_input(path) as stream:
        tt = read_tar(stream, on_file, path, hardlinks=hardlinks)
    # Only names of inodes with more than one name are collected (the builder counts them in nlink).
    names: dict[int, list[bytes]] = {}
    for p, node in tt.walk():
        if node.hardlink is not None:
            names.setdefault(id(node), []).append(p)
    # One tuple per hard-linked inode, shared by its names: a tuple per name would hold names squared.
    links = {key: tuple(sorted(group)) for key, group in names.items() if len(group) > 1}
    del names
    out: dict[bytes, Entry] = {}
    for p, node in tt.walk():
        out[p] = _entry(node, node.data, links.get(id(node), ()))
    return Tree(out, tt.explicit_root, hardlinks, tar=True)


def layer_hardlinks(layer: Layer) -> str:
    """The hard-link rule of the tool that writes layers of this one's format."""
    return hardlink_rule(erofs=layer.kind == KIND_EROFS)


def describe_layer(layer: Layer) -> Tree:
    r = layer.rafs
    # One pass over the walk, keeping no nodes: a hard link's names are known only at the end, so its
    # entries get their shared tuple then.
    groups: dict[int, list[bytes]] = {}
    out: dict[bytes, Entry] = {}
    for node, data in iter_file_data(layer, r.walk()):
        digest = None
        if data is not None:
            h = hashlib.sha256()
            for chunk in data:
                h.update(chunk)
            digest = h.hexdigest()
        if node.hardlink is not None:
            groups.setdefault(node.hardlink, []).append(node.path)
        out[node.path] = _entry(node, digest, ())
    for group in groups.values():
        if len(group) > 1:
            # One tuple per hard-linked inode, shared by its names: a tuple per name would hold names squared.
            links = tuple(sorted(group))
            for p in group:
                out[p].hardlinks = links
    return Tree(out, hardlinks=layer_hardlinks(layer))


def _entry(node, digest: str | None, links: tuple[bytes, ...]) -> Entry:
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
        sha256=digest,
        hardlinks=links,
    )


def describe(
    path: str, blob_dir: str | None = None, blobs: list[str] | None = None, hardlinks: str = LINK_HEADER
) -> Tree:
    """A tree from a nydus layer / bootstrap, or else from a (compressed) tar (read with the hard-link rule
    ``hardlinks``); either may be an image reference (docker://, oci:, oci-archive:, docker-archive:) of a
    nydus image."""
    from .imageref import materialise

    path = materialise(path)
    layer = _open(path, blob_dir, blobs)
    if layer is None:
        return describe_tar(path, hardlinks)
    with layer:
        if layer.kind == KIND_BOOTSTRAP_LAYER:
            # A tar is a bootstrap layer only if it holds image/image.boot; otherwise it is a layer tar.
            try:
                layer.bootstrap_bytes()
            except FormatError:
                return describe_tar(path, hardlinks)
        if layer.has_bootstrap:
            return describe_layer(layer)
    return describe_tar(path, hardlinks)


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


def compare(expected: Tree, found: Tree) -> Iterator[Difference]:
    """Differences from ``expected`` to ``found``, in path order."""
    paths = sorted(set(expected.entries) | set(found.entries))
    same_groups: dict[tuple[int, int], bool] = {}
    for p in paths:
        a, b = expected.entries.get(p), found.entries.get(p)
        if p == b"/" and not (expected.explicit_root and found.explicit_root):
            continue  # a tar without a './' entry says nothing about the root's attributes
        if a is None:
            yield Difference(p, "presence", "absent", b.type)
            continue
        if b is None:
            yield Difference(p, "presence", a.type, "absent")
            continue
        for name in FIELDS:
            va, vb = getattr(a, name), getattr(b, name)
            if name == "mode" and a.type == "symlink":
                continue  # symlink permission bits are not meaningful on Linux
            if name == "hardlinks" and va and vb:
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
    # A tar side takes the hard-link rule of the layer it is compared with: the layer is opened once to learn
    # its format. Then ``a`` is described first: the source is usually the tar, whose tree of nodes (the
    # largest thing either side builds) is then made while the other side's entries are not yet held.
    rule = _hardlinks_of([b, a], blob_dir, blobs)
    expected = describe(a, blob_dir, blobs, rule)
    found = describe(b, blob_dir, blobs, rule)
    return list(compare(expected, found))


__all__ = [
    "Difference",
    "Entry",
    "Tree",
    "compare",
    "describe",
    "describe_layer",
    "describe_tar",
    "diff_paths",
    "layer_hardlinks",
]
