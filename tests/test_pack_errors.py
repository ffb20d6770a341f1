"""Bad input to pack: exit 2, one line on stderr (no traceback), nothing at the output path and no
temporary file left beside it; an interrupted pack leaves nothing behind either."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import stat
import subprocess
import sys
import tarfile
import threading
import time

import pytest
from fixtures_util import (
    ROOT,
    assert_one_line_error,
    fixture_tars_fixture,  # noqa: F401 (provides the fixture_tars fixture)
    make_fixtures,
    run_cli,
)

from nydus_inspect.errors import NydusInspectError
from nydus_inspect.fsutil import TEMP_MARK
from nydus_inspect.pack import PackOptions, pack


def _tar(path, add) -> str:
    """Write a PAX tar at ``path``; ``add(t)`` fills it through make_fixtures.Tar."""
    t = make_fixtures.Tar()
    add(t)
    path.write_bytes(t.bytes())
    return str(path)


def _assert_nothing_written(out_dir, out_name="out.blob"):
    left = sorted(os.listdir(out_dir))
    assert left == [], f"left behind in {out_dir}: {left}"
    assert not os.path.exists(os.path.join(out_dir, out_name))


@pytest.fixture
def out_dir(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    return d


def _pack_fails(src, out_dir, *needles, extra=(), stdin=None):
    proc = run_cli("pack", src, "-o", out_dir / "out.blob", *extra, stdin=stdin)
    line = assert_one_line_error(proc, 2, *needles)
    _assert_nothing_written(out_dir)
    return line


# ============================================================================ unreadable input
def test_not_a_tar(tmp_path, out_dir):
    src = tmp_path / "notes.txt"
    src.write_bytes(b"this is not a tar archive\n" * 100)
    _pack_fails(src, out_dir, "tar")


def test_garbage_after_a_gzip_header(tmp_path, out_dir):
    src = tmp_path / "bad.tar.gz"
    src.write_bytes(b"\x1f\x8b\x08\x00" + os.urandom(2000))
    _pack_fails(src, out_dir)


@pytest.mark.parametrize("via", ["file", "stdin"])
def test_truncated_in_file_data(tmp_path, out_dir, fixture_tars, via):
    data = fixture_tars["every-type.tar"].read_bytes()
    with tarfile.open(fixture_tars["every-type.tar"]) as tf:
        member = tf.getmember("data/two-and-a-half-m.bin")
    cut = member.offset_data + member.size // 2  # in the middle of a multi-chunk file
    src = tmp_path / "cut.tar"
    src.write_bytes(data[:cut])
    if via == "file":
        _pack_fails(src, out_dir)
    else:
        with open(src, "rb") as f:
            _pack_fails("-", out_dir, stdin=f)


def test_truncated_compressed_tar(tmp_path, out_dir, fixture_tars):
    data = fixture_tars["every-type.tar.zst"].read_bytes()
    src = tmp_path / "cut.tar.zst"
    src.write_bytes(data[: len(data) // 2])
    _pack_fails(src, out_dir)


@pytest.mark.parametrize("name", make_fixtures.REFUSED)
def test_sparse_members_are_refused(out_dir, fixture_tars, name):
    line = _pack_fails(fixture_tars[name], out_dir, "sparse", "sparse.img")
    assert len(line) < 300


def test_hardlink_to_a_missing_target(tmp_path, out_dir):
    src = _tar(tmp_path / "src.tar", lambda t: (t.file("a", b"a"), t.hardlink("b", "missing")))
    _pack_fails(src, out_dir, "hard link", "missing")


@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "./../evil"])
def test_dotdot_in_a_path(tmp_path, out_dir, name):
    src = _tar(tmp_path / "src.tar", lambda t: t.file(name, b"x"))
    _pack_fails(src, out_dir, "..")


def test_dotdot_in_a_hardlink_target(tmp_path, out_dir):
    src = _tar(tmp_path / "src.tar", lambda t: (t.file("a", b"a"), t.hardlink("b", "../a")))
    _pack_fails(src, out_dir, "..")


@pytest.mark.parametrize(
    ("add", "needle"),
    [
        (lambda t: t.file("n" * 256, b"x"), "255"),  # longer than an EROFS dirent name
        (lambda t: t.symlink("s", "t" * 4097), "4096"),  # longer than nydusd reads
        (lambda t: t.symlink("s", ""), "empty"),
        (lambda t: t.device("d", tarfile.CHRTYPE, 4096, 0), "device"),  # does not fit Linux's dev_t encoding
        (lambda t: t.file("f", b"x", uid=1 << 32), "uid"),
        (lambda t: t.file("f", b"x", xattrs={b"user.big": b"v" * 65536}), "xattr"),
        (lambda t: t.file(".", b"x"), "root"),
        (lambda t: (t.dir("d"), t.hardlink("h", "d")), "directory"),
        (lambda t: t.file("f", b"x", xattrs={b"user." + b"n" * 256: b"v"}), "255"),
    ],
    ids=[
        "long-name",
        "long-symlink",
        "empty-symlink",
        "big-device",
        "big-uid",
        "big-xattr",
        "root-file",
        "hardlink-to-dir",
        "long-xattr-name",
    ],
)
def test_what_rafs_cannot_hold_is_refused(tmp_path, out_dir, add, needle):
    _pack_fails(_tar(tmp_path / "src.tar", add), out_dir, needle)


def test_pre_1970_mtime_is_stored_as_zero_with_a_warning(tmp_path):
    src = _tar(tmp_path / "src.tar", lambda t: t.file("old", b"x", mtime=-86400))
    res = pack(src, str(tmp_path / "out.blob"))
    assert any("before 1970" in w for w in res.warnings), res.warnings
    proc = run_cli("diff", src, tmp_path / "out.blob", "--json")
    assert proc.returncode == 1  # diff still shows what was lost


# ============================================================================ bad arguments
@pytest.mark.parametrize(
    "args",
    [
        ("--chunk-size", "0x1001"),
        ("--chunk-size", "0x800"),
        ("--chunk-size", "0x2000000"),
        ("--chunk-size", "lots"),
        ("--chunk-size", "0"),
        ("--compressor", "gzip"),
        ("--compressor", "brotli"),
        ("--digester", "md5"),
    ],
)
def test_bad_options(out_dir, fixture_tars, args):
    _pack_fails(fixture_tars["dedup.tar"], out_dir, extra=args)


def test_missing_input(tmp_path, out_dir):
    _pack_fails(tmp_path / "no-such.tar", out_dir, "no-such.tar")


def test_missing_output_directory(tmp_path, fixture_tars):
    proc = run_cli("pack", fixture_tars["dedup.tar"], "-o", tmp_path / "nowhere" / "out.blob")
    assert_one_line_error(proc, 2, "nowhere")
    assert not (tmp_path / "nowhere").exists()


def test_api_errors_are_nydus_inspect_errors(tmp_path, fixture_tars):
    for name in make_fixtures.REFUSED:
        with pytest.raises(NydusInspectError):
            pack(str(fixture_tars[name]), str(tmp_path / "out.blob"))
    assert os.listdir(tmp_path) == []


def test_a_failed_pack_keeps_an_existing_output(tmp_path, fixture_tars):
    out = tmp_path / "out.blob"
    out.write_bytes(b"previous layer")
    proc = run_cli("pack", fixture_tars["sparse.tar"], "-o", out)
    assert_one_line_error(proc, 2)
    assert out.read_bytes() == b"previous layer"
    assert os.listdir(tmp_path) == ["out.blob"]


def test_cache_file_of_a_layer_without_data(tmp_path, out_dir):
    src = _tar(tmp_path / "src.tar", lambda t: (t.dir("etc"), t.file("etc/empty", b"")))
    assert run_cli("pack", src, "-o", tmp_path / "layer.blob").returncode == 0
    proc = run_cli("cache-file", tmp_path / "layer.blob", "-o", out_dir / "out.blob")
    assert_one_line_error(proc, 2, "blob table is empty")
    _assert_nothing_written(out_dir)


def test_to_dir_names_an_xattr_the_filesystem_refuses(tmp_path):
    """ext4 holds about a block of xattrs per inode: a bigger one is either set or refused by name."""
    big = b"v" * 60000
    src = _tar(tmp_path / "src.tar", lambda t: t.file("f", b"x", xattrs={b"user.big": big}))
    assert run_cli("pack", src, "-o", tmp_path / "layer.blob").returncode == 0
    proc = run_cli("unpack", tmp_path / "layer.blob", "--to-dir", tmp_path / "root")
    if proc.returncode == 0:
        assert os.getxattr(tmp_path / "root" / "f", "user.big") == big
    else:
        assert_one_line_error(proc, 2, "/f", "user.big")


# ============================================================================ interrupted packs
def _big_tar() -> bytes:
    """About 24 MiB of incompressible files, made quickly."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(24):
            data = hashlib.shake_256(b"big %d" % i).digest(1 << 20)
            info = tarfile.TarInfo(f"big/{i:02d}.bin")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _sigint_as_at_a_terminal() -> None:
    # A suite run from a script's background job ignores SIGINT, and its children inherit that (Python then
    # keeps it ignored); Ctrl-C at a terminal meets the default disposition, which is what is tested here.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_pack_and_wait(out_dir, data, *extra) -> subprocess.Popen:
    """A pack reading ``data`` from a pipe, given half of it and waited for until its temporary blob grows
    past 1 MiB (it then waits for the rest of the tar)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "nydus_inspect", "pack", "-", "-o", str(out_dir / "out.blob")]
    proc = subprocess.Popen(
        [*cmd, "--chunk-size", "0x10000", *map(str, extra)],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env=env,
        preexec_fn=_sigint_as_at_a_terminal,
    )
    proc.stdin.write(data[: len(data) // 2])
    proc.stdin.flush()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        temps = [f for f in os.listdir(out_dir) if f.startswith(".out.blob" + TEMP_MARK)]
        if temps and os.path.getsize(out_dir / temps[0]) > 1 << 20:
            return proc
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    pytest.fail("pack never started writing")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_pack_leaves_nothing(tmp_path, out_dir, sig):
    proc = _start_pack_and_wait(out_dir, _big_tar())
    try:
        proc.send_signal(sig)
        err = proc.communicate(timeout=30)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode in (130, 128 + sig), err  # the CLI unwinds SIGTERM like Ctrl-C
    assert b"Traceback" not in err and err.count(b"\n") == 1, err
    _assert_nothing_written(out_dir)


def test_the_next_run_removes_what_a_killed_pack_left(tmp_path, out_dir, fixture_tars):
    """SIGKILL leaves the temporary files; the next pack to the same outputs removes them (their writer is
    gone), and leaves alone a temporary file whose writer lives and another program's file."""
    proc = _start_pack_and_wait(out_dir, _big_tar(), "--bootstrap", out_dir / "out.boot")
    proc.kill()
    proc.communicate(timeout=30)
    left = sorted(os.listdir(out_dir))
    assert len(left) == 2 and all(TEMP_MARK in name for name in left), left
    live = out_dir / f".out.blob{TEMP_MARK}{os.getpid()}-abcdefgh"  # this test's pid: alive
    live.write_bytes(b"x")
    other = out_dir / ".out.blob.tmp"
    other.write_bytes(b"y")
    src = fixture_tars["every-type.tar"]
    assert (
        run_cli("pack", "-q", src, "-o", out_dir / "out.blob", "--bootstrap", out_dir / "out.boot").returncode
        == 0
    )
    assert sorted(os.listdir(out_dir)) == sorted([live.name, other.name, "out.blob", "out.boot"])


def test_blob_and_bootstrap_are_renamed_as_a_pair(tmp_path, out_dir, fixture_tars, monkeypatch):
    """Both temporary files are complete before the first rename; the bootstrap is renamed first."""
    import nydus_inspect.fsutil as fsutil

    src = fixture_tars["every-type.tar"]
    pack(str(src), str(tmp_path / "want.blob"), PackOptions(bootstrap=str(tmp_path / "want.boot")))
    renames = []
    real_replace = os.replace

    def replace(a, b):
        if not renames:  # at the first rename, every output must already be whole
            temps = {
                name.split(TEMP_MARK)[0]: os.path.getsize(out_dir / name) for name in os.listdir(out_dir)
            }
            assert temps == {
                ".out.boot": os.path.getsize(tmp_path / "want.boot"),
                ".out.blob": os.path.getsize(tmp_path / "want.blob"),
            }, temps
        renames.append(os.path.basename(b))
        real_replace(a, b)

    monkeypatch.setattr(fsutil.os, "replace", replace)
    pack(str(src), str(out_dir / "out.blob"), PackOptions(bootstrap=str(out_dir / "out.boot")))
    assert renames == ["out.boot", "out.blob"]
    assert (out_dir / "out.blob").read_bytes() == (tmp_path / "want.blob").read_bytes()
    assert (out_dir / "out.boot").read_bytes() == (tmp_path / "want.boot").read_bytes()


def test_a_failed_bootstrap_keeps_both_old_outputs(tmp_path, out_dir, fixture_tars, monkeypatch):
    import nydus_inspect.pack as pack_module

    (out_dir / "out.blob").write_bytes(b"old blob")
    (out_dir / "out.boot").write_bytes(b"old boot")

    def fail(*args):
        raise NydusInspectError("the bootstrap cannot be built")

    monkeypatch.setattr(pack_module, "_write_separate_bootstrap", fail)
    with pytest.raises(NydusInspectError):
        pack(
            str(fixture_tars["every-type.tar"]),
            str(out_dir / "out.blob"),
            PackOptions(bootstrap=str(out_dir / "out.boot")),
        )
    assert sorted(os.listdir(out_dir)) == ["out.blob", "out.boot"]
    assert (out_dir / "out.blob").read_bytes() == b"old blob"
    assert (out_dir / "out.boot").read_bytes() == b"old boot"


def test_output_to_a_device_writes_through_it(tmp_path, fixture_tars):
    """`-o FIFO` (or /dev/null) is written in place: the node must survive, not be renamed over."""
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    proc = run_cli("pack", "-q", fixture_tars["every-type.tar"], "-o", fifo)
    reader.join(60)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    direct = tmp_path / "direct.blob"
    assert run_cli("pack", "-q", fixture_tars["every-type.tar"], "-o", direct).returncode == 0
    assert got == [direct.read_bytes()]
    null = tmp_path / "null"  # a private copy of /dev/null, so a regression cannot break the machine's
    try:
        os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        return  # not root: the FIFO case above has covered the rule
    proc = run_cli("unpack", "-q", direct, "-o", null)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISCHR(os.stat(null).st_mode)


def test_a_locked_temporary_file_is_not_stale(tmp_path):
    """A writer in another pid namespace has a pid that looks dead here: its lock keeps its file."""
    import fcntl

    from nydus_inspect.fsutil import remove_stale

    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = int(proc.stdout)  # exited: no process has this pid now (barring reuse within the test)
    locked = tmp_path / f".out.blob{TEMP_MARK}{dead}-aaaaaaaa"
    free = tmp_path / f".out.blob{TEMP_MARK}{dead}-bbbbbbbb"
    locked.write_bytes(b"x")
    free.write_bytes(b"y")
    with open(locked, "rb") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        assert remove_stale(str(tmp_path), "out.blob") == [free.name]
    assert sorted(os.listdir(tmp_path)) == [locked.name]
