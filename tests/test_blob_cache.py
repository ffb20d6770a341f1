"""Layers whose blob exists only in nydus's blob-cache form: `nydus-image create --blob-cache-dir DIR` writes,
instead of a blob, ``<blob id>.blob.data`` (every chunk decoded, at its uncompressed offset) and
``<blob id>.blob.meta``, as nydusd keeps a blob it has fetched. Given that directory, ours reads the layer
with the tree and bytes the real nydusd serves for the same tar built as a blob; a flipped bit in the cache
file is caught by the chunk digests, and without the file one line names the blob."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fixtures_util import assert_one_line_error, fixture_tars_fixture, run_cli, source_tar  # noqa: F401
from test_oracle_reader import read_in_ours, served_by_nydusd
from test_variants import small_files_tar


def _blob_id(boot: Path) -> str:
    proc = run_cli("info", boot, "--json")
    assert proc.returncode == 0, proc.stderr
    (blob,) = json.loads(proc.stdout)["bootstrap"]["blobs"]
    return blob["blob_id"]


def _cache_layer(oracle, src: Path, work: Path) -> tuple[Path, Path, str]:
    """(bootstrap, cache directory, blob id) of ``nydus-image create --blob-cache-dir``."""
    cache = work / "cache"
    boot = work / "cached.boot"
    cache.mkdir(parents=True)
    oracle.run(
        "nydus-image", "create", "--log-level", "warn", "--type", "tar-rafs", "--blob-cache-dir", cache,
        "--bootstrap", boot, src,
    )  # fmt: skip
    blob_id = _blob_id(boot)
    assert sorted(os.listdir(cache)) == [f"{blob_id}.blob.data", f"{blob_id}.blob.meta"]
    return boot, cache, blob_id


@pytest.mark.parametrize("source", ["fixture:dedup.tar", "small-files"])
def test_a_layer_in_blob_cache_form_reads_as_nydusd_serves_its_blob(
    request, oracle, fuse_ok, source, tmp_path
):
    src = small_files_tar(tmp_path / "small.tar") if source == "small-files" else source_tar(request, source)
    boot, blob = oracle.create(src, tmp_path / "plain", "--type", "tar-rafs")
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    os.rename(blob, blobs / _blob_id(boot))
    want = served_by_nydusd(oracle, boot, blobs, tmp_path)
    cboot, cache, blob_id = _cache_layer(oracle, src, tmp_path / "cached")
    (tmp_path / "ours").mkdir()
    read_in_ours(request, cboot, want, tmp_path / "ours", "--blob-dir", cache)
    proc = run_cli("verify", cboot, "--blob", cache / f"{blob_id}.blob.data")
    assert proc.returncode == 0 and "blob-cache file" in proc.stdout.decode(), proc.stdout


def test_a_flipped_bit_in_the_cache_file_is_caught(oracle, tmp_path):
    src = small_files_tar(tmp_path / "small.tar")
    boot, cache, blob_id = _cache_layer(oracle, src, tmp_path / "cached")
    data = cache / f"{blob_id}.blob.data"
    proc = run_cli("ls", "-R", "--json", boot)
    files = [n for n in json.loads(proc.stdout) if n["type"] == "file" and n["size"]]
    # A byte inside a chunk (the cache keeps each chunk 4K-aligned, with zeros between them).
    chunks = json.loads(run_cli("chunks", "--json", boot).stdout)["chunks"]
    chunk = max(chunks, key=lambda c: c["uncompressed_size"])
    raw = bytearray(data.read_bytes())
    raw[chunk["uncompressed_offset"] + chunk["uncompressed_size"] // 2] ^= 0x01
    data.write_bytes(raw)
    proc = run_cli("verify", boot, "--blob-dir", cache)
    assert proc.returncode == 1, proc.stdout
    assert "chunk.table: chunk " in proc.stdout.decode() and "digest differs" in proc.stdout.decode()
    bad = [n["path"] for n in files if run_cli("cat", boot, "--blob-dir", cache, n["path"]).returncode]
    assert len(bad) == 1, bad
    assert_one_line_error(run_cli("cat", boot, "--blob-dir", cache, bad[0]), 2, "digest")


def test_without_the_cache_file_one_line_names_the_blob(oracle, tmp_path):
    src = small_files_tar(tmp_path / "small.tar")
    boot, cache, blob_id = _cache_layer(oracle, src, tmp_path / "cached")
    (cache / f"{blob_id}.blob.data").unlink()
    proc = run_cli("unpack", boot, "--blob-dir", cache, "-o", tmp_path / "out.tar")
    assert_one_line_error(proc, 2, f"({blob_id}) not found")
    # A cache file shorter than the blob's uncompressed size is no cache of it.
    (cache / f"{blob_id}.blob.data").write_bytes(b"\0" * 4096)
    assert_one_line_error(
        run_cli("unpack", boot, "--blob-dir", cache, "-o", tmp_path / "out.tar"), 2, "not found"
    )
