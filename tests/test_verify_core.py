"""nydus_inspect.verify: every check passes on the real vectors and on packed layers, and each kind of damage
(bit flips in chunk data, ToC, blob.meta, blob.digest, bootstrap) is found and located: check, chunk, file, offset."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from nydus_inspect import open_layer
from nydus_inspect.codecs import Compressor
from nydus_inspect.pack import PackOptions, pack
from nydus_inspect.query import file_index
from nydus_inspect.verify import STAGES, ChunkVerifier, Finding, Report, verify

TOC_BLOB = "nydus/toc/2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca"
DATA_BLOB_ID = "be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef"
DATA_BLOB = f"nydus/blobs/{DATA_BLOB_ID}"
BOOTSTRAP = "nydus/bootstrap/rafs-v6-2.2.boot"
V5_BOOTSTRAP = "nydus/repeatable/sha256-nocompress-repeatable"

FILES = {
    "etc/motd": b"welcome to nydus\n" * 3,
    "srv/a.txt": b"".join(b"line %05d of a\n" % i for i in range(1200)),  # ~18 KiB: 5 chunks of 4 KiB
    "srv/b.bin": bytes(range(256)) * 40,  # 10 KiB
    "srv/c.txt": b"unique content c\n",
}


def make_tar(path: Path, files: dict[str, bytes] = FILES, hardlink: bool = True) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        dirs = sorted({p.rsplit("/", 1)[0] for p in files})
        for d in dirs:
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
            tf.addfile(ti)
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), 0o644, 1_700_000_000
            tf.addfile(ti, io.BytesIO(data))
        if hardlink:
            ti = tarfile.TarInfo("srv/c-link.txt")
            ti.type, ti.linkname, ti.mode, ti.mtime = tarfile.LNKTYPE, "srv/c.txt", 0o644, 1_700_000_000
            tf.addfile(ti)
    return path


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> dict[str, Path]:
    """A source tar and its layers (zstd and uncompressed chunks, 4 KiB chunk size)."""
    d = tmp_path_factory.mktemp("verify")
    src = make_tar(d / "src.tar")
    out = {"tar": src}
    for comp in ("zstd", "none"):
        out[comp] = d / f"{comp}.blob"
        pack(str(src), str(out[comp]), PackOptions(compressor=Compressor(comp), chunk_size=0x1000))
    return out


def flip(path: Path, offset: int, bit: int = 0x10) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([b ^ bit]))


def copy(src: Path, dst_dir: Path, name: str | None = None) -> Path:
    dst = dst_dir / (name or src.name)
    shutil.copyfile(src, dst)
    return dst


def checks(report: Report) -> set[str]:
    return {f.check for f in report.findings}


# ---------------------------------------------------------------------------- clean inputs
@pytest.mark.vectors
def test_vectors_verify_clean(vectors):
    with open_layer(str(vectors / TOC_BLOB)) as layer:
        rep = verify(layer)
    assert rep.ok, rep.findings
    assert rep.checked["chunks"] == 3 and rep.checked["toc entries"] == 4 and rep.checked["inodes"] == 4
    with open_layer(str(vectors / BOOTSTRAP), blob_dir=str(vectors / "nydus" / "blobs")) as layer:
        rep = verify(layer)
    assert rep.ok, rep.findings
    assert rep.checked["chunks"] == 2 and rep.checked["inodes"] == 3


@pytest.mark.vectors
def test_chunk_table_check_gives_the_mapped_tables_pages_back(vectors, monkeypatch):
    # The chunk-table check reads a mapped table end to end (80 bytes a chunk): its pages stayed resident.
    import sys

    from nydus_inspect.verify import bootstrap

    monkeypatch.setattr(bootstrap, "RELEASE_EVERY", 1)
    callers: list[str] = []
    with open_layer(str(vectors / BOOTSTRAP), blob_dir=str(vectors / "nydus" / "blobs")) as layer:
        rafs = layer.rafs
        release = rafs.release_pages
        assert release is not None  # a bootstrap file is mapped

        def recorded(*span: int) -> None:
            callers.append(sys._getframe(1).f_code.co_name)
            release(*span)

        rafs.release_pages = recorded
        rep = verify(layer)
    assert rep.ok, rep.findings
    assert callers.count("_chunk_table") == rafs.chunk_table_records == 2


@pytest.mark.vectors
def test_data_blob_without_bootstrap_guesses_codec(vectors):
    with open_layer(str(vectors / DATA_BLOB)) as layer:
        rep = verify(layer)
    assert rep.ok, rep.findings
    assert rep.checked["chunks"] == 2
    assert any("zstd and blake3" in n for n in rep.notes)
    assert any("no bootstrap" in n for n in rep.notes)


@pytest.mark.vectors
def test_bootstrap_without_its_blob_is_a_finding(vectors, tmp_path):
    with open_layer(str(vectors / BOOTSTRAP), blob_dir=str(tmp_path)) as layer:
        rep = verify(layer)
    assert not rep.ok
    (f,) = rep.findings
    assert f.check == "blob.missing" and f.blob_index == 0 and f.expected == DATA_BLOB_ID
    assert rep.checked["inodes"] == 3  # the tree is still checked


@pytest.mark.vectors
def test_v5_bootstrap_is_checked_and_its_missing_blob_named(vectors):
    # The 2022 vector's tree and every inode's i_digest check out; its data blob is not among the vectors
    # (tests/test_old_layers.py verifies v5 layers with their data).
    with open_layer(str(vectors / V5_BOOTSTRAP)) as layer:
        rep = verify(layer)
    assert [f.check for f in rep.findings] == ["blob.missing"], [str(f) for f in rep.findings]
    assert rep.checked["inodes"] == 52 and rep.checked["files"] == 21


def test_packed_layers_verify_clean_with_round_trip(packed):
    for comp in ("zstd", "none"):
        stages: list[tuple[str, int, int]] = []
        with open_layer(str(packed[comp])) as layer:
            rep = verify(layer, source=str(packed["tar"]), progress=lambda *a, out=stages: out.append(a))
        assert rep.ok, [str(f) for f in rep.findings]
        assert rep.checked["roundtrip entries"] == 8  # root, 2 dirs, 4 files, 1 hardlink
        assert [s for s in STAGES if any(x[0] == s for x in stages)] == list(STAGES)
        assert all(d <= t for _, d, t in stages if t)
        assert rep.summary().startswith("OK: checked")


# ---------------------------------------------------------------------------- injected damage
@pytest.mark.parametrize("comp", ["zstd", "none"])
def test_bit_flip_in_chunk_names_chunk_and_file(packed, tmp_path, comp):
    with open_layer(str(packed[comp])) as layer:
        infos = layer.chunk_infos
        idx = file_index(layer)
        # The third chunk of srv/a.txt (5 chunks, deduplicated nowhere).
        target = next(i for i in range(len(infos)) if idx.owners(0, i) == ["/srv/a.txt"])
        target += 2
        assert idx.owners(0, target) == ["/srv/a.txt"]
        ci = infos[target]
    bad = copy(packed[comp], tmp_path)
    flip(bad, ci.compressed_offset + ci.compressed_size // 2)
    with open_layer(str(bad)) as layer:
        rep = verify(layer)
    assert not rep.ok
    chunk_findings = [f for f in rep.findings if f.chunk is not None]
    assert chunk_findings, [str(f) for f in rep.findings]
    for f in chunk_findings:
        assert f.chunk == target and f.blob_index == 0
        assert f.path == "/srv/a.txt" and f.paths == ("/srv/a.txt",)
        assert f.offset == ci.compressed_offset
        assert f.file == str(bad)
    found = {f.check for f in chunk_findings}
    if comp == "none":
        assert found == {"chunk.digest", "chunk.table"}
    else:  # a damaged zstd frame either fails to decode or decodes to other bytes
        assert found in ({"chunk.read"}, {"chunk.digest", "chunk.table"})
    # The ToC's sha256 of image.blob catches it too.
    toc = [f for f in rep.findings if f.check == "toc.entry"]
    assert [f.entry for f in toc] == ["image.blob"]
    assert "srv/a.txt" in str(chunk_findings[0]) and f"chunk {target}" in chunk_findings[0].where
    # Only that chunk: the others still verify.
    assert rep.checked["chunks"] == len(infos)


def test_chunk_verifier_checks_one_chunk(packed, tmp_path):
    bad = copy(packed["none"], tmp_path)
    with open_layer(str(packed["none"])) as layer:
        cv = ChunkVerifier(layer)
        assert cv.source == "blob.meta" and cv.compressor is Compressor.NONE
        data, findings = cv.check(0)
        assert findings == [] and data
        ci = layer.chunk_infos[1]
    flip(bad, ci.compressed_offset)
    with open_layer(str(bad)) as layer:
        cv = ChunkVerifier(layer)
        _, ok = cv.check(0)
        data, findings = cv.check(1)
    assert ok == []
    assert {f.check for f in findings} == {"chunk.digest", "chunk.table"}
    assert findings[0].chunk == 1 and findings[0].expected != findings[0].found


def test_flipped_blob_digest_entry(packed, tmp_path):
    bad = copy(packed["zstd"], tmp_path)
    with open_layer(str(bad)) as layer:
        off = layer.entry_location("blob.digest")[0]
    flip(bad, off + 32 * 1 + 3)  # the digest of chunk 1
    with open_layer(str(bad)) as layer:
        rep = verify(layer)
    assert {f.entry for f in rep.findings if f.check == "toc.entry"} == {"blob.digest"}
    (d,) = [f for f in rep.findings if f.check == "chunk.digest"]
    assert d.chunk == 1 and d.path is not None
    assert "chunk.table" not in checks(rep)  # the data itself is intact


def test_chunk_pass_reads_the_blob_digest_the_blob_meta_pass_checked(packed):
    # Each pass read blob.digest for itself: a big layer held 32 bytes a chunk twice over.
    with open_layer(str(packed["zstd"])) as layer:
        cv = ChunkVerifier(layer)
        assert cv.digests is layer.chunk_digests.data


def test_bootstrap_pass_lets_go_of_the_inodes_its_walk_decoded(packed):
    # The walk fills the model's inode cache (tens of MB on a big layer); the passes after it need none of it.
    with open_layer(str(packed["zstd"])) as layer:
        rep = verify(layer)
        assert rep.ok and len(layer.rafs._inodes) == 0


def test_bootstrap_walk_keeps_a_few_directories_of_inodes(packed, monkeypatch):
    # The walk filled the model's whole inode cache (65,536 inodes, tens of MB) where a few directories' do.
    from nydus_inspect import model
    from nydus_inspect.verify import bootstrap

    monkeypatch.setattr(bootstrap, "WALK_INODES", 3)
    most = [0]
    put = model._LRU.put

    def counted(self, key, value):
        put(self, key, value)
        most[0] = max(most[0], len(self))

    monkeypatch.setattr(model._LRU, "put", counted)
    with open_layer(str(packed["zstd"])) as layer:
        full = layer.rafs._inodes.limit
        rep = verify(layer)
        assert rep.ok and layer.rafs._inodes.limit == full  # the caller's cache, as it was
    assert 0 < most[0] <= 3


def test_layout_check_orders_extents_a_bucket_at_a_time():
    import random
    import tracemalloc
    from array import array

    from nydus_inspect.verify.bootstrap import _by_start

    rng = random.Random(7)
    size = 1 << 20
    # Ties, starts past the bootstrap and the clamp value: the order of a stable sort by start, all the same.
    starts = array(
        "q", (rng.choice((rng.randrange(size), rng.randrange(64), size + 5, 1 << 62)) for _ in range(70000))
    )
    assert list(_by_start(starts, size)) == sorted(range(len(starts)), key=starts.__getitem__)
    assert list(_by_start(array("q"), size)) == []
    # A list of every extent to sort held about 40 bytes an extent (~20 MiB here); buckets hold 8 and a bucket.
    starts = array("q", (rng.randrange(size << 8) for _ in range(500_000)))
    tracemalloc.start()
    try:
        for _ in _by_start(starts, size << 8):
            pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 << 20


def test_flipped_blob_meta_header_is_reported(packed, tmp_path):
    bad = copy(packed["zstd"], tmp_path)
    with open_layer(str(bad)) as layer:
        off = layer.entry_location("blob.meta.header")[0]
    flip(bad, off + 4, 0x01)  # s_features: a feature bit the ToC sha256 catches
    with open_layer(str(bad)) as layer:
        rep = verify(layer)
    assert "blob.meta.header" in {f.entry for f in rep.findings}
    assert all(isinstance(f, Finding) for f in rep.findings)


def test_flipped_bootstrap_is_reported_not_raised(packed, tmp_path):
    bad = copy(packed["zstd"], tmp_path)
    with open_layer(str(bad)) as layer:
        off, size = layer.entry_location("image.boot")[:2]
    flip(bad, off + size // 2, 0xFF)
    with open_layer(str(bad)) as layer:
        rep = verify(layer)
    assert not rep.ok
    assert "bootstrap" in checks(rep) or "toc.entry" in checks(rep)
    assert "image.boot" in {f.entry for f in rep.findings if f.entry}


@pytest.mark.vectors
def test_toc_digest_against_bootstrap_blob_table(vectors, tmp_path):
    """The separate bootstrap records the data blob's ToC digest: a flipped ToC entry shows as toc.digest."""
    blob = copy(vectors / DATA_BLOB, tmp_path)
    with open_layer(str(blob)) as layer:
        toc_start = layer.size - 512 - len(layer.toc_bytes)
    flip(blob, toc_start + 100)  # inside the reserved tail of entry 0: parses, changes the digest
    with open_layer(str(vectors / BOOTSTRAP), blob_dir=str(tmp_path)) as layer:
        rep = verify(layer)
    (f,) = [f for f in rep.findings if f.check == "toc.digest"]
    assert f.expected.startswith("cfc89ed0739aef4e") and f.found != f.expected and f.blob_index == 0


def test_round_trip_difference(packed, tmp_path):
    other = make_tar(tmp_path / "other.tar", {**FILES, "srv/c.txt": b"changed\n"})
    with open_layer(str(packed["zstd"])) as layer:
        rep = verify(layer, source=str(other))
    rt = [f for f in rep.findings if f.check == "roundtrip"]
    assert {(f.path, f.field) for f in rt} >= {("/srv/c.txt", "size"), ("/srv/c.txt", "sha256")}
    assert not rep.ok


def test_limit_cancel_and_json(packed, tmp_path):
    bad = copy(packed["none"], tmp_path)
    with open_layer(str(bad)) as layer:
        infos = layer.chunk_infos
        for i in range(len(infos)):
            flip(bad, infos[i].compressed_offset)
    with open_layer(str(bad)) as layer:
        rep = verify(layer, limit=2)
    assert len([f for f in rep.findings if f.check == "chunk.digest"]) == 2
    assert rep.suppressed["chunk.digest"] == len(infos) - 2
    j = rep.to_json()
    json.dumps(j)
    assert j["ok"] is False and j["failures"] == rep.failures
    assert {"check", "message", "where"} <= set(j["findings"][0])
    with open_layer(str(packed["zstd"])) as layer:
        rep = verify(layer, cancel=lambda: True)
    assert rep.cancelled and not rep.ok and rep.summary().startswith("cancelled")


def test_finding_text():
    f = Finding(
        "chunk.digest",
        "digest differs",
        blob_index=0,
        chunk=7,
        offset=4096,
        paths=("/a", "/b", "/c", "/d"),
        expected="aa",
        found="bb",
    )
    assert f.where == "chunk 7 of blob 0, offset 4096, file /a, /b, /c (+1 more)"
    assert str(f) == f"chunk.digest: {f.where}: digest differs (expected aa, found bb)"
    assert f.to_json()["paths"] == ["/a", "/b", "/c", "/d"] and "entry" not in f.to_json()


def test_verify_imports_without_textual():
    import subprocess
    import sys

    code = "import sys, nydus_inspect.verify; print('textual' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert out.stdout.strip() == "False"
