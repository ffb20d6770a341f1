"""Every reader of chunk data refuses a damaged chunk, and names the same chunk verify names.

One chunk of a packed fixture layer is flipped; then ``cat``, ``unpack`` (tar and directory), ``cache-file``,
``diff``, ``verify``, a read through a real FUSE mount and the TUI's chunk check and file preview each read
it. The same runs on a bootstrap whose chunk table was cut off, where chunk records come from blob.meta and
digests from blob.digest only.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from fixtures_util import assert_one_line_error, fixture_tars_fixture, pack_layer, run_cli  # noqa: F401
from test_mount import Mounts, fuse  # noqa: F401

from nydus_inspect.errors import NydusInspectError
from nydus_inspect.formats import rafs_v6
from nydus_inspect.layer import open_layer

#: A file stored as one raw (not compressed) chunk: a flipped byte decodes, and only its digest can tell.
RAW_FILE = "/data/random-3000.bin"
#: A file of several zstd chunks: a flipped byte in one of them breaks its frame or its digest.
ZSTD_FILE = "/data/exact-1m.txt"


def _chunk_of(boot: Path, blob: Path, path: str, k: int = 0):
    with open_layer(str(boot), blobs=[str(blob)]) as layer:
        r = layer.rafs
        return r.chunks(r.lookup(path))[k]


def _damage(tmp: Path, tar: Path, path: str, *, cut_chunk_table: bool) -> dict:
    """Pack ``tar`` with a separate bootstrap, flip a byte of ``path``'s first chunk in the blob, and when
    asked zero the chunk table's place in the bootstrap (readers then know chunks from blob.meta only)."""
    blob, boot = tmp / "layer.blob", tmp / "layer.boot"
    pack_layer(tar, blob, chunk_size=0x1000, bootstrap=str(boot))
    chunk = _chunk_of(boot, blob, path)
    data = bytearray(blob.read_bytes())
    data[chunk.compressed_offset + chunk.compressed_size // 2] ^= 0x55
    blob.write_bytes(data)
    if cut_chunk_table:
        raw = bytearray(boot.read_bytes())
        base = rafs_v6.EXT_SUPERBLOCK_OFFSET
        for name in ("s_chunk_table_offset", "s_chunk_table_size"):
            at = base + rafs_v6.EXT_SUPERBLOCK.offsets[name]
            raw[at : at + 8] = bytes(8)
        boot.write_bytes(raw)
        with open_layer(str(boot), blobs=[str(blob)]) as layer:
            assert not layer.rafs.chunk_table(), "the chunk table should be gone"
    return {
        "blob": blob,
        "boot": boot,
        "path": path,
        "chunk": chunk,
        "name": f"chunk {chunk.ci_index} of blob {chunk.blob_index}",
    }


@pytest.fixture(scope="module", params=["chunk-table", "blob-meta-only"])
def damaged(request, fixture_tars, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp(request.param)
    return _damage(
        tmp, fixture_tars["every-type.tar"], RAW_FILE, cut_chunk_table=request.param == "blob-meta-only"
    )


def _layer_args(d: dict) -> list:
    return [d["boot"], "--blob", d["blob"]]


def test_cat_refuses(damaged):
    proc = run_cli("cat", *_layer_args(damaged), damaged["path"])
    assert_one_line_error(proc, 2, damaged["name"])
    assert proc.stdout == b""


def test_unpack_refuses(damaged, tmp_path):
    out = tmp_path / "out.tar"
    assert_one_line_error(run_cli("unpack", *_layer_args(damaged), "-o", out), 2, damaged["name"])
    assert not out.exists()


def test_unpack_to_dir_refuses(damaged, tmp_path):
    assert_one_line_error(
        run_cli("unpack", *_layer_args(damaged), "--to-dir", tmp_path / "d"), 2, damaged["name"]
    )


def test_cache_file_refuses(damaged, tmp_path):
    out = tmp_path / "cache"
    assert_one_line_error(run_cli("cache-file", *_layer_args(damaged), "-o", out), 2, damaged["name"])
    assert not out.exists()


def test_diff_refuses(damaged, fixture_tars):
    proc = run_cli("diff", fixture_tars["every-type.tar"], *_layer_args(damaged))
    assert_one_line_error(proc, 2, damaged["name"])


def test_verify_reports_the_same_chunk(damaged):
    proc = run_cli("verify", *_layer_args(damaged), "--json")
    assert proc.returncode == 1, proc.stderr
    import json

    report = json.loads(proc.stdout)
    findings = (
        [f for layer in report["layers"] for f in layer["findings"]]
        if "layers" in report
        else report["findings"]
    )
    chunk = damaged["chunk"]
    bad = {(f.get("blob_index"), f.get("chunk")) for f in findings if f["check"].startswith("chunk.")}
    assert bad == {(chunk.blob_index, chunk.ci_index)}, findings


def test_tui_chunk_check_and_preview_refuse(damaged):
    from tui.data import ChunkSource, LayerView

    chunk = damaged["chunk"]
    with open_layer(str(damaged["boot"]), blobs=[str(damaged["blob"])]) as layer:
        view = LayerView(layer)
        source = ChunkSource(view, chunk.blob_index, "test")
        row = next(i for i in range(len(source)) if source.record(i).index == chunk.ci_index)
        data, findings = source.check(row)
        assert data is None or findings
        assert {(f.blob_index, f.chunk) for f in findings} == {(chunk.blob_index, chunk.ci_index)}
        node = layer.rafs.lookup(damaged["path"])
        with pytest.raises(NydusInspectError, match=damaged["name"]):
            view.read_head(node)


def test_mount_read_is_eio_and_logged(damaged, fuse, tmp_path):  # noqa: F811
    mounts = Mounts(tmp_path)
    try:
        mp = mounts.mount(*_layer_args(damaged))
        target = mp / "rootfs" / damaged["path"].lstrip("/")
        with pytest.raises(OSError) as err:
            target.read_bytes()
        assert err.value.errno == errno.EIO
        chunk = damaged["chunk"]
        log = mounts.log(mp)
        assert f"blob {chunk.blob_index} chunk {chunk.ci_index}" in log, log
        mounts.umount(mp)
    finally:
        problems = mounts.cleanup()
    assert not problems, problems


def test_compressed_chunk_flip_is_refused_by_cat(fixture_tars, tmp_path):
    d = _damage(tmp_path, fixture_tars["every-type.tar"], ZSTD_FILE, cut_chunk_table=True)
    assert d["chunk"].compressed
    assert_one_line_error(run_cli("cat", *_layer_args(d), d["path"]), 2, d["name"])


def test_undamaged_blob_meta_only_bootstrap_still_reads(fixture_tars, tmp_path):
    """The cut-off chunk table alone is no reason to refuse: every file reads, and equals the source."""
    blob, boot = tmp_path / "layer.blob", tmp_path / "layer.boot"
    pack_layer(fixture_tars["every-type.tar"], blob, chunk_size=0x1000, bootstrap=str(boot))
    want = run_cli("unpack", boot, "--blob", blob, "-o", "-").stdout
    raw = bytearray(boot.read_bytes())
    for name in ("s_chunk_table_offset", "s_chunk_table_size"):
        at = rafs_v6.EXT_SUPERBLOCK_OFFSET + rafs_v6.EXT_SUPERBLOCK.offsets[name]
        raw[at : at + 8] = bytes(8)
    boot.write_bytes(raw)
    proc = run_cli("unpack", boot, "--blob", blob, "-o", "-")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == want
    assert os.path.getsize(blob) > 0
