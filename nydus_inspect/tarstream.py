"""Read OCI layer tars (plain, gzip or zstd; a file or a stream) into a file tree (:class:`TarTree`, held in
columns, its Nodes made as they are asked for).

One streaming pass: regular files' bytes are handed to a callback as a file
object and never held whole, so memory follows metadata, not layer size. Used
by pack (to build a layer) and diff (to describe the source side).

A hard link's own tar header may carry other attributes than the entry that
created its inode. What becomes of them is decided here only (:data:`LINK_HEADER`,
:data:`TARGET_HEADER`, :func:`hardlink_rule`), for every writer and for diff.
"""

from __future__ import annotations

import contextlib
import io
import logging
import mmap
import os
import stat
import sys
import zlib
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import zstandard

from . import decompress
from .errors import FormatError, UsageError
from .formats import tar_member
from .formats._struct import cstr, round_up
from .formats.rafs_v6 import build_xattrs, split_xattr_name, xattr_icount
from .model import BLK, CHR, DIR, FIFO, FMT_OF_TYPE, MAX_SYMLINK, NO_XATTRS, REG, SYMLINK, Node, path_order

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: Longest path we accept from a tar (Linux PATH_MAX).
MAX_PATH = 4096
#: Longest name of one path component (Linux NAME_MAX; an EROFS dirent cannot hold more).
MAX_NAME = 255

#: A hard link's header applies to the inode it names: its permission bits (not on a symlink, whose mode
#: Linux cannot change), owner and mtime replace the inode's, its xattrs are added to the inode's. This is how
#: containerd and moby extract a layer (the link, then chown, setxattr, chmod and utimes on the link's path):
#: the last header naming an inode wins. nydus-image writes the same for RAFS, as long as the link's name
#: comes after its target's in its write order, and it keeps only the target's xattrs.
LINK_HEADER = "link-header"
#: A hard link's header adds a name and nothing else: the inode keeps the attributes of the entry that
#: created it. This is how mkfs.erofs --tar writes a layer, and so what containerd's EROFS differ makes.
TARGET_HEADER = "target-header"


def hardlink_rule(erofs: bool) -> str:
    """The rule a layer of this format follows: the one its reference tool writes (mkfs.erofs for plain
    EROFS, nydus-image and the runtimes' extraction for RAFS), so that ours and theirs hold the same tree."""
    return TARGET_HEADER if erofs else LINK_HEADER


#: ``on_file(node, fobj, ref)``: consume a regular file's bytes from ``fobj``, or, when ``ref`` is
#: ``(fd, offset)`` (a plain tar file), read them with os.pread at that offset (from any thread).
FileCallback = Callable[[Node, BinaryIO, "tuple[int, int] | None"], None]


#: Type codes of the ``types`` column; a further name of an inode (a hard link's) is an entry of its own.
_TYPES = (DIR, REG, SYMLINK, CHR, BLK, FIFO)
_CODE = {t: i for i, t in enumerate(_TYPES)}
_DIR = _CODE[DIR]
_REG = _CODE[REG]
_ALIAS = len(_TYPES)


class TarTree:
    """The file tree a layer tar describes, held as columns: a layer of a million small files would take
    an object per entry and attribute, a dict per directory and a path per entry (several hundred bytes an
    entry) as a tree of :class:`~nydus_inspect.model.Node`; here an entry takes a row of typed arrays and its
    name in one byte string (tens of bytes). What only some entries have (xattrs, symlink targets, device
    numbers, hard-link groups, what a file callback set on its node) is kept by index in dicts.

    An entry is a name in a directory; index 0 is the root. An entry that names an inode made by an earlier
    one (a hard link) has no attributes of its own: ``links`` gives the index it names. Nodes are made one
    at a time as they are asked for (:meth:`walk`, :meth:`node`); :attr:`root` makes the whole tree of them,
    for the writers that change it before writing.
    """

    def __init__(self) -> None:
        self.explicit_root = False
        self.entries = 0
        self.warnings: list[str] = []
        self.names = bytearray()  # every entry's name, one after the other
        self.name_at = array("Q", [0, 0])  # entry i's name is names[name_at[i]:name_at[i + 1]]
        self.parent = array("I", [0])
        self.types = bytearray([_DIR])
        self.mode = array("I", [stat.S_IFDIR | 0o755])
        self.uid = array("I", [0])
        self.gid = array("I", [0])
        self.mtime = array("q", [0])
        self.size = array("Q", [0])
        self.nlink = array("I", [2])
        #: A regular file's number among the files handed to the tar's file callback (-1 for the others).
        self.fileno = array("i", [-1])
        self.xattrs: dict[int, dict[bytes, bytes]] = {}
        self.target: dict[int, bytes] = {}
        self.rdev: dict[int, int] = {}
        self.hardlink: dict[int, int] = {}
        self.links: dict[int, int] = {}  # a hard link's entry -> the entry whose inode it names
        #: What a file callback set on a file's node (``chunks``, ``data``), by index.
        self.file_refs: dict[int, tuple[object, object]] = {}
        #: ``file_view(fileno, node)``: gives a regular file's node, as it is made, what its reader keeps of
        #: it in columns of its own (pack its chunks, diff its digest) instead of an object per file.
        self.file_view: Callable[[int, Node], None] | None = None
        # Set by finish(): the children of directory i are kids[kids_at[i]:kids_at[i + 1]], sorted by name.
        self.kids = array("I")
        self.kids_at = array("I")
        self._root: Node | None = None
        self._last_dir: tuple[int, bytes] = (-1, b"")

    def __len__(self) -> int:
        return len(self.types)

    def name(self, i: int) -> bytes:
        at = self.name_at
        return bytes(self.names[at[i] : at[i + 1]])

    def inode(self, i: int) -> int:
        """The entry holding the attributes of the inode entry ``i`` names."""
        return self.links.get(i, i) if self.types[i] == _ALIAS else i

    def type(self, i: int) -> str:
        return _TYPES[self.types[self.inode(i)]]

    def path(self, i: int) -> bytes:
        """Entry ``i``'s path (the one it was made with: a hard-linked node's first name)."""
        if i == 0:
            return b"/"
        # The entries of a directory are asked for one after another: its path is kept for the next.
        p = self.parent[i]
        if self._last_dir[0] != p:
            self._last_dir = (p, b"" if p == 0 else self.path(p))
        return self._last_dir[1] + b"/" + self.name(i)

    def node(self, i: int, path: bytes | None = None) -> Node:
        """A Node of inode ``i`` (made anew at each call; a directory's has no ``children``)."""
        i = self.inode(i)
        kind = _TYPES[self.types[i]]
        node = Node(
            self.path(i) if path is None else path,
            kind,
            self.mode[i],
            self.uid[i],
            self.gid[i],
            self.mtime[i],
            0,
            self.size[i],
            self.nlink[i],
            self.rdev.get(i, 0) if kind in (CHR, BLK) else 0,
            self.target.get(i),
            self.xattrs.get(i, NO_XATTRS),
            hardlink=self.hardlink.get(i),
        )
        if kind == REG:
            refs = self.file_refs.get(i)
            if refs is not None:
                node.chunks, node.data = refs
            if self.file_view is not None and self.fileno[i] >= 0:
                self.file_view(self.fileno[i], node)
        return node

    def children(self, i: int) -> Iterator[tuple[bytes, int]]:
        """(name, entry) of directory ``i``'s children, sorted by name."""
        kids = self.kids
        for k in range(self.kids_at[i], self.kids_at[i + 1]):
            e = kids[k]
            yield self.name(e), e

    def file_runs(self, keys: Sequence[int]) -> Iterator[tuple[int, int]]:
        """(file number, size) of the regular files among inodes ``keys``, in their order."""
        fileno, size = self.fileno, self.size
        for i in keys:
            k = fileno[i]
            if k >= 0:
                yield k, size[i]

    def files(self) -> int:
        """How many names of regular files the tree has (a hard-linked file counts once per name)."""
        return sum(1 for _, i in self.walk_ids() if self.types[i] == _REG)

    def walk_ids(self) -> Iterator[tuple[bytes, int]]:
        stack: list[tuple[bytes, int]] = [(b"/", 0)]
        types, kids, kids_at = self.types, self.kids, self.kids_at
        links = self.links
        while stack:
            path, e = stack.pop()
            i = links.get(e, e) if types[e] == _ALIAS else e
            yield path, i
            if types[i] == _DIR and kids_at[i] < kids_at[i + 1]:
                base = b"" if i == 0 else path
                for k in range(kids_at[i + 1] - 1, kids_at[i] - 1, -1):
                    e = kids[k]
                    stack.append((base + b"/" + self.name(e), e))

    def walk(self, path_order: bool = False) -> Iterator[tuple[bytes, Node]]:
        """(path, node) pre-order, children sorted by raw name bytes (the order RAFS stores them in); with
        ``path_order``, in the byte order of the paths (:func:`~nydus_inspect.model.path_order`), as
        :meth:`RafsV6.walk <nydus_inspect.model.RafsV6.walk>` gives them, to be compared side by side.

        A hard-linked node appears once per name (a node of its own each time: ``node.hardlink`` tells them
        apart); ``node.path`` is its first name.
        """
        ids = self._walk_path_order() if path_order else self.walk_ids()
        links = self.links
        for path, i in ids:
            yield path, self.node(i, None if i in self.hardlink and links else path)

    def _walk_path_order(self) -> Iterator[tuple[bytes, int]]:
        types = self.types

        def order(d: int) -> Iterator[tuple[tuple[bytes, int], bool]]:
            return iter(
                path_order((name, types[self.inode(e)] == _DIR, (name, e)) for name, e in self.children(d))
            )

        yield b"/", 0
        stack = [(b"", order(0))]
        while stack:
            base, entries = stack[-1]
            for (name, e), expand in entries:
                if expand:
                    stack.append((base + b"/" + name, order(e)))
                    break
                yield base + b"/" + name, self.inode(e)
            else:
                stack.pop()

    # The builder's view of a tree (nydus_inspect.builder): inodes by index, made into nodes one at a time.
    def layout_keys(self) -> array:
        return array("I")

    def layout_root(self) -> int:
        return 0

    def layout_entries(self, i: int) -> list[tuple[bytes, int, str]]:
        """(name, inode, type) of directory ``i``'s children, sorted by name."""
        out = []
        for name, e in self.children(i):
            e = self.inode(e)
            out.append((name, e, _TYPES[self.types[e]]))
        return out

    def layout_linked(self, i: int) -> bool:
        return i in self.hardlink

    def layout_nodes(self, keys: array) -> Sequence[Node]:
        return _Nodes(self, keys)

    @property
    def root(self) -> Node:
        """The whole tree as Nodes linked by their ``children`` (made once): for the writers that change it
        (overlay whiteouts) or look nodes up by identity. A hard-linked inode is one node under all its names."""
        if self._root is None:
            made: dict[int, Node] = {}
            root = self._root = self.node(0, b"/")
            root.children = {}
            stack = [(root, 0)]
            while stack:
                parent, d = stack.pop()
                for name, e in self.children(d):
                    i = self.inode(e)
                    node = made.get(i)
                    if node is None:
                        node = self.node(i)
                        if i in self.hardlink:
                            made[i] = node
                        if node.type == DIR:
                            node.children = {}
                            stack.append((node, i))
                    parent.children[name] = node
        return self._root


class _Nodes(Sequence):
    """The nodes of a tree's inodes in layout order, made as they are asked for; the last one is kept, as
    the writer asks for an inode's node several times in a row."""

    def __init__(self, tree: TarTree, keys: array) -> None:
        self.tree, self.keys = tree, keys
        self.last: tuple[int, Node] | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[j] for j in range(*k.indices(len(self)))]
        last = self.last
        if last is not None and last[0] == k:
            return last[1]
        node = self.tree.node(self.keys[k])
        self.last = (k, node)
        return node


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
            yield decompress.open_gzip(buffered, path)
        elif head == ZSTD_MAGIC:
            yield decompress.open_zstd(buffered, path)
        else:
            yield buffered
    finally:
        if close:
            raw.close()


def check_tar_input(path: str, what: str) -> None:
    """Refuse, before any work starts, a tar input that cannot be read (missing, a directory, no permission):
    bad usage, not a finding. ``-`` and FIFOs are left alone, as they can be read only once."""
    if path == "-":
        return
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise UsageError(f"{what} {path}: is a directory, not a tar")
        if stat.S_ISREG(st.st_mode):
            os.close(os.open(path, os.O_RDONLY))
    except OSError as exc:
        raise UsageError(f"{what} {path}: cannot open: {exc.strerror}") from None


def plain_fd(stream) -> int | None:
    """The file descriptor of an uncompressed, seekable tar file (not a pipe, not a decompressor)."""
    if type(stream) is not io.BufferedReader:
        return None
    try:
        fd = stream.fileno()
        return fd if stream.seekable() and stat.S_ISREG(os.fstat(fd).st_mode) else None
    except (OSError, ValueError):
        return None


def _norm_path(raw: bytes, where: object) -> bytes:
    """The member's path, absolute and normalised ("./a//b/" -> "/a/b"); FormatError if unsafe or too long."""
    rel = raw[2:] if raw.startswith(b"./") else raw
    rel = rel.rstrip(b"/")
    # Most names are already plain: no empty, "." or ".." parts, and short enough all through.
    if (
        len(rel) < MAX_PATH
        and b"//" not in rel
        and b"/." not in rel
        and not rel.startswith((b".", b"/"))
        and (len(rel) <= MAX_NAME or all(len(part) <= MAX_NAME for part in rel.split(b"/")))
    ):
        return b"/" + rel
    parts = []
    for part in raw.split(b"/"):
        if part in (b"", b"."):
            continue
        if part == b"..":
            raise FormatError(
                "tar entry", f"path {os.fsdecode(raw)!r} climbs out of the layer with '..'", value=str(where)
            )
        if len(part) > MAX_NAME:
            raise FormatError(
                "tar entry", f"a path component is longer than {MAX_NAME} bytes", value=str(where)
            )
        parts.append(part)
    path = b"/" + b"/".join(parts)
    if len(path) > MAX_PATH:
        raise FormatError("tar entry", f"path longer than {MAX_PATH} bytes", value=os.fsdecode(raw)[:80])
    return path


def storable_xattr(name: bytes) -> bool:
    """Whether RAFS (and Linux) can hold an xattr of this name: user., trusted., security., POSIX ACLs."""
    try:
        split_xattr_name(name)
    except ValueError:
        return False
    return True


def _xattrs(pax: dict[bytes, bytes], path: bytes, warnings: list[str]) -> dict[bytes, bytes]:
    """The xattrs a member's PAX records carry (GNU/star ``SCHILY.xattr.``, libarchive's base64 form)."""
    out: dict[bytes, bytes] = {}
    for key, value in pax.items():
        if key.startswith(b"SCHILY.xattr."):
            out[key[len(b"SCHILY.xattr.") :]] = value
        elif key.startswith(b"LIBARCHIVE.xattr."):
            import base64  # libarchive's xattr records are rare: not worth their import at start-up
            import urllib.parse

            name = urllib.parse.unquote_to_bytes(key[len(b"LIBARCHIVE.xattr.") :])
            try:
                out[name] = base64.b64decode(value + b"=" * (-len(value) % 4))
            except ValueError:
                raise FormatError(
                    "tar entry",
                    f"{key.decode('utf-8', 'replace')}: the value is not base64",
                    value=os.fsdecode(path),
                ) from None
    for name in out:
        if b"\0" in name:
            raise FormatError(
                "tar entry",
                f"xattr name {name.decode('utf-8', 'replace')[:80]!r} holds a NUL byte",
                value=os.fsdecode(path),
            )
    for name in [n for n in out if not storable_xattr(n)]:
        # macOS tars carry namespace-less xattrs; neither RAFS nor a Linux runtime can hold them.
        warnings.append(
            f"{os.fsdecode(path)}: xattr {os.fsdecode(name)!r} dropped: RAFS stores only user., trusted., "
            "security. and POSIX ACL xattrs"
        )
        del out[name]
    _check_xattr_area(out, path)
    return out


def _check_xattr_area(xattrs: dict[bytes, bytes], path: bytes) -> None:
    try:
        area = build_xattrs(xattrs)
    except ValueError as exc:
        raise FormatError(
            "tar entry",
            f"{exc}: RAFS holds xattr names up to 255 bytes after the namespace and values up to 65535 bytes",
            value=os.fsdecode(path),
        ) from None
    if xattr_icount(len(area)) > 0xFFFF:
        raise FormatError(
            "tar entry",
            f"{len(area)} bytes of xattrs: more than one RAFS inode holds",
            value=os.fsdecode(path),
        )


def _check_numbers(member: TarMember, path: bytes, where: object, warnings: list[str]) -> None:
    """Owners and times must fit RAFS's inode fields; a time before 1970 is stored as 0, with a warning."""
    for what, value in (("uid", member.uid), ("gid", member.gid)):
        if not 0 <= value <= 0xFFFFFFFF:
            raise FormatError("tar entry", f"{what} {value} does not fit RAFS's 32 bits", value=str(where))
    if member.mtime >= 1 << 63:
        raise FormatError("tar entry", f"mtime {member.mtime} is out of range", value=str(where))
    if member.mtime < 0:
        warnings.append(f"{os.fsdecode(path)}: mtime {int(member.mtime)} is before 1970; RAFS stores it as 0")


_TYPE_OF_MEMBER = {
    **dict.fromkeys(tar_member.REGULAR, REG),
    tar_member.DIRECTORY: DIR,
    tar_member.SYMLINK: SYMLINK,
    tar_member.CHAR: CHR,
    tar_member.BLOCK_DEV: BLK,
    tar_member.FIFO: FIFO,
}


@dataclass
class LinkHeader:
    """The attributes a hard link's own header carries (permission bits, owner, mtime, xattrs)."""

    perm: int
    uid: int
    gid: int
    mtime: int
    xattrs: dict[bytes, bytes]


def _table(slots: int) -> tuple[mmap.mmap, memoryview]:
    """A zeroed table of ``slots`` 32-bit slots in an anonymous map, and its view as such."""
    m = mmap.mmap(-1, 4 * slots)
    return m, memoryview(m).cast("I")


class TreeBuilder:
    """Accumulates tar members into a :class:`TarTree` with tar's last-entry-wins semantics; ``hardlinks`` is
    the rule for a hard link's own header (:data:`LINK_HEADER` or :data:`TARGET_HEADER`)."""

    def __init__(self, hardlinks: str = LINK_HEADER) -> None:
        if hardlinks not in (LINK_HEADER, TARGET_HEADER):
            raise ValueError(f"unknown hard link rule {hardlinks!r}")
        self.hardlinks = hardlinks
        self.tree = TarTree()
        self._hardlink_groups = 0
        self._files = 0
        # The entry of each (directory, name): an open-addressing table of entry indexes + 1 (0: a free
        # slot), at most half full, keyed by hash(), which is randomised per process; a dict of a key object
        # per entry would cost more than the entry's whole row. It lives only while the tar is read, in an
        # anonymous map of its own: given back whole when it grows or the tree is finished, it leaves no
        # hole in the heap under the columns and the layout that are made after it.
        self._table_map, self._table = _table(1024)
        self._used = 0
        # Directories by path, so that each entry finds its parent with one lookup. A directory put out of
        # the tree by a later entry of the same name would stay here: any such replacement empties it.
        self._dirs: dict[bytes, int] = {b"": 0}

    def _slot(self, parent: int, name: bytes) -> int:
        """The slot of ``name`` in directory ``parent``, or the free slot where it would go."""
        table = self._table
        mask = len(table) - 1
        tree = self.tree
        at, names, parents = tree.name_at, tree.names, tree.parent
        h = (hash(name) ^ (parent * 0x9E3779B1)) & mask
        n = len(name)
        while True:
            e = table[h]
            if not e:
                return h
            e -= 1
            if parents[e] == parent and at[e + 1] - at[e] == n and names[at[e] : at[e + 1]] == name:
                return h
            h = (h + 1) & mask

    def _grow(self) -> None:
        old_map, old = self._table_map, self._table
        self._table_map, self._table = _table(2 * len(old))
        tree = self.tree
        for e in old:
            if e:
                self._table[self._slot(tree.parent[e - 1], tree.name(e - 1))] = e
        old.release()
        old_map.close()

    def _put(self, slot: int, e: int) -> None:
        if not self._table[slot]:
            self._used += 1
        self._table[slot] = e + 1
        if 2 * self._used > len(self._table):
            self._grow()

    def _child(self, parent: int, name: bytes) -> int:
        """The entry of ``name`` in directory ``parent``, or -1."""
        return self._table[self._slot(parent, name)] - 1

    def _append(self, parent: int, name: bytes, node: Node | None, alias: int = -1) -> int:
        """A new entry (a node's, or a hard link's to entry ``alias``) at the end of the columns."""
        tree = self.tree
        e = len(tree.types)
        tree.names += name
        tree.name_at.append(len(tree.names))
        tree.parent.append(parent)
        if node is None:
            tree.types.append(_ALIAS)
            tree.links[e] = alias
            for col in (tree.mode, tree.uid, tree.gid, tree.mtime, tree.size, tree.nlink):
                col.append(0)
            tree.fileno.append(-1)
            return e
        code = _CODE[node.type]
        tree.types.append(code)
        tree.mode.append(node.mode)
        tree.uid.append(node.uid)
        tree.gid.append(node.gid)
        tree.mtime.append(node.mtime)
        tree.size.append(node.size)
        tree.nlink.append(node.nlink)
        if code == _REG:
            tree.fileno.append(self._files)
            self._files += 1
        else:
            tree.fileno.append(-1)
        if node.xattrs:
            tree.xattrs[e] = node.xattrs
        if node.target is not None:
            tree.target[e] = node.target
        if node.rdev:
            tree.rdev[e] = node.rdev
        if node.hardlink is not None:
            tree.hardlink[e] = node.hardlink
        if node.chunks is not None or node.data is not None:
            tree.file_refs[e] = (node.chunks, node.data)
        return e

    def _set(self, i: int, node: Node) -> None:
        """Entry ``i``'s attributes, all of them, from ``node``: a directory's (or the root's) given again."""
        tree = self.tree
        code = _CODE[node.type]
        tree.types[i] = code
        tree.mode[i], tree.uid[i], tree.gid[i] = node.mode, node.uid, node.gid
        tree.mtime[i], tree.size[i], tree.nlink[i] = node.mtime, node.size, node.nlink
        for col, value, empty in (
            (tree.xattrs, node.xattrs, not node.xattrs),
            (tree.target, node.target, node.target is None),
            (tree.rdev, node.rdev, not node.rdev),
            (tree.hardlink, node.hardlink, node.hardlink is None),
        ):
            if empty:
                col.pop(i, None)
            else:
                col[i] = value  # type: ignore[index]
        if node.chunks is not None or node.data is not None:
            tree.file_refs[i] = (node.chunks, node.data)
        else:
            tree.file_refs.pop(i, None)

    def _implicit_dir(self, parent: int, name: bytes) -> int:
        return self._append(parent, name, Node(path=b"", type=DIR, mode=stat.S_IFDIR | 0o755, nlink=2))

    def _parent(self, path: bytes) -> int:
        parent_path = path[: path.rfind(b"/")]
        d = self._dirs.get(parent_path)
        if d is not None:
            return d
        d = 0
        tree = self.tree
        for part in [p for p in parent_path.split(b"/") if p]:
            slot = self._slot(d, part)
            child = self._table[slot] - 1
            if child < 0 or tree.types[tree.inode(child)] != _DIR:
                # Implicit parent, or a non-directory replaced by the directory tar needs here.
                if child >= 0:
                    self._dirs.clear()
                child = self._implicit_dir(d, part)
                self._put(slot, child)
            d = child
        self._dirs[parent_path] = d
        return d

    def add(self, node: Node) -> None:
        tree = self.tree
        if node.path == b"/":
            if node.type != DIR:
                raise FormatError("tar entry", "the layer root is not a directory", value=node.type)
            self._set(0, node)
            tree.explicit_root = True
            return
        parent = self._parent(node.path)
        name = node.path[node.path.rfind(b"/") + 1 :]
        slot = self._slot(parent, name)
        old = self._table[slot] - 1
        if old >= 0:
            inode = tree.inode(old)
            if tree.types[inode] == _DIR:
                self._dirs.clear()
                if node.type == DIR:
                    # The directory keeps its entries and takes the new entry's attributes.
                    self._set(old, node)
                    return
            elif inode in tree.hardlink:
                tree.nlink[inode] -= 1
        self._put(slot, self._append(parent, name, node))

    def link(self, path: bytes, target_path: bytes, where: object, header: LinkHeader | None = None) -> None:
        """Give the inode at ``target_path`` the name ``path``; ``header`` (the link's own attributes) bears on
        that inode as the builder's rule says."""
        tree = self.tree
        target = self.lookup(target_path)
        if target is None:
            raise FormatError(
                "tar entry",
                f"hard link {os.fsdecode(path)!r} points at "
                f"{os.fsdecode(target_path)!r}, which no earlier entry created",
                value=str(where),
            )
        if tree.types[target] == _DIR:
            raise FormatError(
                "tar entry", f"hard link {os.fsdecode(path)!r} points at a directory", value=str(where)
            )
        if target not in tree.hardlink:
            self._hardlink_groups += 1
            tree.hardlink[target] = self._hardlink_groups
        tree.nlink[target] += 1
        if header is not None and self.hardlinks == LINK_HEADER:
            if tree.types[target] != _CODE[SYMLINK]:
                tree.mode[target] = stat.S_IFMT(tree.mode[target]) | (header.perm & 0o7777)
            tree.uid[target], tree.gid[target], tree.mtime[target] = header.uid, header.gid, header.mtime
            if header.xattrs:
                merged = {**tree.xattrs.get(target, NO_XATTRS), **header.xattrs}
                _check_xattr_area(merged, path)
                tree.xattrs[target] = merged
        parent = self._parent(path)
        name = path[path.rfind(b"/") + 1 :]
        slot = self._slot(parent, name)
        old = self._table[slot] - 1
        if old >= 0 and tree.types[tree.inode(old)] == _DIR:
            self._dirs.clear()
        self._put(slot, self._append(parent, name, None, target))

    def lookup(self, path: bytes) -> int | None:
        """The inode (its entry) at ``path``, or None."""
        tree = self.tree
        i = 0
        for part in [p for p in path.split(b"/") if p]:
            if tree.types[i] != _DIR:
                return None
            e = self._child(i, part)
            if e < 0:
                return None
            i = tree.inode(e)
        return i

    def finish(self) -> TarTree:
        """The tree, its directories' children sorted and their link counts set (2 + child directories)."""
        tree = self.tree
        n = len(tree.types)
        types, parents = tree.types, tree.parent
        table = self._table
        self._dirs = {}
        # Children grouped by directory (a counting sort of the entries in the table: those the tree holds),
        # no temporary column beside them.
        count = array("I", [0]) * (n + 1)
        for i in range(n):
            if types[i] == _DIR:
                tree.nlink[i] = 2
        for e in table:
            if e:
                p = parents[e - 1]
                count[p + 1] += 1
                if types[e - 1] == _DIR:
                    tree.nlink[p] += 1
        for i in range(n):
            count[i + 1] += count[i]
        kids = array("I", [0]) * count[n]
        for e in table:
            if e:
                p = parents[e - 1]
                kids[count[p]] = e - 1
                count[p] += 1
        # count[p] is now where p's children end, which is where p + 1's begin.
        for i in range(n, 0, -1):
            count[i] = count[i - 1]
        count[0] = 0
        table.release()
        self._table_map.close()
        self._table = memoryview(b"").cast("I")
        at, names = tree.name_at, tree.names
        for i in range(n):
            a, b = count[i], count[i + 1]
            if b - a > 1:
                kids[a:b] = array("I", sorted(kids[a:b], key=lambda e: names[at[e] : at[e + 1]]))
        tree.kids, tree.kids_at = kids, count
        return tree


#: Progress is reported at least this often (bytes of input), and after each entry.
PROGRESS_STEP = 1 << 20


class _Source:
    """Sequential reads over a tar: a mapped plain file (slices of memory, no system call per
    header) or any byte stream (exact reads, forward skips). Counts what it consumed."""

    def __init__(
        self, stream: BinaryIO | None, mapped: mmap.mmap | None, progress: Callable[[int], None] | None
    ) -> None:
        self.stream = stream
        self.mapped = mapped
        self.size = len(mapped) if mapped is not None else -1
        self.pos = 0
        self.released = 0
        self.progress = progress
        self.reported = 0
        if mapped is not None and hasattr(mmap, "MADV_SEQUENTIAL"):
            mapped.madvise(mmap.MADV_SEQUENTIAL)

    def _release(self, pos: int | None = None) -> None:
        # Keep one step behind the reader mapped: pack workers pread the data, never through the map.
        upto = ((self.pos if pos is None else pos) - self.RELEASE_STEP) // mmap.PAGESIZE * mmap.PAGESIZE
        if upto > self.released and hasattr(mmap, "MADV_DONTNEED"):
            self.mapped.madvise(mmap.MADV_DONTNEED, self.released, upto - self.released)
            self.released = upto

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes: fewer only at the end of the input."""
        if self.mapped is not None:
            data = self.mapped[self.pos : self.pos + n]
        else:
            data = self.stream.read(n)
            if 0 < len(data) < n:
                parts = [data]
                got = len(data)
                while got < n:
                    more = self.stream.read(n - got)
                    if not more:
                        break
                    parts.append(more)
                    got += len(more)
                data = b"".join(parts)
        self.pos += len(data)
        if self.progress is not None and self.pos - self.reported >= PROGRESS_STEP:
            self.reported = self.pos
            self.progress(self.pos)
        return data

    #: Mapped pages behind the reader are let go in steps of this many bytes, so that the resident size
    #: of a pack follows its window, not the size of the tar (the page cache keeps them as before). Up to
    #: two steps stay resident: small beside the 256 MiB a command may take, and one madvise per step.
    RELEASE_STEP = 8 << 20

    def skip(self, n: int) -> int:
        """Move ``n`` bytes forward; returns how many were there."""
        if self.mapped is not None:
            step = min(n, self.size - self.pos)
            self.pos += step
            if self.pos - self.released >= 2 * self.RELEASE_STEP:
                self._release()
            return step
        done = 0
        while done < n:
            data = self.read(min(n - done, 1 << 20))
            if not data:
                break
            done += len(data)
        return done

    def file(self, size: int) -> BinaryIO:
        """A reader of the next ``size`` bytes (a member's data)."""
        if self.mapped is not None:
            return _MappedFile(self, self.pos, size)  # type: ignore[return-value]
        return _Limited(self, size)  # type: ignore[return-value]


class _MappedFile:
    """``read(n)`` over ``size`` bytes of a mapped tar from ``start``; copies only what is read, and lets the
    pages behind it go as the source does (a file of gigabytes read through the map would keep them all)."""

    def __init__(self, source: _Source, start: int, size: int) -> None:
        self.source = source
        self.mapped = source.mapped
        self.pos = start
        self.end = start + size

    def read(self, n: int = -1) -> bytes:
        stop = self.end if n < 0 else min(self.end, self.pos + n)
        data = self.mapped[self.pos : stop]
        self.pos = stop
        if stop - self.source.released >= 2 * _Source.RELEASE_STEP:
            self.source._release(stop)
        return data


class _Limited:
    """``read(n)`` over the next ``size`` bytes of a stream source."""

    def __init__(self, source: _Source, size: int) -> None:
        self.source = source
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.source.read(n)
        self.left -= len(data)
        return data


def _map(fd: int | None) -> mmap.mmap | None:
    """The whole plain tar file mapped read-only, or None (empty, or not mappable)."""
    if fd is None:
        return None
    try:
        return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return None


class TarMember:
    """One entry of the tar, with its PAX and GNU long-name records applied."""

    __slots__ = (
        "path",
        "linkname",
        "type",
        "mode",
        "uid",
        "gid",
        "mtime",
        "size",
        "devmajor",
        "devminor",
        "pax",
        "offset",
        "offset_data",
    )

    def __init__(
        self,
        header: tar_member.Header,
        pax: dict[bytes, bytes],
        longname: bytes | None,
        longlink: bytes | None,
        offset_data: int,
    ) -> None:
        self.path = longname if longname is not None else header.name
        self.linkname = longlink if longlink is not None else header.linkname
        self.type = header.type
        self.mode = header.mode
        self.uid, self.gid, self.mtime, self.size = header.uid, header.gid, header.mtime, header.size
        self.devmajor, self.devminor = header.devmajor, header.devminor
        self.pax = pax
        self.offset = header.offset
        self.offset_data = offset_data
        if pax:
            self._apply_pax(pax)

    def _apply_pax(self, pax: dict[bytes, bytes]) -> None:
        where = self.offset
        for key, attr, conv in (
            (b"path", "path", None),
            (b"linkpath", "linkname", None),
            (b"size", "size", int),
            (b"uid", "uid", int),
            (b"gid", "gid", int),
            (b"mtime", "mtime", _pax_time),
        ):
            value = pax.get(key)
            if not value:
                continue  # absent, or emptied (POSIX: an empty value cancels the record)
            if conv is None and b"\0" in value:
                # A ustar name ends at its first NUL; a PAX record has a length, so one inside is part of
                # the name, which no filesystem can hold (and a C reader would cut it there).
                raise FormatError(
                    "tar PAX header", f"{key.decode()} {value[:80]!r} holds a NUL byte", offset=where
                )
            if conv is not None:
                try:
                    value = conv(value)
                except ValueError:
                    raise FormatError(
                        "tar PAX header", f"{key.decode()}={value!r} is not a number", offset=where
                    ) from None
                if key != b"mtime" and value < 0:
                    raise FormatError("tar PAX header", f"{key.decode()}={value} is negative", offset=where)
            setattr(self, attr, value)

    @property
    def sparse(self) -> bool:
        return self.type == tar_member.GNU_SPARSE or any(k.startswith(b"GNU.sparse.") for k in self.pax)


def _pax_time(value: bytes) -> int:
    text = value.decode("ascii")
    whole, _, frac = text.partition(".")
    if frac and not frac.isdigit():
        raise ValueError(text)
    return int(whole) if whole not in ("", "-") else 0


def iter_members(source: _Source, where: str) -> Iterator[TarMember]:
    """The tar's members in order, up to the end of the input at a header boundary. Member data is left
    to the caller: each member's data begins at ``source.pos`` when it is yielded, and the walk skips
    whatever the caller did not consume.

    Zero blocks are read past, as ``tar --ignore-zeros`` and nydus-image do: a layer made by concatenating
    tars holds the members of all of them. After the end-of-archive blocks, anything that is not a tar
    header (padding, trailing bytes) ends the archive, as it did before zero blocks were read past."""
    global_pax: dict[bytes, bytes] = {}
    pax: dict[bytes, bytes] | None = None
    longname = longlink = None
    first = True
    ended = False  # an end-of-archive block was seen: what follows is a further tar or nothing
    while True:
        offset = source.pos
        block = source.read(tar_member.BLOCK)
        if not block or block == tar_member.ZERO_BLOCK:
            if pax is not None or longname is not None or longlink is not None:
                raise FormatError(
                    "tar",
                    f"{where}: the archive ends after an extended header, before its entry",
                    offset=offset,
                )
            if not block:
                return
            ended = True
            continue
        try:
            header = tar_member.parse_header(block, offset)
        except FormatError as exc:
            if ended:
                return
            if first:
                raise FormatError("tar", f"{where}: not a tar: {exc}", offset=offset) from None
            raise
        first = ended = False
        kind = header.type
        data_start = source.pos
        if kind in (
            tar_member.PAX_LOCAL,
            tar_member.PAX_GLOBAL,
            tar_member.GNU_LONGNAME,
            tar_member.GNU_LONGLINK,
        ):
            if header.size > tar_member.MAX_META_DATA:
                raise FormatError(
                    "tar header",
                    f"extended header of {header.size} bytes (at most {tar_member.MAX_META_DATA} read)",
                    field="size",
                    offset=offset + 124,
                )
            data = source.read(header.data_blocks)
            if len(data) < header.size:
                raise FormatError(
                    "tar", f"{where}: the input ends inside an extended header", offset=data_start
                )
            data = data[: header.size]
            if kind == tar_member.GNU_LONGNAME:
                longname = cstr(data)
            elif kind == tar_member.GNU_LONGLINK:
                longlink = cstr(data)
            else:
                records = tar_member.parse_pax(data, data_start)
                if kind == tar_member.PAX_GLOBAL:
                    global_pax.update(records)
                    marker = TarMember(header, {}, None, None, data_start)  # tells the caller to warn
                    marker.pax = records
                    yield marker
                else:
                    pax = records if pax is None else {**pax, **records}
            continue
        merged = {**global_pax, **pax} if global_pax and pax else (pax or global_pax)
        member = TarMember(header, merged, longname, longlink, data_start)
        pax = None
        longname = longlink = None
        # Only regular files own data blocks (as GNU tar and Python's tarfile read them).
        owned = round_up(member.size, tar_member.BLOCK) if kind in tar_member.REGULAR else 0
        if source.size >= 0 and data_start + member.size > source.size and kind in tar_member.REGULAR:
            raise FormatError(
                "tar",
                f"{where}: the input ends inside the data of {os.fsdecode(member.path)!r}",
                offset=data_start,
            )
        yield member
        consumed = source.pos - data_start
        if consumed < owned and consumed + source.skip(owned - consumed) < member.size:
            raise FormatError(
                "tar",
                f"{where}: the input ends inside the data of {os.fsdecode(member.path)!r}",
                offset=data_start,
            )
        if source.progress is not None:
            source.reported = source.pos
            source.progress(source.pos)


class _Where:
    """Names an entry in messages ("SOURCE entry N (PATH)"); the text is made only if a message needs it."""

    __slots__ = ("source", "index", "path")

    def __init__(self, source: str, index: int, path: bytes) -> None:
        self.source, self.index, self.path = source, index, path

    def __str__(self) -> str:
        return f"{self.source} entry {self.index} ({os.fsdecode(self.path)})"


def read_tar(
    stream: BinaryIO,
    on_file: FileCallback | None = None,
    source: str = "tar",
    progress: Callable[[int], None] | None = None,
    skip: frozenset[bytes] = frozenset(),
    hardlinks: str = LINK_HEADER,
) -> TarTree:
    """Stream the tar and build its tree; ``on_file(node, fileobj, ref)`` consumes each regular file's bytes.

    ``progress(n)`` is told how many input bytes have been consumed. Entries whose path is in ``skip`` are
    read past (their data too) and left out of the tree. ``hardlinks``: what a hard link's own header does
    (:data:`LINK_HEADER`, :data:`TARGET_HEADER`).
    """
    builder = TreeBuilder(hardlinks)
    index = 0
    fd = plain_fd(stream)
    if fd is not None and stream.tell() != 0:
        fd = None  # a file already read from: take it as a stream from where it stands
    # A plain tar file is mapped: each header is then read from memory, instead of a system call per
    # header that gives up the GIL to the pack workers and waits to get it back.
    mapped = _map(fd)
    src = _Source(None if mapped is not None else stream, mapped, progress)
    try:
        for member in iter_members(src, source):
            if member.type == tar_member.PAX_GLOBAL:
                builder.tree.warnings.append(
                    f"{source}: PAX global header applied to the entries after it: "
                    f"{sorted(k.decode('utf-8', 'replace') for k in member.pax)}"
                )
                continue
            index += 1
            where = _Where(source, index, member.path)
            path = _norm_path(member.path, where)
            if path in skip:
                continue
            if member.sparse:
                raise UsageError(
                    f"{where}: GNU sparse files are not supported; re-create the tar without --sparse"
                )
            if member.type == tar_member.HARDLINK:
                header = None
                if hardlinks == LINK_HEADER:  # a header that is ignored is not checked either, as mkfs.erofs
                    _check_numbers(member, path, where, builder.tree.warnings)
                    header = LinkHeader(
                        member.mode,
                        member.uid,
                        member.gid,
                        int(member.mtime),
                        _xattrs(member.pax, path, builder.tree.warnings) if member.pax else {},
                    )
                builder.link(path, _norm_path(member.linkname, where), where, header)
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
                xattrs=_xattrs(member.pax, path, builder.tree.warnings) if member.pax else NO_XATTRS,
            )
            if ntype == SYMLINK:
                node.target = member.linkname
                node.size = len(node.target)
                if not node.target:
                    raise FormatError("tar entry", "symlink with an empty target", value=str(where))
                if len(node.target) > MAX_SYMLINK:
                    raise FormatError(
                        "tar entry", f"symlink target longer than {MAX_SYMLINK} bytes", value=str(where)
                    )
            elif ntype in (CHR, BLK):
                if not (0 <= member.devmajor < 1 << 12 and 0 <= member.devminor < 1 << 20):
                    raise FormatError(
                        "tar entry",
                        f"device {member.devmajor},{member.devminor}: Linux (and RAFS) "
                        "device numbers have 12-bit majors and 20-bit minors",
                        value=str(where),
                    )
                node.rdev = os.makedev(member.devmajor, member.devminor)
            if ntype == REG and on_file is not None:
                on_file(node, src.file(node.size), (fd, member.offset_data) if mapped is not None else None)
            builder.add(node)
        if isinstance(stream, decompress.CheckedInput):
            # The tar ends before its compressed input does: what follows holds the checksums.
            stream.read_to_end()
    except (EOFError, OSError, zlib.error, zstandard.ZstdError) as exc:  # gzip's BadGzipFile is an OSError
        raise FormatError("tar", f"{source}: not a readable tar after {index} entries: {exc}") from None
    finally:
        if mapped is not None:
            mapped.close()
    builder.tree.entries = index
    return builder.finish()
