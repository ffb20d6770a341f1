"""`check NYDUS_IMAGE --source OCI_IMAGE`: the source image's layers stacked as overlayfs stacks them against the
nydus image's merged file system, path by path; each kind of difference is found and named, and images
converted by our `convert` and by the snapshotter's converter pass."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
from fixtures_util import run_cli
from test_convert import simple_layout

MTIME = 1_700_000_000


def tar(entries: list[dict]) -> bytes:
    """A layer tar from entry dicts: name, type ("file", "dir", "symlink", "hardlink"), data, mode, link,
    xattrs."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            info = tarfile.TarInfo(e["name"])
            info.mtime = MTIME
            info.mode = e.get("mode", 0o755 if e.get("type") == "dir" else 0o644)
            kind = e.get("type", "file")
            info.type = {
                "file": tarfile.REGTYPE,
                "dir": tarfile.DIRTYPE,
                "symlink": tarfile.SYMTYPE,
                "hardlink": tarfile.LNKTYPE,
            }[kind]
            info.linkname = e.get("link", "")
            if e.get("xattrs"):
                info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in e["xattrs"].items()}
            data = e.get("data", b"") if kind == "file" else None
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def lower(**change) -> list[dict]:
    entries = [
        {"name": "etc", "type": "dir"},
        {"name": "etc/os-release", "data": b'NAME="test"\n' * 300},
        {"name": "etc/hosts", "data": b"127.0.0.1 localhost\n", "xattrs": {"user.origin": "test"}},
        {"name": "etc/hosts.link", "type": "hardlink", "link": "etc/hosts"},
        {"name": "bin", "type": "dir"},
        {"name": "bin/tool", "data": bytes(range(256)) * 4096, "mode": 0o755},
        {"name": "bin/sh", "type": "symlink", "link": "tool", "mode": 0o777},
        {"name": "var", "type": "dir"},
        {"name": "var/gone", "data": b"removed above\n"},
    ]
    for e in entries:
        e.update(change.get(e["name"], {}))
    return [e for e in entries if not e.get("drop")]


UPPER = [{"name": "var", "type": "dir"}, {"name": "var/.wh.gone"}, {"name": "var/new", "data": b"new\n"}]


def image(root: Path, layers: list[list[dict]]) -> Path:
    return simple_layout(root, [tar(x) for x in layers], ["gzip"] * len(layers))


@pytest.fixture
def source(tmp_path) -> Path:
    return image(tmp_path / "src", [lower(), UPPER])


def converted(tmp_path: Path, name: str, layers: list[list[dict]]) -> Path:
    src = image(tmp_path / f"{name}-src", layers)
    out = tmp_path / name
    proc = run_cli("convert", src, out)
    assert proc.returncode == 0, proc.stderr
    return out


def check(nydus: Path, source: Path, *extra: str):
    proc = run_cli("check", nydus, "--source", source, *extra)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def test_our_conversion_passes(source, tmp_path):
    out = tmp_path / "nydus"
    assert run_cli("convert", source, out).returncode == 0
    rc, said, err = check(out, source)
    assert rc == 0, said + err
    assert "the same file system" in said
    rc, said, _ = check(out, source, "--json")
    doc = json.loads(said)
    assert rc == 0 and doc["ok"] is True and doc["differences"] == [] and doc["verify"] == []


def test_the_snapshotter_converters_image_passes(oracle, source, tmp_path):
    theirs = tmp_path / "theirs"
    shutil.copytree(source, theirs)
    oracle.run("nydus-converter", "convert", "--builder", oracle.nydus_image, "--oci", source, theirs)
    rc, said, err = check(theirs, source)
    assert rc == 0, said + err


@pytest.mark.parametrize(
    "change, path, field",
    [
        (
            {"etc/os-release": {"data": b'NAME="test"\n' * 299 + b'NAME="tesT"\n'}},
            "/etc/os-release",
            "sha256",
        ),
        ({"bin/tool": {"mode": 0o750}}, "/bin/tool", "mode"),
        ({"etc/os-release": {"drop": True}}, "/etc/os-release", "presence"),
        ({"etc/hosts": {"xattrs": {}}}, "/etc/hosts", "xattrs"),
    ],
    ids=["changed-byte", "changed-mode", "missing-file", "lost-xattr"],
)
def test_a_difference_is_found_and_named(source, tmp_path, change, path, field):
    nydus = converted(tmp_path, "bad", [lower(**change), UPPER])
    rc, said, err = check(nydus, source)
    assert rc == 1, said + err
    lines = [line for line in said.splitlines() if line.startswith(path + ":")]
    assert lines and all(f": {field}:" in line for line in lines), said
    doc = json.loads(check(nydus, source, "--json")[1])
    assert {(d["path"], d["field"]) for d in doc["differences"]} >= {(path, field)}


def test_an_extra_whiteout_is_named(source, tmp_path):
    nydus = converted(tmp_path, "bad", [lower(), [*UPPER, {"name": "etc/.wh.hosts.link"}]])
    rc, said, _ = check(nydus, source)
    assert rc == 1
    assert "/etc/hosts.link: presence: expected file, found absent" in said, said
    # The link group of what is left is one name now: named too.
    assert "/etc/hosts: hardlinks:" in said, said


def test_a_mode_change_in_octal(source, tmp_path):
    nydus = converted(tmp_path, "bad", [lower(**{"bin/tool": {"mode": 0o4755}}), UPPER])
    doc = json.loads(check(nydus, source, "--json")[1])
    (d,) = [d for d in doc["differences"] if d["path"] == "/bin/tool"]
    assert (d["field"], d["expected"], d["found"]) == ("mode", "0755", "4755")


def test_bad_usage_is_exit_2(source, tmp_path):
    rc, said, err = check(tmp_path / "absent", source)
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    rc, _, err = check(source, source)
    assert rc == 2 and "not a nydus image" in err, err
