"""verify and ``query.file_index`` fill their FileIndex with one walk (``query.index_walk``): the same paths,
files, chunk owners, hardlink groups and walk errors, on a packed fixture with hard links and shared chunks,
and on a bootstrap with a directory that does not decode."""

from __future__ import annotations

import pytest
from fixtures_util import fixture_tars_fixture, pack_layer  # noqa: F401

from nydus_inspect.layer import open_layer
from nydus_inspect.query import file_index
from nydus_inspect.verify.bootstrap import _check_bootstrap
from nydus_inspect.verify.run import _Run


def _verify_index(path: str, blobs: list[str]):
    with open_layer(path, blobs=blobs) as layer:
        run = _Run(layer, None, None, 1000, 1)
        try:
            _check_bootstrap(run)
        finally:
            run.ahead.close()
        return run.index, run.report


def _same(a, b, rafs) -> None:
    assert [a.paths[i] for i in range(len(a.paths))] == [b.paths[i] for i in range(len(b.paths))]
    assert a.files == b.files and a.chunk_refs == b.chunk_refs
    assert [(e.path, e.nid, str(e.error)) for e in a.errors] == [
        (e.path, e.nid, str(e.error)) for e in b.errors
    ]
    for ent in rafs.blobs:
        for ci in range(ent.chunk_count):
            assert a.owners(ent.blob_index, ci) == b.owners(ent.blob_index, ci)
    assert a._links.keys() == b._links.keys()
    for group in a._links:
        assert a.hardlinks(group) == b.hardlinks(group)


@pytest.fixture
def packed(fixture_tars, tmp_path):
    blob, boot = tmp_path / "layer.blob", tmp_path / "layer.boot"
    pack_layer(fixture_tars["every-type.tar"], blob, chunk_size=0x1000, bootstrap=str(boot))
    return boot, blob


def test_verify_and_file_index_fill_the_same_index(packed):
    boot, blob = packed
    with open_layer(str(boot), blobs=[str(blob)]) as layer:
        want = file_index(layer)
        rafs = layer.rafs
        assert want.files and want.chunk_refs and want._links, "the fixture has files, chunks and hard links"
        shared = [
            (e.blob_index, ci)
            for e in rafs.blobs
            for ci in range(e.chunk_count)
            if len(want.owners(e.blob_index, ci)) > 1
        ]
        assert shared, "the fixture has chunks several files use"
        got, report = _verify_index(str(boot), [str(blob)])
        assert not [f for f in report.findings if f.check.startswith("bootstrap")], report.findings
        _same(got, want, rafs)


def test_both_record_the_same_walk_error(packed):
    """A directory of a data layout that does not exist: both indexes hold the same error and the
    same paths around it; verify also reports it."""
    boot, blob = packed
    with open_layer(str(boot), blobs=[str(blob)]) as layer:
        rafs = layer.rafs
        node = rafs.lookup("/data")
        at = rafs.inode_offset(node.nid)
    raw = bytearray(boot.read_bytes())
    # i_format's data layout bits (1-3) set to 7, a layout no directory has: its entries do not decode.
    raw[at] = (raw[at] & 1) | (7 << 1)
    boot.write_bytes(bytes(raw))
    with open_layer(str(boot), blobs=[str(blob)]) as layer:
        want = file_index(layer)
        assert want.errors, "the damaged directory should not decode"
        got, report = _verify_index(str(boot), [str(blob)])
        assert any(f.check == "bootstrap.inode" for f in report.findings), report.findings
        _same(got, want, layer.rafs)
