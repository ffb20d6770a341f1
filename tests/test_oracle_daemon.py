"""Our layers in the real nydus: every layer `pack` writes and every bootstrap `merge` writes is mounted by
the real `nydusd` (localfs backend, FUSE) and passes `nydus-image check`; the tree
the daemon serves equals the source tar entry by entry, read with tarfile and os.lstat, not with our
reader."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from fixtures_util import (
    COMPRESSORS,
    DIGESTERS,
    VECTOR_TARS,
    Want,
    assert_dir_matches,
    debian_rootfs_tar,
    expected_tree,
    fixture_tars_fixture,  # noqa: F401
    make_fixtures,
    pack_layer,
    run_cli,
    source_tar,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from merge_fixtures import apply_layers, layer_tars
from tree_strategies import trees, write_tree_tar

from oracle import Oracle

SOURCES = [f"fixture:{n}" for n in make_fixtures.ROUND_TRIP] + [f"vector:{n}" for n in VECTOR_TARS]


def _fuse(request) -> None:
    request.getfixturevalue("fuse_ok")


def mount_layer(oracle: Oracle, blob: Path, work: Path):
    """The layer blob as the snapshotter hands it to nydusd: its bootstrap, taken out by the seed
    converter's UnpackEntry, named by the blob's sha256 (nydus's id for an inline layer is the
    bootstrap's file stem), beside the blob under the same name."""
    digest = hashlib.sha256(blob.read_bytes()).hexdigest()
    blobs = work / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    os.link(blob, blobs / digest)
    boot = work / digest
    oracle.run("nydus-converter", "entry", blob, "image.boot", boot)
    return boot, blobs


def check_in_daemon(oracle: Oracle, blob: Path, expected: dict[bytes, Want], work: Path) -> None:
    boot, blobs = mount_layer(oracle, blob, work)
    oracle.check(boot)
    started = int(time.time())
    with oracle.mount(boot, blobs, work / "nydusd") as mnt:
        assert_dir_matches(expected, mnt, zero_mtime_shown_as=(started, int(time.time()) + 1))
    assert "ERROR" not in oracle.log_of(work / "nydusd")


@pytest.mark.parametrize("digester", DIGESTERS)
@pytest.mark.parametrize("compressor", COMPRESSORS)
@pytest.mark.parametrize("source", SOURCES)
def test_our_layer_in_nydusd(request, oracle, source, compressor, digester, tmp_path):
    _fuse(request)
    src = source_tar(request, source)
    blob = tmp_path / "layer.blob"
    pack_layer(src, blob, compressor, digester, 0x1000)
    check_in_daemon(oracle, blob, expected_tree(src), tmp_path)


def test_our_default_layer_in_nydusd(request, oracle, fixture_tars, tmp_path):
    """The CLI's defaults (1 MiB chunks), a file over several chunks and a deduplicated one."""
    _fuse(request)
    src = fixture_tars["dedup.tar"]
    blob = tmp_path / "layer.blob"
    proc = run_cli("pack", src, "-o", blob)
    assert proc.returncode == 0, proc.stderr
    check_in_daemon(oracle, blob, expected_tree(src), tmp_path)


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(entries=trees(), compressor=st.sampled_from(COMPRESSORS), digester=st.sampled_from(DIGESTERS))
def test_generated_trees_in_nydusd(oracle, fuse_ok, entries, compressor, digester):
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        src = work / "src.tar"
        write_tree_tar(src, entries)
        blob = work / "layer.blob"
        pack_layer(src, blob, compressor, digester, 0x1000)
        check_in_daemon(oracle, blob, expected_tree(src), work)


def test_separate_bootstrap_in_nydusd(request, oracle, fixture_tars, tmp_path):
    """`pack --bootstrap`: the bootstrap apart, naming the blob by the layer's sha256."""
    _fuse(request)
    src = fixture_tars["every-type.tar"]
    blob, boot = tmp_path / "layer.blob", tmp_path / "layer.boot"
    pack_layer(src, blob, "zstd", "blake3", 0x1000, bootstrap=str(boot))
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    os.link(blob, blobs / hashlib.sha256(blob.read_bytes()).hexdigest())
    oracle.check(boot)
    started = int(time.time())
    with oracle.mount(boot, blobs, tmp_path / "nydusd") as mnt:
        assert_dir_matches(expected_tree(src), mnt, zero_mtime_shown_as=(started, int(time.time()) + 1))


def test_a_bootstrap_compressed_in_pieces_in_nydusd(request, oracle, fixture_tars, tmp_path, monkeypatch):
    """A bootstrap too large to compress in one call (a million inodes) is compressed a piece at a time (its
    frame is then not the one call's), and written apart a piece at a time: nydusd, nydus-image check and
    our reader take it as the same bootstrap, inline and apart. Pieces of an odd size here, so that their
    ends fall inside pages."""
    _fuse(request)
    from nydus_inspect import pack as pack_mod
    from nydus_inspect.layer import open_layer

    src = fixture_tars["every-type.tar"]
    whole = tmp_path / "whole.blob"
    pack_layer(src, whole)
    pieces: list[int] = []

    def counted(boot, start=0):
        for piece in real(boot, start):
            pieces.append(len(piece))
            yield piece

    real = pack_mod._pieces
    monkeypatch.setattr(pack_mod, "_pieces", counted)
    monkeypatch.setattr(pack_mod, "STREAM_OVER", 0)
    monkeypatch.setattr(pack_mod, "PIECE", 5000)
    blob, boot = tmp_path / "layer.blob", tmp_path / "layer.boot"
    pack_layer(src, blob, bootstrap=str(boot))
    with open_layer(str(whole)) as a, open_layer(str(blob)) as b:
        size = len(a.bootstrap_bytes())
        assert bytes(a.bootstrap_bytes()) == bytes(b.bootstrap_bytes())
    # Inline, then apart after its head (the blocks after the superblock): each in pieces.
    assert max(pieces) == 5000 and sum(pieces) > size + size // 2, (pieces, size)
    proc = run_cli("verify", blob)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check_in_daemon(oracle, blob, expected_tree(src), tmp_path / "inline")
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    os.link(blob, blobs / hashlib.sha256(blob.read_bytes()).hexdigest())
    oracle.check(boot)
    with oracle.mount(boot, blobs, tmp_path / "nydusd") as mnt:
        assert_dir_matches(expected_tree(src), mnt, zero_mtime_shown_as=(0, int(time.time()) + 1))


def test_debian_rootfs_in_nydusd(request, oracle, tmp_path):
    """The Debian minbase tar of the benches, when it has been built (`bash bench/make_rootfs.sh`)."""
    _fuse(request)
    src = debian_rootfs_tar()
    blob = tmp_path / "layer.blob"
    assert run_cli("pack", src, "-o", blob, timeout=600).returncode == 0
    check_in_daemon(oracle, blob, expected_tree(src), tmp_path)


def _applied(tars: list[bytes]) -> dict[bytes, Want]:
    """The OCI-applied image of merge_fixtures, in the form assert_dir_matches takes."""
    out: dict[bytes, Want] = {}
    wants: dict[int, Want] = {}
    for path, obj in apply_layers(tars).items():
        p = path.encode()
        want = wants.get(id(obj))
        if want is None:
            want = wants[id(obj)] = Want(
                type=obj.type,
                mode=obj.mode,
                uid=obj.uid,
                gid=obj.gid,
                mtime=obj.mtime,
                size=len(obj.data),
                target=obj.target,
                rdev=obj.rdev,
                xattrs=dict(obj.xattrs),
                sha256=hashlib.sha256(obj.data).hexdigest() if obj.type == "file" else None,
            )
        want.names.append(p)
        out[p] = want
    return out


@pytest.mark.parametrize("layers", [2, 3])
def test_our_merged_bootstrap_in_nydusd(request, oracle, layers, tmp_path):
    """`merge` of 2 and 3 layers with whiteouts and opaque directories, served by nydusd over the layer
    blobs (named by sha256, as `merge` names them)."""
    _fuse(request)
    tars = layer_tars()[:layers]
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    paths = []
    for i, raw in enumerate(tars):
        (tmp_path / f"l{i}.tar").write_bytes(raw)
        blob = tmp_path / f"l{i}.blob"
        pack_layer(tmp_path / f"l{i}.tar", blob, "zstd", "blake3", 0x1000)
        shutil.copy(blob, blobs / hashlib.sha256(blob.read_bytes()).hexdigest())
        paths.append(blob)
    merged = tmp_path / "merged.boot"
    proc = run_cli("merge", *paths, "-o", merged)
    assert proc.returncode == 0, proc.stderr
    oracle.check(merged)
    started = int(time.time())
    with oracle.mount(merged, blobs, tmp_path / "nydusd") as mnt:
        assert_dir_matches(_applied(tars), mnt, zero_mtime_shown_as=(started, int(time.time()) + 1))
