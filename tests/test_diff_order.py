"""diff takes both sides in the byte order of their paths, side by side, instead of holding a dict of each:
the walks of a bootstrap and of a tar's tree give that order themselves (a directory's contents sort as its
name followed by "/", which need not come right after the name), and the streamed comparison names the same
differences, in the same order, as comparing the two trees held whole."""

from __future__ import annotations

import io

import hostile
from fixtures_util import run_cli

from nydus_inspect.diff import LayerEntries, TarEntries, compare, describe, diff_paths
from nydus_inspect.layer import Layer
from nydus_inspect.model import RafsV6, fsdecode
from nydus_inspect.tarstream import read_tar

# Names that sort between a directory's name and its contents: "-" and "." come before "/", "0" after;
# a byte above 0x7f sorts after everything ASCII.
TRICKY = {
    b"/a": {"type": "dir"},
    b"/a/c": {"type": "file"},
    b"/a/c2": {"type": "dir"},
    b"/a/c2/z": {"type": "file"},
    b"/a-b": {"type": "file"},
    b"/a.d": {"type": "dir"},
    b"/a.d/x": {"type": "file"},
    b"/a0": {"type": "file"},
    b"/a\xff": {"type": "dir"},
    b"/a\xff/q": {"type": "symlink", "target": b"../a0"},
    b"/ab": {"type": "file"},
}


def _walked(r: RafsV6, **kw) -> list[bytes]:
    return [n.path for n in r.walk(**kw)]


def test_the_bootstrap_walk_in_path_order_gives_sorted_paths():
    r = RafsV6(hostile.bootstrap(TRICKY))
    dirent_order = _walked(r)
    got = _walked(r, path_order=True)
    assert got == sorted(dirent_order) == [b"/", *sorted(TRICKY)]
    # Not the dirent order: the test would not tell the two apart otherwise.
    assert got != dirent_order


def test_a_bad_directory_is_reported_once_in_path_order():
    boot = bytearray(hostile.bootstrap(TRICKY))
    r = RafsV6(bytes(boot))
    boot[r.inode_offset(r.lookup(b"/a").nid)] |= 0xF0
    errors = []
    got = _walked(RafsV6(bytes(boot)), path_order=True, on_error=errors.append)
    assert [e.path for e in errors] == [b"/a"]
    assert got == [b"/", *sorted(p for p in TRICKY if not p.startswith(b"/a/") and p != b"/a")]


def _tricky_tar(changed: bool = False) -> bytes:
    out = b""
    for path, attrs in TRICKY.items():
        name = path[1:]
        if attrs["type"] == "dir":
            out += hostile.member(name + b"/", typeflag=b"5", mode=0o755)
        elif attrs["type"] == "symlink":
            out += hostile.member(name, typeflag=b"2", linkname=attrs["target"])
        else:
            data = b"changed" if changed and path == b"/a-b" else fsdecode(path).encode()
            out += hostile.member(name, data)
    if changed:
        out += hostile.member(b"a.d/new", b"new")
    # Two names of one inode: the layer's walk meets them far apart.
    out += hostile.member(b"a/c2/linked", b"shared")
    out += hostile.member(b"zz", typeflag=b"1", linkname=b"a/c2/linked")
    if not changed:
        out += hostile.member(b"a-c", typeflag=b"1", linkname=b"a/c2/linked")
    return out + hostile.END


def test_the_tar_tree_walk_in_path_order_gives_sorted_paths():
    tree = read_tar(io.BytesIO(_tricky_tar()))
    got = [p for p, _ in tree.walk(path_order=True)]
    assert got == sorted(p for p, _ in tree.walk()) and got != [p for p, _ in tree.walk()]


def test_the_streamed_comparison_names_what_whole_trees_do(tmp_path):
    src, other = tmp_path / "src.tar", tmp_path / "other.tar"
    src.write_bytes(_tricky_tar())
    other.write_bytes(_tricky_tar(changed=True))
    blob = tmp_path / "layer.blob"
    assert run_cli("pack", "-q", src, "-o", blob).returncode == 0
    assert diff_paths(str(src), str(blob)) == []

    got = [(d.path, d.field, d.expected, d.found) for d in diff_paths(str(other), str(blob))]
    whole = [
        (d.path, d.field, d.expected, d.found) for d in compare(describe(str(other)), describe(str(blob)))
    ]
    assert got == whole
    fields = [(p, f) for p, f, _, _ in got]
    assert fields == [
        (b"/a-b", "size"),
        (b"/a-b", "sha256"),
        (b"/a-c", "presence"),
        (b"/a.d/new", "presence"),
        (b"/a/c2/linked", "hardlinks"),
        (b"/zz", "hardlinks"),
    ]
    # The layer's group is known only when its walk ends; its difference still comes in path order.
    assert got[4][2:] == ((b"/a/c2/linked", b"/zz"), (b"/a-c", b"/a/c2/linked", b"/zz"))

    # Layer to layer: both sides streamed.
    blob2 = tmp_path / "other.blob"
    assert run_cli("pack", "-q", other, "-o", blob2).returncode == 0
    with Layer(str(blob2)) as a, Layer(str(blob)) as b:
        streamed = [(d.path, d.field) for d in compare(LayerEntries(a), LayerEntries(b))]
    assert streamed == fields


def test_the_tar_side_counts_every_name(tmp_path):
    src = tmp_path / "src.tar"
    src.write_bytes(_tricky_tar())
    # The root, the entries, and three names of the hard-linked inode.
    assert len(TarEntries(str(src))) == 1 + len(TRICKY) + 3
