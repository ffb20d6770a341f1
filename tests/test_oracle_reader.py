"""Their layers in our reader: what the real `nydus-image create` writes (tar-rafs with and without inline
metadata and ToC, each compressor and digester, chunk sizes from 0x1000 to 0x1000000, dir-rafs from a
directory, RAFS v5 and v6) reads in nydus-inspect with the tree and bytes the real `nydusd` serves for
it: `ls -R`/`cat` (through diff.describe), `verify`, `unpack` and our own FUSE mount. What we cannot read
yet is a one-line error naming the feature, never a wrong tree."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tarfile
import time
from pathlib import Path

import pytest
from fixtures_util import (
    FILE_TYPES,
    Want,
    assert_dir_matches,
    assert_tree_matches,
    expected_tree,
    fixture_tars_fixture,  # noqa: F401
    run_cli,
    source_tar,
)

from oracle import INLINE, TAR_RAFS, Oracle

# The inputs nydus-image accepts (test_oracle_fields names the ones it refuses).
PLAIN = ["fixture:dedup.tar", "fixture:longnames.tar", "fixture:whiteouts.tar", "vector:all-entry-type.tar"]


def want_from_dir(root: Path, zero_mtime_shown_as: tuple[int, int] = (0, 0)) -> dict[bytes, Want]:
    """path -> Want for everything below ``root`` as the kernel shows it (lstat, xattrs, inode
    identity for hard links): the tree a real nydusd mount serves. An mtime in ``zero_mtime_shown_as``
    is taken as 0: nydusd serves its own start time for an inode whose mtime is 0."""
    base = os.fsencode(str(root))
    out: dict[bytes, Want] = {}
    by_inode: dict[int, Want] = {}
    for dirpath, dirnames, filenames in os.walk(base):
        entries = [dirpath] if dirpath == base else []
        for full in entries + [os.path.join(dirpath, n) for n in dirnames + filenames]:
            rel = full[len(base) :] or b"/"
            st = os.lstat(full)
            kind = FILE_TYPES[stat.S_IFMT(st.st_mode)]
            if kind != "dir" and st.st_nlink > 1 and st.st_ino in by_inode:
                want = by_inode[st.st_ino]
                want.names.append(rel)
                out[rel] = want
                continue
            want = Want(
                type=kind,
                mode=stat.S_IMODE(st.st_mode),
                uid=st.st_uid,
                gid=st.st_gid,
                mtime=st.st_mtime_ns // 10**9,
                names=[rel],
            )
            if zero_mtime_shown_as[0] <= want.mtime <= zero_mtime_shown_as[1]:
                want.mtime = 0
            want.xattrs = {
                os.fsencode(n): os.getxattr(full, n, follow_symlinks=False)
                for n in os.listxattr(full, follow_symlinks=False)
            }
            if kind == "file":
                h = hashlib.sha256()
                with open(full, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                want.size, want.sha256 = st.st_size, h.hexdigest()
            elif kind == "symlink":
                want.target = os.readlink(full)
            elif kind in ("char", "block"):
                want.rdev = st.st_rdev
            if kind != "dir" and st.st_nlink > 1:
                by_inode[st.st_ino] = want
            out[rel] = want
    return out


def served_by_nydusd(oracle: Oracle, boot: Path, blobs: Path, work: Path) -> dict[bytes, Want]:
    started = int(time.time())
    with oracle.mount(boot, blobs, work / "nydusd") as mnt:
        return want_from_dir(mnt, (started, int(time.time()) + 1))


def listed_as_wanted(layer: Path, want: dict[bytes, Want], *reader_args) -> None:
    """The command line's `ls -R --json` lists exactly the paths of ``want``, each with its type, mode, owner,
    mtime (where ``want`` knows it: nydusd shows an mtime of 0 as its own start time), size, link target and
    hard-link group."""
    ls = run_cli("ls", layer, *reader_args, "-R", "--json")
    assert ls.returncode == 0, ls.stderr
    listed = {os.fsencode(n["path"]): n for n in json.loads(ls.stdout)}
    assert set(listed) == set(want) | {b"/"}, set(listed) ^ (set(want) | {b"/"})
    for path, w in want.items():
        got = listed[path]
        assert (got["type"], got["uid"], got["gid"]) == (w.type, w.uid, w.gid), path
        if w.type != "symlink":
            assert int(got["mode"], 8) == w.mode, path
        if w.mtime:
            assert got["mtime"] == w.mtime, path
        if w.type == "file":
            assert got["size"] == w.size, path
        if w.type == "symlink":
            assert os.fsencode(got["target"]) == w.target, path
    groups: dict[object, set[bytes]] = {}
    for path, w in want.items():
        if len(w.names) > 1:
            groups.setdefault(listed[path]["hardlink"], set()).add(path)
    wanted = {id(w): w for w in want.values() if len(w.names) > 1}.values()
    assert sorted(map(sorted, groups.values())) == sorted(sorted(w.names) for w in wanted)


def cat_some_files(layer: Path, want: dict[bytes, Want], *reader_args) -> None:
    """The command line's `cat` of the largest file, the smallest non-empty one and a hard-linked name gives
    their bytes (describe has read every file through the same chunk service; a process each is costly)."""
    files = [(p, w) for p, w in want.items() if w.type == "file" and w.size]
    if not files:
        return
    picks = [max(files, key=lambda f: f[1].size), min(files, key=lambda f: f[1].size)]
    picks += [f for f in files if len(f[1].names) > 1][:1]
    for path, w in dict(picks).items():
        proc = run_cli("cat", layer, *reader_args, os.fsdecode(path))
        assert proc.returncode == 0, proc.stderr
        assert hashlib.sha256(proc.stdout).hexdigest() == w.sha256, path


def read_in_ours(request, layer: Path, want: dict[bytes, Want], work: Path, *reader_args) -> None:
    """Every reader of ours gives ``want``: describe (the tree and every file's bytes), verify, unpack, the
    command line's ls and cat, and our mount."""
    assert_tree_matches(want, layer, **({"blob_dir": str(reader_args[1])} if reader_args else {}))
    proc = run_cli("verify", layer, *reader_args)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    back = work / "back.tar"
    proc = run_cli("unpack", layer, *reader_args, "-o", back)
    assert proc.returncode == 0, proc.stderr
    assert_tree_matches(want, back)
    listed_as_wanted(layer, want, *reader_args)
    cat_some_files(layer, want, *reader_args)
    request.getfixturevalue("fuse_ok")
    mnt = work / "ours"
    mnt.mkdir()
    # nydusd serves one layer's whiteouts as stored; ours applies them unless asked not to.
    proc = run_cli("mount", "--raw-whiteouts", layer, *reader_args, mnt)
    assert proc.returncode == 0, proc.stderr
    try:
        assert_dir_matches(want, mnt / "rootfs")
    finally:
        run_cli("umount", mnt)


@pytest.mark.parametrize(
    "options",
    [
        ("--compressor", "zstd", "--digester", "blake3"),
        ("--compressor", "lz4_block", "--digester", "sha256"),
        ("--compressor", "none", "--digester", "blake3"),
        ("--compressor", "zstd", "--digester", "sha256", "--chunk-size", "0x1000"),
        ("--compressor", "zstd", "--chunk-size", "0x1000000"),
    ],
    ids=["zstd-blake3", "lz4-sha256", "none-blake3", "zstd-sha256-4k", "zstd-16m"],
)
@pytest.mark.parametrize("source", PLAIN)
def test_their_inline_layer(request, oracle, fuse_ok, source, options, tmp_path):
    """`nydus-image create --type tar-rafs --blob-inline-meta --features blob-toc`, as the snapshotter
    runs it: the layer blob opens on its own."""
    src = source_tar(request, source)
    _, blob = oracle.create(src, tmp_path / "out", *INLINE, *options)
    # nydusd takes the inline layer's blob id from the bootstrap's file stem, as the snapshotter names it.
    digest = hashlib.sha256(blob.read_bytes()).hexdigest()
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    os.link(blob, blobs / digest)
    boot = tmp_path / digest
    oracle.run("nydus-converter", "entry", blob, "image.boot", boot)
    want = served_by_nydusd(oracle, boot, blobs, tmp_path)
    read_in_ours(request, blob, want, tmp_path)


@pytest.mark.parametrize(
    "options", [("--compressor", "zstd"), ("--compressor", "lz4_block", "--digester", "sha256")]
)
@pytest.mark.parametrize("source", ["vector:all-entry-type.tar", "fixture:dedup.tar"])
def test_their_separate_bootstrap(request, oracle, fuse_ok, source, options, tmp_path):
    """tar-rafs with the bootstrap apart and a blob named by its id (with and without a ToC)."""
    src = source_tar(request, source)
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    boot, blob = oracle.create(src, tmp_path / "out", *TAR_RAFS, *options)
    blob_id = _blob_id(boot)
    os.rename(blob, blobs / blob_id)
    want = served_by_nydusd(oracle, boot, blobs, tmp_path)
    read_in_ours(request, boot, want, tmp_path, "--blob-dir", blobs)


def _blob_id(boot: Path) -> str:
    proc = run_cli("info", boot, "--json")
    assert proc.returncode == 0, proc.stderr
    (blob,) = json.loads(proc.stdout)["bootstrap"]["blobs"]
    return blob["blob_id"]


def test_their_dir_rafs(request, oracle, fuse_ok, tmp_path):
    """dir-rafs from a directory (the fixture tar extracted by tarfile, as root)."""
    src = source_tar(request, "vector:all-entry-type.tar")
    tree = tmp_path / "tree"
    with tarfile.open(src) as tf:
        tf.extractall(tree, filter="fully_trusted")
    # Extraction cannot set a symlink's mtime: give every entry a fixed one, so that none is "now", the
    # time nydusd shows for an mtime of 0.
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (1_700_000_000, 1_700_000_000), follow_symlinks=False)
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    boot, blob = oracle.create(tree, tmp_path / "out", "--type", "dir-rafs", "--fs-version", "6")
    os.rename(blob, blobs / _blob_id(boot))
    want = served_by_nydusd(oracle, boot, blobs, tmp_path)
    read_in_ours(request, boot, want, tmp_path, "--blob-dir", blobs)


def test_their_rafs_v5(request, oracle, fuse_ok, tmp_path):
    """RAFS v5: `ls -R` gives the tar's tree and `cat` its bytes (tests/test_old_layers.py compares v5 layers
    with nydusd's view in every reader)."""
    src = source_tar(request, "fixture:dedup.tar")
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    boot, blob = oracle.create(src, tmp_path / "out", "--type", "tar-rafs", "--fs-version", "5")
    ls = run_cli("ls", boot, "-R", "--json")
    assert ls.returncode == 0, ls.stderr
    listed = {node["path"]: node for node in json.loads(ls.stdout)}
    expected = expected_tree(src)
    assert {os.fsdecode(p) for p in expected} <= set(listed)
    for p, w in expected.items():
        got = listed[os.fsdecode(p)]
        assert got["type"] == w.type, p
        assert (got["uid"], got["gid"], got["mtime"]) == (w.uid, w.gid, w.mtime), p
    path, want = next((p, w) for p, w in expected.items() if w.type == "file" and w.size)
    cat = run_cli("cat", boot, os.fsdecode(path), "--blob", blob)
    assert cat.returncode == 0, cat.stderr
    assert hashlib.sha256(cat.stdout).hexdigest() == want.sha256


def test_where_nydus_image_reads_a_tar_otherwise(request, oracle, fuse_ok, tmp_path):
    """How nydus-image's tree of a valid tar reads it: a hard-link entry's own header attributes replace its
    target's (as containerd extracts it and ours packs it, not as GNU tar or mkfs.erofs keep the first), and
    a name split over the ustar prefix and name fields is lost. Both are in the README; this test says when
    a new nydus changes either."""
    src = source_tar(request, "fixture:longnames.tar")
    _, blob = oracle.create(src, tmp_path / "out", *INLINE)
    digest = hashlib.sha256(blob.read_bytes()).hexdigest()
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    os.link(blob, blobs / digest)
    boot = tmp_path / digest
    oracle.run("nydus-converter", "entry", blob, "image.boot", boot)
    theirs = served_by_nydusd(oracle, boot, blobs, tmp_path)
    source = expected_tree(src)
    prefixed = b"/ustar/" + b"p" * 90 + b"/" + b"q" * 90
    assert prefixed in source and prefixed not in theirs
    target = b"/" + b"N" * 251 + b".txt"
    with tarfile.open(src) as tf:
        link_mtime = next(m.mtime for m in tf if m.islnk() and m.linkname == os.fsdecode(target[1:]))
    first_header = expected_tree(src, link_header=False)
    assert first_header[target].mtime != link_mtime
    assert source[target].mtime == link_mtime == theirs[target].mtime
    others = {p for p in source if p not in (prefixed, os.path.dirname(prefixed))} - {target}
    assert {p: theirs[p].sha256 for p in others if p in theirs} == {p: source[p].sha256 for p in others}
