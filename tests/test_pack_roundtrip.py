"""pack -> unpack round trips: every fixture tar and the real nydus test tars, every compressor and
digester, through the Python API (fast) and the CLI (a few end-to-end cases), into a tar and into a
directory, plus generated trees (hypothesis).

A round trip is checked three ways: ``diff`` reports no difference (source vs layer, source vs
unpacked tar), and the layer matches an independent tarfile reading of the source (fixtures_util).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile

import pytest
from fixtures_util import (
    COMPRESSORS,
    DIGESTERS,
    VECTOR_TARS,
    assert_dir_matches,
    assert_no_differences,
    assert_one_line_error,
    assert_tree_matches,
    expected_tree,
    fixture_tars_fixture,  # noqa: F401 (provides the fixture_tars fixture)
    make_fixtures,
    pack_layer,
    run_cli,
    source_tar,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tree_strategies import trees, write_tree_tar

from nydus_inspect.diff import diff_paths
from nydus_inspect.layer import open_layer
from nydus_inspect.unpack import to_dir, to_tar

SOURCES = [f"fixture:{n}" for n in make_fixtures.ROUND_TRIP] + [f"vector:{n}" for n in VECTOR_TARS]
# The three every-type inputs hold the same tar; the compressed ones get fewer combinations.
PLAIN_SOURCES = [s for s in SOURCES if not s.endswith((".gz", ".zst"))]


# ============================================================================ the fixtures themselves
def test_fixtures_are_deterministic_and_small(fixture_tars, tmp_path):
    again = make_fixtures.write_all(tmp_path / "again")
    assert sorted(again) == sorted(fixture_tars)
    for name, path in fixture_tars.items():
        assert again[name].read_bytes() == path.read_bytes(), f"{name} differs between two runs"
        assert path.stat().st_size < 8 << 20, f"{name} is {path.stat().st_size} bytes"


@pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar is not installed")
@pytest.mark.parametrize("name", sorted(make_fixtures.build_all()))
def test_fixture_lists_with_gnu_tar(fixture_tars, name):
    proc = subprocess.run(["tar", "-tvf", str(fixture_tars[name])], capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert len(proc.stdout.splitlines()) >= 3


def test_every_type_fixture_covers_the_issue_list(fixture_tars):
    with tarfile.open(fixture_tars["every-type.tar"], encoding="utf-8", errors="surrogateescape") as tf:
        members = tf.getmembers()
    types = {m.type for m in members}
    assert {
        tarfile.REGTYPE,
        tarfile.DIRTYPE,
        tarfile.SYMTYPE,
        tarfile.LNKTYPE,
        tarfile.CHRTYPE,
        tarfile.BLKTYPE,
        tarfile.FIFOTYPE,
    } <= types
    sizes = {m.size for m in members if m.isreg()}
    assert {0, 0x1000, 0x100000, 5 * 0x100000 // 2} <= sizes
    names = [os.fsencode(m.name) for m in members]
    assert any(n.rsplit(b"/", 1)[-1] == b".wh..wh..opq" for n in names)
    assert any(n.rsplit(b"/", 1)[-1].startswith(b".wh.") and not n.endswith(b".wh..opq") for n in names)
    assert any(len(n) > 100 for n in names) and any(len(os.fsencode(m.linkname)) > 100 for m in members)
    assert any(not _utf8(n) for n in names)
    keys = {k for m in members for k in m.pax_headers}
    assert {
        "SCHILY.xattr.user.mime_type",
        "SCHILY.xattr.trusted.overlay.origin",
        "SCHILY.xattr.security.capability",
    } <= keys
    modes = {m.mode for m in members}
    assert {0o4755, 0o2755, 0o1777} <= modes
    assert any(m.uid >= 8**7 for m in members)  # a PAX uid


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# ============================================================================ API round trips
def _roundtrip(src, tmp_path, compressor, digester, chunk_size):
    blob = tmp_path / "layer.blob"
    res = pack_layer(src, blob, compressor, digester, chunk_size)
    assert res.size == blob.stat().st_size
    assert res.digest == hashlib.sha256(blob.read_bytes()).hexdigest()
    assert_no_differences(diff_paths(str(src), str(blob)), "source tar vs layer")
    back = tmp_path / "back.tar"
    with open_layer(str(blob)) as layer:
        to_tar(layer, str(back))
    assert_no_differences(diff_paths(str(src), str(back)), "source tar vs unpacked tar")
    expected = expected_tree(src)
    assert_tree_matches(expected, blob)
    assert_tree_matches(expected, back)
    return res


@pytest.mark.parametrize("digester", DIGESTERS)
@pytest.mark.parametrize("compressor", COMPRESSORS)
@pytest.mark.parametrize("source", SOURCES)
def test_roundtrip(request, tmp_path, source, compressor, digester):
    src = source_tar(request, source)
    # Small chunks for the small layers (multi-chunk files); every-type.tar also at the default size.
    for chunk_size in (0x1000, 0x100000) if source == "fixture:every-type.tar" else (0x1000,):
        _roundtrip(src, tmp_path, compressor, digester, chunk_size)


@pytest.mark.parametrize("source", ["fixture:every-type.tar.gz", "fixture:every-type.tar.zst"])
def test_roundtrip_compressed_input(request, tmp_path, fixture_tars, source):
    src = source_tar(request, source)
    res = _roundtrip(src, tmp_path, "zstd", "blake3", 0x10000)
    # The layer depends on the tar's content only, not on how the tar was compressed.
    plain = pack_layer(fixture_tars["every-type.tar"], tmp_path / "plain.blob", "zstd", "blake3", 0x10000)
    assert plain.digest == res.digest


def test_pack_is_deterministic(tmp_path, fixture_tars):
    a = pack_layer(fixture_tars["xattrs.tar"], tmp_path / "a.blob")
    b = pack_layer(fixture_tars["xattrs.tar"], tmp_path / "b.blob")
    assert (tmp_path / "a.blob").read_bytes() == (tmp_path / "b.blob").read_bytes()
    assert a.digest == b.digest


@pytest.mark.parametrize("chunk_size", [0x1000, 0x2000, 0x10000, 0x100000, 0x1000000])
def test_every_chunk_size(tmp_path, fixture_tars, chunk_size):
    res = _roundtrip(fixture_tars["dedup.tar"], tmp_path, "zstd", "blake3", chunk_size)
    assert res.chunks >= res.unique_chunks


def test_xattrs_larger_than_a_block(tmp_path):
    """Many or large xattrs: the inode record spans blocks (EROFS allows it) and everything round-trips."""
    t = make_fixtures.Tar()
    t.dir("d", xattrs={b"user.k%03d" % i: b"v" * 40 for i in range(120)})
    t.file("d/many", b"data " * 2000, xattrs={b"user.k%03d" % i: bytes([i]) * 50 for i in range(150)})
    t.file("d/big", b"x", xattrs={b"user.big": b"b" * 65535, b"trusted.t": b"t" * 9000})
    t.symlink("d/link", "many", xattrs={b"trusted.k%03d" % i: b"s" * 60 for i in range(80)})
    src = tmp_path / "src.tar"
    src.write_bytes(t.bytes())
    for compressor in COMPRESSORS:
        _roundtrip(src, tmp_path, compressor, "blake3", 0x1000)


def test_warnings_are_reported_and_namespace_less_xattrs_ignored_by_diff(tmp_path, fixture_tars):
    res = pack_layer(fixture_tars["bad-xattr-namespace.tar"], tmp_path / "mac.blob")
    dropped = " ".join(res.warnings)
    for name in ("com.apple.FinderInfo", "com.apple.quarantine", "com.apple.metadata:kMDItemWhereFroms"):
        assert name in dropped
    assert "user.kept" not in dropped and "user.libarchive" not in dropped
    res = pack_layer(fixture_tars["global-pax.tar"], tmp_path / "global.blob")
    assert any("PAX global header" in w for w in res.warnings), res.warnings
    res = pack_layer(fixture_tars["every-type.tar"], tmp_path / "clean.blob", chunk_size=0x100000)
    assert res.warnings == []


# ============================================================================ unpack --to-dir
TO_DIR_CASES = [(s, "zstd") for s in PLAIN_SOURCES] + [
    ("fixture:every-type.tar", c) for c in ("lz4_block", "none")
]


@pytest.mark.parametrize(("source", "compressor"), TO_DIR_CASES)
def test_to_dir_matches_the_source(request, tmp_path, source, compressor):
    src = source_tar(request, source)
    blob = tmp_path / "layer.blob"
    pack_layer(src, blob, compressor, "blake3", 0x1000)
    out = tmp_path / "root"
    with open_layer(str(blob)) as layer:
        res = to_dir(layer, str(out))
    assert res.skipped == 0
    assert_dir_matches(expected_tree(src), out)


def _small_tar(path, entries):
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, payload
                tf.addfile(info)
            else:
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
    return path


@pytest.mark.parametrize("where", ["directory", "file"])
def test_to_dir_refuses_a_symlink_already_in_the_target(tmp_path, where):
    """A pre-existing symlink in DIR that an entry would go through (or land on) -> exit 2, nothing outside."""
    src = _small_tar(tmp_path / "src.tar", [("etc", "dir", None), ("etc/hostname", "file", b"pwned\n")])
    blob = tmp_path / "layer.blob"
    pack_layer(src, blob)
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    if where == "directory":
        os.symlink(outside, target / "etc")
    else:
        (target / "etc").mkdir()
        os.symlink(outside / "hostname", target / "etc" / "hostname")
    proc = run_cli("unpack", blob, "--to-dir", target)
    assert_one_line_error(proc, 2)
    assert list(outside.iterdir()) == []


def test_to_dir_never_follows_a_symlink_of_the_layer(tmp_path):
    """A tar entry through a symlink the same tar created cannot escape either."""
    outside = tmp_path / "outside"
    outside.mkdir()
    src = _small_tar(
        tmp_path / "src.tar",
        [
            ("link", "symlink", str(outside)),
            ("link/escaped", "file", b"x"),
            ("rel", "symlink", "../outside"),
            ("rel/escaped2", "file", b"y"),
        ],
    )
    blob = tmp_path / "layer.blob"
    pack_layer(src, blob)
    target = tmp_path / "target"
    with open_layer(str(blob)) as layer:
        to_dir(layer, str(target))
    assert list(outside.iterdir()) == []
    # Tar semantics: the directory the later entry needs replaced the symlink.
    assert (target / "link" / "escaped").read_bytes() == b"x"


@pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar is not installed")
@pytest.mark.parametrize("name", ["every-type.tar", "longnames.tar", "whiteouts.tar"])
def test_gnu_tar_extracts_the_unpacked_tar(tmp_path, fixture_tars, name):
    """Our unpacked tar, extracted by GNU tar (xattrs on), gives the source tree back."""
    src = fixture_tars[name]
    blob, back, out = tmp_path / "layer.blob", tmp_path / "back.tar", tmp_path / "root"
    pack_layer(src, blob)
    with open_layer(str(blob)) as layer:
        to_tar(layer, str(back))
    out.mkdir()
    proc = subprocess.run(
        ["tar", "-xpf", str(back), "-C", str(out), "--xattrs", "--xattrs-include=*", "--numeric-owner"],
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert_dir_matches(expected_tree(src), out)


@pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar is not installed")
def test_archives_made_by_gnu_tar(tmp_path, fixture_tars):
    """Real GNU tar output (posix with xattrs, and old gnu): its PAX records, long-link blocks and layout."""
    tree = tmp_path / "tree"
    tree.mkdir()
    flags = ["--xattrs", "--xattrs-include=*", "--numeric-owner"]
    subprocess.run(
        ["tar", "-xpf", str(fixture_tars["every-type.tar"]), "-C", str(tree), *flags],
        check=True,
        capture_output=True,
    )
    for fmt, extra in [("posix", flags), ("gnu", ["--numeric-owner"])]:
        src = tmp_path / f"{fmt}.tar"
        subprocess.run(
            ["tar", "-cf", str(src), "-C", str(tree), f"--format={fmt}", "--sort=name", *extra, "."],
            check=True,
            capture_output=True,
        )
        _roundtrip(src, tmp_path, "zstd", "blake3", 0x1000)


# ============================================================================ CLI end to end
def test_cli_pack_from_stdin_json_and_diff(tmp_path, fixture_tars):
    src = fixture_tars["every-type.tar"]
    blob = tmp_path / "layer.blob"
    with open(src, "rb") as f:
        proc = run_cli("pack", "-", "-o", blob, "--chunk-size", "0x10000", "--json", stdin=f)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["digest"] == "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest()
    assert out["size"] == blob.stat().st_size
    assert [e["name"] for e in out["toc"]] == [
        "image.blob",
        "blob.meta",
        "blob.meta.header",
        "blob.digest",
        "image.boot",
    ]
    assert out["files"] > 0 and out["unique_chunks"] <= out["chunks"] and out["warnings"] == []
    # The same layer from the file path, and from the gzip and zstd inputs on stdin.
    for name, via in [
        ("every-type.tar", "path"),
        ("every-type.tar.gz", "stdin"),
        ("every-type.tar.zst", "stdin"),
    ]:
        other = tmp_path / f"{name}.{via}.blob"
        with open(fixture_tars[name], "rb") as f:
            source = fixture_tars[name] if via == "path" else "-"
            proc = run_cli("pack", source, "-o", other, "--chunk-size", "0x10000", "-q", stdin=f)
        assert proc.returncode == 0, proc.stderr
        assert other.read_bytes() == blob.read_bytes(), (name, via)
    proc = run_cli("diff", src, blob)
    assert proc.returncode == 0 and proc.stdout.strip() == b"no differences", proc.stdout
    proc = run_cli("diff", src, blob, "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout) == {"equal": True, "differences": []}
    # The source tar on stdin, as pack takes it: plain and compressed, equal; another tar, not.
    for name, code in [("every-type.tar", 0), ("every-type.tar.zst", 0), ("whiteouts.tar", 1)]:
        with open(fixture_tars[name], "rb") as f:
            proc = run_cli("diff", "-", blob, stdin=f)
        assert proc.returncode == code, (name, proc.stdout, proc.stderr)
    with open(src, "rb") as f:
        proc = run_cli("diff", "-", "-", stdin=f)
    assert proc.returncode == 2 and proc.stderr.count(b"\n") == 1, proc.stderr


def test_cli_unpack_to_tar_and_stdout(tmp_path, fixture_tars):
    src = fixture_tars["longnames.tar"]
    blob = tmp_path / "layer.blob"
    assert (
        run_cli("pack", src, "-o", blob, "--compressor", "lz4_block", "--digester", "sha256").returncode == 0
    )
    back = tmp_path / "back.tar"
    proc = run_cli("unpack", blob, "-o", back)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("unpack", blob, "-o", "-")
    assert proc.returncode == 0 and proc.stdout == back.read_bytes()
    assert run_cli("diff", src, back).returncode == 0
    assert_tree_matches(expected_tree(src), back)


def test_cli_diff_reports_differences(tmp_path, fixture_tars):
    blob = tmp_path / "layer.blob"
    assert run_cli("pack", fixture_tars["whiteouts.tar"], "-o", blob, "-q").returncode == 0
    proc = run_cli("diff", fixture_tars["global-pax.tar"], blob, "--json")
    assert proc.returncode == 1, proc.stderr
    out = json.loads(proc.stdout)
    assert out["equal"] is False
    found = {(d["path"], d["field"]) for d in out["differences"]}
    assert ("/etc/hostname", "presence") in found and ("/.wh.etc", "presence") in found
    assert all(set(d) == {"path", "field", "expected", "found"} for d in out["differences"])
    proc = run_cli("diff", fixture_tars["global-pax.tar"], blob)
    assert proc.returncode == 1 and proc.stdout.splitlines()[-1].endswith((b" differences", b" difference"))
    # A one-byte change of file content is a difference too.
    changed = _small_tar(
        tmp_path / "changed.tar",
        [
            ("usr", "dir", None),
            ("usr/share", "dir", None),
            ("usr/share/kept", "file", b"kept after the opaque marker!"),
        ],
    )
    proc = run_cli("diff", changed, blob, "--json")
    assert proc.returncode == 1
    fields = {(d["path"], d["field"]) for d in json.loads(proc.stdout)["differences"]}
    assert ("/usr/share/kept", "sha256") in fields and ("/usr/share/kept", "size") not in fields  # same size
    assert_one_line_error(run_cli("diff", tmp_path / "missing.tar", blob), 2)


def test_cli_pack_warnings_on_stderr(tmp_path, fixture_tars):
    proc = run_cli("pack", fixture_tars["global-pax.tar"], "-o", tmp_path / "g.blob")
    assert proc.returncode == 0
    assert b"warning" in proc.stderr and b"PAX global header" in proc.stderr, proc.stderr
    proc = run_cli("pack", fixture_tars["bad-xattr-namespace.tar"], "-o", tmp_path / "m.blob", "--json")
    assert proc.returncode == 0
    assert proc.stderr.count(b"warning") == 3 and b"com.apple.quarantine" in proc.stderr, proc.stderr
    assert len(json.loads(proc.stdout)["warnings"]) == 3


def test_cli_separate_bootstrap(tmp_path, fixture_tars):
    src = fixture_tars["every-type.tar"]
    blob, boot = tmp_path / "layer.blob", tmp_path / "layer.boot"
    proc = run_cli("pack", src, "-o", blob, "--bootstrap", boot, "--chunk-size", "0x4000", "--json")
    assert proc.returncode == 0, proc.stderr
    digest = json.loads(proc.stdout)["digest"].removeprefix("sha256:")
    assert digest == hashlib.sha256(blob.read_bytes()).hexdigest()
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    shutil.copy(blob, blobs / digest)
    # The separate bootstrap lists the same tree as the layer's own.
    ls_boot = run_cli("ls", "-R", "--json", boot, "--blob-dir", blobs)
    ls_blob = run_cli("ls", "-R", "--json", blob)
    assert ls_boot.returncode == 0 and ls_blob.returncode == 0, ls_boot.stderr
    strip = [{k: v for k, v in e.items() if k != "nid"} for e in json.loads(ls_boot.stdout)]
    assert strip == [{k: v for k, v in e.items() if k != "nid"} for e in json.loads(ls_blob.stdout)]
    expected = expected_tree(src, keep_data=True)
    for path in (b"/data/two-and-a-half-m.bin", b"/data/empty"):
        proc = run_cli("cat", boot, os.fsdecode(path), "--blob-dir", blobs)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == expected[path].data
    assert run_cli("diff", src, boot, "--blob-dir", blobs).returncode == 0
    assert_tree_matches(expected, boot, blob_dir=str(blobs))
    # Beside the bootstrap under another name, the blob is found by its sha256 (the bootstrap names it so).
    proc = run_cli("cat", boot, "/data/small.txt")
    assert proc.returncode == 0 and proc.stdout == expected[b"/data/small.txt"].data, proc.stderr
    # Without the blob, reading file data names what is missing.
    blob.unlink()
    proc = run_cli("cat", boot, "/data/small.txt")
    assert_one_line_error(proc, 2, digest)


# ============================================================================ generated trees
@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(entries=trees(), compressor=st.sampled_from(COMPRESSORS), digester=st.sampled_from(DIGESTERS))
def test_generated_trees_roundtrip(entries, compressor, digester):
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "src.tar")
        write_tree_tar(src, entries)
        blob = os.path.join(tmp, "layer.blob")
        res = pack_layer(src, blob, compressor, digester, 0x1000)
        assert res.warnings == []
        assert_no_differences(diff_paths(src, blob), "source tar vs layer")
        expected = expected_tree(src)
        assert_tree_matches(expected, blob)
        back = os.path.join(tmp, "back.tar")
        with open_layer(blob) as layer:
            to_tar(layer, back)
            to_dir(layer, os.path.join(tmp, "root"))
        assert_no_differences(diff_paths(src, back), "source tar vs unpacked tar")
        assert_dir_matches(expected, os.path.join(tmp, "root"))
