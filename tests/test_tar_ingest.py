"""How pack reads a layer tar where tar readers differ: concatenated tars are read past their
end-of-archive blocks (as `tar --ignore-zeros`, Python's tarfile with ignore_zeros and nydus-image do),
and bytes after the last archive that are not a tar header end it quietly, as before."""

from __future__ import annotations

import io
import tarfile

from fixtures_util import assert_tree_matches, expected_tree, run_cli


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()  # ends in two zero blocks and the record's zero padding


def test_concatenated_tars_are_read_whole(tmp_path):
    src = tmp_path / "ab.tar"
    src.write_bytes(_tar({"a/one": b"1\n", "shared": b"old\n"}) + _tar({"b/two": b"2\n", "shared": b"new\n"}))
    with tarfile.open(src, ignore_zeros=True) as tf:
        assert len(tf.getmembers()) == 4  # the independent reading sees both archives
    blob = tmp_path / "ab.blob"
    assert run_cli("pack", src, "-o", blob).returncode == 0
    assert run_cli("cat", blob, "/b/two").stdout == b"2\n"
    assert run_cli("cat", blob, "/shared").stdout == b"new\n"  # the later entry wins, as in one tar


def test_trailing_bytes_after_the_archive_end_it(tmp_path):
    src = tmp_path / "trail.tar"
    src.write_bytes(_tar({"a": b"x"}) + b"not a tar header".ljust(512, b"!"))
    blob = tmp_path / "trail.blob"
    proc = run_cli("pack", src, "-o", blob)
    assert proc.returncode == 0, proc.stderr
    assert_tree_matches(expected_tree(tmp_path / "trail.tar"), blob)
