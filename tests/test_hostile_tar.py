"""Hostile layer tars given to pack: what no filesystem can hold is refused with one line and exit 2."""

from __future__ import annotations

import hostile
import pytest
from fixtures_util import assert_one_line_error, run_cli

NUL_CASES = list(hostile.nul_names())


@pytest.mark.parametrize("case", NUL_CASES, ids=[c.name for c in NUL_CASES])
def test_a_nul_in_a_pax_name_is_refused(tmp_path, case):
    src = tmp_path / "in.tar"
    case.write(src)
    line = assert_one_line_error(run_cli("pack", src, "-o", tmp_path / "out.blob"), 2, "NUL")
    assert "offset" in line or "entry" in line, line
    assert not (tmp_path / "out.blob").exists()


def test_diff_against_an_empty_file_is_an_error(tmp_path):
    (tmp_path / "a.tar").write_bytes(hostile.small_tar())
    assert run_cli("pack", tmp_path / "a.tar", "-o", tmp_path / "a.blob").returncode == 0
    (tmp_path / "empty").write_bytes(b"")
    assert_one_line_error(run_cli("diff", tmp_path / "a.tar", tmp_path / "empty"), 2, "empty")
    # As the source, an empty file is an empty tar (nydus's own empty.tar is 0 bytes): its tree differs.
    assert run_cli("diff", tmp_path / "empty", tmp_path / "a.blob").returncode == 1
    # A pipe has no size: what comes through it is read as it is.
    proc = run_cli("diff", "/dev/stdin", tmp_path / "a.blob", input=(tmp_path / "a.tar").read_bytes())
    assert proc.returncode == 0, proc.stderr
