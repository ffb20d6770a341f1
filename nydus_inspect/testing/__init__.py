"""Helpers for users' test suites: build layers from a tree spec, a directory or a tar, and assert on
layers and trees.

Usable with or without pytest; the pytest plugin (``plugin.py``, registered through the ``pytest11``
entry point) wraps them as fixtures::

    def test_my_conversion(nydus_pack):
        layer = nydus_pack({"etc/passwd": b"root:x:0:0\\n", "bin/sh": Symlink("busybox")})
        assert_layer_valid(layer)

Importing this module is cheap: the reader, the packer and the differ are imported by the helpers
that use them, so that pytest's start-up does not pay for them in every project that has the plugin.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import NydusInspectError

__all__ = [
    "BlockDev",
    "CharDev",
    "Dir",
    "Fifo",
    "File",
    "Hardlink",
    "LayerTree",
    "Symlink",
    "assert_layer_valid",
    "assert_roundtrip",
    "assert_rules",
    "assert_same_tree",
    "build_layer",
    "build_tar",
    "layer_tree",
    "lookup",
    "read_file",
]

MTIME = 1_700_000_000  # a fixed time keeps built layers reproducible


@dataclass
class File:
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = MTIME
    xattrs: dict[str, bytes] = field(default_factory=dict)


@dataclass
class Dir:
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    mtime: int = MTIME
    xattrs: dict[str, bytes] = field(default_factory=dict)


@dataclass
class Symlink:
    target: str
    uid: int = 0
    gid: int = 0
    mtime: int = MTIME


@dataclass
class Hardlink:
    target: str  # path of an earlier File in the same spec


@dataclass
class CharDev:
    major: int
    minor: int
    mode: int = 0o666


@dataclass
class BlockDev:
    major: int
    minor: int
    mode: int = 0o660


@dataclass
class Fifo:
    mode: int = 0o644


Spec = dict[str, "bytes | str | File | Dir | Symlink | Hardlink | CharDev | BlockDev | Fifo"]


def build_tar(spec: Spec | str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write a layer tar from a spec (path -> bytes/str/File/Dir/...) or from a directory on disk.

    Entries are written in sorted path order (parents first); hard links after their targets. A
    directory keeps what a layer can hold: types, modes, owners, mtimes (the root's too, as the tar's
    ``./`` entry), hard links, devices and every xattr (``security.capability`` included).
    """
    import io
    import tarfile

    __tracebackhide__ = True
    out = Path(out)
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        if not isinstance(spec, dict):
            root = Path(spec)
            if not root.is_dir():
                raise NydusInspectError(f"{root}: not a directory to build a layer from")
            _add_directory(tf, root)
            return out
        links = []
        for name in sorted(spec, key=lambda p: p.strip("/")):
            item = spec[name]
            arc = name.strip("/")
            if isinstance(item, bytes | str):
                item = File(item.encode() if isinstance(item, str) else item)
            if isinstance(item, Hardlink):
                links.append((arc, item))
                continue
            info = tarfile.TarInfo(arc)
            data = None
            if isinstance(item, File):
                info.size, data = len(item.data), io.BytesIO(item.data)
            elif isinstance(item, Dir):
                info.type = tarfile.DIRTYPE
            elif isinstance(item, Symlink):
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, item.target, 0o777
            elif isinstance(item, CharDev | BlockDev):
                info.type = tarfile.CHRTYPE if isinstance(item, CharDev) else tarfile.BLKTYPE
                info.devmajor, info.devminor = item.major, item.minor
            elif isinstance(item, Fifo):
                info.type = tarfile.FIFOTYPE
            else:
                raise NydusInspectError(f"{name}: unknown spec item {item!r}")
            for attr in ("mode", "uid", "gid", "mtime"):
                if hasattr(item, attr):
                    setattr(info, attr, getattr(item, attr))
            if not hasattr(item, "mtime"):
                info.mtime = MTIME
            xattrs = getattr(item, "xattrs", None) or {}
            if xattrs:
                info.pax_headers = {
                    f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
                    for k, v in sorted(xattrs.items())
                }
            tf.addfile(info, data)
        for arc, item in links:
            info = tarfile.TarInfo(arc)
            info.type, info.linkname, info.mtime = tarfile.LNKTYPE, item.target.strip("/"), MTIME
            tf.addfile(info)
    return out


def _add_directory(tf, root: Path) -> None:
    """Add the tree under ``root`` to ``tf``: the root as ``./``, then every entry in sorted order."""
    import tarfile

    def add(path: Path, arcname: str) -> None:
        info = tf.gettarinfo(str(path), arcname)  # also makes a second name of an inode a hard link
        xattrs = _xattrs(path)
        if xattrs:
            info.pax_headers = {
                f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape") for k, v in sorted(xattrs.items())
            }
        if info.type == tarfile.REGTYPE:
            with open(path, "rb") as f:
                tf.addfile(info, f)
        else:
            tf.addfile(info)

    add(root, ".")
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted([*dirnames, *filenames]):
            path = base / name
            add(path, "./" + str(path.relative_to(root)))
        # os.walk does not descend into symlinks to directories; they were added as links above.


def _xattrs(path: Path) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:  # a file system without xattrs
        return {}
    out = {}
    for name in names:
        try:
            out[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue  # removed meanwhile, or not readable by us
    return out


#: The inputs ``pack`` reads as they are (plain, gzip or zstd tars).
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.zst", ".tar.zstd")


def build_layer(spec: Spec | str | os.PathLike, out: str | os.PathLike, **pack_options) -> Path:
    """Build a nydus layer blob at ``out`` from a tree spec, a directory, or an existing layer tar
    (plain, gzip or zstd); ``pack_options`` as :class:`nydus_inspect.pack.PackOptions` (``compressor``
    and ``digester`` may be given by name)."""
    from ..codecs import Compressor
    from ..digests import Digester
    from ..pack import PackOptions, pack

    __tracebackhide__ = True
    out = Path(out)
    if isinstance(spec, dict) or Path(spec).is_dir():
        tar = out.with_name(out.name + ".src.tar")
        build_tar(spec, tar)
    elif Path(spec).is_file():
        tar = Path(spec)
    else:
        raise NydusInspectError(
            f"{spec}: neither a tree spec, a directory nor a layer tar ({', '.join(_TAR_SUFFIXES)})"
        )
    opts = PackOptions()
    for key, value in pack_options.items():
        if key == "compressor" and isinstance(value, str):
            value = Compressor.parse(value)
        if key == "digester" and isinstance(value, str):
            value = Digester.parse(value)
        if not hasattr(opts, key):
            raise TypeError(f"unknown pack option {key!r}")
        setattr(opts, key, value)
    pack(str(tar), str(out), opts)
    return out


def _fmt_diffs(diffs, limit: int = 20) -> str:
    lines = [f"  {d}" for d in diffs[:limit]]
    if len(diffs) > limit:
        lines.append(f"  ... and {len(diffs) - limit} more")
    return "\n".join(lines)


class LayerTree:
    """A file tree (layer tar, nydus layer, or bootstrap + blobs) to compare with ``==``.

    ``assert layer_tree(a) == layer_tree(b)`` compares entry by entry and byte by byte, as
    ``nydus-inspect diff`` does; under pytest a failure lists the differences (the plugin's
    ``pytest_assertrepr_compare``)."""

    def __init__(
        self, path: str | os.PathLike, *, blob_dir: str | None = None, blobs: list[str] | None = None
    ):
        self.path = str(path)
        self.blob_dir = blob_dir
        self.blobs = blobs
        self._trees: dict = {}

    def tree(self, hardlinks: str | None = None):
        """The tree, a tar read with the hard-link rule ``hardlinks`` (tarstream's; the default one if None)."""
        from ..diff import describe
        from ..tarstream import LINK_HEADER

        if None in self._trees:  # a layer: its tree is the same whatever rule a tar would be read with
            return self._trees[None]
        rule = hardlinks or LINK_HEADER
        if rule not in self._trees:
            tree = describe(self.path, self.blob_dir, self.blobs, rule)
            self._trees[rule if tree.tar else None] = tree
            return tree
        return self._trees[rule]

    def differences(self, other: LayerTree) -> list:
        """What ``other`` has that this tree does not have the same (``diff``'s Difference records); a tar
        side is read with the hard-link rule of the layer on the other side, as ``diff`` reads it."""
        from ..diff import compare

        mine, theirs = self.tree(), other.tree()
        if mine.tar and not theirs.tar:
            mine = self.tree(theirs.hardlinks)
        elif theirs.tar and not mine.tar:
            theirs = other.tree(mine.hardlinks)
        return list(compare(mine, theirs))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LayerTree):
            return NotImplemented
        return not self.differences(other)

    __hash__ = None  # type: ignore[assignment]  # mutable cache, compared by content

    def __repr__(self) -> str:
        return f"LayerTree({self.path!r})"


def layer_tree(
    path: str | os.PathLike, *, blob_dir: str | None = None, blobs: list[str] | None = None
) -> LayerTree:
    """The tree at ``path``, for ``assert layer_tree(a) == layer_tree(b)``."""
    return LayerTree(path, blob_dir=blob_dir, blobs=blobs)


def explain_difference(left: LayerTree, right: LayerTree, limit: int = 20) -> list[str]:
    """The lines pytest shows when ``left == right`` fails: one per difference."""
    diffs = left.differences(right)
    lines = [f"{left!r} == {right!r}", f"{len(diffs)} difference(s) (expected: left, found: right):"]
    lines += [f"  {d}" for d in diffs[:limit]]
    if len(diffs) > limit:
        lines.append(f"  ... and {len(diffs) - limit} more")
    return lines


def assert_same_tree(
    a: str | os.PathLike, b: str | os.PathLike, *, blob_dir: str | None = None, blobs: list[str] | None = None
) -> None:
    """Assert two trees (tar, nydus layer, or bootstrap + blobs) are equal entry by entry and byte by byte."""
    __tracebackhide__ = True
    diffs = layer_tree(a, blob_dir=blob_dir, blobs=blobs).differences(
        layer_tree(b, blob_dir=blob_dir, blobs=blobs)
    )
    if diffs:
        raise AssertionError(f"{a} and {b} differ in {len(diffs)} place(s):\n{_fmt_diffs(diffs)}")


def assert_roundtrip(tar: str | os.PathLike, layer: str | os.PathLike, **kw) -> None:
    """Assert that ``layer`` holds exactly the tree of ``tar``, and that unpacking it gives that tree back."""
    import tempfile

    from ..layer import open_layer
    from ..unpack import to_tar

    __tracebackhide__ = True
    assert_same_tree(tar, layer, **kw)
    with tempfile.TemporaryDirectory() as tmp:
        back = os.path.join(tmp, "unpacked.tar")
        with open_layer(str(layer), blob_dir=kw.get("blob_dir"), blobs=kw.get("blobs")) as opened:
            to_tar(opened, back)
        assert_same_tree(tar, back)


def assert_layer_valid(layer: str | os.PathLike, **kw) -> None:
    """Assert that every check of ``nydus-inspect verify`` passes; the message lists each failure."""
    from ..layer import open_layer
    from ..verify import verify

    __tracebackhide__ = True
    try:
        with open_layer(str(layer), blob_dir=kw.get("blob_dir"), blobs=kw.get("blobs")) as opened:
            report = verify(opened)
    except NydusInspectError as exc:
        raise AssertionError(f"{layer}: unreadable: {exc}") from None
    if not report.ok:
        lines = [f"  {f}" for f in report.findings[:20]]
        if len(report.findings) > 20:
            lines.append(f"  ... {len(report.findings) - 20} more finding(s)")
        lines += [f"  ... {n} more {check} finding(s)" for check, n in report.suppressed.items()]
        raise AssertionError(f"{layer}: {report.failures} check(s) failed:\n" + "\n".join(lines))


def assert_rules(layer: str | os.PathLike, rules: dict | str | os.PathLike, **open_options) -> None:
    """Assert that ``layer`` meets the thresholds of ``verify --rules``: ``rules`` is a rules file
    (YAML or JSON) or a mapping such as ``{"lowestEfficiency": 0.95, "highestWastedBytes": "20MB"}``.
    The message lists every rule with its value and limit, the failing ones first."""
    from ..analyze import analyze
    from ..layer import open_layer
    from ..rules import apply_rules, image_stats, load_rules, needs_analysis, parse_rules

    __tracebackhide__ = True
    parsed = parse_rules(rules, "rules") if isinstance(rules, dict) else load_rules(str(rules))
    analysis = analyze([str(layer)], **open_options) if needs_analysis(parsed) else None
    with open_layer(str(layer), **open_options) as opened:
        outcome = apply_rules(parsed, image_stats(opened), analysis)
    failed = [r for r in outcome if not r.ok]
    if failed:
        lines = [f"  {r}" for r in failed + [r for r in outcome if r.ok]]
        raise AssertionError(f"{layer}: {len(failed)} of {len(outcome)} rule(s) failed:\n" + "\n".join(lines))


def lookup(layer, path: str | bytes, *, follow: bool = True, **open_options):
    """The node ``path`` names in ``layer`` (an opened layer, or a layer file), symlinks on the way
    followed as the kernel follows them (the last one too, unless ``follow`` is False)."""
    from ..paths import resolve_in

    __tracebackhide__ = True
    if isinstance(layer, str | os.PathLike):
        from ..layer import open_layer

        with open_layer(str(layer), **open_options) as opened:
            return resolve_in(opened.rafs, path, follow=follow)
    return resolve_in(layer.rafs, path, follow=follow)


def read_file(layer, path: str | bytes, **open_options) -> bytes:
    """The bytes of the regular file ``path`` names in ``layer`` (symlinks followed), every chunk checked."""
    from ..layer import open_layer
    from ..paths import resolve_in

    __tracebackhide__ = True

    def read(opened) -> bytes:
        node = resolve_in(opened.rafs, path)
        if node.type != "file":
            raise NydusInspectError(f"{path}: a {node.type}, not a regular file")
        return b"".join(opened.read_file(node))

    if isinstance(layer, str | os.PathLike):
        with open_layer(str(layer), **open_options) as opened:
            return read(opened)
    return read(layer)
