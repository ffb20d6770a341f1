"""Read OCI layer tars (plain, gzip or zstd; a file or a stream) into a Node tree.

One streaming pass: regular files' bytes are handed to a callback as a file
object and never held whole, so memory follows metadata, not layer size. Used
by pack (to build a layer) and diff (to describe the source side).
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import io
import logging
import os
import stat
import sys
import tarfile
import urllib.parse
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import zstandard

from .errors import FormatError, UsageError
from .formats.rafs_v6 import build_xattrs, split_xattr_name, xattr_icount
from .model import BLK, CHR, DIR, FIFO, FMT_OF_TYPE, MAX_SYMLINK, REG, SYMLINK, Node

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: Longest path we accept from a tar (Linux PATH_MAX).
MAX_PATH = 4096
#: Longest name of one path component (Linux NAME_MAX; an EROFS dirent cannot hold more).
MAX_NAME = 255

#: ``on_file(node, fobj, ref)``: consume a regular file's bytes from ``fobj``, or, when ``ref`` is
#: ``(fd, offset)`` (a plain tar file), read them with os.pread at that offset (from any thread).
FileCallback = Callable[[Node, BinaryIO, "tuple[int, int] | None"], None]


@dataclass
class TarTree:
    """The file tree a layer tar describes, root first."""

    root: Node
    explicit_root: bool = False
    entries: int = 0
    warnings: list[str] = field(default_factory=list)

    def walk(self) -> Iterator[tuple[bytes, Node]]:
        """(path, node) pre-order, children sorted by raw name bytes (the order RAFS stores them in).

        A hard-linked node appears once per name; ``node.path`` is its first name.
        """
        stack: list[tuple[bytes, Node]] = [(b"/", self.root)]
        while stack:
            path, node = stack.pop()
            yield path, node
            if node.type == DIR and node.children:
                base = path.rstrip(b"/")
                for name in sorted(node.children, reverse=True):
                    stack.append((base + b"/" + name, node.children[name]))


@contextlib.contextmanager
def open_tar_input(path: str) -> Iterator[BinaryIO]:
    """A decompressed byte stream of the tar at ``path`` ('-' for stdin), gzip and zstd detected by magic."""
    if path == "-":
        raw: BinaryIO = sys.stdin.buffer
        close = False
    else:
        try:
            raw = open(path, "rb")  # noqa: SIM115
        except OSError as exc:
            raise UsageError(f"{path}: cannot open: {exc.strerror}") from None
        close = True
    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)  # type: ignore[arg-type]
    try:
        head = buffered.peek(4)[:4]
        if head.startswith(GZIP_MAGIC):
            yield gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[misc]
        elif head == ZSTD_MAGIC:
            yield zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True)  # type: ignore[misc]
        else:
            yield buffered
    finally:
        if close:
            raw.close()


def plain_fd(stream) -> int | None:
    """The file descriptor of an uncompressed, seekable tar file (not a pipe, not a decompressor)."""
    if type(stream) is not io.BufferedReader:
        return None
    try:
        fd = stream.fileno()
        return fd if stream.seekable() and stat.S_ISREG(os.fstat(fd).st_mode) else None
    except (OSError, ValueError):
        return None


def _seekable(stream) -> bool:
    try:
        return stream.seekable() and stream.tell() >= 0
    except (OSError, AttributeError, ValueError):
        return False


class ForwardSeekable(io.RawIOBase):
    """Give a pipe or decompressor the forward-only seek() and tell() that tarfile's "r:" mode uses."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.pos += len(data)
        return data

    def readinto(self, buf) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset if whence == io.SEEK_SET else self.pos + offset if whence == io.SEEK_CUR else -1
        if target < self.pos:
            raise io.UnsupportedOperation("this tar stream can only move forward")
        while self.pos < target:
            if not self.read(min(target - self.pos, 1 << 20)):
                break
        return self.pos


def _norm_path(name: str, where: str) -> bytes:
    raw = os.fsencode(name)
    parts = []
    for part in raw.split(b"/"):
        if part in (b"", b"."):
            continue
        if part == b"..":
            raise FormatError("tar entry", f"path {name!r} climbs out of the layer with '..'", value=where)
        if len(part) > MAX_NAME:
            raise FormatError("tar entry", f"a path component is longer than {MAX_NAME} bytes", value=where)
        parts.append(part)
    path = b"/" + b"/".join(parts)
    if len(path) > MAX_PATH:
        raise FormatError("tar entry", f"path longer than {MAX_PATH} bytes", value=name[:80])
    return path


def storable_xattr(name: bytes) -> bool:
    """Whether RAFS (and Linux) can hold an xattr of this name: user., trusted., security., POSIX ACLs."""
    try:
        split_xattr_name(name)
    except ValueError:
        return False
    return True


def _xattrs(member: tarfile.TarInfo, path: bytes, warnings: list[str]) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    for key, value in member.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            name = key[len("SCHILY.xattr.") :].encode("utf-8", "surrogateescape")
            out[name] = value.encode("utf-8", "surrogateescape")
        elif key.startswith("LIBARCHIVE.xattr."):
            name = urllib.parse.unquote_to_bytes(key[len("LIBARCHIVE.xattr.") :])
            try:
                out[name] = base64.b64decode(value + "=" * (-len(value) % 4))
            except ValueError:
                raise FormatError("tar entry", f"{key}: the value is not base64", value=os.fsdecode(path)) from None
    for name in [n for n in out if not storable_xattr(n)]:
        # macOS tars carry namespace-less xattrs; neither RAFS nor a Linux runtime can hold them.
        warnings.append(
            f"{os.fsdecode(path)}: xattr {os.fsdecode(name)!r} dropped: RAFS stores only user., trusted., "
            "security. and POSIX ACL xattrs"
        )
        del out[name]
    try:
        area = build_xattrs(out)
    except ValueError as exc:
        raise FormatError("tar entry", f"{exc}: RAFS holds xattr names up to 255 bytes after the namespace "
                          "and values up to 65535 bytes", value=os.fsdecode(path)) from None
    if xattr_icount(len(area)) > 0xFFFF:
        raise FormatError("tar entry", f"{len(area)} bytes of xattrs: more than one RAFS inode holds",
                          value=os.fsdecode(path))
    return out


def _check_numbers(member: tarfile.TarInfo, path: bytes, where: str, warnings: list[str]) -> None:
    """Owners and times must fit RAFS's inode fields; a time before 1970 is stored as 0, with a warning."""
    for what, value in (("uid", member.uid), ("gid", member.gid)):
        if not 0 <= value <= 0xFFFFFFFF:
            raise FormatError("tar entry", f"{what} {value} does not fit RAFS's 32 bits", value=where)
    if member.mtime >= 1 << 63:
        raise FormatError("tar entry", f"mtime {member.mtime} is out of range", value=where)
    if member.mtime < 0:
        warnings.append(f"{os.fsdecode(path)}: mtime {int(member.mtime)} is before 1970; RAFS stores it as 0")


_TYPE_OF_MEMBER = {
    tarfile.REGTYPE: REG,
    tarfile.AREGTYPE: REG,
    tarfile.CONTTYPE: REG,
    tarfile.DIRTYPE: DIR,
    tarfile.SYMTYPE: SYMLINK,
    tarfile.CHRTYPE: CHR,
    tarfile.BLKTYPE: BLK,
    tarfile.FIFOTYPE: FIFO,
}


class TreeBuilder:
    """Accumulates tar members into a Node tree with tar's last-entry-wins semantics."""

    def __init__(self) -> None:
        self.root = Node(path=b"/", type=DIR, mode=stat.S_IFDIR | 0o755, nlink=2, children={})
        self.tree = TarTree(self.root)
        self._hardlink_groups = 0

    def _parent(self, path: bytes) -> Node:
        node = self.root
        parent_path = path.rsplit(b"/", 1)[0]
        cur = b""
        for part in [p for p in parent_path.split(b"/") if p]:
            cur += b"/" + part
            child = node.children.get(part)
            if child is None or child.type != DIR:
                # Implicit parent, or a non-directory replaced by the directory tar needs here.
                child = Node(path=cur, type=DIR, mode=stat.S_IFDIR | 0o755, nlink=2, children={})
                node.children[part] = child
            node = child
        return node

    def add(self, node: Node) -> None:
        if node.path == b"/":
            if node.type != DIR:
                raise FormatError("tar entry", "the layer root is not a directory", value=node.type)
            node.children = self.root.children
            self.root.__dict__.update({k: v for k, v in node.__dict__.items() if k != "children"})
            self.tree.explicit_root = True
            return
        parent = self._parent(node.path)
        name = node.path.rsplit(b"/", 1)[1]
        old = parent.children.get(name)
        if old is not None:
            if old.type == DIR and node.type == DIR:
                node.children = old.children
            elif old.hardlink is not None:
                old.nlink -= 1
        if node.type == DIR and node.children is None:
            node.children = {}
        parent.children[name] = node

    def link(self, path: bytes, target_path: bytes, where: str) -> None:
        target = self.lookup(target_path)
        if target is None:
            raise FormatError("tar entry", f"hard link {os.fsdecode(path)!r} points at "
                              f"{os.fsdecode(target_path)!r}, which no earlier entry created", value=where)
        if target.type == DIR:
            raise FormatError("tar entry", f"hard link {os.fsdecode(path)!r} points at a directory", value=where)
        if target.hardlink is None:
            self._hardlink_groups += 1
            target.hardlink = self._hardlink_groups
        target.nlink += 1
        parent = self._parent(path)
        parent.children[path.rsplit(b"/", 1)[1]] = target

    def lookup(self, path: bytes) -> Node | None:
        node = self.root
        for part in [p for p in path.split(b"/") if p]:
            if node.children is None:
                return None
            node = node.children.get(part)
            if node is None:
                return None
        return node

    def finish(self) -> TarTree:
        # Directory link counts: 2 + child directories.
        for _, node in self.tree.walk():
            if node.type == DIR:
                node.nlink = 2 + sum(1 for c in node.children.values() if c.type == DIR)
        return self.tree


def read_tar(stream: BinaryIO, on_file: FileCallback | None = None, source: str = "tar") -> TarTree:
    """Stream the tar and build its tree; ``on_file(node, fileobj)`` consumes each regular file's bytes."""
    builder = TreeBuilder()
    index = 0
    try:
        # tarfile's stream mode ("r|") copies data through Python in small steps; its seekable mode is
        # three times faster and only ever seeks forward while members are read in order.
        fd = plain_fd(stream)
        fobj = stream if _seekable(stream) else ForwardSeekable(stream)
        with tarfile.open(fileobj=fobj, mode="r:", encoding="utf-8", errors="surrogateescape") as tf:
            for member in tf:
                index += 1
                where = f"{source} entry {index} ({member.name})"
                path = _norm_path(member.name, where)
                if member.issparse():
                    raise UsageError(f"{where}: GNU sparse files are not supported; re-create the tar without --sparse")
                if member.islnk():
                    builder.link(path, _norm_path(member.linkname, where), where)
                    continue
                ntype = _TYPE_OF_MEMBER.get(member.type)
                if ntype is None:
                    raise UsageError(f"{where}: unsupported tar entry type {member.type!r}")
                mode = FMT_OF_TYPE[ntype] | (member.mode & 0o7777)
                _check_numbers(member, path, where, builder.tree.warnings)
                node = Node(
                    path=path,
                    type=ntype,
                    mode=mode,
                    uid=member.uid,
                    gid=member.gid,
                    mtime=int(member.mtime),
                    size=member.size if ntype == REG else 0,
                    xattrs=_xattrs(member, path, builder.tree.warnings),
                )
                if ntype == SYMLINK:
                    node.target = os.fsencode(member.linkname)
                    node.size = len(node.target)
                    if not node.target:
                        raise FormatError("tar entry", "symlink with an empty target", value=where)
                    if len(node.target) > MAX_SYMLINK:
                        raise FormatError("tar entry", f"symlink target longer than {MAX_SYMLINK} bytes", value=where)
                elif ntype in (CHR, BLK):
                    if member.devmajor >= 1 << 12 or member.devminor >= 1 << 20:
                        raise FormatError("tar entry", f"device {member.devmajor},{member.devminor}: Linux (and RAFS) "
                                          "device numbers have 12-bit majors and 20-bit minors", value=where)
                    node.rdev = os.makedev(member.devmajor, member.devminor)
                if ntype == REG and on_file is not None:
                    fobj = tf.extractfile(member)
                    on_file(node, fobj, (fd, member.offset_data) if fd is not None else None)  # type: ignore[arg-type]
                builder.add(node)
            if tf.pax_headers:
                builder.tree.warnings.append(
                    f"{source}: PAX global header applied to the entries after it: {sorted(tf.pax_headers)}"
                )
    except tarfile.ReadError as exc:
        if index == 0 and "empty file" in str(exc):
            pass  # an empty archive is a valid, empty layer
        else:
            raise FormatError("tar", f"{source}: not a readable tar after {index} entries: {exc}") from None
    except (tarfile.TarError, EOFError, zlib.error, zstandard.ZstdError, gzip.BadGzipFile) as exc:
        raise FormatError("tar", f"{source}: not a readable tar after {index} entries: {exc}") from None
    builder.tree.entries = index
    return builder.finish()
