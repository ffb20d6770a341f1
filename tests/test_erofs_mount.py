"""``nydus-inspect mount IMAGE.erofs MNT``: plain EROFS images served by our FUSE file system.

Each image is made by the real mkfs.erofs (erofs-utils 1.9.3) in every layout our reader follows; the tree
our mount serves under ``rootfs/`` (types, modes, owners, times, bytes, link targets, devices, xattrs, hard
links) must be the one ``fsck.erofs --extract`` writes and the one the real ``erofsfuse`` mount of the same
image serves. Reads at offsets that cross the reader's pieces and compressed extents are held to the source
bytes too, since tree comparisons read files front to back only.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import pytest
import test_mount
from fixtures_util import fixture_tars_fixture  # noqa: F401
from test_erofs_native import (
    COMPRESSED,
    EROFS_AS_ROOT,
    LAYOUTS,
    _compressible_tree,
    assert_same_tree,
    extracted_tree,
)
from test_mount import cli, one_line_error

from nydus_inspect.layer import open_layer

# The mount tests' fixtures: FUSE present, and mounts taken down (and checked gone) after each test.
fuse = test_mount.fuse
mounts = test_mount.mounts

pytestmark = EROFS_AS_ROOT

#: Layouts the mount is held to: every uncompressed form, and compression with each algorithm and with
#: big pclusters, legacy indexes, ztailpacking, fragments (interlaced pclusters) and dedupe (partial extents).
CASES = {
    **{f"{k}": v for k, v in LAYOUTS.items() if k not in ("compact-inodes", "long-xattr-prefix")},
    **{
        k: COMPRESSED[k]
        for k in (
            "lz4",
            "lzma",
            "deflate",
            "zstd",
            "lz4hc-big-pcluster",
            "lz4-legacy-indexes",
            "lz4hc-dedupe",
            "zstd-big-ztailpacking",
            "lz4hc-fragments",
            "lzma-all-fragments",
            "long-prefix-in-packed-inode",
        )
    },
}


def _source(root: Path, fixture_tars) -> Path:
    """A directory with files that span many of the reader's 1 MiB pieces and many pclusters, hard links,
    a symlink and a hole, beside the compressible tree of the native tests."""
    _compressible_tree(root)
    noise = hashlib.shake_256(b"mount").digest(3 * (1 << 20) + 12345)
    (root / "big").write_bytes(noise)
    os.link(root / "big", root / "big-link")
    os.symlink("big", root / "to-big")
    with open(root / "holey", "wb") as f:
        f.write(b"head" * 1000)
        f.seek(5 << 20)
        f.write(b"tail" * 1000)
    os.setxattr(root / "big", "user.comment", b"a large file")
    return root


def _trailing_holes(want: dict, ours: dict, rootfs: Path) -> None:
    """fsck.erofs 1.9.3 seeks over a hole without writing, so a file that ends in one extracts short
    (erofsfuse serves it whole): such a file of ours must be the extracted bytes, then zeros."""
    for p, e in want.items():
        o = ours.get(p)
        if e["type"] != "file" or o is None or e["size"] >= o["size"]:
            continue
        data = (rootfs / os.fsdecode(p.lstrip(b"/"))).read_bytes()
        assert hashlib.sha256(data[: e["size"]]).hexdigest() == e["sha256"], p
        assert not data[e["size"] :].strip(b"\0"), p
        e["size"], e["sha256"] = o["size"], o["sha256"]


def _random_reads(mnt: Path, src: Path, seed: int) -> None:
    rnd = random.Random(seed)
    for name in ("big", "holey", "mixed-1500000", "text-1500000"):
        want = (src / name).read_bytes()
        with open(mnt / name, "rb", buffering=0) as f:
            for _ in range(40):
                off = rnd.randrange(0, len(want))
                size = rnd.choice((1, 4096, 65536, 300000, 1 << 20, 3 << 20))
                f.seek(off)
                got = f.read(size)
                assert got == want[off : off + size], f"{name}: {size} bytes at {off}"


@pytest.mark.parametrize("case", CASES)
def test_mount_serves_what_fsck_and_erofsfuse_serve(case, erofs_utils, mounts, fixture_tars, tmp_path):
    src = _source(tmp_path / "src", fixture_tars)
    image = erofs_utils.mkfs(tmp_path / "dir.erofs", src, *CASES[case])
    tar_image = erofs_utils.mkfs(
        tmp_path / "tar.erofs", fixture_tars["every-type.tar"], "--tar=f", *CASES[case]
    )
    for img in (image, tar_image):
        with open_layer(str(img)) as layer:
            packed = layer.rafs.esb.packed_nid
        mp = mounts.mount(img)
        ours = extracted_tree(mp / "rootfs")
        with erofs_utils.mounted(img, tmp_path / f"{img.stem}-erofsfuse") as real:
            assert_same_tree(ours, extracted_tree(real), f"{img.name}: our mount against erofsfuse")
        if not packed:  # fsck.erofs 1.9.3 cannot extract an image with a packed inode
            want = extracted_tree(erofs_utils.extract(img, tmp_path / f"{img.stem}-fsck"))
            _trailing_holes(want, ours, mp / "rootfs")
            assert_same_tree(ours, want, f"{img.name}: our mount against fsck.erofs")
        if img == image:
            _random_reads(mp / "rootfs", src, hash(case))
        mounts.umount(mp)


def test_entries_show_the_superblock(erofs_utils, mounts, fixture_tars, tmp_path):
    """entries/<image>/ has what a plain EROFS image has: its superblock, as ``info --json`` shows it."""
    image = erofs_utils.mkfs(tmp_path / "img.erofs", fixture_tars["every-type.tar"], "--tar=f", "-zlz4hc")
    mp = mounts.mount(image)
    assert os.listdir(mp / "entries") == ["img.erofs"]
    assert os.listdir(mp / "entries" / "img.erofs") == ["superblock.json"]
    shown = json.loads((mp / "entries" / "img.erofs" / "superblock.json").read_text())
    info = json.loads(cli("info", "--json", image).stdout)
    assert shown == info["erofs"]
    assert shown["size"] == image.stat().st_size and shown["inodes"] > 10


def test_a_pcluster_that_does_not_decode_is_eio(erofs_utils, mounts, tmp_path):
    """A damaged pcluster is EIO for reads of that file, one log line, and the mount keeps serving."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"compressible line\n" * 100000)
    (src / "b").write_bytes(b"another file\n" * 1000)
    image = erofs_utils.mkfs(tmp_path / "img.erofs", src, "-zlz4hc")
    with open_layer(str(image)) as layer:
        node = next(n for n in layer.rafs.walk() if n.path == b"/a")
        z = layer.rafs.compressed_extents(node)[1]
    data = bytearray(image.read_bytes())
    data[z.offset : z.offset + z.stored] = bytes(z.stored)
    image.write_bytes(bytes(data))
    mp = mounts.mount(image)
    with pytest.raises(OSError) as exc:
        (mp / "rootfs" / "a").read_bytes()
    assert exc.value.errno == 5
    assert (mp / "rootfs" / "b").read_bytes() == b"another file\n" * 1000
    assert "/a" in mounts.log(mp)


def test_erofs_is_not_merged_with_nydus_layers(erofs_utils, fixture_tars, tmp_path, fuse):
    """Several EROFS images are overlaid (tests/test_erofs_overlay.py); with a nydus layer, one line."""
    image = erofs_utils.mkfs(tmp_path / "img.erofs", fixture_tars["every-type.tar"], "--tar=f")
    nydus = test_mount._pack(fixture_tars["every-type.tar"], tmp_path / "layer.blob")
    (tmp_path / "mnt").mkdir()
    err = one_line_error(cli("mount", image, nydus, tmp_path / "mnt"))
    assert "not merged with nydus layers" in err


@pytest.mark.parametrize("opts", [("--chunksize=65536",), ("--chunksize=4096", "-Eforce-chunk-indexes")])
def test_blob_device_images(opts, erofs_utils, mounts, fixture_tars, tmp_path):
    """``mkfs.erofs --blobdev`` keeps chunk data in a second file the device table names: read with
    ``--blob FILE`` as fsck.erofs --device reads it, mounted as erofsfuse --device serves it; without the
    file, one line saying which device is missing."""
    src = _source(tmp_path / "src", fixture_tars)
    dev = tmp_path / "blob.dev"
    image = erofs_utils.mkfs(tmp_path / "img.erofs", src, f"--blobdev={dev}", *opts)
    info = json.loads(cli("info", "--json", image).stdout)["erofs"]
    assert [d["device"] for d in info["devices"]] == [1]
    assert info["devices"][0]["blocks"] * 4096 <= dev.stat().st_size
    fsck = tmp_path / "fsck"
    erofs_utils.run(
        "fsck.erofs", f"--extract={fsck}", f"--device={dev}", "--preserve", "--xattrs", "--force", image
    )
    want = extracted_tree(fsck)
    ours = tmp_path / "ours"
    proc = cli("unpack", image, "--blob", dev, "--to-dir", ours)
    assert proc.returncode == 0, proc.stderr.decode()
    got = extracted_tree(ours)
    _trailing_holes(want, got, ours)
    assert_same_tree(got, want, "unpack of a --blobdev image against fsck.erofs --device")
    mp = mounts.mount(image, "--blob", dev)
    served = extracted_tree(mp / "rootfs")
    _trailing_holes(want, served, mp / "rootfs")
    assert_same_tree(served, want, "mount of a --blobdev image against fsck.erofs --device")
    _random_reads(mp / "rootfs", src, 7)
    err = one_line_error(cli("cat", image, "/big"))
    assert "extra device 1" in err and "--blob" in err
    short = tmp_path / "short.dev"
    short.write_bytes(dev.read_bytes()[:4096])
    assert "at least" in one_line_error(cli("cat", image, "/big", "--blob", short))


#: mkfs.erofs 1.9.3 options that write what this reader does not follow, and the words of its refusal.
UNSUPPORTED = {
    "metabox": (("--tar=f", "-m4096", "-zlz4hc"), "metadata box"),
    "48bit": (("--tar=f", "-E48bit"), "48-bit"),
}


@pytest.mark.parametrize("case", UNSUPPORTED)
def test_unsupported_images_are_one_line_for_the_mount(case, erofs_utils, fixture_tars, tmp_path, fuse):
    opts, words = UNSUPPORTED[case]
    image = erofs_utils.mkfs(tmp_path / "img.erofs", fixture_tars["every-type.tar"], *opts)
    (tmp_path / "mnt").mkdir()
    err = one_line_error(cli("mount", image, tmp_path / "mnt"))
    assert "unsupported EROFS feature" in err and words in err, err
    assert not os.path.ismount(tmp_path / "mnt")
