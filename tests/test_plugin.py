"""The pytest plugin as a user's project meets it: each test runs a fresh pytest (``pytester``) over a
test file written here, with the plugin loaded through its ``pytest11`` entry point as it is in any
project that installs nydus-inspect.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tarfile
import textwrap

import pytest
from conftest import ROOT

pytest_plugins = ["pytester"]

# security.capability v2, cap_net_bind_service permitted and effective: what setcap writes.
CAPABILITY = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)
ROOT_MTIME = 1_234_567_890


@pytest.fixture
def run(pytester):
    """Run pytest on ``source`` in a subprocess (the plugin loads from its entry point)."""

    def go(source: str, *args: str):
        pytester.makepyfile(test_user=textwrap.dedent(source))
        return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist", *args, timeout=300)

    return go


def test_the_plugin_does_not_import_the_reader_at_start_up():
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import nydus_inspect.testing.plugin"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert proc.returncode == 0, proc.stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.count("|") == 2}
    assert "nydus_inspect.testing.plugin" in imported
    heavy = {"nydus_inspect.layer", "nydus_inspect.model", "nydus_inspect.diff", "nydus_inspect.pack"}
    assert not imported & heavy, imported & heavy


def test_at_test_time_only_what_the_fixtures_used_is_imported(run):
    result = run(
        """
        import sys

        def test_nothing_heavy_yet():
            assert "nydus_inspect.testing.plugin" in sys.modules
            assert "nydus_inspect.layer" not in sys.modules
            assert "nydus_inspect.diff" not in sys.modules
        """
    )
    result.assert_outcomes(passed=1)


def test_markers_and_fixture_docstrings(pytester):
    out = pytester.runpytest_subprocess("--markers").stdout.str()
    assert "@pytest.mark.nydus_mount: the test mounts nydus layers with FUSE" in out
    pytester.makepyfile(test_x="def test_x(): pass")
    fixtures = pytester.runpytest_subprocess("--fixtures", "-v").stdout.str()
    for name, words in [
        ("nydus_pack", "an existing layer tar"),
        ("nydus_layer", "closed after the test"),
        ("nydus_mount", "unmounted after the test"),
    ]:
        assert name in fixtures
        block = fixtures.split(name, 1)[1][:600]
        assert words in " ".join(block.split()), block


def test_pack_an_existing_tar_tar_gz_and_a_spec(run, tmp_path):
    src = tmp_path / "src"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "hostname").write_bytes(b"box\n")
    for name, mode in [("layer.tar", "w"), ("layer.tar.gz", "w:gz")]:
        with tarfile.open(tmp_path / name, mode) as tf:
            tf.add(src / "etc", "etc")
            tf.add(src / "etc" / "hostname", "etc/hostname")
    result = run(
        f"""
        import pytest
        from nydus_inspect.testing import assert_same_tree, read_file

        @pytest.mark.parametrize("name", ["layer.tar", "layer.tar.gz"])
        def test_existing(nydus_pack, name):
            source = {str(tmp_path)!r} + "/" + name
            layer = nydus_pack(source)
            assert read_file(layer, "/etc/hostname") == b"box\\n"
            assert_same_tree(source, layer)

        def test_spec(nydus_pack):
            assert read_file(nydus_pack({{"a/b": b"x"}}), "/a/b") == b"x"

        def test_not_a_source(nydus_pack):
            with pytest.raises(Exception, match="neither a tree spec, a directory nor a layer tar"):
                nydus_pack({str(tmp_path / "missing")!r})
        """
    )
    result.assert_outcomes(passed=4)


@pytest.mark.skipif(os.geteuid() != 0, reason="security.capability can only be set by root")
def test_a_directory_keeps_xattrs_capabilities_and_the_root_mtime(run, tmp_path):
    src = tmp_path / "rootfs"
    (src / "usr" / "bin").mkdir(parents=True)
    ping = src / "usr" / "bin" / "ping"
    ping.write_bytes(b"ping binary")
    os.setxattr(ping, "security.capability", CAPABILITY)
    os.setxattr(ping, "user.origin", b"debian")
    os.utime(src, (ROOT_MTIME, ROOT_MTIME))
    result = run(
        f"""
        from nydus_inspect.testing import lookup

        def test_directory(nydus_pack):
            layer = nydus_pack({str(src)!r})
            ping = lookup(layer, "/usr/bin/ping")
            assert ping.xattrs == {{b"security.capability": {CAPABILITY!r}, b"user.origin": b"debian"}}
            assert lookup(layer, "/").mtime == {ROOT_MTIME}
        """
    )
    result.assert_outcomes(passed=1)


def test_failures_read_well(run, tmp_path):
    result = run(
        """
        from nydus_inspect.testing import assert_same_tree, build_tar, layer_tree

        def test_compare(nydus_pack, tmp_path):
            a = build_tar({"etc/passwd": b"root\\n", "etc/motd": b"hi\\n"}, tmp_path / "a.tar")
            b = nydus_pack({"etc/passwd": b"root:x\\n"})
            assert layer_tree(a) == layer_tree(b)

        def test_helper(nydus_pack, tmp_path):
            a = build_tar({"etc/passwd": b"root\\n"}, tmp_path / "a.tar")
            assert_same_tree(a, nydus_pack({"etc/passwd": b"root:x\\n"}))
        """
    )
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    # pytest_assertrepr_compare: the differences, one per line, instead of two object reprs.
    assert "3 difference(s) (expected: left, found: right):" in out
    assert "/etc/motd: presence: expected file, found absent" in out
    assert "/etc/passwd: size: expected 5, found 7" in out
    # __tracebackhide__: the failure points at the user's line, not inside the helper.
    assert "raise AssertionError" not in out
    assert "differ in 2 place(s)" in out


def test_assert_rules(run):
    result = run(
        """
        import pytest
        from nydus_inspect.testing import assert_rules

        SPEC = {"a": b"x" * 50000, "b": b"x" * 50000}  # one chunk stored once, referenced twice

        def test_pass(nydus_pack):
            assert_rules(nydus_pack(SPEC), {"lowestEfficiency": 0.9, "highestBlobCount": 1})

        def test_fail(nydus_pack):
            assert_rules(nydus_pack(SPEC), {"lowestCompressionRatio": 1e9, "highestChunkCount": 5})
        """
    )
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert "1 of 2 rule(s) failed" in out and "FAIL: lowestCompressionRatio" in out
    assert "PASS: highestChunkCount: 1 (limit 5)" in out


def _mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(path)]


def test_mount_fixture_unmounts_after_pass_and_failure(run, pytester):
    from nydus_inspect.testing.plugin import fuse_problem

    if fuse_problem():
        pytest.skip(f"FUSE: {fuse_problem()}")
    result = run(
        """
        def test_ok(nydus_pack, nydus_mount):
            m = nydus_mount(nydus_pack({"etc/motd": b"hello\\n"}))
            assert (m.rootfs / "etc" / "motd").read_bytes() == b"hello\\n"
            assert (m.entries).is_dir()

        def test_fails_with_a_file_open(nydus_pack, nydus_mount):
            m = nydus_mount(nydus_pack({"etc/motd": b"hello\\n"}))
            f = open(m.rootfs / "etc" / "motd", "rb")
            assert f.read() == b"bye\\n"
        """,
        "-v",
        "-m",
        "nydus_mount",
        "--basetemp",
        str(pytester.path / "base"),
    )
    result.assert_outcomes(passed=1, failed=1)
    assert _mounts_under(str(pytester.path)) == []
