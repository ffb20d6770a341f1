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
