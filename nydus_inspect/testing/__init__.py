"""Helpers for users' test suites: build layers from a tree spec, and assert on layers and trees.

Usable with or without pytest; the pytest plugin (``plugin.py``, registered through the ``pytest11``
entry point) wraps them as fixtures::

    def test_my_conversion(nydus_pack):
        layer = nydus_pack({"etc/passwd": b"root:x:0:0\\n", "bin/sh": Symlink("busybox")})
        assert_layer_valid(layer)
"""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from ..diff import compare, describe
from ..errors import NydusInspectError

__all__ = [
    "BlockDev",
    "CharDev",
    "Dir",
    "Fifo",
    "File",
    "Hardlink",
    "Symlink",
    "assert_layer_valid",
    "assert_roundtrip",
    "assert_same_tree",
    "build_layer",
    "build_tar",
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

    Entries are written in sorted path order (parents first); hard links after their targets.
    """
    out = Path(out)
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        if not isinstance(spec, dict):
            root = Path(spec)
            if not root.is_dir():
                raise NydusInspectError(f"{root}: not a directory to build a layer from")
            for path in sorted(root.rglob("*")):
                tf.add(path, arcname=str(path.relative_to(root)), recursive=False)
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


def build_layer(spec: Spec | str | os.PathLike, out: str | os.PathLike, **pack_options) -> Path:
    """Build a nydus layer blob at ``out`` from a spec or directory; options as nydus_inspect.pack.PackOptions."""
    from ..codecs import Compressor
    from ..digests import Digester
    from ..pack import PackOptions, pack

    out = Path(out)
    tar = out.with_name(out.name + ".src.tar")
    build_tar(spec, tar)
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


def assert_same_tree(
    a: str | os.PathLike, b: str | os.PathLike, *, blob_dir: str | None = None, blobs: list[str] | None = None
) -> None:
    """Assert two trees (tar, nydus layer, or bootstrap + blobs) are equal entry by entry and byte by byte."""
    diffs = list(compare(describe(str(a), blob_dir, blobs), describe(str(b), blob_dir, blobs)))
    if diffs:
        raise AssertionError(f"{a} and {b} differ in {len(diffs)} place(s):\n{_fmt_diffs(diffs)}")


def assert_roundtrip(tar: str | os.PathLike, layer: str | os.PathLike, **kw) -> None:
    """Assert that ``layer`` holds exactly the tree of ``tar``, and that unpacking it gives that tree back."""
    import tempfile

    from ..layer import open_layer
    from ..unpack import to_tar

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


def lookup(layer, path: str | bytes, *, follow: bool = True, **open_options):
    """The node ``path`` names in ``layer`` (an opened layer, or a layer file), symlinks on the way
    followed as the kernel follows them (the last one too, unless ``follow`` is False)."""
    from ..paths import resolve_in

    if isinstance(layer, str | os.PathLike):
        from ..layer import open_layer

        with open_layer(str(layer), **open_options) as opened:
            return resolve_in(opened.rafs, path, follow=follow)
    return resolve_in(layer.rafs, path, follow=follow)


def read_file(layer, path: str | bytes, **open_options) -> bytes:
    """The bytes of the regular file ``path`` names in ``layer`` (symlinks followed), every chunk checked."""
    from ..layer import open_layer
    from ..paths import resolve_in

    def read(opened) -> bytes:
        node = resolve_in(opened.rafs, path)
        if node.type != "file":
            raise NydusInspectError(f"{path}: a {node.type}, not a regular file")
        return b"".join(opened.read_file(node))

    if isinstance(layer, str | os.PathLike):
        with open_layer(str(layer), **open_options) as opened:
            return read(opened)
    return read(layer)
