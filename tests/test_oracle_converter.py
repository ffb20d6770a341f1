"""The seed converter (containerd/nydus-snapshotter's pkg/converter, through our Go harness) against ours:
its Pack output reads in ours; our layers unpack through its Unpack and UnpackEntry; its Merge of our
layers gives our merge's tree and blob order; and its conversion of a two-layer OCI image writes the
manifest and config ours writes, field by field, but for the differences named here."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from fixtures_util import (
    VECTOR_TARS,
    assert_tree_matches,
    expected_tree,
    fixture_tars_fixture,  # noqa: F401
    make_fixtures,
    pack_layer,
    run_cli,
    source_tar,
)
from merge_fixtures import layer_tars
from test_convert import simple_layout, walk_images

SOURCES = [f"fixture:{n}" for n in make_fixtures.ROUND_TRIP] + [f"vector:{n}" for n in VECTOR_TARS]
ENTRIES = ("image.boot", "blob.meta", "blob.meta.header", "blob.digest", "rafs.blob.toc")


def _ok(proc):
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


@pytest.mark.parametrize("compressor", ["zstd", "lz4_block", "none"])
@pytest.mark.parametrize("source", SOURCES)
def test_their_pack_reads_in_ours(request, oracle, source, compressor, tmp_path):
    src = source_tar(request, source)
    blob = tmp_path / "layer.blob"
    oracle.run("nydus-converter", "pack", "--builder", oracle.nydus_image, "--compressor", compressor, src, blob)
    _ok(run_cli("verify", blob))
    assert_tree_matches(expected_tree(src), blob)


@pytest.mark.parametrize("source", SOURCES)
def test_our_pack_unpacks_in_theirs(request, oracle, source, tmp_path):
    src = source_tar(request, source)
    blob = tmp_path / "layer.blob"
    pack_layer(src, blob, "zstd", "blake3", 0x100000)
    back = tmp_path / "back.tar"
    oracle.run("nydus-converter", "unpack", "--builder", oracle.nydus_image, blob, back)
    assert_tree_matches(expected_tree(src), back)
    for name in ENTRIES:
        theirs = tmp_path / f"theirs.{name}"
        oracle.run("nydus-converter", "entry", blob, name, theirs)
        ours = _ok(run_cli("entry", blob, name, "-o", "-"))
        assert theirs.read_bytes() == ours, name


def _tree(boot: Path, blobs: Path) -> list[dict]:
    listing = json.loads(_ok(run_cli("ls", boot, "-R", "--json", "--blob-dir", blobs)))
    for node in listing:
        node.pop("nid", None)
    return listing


@pytest.mark.parametrize("layers", [2, 3])
def test_their_merge_equals_ours(oracle, layers, tmp_path):
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    paths = []
    for i, raw in enumerate(layer_tars()[:layers]):
        (tmp_path / f"l{i}.tar").write_bytes(raw)
        blob = tmp_path / f"l{i}.blob"
        pack_layer(tmp_path / f"l{i}.tar", blob, "zstd", "blake3", 0x1000)
        shutil.copy(blob, blobs / hashlib.sha256(blob.read_bytes()).hexdigest())
        paths.append(blob)
    ours, theirs = tmp_path / "ours.boot", tmp_path / "theirs.boot"
    _ok(run_cli("merge", *paths, "-o", ours))
    said = oracle.run("nydus-converter", "merge", "--builder", oracle.nydus_image, theirs, *paths).stdout
    their_blobs = said.decode().split()

    def blob_ids(boot):
        return [b["blob_id"] for b in json.loads(_ok(run_cli("info", boot, "--json")))["bootstrap"]["blobs"]]

    assert blob_ids(ours) == blob_ids(theirs) == their_blobs
    assert _tree(ours, blobs) == _tree(theirs, blobs)


#: Manifest and config fields in which our conversion may differ from the converter's, and why.
CONVERT_DIFFERENCES = {
    # The bootstrap layer holds a tar written by each tool; its bytes differ (header mtimes, the
    # bootstrap's inode layout), so its digest and size, the config's diff_id for it, and the config's
    # and manifest's own digests follow.
}


def _manifest_and_config(layout: Path) -> tuple[dict, dict]:
    [(desc, manifest, config)] = walk_images(layout)
    return manifest, config


def test_their_conversion_equals_ours(oracle, tmp_path):
    tars = layer_tars()[:2]
    src = simple_layout(tmp_path / "in", tars, ["gzip", "plain"])
    ours = tmp_path / "ours"
    _ok(run_cli("convert", src, ours))
    theirs = tmp_path / "theirs"
    shutil.copytree(src, theirs)
    oracle.run("nydus-converter", "convert", "--builder", oracle.nydus_image, "--oci", src, theirs)
    our_m, our_c = _manifest_and_config(ours)
    their_m, their_c = _manifest_and_config(theirs)
    # The blob layers are the same nydus blobs when both tools pack the same way; the tree is compared
    # in test_their_merge_equals_ours, here the documents.
    assert [d["mediaType"] for d in our_m["layers"]] == [d["mediaType"] for d in their_m["layers"]]
    assert [d.get("annotations") for d in our_m["layers"][:-1]] == [
        d.get("annotations") for d in their_m["layers"][:-1]
    ]
    assert our_m["layers"][-1]["annotations"] == their_m["layers"][-1]["annotations"]
    assert {k: v for k, v in our_c.items() if k not in ("rootfs", "history")} == {
        k: v for k, v in their_c.items() if k not in ("rootfs", "history")
    }
    assert len(our_c["rootfs"]["diff_ids"]) == len(their_c["rootfs"]["diff_ids"])
    assert our_c["history"] == their_c["history"]
