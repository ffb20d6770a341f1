"""Where a bootstrap's blobs are found: ``--blob FILE`` and ``--blob-dir DIR`` (by default the bootstrap's own
directory), by name or by content digest, and never outside the directory whatever the bootstrap says.

The layers are packed and merged by the CLI as a user would, so the blob ids are the ones ``merge`` writes
(each layer file's sha256), not names chosen by the test.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import ROOT

from nydus_inspect import layer as layer_mod
from nydus_inspect.formats import rafs_v6
from nydus_inspect.layer import open_layer
from nydus_inspect.testing import File, build_tar

BASE = {
    "etc/motd": File(b"base motd\n"),
    "usr/bin/tool": File(b"\x7fELF" + bytes(range(256)) * 40, mode=0o755),
}
UPPER = {"etc/motd": File(b"upper motd\n"), "srv/data": File(b"payload " * 3000)}


def run(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("NYDUS_INSPECT_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "nydus_inspect", *map(str, args)], capture_output=True, env=env, timeout=120
    )


def ok(*args) -> bytes:
    p = run(*args)
    assert p.returncode == 0, p.stderr.decode()
    return p.stdout


def fails(*args, code: int = 2) -> str:
    p = run(*args)
    err = p.stderr.decode()
    assert p.returncode == code, (p.returncode, err, p.stdout.decode())
    assert "Traceback" not in err and err.startswith("nydus-inspect: error: ") and err.count("\n") == 1, err
    return err


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """base.blob and upper.blob packed from tars, merged into merged.boot, all in one directory."""
    d = tmp_path_factory.mktemp("blobs")
    for name, spec in (("base", BASE), ("upper", UPPER)):
        ok("pack", build_tar(spec, d / f"{name}.tar"), "-o", d / f"{name}.blob", "--chunk-size", "64K")
        os.unlink(d / f"{name}.tar")
    ok("merge", d / "base.blob", d / "upper.blob", "-o", d / "merged.boot")
    return d


def blob_ids(boot) -> list[str]:
    with open_layer(str(boot)) as ly:
        return [b.id for b in ly.rafs.blobs]


def test_merge_output_names_its_blobs_by_sha256(image):
    sums = {hashlib.sha256((image / f).read_bytes()).hexdigest() for f in ("base.blob", "upper.blob")}
    assert set(blob_ids(image / "merged.boot")) == sums


def test_verify_finds_merged_blobs_by_digest_in_blob_dir(image, tmp_path):
    # The blobs keep the names the user gave them, elsewhere than the bootstrap.
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    for f in ("base.blob", "upper.blob"):
        shutil.copy(image / f, blobs / f)
    boot = tmp_path / "merged.boot"
    shutil.copy(image / "merged.boot", boot)
    out = ok("verify", boot, "--blob-dir", blobs).decode()
    assert ": OK:" in out and "4 chunks" in out and "2 blob ids" in out
    assert ok("cat", boot, "/etc/motd", "--blob-dir", blobs) == b"upper motd\n"
    assert ok("cat", boot, "/srv/data", "--blob-dir", blobs) == b"payload " * 3000
    # Without the directory, the blobs are not beside the bootstrap: missing, and said so.
    p = run("verify", boot)
    assert p.returncode == 1 and b"blob.missing" in p.stdout


def test_the_bootstraps_directory_is_searched_by_digest_too(image):
    # The README's walkthrough shape: merge into the directory holding the blobs, then verify it.
    assert ": OK:" in ok("verify", image / "merged.boot", "--blob-dir", image).decode()
    assert ": OK:" in ok("verify", image / "merged.boot").decode()
    assert ok("cat", image / "merged.boot", "/usr/bin/tool").startswith(b"\x7fELF")


def test_a_renamed_blob_given_with_blob_is_found_by_digest(image, tmp_path):
    a, b = tmp_path / "one", tmp_path / "two"
    shutil.copy(image / "base.blob", a)
    shutil.copy(image / "upper.blob", b)
    assert ": OK:" in ok("verify", image / "merged.boot", "--blob", b, "--blob", a).decode()


def test_only_files_of_the_right_size_are_hashed(image, tmp_path, monkeypatch):
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    for f in ("base.blob", "upper.blob"):
        shutil.copy(image / f, blobs / f)
    # Decoys: other sizes, and one of a blob's file size that is no blob (an inline blob's recorded size
    # is where its bootstrap starts, not its file size, so the size alone does not make a candidate).
    (blobs / "small").write_bytes(b"x" * 100)
    (blobs / "big").write_bytes(b"y" * (1 << 20))
    (blobs / "same-size").write_bytes(b"z" * (blobs / "upper.blob").stat().st_size)
    (blobs / "sub").mkdir()
    hashed = []
    real = layer_mod._file_sha256
    monkeypatch.setattr(layer_mod, "_file_sha256", lambda p: hashed.append(os.path.basename(p)) or real(p))
    with open_layer(str(image / "merged.boot"), blob_dir=str(blobs)) as ly:
        found = sorted(os.path.basename(ly.blob_file(i).layer.path) for i in range(len(ly.rafs.blobs)))
    assert found == ["base.blob", "upper.blob"]
    assert set(hashed) == {"base.blob", "upper.blob"}  # found by content: the names are not their ids


def test_a_data_blob_whose_size_is_the_recorded_size_fits(vectors):
    """nydus-image's separate bootstrap records its data blob's whole file size."""
    boot = vectors / "nydus/bootstrap/rafs-v6-2.2.boot"
    ent = open_layer(str(boot)).rafs.blobs[0]
    data = vectors / "nydus/blobs" / ent.id
    assert layer_mod._size_fits(str(data), data.stat().st_size, ent.compressed_size)
    assert not layer_mod._size_fits(str(boot), boot.stat().st_size, ent.compressed_size)


@pytest.fixture
def short_dir():
    d = Path(tempfile.mkdtemp(prefix="nib-"))
    yield d
    shutil.rmtree(d)


def _with_blob_id(src, dst, index: int, new_id: bytes) -> None:
    """Copy bootstrap ``src`` to ``dst`` with blob-table entry ``index``'s id replaced."""
    data = bytearray(src.read_bytes())
    with open_layer(str(src)) as ly:
        at = ly.rafs.meta.ext.s_blob_table_offset + index * rafs_v6.BLOB_ENTRY.size
    assert len(new_id) <= 64
    data[at : at + 64] = new_id.ljust(64, b"\0")
    dst.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["dotdot", "absolute", "dot"])
def test_a_blob_id_is_never_a_path_out_of_the_blob_dir(image, tmp_path, short_dir, how):
    """A crafted bootstrap names a real blob outside --blob-dir by a relative or absolute path: refused."""
    outside = tmp_path / "outside" if how == "dotdot" else short_dir  # an id holds 64 bytes at most
    outside.mkdir(exist_ok=True)
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    ids = blob_ids(image / "merged.boot")
    upper_sha = hashlib.sha256((image / "upper.blob").read_bytes()).hexdigest()
    index = ids.index(upper_sha)
    shutil.copy(image / "upper.blob", outside / "upper.blob")
    shutil.copy(image / "base.blob", blobs / "base.blob")
    crafted = {
        "dotdot": b"../outside/upper.blob",
        "absolute": str(outside / "upper.blob").encode(),
        "dot": b"..",
    }[how]
    boot = blobs / "evil.boot"
    _with_blob_id(image / "merged.boot", boot, index, crafted)
    err = fails("cat", boot, "/srv/data", "--blob-dir", blobs)
    assert "blob_id" in err and "not a plain file name" in err and f"blob {index}" in err
    assert repr(crafted.decode()) in err
    assert "not a plain file name" in fails("unpack", boot, "-o", tmp_path / "out.tar", "--blob-dir", blobs)
    assert not (tmp_path / "out.tar").exists()
    # verify reports it as a finding about that blob, and still checks the other one.
    p = run("verify", boot, "--blob-dir", blobs)
    assert p.returncode == 1, p.stderr.decode()
    assert b"blob.unreadable" in p.stdout and b"not a plain file name" in p.stdout


def test_a_fifo_in_the_blob_dir_is_not_opened(image, tmp_path):
    """Only regular files are candidates: opening a FIFO to hash it would wait for a writer for ever."""
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    for f in ("base.blob", "upper.blob"):
        shutil.copy(image / f, blobs / f)
    os.mkfifo(blobs / "a-fifo")
    out = ok("verify", image / "merged.boot", "--blob-dir", blobs, "--blob", blobs / "a-fifo").decode()
    assert ": OK:" in out
