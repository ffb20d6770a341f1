"""unpack on layers no filesystem can hold, and on deep trees: one line and exit 2 for the first, a cost
per entry that does not grow with depth for the second."""

from __future__ import annotations

import os

import hostile
import pytest
from fixtures_util import assert_dir_matches, assert_one_line_error, expected_tree, run_cli

from nydus_inspect import unpack
from nydus_inspect.layer import open_layer
from nydus_inspect.pack import PackOptions, pack

CRAFTED = list(hostile.crafted_fields())


@pytest.mark.parametrize("case", CRAFTED, ids=[c.name for c in CRAFTED])
@pytest.mark.parametrize("how", ["to-dir", "tar-file", "tar-stdout"])
def test_what_no_filesystem_holds_is_one_line_and_exit_2(tmp_path, case, how):
    boot = tmp_path / "layer.boot"
    case.write(boot)
    args = {
        "to-dir": ["--to-dir", tmp_path / "out"],
        "tar-file": ["-o", tmp_path / "out.tar"],
        "tar-stdout": ["-o", "-"],
    }[how]
    line = assert_one_line_error(run_cli("unpack", boot, *args), 2)
    assert "NUL" in line or "mtime" in line, line
    assert not (tmp_path / "out.tar").exists()


def test_deep_trees_extract_whole_with_a_bounded_number_of_opens(tmp_path, monkeypatch):
    """Depth 600 (past the descriptors held open, so the walk back up reopens through '..'): every entry is
    extracted, and the directories are opened about once each, not once per entry and level."""
    depth = 600
    src = tmp_path / "deep.tar"
    src.write_bytes(hostile.deep_tree(depth, files_per_level=2))
    pack(str(src), str(tmp_path / "deep.blob"), PackOptions(chunk_size=0x1000, workers=1))
    opens = 0
    real_open = os.open

    def counting_open(*args, **kw):
        nonlocal opens
        opens += 1
        return real_open(*args, **kw)

    monkeypatch.setattr(unpack.os, "open", counting_open)
    with open_layer(str(tmp_path / "deep.blob")) as layer:
        res = unpack.to_dir(layer, str(tmp_path / "out"))
    monkeypatch.undo()
    assert res.entries == 3 * depth
    # One open per file, one per directory, one per '..' reopening; before, each entry opened every level.
    assert opens <= 3 * depth + depth + 10, opens
    assert_dir_matches(expected_tree(src), tmp_path / "out")


def test_a_symlink_planted_in_the_target_is_not_followed(tmp_path):
    src = tmp_path / "deep.tar"
    src.write_bytes(hostile.deep_tree(3))
    pack(str(src), str(tmp_path / "deep.blob"), PackOptions(chunk_size=0x1000, workers=1))
    out = tmp_path / "out"
    outside = tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    os.symlink(outside, out / "d")
    assert_one_line_error(run_cli("unpack", tmp_path / "deep.blob", "--to-dir", out), 2, "/d")
    assert os.listdir(outside) == []
