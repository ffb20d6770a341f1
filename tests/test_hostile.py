"""Every command on every hostile case (tests/hostile.py), under a timeout and RLIMIT_AS of 512 MiB: exit 0, 1
or 2, a one-line error when it fails, never exit 3 (an internal error), never a traceback, never a hang.

A tar case is packed first; when pack takes it, every command that reads a layer runs on the result. The
corrupted compressed inputs are many: pack and diff run on a fixed sample of them here (every flip of the
sample is packed in-process by test_compressed_input.py). Crafted layers run the commands that read them.
Every layer (crafted, or packed from a case) is also mounted (FUSE), and ``ls -lR``, a read of every file and
``df`` run inside under timeouts: the mount never dies (ENOTCONN) or hangs, and a file read whole gives its
size in bytes, the bytes the checked reader (``unpack``, else ``cat``) gives; the daemon logs no internal
error, and the mount is gone afterwards, also when a check failed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import hostile
import pytest
from conftest import REQUIRE_FUSE

TIMEOUT = 120

#: Commands on a layer that pack made from a case (or a crafted layer): ``{layer}``, ``{src}``, ``{out}``
#: are filled in; ``{file}`` is a regular file of the layer when there is one.
LAYER_COMMANDS = {
    "info": ["info", "{layer}"],
    "toc": ["toc", "{layer}"],
    "ls": ["ls", "-R", "-l", "{layer}"],
    "cat": ["cat", "{layer}", "{file}"],
    "chunks": ["chunks", "{layer}"],
    "unpack-tar": ["unpack", "-q", "{layer}", "-o", "{out}/unpacked.tar"],
    "unpack-stdout": ["unpack", "-q", "{layer}", "-o", "-"],
    "unpack-dir": ["unpack", "-q", "{layer}", "--to-dir", "{out}/dir"],
    "diff": ["diff", "{src}", "{layer}"],
    "verify": ["verify", "-q", "{layer}"],
    "verify-source": ["verify", "-q", "{layer}", "--source", "{src}"],
    "cache-file": ["cache-file", "{layer}", "-o", "{out}/cache"],
    "merge": ["merge", "{layer}", "-o", "{out}/merged.boot"],
}
#: What a crafted bootstrap (no blob, no source tar) is given to.
CRAFTED_COMMANDS = ("ls", "verify", "unpack-tar", "unpack-stdout", "unpack-dir", "merge")


#: Commands that still fail on a family, with why: each is an open item, with a strict xfail test of its own
#: that turns red when it is fixed, so that it moves back into the run (none today).
DEFERRED: dict[str, dict[str, str]] = {}


#: Families whose layers are not mounted: corrupted inputs pack to no layer or the intact one, and the dedup bomb
#: is one file of a repeated chunk, read through the mount like any big file (its memory is bench_hostile's).
NOT_MOUNTED = {"corrupt-compressed", "dedup-bomb"}
MOUNT_TIMEOUT = 60
#: Reads every regular file under a directory (walking by chdir, so that depth costs neither descriptors nor
#: long paths) and prints {path: [st_size, bytes read, sha256 or null, errno or 0]} and the other errors met,
#: as JSON.
READER = r"""
import hashlib, json, os, stat, sys
os.chdir(sys.argv[1])
files, errors, path, stack = {}, [], [], [None]
def names():
    try:
        return iter(sorted(os.listdir(".")))
    except OSError as exc:
        errors.append(["/".join(path), exc.errno])
        return iter(())
stack[0] = names()
while stack:
    name = next(stack[-1], None)
    if name is None:
        stack.pop()
        if path:
            os.chdir("..")
            path.pop()
        continue
    rel = "/".join(path + [name])
    try:
        st = os.lstat(name)
    except OSError as exc:
        errors.append([rel, exc.errno])
        continue
    if stat.S_ISDIR(st.st_mode):
        try:
            os.chdir(name)
        except OSError as exc:
            errors.append([rel, exc.errno])
            continue
        path.append(name)
        stack.append(names())
    elif stat.S_ISREG(st.st_mode):
        h, n, err = hashlib.sha256(), 0, 0
        try:
            with open(name, "rb", buffering=0) as f:
                while block := f.read(1 << 20):
                    h.update(block)
                    n += len(block)
        except OSError as exc:
            err = exc.errno
        files[rel] = [st.st_size, n, None if err else h.hexdigest(), err]
json.dump({"files": files, "errors": errors}, sys.stdout)
"""
DEAD = (errno.ENOTCONN, errno.ECONNABORTED)


def _fuse_missing() -> str | None:
    from nydus_inspect.testing.plugin import fuse_problem

    problem = fuse_problem()
    if problem and REQUIRE_FUSE:
        pytest.fail(f"FUSE is unavailable: {problem} (NYDUS_REQUIRE_FUSE=1)")
    return problem


def _reference(layer, tmp_path, paths: list[str], problems: list[str]) -> dict[str, str | None]:
    """sha256 of each of ``paths`` as the checked reader gives it (None where it refuses the file): every file
    from one ``unpack -o``, else (the layer is refused whole) each file from ``cat``."""
    out = tmp_path / "reference.tar"
    with open(out, "wb") as f:
        proc = _run("unpack (reference)", ["unpack", "-q", layer, "-o", "-"], problems, stdout=f)
    digests: dict[str, str | None] = {}
    if proc is not None and proc.returncode == 0:
        with tarfile.open(out) as tf:
            for m in tf:
                name = m.name.removeprefix("./").strip("/")
                if m.isreg():
                    h = hashlib.sha256()
                    with tf.extractfile(m) as data:
                        while block := data.read(1 << 20):
                            h.update(block)
                    digests[name] = h.hexdigest()
                elif m.islnk():
                    digests[name] = digests.get(m.linkname.removeprefix("./").strip("/"))
        out.unlink()
        return {p: digests.get(p) for p in paths}
    out.unlink()
    for p in paths:
        cat = hostile.run_limited("cat", "-P", layer, "/" + p, stdout=subprocess.PIPE, timeout=MOUNT_TIMEOUT)
        digests[p] = hashlib.sha256(cat.stdout).hexdigest() if cat.returncode == 0 else None
    return digests


def _mount_check(layer, tmp_path, problems: list[str]) -> None:
    """Mount ``layer`` and use it as a user would; note in ``problems`` whatever a mount must never do."""
    from nydus_inspect.mount.daemon import find_mount, process_gone

    mp, log = tmp_path / "mnt", tmp_path / "mount.log"
    mp.mkdir(exist_ok=True)
    proc = _run("mount", ["mount", layer, mp, "--log-file", log], problems)
    if proc is None or proc.returncode != 0:
        if find_mount(str(mp)) is not None:
            problems.append("mount: failed, yet the mount is there")
            subprocess.run(["umount", "-l", str(mp)], capture_output=True)
        return
    pid = None
    try:
        pid = int(os.getxattr(mp, "user.nydus.mount.pid"))
        rootfs = str(mp / "rootfs")
        for what, cmd in (("ls -lR", ["ls", "-lR", rootfs]), ("df", ["df", str(mp)])):
            try:
                run = subprocess.run(
                    cmd, capture_output=True, text=True, errors="replace", timeout=MOUNT_TIMEOUT
                )
            except subprocess.TimeoutExpired:
                problems.append(f"mount: {what}: no answer in {MOUNT_TIMEOUT} s")
                return
            if "not connected" in run.stderr or "connection abort" in run.stderr:
                problems.append(f"mount: {what}: the mount died: {run.stderr[-300:]}")
                return
        try:
            run = subprocess.run(
                [sys.executable, "-c", READER, rootfs], capture_output=True, timeout=4 * MOUNT_TIMEOUT
            )
        except subprocess.TimeoutExpired:
            problems.append(f"mount: reading every file: no answer in {4 * MOUNT_TIMEOUT} s")
            return
        if run.returncode != 0:
            problems.append(f"mount: reading every file: {run.stderr.decode(errors='replace')[-300:]}")
            return
        seen = json.loads(run.stdout)
        dead = [e for e in seen["errors"] + [[p, f[3]] for p, f in seen["files"].items()] if e[1] in DEAD]
        if dead:
            problems.append(f"mount: the mount died: {dead[:3]}")
            return
        whole = {p: f for p, f in seen["files"].items() if f[2] is not None}
        short = [p for p, (size, n, _, _) in whole.items() if n != size]
        if short:
            problems.append(f"mount: files read whole gave other than their size in bytes: {short[:3]}")
        read = sorted(p for p, f in whole.items() if f[0])[:50]
        if read:
            want = _reference(layer, tmp_path, read, problems)
            for p in read:
                got = whole[p][2]
                if want[p] != got:
                    why = (
                        "refused by the checked reader"
                        if want[p] is None
                        else "other bytes than the reader's"
                    )
                    problems.append(f"mount: /{p}: {why}")
        if pid is not None and process_gone(pid):
            problems.append("mount: the daemon is gone")
        internal = [
            ln
            for ln in (log.read_text(errors="replace") if log.exists() else "").splitlines()
            if "internal error" in ln or "Traceback" in ln
        ]
        if internal:
            problems.append(f"mount: the daemon logged an internal error: {internal[0][-300:]}")
    except OSError as exc:
        problems.append(f"mount: {exc}")
    finally:
        _unmount(mp, pid, problems)


def _unmount(mp, pid: int | None, problems: list[str]) -> None:
    """Unmount, by the CLI and then by force if need be; the mount and its daemon are gone afterwards."""
    from nydus_inspect.mount.daemon import find_mount, process_gone, wait_gone

    if find_mount(str(mp)) is not None:
        proc = hostile.run_limited("umount", mp, timeout=MOUNT_TIMEOUT)
        if proc.returncode != 0:
            problems.append(f"umount: exit {proc.returncode}: {proc.stderr.decode(errors='replace')[-300:]}")
    if find_mount(str(mp)) is not None:
        subprocess.run(["umount", "-l", str(mp)], capture_output=True)
    if pid is not None and not wait_gone(pid, 10):
        problems.append(f"umount: daemon {pid} still running")
        os.kill(pid, signal.SIGKILL)
        wait_gone(pid, 5)
    deadline = time.monotonic() + 5
    while find_mount(str(mp)) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert find_mount(str(mp)) is None, f"{mp} is still mounted"
    assert pid is None or process_gone(pid), f"daemon {pid} is still running"


def _corrupt_sample() -> list[hostile.Case]:
    cases = list(hostile.corrupted_compressed())
    return [c for i, c in enumerate(cases) if i % 16 == 0 or "cut" in c.name]


CASES = [
    *_corrupt_sample(),
    *[c for name, make in hostile.TAR_FAMILIES.items() if name != "corrupt-compressed" for c in make()],
    *hostile.cases(hostile.LAYER_FAMILIES),
]


def _check(what: str, proc: subprocess.CompletedProcess) -> str | None:
    """None when ``proc`` ended as a command may end on hostile input; else what is wrong."""
    err = proc.stderr.decode("utf-8", "replace")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if "Traceback" in err:
        return f"{what}: traceback: {err[-500:]}"
    if proc.returncode not in (0, 1, 2):
        return f"{what}: exit {proc.returncode}: {err[-300:]}"
    if proc.returncode == 2:
        errors = [ln for ln in lines if ln.startswith("nydus-inspect: error: ")]
        if len(errors) != 1 or errors[0] != lines[-1] or "internal error" in errors[0]:
            return f"{what}: not one error line: {err[-300:]}"
    return None


def _run(what: str, args: list, problems: list[str], **kw) -> subprocess.CompletedProcess | None:
    try:
        proc = hostile.run_limited(*args, timeout=TIMEOUT, **kw)
    except subprocess.TimeoutExpired:
        problems.append(f"{what}: no answer in {TIMEOUT} s")
        return None
    problem = _check(what, proc)
    if problem:
        problems.append(problem)
    return proc


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_command_ends_cleanly(tmp_path, case):
    src = tmp_path / f"input{case.suffix}"
    case.write(src)
    out = tmp_path / "out"
    out.mkdir()
    problems: list[str] = []
    if case.kind == "tar":
        layer = tmp_path / "layer.blob"
        proc = _run("pack", ["pack", "-q", src, "-o", layer], problems)
        if proc is not None and case.pack != "either":
            want = 0 if case.pack == "accept" else 2
            if proc.returncode != want:
                problems.append(f"pack: exit {proc.returncode}, expected {want}")
        packed = proc is not None and proc.returncode == 0
        commands = list(LAYER_COMMANDS) if packed and case.family != "corrupt-compressed" else []
        if case.family == "corrupt-compressed" and packed:
            commands = ["diff"]
    else:
        layer = src
        packed = False
        commands = list(CRAFTED_COMMANDS)
    commands = [c for c in commands if c not in DEFERRED.get(case.family, {})]
    file = "/"
    if commands and "cat" in commands:
        listing = hostile.run_limited("ls", "-R", layer, stdout=subprocess.PIPE, timeout=TIMEOUT)
        names = [ln for ln in listing.stdout.decode("utf-8", "replace").splitlines() if ln.strip()]
        file = next((n for n in reversed(names) if not n.endswith("/")), "/")
    for name in commands:
        args = [
            a.format(layer=layer, src=src, out=out, file=file) if isinstance(a, str) else a
            for a in LAYER_COMMANDS[name]
        ]
        _run(name, args, problems)
        for leftover in ("unpacked.tar", "cache"):
            (out / leftover).unlink(missing_ok=True)
        subprocess.run(["rm", "-rf", str(out / "dir")], check=True)
    mountable = case.kind == "layer" or (packed and case.family not in NOT_MOUNTED)
    if mountable and not _fuse_missing():
        _mount_check(layer, tmp_path, problems)
    assert not problems, f"{case.id}:\n" + "\n".join(problems)


def test_every_family_has_cases():
    for name, make in {**hostile.TAR_FAMILIES, **hostile.LAYER_FAMILIES}.items():
        assert list(make()), name


def test_the_generator_is_deterministic(tmp_path):
    for case in [*_corrupt_sample()[:5], *hostile.nul_names(), *hostile.crafted_fields()]:
        a, b = tmp_path / "a", tmp_path / "b"
        case.write(a)
        case.write(b)
        assert a.read_bytes() == b.read_bytes(), case.id
