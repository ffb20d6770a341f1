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
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from .chunks.readahead import Scheduler, decode_group
from .chunks.ref import ChunkRef
from .errors import FormatError, UsageError
from .filedata import iter_file_data
from .formats import rafs_v6, tar_header, tar_member
from .fsutil import atomic_output
from .layer import Layer
from .model import BLK, CHR, DIR, FIFO, REG, SOCK, SYMLINK, Node, fsdecode


@dataclass
class UnpackResult:
    """Counts of what an unpack wrote and skipped."""

    entries: int = 0
    files: int = 0
    bytes: int = 0
    skipped: int = 0


def walk_image(layer: Layer) -> Iterator[Node]:
    """Every node but the root, pre-order in dirent order."""
    it = layer.rafs.walk()
    next(it)
    yield from it


def to_tar(layer: Layer, output: str) -> UnpackResult:
    """Write the layer's tree as a tar (ustar, PAX where needed) to ``output`` ('-' for stdout)."""
    if output == "-":
        return _write_tar(layer, sys.stdout.buffer)
    with atomic_output(output) as f:
        if _positional(f):
            return _write_tar_parallel(layer, f)
        return _write_tar(layer, f)


_TYPEFLAG = {REG: b"0", DIR: b"5", SYMLINK: b"2", CHR: b"3", BLK: b"4", FIFO: b"6"}


def _header(node: Node, name: bytes, typeflag: bytes, size: int, linkname: bytes) -> bytes:
    """The entry's header: a fast plain-ustar path, else tarfile's PAX encoder."""
    if not node.xattrs:
        device = node.type in (CHR, BLK)
        hdr = tar_member.build_ustar(
            name,
            mode=node.mode & 0o7777,
            uid=node.uid,
            gid=node.gid,
            size=size,
            mtime=node.mtime,
            typeflag=typeflag,
            linkname=linkname,
            devmajor=os.major(node.rdev) if device else 0,
            devminor=os.minor(node.rdev) if device else 0,
        )
        if hdr is not None:
            return hdr
    import tarfile

    name, linkname = fsdecode(name), fsdecode(linkname)
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(node.mode)
    info.uid, info.gid = node.uid, node.gid
    info.mtime = node.mtime
    info.uname = info.gname = ""
    info.type = typeflag
    info.size = size
    info.linkname = linkname
    if node.type in (CHR, BLK):
        info.devmajor, info.devminor = os.major(node.rdev), os.minor(node.rdev)
    if node.xattrs:
        info.pax_headers = {
            "SCHILY.xattr." + k.decode("utf-8", "surrogateescape"): v.decode("utf-8", "surrogateescape")
            for k, v in sorted(node.xattrs.items())
        }
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


#: tar(1) pads an archive to a whole record of 20 blocks.
RECORD = 20 * tar_header.BLOCK


def _entries(layer: Layer, res: UnpackResult) -> Iterator[tuple[Node, bytes, bool]]:
    """``(node, header, with_data)`` for every entry of the tar, in order; counts into ``res``.

    ``with_data``: the header is followed by the file's bytes (a regular file's first name).
    """
    first_name: dict[int, bytes] = {}
    root = layer.rafs.root()
    if stat.S_IMODE(root.mode) != 0o755 or root.uid or root.gid or root.mtime or root.xattrs:
        # The layer tar had a "./" entry (the packer's implicit root is 0755 root:root at time 0): keep it.
        res.entries += 1
        yield root, _header(root, b"./", _TYPEFLAG[DIR], 0, b""), False
    for node in walk_image(layer):
        check_extractable(node)  # a tar cannot hold them either
        ntype = node.type
        if ntype == SOCK:
            res.skipped += 1  # tar cannot hold sockets (nydus-image unpack skips them too)
            continue
        name = node.path[1:]
        key = node.hardlink
        data = False
        if key is not None and key in first_name:
            hdr = _header(node, name, b"1", 0, first_name[key])
            res.files += ntype == REG  # every name of a file counts, as in pack (find -type f)
        elif ntype == REG:
            hdr = _header(node, name, b"0", node.size, b"")
            res.files += 1
            res.bytes += node.size
            data = True
            if key is not None:
                first_name[key] = name
        elif ntype == SYMLINK:
            hdr = _header(node, name, b"2", 0, node.target or b"")
        else:
            hdr = _header(node, name, _TYPEFLAG[ntype], 0, b"")
        if key is not None:
            first_name.setdefault(key, name)  # later names of a hard-linked symlink, fifo or device link here
        res.entries += 1
        yield node, hdr, data


def _trailer(written: int) -> bytes:
    """End of archive: two zero blocks, then padding to a whole record as tar(1) does."""
    end = 2 * tar_header.BLOCK
    return bytes(end + -(written + end) % RECORD)


def _write_tar(layer: Layer, f) -> UnpackResult:
    """Sequential writer, for pipes and other streams; a file's data goes out a chunk at a time."""
    res = UnpackResult()
    written = 0
    laid_out: deque[tuple[bytes, bool]] = deque()

    def nodes() -> Iterator:
        for node, hdr, data in _entries(layer, res):
            laid_out.append((hdr, data))
            yield node if data else _HeaderOnly(len(hdr))

    for node, chunks in iter_file_data(layer, nodes()):
        hdr, data = laid_out.popleft()
        f.write(hdr)
        written += len(hdr)
        if data:
            for chunk in chunks or ():
                f.write(chunk)
            pad = -node.size % tar_header.BLOCK
            f.write(_ZEROS[:pad])
            written += node.size + pad
    f.write(_trailer(written))
    return res


class _HeaderOnly:
    """Stands for an entry without data (a later name of a hard-linked file, a directory ...) in the
    read-ahead, which decodes only regular files; ``held``: the bytes of its header, waiting in ``laid_out``
    (the read-ahead's window bounds them: a deep tree's headers are long)."""

    __slots__ = ("held",)
    type = None
    size = 0

    def __init__(self, held: int) -> None:
        self.held = held


def _positional(f) -> bool:
    """Whether ``f`` is a regular file we may write at explicit offsets (pwritev)."""
    try:
        return stat.S_ISREG(os.fstat(f.fileno()).st_mode) and f.tell() == 0
    except (OSError, ValueError, AttributeError):
        return False


#: A task of the parallel writer: a contiguous run of the tar holding about this many bytes of file
#: data (a big file is split between tasks at chunk boundaries), or this many pieces.
GROUP_BYTES = 1 << 20
GROUP_PIECES = 512
#: A slice ends after this many entries, or once its headers (PAX ones can be large: xattrs repeat on
#: every name of a hard-linked file) take this many bytes: what is held is the tar's description, not its data.
SLICE_ENTRIES = 16384
SLICE_HEADER_BYTES = 16 << 20


def _write_tar_parallel(layer: Layer, f) -> UnpackResult:
    """Writer for a regular output file. Every entry's place in the tar follows from the metadata
    alone, so the main thread lays the tar out as pieces (headers, chunks, padding), and worker threads
    decode, check and write contiguous runs of them with one pwritev each; the main thread never touches
    file data.

    The tar is laid out a slice at a time (SLICE_ENTRIES entries, or SLICE_HEADER_BYTES of headers), and
    the workers write one slice while the next is laid out. The first slice is laid out alone: laying out is
    Python work that holds the GIL, and workers decoding many small chunks need it back after every one
    they hash or decode, each hand-over costing them up to a switch interval; so a layer that fits in one
    slice (a Debian rootfs does) is laid out, then written, which took about 15% less time than both at
    once. Larger layers overlap the two from their second slice on, which pays when headers dominate (a
    file with big xattrs and thousands of hard links: 40% less time than in turns). At most two slices are
    held; a worker decodes one run (about GROUP_BYTES plus a chunk) at a time."""
    res = UnpackResult()
    fd = f.fileno()
    writing: list = []
    with Scheduler(os.cpu_count() or 1, name="unpack") as pool:
        try:
            for runs in _layout_slices(layer, res):  # the next slice is laid out while `writing` runs
                for fut in writing:
                    fut.result()
                writing = [pool.submit(_write_run, layer, fd, offset, pieces) for offset, pieces in runs]
            for fut in writing:
                fut.result()
        finally:
            for fut in writing:
                fut.cancel()
    return res


def _layout_slices(layer: Layer, res: UnpackResult) -> Iterator[list[tuple[int, list]]]:
    """The whole tar as runs ``(offset, pieces)`` (headers, chunks, padding, the trailer), a slice of runs
    at a time; counts into ``res``."""
    rafs = layer.rafs
    pos = start = data_bytes = 0
    pieces: list = []
    runs: list[tuple[int, list]] = []
    entries = header_bytes = 0

    def cut() -> None:
        nonlocal pieces, start, data_bytes
        if pieces:
            runs.append((start, pieces))
        pieces, start, data_bytes = [], pos, 0

    for node, hdr, data in _entries(layer, res):
        pieces.append(hdr)
        pos += len(hdr)
        header_bytes += len(hdr)
        if data:
            for c in node.chunks if node.chunks is not None else rafs.chunks(node):
                pieces.append(c)
                pos += c.uncompressed_size
                data_bytes += c.uncompressed_size
                if data_bytes >= GROUP_BYTES:
                    cut()
            pad = -node.size % tar_header.BLOCK
            if pad:
                pieces.append(_ZEROS[:pad])
                pos += pad
        if len(pieces) >= GROUP_PIECES:
            cut()
        entries += 1
        if entries >= SLICE_ENTRIES or header_bytes >= SLICE_HEADER_BYTES:
            cut()
            yield runs
            runs = []
            entries = header_bytes = 0
    pieces.append(_trailer(pos))
    cut()
    yield runs


_IOV_MAX = 1024
_ZEROS = bytes(tar_header.BLOCK)


def _write_run(layer: Layer, fd: int, offset: int, pieces: list) -> None:
    """Decode, check and write one contiguous run of the tar at ``offset`` (a worker task): ``pieces``
    are bytes (headers, padding) and chunks (replaced by their checked, decoded bytes)."""
    decoded = iter(decode_group(layer, [p for p in pieces if isinstance(p, ChunkRef)]))
    parts = [next(decoded) if isinstance(p, ChunkRef) else p for p in pieces]
    while parts:
        batch = parts[:_IOV_MAX]
        want = sum(map(len, batch))
        done = os.pwritev(fd, batch, offset)
        offset += done
        if done == want:
            del parts[: len(batch)]
            continue
        # A short write: drop what went out and retry the rest.
        while done >= len(parts[0]):
            done -= len(parts.pop(0))
        parts[0] = memoryview(parts[0])[done:]


def check_extractable(node: Node) -> None:
    """Refuse what no filesystem (and no tar reader) can hold: a NUL byte in a name, a symlink target or an
    xattr name, a time past the range of a time_t."""
    what = None
    if b"\0" in node.path:
        what = "its name holds a NUL byte"
    elif node.target is not None and b"\0" in node.target:
        what = "its symlink target holds a NUL byte"
    elif any(b"\0" in k for k in node.xattrs):
        what = "an xattr name holds a NUL byte"
    elif not 0 <= node.mtime < 1 << 63:
        what = f"mtime {node.mtime} is out of the range of a time_t"
    if what is not None:
        raise FormatError("erofs inode", f"cannot be extracted: {what}", value=repr(node.path[:200])[2:-1])


#: At most this many directory descriptors are held open along the current path; deeper ones are reopened
#: through ".." when the walk comes back up to them (a descriptor per level would run out at depth 1000).
MAX_OPEN_DIRS = 128


class _DirStack:
    """The directories from the target down to the one being filled, as open descriptors: each entry is
    created relative to its parent's descriptor, whatever its depth (no path is resolved component by
    component per entry, and no symlink is ever followed). A directory's times are set when the walk leaves
    it, after its last child is in."""

    def __init__(self, root_fd: int, target: str) -> None:
        self.root_fd = root_fd
        self.target = target
        # [name, mtime, fd or None, (st_dev, st_ino)] for each directory below the root, outermost first (not
        # the node: its path is as long as its depth, and a stack of them would hold depth squared)
        self.stack: list[list] = []
        self.open = 0

    def parent_fd(self, node: Node) -> int:
        """Leave the directories the walk has finished with and return the descriptor of ``node``'s parent
        (the walk is pre-order, so that parent is on the stack at ``node``'s depth - 1)."""
        level = node.path.count(b"/") - 1
        if level > len(self.stack):
            raise FormatError(
                "erofs dirent", "an entry comes before its directory", value=fsdecode(node.path)
            )
        while len(self.stack) > level:
            self._leave()
        if not self.stack:
            return self.root_fd
        top = self.stack[-1]
        parent = node.path[: node.path.rfind(b"/")]
        if not parent.endswith(b"/" + top[0]):
            raise FormatError(
                "erofs dirent", "an entry comes outside its directory", value=fsdecode(node.path)
            )
        return top[2]

    def enter(self, name: bytes, node: Node, fd: int) -> None:
        st = os.fstat(fd)
        self.stack.append([name, node.mtime, fd, (st.st_dev, st.st_ino)])
        self.open += 1
        if self.open > MAX_OPEN_DIRS:
            far = self.stack[len(self.stack) - MAX_OPEN_DIRS - 1]
            os.close(far[2])
            far[2] = None
            self.open -= 1

    def _leave(self) -> None:
        name, mtime, fd, _ = self.stack.pop()
        try:
            ns = mtime * 10**9
            os.utime(fd, ns=(ns, ns))
            if self.stack and self.stack[-1][2] is None:
                up = self.stack[-1]
                ufd = os.open("..", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                st = os.fstat(ufd)
                if (st.st_dev, st.st_ino) != up[3]:
                    os.close(ufd)
                    raise UsageError(
                        f"{self.target}: directory {fsdecode(up[0])!r} was moved while being extracted"
                    )
                up[2] = ufd
                self.open += 1
        finally:
            os.close(fd)
            self.open -= 1

    def finish(self) -> None:
        while self.stack:
            self._leave()

    def close(self) -> None:
        """Let every descriptor go (after an error: no times are set)."""
        for entry in self.stack:
            if entry[2] is not None:
                os.close(entry[2])
        self.stack.clear()
        self.open = 0


def to_dir(layer: Layer, target: str) -> UnpackResult:
    """Extract into ``target`` (created if absent). Nothing is written outside it: every entry is created
    relative to a descriptor of its parent directory, itself opened with O_NOFOLLOW from the one above, so
    no symlink (ours or one already there) is followed."""
    os.makedirs(target, exist_ok=True)
    root_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    res = UnpackResult()
    as_root = os.geteuid() == 0
    first_path: dict[int, bytes] = {}
    dirs = _DirStack(root_fd, target)
    try:
        for node, data in iter_file_data(layer, walk_image(layer)):
            check_extractable(node)
            name = node.path[node.path.rfind(b"/") + 1 :]
            if name in (b"", b".", b".."):
                raise FormatError(
                    "dirent", "name not allowed in an extracted path", value=fsdecode(node.path)
                )
            pfd = dirs.parent_fd(node)
            fd = _extract_one(node, data, pfd, name, root_fd, first_path, res, as_root)
            if fd is not None:
                dirs.enter(name, node, fd)
            res.entries += 1
        dirs.finish()  # directory times last, deepest first, so adding children does not change them
    finally:
        dirs.close()
        os.close(root_fd)
    return res


def _extract_one(
    node: Node,
    data,
    pfd: int,
    name: bytes,
    root_fd: int,
    first_path: dict[int, bytes],
    res: UnpackResult,
    as_root: bool,
) -> int | None:
    """Create one entry in the directory ``pfd``; for a directory, return its open descriptor."""
    perm = stat.S_IMODE(node.mode)
    key = node.hardlink
    if key is not None and key in first_path:
        os.link(first_path[key].lstrip(b"/"), name, src_dir_fd=root_fd, dst_dir_fd=pfd, follow_symlinks=False)
        res.files += node.type == REG  # every name of a file counts, as in pack (find -type f)
        return None
    if node.type == DIR:
        try:
            os.mkdir(name, 0o700, dir_fd=pfd)
        except FileExistsError:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                raise UsageError(f"{fsdecode(node.path)}: exists and is not a directory") from None
        try:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=pfd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UsageError(
                    f"refusing to extract through {fsdecode(node.path)!r}: it is a symlink or not a directory"
                ) from None
            raise
        try:
            _set_meta(fd, node, perm, as_root)
        except BaseException:
            os.close(fd)
            raise
        return fd
    if node.type == REG:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=pfd)
        try:
            for chunk in data or ():
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
            _set_meta(fd, node, perm, as_root)
            os.utime(fd, ns=(node.mtime * 10**9, node.mtime * 10**9))
        finally:
            os.close(fd)
        res.files += 1
        res.bytes += node.size
        if key is not None:
            first_path[key] = node.path
        return None
    if node.type == SYMLINK:
        os.symlink(node.target or b"", name, dir_fd=pfd)
    elif node.type in (CHR, BLK, FIFO, SOCK):
        fmt = {CHR: stat.S_IFCHR, BLK: stat.S_IFBLK, FIFO: stat.S_IFIFO, SOCK: stat.S_IFSOCK}[node.type]
        try:
            os.mknod(name, fmt | 0o600, node.rdev, dir_fd=pfd)
        except PermissionError:
            res.skipped += 1
            return None
    if as_root:
        os.chown(name, node.uid, node.gid, dir_fd=pfd, follow_symlinks=False)
    if node.type != SYMLINK:
        os.chmod(name, perm, dir_fd=pfd)
    # Symlinks and devices hold trusted.* and security.* xattrs (Linux refuses user.* there).
    for k, v in node.xattrs.items():
        with contextlib.suppress(OSError):
            os.setxattr(f"/proc/self/fd/{pfd}/{fsdecode(name)}", k, v, follow_symlinks=False)
    os.utime(name, ns=(node.mtime * 10**9, node.mtime * 10**9), dir_fd=pfd, follow_symlinks=False)
    if key is not None:
        first_path[key] = node.path
    return None


def _set_meta(fd: int, node: Node, perm: int, as_root: bool) -> None:
    if as_root:
        os.fchown(fd, node.uid, node.gid)
    os.fchmod(fd, perm)
    for k, v in node.xattrs.items():
        try:
            os.setxattr(fd, k, v)
        except OSError as exc:
            if exc.errno not in (errno.ENOTSUP, errno.EPERM):
                raise UsageError(
                    f"{fsdecode(node.path)}: cannot set xattr {fsdecode(k)}: {exc.strerror}"
                ) from None


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
    reader = layer.chunk_reader
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
                    raise FormatError(
                        "rafs chunk",
                        f"chunk {c.ci_index} lies past the blob's uncompressed size",
                        value=c.uncompressed_offset,
                    )
                f.seek(c.uncompressed_offset)
                f.write(reader.decode(c))
        f.truncate(max(size, rafs_v6.BLOCK_SIZE))
    return size
