"""Shared helpers of the pack / unpack tests: the fixture tars, an independent reading of a source tar,
comparisons of a layer, an unpacked tar or an extracted directory against it, and a CLI runner.

Test modules get the session fixture ``fixture_tars`` with
``from fixtures_util import fixture_tars_fixture  # noqa: F401``.
The expected trees here are read with tarfile directly, not through nydus_inspect.tarstream, so a
fault in our tar reader cannot hide itself on both sides of a comparison.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import os
import stat
import subprocess
import sys
import tarfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nydus_inspect.codecs import Compressor
from nydus_inspect.diff import Difference, describe
from nydus_inspect.digests import Digester
from nydus_inspect.pack import PackOptions, PackResult, pack

ROOT = Path(__file__).resolve().parent.parent
MAKE_FIXTURES = ROOT / "fixtures" / "make_fixtures.py"
VECTOR_TARS = ("all-entry-type.tar", "all-entry-type-macos.tar", "empty.tar")
COMPRESSORS = ("zstd", "lz4_block", "none")
DIGESTERS = ("blake3", "sha256")


def load_make_fixtures():
    spec = importlib.util.spec_from_file_location("make_fixtures", MAKE_FIXTURES)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


make_fixtures = load_make_fixtures()


@pytest.fixture(scope="session", name="fixture_tars")
def fixture_tars_fixture(tmp_path_factory) -> dict[str, Path]:
    """Every fixture tar of fixtures/make_fixtures.py, written once per session (per xdist worker)."""
    return make_fixtures.write_all(tmp_path_factory.mktemp("fixtures"))


def source_tar(request, source: str) -> Path:
    """A source id ``fixture:NAME`` or ``vector:NAME`` -> the tar's path (vectors skip when absent)."""
    kind, name = source.split(":", 1)
    if kind == "vector":
        return request.getfixturevalue("vectors") / "nydus" / "tar" / name
    return request.getfixturevalue("fixture_tars")[name]


# ---------------------------------------------------------------------------- running pack and the CLI
def pack_layer(
    src: str | os.PathLike,
    out: str | os.PathLike,
    compressor: str = "zstd",
    digester: str = "blake3",
    chunk_size: int = 0x1000,
    bootstrap: str | None = None,
) -> PackResult:
    opts = PackOptions(
        compressor=Compressor.parse(compressor),
        digester=Digester.parse(digester),
        chunk_size=chunk_size,
        bootstrap=bootstrap,
    )
    return pack(str(src), str(out), opts)


def debian_rootfs_tar() -> Path:
    """The Debian minbase tar of the benches (``bash bench/make_rootfs.sh`` builds it, in
    $NYDUS_BENCH_DIR or /var/tmp/nydus-bench): skips the test where it has not been built, fails it where CI
    requires it (NYDUS_REQUIRE_ROOTFS=1)."""
    src = Path(os.environ.get("NYDUS_BENCH_DIR", "/var/tmp/nydus-bench")) / "rootfs.tar"
    if not src.is_file():
        reason = f"no Debian rootfs tar at {src} (bash bench/make_rootfs.sh builds it)"
        if os.environ.get("NYDUS_REQUIRE_ROOTFS") == "1":
            pytest.fail(f"{reason} (required in CI)")
        pytest.skip(reason)
    return src


#: The type names of nydus-inspect's listings, by the file-type bits of st_mode (as a mount shows entries).
FILE_TYPES = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "char",
    stat.S_IFBLK: "block",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}


def run_cli(
    *args: str | os.PathLike, input: bytes | None = None, stdin=None, cwd=None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """``python -m nydus_inspect ARGS`` with this checkout first on the path; bytes out, never raises on rc."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.pop("NYDUS_INSPECT_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "nydus_inspect", *map(str, args)],
        input=input,
        stdin=stdin,
        cwd=cwd,
        capture_output=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int = 2, *needles: str) -> str:
    """Exit ``code``, one ``nydus-inspect: error:`` line on stderr, no traceback; returns that line."""
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == code, f"exit {proc.returncode}, stderr: {err}"
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("nydus-inspect: error: ")]
    assert len(errors) == 1 and errors[0] == lines[-1], err
    assert "internal error" not in errors[0], err
    for needle in needles:
        assert needle.lower() in errors[0].lower(), f"{needle!r} not in {errors[0]!r}"
    return errors[0]


def assert_no_differences(diffs: list[Difference], what: str = "") -> None:
    assert not diffs, f"{what}: {len(diffs)} difference(s):\n" + "\n".join(f"  {d}" for d in diffs[:30])


# ---------------------------------------------------------------------------- an independent tar reading
TYPES = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.FIFOTYPE: "fifo",
}
S_IFMT_OF = {name: fmt for fmt, name in FILE_TYPES.items()}
STORABLE_PREFIXES = (b"user.", b"trusted.", b"security.")
ACL_NAMES = (b"system.posix_acl_access", b"system.posix_acl_default")


@dataclass(eq=False)
class Want:
    """What the source tar says about one inode (hard-linked names share one Want)."""

    type: str
    mode: int
    uid: int
    gid: int
    mtime: int
    size: int = 0
    target: bytes | None = None
    rdev: int = 0
    xattrs: dict[bytes, bytes] = field(default_factory=dict)
    sha256: str | None = None
    data: bytes | None = None
    names: list[bytes] = field(default_factory=list)


def storable(name: bytes) -> bool:
    """The xattrs RAFS (and Linux) can hold; others (macOS namespace-less ones) are dropped by design."""
    return name in ACL_NAMES or any(name.startswith(p) and len(name) > len(p) for p in STORABLE_PREFIXES)


def tar_bytes(path: str | os.PathLike) -> bytes:
    """The uncompressed tar at ``path`` (plain, gzip or zstd)."""
    raw = Path(path).read_bytes()
    if raw[:4] == b"\x28\xb5\x2f\xfd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw), read_across_frames=True).read()
    if raw[:2] == b"\x1f\x8b":
        import gzip

        return gzip.decompress(raw)
    return raw


def _norm(name: str) -> bytes:
    parts = [p for p in os.fsencode(name).split(b"/") if p not in (b"", b".")]
    return b"/" + b"/".join(parts)


def _member_xattrs(member: tarfile.TarInfo) -> dict[bytes, bytes]:
    out = {}
    for key, value in member.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            out[key[13:].encode("utf-8", "surrogateescape")] = value.encode("utf-8", "surrogateescape")
        elif key.startswith("LIBARCHIVE.xattr."):
            out[urllib.parse.unquote_to_bytes(key[17:])] = base64.b64decode(value + "=" * (-len(value) % 4))
    return {k: v for k, v in out.items() if storable(k)}


def expected_tree(
    path: str | os.PathLike, keep_data: bool = False, link_header: bool = True
) -> dict[bytes, Want]:
    """path -> Want for every entry of the tar (``/`` only if the tar has a ``./`` entry).

    ``link_header``: a hard link's own header gives the inode its owner, mtime, mode (not a symlink's) and
    adds its xattrs, as containerd extracts it (and RAFS layers hold it); False: the link only adds a name,
    as mkfs.erofs writes it (plain EROFS layers)."""
    raw = tar_bytes(path)
    out: dict[bytes, Want] = {}
    if not raw:
        return out
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:", encoding="utf-8", errors="surrogateescape") as tf:
        for m in tf:
            p = _norm(m.name)
            if m.islnk():
                want = out[_norm(m.linkname)]
                want.names.append(p)
                out[p] = want
                if link_header:
                    want.uid, want.gid, want.mtime = m.uid, m.gid, int(m.mtime)
                    if want.type != "symlink":
                        want.mode = m.mode & 0o7777
                    want.xattrs = {**want.xattrs, **_member_xattrs(m)}
                continue
            want = Want(
                type=TYPES[m.type],
                mode=m.mode & 0o7777,
                uid=m.uid,
                gid=m.gid,
                mtime=int(m.mtime),
                xattrs=_member_xattrs(m),
                names=[p],
            )
            if want.type == "file":
                data = tf.extractfile(m).read()
                want.size, want.sha256 = len(data), hashlib.sha256(data).hexdigest()
                want.data = data if keep_data else None
            elif want.type == "symlink":
                want.target = os.fsencode(m.linkname)
            elif want.type in ("char", "block"):
                want.rdev = os.makedev(m.devmajor, m.devminor)
            out[p] = want
    return out


def _implicit_dirs(expected: dict[bytes, Want]) -> set[bytes]:
    dirs = set()
    for p in expected:
        parts = p.split(b"/")[1:-1]
        for i in range(1, len(parts) + 1):
            dirs.add(b"/" + b"/".join(parts[:i]))
    return dirs


def assert_tree_matches(expected: dict[bytes, Want], found_path: str | os.PathLike, **describe_kw) -> None:
    """A layer, bootstrap or tar (through nydus_inspect.diff.describe) holds exactly ``expected``."""
    found = describe(str(found_path), **describe_kw).entries
    problems = []
    implicit = _implicit_dirs(expected)
    for p, e in found.items():
        if p not in expected and not (p == b"/" or (p in implicit and e.type == "dir")):
            problems.append(f"{p!r}: not in the source tar")
    for p, w in expected.items():
        e = found.get(p)
        if e is None:
            problems.append(f"{p!r}: missing")
            continue
        links = tuple(sorted(w.names)) if len(w.names) > 1 else ()
        got = {
            "type": e.type,
            "uid": e.uid,
            "gid": e.gid,
            "mtime": e.mtime,
            "xattrs": e.xattrs,
            "hardlinks": e.hardlinks,
        }
        want = {
            "type": w.type,
            "uid": w.uid,
            "gid": w.gid,
            "mtime": w.mtime,
            "xattrs": w.xattrs,
            "hardlinks": links,
        }
        if w.type != "symlink":
            got["mode"], want["mode"] = e.mode, w.mode
        if w.type == "file":
            got.update(size=e.size, sha256=e.sha256)
            want.update(size=w.size, sha256=w.sha256)
        if w.type == "symlink":
            got["target"], want["target"] = e.target, w.target
        if w.type in ("char", "block"):
            got["rdev"], want["rdev"] = e.rdev, w.rdev
        for k in want:
            if got[k] != want[k]:
                problems.append(f"{p!r}: {k}: tar has {want[k]!r}, found {got[k]!r}")
    assert not problems, f"{found_path}: {len(problems)} problem(s):\n" + "\n".join(problems[:30])


def assert_dir_matches(
    expected: dict[bytes, Want],
    root: str | os.PathLike,
    *,
    xattrs: bool = True,
    hardlinks: bool = True,
    special_bits: bool = True,
    zero_mtime_shown_as: tuple[int, int] | None = None,
) -> None:
    """An extracted directory holds ``expected`` (lstat: type, mode, owner, mtime, size, bytes, link target,
    rdev; hard-link inode identity; xattrs as Linux keeps them).

    ``zero_mtime_shown_as``: a (first, last) range of seconds in which an mtime of 0 may show instead (nydusd
    serves its own start time for an inode whose mtime is 0)."""
    base = os.fsencode(str(root))
    problems = []
    implicit = _implicit_dirs(expected)
    seen = set()
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = full[len(base) :]
            seen.add(rel)
            if rel not in expected and rel not in implicit:
                problems.append(f"{rel!r}: not in the source tar")
    inodes: dict[int, set[int]] = {}
    for p, w in expected.items():
        if p == b"/":
            continue  # extraction does not apply the root entry's attributes to the target directory
        if p not in seen:
            problems.append(f"{p!r}: missing")
            continue
        full = base + p
        st = os.lstat(full)
        got = {
            "type": stat.S_IFMT(st.st_mode),
            "uid": st.st_uid,
            "gid": st.st_gid,
            "mtime": st.st_mtime_ns // 10**9,
        }
        want = {"type": S_IFMT_OF[w.type], "uid": w.uid, "gid": w.gid, "mtime": w.mtime}
        if (
            zero_mtime_shown_as
            and w.mtime == 0
            and zero_mtime_shown_as[0] <= got["mtime"] <= zero_mtime_shown_as[1]
        ):
            got["mtime"] = 0
        if w.type != "symlink":
            mask = 0o7777 if special_bits or w.type != "file" else 0o1777
            got["mode"], want["mode"] = stat.S_IMODE(st.st_mode) & mask, w.mode & mask
        if w.type == "file":
            with open(full, "rb") as f:
                got["sha256"] = hashlib.sha256(f.read()).hexdigest()
            got["size"] = st.st_size
            want.update(size=w.size, sha256=w.sha256)
        elif w.type == "symlink":
            got["target"], want["target"] = os.readlink(full), w.target
        elif w.type in ("char", "block"):
            got["rdev"], want["rdev"] = st.st_rdev, w.rdev
        if xattrs:
            # Linux keeps user.* only on regular files and directories.
            names = os.listxattr(full, follow_symlinks=False)
            got["xattrs"] = {os.fsencode(n): os.getxattr(full, n, follow_symlinks=False) for n in names}
            want["xattrs"] = {
                k: v for k, v in w.xattrs.items() if w.type in ("file", "dir") or not k.startswith(b"user.")
            }
        if hardlinks and len(w.names) > 1:
            inodes.setdefault(id(w), set()).add(st.st_ino)
            got["nlink"], want["nlink"] = st.st_nlink, len(w.names)
        for k in want:
            if got[k] != want[k]:
                problems.append(f"{p!r}: {k}: tar has {want[k]!r}, found {got[k]!r}")
    for group, inos in inodes.items():
        if len(inos) != 1:
            problems.append(f"hard-link group {group}: names on {len(inos)} different inodes")
    assert not problems, f"{root}: {len(problems)} problem(s):\n" + "\n".join(problems[:30])
