"""``verify --source`` and ``tui --source``: a source that cannot be read is bad usage (exit 2, one line on
stderr, before any work), never a finding about the layer."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT
from test_convert import simple_layout

from nydus_inspect.testing import File, build_tar

SPEC = {"etc/motd": File(b"hello\n"), "bin/tool": File(b"x" * 5000, mode=0o755)}


def run(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("NYDUS_INSPECT_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "nydus_inspect", *map(str, args)], capture_output=True, env=env, timeout=120
    )


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A layer blob packed from a tar, and the OCI layout of an image of that tar converted to nydus."""
    d = tmp_path_factory.mktemp("source")
    tar = build_tar(SPEC, d / "src.tar")
    assert run("pack", tar, "-o", d / "layer.blob").returncode == 0
    simple_layout(d / "oci", [tar.read_bytes()], ["gzip"])
    p = run("convert", d / "oci", d / "nydus")
    assert p.returncode == 0, p.stderr.decode()
    return d


def bad_sources(d):
    (d / "a-file").write_bytes(b"x")
    return {
        "directory": (d, "is a directory, not a tar"),
        "missing": (d / "no.tar", "cannot open: No such file or directory"),
        "below a file": (d / "a-file" / "x.tar", "cannot open: Not a directory"),
    }


@pytest.mark.parametrize("what", ["directory", "missing", "below a file"])
@pytest.mark.parametrize("layer", ["layer.blob", "nydus"])
@pytest.mark.parametrize("json", [False, True])
def test_verify_with_an_unreadable_source_is_bad_usage(made, tmp_path, what, layer, json):
    source, says = bad_sources(tmp_path)[what]
    p = run("verify", made / layer, "--source", source, *(["--json"] if json else []))
    err = p.stderr.decode()
    assert p.returncode == 2, (p.returncode, p.stdout.decode(), err)
    assert p.stdout == b""
    assert err == f"nydus-inspect: error: --source {source}: {says}\n"


def test_verify_with_a_readable_source_still_compares(made):
    p = run("verify", made / "nydus", "--source", made / "src.tar")
    assert p.returncode == 0, p.stdout.decode() + p.stderr.decode()
    # A source that is a tar of another tree is a finding (exit 1), not bad usage.
    other = build_tar({"etc/motd": File(b"bye\n")}, made / "other.tar")
    p = run("verify", made / "layer.blob", "--source", other)
    assert p.returncode == 1 and b"roundtrip" in p.stdout, p.stdout.decode()


@pytest.mark.parametrize("what", ["directory", "below a file"])
def test_tui_with_an_unreadable_source_is_bad_usage(made, tmp_path, what):
    source, says = bad_sources(tmp_path)[what]
    p = run("tui", made / "layer.blob", "--source", source)
    assert p.returncode == 2 and p.stderr.decode() == f"nydus-inspect: error: --source {source}: {says}\n"
