"""``umount`` of a busy mount names what keeps it busy and refuses (``--lazy`` detaches it anyway); ``mount``
over a directory that holds files warns that they are hidden. Real FUSE mounts, made by the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from conftest import REQUIRE_FUSE, ROOT

from nydus_inspect.mount.daemon import find_mount, process_gone
from nydus_inspect.testing import build_layer
from nydus_inspect.testing.plugin import fuse_problem


def cli(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("NYDUS_INSPECT_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "nydus_inspect", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.fixture
def layer(tmp_path):
    problem = fuse_problem()
    if problem:
        if REQUIRE_FUSE:
            pytest.fail(f"FUSE is unavailable: {problem}")
        pytest.skip(f"FUSE is unavailable: {problem}")
    return build_layer({"etc/motd": b"hello\n", "srv/data": b"d" * 10000}, tmp_path / "layer.blob")


@pytest.fixture
def mountpoint(tmp_path):
    mp = tmp_path / "mnt"
    mp.mkdir()
    yield mp
    if find_mount(str(mp)) is not None:  # whatever the test did, leave nothing behind
        subprocess.run(["fusermount3", "-u", "-z", str(mp)], capture_output=True)


def test_a_busy_mount_is_refused_with_what_holds_it(layer, mountpoint):
    p = cli("mount", layer, mountpoint)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""  # an empty mount point: no warning
    pid = int(os.getxattr(mountpoint, "user.nydus.mount.pid"))
    held = open(mountpoint / "rootfs" / "etc" / "motd", "rb")
    sitter = subprocess.Popen(["sleep", "60"], cwd=mountpoint / "rootfs" / "srv")
    try:
        p = cli("umount", mountpoint)
        assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
        assert "busy, not unmounted" in p.stderr and "--lazy" in p.stderr
        assert f"pid {os.getpid()} (" in p.stderr and f"{mountpoint}/rootfs/etc/motd open" in p.stderr
        assert f"pid {sitter.pid} (sleep): working directory {mountpoint}/rootfs/srv" in p.stderr
        # Refused means untouched: the mount and its daemon still serve the open file.
        assert find_mount(str(mountpoint)) is not None and not process_gone(pid)
        assert held.read() == b"hello\n"
    finally:
        sitter.kill()
        sitter.wait()
        held.close()
    p = cli("umount", mountpoint)
    assert p.returncode == 0, p.stderr
    assert find_mount(str(mountpoint)) is None and process_gone(pid)


def test_lazy_detaches_a_busy_mount(layer, mountpoint):
    assert cli("mount", layer, mountpoint).returncode == 0
    pid = int(os.getxattr(mountpoint, "user.nydus.mount.pid"))
    with open(mountpoint / "rootfs" / "etc" / "motd", "rb"):
        p = cli("umount", "--lazy", mountpoint)
        assert p.returncode == 0, p.stderr
        assert find_mount(str(mountpoint)) is None
    deadline = time.monotonic() + 10
    while not process_gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process_gone(pid)


def test_mounting_over_files_warns(layer, mountpoint):
    (mountpoint / "notes.txt").write_text("mine")
    p = cli("mount", layer, mountpoint)
    assert p.returncode == 0, p.stderr
    assert p.stderr.startswith(f"nydus-inspect: warning: {mountpoint} is not empty (notes.txt")
    assert "hidden while the mount is there" in p.stderr and p.stderr.count("\n") == 1
    assert sorted(os.listdir(mountpoint)) == ["entries", "rootfs"]
    assert cli("umount", mountpoint).returncode == 0
    assert (mountpoint / "notes.txt").read_text() == "mine"
