"""Older layers: RAFS v5 with its data, and data blobs of nydus up to v2.1 (chunks, then the chunk-info array
and its header, with no tar headers and no ToC; or no blob.meta at all).

The real `nydus-image create` makes every layer here from the fixture tars, the vector tars and (when
present) the Debian rootfs tar: `--fs-version 5` with the bootstrap apart or inline, and v6 without
`--blob-inline-meta` or `--features blob-toc`. The real `nydusd` mounts each (v5 with digest validation on,
which nydusd does for v5 only), and our `ls -R --json`, `cat` of every file, `describe`, `unpack`, `verify`
and our own FUSE mount must give the tree and bytes it serves. Damage (a flipped bit in chunk data, a
broken v5 inode) is found by verify and refused by the readers in one line.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import tarfile
import time
from pathlib import Path

import pytest
from fixtures_util import (
    assert_one_line_error,
    debian_rootfs_tar,
    fixture_tars_fixture,  # noqa: F401
    run_cli,
    source_tar,
)
from test_oracle_reader import read_in_ours, want_from_dir

from nydus_inspect.formats import rafs_v5, rafs_v6
from nydus_inspect.layer import open_layer
from oracle import Oracle

V5 = ("--type", "tar-rafs", "--fs-version", "5", "--whiteout-spec", "none")
#: v6 as nydus-image writes it without inline metadata or a ToC: the data blob is chunks, blob.meta and its
#: header, nothing else (the layout of every data blob up to nydus v2.1).
V6_PLAIN = ("--type", "tar-rafs", "--fs-version", "6", "--whiteout-spec", "none")
# The inputs nydus-image takes with --fs-version 5 (longnames and the fixture xattrs tar it refuses).
V5_SOURCES = ["fixture:dedup.tar", "fixture:whiteouts.tar", "vector:all-entry-type.tar", "made:xattrs"]
OPTIONS = {
    "zstd-blake3": ("--compressor", "zstd", "--digester", "blake3"),
    "lz4-sha256": ("--compressor", "lz4_block", "--digester", "sha256"),
    "none-blake3": ("--compressor", "none"),
    "zstd-sha256-4k": ("--compressor", "zstd", "--digester", "sha256", "--chunk-size", "0x1000"),
}


def xattr_tar(path: Path) -> Path:
    """Files and a directory with user and trusted xattrs (PAX SCHILY.xattr), data over several 4 KiB chunks."""
    entries = [
        ("d", None, {"SCHILY.xattr.user.dir": "on a directory"}),
        ("d/f", bytes(range(256)) * 40, {"SCHILY.xattr.user.a": "1", "SCHILY.xattr.trusted.b": "x" * 300}),
        ("d/empty", b"", {"SCHILY.xattr.user.empty": ""}),
        ("plain", b"no xattrs\n", {}),
    ]
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, data, pax in entries:
            ti = tarfile.TarInfo(name)
            ti.mtime, ti.pax_headers = 1_700_000_000, pax
            if data is None:
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(ti)
            else:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    return path


def source_of(request, source: str, tmp_path: Path) -> Path:
    if source == "made:xattrs":
        return xattr_tar(tmp_path / "xattrs.tar")
    return source_tar(request, source)


def blob_id(boot: Path) -> str:
    proc = run_cli("info", boot, "--json")
    assert proc.returncode == 0, proc.stderr
    (blob,) = json.loads(proc.stdout)["bootstrap"]["blobs"]
    return blob["blob_id"]


def make_layer(oracle: Oracle, src: Path, work: Path, *opts) -> tuple[Path, Path]:
    """nydus-image create with the bootstrap apart -> (bootstrap, blob directory holding the blob by its id)."""
    boot, blob = oracle.create(src, work / "out", *opts)
    blobs = work / "blobs"
    blobs.mkdir(exist_ok=True)
    os.rename(blob, blobs / blob_id(boot))
    return boot, blobs


def cat_every_file(boot: Path, blobs: Path, want: dict) -> None:
    """`cat` of every regular file (one name per inode) gives the bytes nydusd served."""
    done = set()
    for path, w in want.items():
        if w.type != "file" or id(w) in done:
            continue
        done.add(id(w))
        proc = run_cli("cat", boot, os.fsdecode(path), "--blob-dir", blobs)
        assert proc.returncode == 0, proc.stderr
        assert hashlib.sha256(proc.stdout).hexdigest() == w.sha256, path


def listed_as_served(boot: Path, blobs: Path, want: dict) -> None:
    """`ls -R --json` lists every path nydusd serves, with its type, mode, owner, mtime, size and link."""
    ls = run_cli("ls", boot, "--blob-dir", blobs, "-R", "--json")
    assert ls.returncode == 0, ls.stderr
    listed = {os.fsencode(n["path"]): n for n in json.loads(ls.stdout)}
    assert set(listed) == set(want) | {b"/"}
    for path, w in want.items():
        got = listed[path]
        assert (got["type"], int(got["mode"], 8), got["uid"], got["gid"]) == (w.type, w.mode, w.uid, w.gid), (
            path
        )
        if w.mtime:  # nydusd shows an mtime of 0 as its own start time (want_from_dir keeps 0)
            assert got["mtime"] == w.mtime, path
        if w.type == "file":
            assert got["size"] == w.size, path
        if w.type == "symlink":
            assert os.fsencode(got["target"]) == w.target, path
    groups = {}
    for path, w in want.items():
        if len(w.names) > 1:
            groups.setdefault(listed[path]["hardlink"], set()).add(path)
    assert sorted(map(sorted, groups.values())) == sorted(
        sorted(w.names) for w in {id(w): w for w in want.values() if len(w.names) > 1}.values()
    )


def served(oracle: Oracle, boot: Path, blobs: Path, work: Path, *, validate: bool = False) -> dict:
    """The tree nydusd serves for ``boot`` (``validate``: nydusd checks every chunk digest it reads, which it
    does for v5 only)."""
    started = int(time.time())
    with oracle.mount(boot, blobs, work / "nydusd", validate=validate) as mnt:
        return want_from_dir(mnt, (started, int(time.time()) + 1))


def check_against_nydusd(request, oracle, boot, blobs, tmp_path, *, validate: bool) -> None:
    want = served(oracle, boot, blobs, tmp_path, validate=validate)
    listed_as_served(boot, blobs, want)
    cat_every_file(boot, blobs, want)
    read_in_ours(request, boot, want, tmp_path, "--blob-dir", blobs)


# ---------------------------------------------------------------------------- RAFS v5 with data
@pytest.mark.parametrize("source", V5_SOURCES)
def test_v5_layer_reads_as_nydusd_serves(request, oracle, fuse_ok, source, tmp_path):
    src = source_of(request, source, tmp_path)
    boot, blobs = make_layer(oracle, src, tmp_path, *V5)
    assert run_cli("info", boot, "--json").stdout.count(b'"version": 5') == 1
    oracle.check(boot)
    check_against_nydusd(request, oracle, boot, blobs, tmp_path, validate=True)


@pytest.mark.parametrize("options", list(OPTIONS.values()), ids=list(OPTIONS))
def test_v5_codecs_and_chunk_sizes(request, oracle, fuse_ok, options, tmp_path):
    src = source_tar(request, "fixture:dedup.tar")
    boot, blobs = make_layer(oracle, src, tmp_path, *V5, *options)
    check_against_nydusd(request, oracle, boot, blobs, tmp_path, validate=True)


def test_v5_inline_layer(request, oracle, fuse_ok, tmp_path):
    """`--fs-version 5 --blob-inline-meta`: chunks, then the v5 bootstrap, behind tar headers; the blob opens
    on its own, and nydusd mounts its bootstrap as the snapshotter hands it over (named by the blob's sha256)."""
    src = source_tar(request, "vector:all-entry-type.tar")
    _, blob = oracle.create(src, tmp_path / "out", *V5, "--blob-inline-meta")
    digest = hashlib.sha256(blob.read_bytes()).hexdigest()
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    os.link(blob, blobs / digest)
    boot = tmp_path / digest
    oracle.run("nydus-converter", "entry", blob, "image.boot", boot)
    assert rafs_v5.RafsV5(boot.read_bytes()).sb.s_fs_version == rafs_v5.VERSION
    want = served(oracle, boot, blobs, tmp_path, validate=True)
    read_in_ours(request, blob, want, tmp_path)


def test_v5_debian_rootfs(request, oracle, fuse_ok, tmp_path):
    """A real distribution tree (thousands of files, hard links, devices) as v5."""
    boot, blobs = make_layer(oracle, debian_rootfs_tar(), tmp_path, *V5)
    want = served(oracle, boot, blobs, tmp_path)
    listed_as_served(boot, blobs, want)
    read_in_ours(request, boot, want, tmp_path, "--blob-dir", blobs)


# ---------------------------------------------------------------------------- old v6 data blobs
def strip(boot: Path, out: Path, *, chunk_table: bool = True, blob_meta: bool = False) -> Path:
    """``boot`` as a 2022 builder left it: no chunk-table records (the blob's blob.meta is then all that
    locates a chunk), and with ``blob_meta`` no blob.meta place in the blob table either."""
    raw = bytearray(boot.read_bytes())

    def zero(layout, base: int, *names: str) -> None:
        for name in names:
            at = base + layout.offsets[name]
            size = struct.calcsize("<" + dict(layout.fields)[name])
            raw[at : at + size] = bytes(size)

    if chunk_table:
        zero(
            rafs_v6.EXT_SUPERBLOCK,
            rafs_v6.EXT_SUPERBLOCK_OFFSET,
            "s_chunk_table_offset",
            "s_chunk_table_size",
        )
    if blob_meta:
        ext = rafs_v6.ExtSuperBlock.parse(raw)
        for i in range(ext.s_blob_table_size // rafs_v6.BLOB_ENTRY.size):
            base = ext.s_blob_table_offset + i * rafs_v6.BLOB_ENTRY.size
            zero(rafs_v6.BLOB_ENTRY, base, "ci_offset", "ci_compressed_size", "ci_uncompressed_size")
    out.write_bytes(raw)
    return out


@pytest.mark.parametrize("source", ["fixture:dedup.tar", "vector:all-entry-type.tar"])
@pytest.mark.parametrize("options", [OPTIONS["zstd-blake3"], OPTIONS["lz4-sha256"]], ids=["zstd", "lz4"])
def test_old_v6_data_blob(request, oracle, fuse_ok, source, options, tmp_path):
    """A data blob without tar headers or ToC: chunks, the chunk-info array, its 4096-byte header."""
    src = source_tar(request, source)
    boot, blobs = make_layer(oracle, src, tmp_path, *V6_PLAIN, *options)
    (blob,) = blobs.iterdir()
    ent = json.loads(run_cli("info", boot, "--json").stdout)["bootstrap"]["blobs"][0]
    # Nothing in the file says where its parts are: no tar header at its end, no ToC.
    assert ent["ci_offset"] + ent["ci_compressed_size"] + 4096 == blob.stat().st_size
    assert "has_tar_header" not in ent["features_names"] and ent["blob_toc_size"] == 0
    want = served(oracle, boot, blobs, tmp_path)
    # The bootstrap as built reads through its chunk table; without one, through the blob.meta its blob
    # table places in the blob.
    old = strip(boot, tmp_path / "old.boot")
    for which in (boot, old):
        work = tmp_path / which.stem
        work.mkdir()
        listed_as_served(which, blobs, want)
        cat_every_file(which, blobs, want)
        read_in_ours(request, which, want, work, "--blob-dir", blobs)
    # The blob on its own: its blob.meta header ends the file and places the chunk-info array before it.
    info = json.loads(run_cli("info", blob, "--json").stdout)
    assert info["kind"] == "data-blob", info
    chunks = json.loads(run_cli("chunks", blob, "--json").stdout)
    assert chunks["source"] == "blob.meta" and len(chunks["chunks"]) == ent["chunk_count"]
    alone = report_of(run_cli("verify", blob, "--json"))
    assert alone["ok"] and alone["checked"]["chunks"] == ent["chunk_count"], alone
    verify = run_cli("verify", old, "--blob-dir", blobs, "--json")
    report = report_of(verify)
    assert report["ok"] and report["checked"].get("blob.meta headers") == 1, report


@pytest.mark.parametrize("options", [OPTIONS["zstd-blake3"], OPTIONS["none-blake3"]], ids=["zstd", "none"])
def test_old_v6_flipped_chunk_bit(request, oracle, options, tmp_path):
    """A flipped bit in a chunk of an old data blob (no ToC). Through the bootstrap as built, its chunk
    table's digest names the chunk (verify exit 1) and cat of the file is one line, exit 2. Through the
    bootstrap without a chunk table the chunks are located by blob.meta alone, which records no digest: the
    blob id (the sha256 of the whole file) is what covers them; verify reports it, as it does for the blob
    opened alone, and cat refuses the blob in one line."""
    src = source_tar(request, "fixture:dedup.tar")
    boot, blobs = make_layer(oracle, src, tmp_path, *V6_PLAIN, *options)
    old = strip(boot, tmp_path / "old.boot")
    (blob,) = blobs.iterdir()
    assert run_cli("verify", old, "--blob-dir", blobs).returncode == 0
    assert report_of(run_cli("verify", blob, "--json"))["checked"]["blob ids"] == 1
    with open_layer(str(old), blob_dir=str(blobs)) as layer:
        assert not layer.rafs.meta.ext.s_chunk_table_size
        path, chunk = next(
            (os.fsdecode(node.path), c)
            for node in layer.rafs.walk()
            if node.type == "file"
            for c in layer.rafs.chunks(node)
            if c.compressed_size > 64
        )
    raw = bytearray(blob.read_bytes())
    raw[chunk.compressed_offset + chunk.compressed_size // 2] ^= 0x10
    blob.write_bytes(raw)
    report = report_of(run_cli("verify", old, "--blob-dir", blobs, "--json"))
    assert not report["ok"] and [f["check"] for f in report["findings"]] == ["blob.id"], report
    proc = run_cli("cat", old, "--blob-dir", blobs, path)
    assert_one_line_error(proc, 2, "is not its id")
    assert not proc.stdout
    # The blob opened alone (as its blob dir names it, by its id): the same.
    report = report_of(run_cli("verify", blob, "--json"))
    assert not report["ok"] and [f["check"] for f in report["findings"]] == ["blob.id"], report
    proc = run_cli("verify", boot, "--blob-dir", blobs)
    out = proc.stdout.decode()
    assert proc.returncode == 1 and f"chunk {chunk.ci_index} of blob 0" in out and path in out, out
    assert_one_line_error(run_cli("cat", boot, "--blob-dir", blobs, path), 2, f"chunk {chunk.ci_index}")


def test_nothing_locates_the_chunks(request, oracle, tmp_path):
    """No chunk-table records and no blob.meta: a one-line error saying both are missing."""
    src = source_tar(request, "fixture:dedup.tar")
    boot, blobs = make_layer(oracle, src, tmp_path, *V6_PLAIN)
    bare = strip(boot, tmp_path / "bare.boot", blob_meta=True)
    file = next(
        n["path"] for n in json.loads(run_cli("ls", bare, "-R", "--json").stdout) if n["type"] == "file"
    )
    # A blob that ends in its blob.meta header is read through it, whatever the blob table says.
    assert run_cli("cat", bare, file, "--blob-dir", blobs).returncode == 0
    # Cut to its chunk data, it has no blob.meta at all.
    (blob,) = blobs.iterdir()
    ent = json.loads(run_cli("info", boot, "--json").stdout)["bootstrap"]["blobs"][0]
    os.truncate(blob, ent["ci_offset"])
    line = assert_one_line_error(
        run_cli("cat", bare, file, "--blob-dir", blobs), 2, "no chunk table", "no blob.meta"
    )
    assert file in line
    assert_one_line_error(
        run_cli("unpack", bare, "--blob-dir", blobs, "-o", tmp_path / "x.tar"), 2, "no blob.meta"
    )
    assert not (tmp_path / "x.tar").exists()


# ---------------------------------------------------------------------------- damage
def v5_layer(request, oracle, tmp_path, source="vector:all-entry-type.tar", *opts):
    src = source_tar(request, source)
    return make_layer(oracle, src, tmp_path, *V5, *opts)


def report_of(proc) -> dict:
    """The one layer's report of `verify --json`."""
    (report,) = json.loads(proc.stdout)["layers"]
    return report


def inodes(boot: Path) -> dict[bytes, rafs_v5.InodeV5]:
    r = rafs_v5.RafsV5(boot.read_bytes())
    return dict(r.walk())


def test_v5_flipped_chunk_bit(request, oracle, fuse_ok, tmp_path):
    boot, blobs = v5_layer(request, oracle, tmp_path, "fixture:dedup.tar", "--compressor", "none")
    (blob,) = blobs.iterdir()
    r = rafs_v5.RafsV5(boot.read_bytes())
    path, node = next((p, n) for p, n in r.walk() if n.is_reg and n.i_size)
    rec = r.chunk_records(node)[0]
    at = rec[5] + rec[3] // 2  # compressed_offset + half its size
    raw = bytearray(blob.read_bytes())
    raw[at] ^= 0x10
    blob.write_bytes(raw)
    proc = run_cli("verify", boot, "--blob-dir", blobs, "--json")
    assert proc.returncode == 1, proc.stderr
    findings = report_of(proc)["findings"]
    assert {f["check"] for f in findings} == {"chunk.digest"}, findings
    assert findings[0]["chunk"] == rec[8] and findings[0]["blob_index"] == rec[1]
    assert_one_line_error(run_cli("cat", boot, os.fsdecode(path), "--blob-dir", blobs), 2, "digest")
    assert_one_line_error(run_cli("unpack", boot, "--blob-dir", blobs, "-o", tmp_path / "x.tar"), 2, "digest")
    # Our mount refuses the bytes too (EIO), as nydusd does with digest validation.
    mnt = tmp_path / "ours"
    mnt.mkdir()
    assert run_cli("mount", boot, "--blob-dir", blobs, mnt).returncode == 0
    try:
        with pytest.raises(OSError):
            (mnt / "rootfs" / os.fsdecode(path).lstrip("/")).read_bytes()
    finally:
        run_cli("umount", mnt)


def patched(boot: Path, out: Path, offset: int, fmt: str, value: int | bytes) -> Path:
    raw = bytearray(boot.read_bytes())
    struct.pack_into("<" + fmt, raw, offset, value)
    out.write_bytes(raw)
    return out


def test_v5_damaged_inode_found_by_verify(request, oracle, tmp_path):
    boot, blobs = v5_layer(request, oracle, tmp_path)
    # A file's first inode (the one every name of a hard-linked file resolves to).
    path, node = next((p, n) for p, n in inodes(boot).items() if n.is_reg and n.i_size and n.i_ino == n.index)
    at = node.offset + rafs_v5.INODE.offsets["i_digest"]
    raw = boot.read_bytes()
    bad = patched(boot, tmp_path / "digest.boot", at, "B", raw[at] ^ 1)
    assert run_cli("verify", boot, "--blob-dir", blobs).returncode == 0
    proc = run_cli("verify", bad, "--blob-dir", blobs, "--json")
    assert proc.returncode == 1
    findings = report_of(proc)["findings"]
    # The inode's own digest, and its directory's, which covers it.
    assert {(f["check"], f["field"], f["path"]) for f in findings} == {
        ("bootstrap.inode", "i_digest", os.fsdecode(path)),
        ("bootstrap.inode", "i_digest", os.fsdecode(os.path.dirname(path))),
    }, findings
    # A size that no longer fits the chunk records: verify names the file, cat refuses it in one line.
    short = patched(
        boot, tmp_path / "size.boot", node.offset + rafs_v5.INODE.offsets["i_size"], "Q", node.i_size + 1
    )
    findings = report_of(run_cli("verify", short, "--blob-dir", blobs, "--json"))["findings"]
    assert "bootstrap.chunks" in {f["check"] for f in findings}
    assert_one_line_error(run_cli("cat", short, os.fsdecode(path), "--blob-dir", blobs), 2, os.fsdecode(path))
    # Another name's own inode, damaged alike: its file reads from the first inode, verify says they differ.
    other, twin = next(
        (p, n)
        for p, n in inodes(boot).items()
        if n.is_reg and n.i_ino == node.i_ino and n.index != node.index
    )
    at = twin.offset + rafs_v5.INODE.offsets["i_size"]
    findings = report_of(
        run_cli("verify", patched(boot, tmp_path / "twin.boot", at, "Q", 7), "--blob-dir", blobs, "--json")
    )["findings"]
    assert [(f["check"], f["path"]) for f in findings] == [("bootstrap.nlink", os.fsdecode(other))], findings


def _table_slot(boot: Path, slot: int) -> int:
    return rafs_v5.RafsV5(boot.read_bytes()).sb.s_inode_table_offset + 4 * (slot - 1)


@pytest.mark.parametrize(
    "damage",
    [
        "root-not-dir",
        "child-before-parent",
        "child-count-past-table",
        "offset-past-end",
        "table-past-end",
        "ino-names-another",
    ],
)
def test_v5_tree_that_does_not_decode(request, oracle, damage, tmp_path):
    """A v5 bootstrap whose inodes make no sensible tree says what is wrong in one line (exit 2) in every
    reader, instead of listing something; verify reports it."""
    boot, blobs = v5_layer(request, oracle, tmp_path)
    nodes = inodes(boot)
    root = nodes[b"/"]
    sub = next(n for p, n in nodes.items() if p != b"/" and n.is_dir and n.i_child_count)
    f = rafs_v5.INODE.offsets
    bad = tmp_path / "bad.boot"
    if damage == "root-not-dir":
        patched(boot, bad, root.offset + f["i_mode"], "I", 0o100644)
        needle = "not a directory"
    elif damage == "child-before-parent":
        # A directory whose children start at its parent: a cycle, which nydusd's rule forbids.
        patched(boot, bad, sub.offset + f["i_child_index"], "I", 1)
        needle = "children"
    elif damage == "child-count-past-table":
        patched(boot, bad, root.offset + f["i_child_count"], "I", 1 << 30)
        needle = "inode table"
    elif damage == "offset-past-end":
        patched(boot, bad, _table_slot(boot, sub.index), "I", 1 << 28)
        needle = "outside the bootstrap"
    elif damage == "ino-names-another":
        # An inode whose i_ino is the root's: nydusd, which finds inodes by i_ino, would serve the root for it.
        link = next(n for n in nodes.values() if n.i_mode & 0o170000 == 0o120000)
        patched(boot, bad, link.offset + f["i_ino"], "Q", 1)
        needle = "i_ino"
    else:
        sb_at = rafs_v5.SUPERBLOCK.offsets["s_inode_table_entries"]
        patched(boot, bad, sb_at, "I", 1 << 23)
        needle = "inode table runs past"
    for args in (("ls", bad, "-R"), ("ls", bad, "-R", "--json"), ("unpack", bad, "-o", tmp_path / "x.tar")):
        assert_one_line_error(run_cli(*args, "--blob-dir", blobs), 2, needle)
    assert not (tmp_path / "x.tar").exists()
    proc = run_cli("verify", bad, "--blob-dir", blobs, "--json")
    assert proc.returncode == 1, proc.stderr
    assert any(needle in f["message"] for f in report_of(proc)["findings"])


def test_v5_model_survives_mutations(request, oracle, tmp_path):
    """The fuzz target of the v5 reader over byte flips of a real v5 bootstrap: every outcome is a decoded
    tree or a FormatError, never another exception or a hang."""
    from fuzz.targets import fuzz_rafs_v5_model

    boot, _ = v5_layer(request, oracle, tmp_path, "vector:all-entry-type.tar")
    raw = boot.read_bytes()
    fuzz_rafs_v5_model(raw)
    import random

    rng = random.Random(5)
    for _ in range(400):
        mutated = bytearray(raw)
        for _ in range(rng.randint(1, 8)):
            mutated[rng.randrange(len(raw))] = rng.randrange(256)
        fuzz_rafs_v5_model(bytes(mutated))
