"""The TUI at the sizes people use (80x24 and 160x50), driven with Pilot: nothing a user needs is cut or
wrapped away, a finding's chunk is shown on screen, no progress bar runs before anything has started, and
file capabilities read as getcap prints them (the real getcap is the judge)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import struct
import subprocess
import tarfile

import pytest

pytest.importorskip("textual")

from textual.widgets import DataTable, ProgressBar  # noqa: E402
from tui_helpers import drive, flip, make_tar, pack_layer, press, settle  # noqa: E402

from nydus_inspect import open_layer  # noqa: E402
from nydus_inspect.formats import vfs_cap  # noqa: E402
from nydus_inspect.testing import build_tar  # noqa: E402

SIZES = [(80, 24), (160, 50)]
MIB = 1 << 20
PING_CAPS = struct.pack("<IIIII", vfs_cap.REVISION_2 | vfs_cap.FLAGS_EFFECTIVE, 1 << 13, 0, 0, 0)
HEX_LINE = re.compile(r"^[0-9a-f]{8}  [0-9a-f]{2}( {1,2}[0-9a-f]{2})*  \|.{1,16}\|$")


@pytest.fixture(scope="module")
def layers(tmp_path_factory):
    d = tmp_path_factory.mktemp("fit")
    # 3,000 chunks of 4 KiB, one of them damaged far down the table.
    blocks = b"".join(i.to_bytes(4, "little") + bytes(4092) for i in range(3000))
    long = pack_layer(make_tar(d / "long.tar", many=0, a_txt=blocks), d / "long.blob", "none")
    bad = d / "bad.blob"
    shutil.copyfile(long, bad)
    with open_layer(str(bad)) as layer:
        target = 2500
        flip(bad, layer.chunk_infos[target].compressed_offset + 7)
    # 1 MiB chunks of incompressible bytes, in a file with file capabilities.
    tar = d / "mib.tar"
    data = hashlib.shake_256(b"mib").digest(3 * MIB)
    with tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo("usr/bin/ping")
        ti.size, ti.mode = len(data), 0o755
        ti.pax_headers = {"SCHILY.xattr.security.capability": PING_CAPS.decode("latin-1")}
        tf.addfile(ti, __import__("io").BytesIO(data))
    mib = pack_layer(tar, d / "mib.blob", chunk_size=MIB)
    return {"bad": bad, "target": target, "mib": mib}


def footer(app) -> str:
    return app.screen_text().splitlines()[-1]


@pytest.mark.parametrize("size", SIZES)
def test_enter_on_a_chunk_finding_shows_its_row_on_screen(layers, size):
    target = layers["target"]

    async def script(app, pilot):
        await press(app, pilot, "5", "r")
        table = app.screen.query_one("#findings", DataTable)
        checks = [str(table.get_row_at(i)[0]) for i in range(table.row_count)]
        table.move_cursor(row=checks.index("chunk.digest"))
        await settle(app, pilot)
        await press(app, pilot, "enter")
        assert app.current_mode == "chunks"
        chunks = app.screen.table
        assert chunks.row == target
        shown = [line.split()[0] for line in chunks.text_lines()[1:] if line.strip()]
        assert str(target) in shown, (chunks.scroll_y, shown[:3])
        assert any(line.split()[:1] == [str(target)] for line in app.screen_text().splitlines())

    drive([layers["bad"]], script, size=size)


@pytest.mark.parametrize("size", SIZES)
def test_every_screen_says_how_to_get_help_and_quit(layers, size):
    async def script(app, pilot):
        for key in "123456":
            await press(app, pilot, key)
            line = footer(app)
            assert "? Help" in line and "q Quit" in line, (key, line)

    drive([layers["mib"]], script, size=size)


@pytest.mark.parametrize("size", SIZES)
def test_chunk_table_numbers_and_files_fit(layers, size):
    async def script(app, pilot):
        await press(app, pilot, "3")
        table = app.screen.table
        lines = table.text_lines()
        assert lines[0].split() == [
            "INDEX",
            "C.OFFSET",
            "C.SIZE",
            "U.OFFSET",
            "U.SIZE",
            "COMP",
            "DIGEST",
            "FILES",
        ]
        rows = [line.split() for line in lines[1:4]]
        assert [r[0] for r in rows] == ["0", "1", "2"]
        for k, r in enumerate(rows):
            assert r[1:5] == [f"{k * MIB:,}", "1,048,576", f"{k * MIB:,}", "1,048,576"], r
            assert r[-1] == "/usr/bin/ping"
        # Nothing needs a horizontal scroll: the table is as wide as its place on screen.
        assert table.virtual_size.width <= table.scrollable_content_region.width
        screen = app.screen_text()
        assert "1,048,5…" not in screen and "/usr/bin/ping" in screen

    drive([layers["mib"]], script, size=size)


def _hex_lines(widget) -> list[str]:
    text = widget.content.plain
    width = widget.content_region.width
    assert max(len(line) for line in text.splitlines()) <= width, (width, text[:200])
    dump = [line for line in text.splitlines() if line[:8] and all(c in "0123456789abcdef" for c in line[:8])]
    assert dump and all(HEX_LINE.match(line) for line in dump), dump[:3]
    return dump


@pytest.mark.parametrize("size", SIZES)
def test_hex_dumps_fit_their_pane(layers, size):
    """Chunks (a checked chunk's bytes), Files (a binary file's head) and ToC (image.blob): each hex line
    keeps its offset, bytes and text column on one screen line."""
    data = hashlib.shake_256(b"mib").digest(64)

    async def script(app, pilot):
        await press(app, pilot, "3", "v")
        dump = _hex_lines(app.screen.query_one("#chunk-data"))
        first = dump[0].split("|")[0].split()[1:]
        assert bytes.fromhex("".join(first)) == data[: len(first)]
        await press(app, pilot, "4")
        assert app.screen.reveal("/usr/bin/ping")
        await settle(app, pilot)
        _hex_lines(app.screen.query_one("#file-preview"))
        await press(app, pilot, "2")
        _hex_lines(app.screen.query_one("#toc-hex"))
        screen = app.screen_text()
        assert any(
            line.strip(" │").startswith("00000000  ") and line.count("|") >= 2 for line in screen.splitlines()
        )

    drive([layers["mib"]], script, size=size)


@pytest.mark.parametrize("size", SIZES)
def test_finding_messages_are_on_screen(layers, size):
    async def script(app, pilot):
        await press(app, pilot, "5", "r")
        report = app.screen.reports[id(app.view)]
        assert len(report.findings) == 3
        screen = app.screen_text().splitlines()
        for f in report.findings:
            assert any(f.check in line and f.message in line for line in screen), (f.message, screen[:10])

    drive([layers["bad"]], script, size=size)


def test_no_progress_bar_before_a_run(layers):
    async def script(app, pilot):
        await press(app, pilot, "5")
        bar = app.screen.query_one(ProgressBar)
        assert not bar.display and "--%" not in app.screen_text()
        await press(app, pilot, "r")
        assert bar.display and bar.percentage == 1 and "100%" in app.screen_text()

    drive([layers["bad"]], script, size=(80, 24))


@pytest.mark.parametrize("size", SIZES)
def test_security_capability_shows_as_getcap_prints_it(layers, size):
    async def script(app, pilot):
        await press(app, pilot, "4")
        assert app.screen.reveal("/usr/bin/ping")
        await settle(app, pilot)
        detail = app.screen.query_one("#file-detail")
        assert detail.value("xattr") == "security.capability = cap_net_raw=ep"
        assert "cap_net_raw=ep" in app.screen_text()

    drive([layers["mib"]], script, size=size)


# ---------------------------------------------------------------------------- the real getcap as judge
GETCAP_SPECS = [
    "cap_net_bind_service=ep",
    "cap_net_admin,cap_net_raw=ep",
    "cap_chown=p",
    "=ep",
    "=eip",
    "=ip",
    "cap_chown=i cap_kill=ip",
    "cap_chown=ip cap_kill=p",
    "cap_chown,cap_kill=eip cap_setuid=ep",
    "cap_chown=eip cap_setuid,cap_kill=ep",
    "all=p cap_sys_admin-p",
    "all=ep cap_sys_admin-ep",
    "all=p cap_kill=i",
    "cap_chown=ei cap_kill=eip",
    "cap_chown=p cap_kill=i cap_setuid=ip",
    "cap_bpf,cap_perfmon,cap_checkpoint_restore=ep",
]


@pytest.fixture(scope="module")
def capped(tmp_path_factory):
    """Files given capabilities by the real setcap, and what the real getcap prints for each."""
    setcap, getcap = shutil.which("setcap"), shutil.which("getcap")
    if not setcap or not getcap:
        pytest.skip("setcap/getcap (libcap2-bin) not installed")
    root = tmp_path_factory.mktemp("caps") / "rootfs"
    (root / "bin").mkdir(parents=True)
    said = {}
    for k, spec in enumerate([*GETCAP_SPECS, "ns"]):
        path = root / "bin" / f"f{k:02d}"
        path.write_bytes(b"x")
        argv = [setcap, "-n", "1000", "cap_net_raw=ep", path] if spec == "ns" else [setcap, spec, path]
        p = subprocess.run(argv, capture_output=True, text=True)
        if p.returncode:
            pytest.skip(f"setcap does not work here: {p.stderr.strip()}")
        out = subprocess.run([getcap, "-n", path], capture_output=True, text=True, check=True).stdout
        said[f"/bin/{path.name}"] = out.strip().split(" ", 1)[1]
    return root, said


def test_capability_text_is_getcaps(capped):
    root, said = capped
    assert said["/bin/f16"] == "cap_net_raw=ep [rootid=1000]"  # revision 3
    for path, want in said.items():
        value = os.getxattr(root / path.lstrip("/"), "security.capability")
        assert vfs_cap.describe(value) == want, (path, value.hex())


def test_capabilities_of_a_packed_directory_in_the_tui(capped, tmp_path):
    root, said = capped
    layer = pack_layer(build_tar(root, tmp_path / "caps.tar"), tmp_path / "caps.blob")

    async def script(app, pilot):
        await press(app, pilot, "4")
        detail = app.screen.query_one("#file-detail")
        for path, want in said.items():
            assert app.screen.reveal(path)
            await settle(app, pilot, 0.05)
            assert detail.value("xattr") == f"security.capability = {want}", path

    drive([layer], script, size=(160, 50))


def test_a_capability_value_that_does_not_decode_stays_hex():
    assert vfs_cap.describe(b"\x01\x00") is None  # shorter than magic_etc
    assert vfs_cap.describe(struct.pack("<IIIII", 0x07000000, 1, 0, 0, 0)) is None  # no such revision
    assert vfs_cap.describe(PING_CAPS[:16]) is None  # revision 2 cut short
    with pytest.raises(vfs_cap.FormatError, match="unknown revision"):
        vfs_cap.parse(struct.pack("<IIIII", 0x07000000, 1, 0, 0, 0))


def test_analysis_counts_one_file_as_one_file(layers):
    async def script(app, pilot):
        await press(app, pilot, "6")
        for _ in range(50):
            if app.screen.query_one("#analysis-image").value("final image"):
                break
            await settle(app, pilot, 0.1)
        assert app.screen.query_one("#analysis-image").value("final image").startswith("3 entries, 1 file, ")

    drive([layers["mib"]], script, size=(80, 24))
