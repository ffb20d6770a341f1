"""A user's test suite: only the pytest plugin's public fixtures and nydus_inspect.testing's helpers.

This is how a project that converts images to nydus would prove its conversion right. Nothing here
reaches into nydus-inspect's internals.
"""

from __future__ import annotations

import pytest

from nydus_inspect.testing import (
    BlockDev,
    CharDev,
    Dir,
    Fifo,
    File,
    Hardlink,
    Symlink,
    assert_layer_valid,
    assert_roundtrip,
    assert_same_tree,
    build_tar,
)

ROOTFS = {
    "etc": Dir(),
    "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n",
    "etc/shadow": File(b"root:*:19000::::::\n", mode=0o640, gid=42),
    "bin/busybox": File(b"\x7fELF" + bytes(range(256)) * 8000, mode=0o755),
    "bin/sh": Symlink("busybox"),
    "bin/ls": Hardlink("bin/busybox"),
    "usr/bin/passwd": File(b"setuid helper", mode=0o4755),
    "tmp": Dir(mode=0o1777),
    "dev/null": CharDev(1, 3),
    "dev/loop0": BlockDev(7, 0),
    "run/initctl": Fifo(),
    "opt/app/config": File(b"x" * 3_000_000, xattrs={"user.origin": b"demo"}),
}


def test_a_packed_layer_is_valid(nydus_pack):
    layer = nydus_pack(ROOTFS)
    assert_layer_valid(layer)


@pytest.mark.parametrize("compressor", ["zstd", "lz4_block", "none"])
def test_the_layer_round_trips(nydus_pack, tmp_path, compressor):
    layer = nydus_pack(ROOTFS, compressor=compressor, chunk_size=0x10000)
    source = build_tar(ROOTFS, tmp_path / "source.tar")
    assert_roundtrip(source, layer)


def test_layer_contents_through_the_opened_layer(nydus_pack, nydus_layer):
    layer = nydus_layer(nydus_pack(ROOTFS))
    node = layer.rafs.lookup("/etc/shadow")
    assert (node.perm, node.gid) == (0o640, 42)
    assert b"".join(layer.read_file(node)) == b"root:*:19000::::::\n"
    sh = layer.rafs.lookup("/bin/sh")
    assert sh.target == b"busybox"
    ls, busybox = layer.rafs.lookup("/bin/ls"), layer.rafs.lookup("/bin/busybox")
    assert ls.hardlink is not None and ls.hardlink == busybox.hardlink


def test_a_difference_is_named(nydus_pack, tmp_path):
    layer = nydus_pack(ROOTFS)
    changed = dict(ROOTFS, **{"etc/passwd": b"root:x:0:0:root:/root:/bin/bash\n"})
    other = build_tar(changed, tmp_path / "changed.tar")
    with pytest.raises(AssertionError) as info:
        assert_same_tree(other, layer)
    message = str(info.value)
    assert "/etc/passwd: sha256" in message and "/etc/passwd: size" in message
    assert "differ in 2 place(s)" in message


def test_a_corrupted_layer_is_caught(nydus_pack, tmp_path):
    layer = nydus_pack(ROOTFS)
    data = bytearray(layer.read_bytes())
    data[100] ^= 0x10  # inside the chunk data of the first file
    bad = tmp_path / "bad.blob"
    bad.write_bytes(bytes(data))
    with pytest.raises(AssertionError) as info:
        assert_layer_valid(bad)
    assert "check(s) failed" in str(info.value) or "unreadable" in str(info.value)
