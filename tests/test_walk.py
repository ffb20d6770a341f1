"""The one bootstrap walk (RafsV6.walk) and its error policy: raise on the first problem, or report each one
and go on; what it keeps is linear in depth, and so is the file index built on it."""

from __future__ import annotations

import pickle
import tracemalloc

import hostile
import pytest

from nydus_inspect.errors import FormatError
from nydus_inspect.model import WALK_CYCLE, WALK_DECODE, WALK_LINKED_TWICE, RafsV6, fsdecode
from nydus_inspect.query import FileIndex, PathTable


def _tree() -> dict:
    return {
        b"/a": {"type": "dir"},
        b"/a/bad": {"type": "file"},
        b"/a/good": {"type": "file"},
        b"/b": {"type": "dir"},
        b"/b/inner": {"type": "dir"},
        b"/b/inner/f": {"type": "file"},
        b"/z": {"type": "symlink", "target": b"a/good"},
    }


def _with_bad_inode(path: bytes) -> bytes:
    """The tree above with the inode at ``path`` given format bits no reader knows."""
    boot = bytearray(hostile.bootstrap(_tree()))
    r = RafsV6(bytes(boot))
    off = r.inode_offset(r.lookup(path).nid)
    boot[off] |= 0xF0
    return bytes(boot)


def _paths(nodes) -> list[str]:
    return [fsdecode(n.path) for n in nodes]


def test_strict_and_reporting_walks_agree_on_a_good_tree():
    r = RafsV6(hostile.bootstrap(_tree()))
    errors = []
    strict = _paths(r.walk())
    assert strict == ["/", "/a", "/a/bad", "/a/good", "/b", "/b/inner", "/b/inner/f", "/z"]
    assert _paths(r.walk(on_error=errors.append)) == strict and errors == []
    # From a sub-directory, paths keep their prefix.
    assert _paths(r.walk(r.lookup(b"/b"))) == ["/b", "/b/inner", "/b/inner/f"]


def test_bad_inode_raises_or_is_reported_and_skipped():
    r = RafsV6(_with_bad_inode(b"/a/bad"))
    with pytest.raises(FormatError, match="unknown format bits"):
        list(r.walk())
    errors = []
    got = _paths(r.walk(on_error=errors.append))
    assert got == ["/", "/a", "/a/good", "/b", "/b/inner", "/b/inner/f", "/z"]
    [err] = errors
    assert (err.path, err.kind) == (b"/a/bad", WALK_DECODE) and "unknown format bits" in str(err.error)


def test_bad_directory_is_reported_and_its_siblings_walked():
    r = RafsV6(_with_bad_inode(b"/b/inner"))
    errors = []
    assert _paths(r.walk(on_error=errors.append)) == ["/", "/a", "/a/bad", "/a/good", "/b", "/z"]
    assert [(e.path, e.kind) for e in errors] == [(b"/b/inner", WALK_DECODE)]


def _dirent_nid_offset(r: RafsV6, dir_path: bytes, name: bytes) -> int:
    from nydus_inspect.formats import rafs_v6

    nid = r.lookup(dir_path).nid
    ino = r.inode(nid)
    base = r.inode_offset(nid) + ino.inode_size + ino.xattr_size
    block = bytes(r.buf[base : base + ino.i_size])
    [i] = [i for i, d in enumerate(rafs_v6.parse_dir_block(block, base, nid)) if d.name == name]
    return base + 12 * i


@pytest.mark.parametrize(
    ("target", "kind", "message"), [(b"/b", WALK_CYCLE, "cycle"), (b"/a", WALK_LINKED_TWICE, "linked twice")]
)
def test_cycles_and_directories_linked_twice(target, kind, message):
    # /b/inner is made to name /b (a cycle) or /a (a directory with two names).
    boot = bytearray(hostile.bootstrap(_tree()))
    r = RafsV6(bytes(boot))
    at = _dirent_nid_offset(r, b"/b", b"inner")
    boot[at : at + 8] = r.lookup(target).nid.to_bytes(8, "little")
    r = RafsV6(bytes(boot))
    with pytest.raises(FormatError, match=message):
        list(r.walk())
    errors = []
    got = _paths(r.walk(on_error=errors.append))
    assert got[-2:] == ["/b/inner", "/z"]  # named, not entered; the walk goes on after it
    assert [(e.path, e.kind) for e in errors] == [(b"/b/inner", kind)]


def test_deep_tree_walk_keeps_linear_state():
    """4,000 nested 255-byte names: the walk and the file index hold about one path (1 MB), not every
    ancestor's (2 GB)."""
    boot = hostile.deep_bootstrap()
    r = RafsV6(boot)
    tracemalloc.start()
    try:
        count = 0
        longest = 0
        for node in r.walk():
            count += 1
            longest = max(longest, len(node.path))
        _, walk_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        index = FileIndex()
        for node in r.walk(on_error=index.errors.append):
            index.add_path(node.path, node.type == "dir")
        _, index_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 4002 and longest == 4000 * 256 + len(b"/bottom")
    assert walk_peak < 16 * longest, walk_peak
    assert index_peak < 16 * longest, index_peak
    assert index.paths[len(index.paths) - 1].endswith(b"/bottom") and len(index.paths[-1]) == longest
    assert index.errors == []


def test_path_table_rebuilds_paths_and_pickles():
    paths = [b"/", b"/a", b"/a/b", b"/a/c", b"/a/c/x", b"/z", b"/y", b"/y/q"]
    dirs = {b"/", b"/a", b"/a/c", b"/y"}
    table = PathTable()
    for p in paths:
        table.append(p, p in dirs)
    assert list(table) == paths and len(table) == len(paths)
    assert table.index(b"/a/c/x") == 4 and table[-1] == b"/y/q"
    names = [table.name(i) for i in range(len(table))]
    assert names == [b"/", b"a", b"b", b"c", b"x", b"z", b"y", b"q"]  # one name each, not whole paths
    assert list(pickle.loads(pickle.dumps(table))) == paths
    with pytest.raises(ValueError):
        table.index(b"/a/q")
