"""The app in a real terminal: `nydus-inspect tui` runs inside tmux (a private server), keys are typed with
send-keys and the screen is read back with capture-pane.

Skips when tmux is missing; with NYDUS_REQUIRE_VECTORS=1 (CI) a missing tmux is a failure.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid

import pytest
from tui_helpers import ROOT, TOC_BLOB, flip, make_tar, pack_layer

WIDTH, HEIGHT = 120, 36


@pytest.fixture
def tmux():
    path = shutil.which("tmux")
    if path is None:
        reason = "tmux is not installed (Debian package tmux)"
        if os.environ.get("NYDUS_REQUIRE_VECTORS") == "1":
            pytest.fail(f"{reason} (required in CI)")
        pytest.skip(reason)
    socket = f"nydus-tui-{uuid.uuid4().hex[:8]}"
    term = Tmux(path, socket)
    yield term
    term.kill()


class Tmux:
    def __init__(self, path: str, socket: str) -> None:
        self.base = [path, "-L", socket, "-f", "/dev/null"]
        self.session = "tui"

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([*self.base, *args], capture_output=True, text=True, check=check, timeout=30)

    def start(self, argv: list[str]) -> None:
        env = {"PYTHONPATH": str(ROOT), "TERM": "xterm-256color", "COLORTERM": "truecolor"}
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        # COLUMNS / LINES from the environment would override the terminal's real size.
        command = (
            f"cd {shlex.quote(str(ROOT))} && env -u COLUMNS -u LINES {exports} {shlex.join(argv)}; "
            "echo EXITED $?; sleep 30"
        )
        self.run("new-session", "-d", "-s", self.session, "-x", str(WIDTH), "-y", str(HEIGHT), command)

    def keys(self, *keys: str) -> None:
        for k in keys:
            self.run("send-keys", "-t", self.session, k)
            time.sleep(0.05)

    def type(self, text: str) -> None:
        self.run("send-keys", "-t", self.session, "-l", text)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.session).stdout

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} did not appear within {timeout} s; the screen shows:\n{screen}")

    def wait_gone(self, text: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text not in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} still shows after {timeout} s")

    def kill(self) -> None:
        self.run("kill-server", check=False)


def tui(*args: str) -> list[str]:
    return [sys.executable, "-m", "nydus_inspect", "tui", *args]


def test_tmux_vector_every_screen(tmux, vectors):
    tmux.start(tui(str(vectors / TOC_BLOB)))
    s = tmux.wait_for("nydus-inspect — Overview")
    s = tmux.wait_for("chunk table     3 records")
    assert "kind           nydus-blob" in s
    assert "d788a0eac4ff9779bc2eae3842117a918d847d90fddbea1503f7c5296a4a7de3" in s
    assert "q Quit" in s.splitlines()[-1]  # the footer shows the bindings

    tmux.keys("2")
    s = tmux.wait_for("ToC digest 4fdfbb36ef74a3c6")
    assert "blob.meta.header" in s and "image.boot        zstd" in s
    tmux.keys("a")
    s = tmux.wait_for("image.boot: sha256 matches the ToC")
    assert s.count("match") >= 4

    tmux.keys("3")
    s = tmux.wait_for("/logger.rs")
    assert "INDEX" in s and "FILES" in s and "3 chunks" in s
    tmux.keys("g")
    tmux.wait_for("chunk index")
    tmux.keys("2", "Enter")
    tmux.wait_for("row 3 of 3")

    tmux.keys("4")
    s = tmux.wait_for("error.rs")
    tmux.keys("/")
    tmux.wait_for("search paths")
    tmux.type("logger")
    tmux.wait_for("logger  ")
    tmux.keys("Enter")
    s = tmux.wait_for("path       /logger.rs")
    assert "size       3115" in s or "3,115" in s

    tmux.keys("5", "r")
    s = tmux.wait_for("OK: checked")
    assert "3 chunks" in s

    tmux.keys("?")
    tmux.wait_for("command palette")
    tmux.keys("Escape")  # (a key right after Escape would read as alt+key: wait for the help to close)
    tmux.wait_gone("command palette")
    tmux.keys("q")
    tmux.wait_for("EXITED 0")


def test_tmux_bit_flip_found_and_shown(tmux, tmp_path):
    tar = make_tar(tmp_path / "small.tar", many=3)
    layer = pack_layer(tar, tmp_path / "small.blob", "none")
    from nydus_inspect import open_layer
    from nydus_inspect.query import file_index

    with open_layer(str(layer)) as ly:
        idx = file_index(ly)
        target = next(i for i in range(len(ly.chunk_infos)) if idx.owners(0, i) == ["/srv/a.txt"]) + 1
        flip(layer, ly.chunk_infos[target].compressed_offset + 1)
    tmux.start(tui(str(layer), "--source", str(tar)))
    tmux.wait_for("nydus-inspect — Overview")
    tmux.keys("5", "r")
    tmux.wait_for("FAILED")
    # The summary line can show before the findings table has its final column widths: wait for the row.
    s = tmux.wait_for("blake3 digest differs from blob.digest", timeout=10)
    assert "roundtrip" in s  # the source tar's bytes differ from what the layer now holds
    tmux.keys("Down")  # the chunk finding (the second row): the detail pane says where it is
    s = tmux.wait_for(f"chunk       {target}", timeout=10)
    assert "path        /srv/a.txt" in s
    tmux.keys("q")
    tmux.wait_for("EXITED 0")
