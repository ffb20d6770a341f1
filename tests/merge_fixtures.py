"""Multi-layer OCI fixtures for the merge and convert tests, and a reference applier.

The layers are written with :mod:`tarfile`. :func:`apply_layers` is an
independent model of what a container runtime does with them: it applies
each tar in order to a dict of paths with the OCI whiteout rules
(image-spec ``layer.md``), without any nydus_inspect code, and describes the
result as a :class:`nydus_inspect.diff.Tree` so it compares entry by entry.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from nydus_inspect.diff import Entry, Tree

ROOT = Path(__file__).resolve().parent.parent


def run(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.pop("NYDUS_INSPECT_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "nydus_inspect", *map(str, args)], capture_output=True, env=env, timeout=300
    )


def ok(*args) -> bytes:
    proc = run(*args)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout


def fails(*args, code: int = 2) -> str:
    proc = run(*args)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == code, (proc.returncode, err)
    assert "Traceback" not in err
    assert err.startswith("nydus-inspect: error: ") and err.count("\n") == 1, err
    return err


T0 = 1_700_000_000
MIB = 1 << 20
WH = ".wh."
OPQ = ".wh..wh..opq"


def noise(tag: str, n: int) -> bytes:
    return hashlib.shake_256(tag.encode()).digest(n)


# ---------------------------------------------------------------------------- writing layers
def _info(name: str, kind: bytes, mode: int, mtime: int, uid: int = 0, gid: int = 0) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.mtime, ti.uid, ti.gid = kind, mode, mtime, uid, gid
    ti.uname = ti.gname = ""
    return ti


def make_tar(entries: list[tuple]) -> bytes:
    """A layer tar from specs:

    ("dir", path, mode[, attrs]) ("file", path, data, mode[, attrs]) ("link", path, target)
    ("symlink", path, target) ("char"|"block", path, (major, minor)) ("fifo", path)
    ("wh", path) -> PARENT/.wh.NAME, ("opq", dir) -> DIR/.wh..wh..opq. attrs: uid, gid, mtime, xattrs.
    """
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for i, spec in enumerate(entries):
            kind, path = spec[0], spec[1]
            mtime = T0 + i
            if kind == "dir":
                attrs = spec[3] if len(spec) > 3 else {}
                ti = _info(
                    path,
                    tarfile.DIRTYPE,
                    spec[2],
                    attrs.get("mtime", mtime),
                    attrs.get("uid", 0),
                    attrs.get("gid", 0),
                )
                _xattrs(ti, attrs)
                tf.addfile(ti)
            elif kind == "file":
                attrs = spec[4] if len(spec) > 4 else {}
                ti = _info(
                    path,
                    tarfile.REGTYPE,
                    spec[3],
                    attrs.get("mtime", mtime),
                    attrs.get("uid", 0),
                    attrs.get("gid", 0),
                )
                ti.size = len(spec[2])
                _xattrs(ti, attrs)
                tf.addfile(ti, io.BytesIO(spec[2]))
            elif kind == "link":
                ti = _info(path, tarfile.LNKTYPE, 0o644, mtime)
                ti.linkname = spec[2]
                tf.addfile(ti)
            elif kind == "symlink":
                ti = _info(path, tarfile.SYMTYPE, 0o777, mtime)
                ti.linkname = spec[2]
                tf.addfile(ti)
            elif kind in ("char", "block"):
                ti = _info(path, tarfile.CHRTYPE if kind == "char" else tarfile.BLKTYPE, 0o660, mtime, 0, 6)
                ti.devmajor, ti.devminor = spec[2]
                tf.addfile(ti)
            elif kind == "fifo":
                tf.addfile(_info(path, tarfile.FIFOTYPE, 0o600, mtime))
            elif kind == "wh":
                parent, name = os.path.split(path)
                tf.addfile(_info(os.path.join(parent, WH + name), tarfile.REGTYPE, 0o644, mtime))
            elif kind == "opq":
                tf.addfile(_info(os.path.join(path, OPQ), tarfile.REGTYPE, 0o644, mtime))
            else:
                raise ValueError(kind)
    return buf.getvalue()


def _xattrs(ti: tarfile.TarInfo, attrs: dict) -> None:
    for k, v in attrs.get("xattrs", {}).items():
        ti.pax_headers["SCHILY.xattr." + k] = v


BIG = noise("big", 2 * MIB + 12345)  # three chunks of 1 MiB

BASE = [
    ("dir", ".", 0o755),
    ("dir", "bin", 0o755),
    ("file", "bin/busybox", noise("busybox", 300_000), 0o755),
    ("link", "bin/ls", "bin/busybox"),
    ("link", "bin/cat", "bin/busybox"),
    ("file", "bin/big", BIG, 0o755),
    ("dir", "etc", 0o755),
    ("file", "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644),
    ("file", "etc/hosts", b"127.0.0.1 localhost\n", 0o644),
    ("file", "etc/empty", b"", 0o600),
    ("file", "etc/secure", b"secret\n", 0o640, {"xattrs": {"user.tag": "base", "trusted.x": "1"}, "gid": 42}),
    ("wh", "etc/ghost"),  # a whiteout in the lowest layer: nothing to remove, and never shown
    ("dir", "usr", 0o755),
    ("dir", "usr/lib", 0o755, {"xattrs": {"user.dir": "lib"}}),
    ("file", "usr/lib/libfoo.so", noise("libfoo", 5000), 0o644),
    ("symlink", "usr/lib/libfoo.so.1", "libfoo.so"),
    (
        "link",
        "usr/lib/libfoo.so.0",
        "usr/lib/libfoo.so.1",
    ),  # a hard-linked symlink; the upper replaces one name
    ("dir", "var", 0o755),
    ("dir", "var/cache", 0o755),
    ("file", "var/cache/a", b"cache a\n", 0o644),
    ("dir", "var/cache/sub", 0o700),
    ("file", "var/cache/sub/c", b"cache c\n", 0o644),
    ("dir", "opt", 0o755),
    ("dir", "opt/app", 0o755),
    ("file", "opt/app/old.txt", b"old app\n", 0o644),
    ("dir", "opt/app/lib", 0o755),
    ("file", "opt/app/lib/x.so", noise("x.so", 7000), 0o644),
    ("dir", "data", 0o755),
    ("file", "data/one", b"one\n", 0o644),
    ("file", "data/shared", b"linked across dirs\n", 0o644),
    ("dir", "keep", 0o755),
    ("link", "keep/shared", "data/shared"),
    ("file", "srv", b"srv was a file\n", 0o644),
    ("dir", "dev", 0o755),
    ("char", "dev/null", (1, 3)),
    ("block", "dev/sda", (8, 0)),
    ("link", "dev/zero-alias", "dev/null"),  # a hard-linked device; the upper replaces dev/null
    ("fifo", "dev/initctl"),
    ("link", "dev/initctl.2", "dev/initctl"),  # a hard-linked fifo pair that survives as a pair
    ("dir", "gone-data", 0o755),
    ("file", "gone-data/all-whited-out", noise("gone", 9000), 0o644),
]

UPPER = [
    ("dir", ".", 0o750, {"uid": 1, "gid": 1}),
    ("dir", "bin", 0o755),
    ("file", "bin/ls", noise("new ls", 4000), 0o755),  # replaces one name of the busybox group
    ("dir", "etc", 0o711),
    ("wh", "etc/hosts"),
    ("file", "etc/passwd", b"root:x:0:0::/root:/bin/ash\nuser:x:1000:1000::/home/user:/bin/sh\n", 0o644),
    ("file", "etc/secure", b"secret v2\n", 0o600, {"xattrs": {"user.tag": "upper"}, "uid": 7}),
    ("wh", "etc/nothing-there"),
    ("dir", "opt", 0o755),
    ("wh", "opt/app"),  # delete the directory ...
    ("dir", "opt/app", 0o700),  # ... and re-create it in the same layer with new content
    ("file", "opt/app/new.txt", b"new app\n", 0o644),
    ("dir", "var", 0o755),
    ("dir", "var/cache", 0o755),
    ("opq", "var/cache"),
    ("file", "var/cache/b", b"cache b (after opaque)\n", 0o644),
    ("file", "data", b"data is a file now\n", 0o644),  # a file replaces a directory
    ("dir", "srv", 0o755),  # a directory replaces a file
    ("file", "srv/index.html", b"<html></html>\n", 0o644),
    ("dir", "usr", 0o755),
    ("dir", "usr/lib", 0o755, {"xattrs": {"user.dir": "lib2"}}),
    ("symlink", "usr/lib/libfoo.so.1", "libfoo.so.2"),
    ("file", "usr/lib/libfoo.so.2", noise("libfoo2", 6000), 0o644),
    ("dir", "newbin", 0o755),
    ("file", "newbin/a", b"new hardlinked pair\n", 0o755),
    ("link", "newbin/b", "newbin/a"),
    ("wh", "gone-data"),
    ("dir", "tmp", 0o1777),
    ("file", "tmp/stale", b"stale\n", 0o644),
    ("dir", "tmp/stale-dir", 0o755),
    ("file", "tmp/stale-dir/x", b"x\n", 0o644),
    ("dir", "dev", 0o755),
    ("file", "dev/null", b"", 0o666),  # a device replaced by a regular file
]

TOP = [
    ("dir", ".", 0o755, {"gid": 3, "mtime": T0 + 500}),  # the root takes the top layer's attributes
    ("dir", "bin", 0o755),
    ("wh", "bin/busybox"),  # bin/cat keeps the old bytes, now with one name
    ("dir", "opt", 0o755),
    ("dir", "opt/app", 0o755),
    ("file", "opt/app/new.txt", b"new app, v3\n", 0o644),
    ("dir", "tmp", 0o1777, {"mtime": T0 + 999}),
    ("opq", "tmp"),  # hides the stale file and directory of the layer below
    ("file", "tmp/fresh", b"fresh\n", 0o600),
    ("dir", "var", 0o755),
    ("dir", "var/log", 0o755),
    ("file", "var/log/x", b"log\n", 0o644),
    ("wh", "data"),
    ("dir", "data", 0o755),  # a directory again, with new content only
    ("file", "data/two", b"two\n", 0o644),
    ("symlink", "srv", "/data"),
    ("dir", "usr", 0o755),
    ("dir", "usr/lib", 0o755),
    ("file", "usr/lib/libfoo.so", BIG[:MIB] + noise("tail", 100), 0o644),  # shares a chunk with bin/big
]

LAYERS = [BASE, UPPER, TOP]


def layer_tars() -> list[bytes]:
    return [make_tar(spec) for spec in LAYERS]


# ---------------------------------------------------------------------------- the reference applier
@dataclass(eq=False)
class _Obj:
    type: str
    mode: int
    uid: int
    gid: int
    mtime: int
    data: bytes = b""
    target: bytes | None = None
    rdev: int = 0
    xattrs: dict[bytes, bytes] = field(default_factory=dict)


_KIND = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.FIFOTYPE: "fifo",
}


def _norm(name: str) -> str:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    return "/" + "/".join(parts)


def _remove_tree(state: dict[str, _Obj], path: str, keep_self: bool = False) -> None:
    prefix = path.rstrip("/") + "/"
    for p in [p for p in state if p.startswith(prefix)]:
        del state[p]
    if not keep_self:
        state.pop(path, None)


def apply_layers(tars: list[bytes]) -> dict[str, _Obj]:
    """Apply layer tars in order, OCI rules: whiteouts act on lower layers only, before this layer's entries."""
    state: dict[str, _Obj] = {"/": _Obj("dir", 0o755, 0, 0, 0)}
    for raw in tars:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tf:
            members = [(m, tf.extractfile(m).read() if m.isreg() else b"") for m in tf.getmembers()]
        for m, _ in members:
            path = _norm(m.name)
            parent, base = path.rsplit("/", 1)
            parent = parent or "/"
            if base == OPQ:
                _remove_tree(state, parent, keep_self=True)
            elif base.startswith(WH):
                _remove_tree(state, (parent.rstrip("/") + "/" + base[len(WH) :]))
        for m, data in members:
            path = _norm(m.name)
            base = path.rsplit("/", 1)[1]
            if base.startswith(WH):
                continue
            if m.islnk():
                _remove_tree(state, path)
                obj = state[path] = state[_norm(m.linkname)]
                # As containerd extracts a link: its header's owner, mtime, xattrs and (but on a symlink) mode
                # go to the inode it names.
                obj.uid, obj.gid, obj.mtime = m.uid, m.gid, int(m.mtime)
                if obj.type != "symlink":
                    obj.mode = m.mode & 0o7777
                obj.xattrs = {**obj.xattrs, **_pax_xattrs(m)}
                continue
            obj = _Obj(_KIND[m.type], m.mode & 0o7777, m.uid, m.gid, int(m.mtime), data=data)
            if m.issym():
                obj.target = m.linkname.encode()
            if m.ischr() or m.isblk():
                obj.rdev = os.makedev(m.devmajor, m.devminor)
            obj.xattrs = _pax_xattrs(m)
            old = state.get(path)
            if not (old is not None and old.type == "dir" and obj.type == "dir"):
                _remove_tree(state, path)
            state[path] = obj
    return state


def _pax_xattrs(m: tarfile.TarInfo) -> dict[bytes, bytes]:
    return {
        k[len("SCHILY.xattr.") :].encode(): v.encode()
        for k, v in m.pax_headers.items()
        if k.startswith("SCHILY.xattr.")
    }


def reference_tree(tars: list[bytes]) -> Tree:
    """The applied image as a diff.Tree (what describe_layer gives for a merged bootstrap)."""
    state = apply_layers(tars)
    names: dict[int, list[bytes]] = {}
    for p, obj in state.items():
        names.setdefault(id(obj), []).append(p.encode())
    out: dict[bytes, Entry] = {}
    for p, obj in state.items():
        links = tuple(sorted(names[id(obj)])) if len(names[id(obj)]) > 1 else ()
        out[p.encode()] = Entry(
            type=obj.type,
            mode=obj.mode,
            uid=obj.uid,
            gid=obj.gid,
            mtime=obj.mtime,
            size=len(obj.data) if obj.type == "file" else 0,
            target=obj.target,
            rdev=obj.rdev,
            xattrs=dict(obj.xattrs),
            sha256=hashlib.sha256(obj.data).hexdigest() if obj.type == "file" else None,
            hardlinks=links,
        )
    return Tree(out)


def reference_files(tars: list[bytes]) -> dict[str, bytes]:
    """Path -> bytes of every regular file of the applied image."""
    return {p: o.data for p, o in apply_layers(tars).items() if o.type == "file"}


def reference_nlinks(tars: list[bytes]) -> dict[str, int]:
    state = apply_layers(tars)
    count: dict[int, int] = {}
    for obj in state.values():
        count[id(obj)] = count.get(id(obj), 0) + 1
    return {p: count[id(o)] for p, o in state.items() if o.type != "dir"}


def listing_differences(listing: list[dict], tars: list[bytes]) -> list[str]:
    """Differences between ``ls -R --json`` output and the applied layers (attributes and link counts)."""
    state = apply_layers(tars)
    nlinks = reference_nlinks(tars)
    out = []
    got = {e["path"]: e for e in listing}
    if sorted(got) != sorted(state):
        out.append(
            f"paths: only listed {sorted(set(got) - set(state))}, only expected {sorted(set(state) - set(got))}"
        )
    for path, obj in state.items():
        e = got.get(path)
        if e is None:
            continue
        want = {
            "type": obj.type,
            "mode": f"{obj.mode:04o}",
            "uid": obj.uid,
            "gid": obj.gid,
            "mtime": obj.mtime,
        }
        if obj.type != "dir":
            want["nlink"] = nlinks[path]
        if obj.type == "file":
            want["size"] = len(obj.data)
        if obj.type == "symlink":
            want["target"] = obj.target.decode()
        if obj.type in ("char", "block"):
            want["rdev"] = {"major": os.major(obj.rdev), "minor": os.minor(obj.rdev)}
        if obj.xattrs:
            want["xattrs"] = {k.decode(): v.decode() for k, v in obj.xattrs.items()}
        for key, value in want.items():
            if key == "mode" and obj.type == "symlink":
                continue
            if e.get(key) != value:
                out.append(f"{path}: {key}: expected {value!r}, listed {e.get(key)!r}")
        if obj.type == "dir":
            subdirs = sum(
                1
                for p, o in state.items()
                if o.type == "dir" and p != "/" and p.rsplit("/", 1)[0] == (path if path != "/" else "")
            )
            if e.get("nlink") != 2 + subdirs:
                out.append(f"{path}: nlink: expected {2 + subdirs}, listed {e.get('nlink')}")
    return out
