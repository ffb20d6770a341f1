"""Every reader of chunk data refuses a damaged chunk, and names the same chunk verify names.

One chunk of a packed fixture layer is flipped; then ``cat``, ``unpack`` (tar and directory), ``cache-file``,
``diff``, ``verify``, a read through a real FUSE mount and the TUI's chunk check and file preview each read
it. The same runs on a bootstrap whose chunk table was cut off, where chunk records come from blob.meta and
digests from blob.digest only, and on one whose chunk-table record was rewritten to the damaged bytes'
digest, where only blob.digest (covered by the ToC's sha256) still knows the right one.
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


def _damage(
    tmp: Path,
    tar: Path,
    path: str,
    *,
    cut_chunk_table: bool,
    rewrite_record: bool = False,
    crc_only: bool = False,
) -> dict:
    """Pack ``tar`` with a separate bootstrap, flip a byte of ``path``'s first chunk in the blob, and when
    asked zero the chunk table's place in the bootstrap (readers then know chunks from blob.meta only), or
    rewrite the chunk's record there to the digest of its damaged bytes (a raw chunk: they decode)."""
    blob, boot = tmp / "layer.blob", tmp / "layer.boot"
    pack_layer(tar, blob, chunk_size=0x1000, bootstrap=str(boot))
    chunk = _chunk_of(boot, blob, path)
    if crc_only:
        # The data and every digest stay right; the bootstrap's record of the chunk's CRC32C is wrong.
        raw = bytearray(boot.read_bytes())
        with open_layer(str(boot), blobs=[str(blob)]) as layer:
            r = layer.rafs
            base = r.ext.s_chunk_table_offset
            rows = list(r.chunk_table_entries())
        [i] = [i for i, e in enumerate(rows) if (e.blob_index, e.index) == (chunk.blob_index, chunk.ci_index)]
        at = base + i * rafs_v6.CHUNK_TABLE_ENTRY.size + rafs_v6.CHUNK_TABLE_ENTRY.offsets["crc32"]
        raw[at] ^= 0x55
        boot.write_bytes(raw)
        return {"blob": blob, "boot": boot, "path": path, "chunk": chunk, "name": chunk.name}
    data = bytearray(blob.read_bytes())
    data[chunk.compressed_offset + chunk.compressed_size // 2] ^= 0x55
    blob.write_bytes(data)
    if rewrite_record:
        assert not chunk.compressed
        stored = bytes(data[chunk.compressed_offset : chunk.compressed_offset + chunk.compressed_size])
        raw = bytearray(boot.read_bytes())
        with open_layer(str(boot), blobs=[str(blob)]) as layer:
            r = layer.rafs
            digester = r.blobs[chunk.blob_index].digester
            base = r.ext.s_chunk_table_offset
            rows = list(r.chunk_table_entries())
        [i] = [i for i, e in enumerate(rows) if (e.blob_index, e.index) == (chunk.blob_index, chunk.ci_index)]
        at = base + i * rafs_v6.CHUNK_TABLE_ENTRY.size
        raw[at : at + 32] = digester.digest(stored)
        boot.write_bytes(raw)
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


@pytest.fixture(scope="module", params=["chunk-table", "blob-meta-only", "blob-digest-only", "crc-only"])
def damaged(request, fixture_tars, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp(request.param)
    return _damage(
        tmp,
        fixture_tars["every-type.tar"],
        RAW_FILE,
        cut_chunk_table=request.param == "blob-meta-only",
        rewrite_record=request.param == "blob-digest-only",
        crc_only=request.param == "crc-only",
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
        # The preview resolves the file's chunks as cat and the mount do, so a CRC32C that only the bootstrap's
        # chunk table records (crc-only) is compared there too.
        with pytest.raises(NydusInspectError, match=damaged["name"]):
            view.read_head(node)
        assert view.node_chunks(node)[0].name == damaged["name"]


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


# ---------------------------------------------------------------------------- per-blob algorithms
#: (compressor, digester) of each layer of the mixed image, lowest first.
MIXED = (("zstd", "blake3"), ("lz4_block", "sha256"), ("none", "sha256"))


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> dict:
    """Three layers packed with different compressors and digesters, merged into one bootstrap."""
    from merge_fixtures import layer_tars

    tmp = tmp_path_factory.mktemp("mixed")
    tars = layer_tars()
    blobs = []
    for i, (data, (comp, dig)) in enumerate(zip(tars, MIXED)):
        tar = tmp / f"layer{i}.tar"
        tar.write_bytes(data)
        blob = tmp / f"layer{i}.blob"
        pack_layer(tar, blob, compressor=comp, digester=dig, chunk_size=0x100000)
        blobs.append(blob)
    boot = tmp / "merged.boot"
    proc = run_cli("merge", *blobs, "-o", boot)
    assert proc.returncode == 0, proc.stderr
    return {"tmp": tmp, "tars": tars, "blobs": blobs, "boot": boot}


def _blob_args(blobs) -> list:
    return [a for b in blobs for a in ("--blob", b)]


def test_merge_keeps_each_blobs_algorithms(mixed):
    from nydus_inspect.codecs import Compressor
    from nydus_inspect.digests import Digester

    with open_layer(str(mixed["boot"]), blobs=[str(b) for b in mixed["blobs"]]) as layer:
        r = layer.rafs
        got = [(ent.compressor, ent.digester) for ent in r.blobs]
        assert got == [(Compressor.parse(c), Digester.parse(d)) for c, d in MIXED]
        # The superblock holds the last layer's, as nydus-image merge writes it.
        assert (r.compressor, r.digester) == (Compressor.NONE, Digester.SHA256)


def test_every_file_of_a_mixed_image_reads_back(mixed):
    from merge_fixtures import reference_files

    args = [mixed["boot"], *_blob_args(mixed["blobs"])]
    for path, data in reference_files(mixed["tars"]).items():
        proc = run_cli("cat", *args, path)
        assert proc.returncode == 0, (path, proc.stderr)
        assert proc.stdout == data, path


def test_unpack_of_a_mixed_image_equals_the_uniform_one(mixed, tmp_path):
    blobs = []
    for i in range(len(mixed["tars"])):
        blob = tmp_path / f"u{i}.blob"
        pack_layer(mixed["tmp"] / f"layer{i}.tar", blob, chunk_size=0x100000)
        blobs.append(blob)
    boot = tmp_path / "uniform.boot"
    assert run_cli("merge", *blobs, "-o", boot).returncode == 0
    want = run_cli("unpack", boot, *_blob_args(blobs), "-o", "-")
    got = run_cli("unpack", mixed["boot"], *_blob_args(mixed["blobs"]), "-o", "-")
    assert want.returncode == 0 and got.returncode == 0, got.stderr
    assert got.stdout == want.stdout


def test_verify_finds_nothing_wrong_with_a_mixed_image(mixed):
    proc = run_cli("verify", mixed["boot"], *_blob_args(mixed["blobs"]))
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()


def test_fsck_erofs_reads_a_mixed_image(mixed, fsck_erofs, tmp_path):
    """erofs-utils reads the merged bootstrap through one cache-file device per blob (each blob decoded with
    its own compressor and checked with its own digester): every file comes out with the layers' bytes."""
    import subprocess

    from merge_fixtures import reference_files

    args = [mixed["boot"], *_blob_args(mixed["blobs"])]
    devs = []
    for i in range(len(mixed["blobs"])):
        dev = tmp_path / f"cache-{i}.dev"
        proc = run_cli("cache-file", *args, "--blob-index", str(i), "-o", dev, "-q")
        assert proc.returncode == 0, proc.stderr
        devs.append(f"--device={dev}")
    out = tmp_path / "extract"
    proc = subprocess.run(
        [fsck_erofs, *devs, f"--extract={out}", str(mixed["boot"])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr or proc.stdout
    for path, data in reference_files(mixed["tars"]).items():
        assert (out / path.lstrip("/")).read_bytes() == data, path


def test_a_damaged_chunk_of_a_sha256_blob_is_named(mixed, tmp_path):
    """The lz4_block / sha256 layer's chunk, flipped: refused by cat and by verify, as that chunk."""
    import shutil

    # The merged table names each blob by its file's sha256, which the flip changes: give them by id.
    with open_layer(str(mixed["boot"]), blobs=[str(b) for b in mixed["blobs"]]) as layer:
        r = layer.rafs
        blobs = [tmp_path / ent.id for ent in r.blobs]
        node, chunk = next(
            (n, c) for n in r.walk() if n.type == "file" and n.size for c in r.chunks(n) if c.blob_index == 1
        )
    for src, dst in zip(mixed["blobs"], blobs):
        shutil.copy(src, dst)
    data = bytearray(blobs[1].read_bytes())
    data[chunk.compressed_offset + chunk.compressed_size // 2] ^= 0x55
    blobs[1].write_bytes(data)
    name = f"chunk {chunk.ci_index} of blob 1"
    path = node.path.decode()
    args = [mixed["boot"], "--blob-dir", tmp_path]
    assert_one_line_error(run_cli("cat", *args, path), 2, name)
    proc = run_cli("verify", *args, "--json")
    assert proc.returncode == 1
    import json

    report = json.loads(proc.stdout)
    findings = (
        [f for layer in report["layers"] for f in layer["findings"]]
        if "layers" in report
        else report["findings"]
    )
    assert {(f.get("blob_index"), f.get("chunk")) for f in findings if f["check"].startswith("chunk.")} == {
        (1, chunk.ci_index)
    }


@pytest.mark.parametrize("how", ["merged-bootstrap", "layers"])
def test_mount_of_a_mixed_image_reads_every_file(mixed, how, fuse, tmp_path):  # noqa: F811
    from merge_fixtures import reference_files

    mounts = Mounts(tmp_path)
    try:
        if how == "layers":
            mp = mounts.mount(*mixed["blobs"])
        else:
            mp = mounts.mount(mixed["boot"], *_blob_args(mixed["blobs"]))
        for path, data in reference_files(mixed["tars"]).items():
            assert (mp / "rootfs" / path.lstrip("/")).read_bytes() == data, path
        mounts.umount(mp)
    finally:
        problems = mounts.cleanup()
    assert not problems, problems
