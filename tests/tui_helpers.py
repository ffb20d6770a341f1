"""Helpers of the TUI tests: drive NydusApp with Pilot, build small layers, read what the screens show."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import tarfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from nydus_inspect import open_layer
from nydus_inspect.codecs import Compressor
from nydus_inspect.pack import PackOptions, pack

ROOT = Path(__file__).resolve().parent.parent
SIZE = (120, 36)

TOC_BLOB = "nydus/toc/2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca"
DATA_BLOB_ID = "be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef"
DATA_BLOB = f"nydus/blobs/{DATA_BLOB_ID}"
BOOTSTRAP = "nydus/bootstrap/rafs-v6-2.2.boot"

T0 = 1_700_000_000
A_TXT = b"".join(b"line %05d of a\n" % i for i in range(1200))  # 19200 bytes: 5 chunks of 4 KiB
B_BIN = bytes(range(256)) * 40
MANY = 1500  # entries of /many: more than one page (DIR_PAGE) of the tree


def make_tar(path: Path, *, many: int = MANY, a_txt: bytes = A_TXT) -> Path:
    """A small layer tar with known facts: text and binary files, a multi-chunk file, a symlink, a
    hardlink, xattrs, and a directory of ``many`` entries."""

    def add(ti: tarfile.TarInfo, data: bytes | None = None) -> None:
        ti.mtime = T0
        if data is not None:
            ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data) if data is not None else None)

    def d(name: str) -> None:
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode = tarfile.DIRTYPE, 0o755
        add(ti)

    def f(name: str, data: bytes, mode: int = 0o644, **kw) -> None:
        ti = tarfile.TarInfo(name)
        ti.mode = mode
        for k, v in kw.items():
            setattr(ti, k, v)
        add(ti, data)

    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for name in ("etc", "srv", "srv/deep", "srv/deep/er", "many"):
            d(name)
        f("etc/motd", b"welcome to nydus\n", uid=1000, gid=100)
        f("srv/a.txt", a_txt)
        f("srv/b.bin", B_BIN, mode=0o600)
        ti = tarfile.TarInfo("srv/attrs")
        ti.pax_headers = {"SCHILY.xattr.user.note": "hello xattr"}
        ti.mode = 0o640
        add(ti, b"with an xattr\n")
        f("srv/deep/er/needle.txt", b"found me\n")
        ti = tarfile.TarInfo("srv/link")
        ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, "a.txt", 0o777
        add(ti)
        ti = tarfile.TarInfo("srv/motd-hard")
        # The link's header says what its target's does, as tar writers write it (its own would win).
        ti.type, ti.linkname, ti.mode, ti.uid, ti.gid = tarfile.LNKTYPE, "etc/motd", 0o644, 1000, 100
        add(ti)
        for i in range(many):
            f(f"many/e{i:05d}", b"")
    return path


def pack_layer(tar: Path, out: Path, compressor: str = "zstd", chunk_size: int = 0x1000) -> Path:
    pack(str(tar), str(out), PackOptions(compressor=Compressor(compressor), chunk_size=chunk_size))
    return out


def load_make_fixtures():
    """The project's fixture script (fixtures/make_fixtures.py); skip when it is absent."""
    script = ROOT / "fixtures" / "make_fixtures.py"
    if not script.is_file():
        pytest.skip("fixtures/make_fixtures.py not found")
    spec = importlib.util.spec_from_file_location("make_fixtures_tui", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def flip(path: Path, offset: int, bit: int = 0x10) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([b ^ bit]))


async def settle(app, pilot, delay: float = 0.15) -> None:
    """Wait until the app's workers are done and what they posted has been drawn."""
    for _ in range(3):
        await pilot.pause()
        await app.workers.wait_for_complete()
    await pilot.pause(delay)
    await app.workers.wait_for_complete()
    await pilot.pause()


def drive(
    paths: list,
    script: Callable[..., Awaitable[None]],
    *,
    size=SIZE,
    blob_dir: str | None = None,
    source: str | None = None,
    start: str = "overview",
    jobs_in_process: bool = False,
    blobs: list | None = None,
) -> None:
    """Open ``paths`` (``blobs``: files given with --blob), run the app headless and hand ``(app, pilot)`` to
    ``script``."""
    from tui.app import NydusApp
    from tui.cli import tui_layers

    files = [str(b) for b in blobs] if blobs else None
    layers = [x for p in paths for x in tui_layers(open_layer(str(p), blob_dir=blob_dir, blobs=files))]

    async def main() -> None:
        app = NydusApp(layers, source=source, start=start, jobs_in_process=jobs_in_process)
        async with app.run_test(size=size) as pilot:
            await settle(app, pilot)
            await script(app, pilot)

    try:
        asyncio.run(main())
    finally:
        for layer in layers:
            layer.close()


async def press(app, pilot, *keys: str) -> None:
    await pilot.press(*keys)
    await settle(app, pilot)


async def type_prompt(app, pilot, key: str, text: str) -> None:
    """Open a prompt with ``key``, type ``text`` and submit it."""
    await pilot.press(key)
    await pilot.pause()
    await pilot.press(*list(text), "enter")
    await settle(app, pilot)
