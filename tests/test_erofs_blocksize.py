"""Plain EROFS images with blocks other than 4096 bytes, and ``mkfs.erofs --tar=i`` index images.

mkfs.erofs 1.9.3 writes blocks of 512 to 4096 bytes (``-b``; it refuses larger ones), and ``--tar=i`` writes
an index of the tar in 512-byte blocks: metadata in the image, each file one chunk whose index names extra
device 1 (the tar itself) and the 512-byte block of the tar its bytes start at. Every image here is made by
the real mkfs.erofs and read by ours (model, unpack, verify, mount) as ``fsck.erofs --extract`` (given the
tar with ``--device``) and ``erofsfuse`` read it; what is damaged or missing is one line and exit 2.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
from pathlib import Path

import pytest
import test_mount
from fixtures_util import assert_one_line_error, debian_rootfs_tar, fixture_tars_fixture, run_cli  # noqa: F401
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_erofs_native import (
    EROFS_AS_ROOT,
    FIXTURES,
    _compressible_tree,
    _tar_files,
    assert_same_tree,
    check_image,
    extracted_tree,
)
from tree_strategies import trees, write_tree_tar

from nydus_inspect.formats import erofs
from nydus_inspect.layer import open_layer
from nydus_inspect.model import REG

fuse = test_mount.fuse
mounts = test_mount.mounts

pytestmark = EROFS_AS_ROOT

BLOCK_SIZES = [512, 1024, 2048]
#: Each layout family with small blocks: flat (inline tails, plain), chunk-based, and compressed.
VARIANTS = {
    "flat-inline": (),
    "flat-plain": ("-Enoinline_data",),
    "chunk-indexes": ("--chunksize=8192", "-Eforce-chunk-indexes"),
    "lz4hc": ("-zlz4hc",),
    "lz4hc-big-pcluster": ("-zlz4hc", "-C16384"),
    "lzma-ztailpacking": ("-zlzma", "-Eztailpacking"),
    "zstd-fragments-dedupe": ("-zzstd", "-C8192", "-Efragments", "-Ededupe"),
    "deflate-legacy": ("-zdeflate", "-Elegacy-compress"),
}


def _block_size(image: Path) -> int:
    with open_layer(str(image)) as layer:
        return layer.rafs.block_size


@pytest.mark.parametrize("block", BLOCK_SIZES)
@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_tars_in_small_blocks(erofs_utils, fixture_tars, tmp_path, name, block):
    image = erofs_utils.mkfs(tmp_path / "img.erofs", fixture_tars[name], "--tar=f", f"-b{block}")
    assert _block_size(image) == block
    check_image(erofs_utils, image, tmp_path, fixture_tars[name])


@pytest.mark.parametrize("block", BLOCK_SIZES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_layouts_in_small_blocks(erofs_utils, fixture_tars, tmp_path, variant, block):
    """Every layout family, from tars and from a directory of files around the block and cluster sizes."""
    opts = (f"-b{block}", *VARIANTS[variant])
    for name in ("every-type.tar", "sparse.tar", "dedup.tar"):
        image = erofs_utils.mkfs(tmp_path / f"{name}.erofs", fixture_tars[name], "--tar=f", *opts)
        check_image(erofs_utils, image, tmp_path / name, fixture_tars[name])
    image = erofs_utils.mkfs(tmp_path / "dir.erofs", _compressible_tree(tmp_path / "src"), *opts)
    with open_layer(str(image)) as layer:
        r = layer.rafs
        assert r.block_size == block
        layouts = {r.layout_name(n.nid) for n in r.walk() if n.type == REG and n.size}
    if "-z" in " ".join(opts):
        assert layouts & {"compressed_full", "compressed_compact"}
    elif "--chunksize=8192" in opts:
        assert layouts == {"chunk_based"}
    check_image(erofs_utils, image, tmp_path / "dir")


def _index(erofs_utils, tar: Path, image: Path) -> Path:
    return erofs_utils.mkfs(image, tar, "--tar=i")


@pytest.mark.parametrize("name", FIXTURES)
def test_tar_index_reads_the_tar(erofs_utils, fixture_tars, tmp_path, name):
    """``--tar=i``: the image holds metadata only, every file's bytes are read from the tar given with
    --blob, as fsck.erofs --device=TAR extracts them."""
    tar = fixture_tars[name]
    image = _index(erofs_utils, tar, tmp_path / "index.erofs")
    with open_layer(str(image)) as layer:
        r = layer.rafs
        assert r.block_size == 512 and len(r.esb.devices) == 1
        files = [n for n in r.walk() if n.type == REG and n.size]
        assert files and {r.layout_name(n.nid) for n in files} == {"chunk_based"}
    assert image.stat().st_size < tar.stat().st_size
    check_image(erofs_utils, image, tmp_path, tar, devices=(tar,))


def test_tar_index_of_a_gzip_tar_reads_the_tar_inside(erofs_utils, fixture_tars, tmp_path):
    """``--tar=i --ungzip``: the index points into the tar the gzip holds, which is the one to give."""
    gz, tar = fixture_tars["every-type.tar.gz"], fixture_tars["every-type.tar"]
    image = erofs_utils.mkfs(tmp_path / "index.erofs", gz, "--tar=i", "--ungzip")
    check_image(erofs_utils, image, tmp_path, tar, devices=(tar,))
    assert_one_line_error(run_cli("cat", image, "/data/small.txt", "--blob", gz), 2, "at least")


def test_tar_index_through_every_command(erofs_utils, fixture_tars, tmp_path):
    """ls, cat, unpack (to a tar), verify and diff of an index image, all given the tar with --blob."""
    tar = fixture_tars["every-type.tar"]
    image = _index(erofs_utils, tar, tmp_path / "index.erofs")
    want = _tar_files(tar)
    path, (size, digest) = max(want.items(), key=lambda kv: kv[1][0])
    proc = run_cli("cat", image, path.decode(), "--blob", tar)
    assert proc.returncode == 0, proc.stderr.decode()
    assert (len(proc.stdout), hashlib.sha256(proc.stdout).hexdigest()) == (size, digest)
    proc = run_cli("ls", "-R", image)  # metadata only: no tar needed
    assert proc.returncode == 0 and path in proc.stdout.split(b"\n")
    proc = run_cli("info", image)
    assert proc.returncode == 0
    lines = proc.stdout.decode().splitlines()
    blocks = -(-tar.stat().st_size // 512)
    assert any(ln.split() == ["block", "size", "512"] for ln in lines), lines
    shown = next(ln.split() for ln in lines if ln.split()[:1] == ["devices"])
    assert shown[1] == "1:" and 0 < int(shown[2]) <= blocks and shown[3:] == ["blocks"], shown
    proc = run_cli("verify", image, "--blob", tar)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    proc = run_cli("diff", tar, image, "--blob", tar)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    out = tmp_path / "back.tar"
    proc = run_cli("unpack", image, "--blob", tar, "-o", out)
    assert proc.returncode == 0, proc.stderr.decode()
    assert _tar_files(out) == want


def test_tar_index_without_its_tar_is_one_line(erofs_utils, fixture_tars, tmp_path):
    tar = fixture_tars["every-type.tar"]
    image = _index(erofs_utils, tar, tmp_path / "index.erofs")
    for argv in (("cat", image, "/data/small.txt"), ("unpack", image, "-o", tmp_path / "out.tar")):
        assert_one_line_error(run_cli(*argv), 2, "blob device", "--tar=i", "--blob")
    assert not (tmp_path / "out.tar").exists()
    short = tmp_path / "short.tar"
    short.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])
    assert_one_line_error(run_cli("cat", image, "/data/small.txt", "--blob", short), 2, "at least")


def test_verify_names_a_tar_that_is_not_the_indexed_one(erofs_utils, fixture_tars, tmp_path):
    """EROFS records no digest of a tar index's data: verify holds each file's data to follow its own tar
    header, so a different tar (here the same one behind an extra member) is a finding naming the files, and
    a --blobdev device (chunk data, no headers) is not held to it."""
    import io
    import tarfile

    tar = fixture_tars["every-type.tar"]
    image = _index(erofs_utils, tar, tmp_path / "index.erofs")
    extra = io.BytesIO()
    with tarfile.open(fileobj=extra, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        info = tarfile.TarInfo("extra")
        info.size = 512
        tf.addfile(info, io.BytesIO(bytes(512)))
    shifted = tmp_path / "shifted.tar"
    shifted.write_bytes(extra.getvalue()[:1024] + tar.read_bytes())
    proc = run_cli("verify", image, "--blob", shifted)
    out = proc.stdout.decode()
    assert proc.returncode == 1, out + proc.stderr.decode()
    assert "erofs.tar" in out and "/data/two-and-a-half-m.bin" in out, out
    proc = run_cli("verify", image, "--blob", tar)
    assert proc.returncode == 0 and "erofs.tar" not in proc.stdout.decode()
    dev = tmp_path / "blob.dev"
    image = erofs_utils.mkfs(
        tmp_path / "blobdev.erofs", tar, "--tar=f", "-b512", "--chunksize=4096", f"--blobdev={dev}"
    )
    proc = run_cli("verify", image, "--blob", dev)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()


def test_mount_of_a_tar_index_without_its_tar_is_one_line(erofs_utils, fixture_tars, tmp_path, fuse):
    tar = fixture_tars["every-type.tar"]
    image = _index(erofs_utils, tar, tmp_path / "index.erofs")
    (tmp_path / "mnt").mkdir()
    assert_one_line_error(run_cli("mount", image, tmp_path / "mnt"), 2, "blob device", "--blob")
    assert not os.path.ismount(tmp_path / "mnt")
    short = tmp_path / "short.tar"
    short.write_bytes(tar.read_bytes()[:4096])
    assert_one_line_error(run_cli("mount", image, tmp_path / "mnt", "--blob", short), 2, "at least")
    assert not os.path.ismount(tmp_path / "mnt")


def _rewrite(image: Path, out: Path, patch) -> Path:
    raw = bytearray(image.read_bytes())
    patch(raw)
    if struct.unpack_from("<I", raw, 1032)[0] & erofs.FEATURE_COMPAT_SB_CHKSUM:
        # The checksum would catch most changes first: set it again so the field itself is judged.
        raw[1028:1032] = struct.pack("<I", erofs.sb_checksum(raw))
    out.write_bytes(raw)
    return out


def test_tar_index_past_the_tar_is_one_line(erofs_utils, fixture_tars, tmp_path):
    """A chunk index naming a block past the tar's end (as the device table gives it) is refused, naming
    the file's chunk, before anything is read."""
    tar = fixture_tars["every-type.tar"]
    image = _index(erofs_utils, tar, tmp_path / "index.erofs")
    with open_layer(str(image)) as layer:
        r = layer.rafs
        node = r.lookup("/data/small.txt")
        ino = r.inode(node.nid)
        at = -(-(r.inode_offset(node.nid) + ino.inode_size + ino.xattr_size) // 8) * 8
        blocks = r.esb.devices[0][1]
    assert struct.unpack_from("<H", image.read_bytes(), at + 2)[0] == 1  # device_id: the tar
    bad = _rewrite(image, tmp_path / "bad.erofs", lambda raw: struct.pack_into("<I", raw, at + 4, blocks))
    err = assert_one_line_error(run_cli("cat", bad, "/data/small.txt", "--blob", tar), 2, "past device 1")
    assert "small.txt" in err or "nid" in err
    bad = _rewrite(image, tmp_path / "bad2.erofs", lambda raw: struct.pack_into("<H", raw, at + 2, 2))
    assert_one_line_error(run_cli("cat", bad, "/data/small.txt", "--blob", tar), 2, "device 2")


@pytest.mark.parametrize(
    "bits,words",
    [
        (13, "unsupported EROFS feature: 8192-byte blocks"),
        (16, "unsupported EROFS feature: 65536-byte blocks"),
        (8, "block size out of range"),
        (20, "block size out of range"),
    ],
)
def test_block_size_out_of_reach_is_one_line(erofs_utils, fixture_tars, tmp_path, bits, words):
    image = erofs_utils.mkfs(tmp_path / "img.erofs", fixture_tars["every-type.tar"], "--tar=f", "-b1024")

    def patch(raw):
        raw[1024 + 12] = bits

    bad = _rewrite(image, tmp_path / "bad.erofs", patch)
    for cmd in ("ls", "info"):
        assert_one_line_error(run_cli(cmd, bad), 2, "s_blkszbits", words)


def test_small_block_checksum_covers_one_block(erofs_utils, fixture_tars, tmp_path):
    """With blocks of at most 1024 bytes the superblock checksum covers one whole block from byte 1024
    (else the rest of the first block): a change there is caught, as fsck.erofs catches it."""
    image = erofs_utils.mkfs(tmp_path / "img.erofs", fixture_tars["every-type.tar"], "--tar=f", "-b512")
    raw = bytearray(image.read_bytes())
    assert struct.unpack_from("<I", raw, 1032)[0] & erofs.FEATURE_COMPAT_SB_CHKSUM
    raw[1024 + 511] ^= 1
    bad = tmp_path / "bad.erofs"
    bad.write_bytes(raw)
    assert_one_line_error(run_cli("ls", bad), 2, "s_checksum", "CRC32C")
    assert b"invalid checksum" in erofs_utils.run("fsck.erofs", bad, ok=False).stderr


def test_mount_small_blocks_and_tar_index(erofs_utils, mounts, fixture_tars, tmp_path):
    """Our mount serves a 1024-byte-block compressed image and a --tar=i index (over its tar) as erofsfuse
    serves them, and reads across pieces and extents as the source says."""
    src = _compressible_tree(tmp_path / "src")
    noise = hashlib.shake_256(b"small blocks").digest(3 * (1 << 20) + 777)
    (src / "big").write_bytes(noise)
    tar = fixture_tars["every-type.tar"]
    cases = [
        (erofs_utils.mkfs(tmp_path / "b1k.erofs", src, "-b1024", "-zlz4hc", "-C8192"), ()),
        (erofs_utils.mkfs(tmp_path / "b512.erofs", tar, "--tar=f", "-b512", "-zlzma"), ()),
        (_index(erofs_utils, tar, tmp_path / "index.erofs"), (tar,)),
    ]
    for image, devices in cases:
        mp = mounts.mount(image, *(a for d in devices for a in ("--blob", d)))
        ours = extracted_tree(mp / "rootfs")
        with erofs_utils.mounted(image, tmp_path / f"{image.stem}-erofsfuse", devices) as real:
            assert_same_tree(ours, extracted_tree(real), f"{image.name}: our mount against erofsfuse")
        if image.stem == "b1k":
            with open(mp / "rootfs" / "big", "rb", buffering=0) as f:
                for off, size in ((0, 1), (1023, 2), (4095, 8193), (1 << 20, 1 << 20), (len(noise) - 5, 99)):
                    f.seek(off)
                    assert f.read(size) == noise[off : off + size], (off, size)
        mounts.umount(mp)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    entries=trees(),
    opts=st.sampled_from(
        [
            ("--tar=f", "-b512"),
            ("--tar=f", "-b1024", "-zlz4hc", "-C4096"),
            ("--tar=f", "-b2048", "--chunksize=4096"),
            ("--tar=f", "-b512", "-zzstd", "-Efragments"),
            ("--tar=i",),
        ]
    ),
)
def test_generated_trees_in_small_blocks(erofs_utils, tmp_path_factory, entries, opts):
    work = tmp_path_factory.mktemp("tree")
    tar = work / "tree.tar"
    write_tree_tar(tar, entries)
    image = erofs_utils.mkfs(work / "tree.erofs", tar, *opts)
    check_image(erofs_utils, image, work, tar, devices=(tar,) if opts == ("--tar=i",) else ())
    shutil.rmtree(work)


@pytest.mark.slow
@pytest.mark.parametrize(
    "opts",
    [("--tar=i",), ("--tar=f", "-b512"), ("--tar=f", "-b2048", "-zlz4hc", "-C65536")],
    ids=["tar-index", "512", "2048-lz4hc"],
)
def test_debian_rootfs(erofs_utils, tmp_path, opts):
    """The Debian minbase tar of the benches as a tar index and in small blocks."""
    src = debian_rootfs_tar()
    image = erofs_utils.mkfs(tmp_path / "rootfs.erofs", src, *opts)
    devices = (src,) if opts == ("--tar=i",) else ()
    want = check_image(erofs_utils, image, tmp_path, src, devices=devices)
    assert len(want) > 3000


@pytest.mark.parametrize(
    "opts", [("-b512", "-zlz4hc", "-C2048"), ("-b1024", "-Enoinline_data"), ("--tar=i",)], ids=str
)
def test_damaged_small_block_images_are_format_errors(erofs_utils, fixture_tars, tmp_path, opts):
    """Bytes of the metadata changed at random (checksum set again): every reader path (walk, xattrs, block
    maps, chunk indexes, lcluster indexes, pclusters) either reads or raises its FormatError, nothing else."""
    import random

    from fuzz.targets import fuzz_erofs

    if opts == ("--tar=i",):
        src = fixture_tars["xattrs.tar"]
    else:
        src = tmp_path / "src"
        (src / "d").mkdir(parents=True)
        (src / "d" / "text").write_bytes(b"".join(b"line %d\n" % i for i in range(3000)))
        (src / "d" / "noise").write_bytes(hashlib.shake_256(b"noise").digest(5000))
        (src / "tiny").write_bytes(b"x" * 700)
        os.symlink("d/text", src / "link")
        os.setxattr(src / "tiny", "user.k", b"v" * 40)
    image = erofs_utils.mkfs(tmp_path / "img.erofs", src, *opts)
    raw = image.read_bytes()
    with open_layer(str(image)) as layer:
        meta = layer.rafs.inode_offset(0)
    rnd = random.Random(" ".join(opts))
    for _ in range(300):
        bad = bytearray(raw)
        for _ in range(rnd.choice((1, 2, 4))):
            at = rnd.randrange(1024, len(raw)) if rnd.random() < 0.2 else rnd.randrange(meta, len(raw))
            bad[at] = rnd.choice((0, 0xFF, bad[at] ^ (1 << rnd.randrange(8)), rnd.randrange(256)))
        fuzz_erofs(bytes(bad))
