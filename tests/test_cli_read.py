"""The reading commands of ``python -m nydus_inspect`` (info, toc, entry, chunks, ls, cat), run as a user would.

Each run is a real subprocess: we assert on printed values, on exit codes (0 ok, 2 unusable input) and on
stderr (empty on success; one line, never a traceback, on error).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import blake3
import pytest
from conftest import BOOTSTRAP, DATA_BLOB, ROOT, TOC_BLOB, V5_BOOTSTRAP

pytestmark = pytest.mark.vectors

TOC_DIGEST = "4fdfbb36ef74a3c63a28e2abafa54044c7594155beb6ddad9f36825cfe58286c"
DATA_TOC_DIGEST = "cfc89ed0739aef4eb1bf0904f0dfdb1c857134eca7319465baae95a99b84acde"
DATA_BLOB_ID = "be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef"
INVALID_BOOT_LAYER = "snapshotter/invalid-bootstrap-file-size-133513.tar.gz"
INVALID_LAYER = "snapshotter/invalid.tar.gz"


def run(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    full = dict(os.environ)
    full["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), full.get("PYTHONPATH")) if p)
    full.pop("NYDUS_INSPECT_DEBUG", None)
    full.update(env or {})
    argv = [a if isinstance(a, bytes) else str(a) for a in args]
    return subprocess.run(
        [sys.executable, "-m", "nydus_inspect", *argv], capture_output=True, env=full, timeout=120
    )


def ok(*args, env: dict | None = None) -> bytes:
    proc = run(*args, env=env)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert proc.stderr == b"", proc.stderr.decode(errors="replace")
    return proc.stdout


def ok_text(*args: str) -> str:
    return ok(*args).decode()


def ok_json(*args: str):
    return json.loads(ok(*args))


def fails(*args: str, code: int = 2) -> str:
    """Run expecting failure: exit ``code``, nothing on stdout, exactly one line on stderr without a traceback."""
    proc = run(*args)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == code, (proc.returncode, err)
    assert "Traceback" not in err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("nydus-inspect: error: "), err
    assert proc.stdout == b""
    assert "internal error" not in err
    return err.strip()


@pytest.fixture(scope="module")
def v(vectors):
    """Paths of the vectors as strings."""

    class P:
        toc = str(vectors / TOC_BLOB)
        data = str(vectors / DATA_BLOB)
        boot = str(vectors / BOOTSTRAP)
        blobs = str(vectors / "nydus/blobs")
        v5 = str(vectors / V5_BOOTSTRAP)
        bad_boot = str(vectors / INVALID_BOOT_LAYER)
        bad = str(vectors / INVALID_LAYER)

    return P


# ============================================================================ info
def test_info_human_toc_blob(v):
    out = ok_text("info", v.toc)
    assert "kind    nydus-blob" in out
    assert "size    10034" in out
    assert f"toc: 4 entries, 1024 bytes, digest {TOC_DIGEST}" in out
    assert "blob.meta: 3 chunks, ci none at 3341 (48 -> 48 bytes), features 0x1 (aligned)" in out
    assert "bootstrap: RAFS v6" in out
    assert "root nid      128" in out and "inodes        4" in out
    assert "image.blob ToC offset field is 2829" in out


def test_info_json_toc_blob(v):
    info = ok_json("info", "--json", v.toc)
    assert info["kind"] == "nydus-blob" and info["size"] == 10034
    assert info["sha256"] == os.path.basename(v.toc)
    assert info["toc"] == {"entries": 4, "digest": TOC_DIGEST, "size": 1024}
    assert info["blob_meta"]["ci_entries"] == 3 and info["blob_meta"]["ci_offset"] == 3341
    boot = info["bootstrap"]
    assert (
        boot["version"] == 6 and boot["superblock"]["root_nid"] == 128 and boot["superblock"]["inodes"] == 4
    )
    assert boot["ext_superblock"]["flags"] == "0x94" and boot["ext_superblock"]["chunk_table_entries"] == 3
    assert [b["chunk_count"] for b in boot["blobs"]] == [3]


def test_info_json_data_blob(v):
    info = ok_json("info", "--json", v.data)
    assert info["toc"]["digest"] == DATA_TOC_DIGEST
    assert info["blob_meta"]["features"] == "0x70000021" and info["blob_meta"]["ci_entries"] == 2
    assert "bootstrap" not in info


def test_info_bootstrap(v):
    info = ok_json("info", "--json", v.boot)
    assert info["kind"] == "bootstrap"
    (blob,) = info["bootstrap"]["blobs"]
    assert blob["blob_id"] == DATA_BLOB_ID
    assert (blob["blob_toc_digest"], blob["blob_toc_size"]) == (DATA_TOC_DIGEST, 1024)
    out = ok_text("info", v.boot)
    assert f"[0] {DATA_BLOB_ID}" in out
    assert f"toc        1024 bytes, digest {DATA_TOC_DIGEST}" in out


def test_info_v5(v):
    info = ok_json("info", "--json", v.v5)
    assert info["kind"] == "bootstrap-v5" and info["bootstrap"]["version"] == 5
    assert info["bootstrap"]["superblock"]["inodes"] == 51
    out = ok_text("info", v.v5)
    assert "bootstrap: RAFS v5" in out and "compression_none, hash_sha256" in out


# ============================================================================ toc
def test_toc_human(v):
    lines = ok_text("toc", v.toc).splitlines()
    assert lines[0].startswith("note: image.blob ToC offset field is 2829")
    assert lines[1].split() == ["NAME", "COMPRESSOR", "OFFSET", "STORED", "SIZE", "SHA256"]
    rows = [line.split() for line in lines[2:6]]
    assert [r[:5] for r in rows] == [
        ["image.blob", "none", "0", "2829", "12288"],
        ["blob.meta", "none", "3341", "48", "48"],
        ["blob.meta.header", "none", "3389", "4096", "4096"],
        ["image.boot", "zstd", "7997", "501", "20480"],
    ]
    assert rows[3][5].startswith("d85f1b77aab4")
    assert lines[6] == f"toc digest: {TOC_DIGEST} (1024 bytes)"


def test_toc_json(v):
    rep = ok_json("toc", "--json", v.data)
    assert rep["source"] == "toc" and rep["toc_digest"] == DATA_TOC_DIGEST and rep["toc_size"] == 1024
    assert [
        (e["name"], e["compressed_offset"], e["compressed_size"], e["uncompressed_size"])
        for e in rep["entries"]
    ] == [
        ("image.blob", 0, 7802, 36864),
        ("blob.meta", 8314, 32, 32),
        ("blob.meta.header", 8346, 4096, 4096),
        ("blob.digest", 12954, 64, 64),
    ]
    assert rep["entries"][0]["compressed_offset_field"] == 7802


def test_toc_of_a_bootstrap_is_a_usage_error(v):
    err = fails("toc", v.boot)
    assert "has no ToC" in err and v.boot in err


# ============================================================================ entry
def test_entry_to_stdout(v):
    boot = ok("entry", v.toc, "image.boot")
    assert len(boot) == 20480 and hashlib.sha256(boot).hexdigest().startswith("d85f1b77aab4")
    raw = ok("entry", v.toc, "image.boot", "--raw")
    assert len(raw) == 501 and raw[:4] == b"\x28\xb5\x2f\xfd"
    with open(v.toc, "rb") as f:
        whole = f.read()
    assert ok("entry", v.toc, "image.blob") == whole[:2829]
    assert ok("entry", v.toc, "rafs.blob.toc") == whole[-1024:-512]
    assert ok("entry", v.toc, "blob.meta.header") == whole[3389 : 3389 + 4096]


def test_entry_blob_digest(v):
    digests = ok("entry", v.data, "blob.digest")
    assert len(digests) == 64
    chunks = ok_json("chunks", "--json", v.data)["chunks"]
    assert [digests[i : i + 32].hex() for i in (0, 32)] == [c["digest"] for c in chunks]


def test_entry_output_file_is_written_atomically(v, tmp_path):
    target = tmp_path / "boot.img"
    assert ok("entry", v.toc, "image.boot", "-o", target) == b""
    data = target.read_bytes()
    assert hashlib.sha256(data).hexdigest().startswith("d85f1b77aab4") and len(data) == 20480
    assert sorted(os.listdir(tmp_path)) == ["boot.img"]  # no temporary file left beside it
    first = os.stat(target)
    # A failing run leaves an existing target untouched and no temporary file behind.
    err = fails("entry", v.toc, "blob.digest", "-o", target)
    assert "no entry named 'blob.digest'" in err
    assert target.read_bytes() == data and os.stat(target).st_ino == first.st_ino
    assert sorted(os.listdir(tmp_path)) == ["boot.img"]
    # Overwriting an existing file renames a new one into place (a new inode), never rewrites it in place.
    ok("entry", v.toc, "blob.meta", "-o", target)
    assert target.read_bytes() == open(v.toc, "rb").read()[3341:3389]
    assert os.stat(target).st_ino != first.st_ino
    assert sorted(os.listdir(tmp_path)) == ["boot.img"]


def test_entry_output_into_a_missing_directory(v, tmp_path):
    err = fails("entry", v.toc, "image.boot", "-o", tmp_path / "no" / "such" / "file")
    assert "does not exist" in err


def test_entry_unknown_name_lists_the_entries(v):
    err = fails("entry", v.data, "image.boot")
    assert "no entry named 'image.boot'" in err
    assert "image.blob, blob.meta, blob.meta.header, blob.digest, rafs.blob.toc" in err


# ============================================================================ chunks
def test_chunks_human(v):
    lines = ok_text("chunks", v.toc).splitlines()
    assert lines[0] == "source: blob.meta"
    assert "  ci_entries: 3" in lines
    head = lines.index(next(line for line in lines if line.startswith("INDEX")))
    rows = [line.split() for line in lines[head + 1 :]]
    assert rows == [
        ["0", "0", "1211", "0", "2816", "yes", "-"],
        ["1", "1211", "407", "4096", "678", "yes", "-"],
        ["2", "1618", "1211", "8192", "3115", "yes", "-"],
    ]


def test_chunks_json(v):
    rep = ok_json("chunks", "--json", v.data)
    assert rep["source"] == "blob.meta" and rep["header"]["ci_entries"] == 2
    assert [
        (c["index"], c["compressed_offset"], c["compressed_size"], c["uncompressed_offset"])
        for c in rep["chunks"]
    ] == [
        (0, 0, 4828, 0),
        (1, 4828, 2974, 20480),
    ]
    boot = ok_json("chunks", "--json", v.boot)
    assert boot["source"] == "bootstrap chunk table" and boot["header"] == {"entries": 2}
    assert sorted(c["digest"] for c in boot["chunks"]) == sorted(c["digest"] for c in rep["chunks"])


def test_chunks_of_a_v5_bootstrap(v):
    # v5 has no chunk table: each file's inode holds its records, listed once per (blob, chunk index).
    out = ok_json("chunks", "--json", v.v5)
    assert out["source"] == "rafs v5 inode chunk records"
    keys = [(c["blob_index"], c["index"]) for c in out["chunks"]]
    assert len(keys) == len(set(keys)) == 23
    assert (
        out["chunks"][0]["digest"].startswith("fff49cf6925f") and out["chunks"][0]["uncompressed_size"] == 944
    )


# ============================================================================ ls
def test_ls_plain(v):
    assert ok_text("ls", v.toc) == "/error.rs\n/lib.rs\n/logger.rs\n"
    assert ok_text("ls", v.boot, "/lib.rs") == "/lib.rs\n"
    assert ok_text("ls", "-R", v.boot) == "/\n/lib.rs\n/sync_io.rs\n"


def test_ls_long(v):
    lines = ok_text("ls", "-l", v.boot).splitlines()
    assert lines[0].split()[:5] == ["-rw-r--r--", "1", "0", "0", "16931"] and lines[0].endswith(" /lib.rs")
    assert lines[1].split()[4] == "13400" and lines[1].endswith(" /sync_io.rs")
    out = ok_text("ls", "-lR", "--chunks", v.boot)
    assert "    chunk @0: blob 0 #0 c[0+4828] u[0+16931] f7e2735f1c6ae9cd" in out
    assert "    chunk @0: blob 0 #1 c[4828+2974] u[20480+13400] 812465bcc9e88393" in out


def test_ls_recursive_json(v):
    nodes = ok_json("ls", "-R", "--json", v.toc)
    assert [(n["path"], n["type"], n["size"], n["mode"]) for n in nodes] == [
        ("/", "dir", 86, "0755"),
        ("/error.rs", "file", 2816, "0644"),
        ("/lib.rs", "file", 678, "0644"),
        ("/logger.rs", "file", 3115, "0644"),
    ]
    assert nodes[0]["nid"] == 128
    with_chunks = ok_json("ls", "-R", "--json", "--chunks", v.boot)
    files = [n for n in with_chunks if n["type"] == "file"]
    assert [len(n["chunks"]) for n in files] == [1, 1]
    assert files[0]["chunks"][0]["digest"].startswith("f7e2735f1c6ae9cd")


def test_ls_v5(v):
    nodes = ok_json("ls", "-R", "--json", v.v5)
    assert len(nodes) == 54 and nodes[0]["path"] == "/"
    targets = {n["path"]: n.get("target") for n in nodes if n["type"] == "symlink"}
    assert targets["/symlink-test/root-2"] == "/foobar"
    assert ok_text("ls", v.v5) == "/hardlink-test\n/normal-file-test\n/symlink-test\n"
    long = ok_text("ls", "-l", v.v5, "/symlink-test")
    assert "lrwxrwxrwx" in long and "/symlink-test/foo1 -> ../../fc/foo" in long


@pytest.mark.parametrize("which", ["toc", "boot", "v5"])
def test_ls_missing_path(v, which):
    err = fails("ls", getattr(v, which), "/no/such/dir")
    assert "no such path in the image: /no/such/dir" in err


# ============================================================================ cat
def test_cat(v, tmp_path):
    data = ok("cat", v.boot, "/lib.rs", "--blob-dir", v.blobs)
    assert len(data) == 16931
    assert blake3.blake3(data).hexdigest().startswith("f7e2735f1c6ae9cd")
    assert ok("cat", v.boot, "/sync_io.rs", "--blob", v.data) == ok(
        "cat", v.boot, "sync_io.rs", "--blob-dir", v.blobs
    )
    out = tmp_path / "lib.rs"
    assert ok("cat", v.boot, "/lib.rs", "--blob-dir", v.blobs, "-o", out) == b""
    assert out.read_bytes() == data
    inline = ok("cat", v.toc, "/logger.rs")
    assert len(inline) == 3115 and inline.isascii()


def test_cat_without_the_blob(v):
    err = fails("cat", v.boot, "/lib.rs")
    assert f"blob 0 ({DATA_BLOB_ID}) not found" in err and "--blob-dir" in err


def test_cat_missing_path_and_directory(v):
    assert "no such path in the image: /nope" in fails("cat", v.toc, "/nope")
    assert "is a dir, not a regular file" in fails("cat", v.toc, "/")


def test_cat_v5_without_its_blob_names_it(v):
    # v5 files read (tests/test_old_layers.py); this vector comes without its data blob.
    err = fails("cat", v.v5, "/hardlink-test/foo")
    assert "blob 0 (7334a2594e" in err and "not found" in err


# ============================================================================ unreadable input
@pytest.mark.parametrize(
    "command", [["info"], ["ls", "-R"], ["chunks"], ["cat", "/image/x"], ["info", "--json"]]
)
def test_bootstrap_layer_that_is_not_rafs(v, command):
    err = fails(command[0], v.bad_boot, *command[1:])
    assert f"{v.bad_boot}: erofs superblock field s_magic at offset 1024: not a RAFS v6 bootstrap" in err


@pytest.mark.parametrize("command", [["info"], ["ls"], ["cat", "/x"]])
def test_bootstrap_layer_without_a_bootstrap(v, command):
    err = fails(command[0], v.bad, *command[1:])
    assert f"{v.bad}: bootstrap layer: no image/image.boot in this tar" in err


@pytest.mark.parametrize("command", ["info", "toc", "ls", "chunks"])
def test_missing_and_odd_files(v, tmp_path, command):
    assert "no such file" in fails(command, tmp_path / "absent")
    assert "is a directory" in fails(command, tmp_path)
    junk = tmp_path / "junk"
    junk.write_bytes(bytes(range(256)) * 40)
    assert "not a nydus layer blob, RAFS bootstrap or bootstrap layer" in fails(command, junk)


def test_truncated_blob_names_offset(v, tmp_path):
    raw = open(v.toc, "rb").read()
    cut = tmp_path / "cut"
    cut.write_bytes(raw[:-100])
    fails("info", cut)
    bad = bytearray(raw)
    bad[-1024] ^= 0x08  # the image.blob ToC entry's flags: an unknown compressor
    broken = tmp_path / "broken"
    broken.write_bytes(bytes(bad))
    err = fails("toc", broken)
    assert (
        f"{broken}: toc entry field flags at offset {len(raw) - 1024}: unknown compressor bits (found 0x9)"
        in err
    )


def test_no_command_is_a_usage_error():
    proc = run()
    assert proc.returncode == 2 and b"Traceback" not in proc.stderr


def test_names_that_are_not_utf8(v, tmp_path):
    # A strict UTF-8 stdout (the default under a non-C UTF-8 locale) must not turn a byte name into a crash.
    raw = bytearray(open(v.boot, "rb").read())
    at = raw.index(b"sync_io.rs")
    raw[at] = 0xFF
    boot = tmp_path / "latin.boot"
    boot.write_bytes(bytes(raw))
    strict = {"PYTHONIOENCODING": "utf-8:strict"}
    assert ok("ls", boot, env=strict) == b"/lib.rs\n/\xffync_io.rs\n"
    assert b"/\xffync_io.rs" in ok("ls", "-l", boot, env=strict)
    nodes = json.loads(ok("ls", "-R", "--json", boot, env=strict).decode("utf-8"))  # valid UTF-8 JSON
    assert [os.fsencode(n["path"]) for n in nodes] == [b"/", b"/lib.rs", b"/\xffync_io.rs"]
    data = ok("cat", boot, b"/\xffync_io.rs", "--blob-dir", v.blobs, env=strict)
    assert len(data) == 13400


def test_entry_output_is_not_left_half_written_when_the_digest_fails(v, tmp_path):
    raw = bytearray(open(v.toc, "rb").read())
    raw[100] ^= 0xFF  # inside image.blob: the bytes stream out before the sha256 can be compared
    bad = tmp_path / "bad.blob"
    bad.write_bytes(bytes(raw))
    target = tmp_path / "out" / "image.blob"
    target.parent.mkdir()
    target.write_bytes(b"previous")
    err = fails("entry", bad, "image.blob", "-o", target)
    assert "sha256 of image.blob is" in err and "the ToC says f8ee2140e167" in err
    assert target.read_bytes() == b"previous"
    assert os.listdir(target.parent) == ["image.blob"]


def test_parser_for_one_command_matches_the_full_parser():
    """The start-up shortcut (only the command being run is built) parses exactly as the full parser."""
    from nydus_inspect import cli

    for argv in (
        ["ls", "-lR", "x.blob", "/etc"],
        ["-q", "unpack", "x.blob", "-o", "-"],
        ["pack", "a.tar", "-o", "b"],
        ["verify", "a", "b", "--json"],
        ["mount", "a", "mp", "--foreground"],
    ):
        full = vars(cli.build_parser().parse_args(argv))
        one = vars(cli.build_parser(argv).parse_args(argv))
        assert one == full, argv
    # An unknown command still gets the full list of choices in its error.
    parser = cli.build_parser(["bogus"])
    assert "unpack" in parser.format_help() and "verify" in parser.format_help()


def test_version_on_stdout():
    from importlib.metadata import version

    proc = run("--version")
    assert proc.returncode == 0 and proc.stderr == b""
    assert proc.stdout == f"nydus-inspect {version('nydus-inspect')}\n".encode()


def test_quick_exit_keeps_all_output_and_the_exit_code(tmp_path):
    """The entry point leaves without Python's teardown: everything written to stdout, to a pipe or a
    file, still arrives, and the exit code is the command's."""
    import io
    import tarfile

    body = os.urandom(3 << 20)  # many times any buffer on the way
    with tarfile.open(tmp_path / "l.tar", "w") as t:
        info = tarfile.TarInfo("big")
        info.size = len(body)
        t.addfile(info, io.BytesIO(body))
    layer = tmp_path / "l.blob"
    ok("pack", "-q", tmp_path / "l.tar", "-o", layer)
    # Python's own buffers, as users have them (this environment may set PYTHONUNBUFFERED).
    env = {k: val for k, val in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env["PYTHONPATH"] = str(ROOT)

    def cli(*args, **kw):
        return subprocess.run([sys.executable, "-m", "nydus_inspect", *map(str, args)], env=env, **kw)

    assert cli("cat", layer, "/big", capture_output=True).stdout == body
    # print()ed into a pipe: still in Python's buffer when the command returns.
    assert cli("ls", layer, capture_output=True).stdout == b"/big\n"
    out = tmp_path / "big"
    with open(out, "wb") as f:
        assert cli("cat", layer, "/big", stdout=f).returncode == 0
    assert out.read_bytes() == body
    assert cli("cat", layer, "/missing", capture_output=True).returncode == 2
    # Output that cannot be written at the end (a full disk) is an error, not a quiet loss.
    with open("/dev/full", "wb") as full:
        proc = cli("ls", layer, stdout=full, stderr=subprocess.PIPE)
    assert proc.returncode == 2 and proc.stderr.decode().startswith("nydus-inspect: error: standard output: ")
