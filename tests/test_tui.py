"""The Textual app driven with Pilot on the real vectors and on layers packed here: each screen shows the right
values, verify finds an injected bit flip and names the chunk and the file, navigation and search work."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("textual")

from textual.widgets import DataTable, Static, Tree  # noqa: E402
from tui_helpers import (  # noqa: E402
    A_TXT,
    BOOTSTRAP,
    DATA_BLOB,
    DATA_BLOB_ID,
    MANY,
    ROOT,
    TOC_BLOB,
    drive,
    flip,
    load_make_fixtures,
    make_tar,
    pack_layer,
    press,
    settle,
    type_prompt,
)

from nydus_inspect import open_layer  # noqa: E402
from nydus_inspect.query import file_index  # noqa: E402


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tui")
    tar = make_tar(d / "small.tar")
    return {
        "tar": tar,
        "zstd": pack_layer(tar, d / "small.blob"),
        "none": pack_layer(tar, d / "raw.blob", "none"),
    }


def rows(table: DataTable) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def text_of(app, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).content)


# ---------------------------------------------------------------------------- overview
@pytest.mark.vectors
def test_overview_of_toc_vector(vectors):
    async def script(app, pilot):
        s = app.screen.query_one("#summary")
        assert s.value("kind") == "nydus-blob"
        assert s.value("sha256") == "2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca"
        assert s.value("ToC").startswith("4 entries, digest 4fdfbb36ef74a3c6")
        assert s.value("file size").startswith("10,034")
        assert s.value("chunks").startswith("3 ")
        assert s.value("chunk data") == "2,829 (2.8 KiB) stored, 12,288 (12.0 KiB) uncompressed"
        b = app.screen.query_one("#bootstrap")
        assert b.value("fs version").startswith("RAFS v6")
        assert (b.value("inodes"), b.value("compressor"), b.value("digester")) == ("4", "zstd", "blake3")
        assert b.value("chunk size").startswith("0x100000") and b.value("chunk table") == "3 records"
        (blob,) = rows(app.screen.query_one("#blobs", DataTable))
        assert blob[1] == "d788a0eac4ff9779bc2eae3842117a918d847d90fddbea1503f7c5296a4a7de3"
        assert blob[2:7] == ["3", "zstd", "blake3", "2,829", "12,288"] and blob[8] == "this file"
        assert "nydus-inspect — Overview" in app.screen_text()

    drive([vectors / TOC_BLOB], script)


@pytest.mark.vectors
def test_overview_of_bootstrap_with_blob_dir_and_layer_switch(vectors):
    async def script(app, pilot):
        b = app.screen.query_one("#bootstrap")
        assert b.value("inodes") == "3" and b.value("blobs") == "1"
        (blob,) = rows(app.screen.query_one("#blobs", DataTable))
        assert blob[1] == DATA_BLOB_ID and blob[2] == "2" and blob[8] == "found"
        layers = rows(app.screen.query_one("#layers", DataTable))
        assert [r[1] for r in layers] == ["rafs-v6-2.2.boot", DATA_BLOB_ID]
        await press(app, pilot, "right_square_bracket")
        assert app.view.name == DATA_BLOB_ID
        s = app.screen.query_one("#summary")
        assert s.value("kind") == "nydus-blob" and s.value("chunks").startswith("2 ")
        assert app.screen.query_one("#bootstrap").value("bootstrap").startswith("none in this file")
        assert "[2/2]" in app.screen.sub_title

    drive([vectors / BOOTSTRAP, vectors / DATA_BLOB], script, blob_dir=str(vectors / "nydus" / "blobs"))


# ---------------------------------------------------------------------------- ToC
@pytest.mark.vectors
def test_toc_screen_rows_verify_and_previews(vectors):
    async def script(app, pilot):
        await press(app, pilot, "2")
        table = app.screen.query_one("#toc", DataTable)
        got = rows(table)
        assert [r[0] for r in got] == ["image.blob", "blob.meta", "blob.meta.header", "blob.digest"]
        assert got[0][1:5] == ["none", "0", "7,802", "36,864"]
        assert got[3][2:5] == ["12,954", "64", "64"]
        assert "cfc89ed0739aef4e" in text_of(app, "#toc-about")
        # image.blob preview: the stored bytes as hex, at offset 0.
        assert (
            app.screen.query_one("#toc-hex", Static)
            .content.plain.splitlines()[1]
            .startswith("00000000  28 b5 2f fd")
        )
        await press(app, pilot, "a")
        assert [str(c) for c in table.get_column("check")] == ["match"] * 4
        await press(app, pilot, "down", "down")  # blob.meta.header: decoded fields
        fields = app.screen.query_one("#toc-fields")
        assert fields.value("s_magic") == "0xb10bb10b" and fields.value("s_ci_entries") == "2"
        assert fields.value("s_ci_offset") == "8314" and "cap_tar_toc" in fields.value("features (names)")
        await press(app, pilot, "down")  # blob.digest
        assert app.screen.query_one("#toc-fields").value("chunk 0").startswith("f7e2735f1c6ae9cd")

    drive([vectors / DATA_BLOB], script)


@pytest.mark.vectors
def test_toc_preview_decodes_superblocks(vectors):
    async def script(app, pilot):
        await press(app, pilot, "2")
        await type_prompt(app, pilot, "slash", "boot")
        table = app.screen.query_one("#toc", DataTable)
        assert table.cursor_row == 3
        fields = app.screen.query_one("#toc-fields")
        assert fields.value("s_magic") == "0xe0f5e1e2" and fields.value("s_root_nid") == "128"
        assert fields.value("s_chunk_size") == "0x100000" and fields.value("digester") == "blake3"
        assert fields.value("s_inos") == "4"

    drive([vectors / TOC_BLOB], script)


def test_toc_verify_names_a_mismatch(small, tmp_path):
    bad = tmp_path / "bad.blob"
    shutil.copyfile(small["none"], bad)
    with open_layer(str(bad)) as layer:
        flip(bad, layer.chunk_infos[0].compressed_offset)

    async def script(app, pilot):
        await press(app, pilot, "2")
        await press(app, pilot, "a")
        checks = [str(c) for c in app.screen.query_one("#toc", DataTable).get_column("check")]
        assert checks[0] == "MISMATCH" and set(checks[1:]) == {"match"}
        await press(app, pilot, "home", "v")
        assert "sha256 differs" in text_of(app, "#toc-check")

    drive([bad], script)


# ---------------------------------------------------------------------------- chunks
def test_chunks_screen_table_jump_filter_search_verify(small):
    with open_layer(str(small["zstd"])) as layer:
        infos = layer.chunk_infos
        idx = file_index(layer)
        n = len(infos)
        a_chunks = [i for i in range(n) if idx.owners(0, i) == ["/srv/a.txt"]]
        n_compressed = sum(1 for i in range(n) if infos[i].compressed)
        digest3 = layer.chunk_digests[3].hex()

    async def script(app, pilot):
        await press(app, pilot, "3")
        table = app.screen.table
        assert len(table.rows) == n == len(a_chunks) + 5  # motd, a (5), b (2 distinct of 3), attrs, needle
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
        first = lines[1].split()
        assert first[0] == "0" and first[1] == "0" and first[3] == "0"
        assert first[6] == layer_digest_short(small["zstd"], 0)
        # Owners arrive with the file index.
        owner_col = {ln.split()[0]: ln.split()[-1] for ln in lines[1 : n + 1]}
        assert owner_col[str(a_chunks[0])] == "/srv/a.txt"
        detail = app.screen.query_one("#chunk-detail")
        assert detail.value("chunk").startswith(f"0 of {n}")
        # Jump by index, by compressed offset, by uncompressed offset.
        await type_prompt(app, pilot, "g", str(a_chunks[2]))
        assert table.row == a_chunks[2]
        assert detail.value("files") == "/srv/a.txt"
        await type_prompt(app, pilot, "g", f"@{infos[a_chunks[3]].compressed_offset + 1}")
        assert table.row == a_chunks[3]
        await type_prompt(app, pilot, "g", f"u@{infos[4].uncompressed_offset}")
        assert table.row == 4
        # Filter: compressed chunks only, then chunks of one file.
        await type_prompt(app, pilot, "f", "compressed")
        assert len(table.rows) == n_compressed
        assert all(infos[r].compressed for r in table.rows)
        await type_prompt(app, pilot, "f", "owner:b.bin")
        assert [idx.owners(0, r) for r in table.rows] == [["/srv/b.bin"]] * len(table.rows)
        assert "filter 'owner:b.bin'" in text_of(app, "#chunks-status")
        await press(app, pilot, "x")
        assert len(table.rows) == n
        # Search: a digest prefix, then a path (n: next match).
        await type_prompt(app, pilot, "slash", digest3[:12])
        assert table.row == 3
        await type_prompt(app, pilot, "slash", "a.txt")
        assert table.row == a_chunks[0]
        await press(app, pilot, "n")
        assert table.row == a_chunks[1]
        # Verify the chunk under the cursor: its bytes are the file's second 4 KiB.
        await press(app, pilot, "v")
        check = text_of(app, "#chunk-check")
        assert check.startswith("match") and "blake3 digest as recorded" in check
        assert A_TXT[4096 : 4096 + 40].decode() in text_of(app, "#chunk-data")

    drive([small["zstd"]], script)


def layer_digest_short(path: Path, i: int) -> str:
    with open_layer(str(path)) as layer:
        return layer.chunk_digests[i].hex()[:16] + "…"


def test_chunk_table_is_virtual(tmp_path):
    """A long table decodes only what is on screen, and paging moves the window."""
    blocks = b"".join(
        i.to_bytes(4, "little") + bytes(4092) for i in range(3000)
    )  # 3000 distinct 4 KiB chunks
    tar = make_tar(tmp_path / "long.tar", many=0, a_txt=blocks)
    layer_path = pack_layer(tar, tmp_path / "long.blob")

    async def script(app, pilot):
        await press(app, pilot, "3")
        table = app.screen.table
        total = len(table.rows)
        assert total > 3000
        assert table.rendered_rows <= 3 * table.visible_lines  # a screenful (or a few redraws of it)
        await press(app, pilot, "end")
        assert table.cursor == total - 1
        assert table.text_lines()[-1].split()[0] == str(total - 1)
        await press(app, pilot, "home", "pagedown", "pagedown")
        assert table.cursor == 2 * table.visible_lines
        assert table.text_lines()[1].split()[0] == str(table.cursor - table.visible_lines + 1)
        assert table.rendered_rows <= 12 * table.visible_lines

    drive([layer_path], script)


# ---------------------------------------------------------------------------- files
def test_files_screen_tree_details_preview_and_search(small):
    async def script(app, pilot):
        await press(app, pilot, "4")
        tree = app.screen.query_one("#tree", Tree)
        assert [str(c.label) for c in tree.root.children] == ["etc/", "many/", "srv/"]
        detail = app.screen.query_one("#file-detail")
        assert detail.value("type") == "dir" and detail.value("path") == "/"
        # Search a nested path: the tree opens down to it.
        await type_prompt(app, pilot, "slash", "needle")
        assert tree.cursor_node.data.path == b"/srv/deep/er/needle.txt"
        assert detail.value("size") == "9" and detail.value("mode") == "-rw-r--r-- (0644)"
        assert text_of(app, "#file-preview").endswith("found me\n")
        # A multi-chunk text file: its chunks with blob offsets, and a text preview read through the chunks.
        assert app.screen.reveal("/srv/a.txt")
        await settle(app, pilot)
        chunks = rows(app.screen.query_one("#file-chunks", DataTable))
        assert len(chunks) == 5
        assert [r[1] for r in chunks] == ["0", "4,096", "8,192", "12,288", "16,384"]
        assert chunks[0][2] == "0"
        assert text_of(app, "#file-preview").startswith(
            f"first 4,096 of {len(A_TXT):,} bytes (text)\nline 00000 of a"
        )
        # Binary content shows as hex.
        assert app.screen.reveal("/srv/b.bin")
        await settle(app, pilot)
        assert "00000000  00 01 02 03" in text_of(app, "#file-preview")
        assert detail.value("mode") == "-rw------- (0600)"
        # Symlink, xattrs, hardlinks and owner.
        assert app.screen.reveal("/srv/link")
        await settle(app, pilot)
        assert detail.value("target") == "a.txt" and detail.value("type") == "symlink"
        assert app.screen.reveal("/srv/attrs")
        await settle(app, pilot)
        assert detail.value("xattr") == "user.note = 'hello xattr'"
        assert app.screen.reveal("/etc/motd")
        await settle(app, pilot)
        assert detail.value("owner") == "uid 1000, gid 100" and detail.value("links") == "2"
        assert detail.value("hardlinks").endswith("/etc/motd, /srv/motd-hard")
        assert detail.value("mtime") == "2023-11-14 22:13:20 UTC"
        # `c` shows the highlighted chunk in the chunk table.
        assert app.screen.reveal("/srv/a.txt")
        await settle(app, pilot)
        await press(app, pilot, "c")
        assert app.current_mode == "chunks"
        assert app.screen.query_one("#chunk-detail").value("files") == "/srv/a.txt"

    drive([small["zstd"]], script)


def test_files_big_directory_pages(small):
    async def script(app, pilot):
        await press(app, pilot, "4")
        tree = app.screen.query_one("#tree", Tree)
        many = tree.root.children[1]
        many.expand()
        await settle(app, pilot)
        labels = [str(c.label) for c in many.children]
        assert (
            len(labels) == 1001 and labels[0] == "e00000" and labels[-1].startswith(f"… {MANY - 1000} more")
        )
        tree.select_node(many.children[-1])
        await settle(app, pilot)
        assert len(many.children) == MANY and str(many.children[-1].label) == f"e{MANY - 1:05d}"
        # Reveal loads the pages it needs.
        app.screen.load(app.view)
        await settle(app, pilot)
        assert app.screen.reveal(f"/many/e{MANY - 2:05d}")

    drive([small["zstd"]], script)


def test_files_big_directory_is_listed_off_the_event_loop(small, monkeypatch):
    """A directory past LIST_IN_THREAD bytes of entries is decoded in a thread, a "listing…" node shown until
    its first page replaces it; the event loop's thread never decodes it."""
    import threading

    import tui.screens.files as files

    monkeypatch.setattr(files, "LIST_IN_THREAD", 1024)  # /many's 1,500 entries take some 27 KiB

    async def script(app, pilot):
        await press(app, pilot, "4")
        rafs = app.view.layer.rafs
        listed_by = []
        go_on = threading.Event()  # the listing waits until the placeholder has been seen
        real = rafs.readdir

        def readdir(nid, **kw):
            listed_by.append(threading.current_thread())
            go_on.wait(10)
            return real(nid, **kw)

        monkeypatch.setattr(rafs, "readdir", readdir)
        tree = app.screen.query_one("#tree", Tree)
        many = tree.root.children[1]
        many.expand()
        await pilot.pause()
        assert [str(c.label) for c in many.children] == ["listing…"]
        go_on.set()
        await settle(app, pilot)
        labels = [str(c.label) for c in many.children]
        assert (
            len(labels) == 1001 and labels[0] == "e00000" and labels[-1].startswith(f"… {MANY - 1000} more")
        )
        assert len(listed_by) == 1 and listed_by[0] is not threading.main_thread()
        # Collapsed and expanded again, it is not listed again; a small directory is listed at once.
        many.collapse()
        many.expand()
        await settle(app, pilot)
        assert len(listed_by) == 1 and len(many.children) == 1001
        srv = next(c for c in tree.root.children if str(c.label) == "srv/")
        srv.expand()
        await pilot.pause()
        assert srv.children and "listing…" not in [str(c.label) for c in srv.children]
        assert listed_by[1] is threading.main_thread()

    drive([small["zstd"]], script)


def test_files_detail_follows_the_cursor_once_it_rests(small, monkeypatch):
    """While the cursor moves through the tree, the detail pane waits for it to rest (each node shown costs a
    decode and a layout pass): rows passed are never shown; the row it stops on is, and a command acting on
    the current node (`c`) shows it at once."""
    import tui.screens.files as files

    monkeypatch.setattr(files, "DETAIL_DELAY", 30.0)  # the cursor never rests long enough within this test

    async def script(app, pilot):
        await press(app, pilot, "4")
        screen = app.screen
        shown = []
        real = screen.show_node
        monkeypatch.setattr(screen, "show_node", lambda ref: (shown.append(ref.path), real(ref)))
        assert screen.reveal("/srv/a.txt")
        await settle(app, pilot)
        for _ in range(3):
            await pilot.press("up")
        await settle(app, pilot)
        assert shown == [] and screen.current.path == b"/"  # the root, shown when the screen loaded
        highlighted = screen.tree.cursor_node.data.path
        assert highlighted != b"/srv/a.txt"
        await pilot.press("c")
        await settle(app, pilot)
        assert shown == [highlighted] and screen.current.path == highlighted
        assert app.screen.query_one("#file-detail").value("path") == highlighted.decode()

    drive([small["zstd"]], script)


def test_files_screen_on_the_fixture_layer(tmp_path):
    """The project's every-type fixture: devices, whiteouts, xattrs and hardlink groups show as the tar says."""
    fx = load_make_fixtures()
    tar = tmp_path / "every-type.tar"
    tar.write_bytes(fx.every_type())
    layer = pack_layer(tar, tmp_path / "every.blob", chunk_size=0x10000)

    async def script(app, pilot):
        await press(app, pilot, "4")
        s = app.screen
        detail = s.query_one("#file-detail")
        assert s.reveal("/dev/null")
        await settle(app, pilot)
        assert detail.value("type") == "char" and detail.value("device") == "1, 3"
        assert s.reveal("/data/small.txt")
        await settle(app, pilot)
        assert text_of(app, "#file-preview") == "text\nhello, nydus\n"
        assert s.reveal("/hard/one")
        await settle(app, pilot)
        assert detail.value("hardlinks").endswith("/hard/one, /hard/two, /links/three")
        assert s.reveal("/attrs/file")
        await settle(app, pilot)
        assert "user.mime_type = 'text/plain'" in [v for k, v in detail.pairs if k == "xattr"]
        assert s.reveal("/links/to-dir")
        await settle(app, pilot)
        assert detail.value("target") == "../data"

    drive([layer], script)


# ---------------------------------------------------------------------------- verify
def test_verify_screen_finds_bit_flip_names_chunk_and_file_and_jumps(small, tmp_path):
    bad = tmp_path / "bad.blob"
    shutil.copyfile(small["none"], bad)
    with open_layer(str(bad)) as layer:
        idx = file_index(layer)
        target = [i for i in range(len(layer.chunk_infos)) if idx.owners(0, i) == ["/srv/a.txt"]][3]
        flip(bad, layer.chunk_infos[target].compressed_offset + 7)

    async def script(app, pilot):
        await press(app, pilot, "5")
        assert "r: run the full verification" in text_of(app, "#verify-status")
        await press(app, pilot, "r")
        status = text_of(app, "#verify-status")
        assert status.startswith("FAILED: 3 finding(s)")
        found = rows(app.screen.query_one("#findings", DataTable))
        by_check = {r[0]: r for r in found}
        assert set(by_check) == {"toc.entry", "chunk.digest", "chunk.table"}
        # Columns: check, message, where (the message first, so that a long place does not hide it).
        assert by_check["chunk.digest"][1] == "blake3 digest differs from blob.digest"
        assert by_check["chunk.digest"][2].startswith(f"chunk {target} of blob 0")
        assert "file /srv/a.txt" in by_check["chunk.digest"][2]
        assert by_check["toc.entry"][2].startswith("entry image.blob")
        # Enter on the chunk finding shows that chunk in the chunk table.
        table = app.screen.query_one("#findings", DataTable)
        table.move_cursor(row=[r[0] for r in found].index("chunk.digest"))
        await settle(app, pilot)
        detail = app.screen.query_one("#finding-detail")
        assert detail.value("chunk") == str(target) and detail.value("path") == "/srv/a.txt"
        await press(app, pilot, "enter")
        assert app.current_mode == "chunks"
        assert app.screen.table.row == target

    drive([bad], script)


def test_verify_screen_round_trip_in_a_child_process(small, tmp_path):
    """The real configuration: the walk and the verification run in child processes; --source adds the
    round trip, and a different source tar shows its differences."""
    other = make_tar(tmp_path / "other.tar", a_txt=A_TXT + b"more\n")

    async def script(app, pilot):
        assert app.jobs_in_process
        await press(app, pilot, "5", "r")
        assert text_of(app, "#verify-status").startswith("FAILED")
        found = rows(app.screen.query_one("#findings", DataTable))
        assert {(r[0], r[2]) for r in found} == {
            ("roundtrip", "field size, file /srv/a.txt"),
            ("roundtrip", "field sha256, file /srv/a.txt"),
        }
        await press(app, pilot, "3")
        assert (
            app.view.index is not None and app.screen.query_one("#chunk-detail").value("files") == "/etc/motd"
        )

    drive([small["zstd"]], script, source=str(other), jobs_in_process=True)

    async def clean(app, pilot):
        await press(app, pilot, "5", "r")
        assert text_of(app, "#verify-status").startswith("OK: checked")
        assert "roundtrip entries" in text_of(app, "#verify-status")
        assert app.screen.query_one("#findings", DataTable).row_count == 0

    drive([small["zstd"]], clean, source=str(small["tar"]), jobs_in_process=True)


# ---------------------------------------------------------------------------- keys, help, palette
def test_help_palette_search_prompt_and_quit(small):
    async def script(app, pilot):
        await press(app, pilot, "question_mark")
        assert type(app.screen).__name__ == "HelpScreen"
        assert "command palette" in app.screen_text()
        await press(app, pilot, "escape")
        assert app.current_mode == "overview" and type(app.screen).__name__ == "OverviewScreen"
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for t in (
            "Screen: Overview",
            "Screen: ToC",
            "Screen: Chunks",
            "Screen: Files",
            "Screen: Verify",
            "Verify: run the full verification",
            "Help",
        ):
            assert t in titles
        # The footer shows the bindings.
        footer = app.screen_text().splitlines()[-1]
        for key in ("/ Search", "1 Overview", "2 ToC", "3 Chunks", "4 Files", "5 Verify", "? Help", "q Quit"):
            assert key in footer
        # Typing in a prompt does not trigger the screen's keys ("q" types, it does not quit).
        await press(app, pilot, "2", "slash")
        await press(app, pilot, "q", "1")
        assert app.current_mode == "toc" and app.screen.prompt.value == "q1"
        await press(app, pilot, "escape")
        assert not app.screen.prompt.has_class("-shown")
        await press(app, pilot, "q")
        assert app.return_code == 0 or not app.is_running

    drive([small["zstd"]], script)


def test_mouse_click_selects_chunk_row(small):
    async def script(app, pilot):
        await press(app, pilot, "3")
        table = app.screen.table
        await pilot.click("#chunk-table", offset=(5, 3))  # header is line 0: line 3 is row 2
        await settle(app, pilot)
        assert table.cursor == 2
        await pilot.click("#chunk-table", offset=(5, 1))
        await settle(app, pilot)
        assert table.cursor == 0

    drive([small["zstd"]], script)


def test_the_chunk_table_is_keyed_outside_the_view_lock(small):
    """A file's chunks need the bootstrap chunk table keyed (seconds on a layer of millions of chunks), which a
    worker does without holding the view's lock: the event loop takes that lock to decode the node under the
    cursor, and waited for the whole keying on every row it moved to."""
    import threading

    from nydus_inspect.model import REG
    from tui.data import LayerView

    with open_layer(str(small["zstd"])) as layer:
        view = LayerView(layer)
        rafs = layer.rafs
        node = next(n for n in rafs.walk() if n.type == REG and n.size)
        keying, release = threading.Event(), threading.Event()
        key = rafs._chunk_records

        def slow_key():
            keying.set()
            assert release.wait(30)
            return key()

        rafs._chunk_records = slow_key
        got = []
        worker = threading.Thread(target=lambda: got.append(view.node_chunks(node)))
        worker.start()
        try:
            assert keying.wait(30)
            free = view.lock.acquire(timeout=2)
            if free:
                view.lock.release()
        finally:
            release.set()
            worker.join(30)
        assert free, "the view's lock was held while the chunk table was keyed"
        del rafs._chunk_records
        assert got and [c.ci_index for c in got[0]] == [c.ci_index for c in rafs.chunks(node)]


def test_data_blob_alone_and_v5_bootstrap(vectors):
    async def script(app, pilot):
        await press(app, pilot, "4")
        assert "without a RAFS v6 bootstrap" in app.screen.query_one("#file-detail").text
        await press(app, pilot, "3")
        assert len(app.screen.table.rows) == 2
        assert app.screen.table.text_lines()[1].split()[-1] == "-"  # no bootstrap: no owners
        await press(app, pilot, "5", "r")
        assert text_of(app, "#verify-status").startswith("OK: checked")

    drive([vectors / DATA_BLOB], script)

    async def v5(app, pilot):
        assert app.screen.query_one("#bootstrap").value("fs version") == "RAFS v5"
        await press(app, pilot, "2")
        assert "no ToC" in text_of(app, "#toc-about")

    drive([vectors / "nydus/repeatable/sha256-nocompress-repeatable"], v5)


# ---------------------------------------------------------------------------- the command
def test_cli_registers_tui_without_importing_textual():
    code = (
        "import sys; from nydus_inspect import cli; p = cli.build_parser(); "
        "a = p.parse_args(['tui', 'x.blob', 'y.blob', '--source', 's.tar', '--blob-dir', 'd']); "
        "print(a.layers, a.source, a.blob_dir, 'textual' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "['x.blob', 'y.blob'] s.tar d False"


def test_cli_reports_bad_input_before_starting(tmp_path):
    bad = tmp_path / "junk"
    bad.write_bytes(b"not a layer" * 100)
    out = subprocess.run(
        [sys.executable, "-m", "nydus_inspect", "tui", str(bad)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert out.returncode == 2 and "not a nydus layer blob" in out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "nydus_inspect", "tui", str(bad), "--source", str(tmp_path / "no.tar")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert (
        out.returncode == 2
        and "--source " in out.stderr
        and "cannot open: No such file or directory" in out.stderr
    )
