"""The TUI on plain EROFS images made by the real mkfs.erofs, driven with Pilot: the overview shows the EROFS
superblock as ``info`` reads it, the files screen the tree with details, each file's pieces and compressed
extents (pclusters) and a preview read through them, and the screens that show nydus parts say plainly
that there are none."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("textual")

from fixtures_util import run_cli  # noqa: E402
from textual.widgets import DataTable, Static, Tree  # noqa: E402
from tui_helpers import A_TXT, B_BIN, drive, make_tar, press, settle, type_prompt  # noqa: E402

pytestmark = pytest.mark.erofs


def rows(table: DataTable) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def text_of(app, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).content)


@pytest.fixture(scope="module")
def images(erofs_utils, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("erofs-tui")
    tar = make_tar(d / "small.tar", many=20)
    return {
        "plain": erofs_utils.mkfs(d / "plain.erofs", tar, "--tar=f"),
        "lz4hc": erofs_utils.mkfs(d / "lz4hc.erofs", tar, "--tar=f", "-zlz4hc", "-C16384"),
    }


@pytest.mark.parametrize("kind", ["plain", "lz4hc"])
def test_erofs_overview_files_and_chunks(images, kind):
    image = images[kind]
    info = json.loads(run_cli("info", "--json", image).stdout)["erofs"]

    async def script(app, pilot):
        s = app.screen.query_one("#summary")
        assert s.value("kind") == "erofs"
        b = app.screen.query_one("#bootstrap")
        assert b.value("fs version").startswith("plain EROFS")
        assert b.value("inodes") == f"{info['inodes']:,}"
        assert b.value("root nid") == str(info["root_nid"])
        assert b.value("uuid") == info["uuid"]
        ((_, blobs, *_),) = rows(app.screen.query_one("#blobs", DataTable))
        assert blobs == "(no blob table: a plain EROFS image holds its file data)"
        await press(app, pilot, "2")
        assert "plain EROFS image: it has no ToC" in text_of(app, "#toc-about")
        await press(app, pilot, "3")
        assert "no nydus chunks" in text_of(app, "#chunks-status")
        await press(app, pilot, "4")
        tree = app.screen.query_one("#tree", Tree)
        assert [str(c.label) for c in tree.root.children] == ["etc/", "many/", "srv/"]
        await type_prompt(app, pilot, "slash", "needle")
        detail = app.screen.query_one("#file-detail")
        assert tree.cursor_node.data.path == b"/srv/deep/er/needle.txt"
        assert detail.value("size") == "9"
        assert text_of(app, "#file-preview").endswith("found me\n")
        assert app.screen.reveal("/srv/a.txt")
        await settle(app, pilot)
        chunks = rows(app.screen.query_one("#file-chunks", DataTable))
        # Every byte of the file is covered, in file order, by pieces or extents that add up to its size.
        offsets = [int(r[1].replace(",", "")) for r in chunks]
        sizes = [int(r[7].replace(",", "")) for r in chunks]
        assert offsets[0] == 0 and sum(sizes) == len(A_TXT)
        assert all(a + n == b for a, n, b in zip(offsets, sizes, offsets[1:]))
        assert {r[8] for r in chunks} == ({"no"} if kind == "plain" else {"yes"})
        assert text_of(app, "#file-preview").startswith(
            f"first 4,096 of {len(A_TXT):,} bytes (text)\nline 00000"
        )
        assert app.screen.reveal("/srv/b.bin")
        await settle(app, pilot)
        assert "00000000  00 01 02 03" in text_of(app, "#file-preview")
        assert detail.value("size").startswith(f"{len(B_BIN):,} ")
        assert app.screen.reveal("/srv/attrs")
        await settle(app, pilot)
        assert detail.value("xattr") == "user.note = 'hello xattr'"
        assert app.screen.reveal("/srv/link")
        await settle(app, pilot)
        assert detail.value("target") == "a.txt"

    drive([image], script)


def test_erofs_damaged_pcluster_shows_in_the_preview(images, tmp_path):
    """A pcluster that does not decode is said in the preview, not a crash of the app."""
    from nydus_inspect.layer import open_layer

    image = tmp_path / "bad.erofs"
    data = bytearray(images["lz4hc"].read_bytes())
    with open_layer(str(images["lz4hc"])) as layer:
        node = next(n for n in layer.rafs.walk() if n.path == b"/srv/a.txt")
        z = next(z for z in layer.rafs.compressed_extents(node) if z.offset + z.stored <= len(data))
    data[z.offset : z.offset + z.stored] = os.urandom(z.stored)
    image.write_bytes(bytes(data))

    async def script(app, pilot):
        await press(app, pilot, "4")
        assert app.screen.reveal("/srv/a.txt")
        await settle(app, pilot)
        assert text_of(app, "#file-preview").startswith("content does not read")

    drive([image], script)


@pytest.mark.parametrize("with_tar", [True, False], ids=["with-tar", "without-tar"])
def test_erofs_tar_index_previews_through_the_tar(erofs_utils, tmp_path, with_tar):
    """A --tar=i index (512-byte blocks): the files screen shows each file's one chunk on the tar and previews
    it read from the tar given with --blob; without the tar the preview says where the data is."""
    tar = make_tar(tmp_path / "small.tar", many=5)
    image = erofs_utils.mkfs(tmp_path / "index.erofs", tar, "--tar=i")

    async def script(app, pilot):
        await press(app, pilot, "4")
        assert app.screen.reveal("/srv/a.txt")
        await settle(app, pilot)
        chunks = rows(app.screen.query_one("#file-chunks", DataTable))
        sizes = [int(r[7].replace(",", "")) for r in chunks]
        assert sum(sizes) == len(A_TXT)
        preview = text_of(app, "#file-preview")
        if with_tar:
            assert preview.startswith(f"first 4,096 of {len(A_TXT):,} bytes (text)\nline 00000"), preview
        else:
            assert "blob device" in preview and "--blob" in preview, preview

    drive([image], script, blobs=[tar] if with_tar else None)


def test_an_image_of_several_erofs_layers_is_browsed_layer_by_layer(tmp_path):
    """A containerd EROFS image of two layers (our convert --to erofs of an OCI image): the TUI shows each
    layer as a layer of its own (``]`` goes to the next), the upper layer's files screen holding what that
    layer adds, its whiteout included (the overlaid tree is what ls, cat and mount read)."""
    from test_convert import simple_layout
    from test_erofs_overlay import layer_tar

    lower = [{"name": "etc", "type": "dir"}, {"name": "etc/base.conf", "data": b"base\n"}]
    upper = [
        {"name": "etc", "type": "dir"},
        {"name": "etc/.wh.base.conf"},
        {"name": "etc/new.conf", "data": b"new\n"},
    ]
    src = simple_layout(tmp_path / "src", [layer_tar(lower), layer_tar(upper)], ["gzip", "gzip"])
    out = tmp_path / "erofs"
    assert run_cli("convert", src, out, "--to", "erofs").returncode == 0

    async def script(app, pilot):
        assert len(app.views) == 2
        await press(app, pilot, "4")
        tree = app.screen.query_one("#tree", Tree)
        assert app.screen.reveal("/etc/base.conf")
        await settle(app, pilot)
        assert text_of(app, "#file-preview").endswith("base\n")
        await press(app, pilot, "right_square_bracket")
        assert app.current == 1
        assert app.screen.reveal("/etc/new.conf")
        await settle(app, pilot)
        assert text_of(app, "#file-preview").endswith("new\n")
        # The upper layer's own tree: its whiteout of base.conf, as mkfs.erofs --aufs stores it.
        assert app.screen.reveal("/etc/base.conf")
        await settle(app, pilot)
        assert tree.cursor_node.data.path == b"/etc/base.conf"
        assert app.screen.query_one("#file-detail").value("type") == "char"

    drive([out], script)
