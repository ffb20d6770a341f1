"""What the CLI prints for people: blob ids that say what they are, sizes written as people write them, no
Python reprs, the same counts from pack and unpack, singular nouns for one thing, no tar on a terminal."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import subprocess
import sys
import tarfile

import pytest
from conftest import ROOT

from nydus_inspect.testing import File, build_tar

SPEC = {
    "etc/motd": File(b"hello\n", xattrs={"user.note": b"bar", "user.bin": b"\x00\xff\x01"}),
    "bin/busybox": File(b"x" * 5000, mode=0o755),
    "bin/ls": "placeholder",
}


def run(*args, stdout=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("NYDUS_INSPECT_DEBUG", None)
    cmd = [sys.executable, "-m", "nydus_inspect", *map(str, args)]
    if stdout is not None:
        return subprocess.run(cmd, stdout=stdout, stderr=subprocess.PIPE, env=env, timeout=120)
    return subprocess.run(cmd, capture_output=True, env=env, timeout=120)


def ok(*args) -> str:
    p = run(*args)
    assert p.returncode == 0, p.stderr.decode()
    return p.stdout.decode()


@pytest.fixture(scope="module")
def layer(tmp_path_factory):
    d = tmp_path_factory.mktemp("text")
    tar = build_tar(SPEC, d / "src.tar")
    out = d / "layer.blob"  # not named by its digest: a name is no blob id
    p = run("pack", tar, "-o", out)
    assert p.returncode == 0, p.stderr
    return out


def test_info_says_the_blob_id_is_a_placeholder(layer):
    digest = hashlib.sha256(layer.read_bytes()).hexdigest()
    out = ok("info", layer)
    assert f"  [0] placeholder (this file: sha256 {digest})" in out.splitlines()
    assert "[0] layer\n" not in out
    (blob,) = json.loads(ok("info", "--json", layer))["bootstrap"]["blobs"]
    assert blob["blob_id"] == "x" * 64 and blob["placeholder"] is True


def test_tui_says_the_blob_id_is_a_placeholder(layer):
    pytest.importorskip("textual")
    from textual.widgets import DataTable
    from tui_helpers import drive

    digest = hashlib.sha256(layer.read_bytes()).hexdigest()

    async def script(app, pilot):
        table = app.screen.query_one("#blobs", DataTable)
        assert str(table.get_row_at(0)[1]) == f"placeholder (this file: sha256 {digest})"

    drive([layer], script)


def test_chunk_size_takes_size_suffixes(tmp_path):
    tar = build_tar({"f": b"y" * 300_000}, tmp_path / "src.tar")
    ok("pack", tar, "-o", tmp_path / "hex.blob", "--chunk-size", "0x10000")
    for spelled in ("64K", "64KiB", "65536"):
        ok("pack", tar, "-o", tmp_path / "k.blob", "--chunk-size", spelled)
        assert (tmp_path / "k.blob").read_bytes() == (tmp_path / "hex.blob").read_bytes()
    ok("pack", tar, "-o", tmp_path / "m.blob", "--chunk-size", "1M")
    assert "chunk size    0x100000" in ok("info", tmp_path / "m.blob")
    p = run("pack", tar, "-o", tmp_path / "bad.blob", "--chunk-size", "1Q")
    err = p.stderr.decode()
    assert p.returncode == 2 and err.count("\n") == 1 and "--chunk-size: cannot read '1Q'" in err
    assert "int()" not in err and not (tmp_path / "bad.blob").exists()


def test_unpack_to_a_terminal_is_refused(layer):
    controller, terminal = pty.openpty()
    try:
        p = run("unpack", layer, "-o", "-", stdout=terminal)
    finally:
        os.close(terminal)
        os.close(controller)
    assert p.returncode == 2 and b"refusing to write a tar to a terminal" in p.stderr
    piped = run("unpack", layer, "-o", "-")
    assert piped.returncode == 0 and piped.stdout[257:262] == b"ustar"


def test_no_python_reprs(layer):
    chunks = ok("chunks", layer)
    features = next(line for line in chunks.splitlines() if "features_names" in line)
    assert (
        features
        == "  features_names: aligned, inlined_fs_meta, inlined_chunk_digest, has_tar_header, has_toc, cap_tar_toc"
    )
    long = ok("ls", "-l", layer, "/etc/motd")
    assert (
        '    xattr user.note="bar"' in long.splitlines()
        and "    xattr user.bin=0x00ff01" in long.splitlines()
    )
    for text in (chunks, long, ok("info", layer)):
        assert "b'" not in text and "['" not in text


def test_pack_and_unpack_count_files_alike(tmp_path, vectors):
    source = vectors / "nydus" / "tar" / "all-entry-type.tar"
    with tarfile.open(source) as tf:  # what `find -type f` counts: every name of a regular file
        members = tf.getmembers()
        files = sum(1 for m in members if m.isreg() or (m.islnk() and tf.getmember(m.linkname).isreg()))
    assert files == 4
    packed = run("pack", source, "-o", tmp_path / "l.blob")
    line = packed.stdout.decode().splitlines()[1]
    assert f", {files} files, " in line
    unpacked = run("unpack", tmp_path / "l.blob", "-o", tmp_path / "back.tar")
    assert f", {files} files, " in unpacked.stderr.decode()
    to_dir = run("unpack", tmp_path / "l.blob", "--to-dir", tmp_path / "out")
    assert f", {files} files, " in to_dir.stderr.decode()
    found = sum(len(f) for _, _, f in os.walk(tmp_path / "out") if f) - sum(
        1 for r, _, fs in os.walk(tmp_path / "out") for f in fs if os.path.islink(os.path.join(r, f))
    )
    assert found == files


def test_one_thing_is_singular(tmp_path):
    tar = build_tar({"only": b"one file"}, tmp_path / "src.tar")
    out = ok("pack", tar, "-o", tmp_path / "one.blob").splitlines()[1]
    assert out.startswith("1 entry, 1 file, 8 bytes in 1 chunk (1 stored, 8 bytes)")
    info = ok("info", tmp_path / "one.blob")
    assert (
        "blob table: 1 blob\n" in info
        and "blob.meta: 1 chunk," in info
        and "chunk table   1 entry at" in info
    )
    p = run("unpack", tmp_path / "one.blob", "-o", tmp_path / "back.tar")
    assert ", 1 file, 8 bytes" in p.stderr.decode()


def test_modes_read_in_octal_wherever_they_are_printed(tmp_path):
    """diff, verify --source, the testing helpers' messages, and errors about an inode's i_mode: a mode is
    written as ls and chmod write it. 0o4755 is 2541 in decimal and 0o755 is 493: neither may show up."""
    from nydus_inspect.testing import assert_same_tree, explain_difference, layer_tree

    source = build_tar({"bin/tool": File(b"x" * 100, mode=0o4755)}, tmp_path / "src.tar")
    changed = build_tar({"bin/tool": File(b"x" * 100, mode=0o755)}, tmp_path / "changed.tar")
    assert run("pack", changed, "-o", tmp_path / "l.blob").returncode == 0
    layer = tmp_path / "l.blob"

    said = {}
    p = run("diff", source, layer)
    assert p.returncode == 1
    said["diff"] = p.stdout.decode()
    p = run("verify", layer, "--source", source)
    assert p.returncode == 1
    said["verify --source"] = p.stdout.decode()
    with pytest.raises(AssertionError) as raised:
        assert_same_tree(source, layer)
    said["assert_same_tree"] = str(raised.value)
    said["assert layer_tree(a) == layer_tree(b)"] = "\n".join(
        explain_difference(layer_tree(source), layer_tree(layer))
    )
    for where, text in said.items():
        assert "expected 4755, found 0755" in text, (where, text)
        assert "2541" not in text and "493" not in text, (where, text)
    # JSON writes modes as ls --json does.
    (d,) = json.loads(run("diff", source, layer, "--json").stdout)["differences"]
    (entry,) = json.loads(ok("ls", layer, "/bin/tool", "--json"))
    assert (d["expected"], d["found"], entry["mode"]) == ("4755", "0755", "0755")


def test_a_bad_i_mode_is_shown_in_octal(tmp_path):
    from nydus_inspect.layer import open_layer

    tar = build_tar({"bin/tool": File(b"x" * 100, mode=0o755)}, tmp_path / "src.tar")
    assert run("pack", tar, "-o", tmp_path / "l.blob").returncode == 0
    assert run("entry", tmp_path / "l.blob", "image.boot", "-o", tmp_path / "l.boot").returncode == 0
    data = bytearray((tmp_path / "l.boot").read_bytes())
    with open_layer(str(tmp_path / "l.boot")) as ly:
        at = ly.rafs.inode_offset(ly.rafs.lookup(b"/bin/tool").nid) + 4  # i_mode
    assert int.from_bytes(data[at : at + 2], "little") == 0o100755
    data[at : at + 2] = (0o170755).to_bytes(2, "little")  # S_IFMT 0o170000 is no file type
    bad = tmp_path / "bad.boot"
    bad.write_bytes(bytes(data))
    p = run("cat", bad, "/bin/tool", "--blob", tmp_path / "l.blob")
    assert p.returncode == 2 and p.stderr.decode().endswith("unknown file type in i_mode (found 0170755)\n")
    p = run("verify", bad, "--blob", tmp_path / "l.blob")
    line = next(x for x in p.stdout.decode().splitlines() if "unknown file type" in x)
    assert line.endswith("unknown file type in i_mode (found 0170755)"), line


@pytest.mark.parametrize("names", [["a", "é"], ["a", "\udcff"]], ids=["utf-8", "not-utf-8"])
def test_a_report_with_streamed_arrays_reads_as_the_whole_report(capsys, names):
    """print_json_streaming writes the lists it is given one element at a time where they stand in the
    report: the text is print_json's, and with a name that is not UTF-8 it is the same JSON (each part then
    chooses its own escapes)."""
    from nydus_inspect.cli import StreamedArray, print_json, print_json_streaming

    def report(array):
        return {
            "source": names[0],
            "wasted_files": array(
                {"path": f"/{n}/x", "bytes": k, "deep": {"k": [k]}} for k, n in enumerate(names)
            ),
            "empty": array(iter(())),
            "directories": [{"path": "/", "bytes": 1}],
            "origins": array({"path": f"/{n}", "layer": 0} for n in names),
        }

    print_json(report(list))
    whole = capsys.readouterr().out
    print_json_streaming(report(StreamedArray))
    streamed = capsys.readouterr().out
    assert json.loads(streamed) == json.loads(whole)
    assert list(json.loads(streamed)) == ["source", "wasted_files", "empty", "directories", "origins"]
    if names[1].isprintable():
        assert streamed == whole
    streamed.encode("utf-8")  # valid UTF-8 either way
