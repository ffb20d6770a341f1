"""``nydus-inspect mount`` / ``umount``: real FUSE mounts of packed fixtures, merged layers and the real vectors.

Every mount here is real (root and /dev/fuse). Without FUSE these tests skip with the reason, except under
``.ci/run`` (NYDUS_REQUIRE_FUSE=1), where that is a failure. Each mount goes through the CLI as a user runs it
(daemonized, returning once the mount answers) and is unmounted in teardown, which also checks that neither
a mount nor a daemon is left behind.

The trees are checked the way the issue asks: GNU tar archives ``MOUNTPOINT/rootfs`` and
:func:`nydus_inspect.diff.describe_tar` / :func:`~nydus_inspect.diff.compare` hold it against the source
(types, modes, owners, times, sizes, symlink targets, devices, xattrs, hard-link groups, file bytes).
"""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest
from conftest import BOOTSTRAP, DATA_BLOB, REQUIRE_FUSE, TOC_BLOB, kernel_fuse_problem
from fixtures_util import make_fixtures
from merge_fixtures import layer_tars, reference_files, reference_tree

from nydus_inspect.codecs import Compressor
from nydus_inspect.diff import Tree, compare, describe, describe_tar
from nydus_inspect.layer import open_layer
from nydus_inspect.mount.daemon import find_mount, parse_size, process_gone
from nydus_inspect.pack import PackOptions, pack

ROOT = Path(__file__).resolve().parent.parent
PID_XATTR = "user.nydus.mount.pid"
ENTRY_NAMES = ("image.boot", "blob.meta", "blob.meta.header", "blob.digest", "image.blob", "rafs.blob.toc")
MIB = 1 << 20


# ---------------------------------------------------------------------------- FUSE availability
def _fuse_problem() -> str | None:
    problem = kernel_fuse_problem()
    if problem:
        return problem
    for module in ("pyfuse3", "trio"):
        try:
            __import__(module)
        except ImportError as exc:
            return f"{module} is not installed ({exc})"
    return None


@pytest.fixture(scope="session")
def fuse() -> None:
    problem = _fuse_problem()
    if problem:
        if REQUIRE_FUSE:
            pytest.fail(f"FUSE is unavailable: {problem} (NYDUS_REQUIRE_FUSE=1)")
        pytest.skip(f"FUSE is unavailable: {problem}")


# ---------------------------------------------------------------------------- running the CLI
def cli(*args, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.pop("NYDUS_INSPECT_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "nydus_inspect", *map(str, args)],
        capture_output=True,
        env=env,
        timeout=timeout,
        **kw,
    )


def one_line_error(proc: subprocess.CompletedProcess, code: int = 2) -> str:
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == code, (proc.returncode, err)
    assert err.startswith("nydus-inspect: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def mounted(mp: Path) -> bool:
    return find_mount(str(mp)) is not None


class Mounts:
    """Mounts made by one test; teardown unmounts them and checks nothing is left behind."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.active: list[tuple[Path, int]] = []
        self.n = 0

    def mount(self, *args, expect_ok: bool = True) -> Path:
        self.n += 1
        mp = self.tmp / f"mnt{self.n}"
        mp.mkdir()
        log = self.tmp / f"mnt{self.n}.log"
        proc = cli("mount", *args, mp, *(() if "--log-file" in map(str, args) else ("--log-file", log)))
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        assert proc.stdout.decode().strip() == str(mp)
        pid = int(os.getxattr(mp, PID_XATTR))
        self.active.append((mp, pid))
        if "--log-file" in map(str, args):
            return mp
        assert os.getxattr(mp, "user.nydus.mount.log") == os.fsencode(log)
        return mp

    def log(self, mp: Path) -> str:
        return (mp.parent / f"{mp.name}.log").read_text()

    def pid(self, mp: Path) -> int:
        return next(p for m, p in self.active if m == mp)

    def umount(self, mp: Path) -> None:
        pid = self.pid(mp)
        proc = cli("umount", mp, timeout=60)
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        assert not mounted(mp)
        assert process_gone(pid), f"daemon {pid} still running"
        self.active = [(m, p) for m, p in self.active if m != mp]

    def cleanup(self) -> list[str]:
        problems = []
        for mp, pid in self.active:
            if mounted(mp):
                proc = cli("umount", mp, timeout=60)
                if proc.returncode != 0:
                    problems.append(f"umount {mp}: {proc.stderr.decode(errors='replace').strip()}")
            if mounted(mp):
                subprocess.run(["fusermount3", "-u", "-z", str(mp)], capture_output=True)
                problems.append(f"{mp} was still mounted")
            deadline = time.monotonic() + 10
            while not process_gone(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not process_gone(pid):
                os.kill(pid, signal.SIGKILL)
                problems.append(f"daemon {pid} of {mp} was still running")
        self.active = []
        return problems


@pytest.fixture
def mounts(fuse, tmp_path):
    m = Mounts(tmp_path)
    yield m
    problems = m.cleanup()
    with open("/proc/self/mountinfo") as f:
        left = [line for line in f if str(tmp_path) in line]
    assert not left, f"mounts left behind: {left}"
    assert not problems, problems


# ---------------------------------------------------------------------------- layers
def _pack(tar: Path, out: Path, chunk_size: int = 0x100000, compressor: str = "zstd") -> Path:
    pack(str(tar), str(out), PackOptions(chunk_size=chunk_size, compressor=Compressor.parse(compressor)))
    return out


FIXTURES = [name for name in make_fixtures.ROUND_TRIP]


@pytest.fixture(scope="session")
def fixture_tars(tmp_path_factory) -> dict[str, Path]:
    return make_fixtures.write_all(tmp_path_factory.mktemp("mount-fixtures"))


@pytest.fixture(scope="session")
def fixture_layers(fixture_tars, tmp_path_factory) -> dict[str, Path]:
    """Each round-trip fixture packed with small chunks (so files span many), and every-type also at 1 MiB."""
    d = tmp_path_factory.mktemp("mount-layers")
    out = {name: _pack(fixture_tars[name], d / f"{name}.blob", chunk_size=0x4000) for name in FIXTURES}
    out["every-type.tar@1m"] = _pack(fixture_tars["every-type.tar"], d / "every-type-1m.blob")
    out["every-type.tar@lz4"] = _pack(
        fixture_tars["every-type.tar"], d / "every-type-lz4.blob", 0x10000, "lz4_block"
    )
    return out


def gnu_tar(src: Path, out: Path) -> Path:
    """Archive a tree as a user would, keeping every xattr (GNU tar, PAX format, numeric owners)."""
    subprocess.run(
        [
            "tar",
            "--xattrs",
            "--xattrs-include=*",
            "--numeric-owner",
            "--format=posix",
            "-C",
            str(src),
            "-cf",
            str(out),
            ".",
        ],
        check=True,
        capture_output=True,
    )
    return out


def assert_same(expected: Tree, found: Tree, what: str, rootfs: Path | None = None) -> None:
    """No differences; GNU tar records hard links of regular files only, so for a hard-linked symlink, fifo or
    device the mount (``rootfs``) must show every name of the group as one inode instead."""
    diffs = []
    for d in compare(expected, found):
        if (
            d.field == "hardlinks"
            and rootfs is not None
            and expected.entries[d.path].type != "file"
            and not d.found
        ):
            inos = {os.lstat(rootfs / os.fsdecode(p).lstrip("/")).st_ino for p in d.expected}
            if len(inos) == 1:
                continue
        diffs.append(str(d))
    assert not diffs, f"{what}: {len(diffs)} difference(s):\n" + "\n".join(diffs[:40])


# ---------------------------------------------------------------------------- the trees
@pytest.mark.parametrize("name", [*FIXTURES, "every-type.tar@1m", "every-type.tar@lz4"])
def test_rootfs_matches_source(name, mounts, fixture_tars, fixture_layers, tmp_path):
    # A layer's whiteouts are hidden unless asked for (test_single_layer_whiteouts_as_merge_applies_them):
    # applied, the tree is the source tar's without them; shown raw, it is the source tar's.
    source = fixture_tars[name.split("@")[0]]
    want = describe_tar(str(source))
    whiteouts = [p for p in want.entries if p.rsplit(b"/", 1)[-1].startswith(b".wh.")]
    if whiteouts:
        raw = mounts.mount(fixture_layers[name], "--raw-whiteouts")
        got = describe_tar(str(gnu_tar(raw / "rootfs", tmp_path / "raw.tar")))
        assert_same(want, got, name + " (--raw-whiteouts)", raw / "rootfs")
        for p in whiteouts:
            del want.entries[p]
    mp = mounts.mount(fixture_layers[name])
    got = describe_tar(str(gnu_tar(mp / "rootfs", tmp_path / "out.tar")))
    assert_same(want, got, name, mp / "rootfs")


def test_rootfs_real_blob(mounts, vectors, tmp_path):
    layer = vectors / TOC_BLOB
    mp = mounts.mount(layer)
    assert_same(
        describe(str(layer)), describe_tar(str(gnu_tar(mp / "rootfs", tmp_path / "o.tar"))), "2fa78cad"
    )
    with open_layer(str(layer)) as lay:
        for node in lay.rafs.walk():
            st = os.lstat(mp / "rootfs" / node.path.decode().lstrip("/"))
            assert st.st_ino == node.nid  # stable inode numbers: the RAFS nid
            if node.type == "file":
                want = b"".join(lay.read_file(node))
                assert (mp / "rootfs" / node.path.decode().lstrip("/")).read_bytes() == want


def test_rootfs_bootstrap_with_blob_dir(mounts, vectors, tmp_path):
    boot = vectors / BOOTSTRAP
    mp = mounts.mount(boot, "--blob-dir", vectors / "nydus/blobs")
    want = describe(str(boot), blob_dir=str(vectors / "nydus/blobs"))
    assert_same(want, describe_tar(str(gnu_tar(mp / "rootfs", tmp_path / "o.tar"))), "rafs-v6-2.2.boot")
    # entries/ shows the bootstrap (sidecars only: it has no ToC) and the data blob it reads from.
    assert sorted(os.listdir(mp / "entries")) == sorted([boot.name, Path(DATA_BLOB).name])
    assert sorted(os.listdir(mp / "entries" / boot.name)) == ["chunks.json", "superblock.json"]
    # The data blob given as a layer argument instead of --blob-dir serves the same chunks.
    mp2 = mounts.mount(boot, vectors / DATA_BLOB)
    assert_same(
        want, describe_tar(str(gnu_tar(mp2 / "rootfs", tmp_path / "o2.tar"))), "bootstrap + blob argument"
    )


@pytest.fixture(scope="module")
def merged_layers(tmp_path_factory):
    d = tmp_path_factory.mktemp("merged")
    tars = layer_tars()
    blobs = []
    for i, raw in enumerate(tars):
        (d / f"l{i}.tar").write_bytes(raw)
        blobs.append(_pack(d / f"l{i}.tar", d / f"l{i}.blob", chunk_size=0x10000))
    return tars, blobs, d


def test_rootfs_merged_layers(mounts, merged_layers, tmp_path):
    """Several layers: one merged tree with OCI whiteouts, as a runtime would apply the tars."""
    tars, blobs, _ = merged_layers
    mp = mounts.mount(*blobs)
    got = describe_tar(str(gnu_tar(mp / "rootfs", tmp_path / "o.tar")))
    want = reference_tree(tars)
    want.explicit_root = False  # the reference applier invents the root's attributes
    assert_same(want, got, "3 layers mounted together", mp / "rootfs")
    for path, data in reference_files(tars).items():
        assert (mp / "rootfs" / path.lstrip("/")).read_bytes() == data, path


def test_rootfs_merged_bootstrap(mounts, merged_layers, tmp_path):
    """The merge command's bootstrap with its blobs in --blob-dir mounts to the same tree."""
    tars, blobs, d = merged_layers
    blob_dir = tmp_path / "blobs"
    blob_dir.mkdir()
    for b in blobs:  # merge names each layer's blob by the layer's sha256
        (blob_dir / hashlib.sha256(b.read_bytes()).hexdigest()).symlink_to(b)
    proc = cli("merge", *blobs, "-o", tmp_path / "merged.boot")
    assert proc.returncode == 0, proc.stderr.decode()
    mp = mounts.mount(tmp_path / "merged.boot", "--blob-dir", blob_dir)
    got = describe_tar(str(gnu_tar(mp / "rootfs", tmp_path / "o.tar")))
    want = reference_tree(tars)
    want.explicit_root = False
    assert_same(want, got, "merged bootstrap", mp / "rootfs")


def _names(top: Path) -> list[str]:
    out = []
    for d, dirs, files in os.walk(top):
        out += [os.path.relpath(os.path.join(d, n), top) for n in dirs + files]
    return sorted(out)


def test_single_layer_whiteouts_as_merge_applies_them(mounts, tmp_path):
    """One layer holding whiteouts shows the tree merge makes of it alone: whiteouts act on lower layers only,
    so they are hidden, and what they name in the same layer stays; --raw-whiteouts shows them as stored."""
    tar = tmp_path / "upper.tar"
    with tarfile.open(tar, "w") as tf:
        for name, kind in (
            ("keep", tarfile.REGTYPE),
            (".wh.keep", tarfile.REGTYPE),  # names a file of this very layer: it stays
            (".wh.gone", tarfile.REGTYPE),
            ("dir", tarfile.DIRTYPE),
            ("dir/.wh..wh..opq", tarfile.REGTYPE),
            ("dir/inner", tarfile.REGTYPE),
            ("dir/sub", tarfile.DIRTYPE),
            ("dir/sub/.wh.x", tarfile.REGTYPE),
        ):
            info = tarfile.TarInfo(name)
            info.type = kind
            tf.addfile(info)
    layer = _pack(tar, tmp_path / "upper.blob")
    applied = ["dir", "dir/inner", "dir/sub", "keep"]
    mp = mounts.mount(layer)
    assert _names(mp / "rootfs") == applied
    assert not os.path.lexists(mp / "rootfs/.wh.gone")
    raw = mounts.mount(layer, "--raw-whiteouts")
    assert _names(raw / "rootfs") == sorted(
        applied + [".wh.keep", ".wh.gone", "dir/.wh..wh..opq", "dir/sub/.wh.x"]
    )
    # The same as the merge of that layer alone.
    blob_dir = tmp_path / "blobs"
    blob_dir.mkdir()
    (blob_dir / hashlib.sha256(layer.read_bytes()).hexdigest()).symlink_to(layer)
    proc = cli("merge", layer, "-o", tmp_path / "merged.boot")
    assert proc.returncode == 0, proc.stderr.decode()
    merged = mounts.mount(tmp_path / "merged.boot", "--blob-dir", blob_dir)
    assert _names(merged / "rootfs") == applied


def _oci_layout(root: Path, tars: list[bytes]) -> Path:
    """A minimal OCI image layout (plain tar layers) for ``convert`` to turn into a nydus image."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')

    def put(data: bytes, media_type: str) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

    layers = [put(t, "application/vnd.oci.image.layer.v1.tar") for t in tars]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(t).hexdigest()}" for t in tars]},
    }
    cfg = put(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": cfg,
        "layers": layers,
    }
    desc = put(json.dumps(manifest).encode(), manifest["mediaType"])
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [desc]}))
    return root


def test_rootfs_oci_layout(mounts, tmp_path):
    """The OCI image layout of a converted nydus image mounts as the applied image."""
    tars = layer_tars()
    proc = cli("convert", _oci_layout(tmp_path / "oci", tars), tmp_path / "nydus")
    assert proc.returncode == 0, proc.stderr.decode()
    mp = mounts.mount(tmp_path / "nydus")
    want = reference_tree(tars)
    want.explicit_root = False
    assert_same(
        want, describe_tar(str(gnu_tar(mp / "rootfs", tmp_path / "o.tar"))), "OCI layout", mp / "rootfs"
    )
    assert len(os.listdir(mp / "entries")) == 1 + len(tars)  # the bootstrap layer, then each layer's blob


def test_attributes_inodes_and_links(mounts, fixture_layers):
    mp = mounts.mount(fixture_layers["every-type.tar"])
    r = mp / "rootfs"
    one, two, three = (os.lstat(r / p) for p in ("hard/one", "hard/two", "links/three"))
    assert one.st_ino == two.st_ino == three.st_ino and one.st_nlink == 3
    assert os.lstat(r / "hard/big").st_ino == os.lstat(r / "data/two-and-a-half-m.bin").st_ino
    assert os.readlink(r / "links/relative") == "../data/small.txt"
    assert os.readlink(r / "links/long-target").count("/") == 30
    st = os.lstat(r / "dev/tty4095")
    assert os.major(st.st_rdev) == 4095 and os.minor(st.st_rdev) == 1048575
    assert os.lstat(r / "dev/fifo").st_mode & 0o170000 == 0o010000
    assert os.lstat(r / "bin/all-bits").st_mode & 0o7777 == 0o7777
    assert os.lstat(r / "shared/big-ids").st_uid == 3_000_000
    assert os.lstat(r / "times/far-future").st_mtime == 10_400_000_000
    assert os.getxattr(r / "attrs/file", "user.mime_type") == b"text/plain"
    assert os.getxattr(r / "attrs/link", "trusted.link-note", follow_symlinks=False) == b"on a symlink"
    with pytest.raises(OSError) as exc:
        os.getxattr(r / "data/small.txt", "user.nope")
    assert exc.value.errno == errno.ENODATA  # this image has xattrs: a missing one is ENODATA
    # Inode numbers survive a remount.
    inos = {p: os.lstat(r / p).st_ino for p in ("data", "data/small.txt", "hard/two", "links/to-dir")}
    mp2 = mounts.mount(fixture_layers["every-type.tar"])
    assert {p: os.lstat(mp2 / "rootfs" / p).st_ino for p in inos} == inos
    assert os.lstat(mp).st_ino == 1
    assert {e.name for e in os.scandir(mp)} == {"entries", "rootfs"}
    assert sorted(os.listdir(r / "data"))[:3] == ["empty", "exact-1m.txt", "exact-4k.bin"]


def test_inodes_claiming_one_i_ino_stay_two(mounts, tmp_path):
    """Two inodes that claim the same i_ino (and two links each) are two files, as nydusd shows them: a name
    never gets the type, target or bytes of another inode."""
    import hostile

    boot = hostile.bootstrap(
        {b"/file": {"type": "file", "mtime": 1}, b"/link": {"type": "symlink", "target": b"file", "mtime": 1}}
    )
    for path in (b"/file", b"/link"):
        boot = hostile.patched(boot, path, i_ino=7, i_nlink=2)
    (tmp_path / "same-ino.boot").write_bytes(boot)
    mp = mounts.mount(tmp_path / "same-ino.boot")
    r = mp / "rootfs"
    for _ in range(2):  # in either order of first use
        assert stat.S_ISLNK(os.lstat(r / "link").st_mode) and os.readlink(r / "link") == "file"
        assert stat.S_ISREG(os.lstat(r / "file").st_mode) and (r / "file").read_bytes() == b""
    assert os.lstat(r / "link").st_ino != os.lstat(r / "file").st_ino
    assert sorted(os.listdir(r)) == ["file", "link"]


def test_a_file_the_reader_refuses_does_not_open(mounts, tmp_path):
    """An empty file whose xattr area runs past the bootstrap: cat refuses it, and the mount does not serve it
    either (EIO on open), while the rest of the mount reads."""
    import hostile

    boot = hostile.bootstrap({b"/bad": {"type": "file", "mtime": 1}, b"/ok": {"type": "file"}})
    path = tmp_path / "xattrs-past-the-end.boot"
    path.write_bytes(hostile.patched(boot, b"/bad", i_xattr_icount=0xFFFF))
    one_line_error(cli("cat", path, "/bad"))
    mp = mounts.mount(path)
    assert os.lstat(mp / "rootfs/bad").st_size == 0
    assert _errno_of(lambda: (mp / "rootfs/bad").read_bytes()) == errno.EIO
    assert (mp / "rootfs/ok").read_bytes() == b""


def test_image_without_xattrs_says_enotsup(mounts, tmp_path):
    tar = tmp_path / "plain.tar"
    with tarfile.open(tar, "w") as tf:
        info = tarfile.TarInfo("f")
        info.size = 3
        tf.addfile(info, __import__("io").BytesIO(b"abc"))
    mp = mounts.mount(_pack(tar, tmp_path / "plain.blob"))
    with pytest.raises(OSError) as exc:
        os.getxattr(mp / "rootfs/f", "security.selinux")
    assert exc.value.errno == errno.ENOTSUP
    assert os.listxattr(mp / "rootfs/f") == []
    assert (mp / "rootfs/f").read_bytes() == b"abc"


# ---------------------------------------------------------------------------- values no kernel takes
MAX_OFF = (1 << 63) - 1
#: What each kernel-limits case (tests/hostile.py) does to its inode ``bad``: "eio" (stat is EIO, listed all the
#: same), "mtime" (shown as the largest time), "unlisted" (a name no kernel looks up), "readlink" (EIO on
#: readlink), "read" (stat answers, reading is EIO), "fine" (served as it is), "statfs" (a superblock count).
KERNEL_LIMITS = {
    "size-2^63": "eio",
    "size-2^64-1": "eio",
    "dir-size-2^64-1": "eio",
    "symlink-size-2^63": "eio",
    "unknown-type": "eio",
    "type-bits-all-set": "eio",
    "mtime-2^63": "mtime",
    "mtime-max-nsec": "mtime",
    "dir-mtime-2^64-1": "mtime",
    "size-without-chunks": "read",
    "name-300-bytes": "unlisted",
    "name-1100-bytes": "unlisted",
    "symlink-target-5000-bytes": "readlink",
    "ids-and-nlink-max": "fine",
    "build-time-2^64-1": "fine",
    "inos-2^64-1": "statfs",
    "name-twice": "twice",
}


def _errno_of(fn, *args) -> int:
    try:
        fn(*args)
    except OSError as exc:
        return exc.errno
    return 0


def test_kernel_limits_cases_are_all_expected():
    import hostile

    assert {c.name for c in hostile.kernel_limits()} == set(KERNEL_LIMITS)


@pytest.mark.parametrize("name", sorted(KERNEL_LIMITS))
def test_values_no_kernel_takes(name, mounts, tmp_path):
    """A value the kernel cannot take (a size or time past 2^63, no file type) is EIO or clamped for that inode,
    said once in the log; ls -l, stat, df and reads of everything else go on, and the daemon stays."""
    import hostile

    case = next(c for c in hostile.kernel_limits() if c.name == name)
    boot = tmp_path / f"{name}.boot"
    case.write(boot)
    mp = mounts.mount(boot)
    r = mp / "rootfs"
    want = KERNEL_LIMITS[name]
    ls = subprocess.run(["ls", "-lR", str(r)], capture_output=True, text=True, timeout=60)
    assert "connection" not in ls.stderr and "not connected" not in ls.stderr, ls.stderr
    listed = sorted(os.listdir(r))
    for _ in range(3):  # asked again and again, said once
        if want == "eio":
            assert "bad" in listed
            assert _errno_of(os.lstat, r / "bad") == errno.EIO
            assert ls.returncode == 1 and "bad': Input/output error" in ls.stderr, ls.stderr
        elif want == "mtime":
            assert os.lstat(r / "bad").st_mtime_ns == MAX_OFF * 1_000_000_000 + 999_999_999
            assert ls.returncode == 0, ls.stderr
        elif want == "read":
            assert os.lstat(r / "bad").st_size == MAX_OFF
            assert _errno_of(lambda: (r / "bad").read_bytes()) == errno.EIO
        elif want == "unlisted":
            assert listed == ["dir", "ok"] and ls.returncode == 0, ls.stderr
        elif want == "readlink":
            assert _errno_of(os.readlink, r / "bad") == errno.EIO
        elif want == "fine":
            st = os.lstat(r / "bad")
            assert ls.returncode == 0, ls.stderr
            if name == "ids-and-nlink-max":
                # uid 2^32-1 is (uid_t)-1, which the kernel shows as the overflow uid.
                assert st.st_nlink == 2**32 - 1 and st.st_uid in (2**32 - 1, 65534)
        elif want == "twice":  # listed once, as the first (a path lookup's) inode
            assert listed == ["dir", "ok", "twice"] and ls.returncode == 0, ls.stderr
            assert stat.S_ISREG(os.lstat(r / "twice").st_mode)
        elif want == "statfs":
            sv = os.statvfs(mp)
            assert 0 < sv.f_files <= boot.stat().st_size + 64
            df = subprocess.run(["df", "-i", str(mp)], capture_output=True, text=True, timeout=60)
            assert df.returncode == 0, df.stderr
    # The rest of the mount works, and the daemon is the one that was started.
    assert {"dir", "ok"} <= set(listed)
    assert (r / "ok").read_bytes() == b"" and (r / "dir/inner").read_bytes() == b""
    assert os.statvfs(mp).f_blocks >= 0
    subprocess.run(["df", str(mp)], check=True, capture_output=True, timeout=60)
    assert int(os.getxattr(mp, PID_XATTR)) == mounts.pid(mp)
    errors = [ln for ln in mounts.log(mp).splitlines() if "ERROR" in ln]
    if want in ("fine", "statfs"):
        assert errors == []
    else:
        assert len(errors) == 1, errors
        assert "internal error" not in errors[0] and (
            "bad" in errors[0] or "nid" in errors[0] or "name" in errors[0]
        )


def test_an_unforeseen_error_in_a_handler_is_eio(fixture_layers, caplog):
    """No FUSE: whatever a handler raises becomes EIO for that request and one log line (pyfuse3 would end the
    mount on it), and the next request is answered."""
    import pyfuse3
    import trio

    from nydus_inspect.mount.fs import NydusFS
    from nydus_inspect.mount.sources import open_sources

    sources = open_sources([str(fixture_layers["every-type.tar"])])
    try:
        fs = NydusFS(sources)
        root = fs.root_nid
        real = fs.rafs.attrs

        def broken(nid):
            raise ValueError("a bug")

        async def ask():
            fs.rafs.attrs = broken
            for _ in range(2):
                with pytest.raises(pyfuse3.FUSEError) as exc:
                    await fs.getattr(root)
                assert exc.value.errno == errno.EIO
            fs.rafs.attrs = real
            return await fs.getattr(root)

        with caplog.at_level("ERROR", logger="nydus_inspect.mount"):
            assert trio.run(ask).st_ino == root
        lines = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert len(lines) == 1 and "getattr: internal error: ValueError: a bug" in lines[0], lines
    finally:
        sources.close()


# ---------------------------------------------------------------------------- entries/
def _entry_dirs(mp: Path) -> list[Path]:
    return sorted((mp / "entries").iterdir())


@pytest.mark.parametrize("which", ["fixture", "toc-blob", "data-blob"])
def test_entries_match_entry_command(which, mounts, fixture_layers, request):
    if which == "fixture":
        layer = fixture_layers["every-type.tar"]
        mp = mounts.mount(layer)
    else:
        vectors = request.getfixturevalue("vectors")
        if which == "toc-blob":
            layer = vectors / TOC_BLOB
            mp = mounts.mount(layer)
        else:
            layer = vectors / DATA_BLOB
            mp = mounts.mount(vectors / BOOTSTRAP, "--blob-dir", vectors / "nydus/blobs")
    d = mp / "entries" / layer.name
    toc = json.loads(cli("toc", layer, "--json").stdout)
    names = [e["name"] for e in toc["entries"]]
    if toc["toc_digest"]:
        names.append("rafs.blob.toc")
    assert names and set(names) <= set(ENTRY_NAMES)
    for name in names:
        want = cli("entry", layer, name).stdout
        assert (d / name).read_bytes() == want, name
        assert os.stat(d / name).st_size == len(want)
        raw = cli("entry", layer, name, "--raw").stdout
        assert (d / "raw" / name).read_bytes() == raw, name
        for path, content in ((d / name, want), (d / "raw" / name, raw)):
            assert os.getxattr(path, "user.nydus.sha256").decode() == hashlib.sha256(content).hexdigest()
            xs = set(os.listxattr(path))
            assert {
                "user.nydus.compressor",
                "user.nydus.compressed_offset",
                "user.nydus.compressed_size",
            } <= xs
        ent = next((e for e in toc["entries"] if e["name"] == name), None)
        if ent is not None:
            assert os.getxattr(d / name, "user.nydus.compressor").decode() == ent["compressor"]
            assert int(os.getxattr(d / name, "user.nydus.compressed_offset")) == ent["compressed_offset"]
            assert int(os.getxattr(d / name, "user.nydus.compressed_size")) == ent["compressed_size"]
            assert os.getxattr(d / name, "user.nydus.toc_sha256").decode() == ent["sha256"]
    # The sidecars say what the inspect commands say.
    assert json.loads((d / "toc.json").read_bytes()) == toc
    assert json.loads((d / "chunks.json").read_bytes()) == json.loads(cli("chunks", layer, "--json").stdout)
    info = json.loads(cli("info", layer, "--json").stdout)
    assert json.loads((d / "blob.meta.header.json").read_bytes()) == info["blob_meta"]
    if "bootstrap" in info:
        assert json.loads((d / "superblock.json").read_bytes()) == info["bootstrap"]
    else:
        assert not (d / "superblock.json").exists()


def test_entries_named_as_no_file_is(mounts, fixture_layers, tmp_path):
    """A ToC may name an entry with no bytes, a slash or a NUL: entries/ shows it %-escaped (a listing with such
    a name is EIO in the kernel), with its bytes."""
    src = fixture_layers["every-type.tar"]
    data = bytearray(src.read_bytes())
    for old, new in ((b"blob.digest", b""), (b"blob.meta", b"a/b\0c")):
        i = data.rfind(old.ljust(16, b"\0"))
        data[i : i + 16] = new.ljust(16, b"\0")
    layer = tmp_path / "renamed.blob"
    layer.write_bytes(data)
    mp = mounts.mount(layer)
    (d,) = _entry_dirs(mp)
    names = set(os.listdir(d))
    assert {"%", "a%2Fb", "raw", "image.boot", "toc.json"} <= names, names
    with open_layer(str(src)) as orig:
        assert (d / "%").read_bytes() == orig.entry("blob.digest")
        assert (d / "a%2Fb").read_bytes() == orig.entry("blob.meta")
    assert {"%", "a%2Fb"} <= set(os.listdir(d / "raw"))


def test_entries_of_a_blob_without_toc(mounts, fixture_layers, fixture_tars, tmp_path):
    """An old-style blob found by its tar headers only: entries/ lists its sections, rootfs/ still reads."""
    with open_layer(str(fixture_layers["dedup.tar"])) as lay:
        cut = len(lay.toc_bytes) + 512
    layer = tmp_path / "no-toc.blob"
    layer.write_bytes(fixture_layers["dedup.tar"].read_bytes()[:-cut])
    mp = mounts.mount(layer)
    d = mp / "entries" / layer.name
    for name in ("image.blob", "blob.meta", "blob.meta.header", "blob.digest", "image.boot"):
        assert (d / name).read_bytes() == cli("entry", layer, name).stdout, name
        assert (d / "raw" / name).read_bytes() == cli("entry", layer, name, "--raw").stdout, name
    assert not (d / "rafs.blob.toc").exists()
    assert json.loads((d / "toc.json").read_bytes())["source"] == "tar-headers"
    got = describe_tar(str(gnu_tar(mp / "rootfs", tmp_path / "o.tar")))
    assert_same(describe_tar(str(fixture_tars["dedup.tar"])), got, "no-ToC blob")


@pytest.mark.skipif(not shutil.which("getfattr"), reason="getfattr (Debian attr) is not installed")
def test_entries_xattrs_with_getfattr(mounts, vectors):
    mp = mounts.mount(vectors / TOC_BLOB)
    path = mp / "entries" / Path(TOC_BLOB).name / "image.boot"
    out = subprocess.run(
        ["getfattr", "-d", "-m", "user.nydus", "--absolute-names", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert 'user.nydus.compressor="zstd"' in out
    assert 'user.nydus.sha256="d85f1b77aab4' in out  # the vector's README fact
    assert 'user.nydus.uncompressed_size="20480"' in out


@pytest.fixture(scope="session")
def many_chunks(tmp_path_factory) -> tuple[Path, bytes]:
    """A layer of 2,000 distinct 4 KiB chunks, and its ``chunks --json``: several hundred KB, so that reading
    it takes several FUSE read requests."""
    d = tmp_path_factory.mktemp("many-chunks")
    tar = d / "blocks.tar"
    with tarfile.open(tar, "w", format=tarfile.GNU_FORMAT) as tf:
        data = b"".join(i.to_bytes(8, "little") + bytes(4088) for i in range(2000))
        info = tarfile.TarInfo("blocks")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    layer = _pack(tar, d / "blocks.blob", chunk_size=0x1000)
    want = cli("chunks", "--json", layer).stdout
    assert len(want) > 256 << 10
    return layer, want


def _in_threads(reader, n: int) -> None:
    """``reader(0)`` to ``reader(n - 1)``, each in a thread of its own, all at once."""
    threads = [threading.Thread(target=reader, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)


def _tmp_files(pid: int, tmpdir: Path) -> set[str]:
    """The files in ``tmpdir`` the daemon has open (made entries/ content is an unlinked file there)."""
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(f"{tmpdir}/"):
            out.add(target)
    return out


def test_listing_entries_does_not_make_chunks_json(mounts, many_chunks, tmp_path, monkeypatch):
    """Listing and stat'ing entries/ (a lookup, os.walk with lstat, ls -lR, find, listxattr) does not make
    chunks.json, whose size is known only once it is made: it shows size 0 until read (no temporary file
    appears in the daemon's TMPDIR). Several readers at offsets at once then make it once and get the CLI's
    bytes; after that it shows its size and reads whole through the page cache too."""
    layer, want = many_chunks
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    mp = mounts.mount(layer)
    pid = mounts.pid(mp)
    before = _tmp_files(pid, tmpdir)
    path = mp / "entries" / layer.name / "chunks.json"
    looked_up = os.lstat(path)  # a lookup, before anything is listed
    assert _tmp_files(pid, tmpdir) == before, "chunks.json was made for a lookup"
    seen = 0
    for top, dirs, files in os.walk(mp / "entries"):
        for name in dirs + files:
            os.lstat(os.path.join(top, name))
            seen += 1
    assert seen > 10
    for argv in (["ls", "-lR", str(mp / "entries")], ["find", str(mp / "entries"), "-size", "+0"]):
        subprocess.run(argv, check=True, capture_output=True)
    assert "user.nydus.sha256" in os.listxattr(path)
    assert _tmp_files(pid, tmpdir) == before, "chunks.json was made to list entries/"
    assert looked_up.st_size == 0 and os.stat(path).st_size == 0

    errors: list[str] = []

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        with open(path, "rb", buffering=0) as f:
            for _ in range(50):
                off = rng.randrange(0, len(want) + 100)
                size = rng.choice([1, 4096, 100_000, 131072 + 7, 1 << 20])
                if os.pread(f.fileno(), size, off) != want[off : off + size]:
                    errors.append(f"[{off}:+{size}] differs")

    _in_threads(reader, 4)
    assert not errors, errors[:10]
    assert len(_tmp_files(pid, tmpdir) - before) == 1  # made once
    assert os.stat(path).st_size == len(want)
    assert path.read_bytes() == want
    with open(path, "rb") as f:
        assert f.read() == want and f.read() == b""
    assert os.getxattr(path, "user.nydus.sha256").decode() == hashlib.sha256(want).hexdigest()


@pytest.mark.parametrize("tool", ["cat", "cp", "sha256sum", "python", "json.load"])
def test_chunks_json_reads_whole_before_it_is_made(tool, mounts, many_chunks, tmp_path):
    """chunks.json shows size 0 until made: a reader that trusts the size it is shown and reads to the end (as
    each of these does) still gets every byte the CLI prints."""
    layer, want = many_chunks
    mp = mounts.mount(layer)
    path = mp / "entries" / layer.name / "chunks.json"
    assert os.stat(path).st_size == 0
    if tool == "cat":
        assert subprocess.run(["cat", str(path)], check=True, capture_output=True).stdout == want
    elif tool == "cp":
        subprocess.run(["cp", str(path), str(tmp_path / "copy")], check=True)
        assert (tmp_path / "copy").read_bytes() == want
    elif tool == "sha256sum":
        out = subprocess.run(["sha256sum", str(path)], check=True, capture_output=True, text=True).stdout
        assert out.split()[0] == hashlib.sha256(want).hexdigest()
    elif tool == "python":
        with open(path, "rb") as f:
            assert f.read() == want
    else:
        with open(path) as f:
            assert json.load(f) == json.loads(want)
    assert os.stat(path).st_size == len(want)


# ---------------------------------------------------------------------------- reading
def test_concurrent_random_reads(mounts, fixture_tars, fixture_layers):
    """8 readers, random ranges (crossing chunk boundaries, past EOF), all get the source's bytes."""
    want = {}
    with tarfile.open(fixture_tars["every-type.tar"]) as tf:
        for m in tf.getmembers():
            if m.isreg() and m.size:
                want[m.name.removeprefix("./")] = tf.extractfile(m).read()
    for layer_name in ("every-type.tar", "every-type.tar@1m"):
        mp = mounts.mount(fixture_layers[layer_name], "--cache-size", "256K")  # a small cache: evictions too
        names = sorted(want)
        errors: list[str] = []

        def reader(seed: int, mp=mp, names=names, errors=errors) -> None:
            rng = random.Random(seed)
            for _ in range(300):
                name = rng.choice(names)
                data = want[name]
                off = rng.randrange(0, len(data) + 100)
                size = rng.choice([1, 100, 4095, 4096, 0x4000 + 1, 131072, 1 << 20, 3 << 20])
                fd = os.open(mp / "rootfs" / name, os.O_RDONLY)
                try:
                    got = os.pread(fd, size, off)
                finally:
                    os.close(fd)
                if got != data[off : off + size]:
                    errors.append(f"{name} [{off}:+{size}] differs")

        _in_threads(reader, 8)
        assert not errors, errors[:10]
        # And whole files, read through the page cache.
        for name, data in want.items():
            assert (mp / "rootfs" / name).read_bytes() == data, name


def test_eof_and_zero_length_reads(mounts, fixture_layers):
    mp = mounts.mount(fixture_layers["every-type.tar"])
    r = mp / "rootfs"
    fd = os.open(r / "data/two-and-a-half-m.bin", os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        assert os.pread(fd, 0, 0) == b""
        assert os.pread(fd, 0, size) == b""
        assert os.pread(fd, 10, size) == b""
        assert os.pread(fd, 10, size + 12345) == b""
        assert len(os.pread(fd, 100, size - 7)) == 7
        assert os.read(fd, 0) == b""
    finally:
        os.close(fd)
    assert (r / "data/empty").read_bytes() == b""
    fd = os.open(r / "data/empty", os.O_RDONLY)
    try:
        assert os.pread(fd, 4096, 0) == b""
    finally:
        os.close(fd)
    e = next(iter(_entry_dirs(mp)))
    fd = os.open(e / "image.boot", os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        assert (
            os.pread(fd, 0, 0) == b""
            and os.pread(fd, 10, size) == b""
            and len(os.pread(fd, 10, size - 3)) == 3
        )
    finally:
        os.close(fd)


def test_writes_fail_with_erofs(mounts, fixture_layers):
    mp = mounts.mount(fixture_layers["every-type.tar"])
    r = mp / "rootfs"
    e = _entry_dirs(mp)[0]
    attempts = [
        lambda: os.open(r / "data/small.txt", os.O_WRONLY),
        lambda: os.open(r / "data/small.txt", os.O_RDWR),
        lambda: os.open(r / "new", os.O_CREAT | os.O_WRONLY, 0o644),
        lambda: os.mkdir(r / "newdir"),
        lambda: os.unlink(r / "data/small.txt"),
        lambda: os.rmdir(r / "tmp"),
        lambda: os.rename(r / "data/small.txt", r / "data/moved"),
        lambda: os.symlink("x", r / "sym"),
        lambda: os.link(r / "data/small.txt", r / "hl"),
        lambda: os.chmod(r / "data/small.txt", 0o600),
        lambda: os.chown(r / "data/small.txt", 1, 1),
        lambda: os.utime(r / "data/small.txt", (0, 0)),
        lambda: os.truncate(r / "data/small.txt", 0),
        lambda: os.setxattr(r / "data/small.txt", "user.x", b"1"),
        lambda: os.removexattr(r / "attrs/file", "user.mime_type"),
        lambda: os.open(e / "image.boot", os.O_WRONLY),
        lambda: os.mkdir(mp / "entries" / "x"),
    ]
    for i, attempt in enumerate(attempts):
        with pytest.raises(OSError) as exc:
            attempt()
        assert exc.value.errno == errno.EROFS, (i, exc.value)


def _corrupt_layer(tmp_path: Path) -> tuple[Path, str, int]:
    """A layer whose file big.bin has a damaged second chunk: (layer, path, chunk offset in the file)."""
    tar = tmp_path / "c.tar"
    data = hashlib.shake_256(b"corrupt me").digest(3 * 0x10000)
    with tarfile.open(tar, "w") as tf:
        for name, body in (("ok.txt", b"fine\n"), ("big.bin", data)):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tf.addfile(info, __import__("io").BytesIO(body))
    layer = _pack(tar, tmp_path / "c.blob", chunk_size=0x10000)
    with open_layer(str(layer)) as lay:
        node = lay.rafs.lookup("/big.bin")
        c = lay.rafs.chunks(node)[1]
        where = c.compressed_offset + c.compressed_size // 2
    raw = bytearray(layer.read_bytes())
    raw[where] ^= 0xFF
    layer.write_bytes(raw)
    return layer, "rootfs/big.bin", 0x10000


def test_bad_chunk_is_eio_and_one_log_line(mounts, tmp_path):
    layer, path, offset = _corrupt_layer(tmp_path)
    mp = mounts.mount(layer)
    assert (mp / "rootfs/ok.txt").read_bytes() == b"fine\n"
    fd = os.open(mp / path, os.O_RDONLY)
    try:
        assert len(os.pread(fd, 100, 0)) == 100  # chunk 0 is fine
        with pytest.raises(OSError) as exc:
            os.pread(fd, 100, offset + 10)
        assert exc.value.errno == errno.EIO
    finally:
        os.close(fd)
    log = mounts.log(mp)
    lines = [ln for ln in log.splitlines() if "EIO" in ln]
    assert lines, log
    assert path in lines[0] and "chunk 1" in lines[0] and f"file offset {offset}" in lines[0], lines[0]
    assert "compressed offset" in lines[0]


def _tree_with_bad_chunks(tmp_path: Path) -> tuple[Path, dict[str, bytes], set[str]]:
    """A layer read by tar in this order: small files, a big file with a damaged second chunk, a small file
    with a damaged (only) chunk, more small files and a subdirectory. (layer, {path: bytes}, damaged paths)"""
    tar = tmp_path / "t.tar"
    files = {f"a{i:02}.txt": f"small file {i}\n".encode() * (i + 1) for i in range(12)}
    files["b-big.bin"] = hashlib.shake_256(b"big").digest(4 * 0x10000)
    files["c-bad.txt"] = b"this small file gets a damaged chunk\n" * 40
    files.update({f"d{i:02}.txt": f"after {i}\n".encode() * (i + 3) for i in range(12)})
    files.update({f"e/f{i:02}.txt": f"deeper {i}\n".encode() * (i + 2) for i in range(6)})
    with tarfile.open(tar, "w") as tf:
        info = tarfile.TarInfo("e")
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        tf.addfile(info)
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tf.addfile(info, __import__("io").BytesIO(body))
    layer = _pack(tar, tmp_path / "t.blob", chunk_size=0x10000)
    raw = bytearray(layer.read_bytes())
    with open_layer(str(layer)) as lay:
        for path, k in (("/b-big.bin", 1), ("/c-bad.txt", 0)):
            c = lay.rafs.chunks(lay.rafs.lookup(path))[k]
            raw[c.compressed_offset + c.compressed_size // 2] ^= 0xFF
    layer.write_bytes(raw)
    return layer, files, {"b-big.bin", "c-bad.txt"}


def test_bad_chunks_met_by_prefetch_are_eio_for_the_reader(mounts, tmp_path):
    """tar reads the tree (a tree reader: the files after the one it opens are decoded ahead): the damaged
    chunks it meets ahead of the reader stay EIO for the reader, with one log line each; the daemon serves on."""
    layer, files, bad = _tree_with_bad_chunks(tmp_path)
    mp = mounts.mount(layer)
    proc = subprocess.run(["tar", "-cf", "-", "."], cwd=mp / "rootfs", capture_output=True)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 2, err
    assert "b-big.bin" in err and "c-bad.txt" in err and "Input/output error" in err, err
    for name, body in files.items():
        if name in bad:
            with pytest.raises(OSError) as exc:
                (mp / "rootfs" / name).read_bytes()
            assert exc.value.errno == errno.EIO
        else:
            assert (mp / "rootfs" / name).read_bytes() == body, name
    fd = os.open(mp / "rootfs/b-big.bin", os.O_RDONLY)
    try:
        assert os.pread(fd, 10, 0) == files["b-big.bin"][:10]
    finally:
        os.close(fd)  # an open file keeps the mount busy: umount would refuse
    lines = [ln for ln in mounts.log(mp).splitlines() if "EIO" in ln]
    assert len(lines) == 2, lines
    assert any("rootfs/b-big.bin: chunk 1 " in ln for ln in lines), lines
    assert any("rootfs/c-bad.txt: chunk 0 " in ln for ln in lines), lines
    assert "Traceback" not in mounts.log(mp)


def test_tree_reader_through_a_small_cache(mounts, fixture_tars, fixture_layers, tmp_path):
    """Decoding ahead of tar stays within the cache (a quarter of it) and what tar gets is still the source."""
    mp = mounts.mount(fixture_layers["every-type.tar"], "--cache-size", "128K", "--raw-whiteouts")
    got = describe_tar(str(gnu_tar(mp / "rootfs", tmp_path / "out.tar")))
    assert_same(describe_tar(str(fixture_tars["every-type.tar"])), got, "every-type", mp / "rootfs")


def test_walk_ahead_is_bounded_by_the_cache(fixture_layers):
    """No FUSE: the walk-ahead of a tree reader queues at most a quarter of the cache (plus one file) beyond
    what the reader opened, in walk order, and moves on as the reader opens files."""
    from nydus_inspect.mount.fs import NydusFS, _FileJob, _Job
    from nydus_inspect.mount.sources import open_sources

    sources = open_sources([str(fixture_layers["every-type.tar@1m"])])
    try:
        cache = 4 << 20
        fs = NydusFS(sources, cache_size=cache)
        assert fs.prefetch_ahead <= cache // 4

        def queued() -> list:
            out = []
            for item in fs.sched.pending():
                if isinstance(item, _FileJob):
                    out.append((item.nid, fs._stat(item.nid)[2]))
                else:
                    assert isinstance(item, _Job)
                    out.append((item.nid, item.chunk.uncompressed_size))
            return out

        # Every file the mount shows (whiteouts are not).
        files = [n for n in sources.image.rafs.walk() if n.type == "file" and not n.name.startswith(b".wh.")]
        biggest = max(n.size for n in files)  # the walk stops once past the window: by one file at most
        fs._start_walk(fs.root_nid, 0)
        w = fs._walker
        assert any(size for _, size in queued()), "nothing to prefetch"
        assert w.issued_bytes - w.consumed <= fs.prefetch_ahead + biggest
        assert sum(size for _, size in queued()) <= fs.prefetch_ahead + biggest
        # The reader opens the files of the walk one by one: the window moves, and stays bounded.
        opened = []
        while w.ahead:
            nid = next(iter(w.ahead))  # the next file in walk order the reader has not opened
            end = w.ahead[nid][1]
            fs._opened(nid)
            opened.append(nid)
            assert w.consumed == end and nid not in w.ahead
            assert w.issued_bytes - w.consumed <= fs.prefetch_ahead + biggest
        assert len(opened) == len(set(opened)) == len({n.nid for n in files})
    finally:
        sources.close()


def test_read_ahead_advice_past_2_63_leaves_the_workers_alive(fixture_layers, fixture_tars):
    """No FUSE: asking the kernel to read ahead stored bytes at an offset past 2^63 (a hostile chunk record)
    fails quietly; the decoding workers live on, and the next read is answered."""
    import dataclasses

    import trio

    from nydus_inspect.mount.fs import NydusFS, _Hint
    from nydus_inspect.mount.sources import open_sources

    sources = open_sources([str(fixture_layers["every-type.tar"])])
    try:
        fs = NydusFS(sources, workers=1, page_cache=False)
        node = sources.image.rafs.lookup("/data/small.txt")
        chunk = sources.image.rafs.chunks(node)[0]
        far = dataclasses.replace(chunk, compressed_offset=(1 << 63) + 5)

        async def run() -> bytes:
            fs.attach()
            try:
                fs._will_need([far, far])  # on the loop
                fs.sched.queue([_Hint([far, far])])  # in the one worker
                with trio.fail_after(30):
                    return bytes(await fs.read(node.nid, 0, 1 << 20))
            finally:
                fs.detach()

        with tarfile.open(fixture_tars["every-type.tar"]) as tf:
            want = tf.extractfile("data/small.txt").read()
        assert trio.run(run) == want
    finally:
        sources.close()


def test_tree_reader_costs_linear_work(tmp_path):
    """No FUSE: a tree reader opening every file of a tree of empty files (looked up first, as cat does) costs
    a bounded number of inode reads per file, not a walk of the rest of the tree per file."""
    import trio

    from nydus_inspect.mount.fs import NydusFS
    from nydus_inspect.mount.sources import open_sources

    tar = tmp_path / "empty.tar"
    n = 3000
    with tarfile.open(tar, "w") as tf:
        for i in range(n):
            tf.addfile(tarfile.TarInfo(f"d{i // 1000}/f{i:05d}"))
    blob = _pack(tar, tmp_path / "empty.blob")
    sources = open_sources([str(blob)])
    try:
        fs = NydusFS(sources)
        real, calls = fs._stat, [0]

        def counted(nid):
            calls[0] += 1
            return real(nid)

        fs._stat = counted

        async def read_all() -> int:
            opened = 0
            for d in ("d0", "d1", "d2"):
                dattr = await fs.lookup(fs.root_nid, d.encode())
                for i in range(n // 3):
                    name = f"f{int(d[1:]) * 1000 + i:05d}".encode()
                    attr = await fs.lookup(dattr.st_ino, name)
                    await fs.open(attr.st_ino, os.O_RDONLY)
                    opened += 1
            return opened

        assert trio.run(read_all) == n
        assert fs._walker is not None, "the tree reader was not recognised"
        assert calls[0] <= 4 * n, f"{calls[0]} inode reads for {n} files"
    finally:
        sources.close()


def test_a_lister_ahead_of_the_reader_does_not_move_its_walk(tmp_path):
    """No FUSE: ``find | xargs cat``: find lists directories while cat, behind it, opens the files of the
    ones listed earlier. The walk stays with the files opened (a few starts in all), instead of jumping to
    each directory listed and back to the reader on its next open."""
    import trio

    from nydus_inspect.mount.fs import NydusFS
    from nydus_inspect.mount.sources import open_sources

    tar = tmp_path / "dirs.tar"
    ndirs, per = 10, 200
    with tarfile.open(tar, "w") as tf:
        for d in range(ndirs):
            for i in range(per):
                ti = tarfile.TarInfo(f"d{d}/f{i:04d}")
                ti.size = 4096
                tf.addfile(ti, io.BytesIO(bytes([d, i % 256]) * 2048))
    sources = open_sources([str(_pack(tar, tmp_path / "dirs.blob"))])
    try:
        # A small cache: the walk goes a quarter of it (64 files) ahead, not into the directory find lists.
        fs = NydusFS(sources, cache_size=1 << 20)
        assert fs.prefetch_ahead < per * 4096
        starts = [0]
        real = fs._start_walk

        def counted(dnid, i):
            starts[0] += 1
            return real(dnid, i)

        fs._start_walk = counted

        async def find_and_cat() -> int:
            dirs = [(await fs.lookup(fs.root_nid, f"d{d}".encode())).st_ino for d in range(ndirs)]
            opened = 0
            for d in range(ndirs):
                for i in range(per):
                    if i % (per // 4) == 0 and d + 1 < ndirs:
                        fs._listed(dirs[d + 1])  # find, one directory ahead of cat
                    attr = await fs.lookup(dirs[d], f"f{i:04d}".encode())
                    await fs.open(attr.st_ino, os.O_RDONLY)
                    opened += 1
            return opened

        assert trio.run(find_and_cat) == ndirs * per
        assert fs._walker is not None, "the tree reader was not recognised"
        assert starts[0] <= 3, f"the walk started {starts[0]} times for one reader"
    finally:
        sources.close()


def test_streamed_file_by_chunks_and_again(mounts, fixture_tars, fixture_layers):
    """A file of many chunks: st_blksize is the chunk size, reading it start to end in st_blksize pieces gives the
    source, and so does reading it again once the kernel dropped its pages (the daemon let the chunks it served
    go, so they are decoded anew)."""
    with tarfile.open(fixture_tars["every-type.tar"]) as tf:
        want = tf.extractfile("data/two-and-a-half-m.bin").read()
    mp = mounts.mount(fixture_layers["every-type.tar"])  # 16 KiB chunks: 160 of them
    path = mp / "rootfs/data/two-and-a-half-m.bin"
    assert path.stat().st_blksize == 0x4000
    for _ in range(2):
        fd = os.open(path, os.O_RDONLY)
        try:
            got = b"".join(iter(functools.partial(os.read, fd, 0x4000), b""))
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        assert got == want


def test_close_and_release_without_flush(mounts, fixture_layers):
    """The file system has no flush (the kernel stops sending it after the first ENOSYS): closing files,
    duplicated descriptors included, still works and reads stay right."""
    mp = mounts.mount(fixture_layers["every-type.tar"])
    path = mp / "rootfs/data/small.txt"
    want = path.read_bytes()
    for _ in range(50):
        fd = os.open(path, os.O_RDONLY)
        fd2 = os.dup(fd)
        os.close(fd)
        assert os.pread(fd2, len(want) + 10, 0) == want
        os.close(fd2)
    with open(path, "rb") as f:
        assert f.read() == want


# ---------------------------------------------------------------------------- life cycle
def test_unmount_under_load(mounts, fixture_layers):
    """8 processes reading in a loop; umount returns, and no mount, daemon or reader is left."""
    mp = mounts.mount(fixture_layers["every-type.tar"], "--cache-size", "1M")
    pid = mounts.pid(mp)
    script = (
        "import os, sys, random\n"
        "root = sys.argv[1]\n"
        "files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]\n"
        "while True:\n"
        "    p = random.choice(files)\n"
        "    try:\n"
        "        with open(p, 'rb') as f: f.read()\n"
        "    except OSError:\n"
        "        pass\n"
    )
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(mp / "rootfs" / "data")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(8)
    ]
    try:
        time.sleep(1.0)
        assert all(p.poll() is None for p in readers)
        proc = cli("umount", "--lazy", mp, timeout=60)  # the readers keep it busy
        assert proc.returncode == 0, proc.stderr.decode()
        assert not mounted(mp)
        assert process_gone(pid)
    finally:
        for p in readers:
            p.kill()
            p.wait(10)
    mounts.active = [(m, p) for m, p in mounts.active if m != mp]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_daemon_unmounts_on_signal(sig, mounts, fixture_layers):
    mp = mounts.mount(fixture_layers["dedup.tar"])
    pid = mounts.pid(mp)
    os.kill(pid, sig)
    deadline = time.monotonic() + 20
    while (mounted(mp) or not process_gone(pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not mounted(mp) and process_gone(pid)
    assert "unmounted" in mounts.log(mp)
    mounts.active = []


def test_umount_after_the_daemon_died(mounts, fixture_layers):
    mp = mounts.mount(fixture_layers["dedup.tar"])
    pid = mounts.pid(mp)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not process_gone(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    with pytest.raises(OSError) as exc:
        os.listdir(mp)
    assert exc.value.errno == errno.ENOTCONN
    mounts.umount(mp)


def test_foreground_ctrl_c(fuse, fixture_layers, tmp_path):
    mp = tmp_path / "fg"
    mp.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nydus_inspect",
            "mount",
            "--foreground",
            str(fixture_layers["dedup.tar"]),
            str(mp),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout.readline().decode().strip() == str(mp)  # printed once the mount answers
        assert mounted(mp)
        assert (mp / "rootfs/copy-1").stat().st_size > 0
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, proc.stderr.read().decode()
        assert not mounted(mp)
    finally:
        if proc.poll() is None:
            proc.kill()
        if mounted(mp):
            subprocess.run(["fusermount3", "-u", "-z", str(mp)])


def test_mount_errors_are_one_line(fuse, fixture_layers, tmp_path, vectors):
    mp = tmp_path / "m"
    mp.mkdir()
    err = one_line_error(cli("mount", tmp_path / "missing.blob", mp))
    assert "missing.blob" in err
    err = one_line_error(cli("mount", tmp_path, mp))
    assert "is a directory" in err
    err = one_line_error(cli("mount", fixture_layers["dedup.tar"], tmp_path / "no-such-dir"))
    assert "mount point" in err
    err = one_line_error(cli("mount", vectors / DATA_BLOB, mp))
    assert "no bootstrap" in err
    err = one_line_error(cli("mount", vectors / BOOTSTRAP, mp, "--blob-dir", tmp_path))
    assert "not found" in err
    err = one_line_error(cli("mount", mp))
    assert "LAYER" in err
    one_line_error(cli("umount", mp))
    assert not mounted(mp) and not os.listdir(mp)


def test_default_log(fuse, fixture_layers, tmp_path):
    """Without --log-file the daemon logs to syslog or, with none, to a file it names on the mount root."""
    mp = tmp_path / "m"
    mp.mkdir()
    proc = cli("mount", fixture_layers["dedup.tar"], mp)
    assert proc.returncode == 0, proc.stderr.decode()
    try:
        where = os.getxattr(mp, "user.nydus.mount.log").decode()
        pid = int(os.getxattr(mp, PID_XATTR))
    finally:
        assert cli("umount", mp).returncode == 0
    assert process_gone(pid)
    if where != "syslog":
        log = Path(where)
        assert log.name == str(mp).strip("/").replace("/", "-") + ".log"
        text = log.read_text()
        log.unlink()
        assert f"on {mp}" in text and f"unmounted {mp}" in text


def test_mount_on_a_mount_point_and_size_parsing(mounts, fixture_layers):
    mp = mounts.mount(fixture_layers["dedup.tar"])
    err = one_line_error(cli("mount", fixture_layers["dedup.tar"], mp))
    assert "mounted there already" in err
    assert parse_size("256M") == 256 * MIB and parse_size("1G") == 1 << 30 and parse_size("4096") == 4096
    assert parse_size("64KiB") == 64 << 10
    mounts.umount(mp)


def test_generated_entry_larger_than_its_cache_is_made_once(fixture_layers):
    """No FUSE: an entries/ file made whole (the bootstrap) that is larger than the content cache, read by
    several readers at once in small pieces, as tar and cat do: every reader gets its bytes, and it is made
    once, not once per read (nor does a reader that wakes to find it uncached trip over another's job)."""
    import trio

    from nydus_inspect.mount.entries import Generated
    from nydus_inspect.mount.fs import NydusFS
    from nydus_inspect.mount.sources import open_sources

    layer = str(fixture_layers["every-type.tar"])
    sources = open_sources([layer])
    try:
        fs = NydusFS(sources)
        node = next(
            n
            for n in fs.vnodes.values()
            if n.path.endswith("/image.boot") and isinstance(n.content, Generated)
        )
        made, make = [0], node.content.make

        def counted():
            made[0] += 1
            return make()

        node.content.make = counted
        fs.content_cache.limit = 64  # smaller than the bootstrap
        with open_layer(layer) as ly:
            want = ly.entry("image.boot")

        async def reader(out: list) -> None:
            data, off = bytearray(), 0
            while True:
                piece = bytes(await fs.read(node.ino, off, 4096))
                if not piece:
                    break
                data += piece
                off += len(piece)
            out.append(bytes(data))

        async def run() -> list:
            got: list = []
            fs.attach()
            try:
                with trio.fail_after(60):
                    async with trio.open_nursery() as nursery:
                        for _ in range(3):
                            nursery.start_soon(reader, got)
            finally:
                fs.detach()
            return got

        got = trio.run(run)
        assert got == [want] * 3 and len(want) > 64
        assert made[0] == 1
    finally:
        sources.close()


def test_entries_made_into_a_temporary_file_read_as_made_whole(fixture_layers, monkeypatch):
    """No FUSE: with every made entries/ file over the size that sends it to a temporary file, each reads (by
    small pieces, several readers at once) and sums as the entry and chunks.json the CLI gives, and it is made
    once. An entry's size is known before a read; chunks.json's only once it is made (0 until then: a stat
    does not make it)."""
    import trio

    from nydus_inspect.mount import entries as entries_mod
    from nydus_inspect.mount.entries import Streamed
    from nydus_inspect.mount.fs import NydusFS
    from nydus_inspect.mount.sources import open_sources

    monkeypatch.setattr(entries_mod, "SPILL_LIMIT", 0)
    layer = str(fixture_layers["every-type.tar"])
    with open_layer(layer) as ly:
        want = {name: ly.entry(name) for name in ly.entry_names() if name != "image.blob"}
    want["chunks.json"] = cli("chunks", "--json", layer).stdout
    sources = open_sources([layer])
    try:
        fs = NydusFS(sources)
        nodes = {
            n.path.rsplit("/", 1)[1]: n
            for n in fs.vnodes.values()
            if isinstance(n.content, Streamed) and "/raw/" not in n.path
        }
        assert set(nodes) == set(want)
        made = {name: 0 for name in nodes}
        for name, node in nodes.items():
            pieces = node.content.pieces

            def counted(name=name, pieces=pieces):
                made[name] += 1
                return pieces()

            node.content.pieces = counted

        async def read(node, out: list) -> None:
            data, off = bytearray(), 0
            while piece := bytes(await fs.read(node.ino, off, 4096)):
                data += piece
                off += len(piece)
            out.append(bytes(data))

        async def run() -> dict:
            got: dict = {}
            fs.attach()
            try:
                with trio.fail_after(60):
                    for name, node in nodes.items():
                        got[name] = [(await fs.getattr(node.ino)).st_size]
                        async with trio.open_nursery() as nursery:
                            for _ in range(3):
                                nursery.start_soon(read, node, got[name])
                        got[name].append((await fs.getattr(node.ino)).st_size)
                        got[name].append(await fs.getxattr(node.ino, b"user.nydus.sha256"))
            finally:
                fs.detach()
            return got

        got = trio.run(run)
        for name, data in want.items():
            digest = hashlib.sha256(data).hexdigest().encode()
            before = 0 if name == "chunks.json" else len(data)
            assert got[name] == [before, data, data, data, len(data), digest], name
        assert made == {name: 1 for name in nodes}
    finally:
        sources.close()


def _peak_rss_mib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) >> 10


def test_a_file_of_many_chunks_is_read_without_holding_them_as_objects(mounts, tmp_path):
    """A 1 GiB file in 4 KiB chunks (262,144 records, all one deduplicated chunk): the daemon reads it from
    its start, from the middle and at its end holding its chunk records as the bootstrap has them, not as a
    list of objects (40 MiB of peak RSS against 115 as a list, measured)."""
    import hostile

    case = next(hostile.dedup_bomb(1 << 30))
    case.write(tmp_path / "bomb.tar.zst")
    layer = tmp_path / "bomb.blob"
    proc = cli("pack", "-q", "--chunk-size", "0x1000", tmp_path / "bomb.tar.zst", "-o", layer)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    mp = mounts.mount(layer, "--cache-size", "16M")
    with open(mp / "rootfs" / "bomb" / "zeros", "rb") as f:
        assert f.read(8 << 20) == bytes(8 << 20)  # from the start: the read-ahead path
        f.seek((1 << 29) + 12345)
        assert f.read(1 << 20) == bytes(1 << 20)
        f.seek((1 << 30) - 5000)
        assert f.read() == bytes(5000)
    peak = _peak_rss_mib(mounts.pid(mp))
    assert peak < 80, f"the daemon's peak RSS is {peak} MiB"
