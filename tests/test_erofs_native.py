"""Plain EROFS images as erofs-utils 1.9.3's mkfs.erofs writes them, read by ours and judged by its fsck.erofs.

Every image is made by the real mkfs.erofs (from a tar with ``--tar=f``, or from a directory), and what
``fsck.erofs --extract`` makes of it is the expected tree: type, mode, owner, mtime, size and bytes,
symlink target, device number, xattrs and which names are one inode. Our reader must give the same
tree through the model (ls and cat), through ``unpack --to-dir`` and through ``verify``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tarfile
from pathlib import Path

import pytest
from fixtures_util import (  # noqa: F401
    FILE_TYPES,
    assert_one_line_error,
    debian_rootfs_tar,
    expected_tree,
    fixture_tars_fixture,
    run_cli,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tree_strategies import trees, write_tree_tar

from nydus_inspect.erofs import HOLE_BLOB
from nydus_inspect.layer import KIND_EROFS, open_layer
from nydus_inspect.model import DIR, REG, SYMLINK, fsdecode
from nydus_inspect.verify import verify

#: The marks of every test that extracts with fsck.erofs (the other EROFS test files take them from here).
EROFS_AS_ROOT = [
    pytest.mark.erofs,
    pytest.mark.skipif(
        os.geteuid() != 0, reason="fsck.erofs --extract keeps owners and devices only as root"
    ),
]
pytestmark = EROFS_AS_ROOT

FIXTURES = [
    "every-type.tar",
    "whiteouts.tar",
    "xattrs.tar",
    "longnames.tar",
    "dedup.tar",
    "sparse.tar",
    "sparse-pax.tar",
    "global-pax.tar",
]
#: mkfs.erofs options for each uncompressed layout and inode form.
LAYOUTS = {
    "flat-inline": (),
    "flat-plain": ("-Enoinline_data",),
    "chunks-4k": ("--chunksize=4096",),
    "chunks-64k": ("--chunksize=65536",),
    "extended-inodes": ("-Eforce-inode-extended",),
    # every-type.tar has ids beyond 16 bits, which a compact inode cannot hold.
    "compact-inodes": ("-Eforce-inode-compact", "--force-uid=1", "--force-gid=2"),
    "chunks-blockmap": ("--chunksize=8192", "-Eforce-inode-blockmap"),
    "chunks-indexes": ("--chunksize=8192", "-Eforce-chunk-indexes"),
    "shared-xattrs": ("-x1",),
    "long-xattr-prefix": ("--xattr-prefix=user.nydus.", "-Eplain-xattr-prefixes"),
    "long-xattr-prefix-table": ("--xattr-prefix=user.nydus.",),
}


def _linux_keeps(ntype: str, name: bytes) -> bool:
    # Linux keeps user.* xattrs only on regular files and directories, and drops security.capability when
    # fsck.erofs chowns the file after setting it: an extraction cannot show those (test_xattrs_as_the_tar_says
    # compares them with the source tar instead).
    if name == b"security.capability":
        return False
    return ntype in ("file", "dir") or not name.startswith(b"user.")


def extracted_tree(root: Path, nlink: bool = False) -> dict[bytes, dict]:
    """What fsck.erofs extracted, or what a mount shows, path by path, with names of one inode grouped (by
    device and inode number: the layers of an overlay are file systems of their own); ``nlink``: with each
    entry's link count as well."""
    base = os.fsencode(str(root))
    out: dict[bytes, dict] = {}
    by_ino: dict[tuple[int, int], list[bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(base):
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            rel = full[len(base) :]
            st = os.lstat(full)
            ntype = FILE_TYPES[stat.S_IFMT(st.st_mode)]
            e = {
                "type": ntype,
                "mode": stat.S_IMODE(st.st_mode),
                "uid": st.st_uid,
                "gid": st.st_gid,
                "mtime": st.st_mtime_ns // 10**9,
            }
            if nlink:
                e["nlink"] = st.st_nlink
            if ntype == "file":
                with open(full, "rb") as f:
                    e["sha256"] = hashlib.sha256(f.read()).hexdigest()
                e["size"] = st.st_size
            elif ntype == "symlink":
                e["target"] = os.readlink(full)
                del e["mode"]
            elif ntype in ("char", "block"):
                e["rdev"] = st.st_rdev
            names = os.listxattr(full, follow_symlinks=False)
            e["xattrs"] = {
                os.fsencode(n): os.getxattr(full, n, follow_symlinks=False)
                for n in names
                if _linux_keeps(ntype, os.fsencode(n))
            }
            out[rel] = e
            if ntype != "dir":
                by_ino.setdefault((st.st_dev, st.st_ino), []).append(rel)
    _group(out, by_ino.values())
    return out


def _group(out: dict[bytes, dict], groups) -> None:
    for names in groups:
        if len(names) > 1:
            for n in names:
                out[n]["links"] = tuple(sorted(names))


def our_tree(image: Path, devices: tuple[Path, ...] = ()) -> dict[bytes, dict]:
    """The same, read by ours: the model's walk (ls -R) and each file's bytes (cat); ``devices``: the
    image's extra devices, given as --blob files."""
    out: dict[bytes, dict] = {}
    by_nid: dict[int, list[bytes]] = {}
    with open_layer(str(image), blobs=[str(d) for d in devices]) as layer:
        assert layer.kind == KIND_EROFS
        for node in layer.rafs.walk():
            if node.path == b"/":
                continue
            e = {
                "type": node.type,
                "mode": node.perm,
                "uid": node.uid,
                "gid": node.gid,
                "mtime": node.mtime,
            }
            if node.type == REG:
                data = b"".join(layer.read_file(node))
                e["sha256"] = hashlib.sha256(data).hexdigest()
                e["size"] = node.size
                assert len(data) == node.size
                hole = 0
                for c in reversed(node.chunks or []):
                    if c.blob_index != HOLE_BLOB:
                        break
                    hole += c.uncompressed_size
                if hole:
                    # fsck.erofs 1.9.3 seeks over a hole without writing, so a file that ends in one extracts
                    # short: what it can show is the rest (the tar comparison holds the whole file).
                    e["_short"] = (node.size - hole, hashlib.sha256(data[: node.size - hole]).hexdigest())
            elif node.type == SYMLINK:
                e["target"] = node.target
                del e["mode"]
            elif node.type in ("char", "block"):
                e["rdev"] = node.rdev
            e["xattrs"] = {k: v for k, v in node.xattrs.items() if _linux_keeps(node.type, k)}
            out[node.path] = e
            if node.type != DIR:
                by_nid.setdefault(node.nid, []).append(node.path)
    _group(out, by_nid.values())
    return out


def assert_same_tree(found: dict, want: dict, what: str) -> None:
    problems = [f"{fsdecode(p)}: only in fsck.erofs's extraction" for p in want.keys() - found.keys()]
    problems += [f"{fsdecode(p)}: only in ours" for p in found.keys() - want.keys()]
    for p in sorted(want.keys() & found.keys()):
        short = found[p].pop("_short", None)
        if short is not None and (want[p].get("size"), want[p].get("sha256")) == short:
            continue
        for k in want[p].keys() | found[p].keys():
            if k == "xattrs" and b"" in found[p]["xattrs"].values():
                # fsck.erofs 1.9.3 stops extracting an inode's xattrs at the first with an empty value;
                # test_xattrs_as_the_tar_says holds those to the source tar.
                continue
            if want[p].get(k) != found[p].get(k):
                problems.append(
                    f"{fsdecode(p)}: {k}: fsck.erofs {want[p].get(k)!r}, ours {found[p].get(k)!r}"
                )
    assert not problems, f"{what}: {len(problems)} difference(s):\n" + "\n".join(problems[:30])


def _tar_files(tar: Path) -> dict[bytes, tuple[int, str]]:
    """(size, sha256) of every regular file of a tar, by Python's tarfile (GNU sparse members included)."""
    out = {}
    with tarfile.open(tar, encoding="utf-8", errors="surrogateescape") as tf:
        for m in tf:
            # mkfs.erofs 1.9.3 leaves GNU sparse members out of the image (fsck.erofs agrees: not there).
            if m.isreg() and not m.issparse():
                data = tf.extractfile(m).read()
                name = b"/" + b"/".join(x for x in os.fsencode(m.name).split(b"/") if x not in (b"", b"."))
                out[name] = (len(data), hashlib.sha256(data).hexdigest())
    return out


def check_image(
    erofs_utils, image: Path, work: Path, tar: Path | None = None, devices: tuple[Path, ...] = ()
) -> dict[bytes, dict]:
    """Ours reads ``image`` as fsck.erofs extracts it, through the model, unpack and verify; with the
    source ``tar``, every file's size and bytes are also the tar's. ``devices``: the image's extra devices
    (``--device`` to erofs-utils, ``--blob`` to ours).

    fsck.erofs 1.9.3 cannot extract an image with a packed inode (it writes the packed inode where the root
    directory goes); erofsfuse, from the same build, serves those, and its tree is the one expected."""
    with open_layer(str(image)) as layer:
        packed = layer.rafs.esb.packed_nid
    if packed:
        with erofs_utils.mounted(image, work / "erofsfuse", devices) as mnt:
            want = extracted_tree(mnt)
    else:
        want = extracted_tree(erofs_utils.extract(image, work / "fsck", devices))
    ours = our_tree(image, devices)
    if tar is not None:
        files = _tar_files(tar)
        assert {p: (ours[p]["size"], ours[p]["sha256"]) for p in files} == files
    assert_same_tree(dict(ours), want, f"{image.name} read by ours")
    ours_dir = work / "ours"
    proc = run_cli("unpack", image, *(a for d in devices for a in ("--blob", d)), "--to-dir", ours_dir)
    assert proc.returncode == 0, proc.stderr.decode()
    model = {p: {k: v for k, v in e.items() if k != "_short"} for p, e in ours.items()}
    assert_same_tree(extracted_tree(ours_dir), model, f"{image.name} unpacked by ours")
    with open_layer(str(image), blobs=[str(d) for d in devices]) as layer:
        report = verify(layer)
    assert report.ok, "\n".join(map(str, report.findings))
    return want


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_tars(erofs_utils, fixture_tars, tmp_path, name):
    image = erofs_utils.mkfs(tmp_path / "layer.erofs", fixture_tars[name], "--tar=f")
    check_image(erofs_utils, image, tmp_path, fixture_tars[name])


@pytest.mark.parametrize("layout", ["flat-inline", "shared-xattrs", "long-xattr-prefix"])
@pytest.mark.parametrize("name", ["every-type.tar", "xattrs.tar"])
def test_xattrs_as_the_tar_says(erofs_utils, fixture_tars, tmp_path, layout, name):
    """Every xattr, those an extraction loses included, is the source tar's."""
    src = fixture_tars[name]
    image = erofs_utils.mkfs(tmp_path / "img", src, "--tar=f", *LAYOUTS[layout])
    want = {p: w.xattrs for p, w in expected_tree(src, link_header=False).items()}
    with open_layer(str(image)) as layer:
        got = {n.path: n.xattrs for n in layer.rafs.walk() if n.path in want}
    assert got == want
    assert any(got.values())


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts_from_tar_and_directory(erofs_utils, fixture_tars, tmp_path, layout):
    """Every uncompressed layout and inode form, from a tar and from the directory fsck.erofs extracts."""
    opts = LAYOUTS[layout]
    image = erofs_utils.mkfs(tmp_path / "tar.erofs", fixture_tars["every-type.tar"], "--tar=f", *opts)
    check_image(erofs_utils, image, tmp_path / "tar", fixture_tars["every-type.tar"])
    source = tmp_path / "tar" / "fsck"
    image = erofs_utils.mkfs(tmp_path / "dir.erofs", source, *opts)
    check_image(erofs_utils, image, tmp_path / "dir")


#: mkfs.erofs compression options: each algorithm, big pclusters, legacy (full) indexes.
COMPRESSED = {
    "lz4": ("-zlz4",),
    "lz4hc": ("-zlz4hc,12",),
    "lzma": ("-zlzma",),
    "microlzma-extreme": ("-zlzma,level=109",),
    "deflate": ("-zdeflate",),
    "libdeflate": ("-zlibdeflate",),
    "zstd": ("-zzstd",),
    "lz4hc-big-pcluster": ("-zlz4hc", "-C65536"),
    "lzma-big-pcluster": ("-zlzma", "-C131072"),
    "zstd-big-pcluster": ("-zzstd", "-C1048576"),
    "lz4-legacy-indexes": ("-zlz4", "-Elegacy-compress"),
    "lzma-legacy-big": ("-zlzma", "-C65536", "-Elegacy-compress"),
    "two-algorithms": ("-zlz4hc:lzma", "-C65536"),
    "lz4hc-dedupe": ("-zlz4hc", "-Ededupe"),
    "lz4hc-ztailpacking": ("-zlz4hc", "-Eztailpacking"),
    "lzma-ztailpacking-legacy": ("-zlzma", "-Eztailpacking", "-Elegacy-compress"),
    "zstd-big-ztailpacking": ("-zzstd", "-C65536", "-Eztailpacking"),
    # Fragments: tails (or whole files) in the packed inode; with them uncompressed pclusters are interlaced.
    "lz4hc-fragments": ("-zlz4hc", "-Efragments"),
    "lzma-all-fragments": ("-zlzma", "-Eall-fragments"),
    "lz4-fragments-legacy": ("-zlz4", "-Efragments", "-Elegacy-compress"),
    "zstd-fragments-dedupe": ("-zzstd", "-C65536", "-Efragments", "-Ededupe"),
    "lz4hc-fragments-ztailpacking": ("-zlz4hc", "-Efragments,ztailpacking"),
    "long-prefix-in-packed-inode": ("-zlz4hc", "-Efragments", "--xattr-prefix=user.nydus."),
}


@pytest.mark.parametrize("compression", COMPRESSED)
def test_compressed(erofs_utils, fixture_tars, tmp_path, compression):
    """Compressed files, as fsck.erofs decompresses them, from the fixture tars and a directory."""
    for name in ("every-type.tar", "sparse.tar", "dedup.tar"):
        image = erofs_utils.mkfs(
            tmp_path / f"{name}.erofs", fixture_tars[name], "--tar=f", *COMPRESSED[compression]
        )
        check_image(erofs_utils, image, tmp_path / name, fixture_tars[name])
    image = erofs_utils.mkfs(
        tmp_path / "dir.erofs", _compressible_tree(tmp_path / "src"), *COMPRESSED[compression]
    )
    with open_layer(str(image)) as layer:
        layouts = {layer.rafs.layout_name(n.nid) for n in layer.rafs.walk() if n.type == REG and n.size}
    assert layouts & {"compressed_full", "compressed_compact"}
    check_image(erofs_utils, image, tmp_path / "dir")


def _compressible_tree(root: Path) -> Path:
    """Files that compress well, badly and in between, of sizes around the cluster sizes."""
    root.mkdir()
    text = b"".join(b"line %d of a compressible file\n" % i for i in range(60000))
    noise = hashlib.shake_256(b"noise").digest(300000)
    for size in (1, 4095, 4096, 4097, 65535, 65537, 200000, 1 << 20, 1500000):
        (root / f"text-{size}").write_bytes(text[:size])
        (root / f"noise-{size}").write_bytes(noise[: min(size, len(noise))])
        (root / f"mixed-{size}").write_bytes(
            (text[:5000] + noise[:3000]) * (size // 8000) + text[: size % 8000]
        )
    (root / "zeros").write_bytes(bytes(3 << 20))
    return root


def test_layout_options_reach_the_image(erofs_utils, fixture_tars, tmp_path):
    """The options above make what they say (else the layout tests would test one layout many times)."""
    src = fixture_tars["every-type.tar"]
    seen = {}
    for layout, opts in LAYOUTS.items():
        image = erofs_utils.mkfs(tmp_path / f"{layout}.erofs", src, "--tar=f", *opts)
        with open_layer(str(image)) as layer:
            r = layer.rafs
            files = [n for n in r.walk() if n.type == REG and n.size]
            seen[layout] = (
                {r.layout_name(n.nid) for n in files},
                {r.inode(n.nid).extended for n in r.walk()},
                r.prefixes,
            )
    assert seen["flat-inline"][0] >= {"flat_inline"}
    assert seen["flat-plain"][0] == {"flat_plain"}
    assert seen["chunks-4k"][0] == {"chunk_based"}
    assert seen["extended-inodes"][1] == {True}
    assert seen["compact-inodes"][1] == {False}
    assert seen["long-xattr-prefix"][2] == [b"user.nydus."]


def test_shared_xattrs_are_read(erofs_utils, tmp_path):
    """An xattr that many inodes carry is stored once in the shared area; every inode still has it."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        f = src / f"f{i}"
        f.write_bytes(b"x" * i)
        os.setxattr(f, "user.shared", b"same value")
        os.setxattr(f, "trusted.own", str(i).encode())
    image = erofs_utils.mkfs(tmp_path / "img", src, "-x1")
    raw = image.read_bytes()
    assert raw.count(b"same value") == 1  # shared, not inline six times
    with open_layer(str(image)) as layer:
        got = {fsdecode(n.path): n.xattrs for n in layer.rafs.walk() if n.type == REG}
    assert got == {
        f"/f{i}": {b"user.shared": b"same value", b"trusted.own": str(i).encode()} for i in range(6)
    }
    check_image(erofs_utils, image, tmp_path / "check")


@settings(max_examples=16, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    entries=trees(),
    opts=st.sampled_from(
        [
            (),
            ("--chunksize=4096",),
            ("-zlz4hc", "-C16384"),
            ("-zlzma", "-Eztailpacking"),
            ("-zzstd", "-Efragments"),
        ]
    ),
)
def test_generated_trees(erofs_utils, tmp_path_factory, entries, opts):
    work = tmp_path_factory.mktemp("tree")
    write_tree_tar(work / "tree.tar", entries)
    image = erofs_utils.mkfs(work / "tree.erofs", work / "tree.tar", "--tar=f", *opts)
    check_image(erofs_utils, image, work, work / "tree.tar")
    shutil.rmtree(work)


@pytest.mark.slow
def test_debian_rootfs(erofs_utils, tmp_path):
    """The Debian minbase tar of the benches, when it has been built (`bash bench/make_rootfs.sh`)."""
    src = debian_rootfs_tar()
    image = erofs_utils.mkfs(tmp_path / "rootfs.erofs", src, "--tar=f")
    want = check_image(erofs_utils, image, tmp_path / "plain", src)
    assert len(want) > 3000
    image = erofs_utils.mkfs(tmp_path / "rootfs-lz4hc.erofs", src, "--tar=f", "-zlz4hc", "-C65536")
    check_image(erofs_utils, image, tmp_path / "lz4hc", src)


def test_info_and_ls_name_the_image(erofs_utils, fixture_tars, tmp_path):
    image = erofs_utils.mkfs(tmp_path / "img", fixture_tars["every-type.tar"], "--tar=f")
    proc = run_cli("info", image)
    assert proc.returncode == 0
    text = proc.stdout.decode()
    assert "kind    erofs" in text and "plain EROFS" in text and "sb_csum" in text
    proc = run_cli("ls", "-R", image)
    assert proc.returncode == 0
    assert sorted(proc.stdout.split(b"\n")[1:-1]) == sorted(
        extracted_tree(erofs_utils.extract(image, tmp_path / "x"))
    )


def test_bad_superblock_checksum_is_one_line(erofs_utils, fixture_tars, tmp_path):
    image = erofs_utils.mkfs(tmp_path / "img", fixture_tars["every-type.tar"], "--tar=f")
    raw = bytearray(image.read_bytes())
    raw[1024 + 16] ^= 1  # s_inos: only the checksum can tell
    bad = tmp_path / "bad"
    bad.write_bytes(raw)
    proc = run_cli("ls", bad)
    assert_one_line_error(proc, 2, "s_checksum", "CRC32C")
    # fsck.erofs 1.9.3 says so too (but exits 0).
    assert b"invalid checksum" in erofs_utils.run("fsck.erofs", bad, ok=False).stderr


#: mkfs.erofs options whose images use what this reader refuses, and the words its error names it with.
REFUSED = {
    "48bit": (("-E48bit",), "48-bit"),
    "dot-omitted": (("-Edot-omitted",), "48-bit"),
}


@pytest.mark.parametrize("feature", REFUSED)
def test_unsupported_features_are_named(erofs_utils, fixture_tars, tmp_path, feature):
    """What the reader does not follow is one line naming it and exit 2, never a misread tree or bytes."""
    opts, words = REFUSED[feature]
    image = erofs_utils.mkfs(tmp_path / "img", fixture_tars["every-type.tar"], "--tar=f", *opts)
    proc = run_cli("unpack", image, "-o", tmp_path / "out.tar")
    assert_one_line_error(proc, 2, "unsupported EROFS feature", words)
    assert not (tmp_path / "out.tar").exists()


@pytest.mark.parametrize("opts", [(), ("-zlz4hc", "-C65536"), ("-zlzma",)], ids=["plain", "lz4hc", "lzma"])
def test_diff_against_the_source_tar(erofs_utils, fixture_tars, tmp_path, opts):
    for name in ("every-type.tar", "xattrs.tar", "dedup.tar"):
        image = erofs_utils.mkfs(tmp_path / f"{name}.erofs", fixture_tars[name], "--tar=f", *opts)
        proc = run_cli("diff", fixture_tars[name], image)
        assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()


@pytest.mark.parametrize(
    "argv",
    [("chunks",), ("analyze",), ("merge", "-o", "OUT"), ("cache-file", "-o", "OUT")],
    ids=lambda a: a[0],
)
def test_nydus_only_commands_say_so(erofs_utils, fixture_tars, tmp_path, argv):
    """Commands about nydus's blob table and chunks name what a plain EROFS image lacks, in one line."""
    image = erofs_utils.mkfs(tmp_path / "img", fixture_tars["every-type.tar"], "--tar=f")
    args = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    proc = run_cli(args[0], image, *args[1:])
    assert_one_line_error(proc, 2, "plain EROFS image has no", "this command reads nydus layers")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("opts", [(), ("-zlz4hc",)], ids=["plain", "lz4hc"])
def test_containerd_aufs_layers(erofs_utils, fixture_tars, tmp_path, opts):
    """containerd's EROFS differ runs ``mkfs.erofs --tar=f --aufs``: whiteouts become overlayfs ones (0:0
    character devices, trusted.overlay.opaque directories), which we read as fsck.erofs does."""
    image = erofs_utils.mkfs(tmp_path / "img", fixture_tars["whiteouts.tar"], "--tar=f", "--aufs", *opts)
    want = check_image(erofs_utils, image, tmp_path)
    assert any(e["type"] == "char" and e["rdev"] == 0 for e in want.values())
    assert any(b"trusted.overlay.opaque" in e["xattrs"] for e in want.values())


def test_ztailpacking_puts_tails_inline(erofs_utils, tmp_path):
    """With -Eztailpacking the last pcluster of a file is inline after its indexes (not block-aligned)."""
    image = erofs_utils.mkfs(
        tmp_path / "img", _compressible_tree(tmp_path / "src"), "-zlz4hc", "-Eztailpacking"
    )
    with open_layer(str(image)) as layer:
        r = layer.rafs
        tails = [r.compressed_extents(n) for n in r.walk() if n.type == REG and n.size]
        assert any(zs and zs[-1].offset % 4096 for zs in tails)
    check_image(erofs_utils, image, tmp_path / "check")


@pytest.mark.parametrize(
    "opts,formats",
    [
        (("-zlz4hc", "-Efragments"), {"fragment", "uncompressed-interlaced"}),
        (("-zlz4hc", "-Ededupe"), {"partial"}),
        (
            ("-zlzma", "-Eall-fragments", "--xattr-prefix=user.nydus."),
            {"fragment", "prefixes in packed inode"},
        ),
    ],
    ids=["fragments", "dedupe", "all-fragments"],
)
def test_packed_inode_and_partial_extents_are_met(erofs_utils, fixture_tars, tmp_path, opts, formats):
    """The options above make fragments, interlaced and partially referenced extents, and a prefix table in
    the packed inode (else the tests of them would not test them)."""
    from nydus_inspect.formats.erofs import long_prefixes_in_packed_inode
    from nydus_inspect.formats.erofs_zmap import FORMAT_NAMES

    image = erofs_utils.mkfs(tmp_path / "img", fixture_tars["every-type.tar"], "--tar=f", *opts)
    seen = set()
    with open_layer(str(image)) as layer:
        r = layer.rafs
        for n in r.walk():
            for z in (r.compressed_extents(n) if n.type == REG and n.size else None) or []:
                seen.add(FORMAT_NAMES[z.fmt])
                if z.partial:
                    seen.add("partial")
        if long_prefixes_in_packed_inode(r.esb) and r.prefixes == [b"user.nydus."]:
            seen.add("prefixes in packed inode")
    assert formats <= seen


def test_info_names_the_algorithms_as_dump_erofs(erofs_utils, fixture_tars, tmp_path):
    image = erofs_utils.mkfs(
        tmp_path / "img", fixture_tars["every-type.tar"], "--tar=f", "-zlz4hc:lzma", "-C65536"
    )
    dumped = erofs_utils.run("dump.erofs", "-s", image).stdout.decode()
    want = next(line.split(":", 1)[1].strip() for line in dumped.splitlines() if "compr_algs" in line)
    with open_layer(str(image)) as layer:
        from nydus_inspect.erofs import info

        assert ", ".join(info(layer.rafs)["compression_algorithms"]) == want == "lz4, lzma"
