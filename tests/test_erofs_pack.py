"""An independent check of the bootstraps pack writes: Debian erofs-utils' fsck.erofs.

Every bootstrap (every fixture x compressor, inline and separate) must pass ``fsck.erofs`` with a
zero-filled device standing in for the blob, and ``fsck.erofs --extract`` over the layer's cache file
(``nydus-inspect cache-file``: each chunk decompressed at its uncompressed offset) must reproduce the
source tar's files. fsck.erofs 1.5 extracts hard links as copies, does not restore xattrs and chowns
after chmod (which clears set-user-ID and set-group-ID on files), so those are left out of the comparison.
"""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest
from conftest import BOOTSTRAP, DATA_BLOB, TOC_BLOB
from fixtures_util import (
    COMPRESSORS,
    VECTOR_TARS,
    assert_dir_matches,
    expected_tree,
    fixture_tars_fixture,  # noqa: F401 (provides the fixture_tars fixture)
    make_fixtures,
    pack_layer,
    source_tar,
)

from nydus_inspect.layer import open_layer
from nydus_inspect.unpack import cache_file

pytestmark = pytest.mark.erofs

# The distinct layers (every-type.tar.gz and .zst hold the same tar as every-type.tar).
SOURCES = [
    f"fixture:{n}"
    for n in (
        "every-type.tar",
        "whiteouts.tar",
        "xattrs.tar",
        "longnames.tar",
        "dedup.tar",
        "global-pax.tar",
        "bad-xattr-namespace.tar",
    )
]
SOURCES += [f"vector:{n}" for n in VECTOR_TARS]


def fsck(fsck_erofs: str, boot, device=None, extract=None) -> subprocess.CompletedProcess:
    cmd = [fsck_erofs]
    if device is not None:
        cmd.append(f"--device={device}")
    if extract is not None:
        cmd.append(f"--extract={extract}")
    cmd.append(str(boot))
    proc = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout.decode()}{proc.stderr.decode()}"
    )
    return proc


def _bootstrap_and_blob_size(blob) -> tuple[bytes, int]:
    with open_layer(str(blob)) as layer:
        boot = layer.bootstrap_bytes()
        blobs = layer.rafs.blobs
        assert len(blobs) <= 1
        return bytes(boot), (blobs[0].uncompressed_size if blobs else 0)


@pytest.mark.parametrize("compressor", COMPRESSORS)
@pytest.mark.parametrize("source", SOURCES)
def test_fsck_accepts_every_bootstrap(request, fsck_erofs, tmp_path, source, compressor):
    src = source_tar(request, source)
    blob, separate = tmp_path / "layer.blob", tmp_path / "separate.boot"
    pack_layer(src, blob, compressor, "blake3", 0x1000, bootstrap=str(separate))
    boot, usize = _bootstrap_and_blob_size(blob)
    inline = tmp_path / "inline.boot"
    inline.write_bytes(boot)
    if usize == 0:
        fsck(fsck_erofs, inline)  # no blob table: no device at all
        fsck(fsck_erofs, separate)
        return
    zero = tmp_path / "zero.dev"
    with open(zero, "wb") as f:
        f.truncate(usize)
    fsck(fsck_erofs, inline, device=zero)
    fsck(fsck_erofs, separate, device=zero)


EXTRACT_CASES = [("fixture:every-type.tar", c) for c in COMPRESSORS] + [(s, "zstd") for s in SOURCES[1:]]


@pytest.mark.parametrize(("source", "compressor"), EXTRACT_CASES)
def test_fsck_extract_reproduces_the_source(request, fsck_erofs, tmp_path, source, compressor):
    src = source_tar(request, source)
    blob = tmp_path / "layer.blob"
    pack_layer(src, blob, compressor, "blake3", 0x1000)
    boot, usize = _bootstrap_and_blob_size(blob)
    (tmp_path / "layer.boot").write_bytes(boot)
    out = tmp_path / "extracted"
    device = None
    if usize:
        device = tmp_path / "layer.cache"
        with open_layer(str(blob)) as layer:
            assert cache_file(layer, str(device)) == usize
        assert device.stat().st_size == usize
    fsck(fsck_erofs, tmp_path / "layer.boot", device=device, extract=out)
    if not expected_tree(src):
        assert not out.exists() or list(out.iterdir()) == []
        return
    assert_dir_matches(expected_tree(src), out, xattrs=False, hardlinks=False, special_bits=False)


def _tree_bytes(root) -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out["/" + os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _layer_bytes(layer) -> dict[str, str]:
    out = {}
    for node in layer.rafs.walk():
        if node.type == "file":
            h = hashlib.sha256()
            for data in layer.read_file(node):
                h.update(data)
            out[os.fsdecode(node.path)] = h.hexdigest()
    return out


@pytest.mark.vectors
def test_fsck_extracts_the_real_inline_blob(vectors, fsck_erofs, tmp_path):
    with open_layer(str(vectors / TOC_BLOB)) as layer:
        (tmp_path / "boot").write_bytes(bytes(layer.bootstrap_bytes()))
        cache_file(layer, str(tmp_path / "cache"))
        want = _layer_bytes(layer)
    fsck(fsck_erofs, tmp_path / "boot", device=tmp_path / "cache", extract=tmp_path / "out")
    assert sorted(want) == ["/error.rs", "/lib.rs", "/logger.rs"]
    assert _tree_bytes(tmp_path / "out") == want


@pytest.mark.vectors
def test_fsck_extracts_the_real_separate_bootstrap(vectors, fsck_erofs, tmp_path):
    blob_dir = str((vectors / DATA_BLOB).parent)
    with open_layer(str(vectors / BOOTSTRAP), blob_dir=blob_dir) as layer:
        cache_file(layer, str(tmp_path / "cache"))
        want = _layer_bytes(layer)
    fsck(fsck_erofs, vectors / BOOTSTRAP, device=tmp_path / "cache", extract=tmp_path / "out")
    assert sorted(want) == ["/lib.rs", "/sync_io.rs"]
    assert _tree_bytes(tmp_path / "out") == want


def test_fsck_accepts_xattrs_larger_than_a_block(fsck_erofs, tmp_path):
    """An inode whose xattrs take more than a block starts a block and spans into the next ones."""
    t = make_fixtures.Tar()
    t.dir("d", xattrs={b"user.k%03d" % i: b"v" * 40 for i in range(120)})
    t.file("d/many", b"data " * 2000, xattrs={b"user.k%03d" % i: bytes([i]) * 50 for i in range(150)})
    t.file("d/big", b"x", xattrs={b"user.big": b"b" * 65535})
    t.file("d/after", b"after the big ones\n")
    src = tmp_path / "src.tar"
    src.write_bytes(t.bytes())
    blob = tmp_path / "layer.blob"
    pack_layer(src, blob)
    boot, usize = _bootstrap_and_blob_size(blob)
    (tmp_path / "layer.boot").write_bytes(boot)
    with open_layer(str(blob)) as layer:
        cache_file(layer, str(tmp_path / "layer.cache"))
    fsck(fsck_erofs, tmp_path / "layer.boot", device=tmp_path / "layer.cache", extract=tmp_path / "out")
    assert_dir_matches(expected_tree(src), tmp_path / "out", xattrs=False)
