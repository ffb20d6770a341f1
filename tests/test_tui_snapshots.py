"""SVG snapshots of every screen at a fixed terminal size (120x36), on the real vectors (fixed bytes).

Each snapshot is stored twice under tests/snapshots/tui/: ``NAME.svg`` (what a person looks at; Textual's
own screenshot export) and ``NAME.txt`` (the same screen as plain text, so a failure shows a readable
diff). Both must match. After an intended change of the screens, regenerate them with

    NYDUS_SNAPSHOT_UPDATE=1 python -m pytest tests/test_tui_snapshots.py

and look at the new SVGs before committing them. On a mismatch the new files are written next to the
stored ones as ``NAME.new.svg`` / ``NAME.new.txt``.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("textual")

from tui_helpers import BOOTSTRAP, DATA_BLOB, TOC_BLOB, drive, flip, press, settle  # noqa: E402

SNAPSHOTS = Path(__file__).resolve().parent / "snapshots" / "tui"
UPDATE = os.environ.get("NYDUS_SNAPSHOT_UPDATE") == "1"
TOC_NAME = Path(TOC_BLOB).name


def check_snapshot(app, name: str) -> None:
    svg = app.export_screenshot(title=f"nydus-inspect {name}")
    text = app.screen_text()
    SNAPSHOTS.mkdir(parents=True, exist_ok=True)
    svg_path, txt_path = SNAPSHOTS / f"{name}.svg", SNAPSHOTS / f"{name}.txt"
    if UPDATE or not svg_path.exists():
        if not UPDATE and os.environ.get("CI"):
            pytest.fail(f"snapshot {svg_path} is missing (create it with NYDUS_SNAPSHOT_UPDATE=1)")
        svg_path.write_text(svg, encoding="utf-8")
        txt_path.write_text(text, encoding="utf-8")
        return
    want_text = txt_path.read_text(encoding="utf-8")
    want_svg = svg_path.read_text(encoding="utf-8")
    if text == want_text and _norm(svg) == _norm(want_svg):
        return
    (SNAPSHOTS / f"{name}.new.svg").write_text(svg, encoding="utf-8")
    (SNAPSHOTS / f"{name}.new.txt").write_text(text, encoding="utf-8")
    diff = "\n".join(
        difflib.unified_diff(want_text.splitlines(), text.splitlines(), "stored", "now", lineterm="")
    )
    pytest.fail(
        f"screen {name} differs from {svg_path.name}:\n{diff or '(same text: styles differ, see the SVGs)'}"
    )


def _norm(svg: str) -> str:
    """Rich names the SVG's CSS classes after a hash of the content; equal screens give equal SVGs."""
    return re.sub(r"\s+\n", "\n", svg)


@pytest.fixture
def here(vectors, tmp_path, monkeypatch) -> Path:
    """The vectors copied into a working directory, so that screens show short, stable relative paths."""
    shutil.copyfile(vectors / TOC_BLOB, tmp_path / TOC_NAME)
    (tmp_path / "blobs").mkdir()
    shutil.copyfile(vectors / DATA_BLOB, tmp_path / "blobs" / Path(DATA_BLOB).name)
    shutil.copyfile(vectors / BOOTSTRAP, tmp_path / "rafs-v6-2.2.boot")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.vectors
def test_snapshot_overview(here):
    async def script(app, pilot):
        check_snapshot(app, "overview")

    drive([Path(TOC_NAME), Path("rafs-v6-2.2.boot")], script, blob_dir="blobs")


@pytest.mark.vectors
def test_snapshot_toc(here):
    async def script(app, pilot):
        await press(app, pilot, "2", "a")
        await press(app, pilot, "down", "down")  # blob.meta.header, decoded
        check_snapshot(app, "toc")
        await press(app, pilot, "down")  # image.boot: the superblocks
        check_snapshot(app, "toc-superblocks")

    drive([Path(TOC_NAME)], script)


@pytest.mark.vectors
def test_snapshot_chunks(here):
    async def script(app, pilot):
        await press(app, pilot, "3", "down")
        await press(app, pilot, "v")
        await settle(app, pilot)
        check_snapshot(app, "chunks")

    drive([Path(TOC_NAME)], script)


@pytest.mark.vectors
def test_snapshot_files(here):
    async def script(app, pilot):
        await press(app, pilot, "4")
        assert app.screen.reveal("/lib.rs")
        await settle(app, pilot)
        check_snapshot(app, "files")

    drive([Path(TOC_NAME)], script)


@pytest.mark.vectors
def test_snapshot_verify_with_a_bit_flip(here):
    flip(here / TOC_NAME, 1211 + 100)  # inside chunk 1 (/lib.rs)

    async def script(app, pilot):
        await press(app, pilot, "5", "r")
        check_snapshot(app, "verify")

    drive([Path(TOC_NAME)], script)


@pytest.mark.vectors
def test_snapshot_help(here):
    async def script(app, pilot):
        await press(app, pilot, "question_mark")
        check_snapshot(app, "help")

    drive([Path(TOC_NAME)], script)
