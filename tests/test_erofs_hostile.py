"""Bad plain EROFS images: each is one line naming what is wrong and where, exit 2 (verify: a finding and
exit 1), never a traceback, a hang, an unbounded allocation or bytes that are not the file's.

The images are real mkfs.erofs 1.9.3 images with one field changed; the superblock checksum is set
again afterwards where the change falls in the first block, so the change itself is what is met.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from fixtures_util import assert_one_line_error, run_cli

from nydus_inspect.erofs import Z_BLOB
from nydus_inspect.formats import erofs, erofs_zmap
from nydus_inspect.formats._struct import round_up
from nydus_inspect.layer import open_layer

pytestmark = pytest.mark.erofs

TEXT = b"".join(b"line %d of a compressible file\n" % i for i in range(40000))


def _image(erofs_utils, tmp_path: Path, *opts) -> Path:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "text").write_bytes(TEXT)
    return erofs_utils.mkfs(tmp_path / "img", src, *opts)


def _where(image: Path, path: str = "/text"):
    """(inode offset, inode end, i_size offset, compressed extents) of ``path``."""
    with open_layer(str(image)) as layer:
        r = layer.rafs
        node = r.lookup(path)
        ino = r.inode(node.nid)
        off = r.inode_offset(node.nid)
        return off, off + ino.inode_size + ino.xattr_size, off + 8, r.compressed_extents(node)


def _patched(image: Path, out: Path, offset: int, data: bytes) -> Path:
    raw = bytearray(image.read_bytes())
    raw[offset : offset + len(data)] = data
    if struct.unpack_from("<I", raw, 1032)[0] & erofs.FEATURE_COMPAT_SB_CHKSUM:
        raw[1028:1032] = struct.pack("<I", erofs.sb_checksum(raw))
    out.write_bytes(raw)
    return out


def _cat_fails(bad: Path, *needles: str) -> None:
    assert_one_line_error(run_cli("cat", bad, "/text"), 2, *needles)
    proc = run_cli("verify", bad)
    assert proc.returncode == 1, proc.stdout.decode() + proc.stderr.decode()
    assert "erofs.data" in proc.stdout.decode() and "/text" in proc.stdout.decode()


@pytest.mark.parametrize("algorithm", ["lz4", "zstd", "lzma", "deflate"])
def test_corrupt_compressed_cluster(erofs_utils, tmp_path, algorithm):
    image = _image(erofs_utils, tmp_path, f"-z{algorithm}")
    *_, zs = _where(image)
    z = next(z for z in zs if z.fmt < erofs_zmap.FMT_SHIFTED)
    # The stream ends the pcluster; its tail bytes are set to ones, which no decoder reads as the extent.
    _cat_fails(_patched(image, tmp_path / "bad", z.offset + z.stored - 64, b"\xff" * 64), "pcluster")


def test_zeroed_compressed_cluster(erofs_utils, tmp_path):
    image = _image(erofs_utils, tmp_path, "-zlz4hc")
    *_, zs = _where(image)
    _cat_fails(_patched(image, tmp_path / "bad", zs[0].offset, bytes(zs[0].stored)), "only zeros")


def test_index_past_the_end(erofs_utils, tmp_path):
    """A head lcluster's block address beyond the image (legacy indexes hold it per head)."""
    image = _image(erofs_utils, tmp_path, "-zlz4", "-Elegacy-compress")
    _, end, _, _ = _where(image)
    first = round_up(end, 8) + 8 + 8  # map header, then 8 reserved bytes, then lcluster 0
    _cat_fails(_patched(image, tmp_path / "bad", first + 4, struct.pack("<I", 0xFFFF0000)), "past the image")


def test_compact_index_base_past_the_end(erofs_utils, tmp_path):
    image = _image(erofs_utils, tmp_path, "-zlz4")
    _, end, _, _ = _where(image)
    ebase = round_up(end, 8) + 8
    initial = ((32 - ebase % 32) // 4) & 7
    # The first pack's base block address ends it: 8 bytes for a 4B pack, 32 for a 2B one.
    at = ebase + 4 if initial else ebase + 28
    _cat_fails(_patched(image, tmp_path / "bad", at, struct.pack("<I", 0x7FFF0000)), "past the image")


def test_pcluster_size_over_the_limit(erofs_utils, tmp_path):
    """A big pcluster's block count (CBLKCNT, in the first NONHEAD lcluster) over EROFS's 1 MiB."""
    image = _image(erofs_utils, tmp_path, "-zlz4hc", "-C65536", "-Elegacy-compress")
    _, end, _, zs = _where(image)
    assert zs[0].stored > 4096  # a big pcluster
    second = round_up(end, 8) + 8 + 8 + 8  # lcluster 1: its delta[0] holds CBLKCNT | count
    raw = image.read_bytes()
    advise, _, d0 = struct.unpack_from("<HHH", raw, second)
    assert advise & 3 == erofs_zmap.TYPE_NONHEAD and d0 & erofs_zmap.D0_CBLKCNT
    bad = _patched(image, tmp_path / "bad", second + 4, struct.pack("<H", erofs_zmap.D0_CBLKCNT | 0x7FF))
    _cat_fails(bad, "1 MiB")


def test_indexes_past_the_end(erofs_utils, tmp_path):
    """An i_size that needs more lcluster indexes than the image holds."""
    image = _image(erofs_utils, tmp_path, "-zlz4", "-Eforce-inode-extended")
    _, _, size_at, _ = _where(image)
    _cat_fails(_patched(image, tmp_path / "bad", size_at, struct.pack("<Q", 1 << 50)), "past the image")


def test_hole_file_of_absurd_size_is_refused(erofs_utils, tmp_path):
    """A flat file without blocks (all hole) claiming 2^60 bytes: refused, not a list of 2^40 pieces."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "text").write_bytes(b"")
    image = erofs_utils.mkfs(tmp_path / "img", src, "-Eforce-inode-extended", "-Enoinline_data")
    off, _, size_at, _ = _where(image)
    no_blocks = _patched(image, tmp_path / "no-blocks", off + 16, struct.pack("<I", erofs.NULL_ADDR))  # i_u
    bad = _patched(no_blocks, tmp_path / "bad", size_at, struct.pack("<Q", 1 << 60))
    assert_one_line_error(run_cli("cat", bad, "/text"), 2, "larger than this reader handles")


def test_extents_decode_to_the_file(erofs_utils, tmp_path):
    """The chunk references of a compressed file tile it exactly (what the tests above break)."""
    image = _image(erofs_utils, tmp_path, "-zlz4hc", "-C65536")
    with open_layer(str(image)) as layer:
        node = layer.rafs.lookup("/text")
        chunks = layer.rafs.chunks(node)
        assert all(c.blob_index >= Z_BLOB for c in chunks)
        assert [c.file_offset for c in chunks] == [0] + [
            sum(c.uncompressed_size for c in chunks[:k]) for k in range(1, len(chunks))
        ]
        assert b"".join(layer.read_file(node)) == TEXT


def test_fragment_past_the_packed_inode(erofs_utils, tmp_path):
    """A file's tail said to be in the packed inode beyond its data."""
    image = _image(erofs_utils, tmp_path, "-zlz4hc", "-Eall-fragments", "-Eforce-inode-extended")
    _, end, _, zs = _where(image)
    assert zs[-1].fmt == erofs_zmap.FMT_FRAGMENT
    header = round_up(end, 8)  # the whole file in the packed inode: the header holds where, bit 63 set
    bad = _patched(image, tmp_path / "bad", header, struct.pack("<Q", (1 << 63) | (1 << 40)))
    _cat_fails(bad, "past the packed inode")


@pytest.mark.parametrize(
    "opts",
    [
        ("-x1", "--chunksize=8192"),
        ("-zlz4hc", "-C16384", "-Elegacy-compress"),
        ("-zlzma", "-Efragments,ztailpacking"),
    ],
    ids=["chunks-shared-xattrs", "lz4hc-legacy", "lzma-fragments-ztailpacking"],
)
def test_flipped_metadata_is_read_or_refused(erofs_utils, tmp_path, opts):
    """Random changes to the metadata of real images (superblock checksum set again): every read ends in
    the file's bytes or in a FormatError / UsageError, never another exception or an unbounded read."""
    import random
    import time

    from nydus_inspect.errors import FormatError, UsageError
    from nydus_inspect.model import REG

    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    for i in range(4):
        (src / "d" / f"f{i}").write_bytes(TEXT[: 5000 * (i + 1) ** 3])
        os.setxattr(src / "d" / f"f{i}", "user.same", b"shared value")
    (src / "link").symlink_to("d/f0")
    image = erofs_utils.mkfs(tmp_path / "img", src, *opts)
    raw = image.read_bytes()
    with open_layer(str(image)) as layer:
        r = layer.rafs
        # The metadata: up to the end of the last inode's index area (inodes follow the meta block).
        meta_end = max(r.inode_offset(n.nid) + 256 for n in r.walk())
    rng = random.Random(1234)
    bad = tmp_path / "bad"
    outcomes = {"read": 0, "refused": 0}
    for _ in range(500):
        data = bytearray(raw)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(1024, min(meta_end, len(data)))
            data[at] = rng.randrange(256)
        if struct.unpack_from("<I", data, 1032)[0] & erofs.FEATURE_COMPAT_SB_CHKSUM:
            data[1028:1032] = struct.pack("<I", erofs.sb_checksum(data))
        bad.write_bytes(data)
        started = time.monotonic()
        try:
            with open_layer(str(bad)) as layer:
                for i, node in enumerate(layer.rafs.walk()):
                    assert i < 1000
                    if node.type == REG:
                        got = sum(len(piece) for piece in layer.read_file(node))
                        assert got == node.size
            outcomes["read"] += 1
        except (FormatError, UsageError):
            outcomes["refused"] += 1
        assert time.monotonic() - started < 10
    assert outcomes["refused"] > 0 and outcomes["read"] > 0, outcomes


def test_wrong_link_count_is_a_finding(erofs_utils, tmp_path):
    """A hard-linked file whose inode says one link too many: the image still reads, verify names it."""
    from nydus_inspect.formats import rafs_v6

    src = tmp_path / "src"
    src.mkdir()
    (src / "text").write_bytes(TEXT[:5000])
    os.link(src / "text", src / "twin")
    image = erofs_utils.mkfs(tmp_path / "img", src)
    assert run_cli("verify", image).returncode == 0
    with open_layer(str(image)) as layer:
        r = layer.rafs
        nid = r.lookup("/text").nid
        ino, off = r.inode(nid), r.inode_offset(nid)
    layout = rafs_v6.INODE_COMPACT if ino.inode_size == rafs_v6.INODE_COMPACT.size else rafs_v6.INODE_EXTENDED
    fmt = "<H" if layout is rafs_v6.INODE_COMPACT else "<I"
    bad = _patched(image, tmp_path / "bad", off + layout.offsets["i_nlink"], struct.pack(fmt, 3))
    assert run_cli("cat", bad, "/twin").stdout == TEXT[:5000]
    proc = run_cli("verify", bad, "--json")
    assert proc.returncode == 1
    import json

    findings = json.loads(proc.stdout)["layers"][0]["findings"]
    assert [(f["check"], f["field"], f["expected"], f["found"]) for f in findings] == [
        ("erofs.nlink", "i_nlink", "2", "3")
    ], findings
