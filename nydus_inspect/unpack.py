"""unpack: a nydus layer (or bootstrap + blobs) -> an OCI layer tar, a directory, or a blob cache file.

All three read file data through the layer's chunk reader (decompressed-chunk
LRU, every chunk checked against its digest).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import FormatError, UsageError
from .formats import rafs_v6
from .fsutil import atomic_output
from .layer import Layer
from .model import BLK, CHR, DIR, FIFO, REG, SOCK, SYMLINK, Node, fsdecode


@dataclass
class UnpackResult:
    entries: int = 0
    files: int = 0
    bytes: int = 0
    skipped: int = 0


class _ChunkStream:
    """File-like reader over a regular file's chunks, for tarfile.addfile."""

    def __init__(self, layer: Layer, node: Node) -> None:
        self._it = layer.read_file(node)
        self._buf = b""
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        out = []
        while n < 0 or n > 0:
            if self._pos >= len(self._buf):
                nxt = next(self._it, None)
                if nxt is None:
                    break
                self._buf, self._pos = nxt, 0
            take = len(self._buf) - self._pos if n < 0 else min(n, len(self._buf) - self._pos)
            out.append(self._buf[self._pos : self._pos + take])
            self._pos += take
            if n > 0:
                n -= take
        return b"".join(out)


def _rel(path: bytes) -> str:
    return fsdecode(path.lstrip(b"/"))


def walk_image(layer: Layer) -> Iterator[Node]:
    """Every node but the root, pre-order in dirent order."""
    it = layer.rafs.walk()
    next(it)
    yield from it


def to_tar(layer: Layer, output: str) -> UnpackResult:
    """Write the layer's tree as a PAX tar to ``output`` ('-' for stdout)."""
    if output == "-":
        return _write_tar(layer, sys.stdout.buffer)
    with atomic_output(output) as f:
        return _write_tar(layer, f)


def _write_tar(layer: Layer, f) -> UnpackResult:
    res = UnpackResult()
    first_name: dict[int, str] = {}
    with tarfile.open(fileobj=f, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as tf:
        for node in walk_image(layer):
            if node.type == SOCK:
                res.skipped += 1  # tar cannot hold sockets (nydus-image unpack skips them too)
                continue
            info = tarfile.TarInfo(_rel(node.path))
            info.mode = stat.S_IMODE(node.mode)
            info.uid, info.gid = node.uid, node.gid
            info.mtime = node.mtime
            info.uname = info.gname = ""
            if node.xattrs:
                info.pax_headers = {
                    "SCHILY.xattr." + k.decode("utf-8", "surrogateescape"): v.decode("utf-8", "surrogateescape")
                    for k, v in sorted(node.xattrs.items())
                }
            data = None
            key = node.hardlink if node.hardlink is not None else None
            if key is not None and key in first_name:
                info.type = tarfile.LNKTYPE
                info.linkname = first_name[key]
                info.size = 0
            elif node.type == REG:
                info.type = tarfile.REGTYPE
                info.size = node.size
                data = _ChunkStream(layer, node)
                res.files += 1
                res.bytes += node.size
                if key is not None:
                    first_name[key] = info.name
            elif node.type == DIR:
                info.type = tarfile.DIRTYPE
            elif node.type == SYMLINK:
                info.type = tarfile.SYMTYPE
                info.linkname = fsdecode(node.target or b"")
            elif node.type in (CHR, BLK):
                info.type = tarfile.CHRTYPE if node.type == CHR else tarfile.BLKTYPE
                info.devmajor, info.devminor = os.major(node.rdev), os.minor(node.rdev)
            elif node.type == FIFO:
                info.type = tarfile.FIFOTYPE
            tf.addfile(info, data)
            res.entries += 1
    return res


def to_dir(layer: Layer, target: str) -> UnpackResult:
    """Extract into ``target`` (created if absent). Nothing is written outside it: every path is
    opened component by component with O_NOFOLLOW, so no symlink (ours or one already there) is followed."""
    os.makedirs(target, exist_ok=True)
    root_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    res = UnpackResult()
    as_root = os.geteuid() == 0
    first_path: dict[int, bytes] = {}
    dirs: list[tuple[bytes, Node]] = []
    try:
        for node in walk_image(layer):
            parent, name = node.path.rsplit(b"/", 1)
            if name in (b"", b".", b"..") or b"/" in name:
                raise FormatError("dirent", "name not allowed in an extracted path", value=fsdecode(node.path))
            pfd = _open_dir(root_fd, parent, target)
            try:
                _extract_one(layer, node, pfd, name, root_fd, first_path, res, as_root)
                if node.type == DIR:
                    dirs.append((node.path, node))
            finally:
                if pfd != root_fd:
                    os.close(pfd)
            res.entries += 1
        # Directory times last, deepest first, so adding children does not change them.
        for path, node in reversed(dirs):
            parent, name = path.rsplit(b"/", 1)
            pfd = _open_dir(root_fd, parent, target)
            try:
                os.utime(name, ns=(node.mtime * 10**9, node.mtime * 10**9), dir_fd=pfd, follow_symlinks=False)
            finally:
                if pfd != root_fd:
                    os.close(pfd)
    finally:
        os.close(root_fd)
    return res


def _open_dir(root_fd: int, parent: bytes, target: str) -> int:
    fd = root_fd
    for part in [p for p in parent.split(b"/") if p]:
        try:
            nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        except OSError as exc:
            if fd != root_fd:
                os.close(fd)
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UsageError(f"{target}: refusing to extract through {fsdecode(parent)!r}: "
                                 "a component is a symlink or not a directory") from None
            raise
        if fd != root_fd:
            os.close(fd)
        fd = nfd
    return fd


def _extract_one(layer: Layer, node: Node, pfd: int, name: bytes, root_fd: int, first_path: dict[int, bytes],
                 res: UnpackResult, as_root: bool) -> None:
    perm = stat.S_IMODE(node.mode)
    key = node.hardlink
    if key is not None and key in first_path:
        os.link(first_path[key].lstrip(b"/"), name, src_dir_fd=root_fd, dst_dir_fd=pfd, follow_symlinks=False)
        return
    if node.type == DIR:
        try:
            os.mkdir(name, 0o700, dir_fd=pfd)
        except FileExistsError:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                raise UsageError(f"{fsdecode(node.path)}: exists and is not a directory") from None
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=pfd)
        try:
            _set_meta(fd, node, perm, as_root)
        finally:
            os.close(fd)
        return
    if node.type == REG:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=pfd)
        try:
            for data in layer.read_file(node):
                os.write(fd, data)
            _set_meta(fd, node, perm, as_root)
            os.utime(fd, ns=(node.mtime * 10**9, node.mtime * 10**9))
        finally:
            os.close(fd)
        res.files += 1
        res.bytes += node.size
        if key is not None:
            first_path[key] = node.path
        return
    if node.type == SYMLINK:
        os.symlink(node.target or b"", name, dir_fd=pfd)
    elif node.type in (CHR, BLK, FIFO, SOCK):
        fmt = {CHR: stat.S_IFCHR, BLK: stat.S_IFBLK, FIFO: stat.S_IFIFO, SOCK: stat.S_IFSOCK}[node.type]
        try:
            os.mknod(name, fmt | 0o600, node.rdev, dir_fd=pfd)
        except PermissionError:
            res.skipped += 1
            return
    if as_root:
        os.chown(name, node.uid, node.gid, dir_fd=pfd, follow_symlinks=False)
    if node.type != SYMLINK:
        os.chmod(name, perm, dir_fd=pfd)
        for k, v in node.xattrs.items():
            with contextlib.suppress(OSError):
                os.setxattr(f"/proc/self/fd/{pfd}/{fsdecode(name)}", k, v, follow_symlinks=False)
    os.utime(name, ns=(node.mtime * 10**9, node.mtime * 10**9), dir_fd=pfd, follow_symlinks=False)


def _set_meta(fd: int, node: Node, perm: int, as_root: bool) -> None:
    if as_root:
        os.fchown(fd, node.uid, node.gid)
    os.fchmod(fd, perm)
    for k, v in node.xattrs.items():
        try:
            os.setxattr(fd, k, v)
        except OSError as exc:
            if exc.errno not in (errno.ENOTSUP, errno.EPERM):
                raise


def cache_file(layer: Layer, output: str, blob_index: int | None = None) -> int:
    """Write nydusd's blob cache form of one blob: each chunk's decompressed bytes at its
    uncompressed offset, zero-filled, sized to the blob's uncompressed size. Returns that size."""
    r = layer.rafs
    if not r.blobs:
        raise UsageError(f"{layer.path}: the blob table is empty; there is no data to lay out")
    if blob_index is None:
        own = layer.own_blob_index()
        blob_index = own if own is not None else 0
    if not 0 <= blob_index < len(r.blobs):
        raise UsageError(f"{layer.path}: no blob {blob_index} (the table has {len(r.blobs)})")
    entry = r.blobs[blob_index]
    size = entry.uncompressed_size
    bf = layer.blob_file(blob_index)
    seen = set()
    with atomic_output(output) as f:
        for node in r.walk():
            if node.type != REG:
                continue
            for c in r.chunks(node):
                if c.blob_index != blob_index or c.ci_index in seen:
                    continue
                seen.add(c.ci_index)
                if c.uncompressed_offset + c.uncompressed_size > size:
                    raise FormatError("rafs chunk", f"chunk {c.ci_index} lies past the blob's uncompressed size",
                                      value=c.uncompressed_offset)
                f.seek(c.uncompressed_offset)
                f.write(bf.read_chunk(c, r))
        f.truncate(max(size, rafs_v6.BLOCK_SIZE))
    return size
