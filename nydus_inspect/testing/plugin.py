"""pytest plugin (entry point ``pytest11``): fixtures to build, open and mount nydus layers in users' tests.

Fixtures:

- ``nydus_pack(source, **pack_options) -> Path``: a nydus layer blob built in a temporary directory from a
  tree spec, a directory, or an existing layer tar (plain, gzip or zstd).
- ``nydus_layer(path, **open_options) -> Layer``: an opened layer, closed after the test.
- ``nydus_mount(*layers, **options) -> Mounted``: layers mounted with FUSE (``.rootfs``, ``.entries``),
  unmounted after the test, whether it passed or failed.

Markers: ``nydus_mount`` is put on every test that uses the mount fixture, so ``-m "not nydus_mount"``
leaves out the tests that need FUSE.

Assertion helpers live in :mod:`nydus_inspect.testing`. ``assert layer_tree(a) == layer_tree(b)`` shows
the differences entry by entry. The plugin imports nothing of the reader until a fixture runs: every
project with the plugin installed loads it at pytest's start-up.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

MARKERS = {
    "nydus_mount": "the test mounts nydus layers with FUSE (needs /dev/fuse, and root or fusermount3)",
}


def pytest_configure(config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if "nydus_mount" in getattr(item, "fixturenames", ()):
            item.add_marker("nydus_mount")


def pytest_assertrepr_compare(op, left, right):
    from . import LayerTree, explain_difference

    if op == "==" and isinstance(left, LayerTree) and isinstance(right, LayerTree):
        return explain_difference(left, right)
    return None


@pytest.fixture
def nydus_pack(tmp_path_factory):
    """Build a nydus layer blob: ``nydus_pack(source, **pack_options) -> Path``.

    ``source`` is a tree spec (``{"etc/passwd": b"...", "bin/sh": Symlink("busybox")}``), a directory
    (xattrs, owners, devices, hard links and the root's mtime kept) or an existing layer tar (``.tar``,
    ``.tar.gz``, ``.tar.zst``). Options: ``compressor`` (zstd, lz4_block, none), ``digester`` (blake3,
    sha256), ``chunk_size``. Each call writes a new blob in a temporary directory."""
    from . import build_layer

    counter = [0]

    def make(spec, **pack_options):
        __tracebackhide__ = True
        counter[0] += 1
        out = tmp_path_factory.mktemp("nydus-layer") / f"layer-{counter[0]}.blob"
        return build_layer(spec, out, **pack_options)

    return make


@pytest.fixture
def nydus_layer():
    """Open a layer: ``nydus_layer(path, blob_dir=None, blobs=None) -> Layer`` (closed after the test).

    The layer answers ``.rafs.lookup(path)``, ``.read_file(node)``, ``.toc``, ``.chunk_infos``; the
    helpers :func:`nydus_inspect.testing.lookup` and :func:`~nydus_inspect.testing.read_file` follow
    symlinks in a path as the kernel does."""
    from ..layer import open_layer

    opened = []

    def open_(path, **options):
        layer = open_layer(str(path), **options)
        opened.append(layer)
        return layer

    yield open_
    for layer in opened:
        layer.close()


@dataclass
class Mounted:
    """A live mount made by ``nydus_mount``."""

    path: Path  # the mount point
    rootfs: Path  # the file tree (several layers merged with OCI whiteouts)
    entries: Path  # each blob's ToC entries, decompressed, with user.nydus.* xattrs


def fuse_problem() -> str | None:
    """Why a FUSE mount cannot be made here, or None."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist"
    if os.geteuid() != 0 and not shutil.which("fusermount3"):
        return "not root and no fusermount3"
    for module in ("pyfuse3", "trio"):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (pip install 'nydus-inspect[mount]')"
    return None


@pytest.fixture
def nydus_mount(tmp_path_factory):
    """Mount layers read-only with FUSE: ``nydus_mount(*layers, blob_dir=None, cache_size="64M") -> Mounted``.

    The mount is made as ``nydus-inspect mount`` makes it (a daemon that answers before the call
    returns) and unmounted after the test, also when the test failed or left files open. Without
    FUSE the test is skipped, with the reason."""
    problem = fuse_problem()
    if problem:
        pytest.skip(f"nydus_mount: FUSE is unavailable: {problem}")
    made: list[Path] = []

    def mount(*layers, blob_dir: str | os.PathLike | None = None, cache_size: str = "64M") -> Mounted:
        __tracebackhide__ = True
        if not layers:
            raise TypeError("nydus_mount needs at least one layer")
        mp = tmp_path_factory.mktemp("nydus-mount")
        cmd = [sys.executable, "-m", "nydus_inspect", "mount", "--cache-size", cache_size]
        if blob_dir is not None:
            cmd += ["--blob-dir", str(blob_dir)]
        cmd += [*map(str, layers), str(mp)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        if proc.returncode != 0:
            pytest.fail(
                f"nydus_mount: {proc.stderr.strip() or f'mount exited {proc.returncode}'}", pytrace=False
            )
        made.append(mp)
        return Mounted(mp, mp / "rootfs", mp / "entries")

    yield mount
    from ..mount.daemon import find_mount, unmount

    for mp in reversed(made):
        if find_mount(os.path.realpath(mp)) is not None:
            unmount(str(mp), lazy=True)  # a failed test may have left a file open
