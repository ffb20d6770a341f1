"""What verify reports and how: names and symlink targets no file system can create, long values cut in what
a person reads, an unreadable input as an error line on stderr, a blob holding nothing."""

from __future__ import annotations

import json

import hostile
from fixtures_util import assert_one_line_error, run_cli

from nydus_inspect.errors import FormatError
from nydus_inspect.formats import tar_header


def _verify_json(path) -> list[dict]:
    proc = run_cli("verify", "--json", path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    [layer] = json.loads(proc.stdout)["layers"]
    return layer["findings"]


def test_names_over_255_bytes_are_reported(tmp_path):
    long = b"n" * 256
    boot = tmp_path / "long.boot"
    boot.write_bytes(hostile.bootstrap({b"/" + b"k" * 255: {"type": "file"}, b"/" + long: {"type": "file"}}))
    findings = [f for f in _verify_json(boot) if "255 bytes" in f["message"]]
    assert [(f["check"], f["path"], f["found"]) for f in findings] == [
        ("bootstrap.dir", "/" + long.decode(), "256 bytes")
    ]


def test_symlink_targets_of_path_max_are_reported(tmp_path):
    boot = tmp_path / "targets.boot"
    boot.write_bytes(
        hostile.bootstrap(
            {
                b"/ok": {"type": "symlink", "target": b"t" * 4095},
                b"/over": {"type": "symlink", "target": b"t" * 4096},
            }
        )
    )
    findings = [f for f in _verify_json(boot) if "PATH_MAX" in f["message"]]
    assert [(f["check"], f["path"], f["field"], f["found"]) for f in findings] == [
        ("bootstrap.inode", "/over", "i_size", "4096")
    ]


def test_long_names_and_values_are_cut_in_the_text(tmp_path):
    """A 3,000-byte name out of order and with a NUL: each finding's line stays short; the JSON keeps paths
    whole."""
    name = b"z" * 1500 + b"\0" + b"z" * 1499
    boot = tmp_path / "nul.boot"
    # "{" sorts after "z": the NUL name is not the last of its block, where a reader ends a name at a NUL.
    boot.write_bytes(hostile.bootstrap({b"/" + name: {"type": "file"}, b"/{": {"type": "file"}}))
    proc = run_cli("verify", boot)
    assert proc.returncode == 1, proc.stderr
    lines = [ln for ln in proc.stdout.decode().splitlines() if ln.startswith("  bootstrap.")]
    assert lines and all(len(ln) < 1200 for ln in lines), [len(ln) for ln in lines]
    assert any("NUL" in ln and "characters)" in ln for ln in lines), lines
    findings = _verify_json(boot)
    assert any(len(f.get("path", "")) == 3001 for f in findings)


def test_format_error_values_are_cut():
    text = str(FormatError("erofs dirent", "directory cycle", value="/d" * 5000))
    assert len(text) < 300 and text.endswith("... (10000 characters))")


def test_unreadable_input_is_an_error_line_on_stderr(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a layer" * 100)
    proc = run_cli("verify", junk)
    line = assert_one_line_error(proc, 2)
    assert line.startswith(f"nydus-inspect: error: {junk}: unreadable: ")
    assert proc.stdout == b""


def test_a_blob_of_only_an_empty_toc_does_not_pass(tmp_path):
    blob = tmp_path / "empty-toc.blob"
    blob.write_bytes(tar_header.build(tar_header.RAFS_BLOB_TOC, 0))
    assert blob.stat().st_size == 512
    [finding] = _verify_json(blob)
    assert finding["check"] == "blob.layout" and "no section" in finding["message"]


def test_diff_of_an_empty_layer_file_is_exit_2(tmp_path):
    src = tmp_path / "src.tar"
    src.write_bytes(hostile.member(b"f", b"x") + hostile.END)
    empty = tmp_path / "empty.blob"
    empty.write_bytes(b"")
    assert "empty file" in assert_one_line_error(run_cli("diff", src, empty), 2)


def test_values_no_kernel_takes_are_reported(tmp_path):
    """The values a mount must refuse or clamp (a size or a time past a signed 64-bit number, nanoseconds past a
    second) are findings of the field that holds them; the healthy inodes beside them are not."""
    cases = {case.name: case for case in hostile.kernel_limits()}
    want = {
        "size-2^63": ("i_size", str((1 << 63) + 1)),
        "size-2^64-1": ("i_size", str((1 << 64) - 1)),
        "dir-size-2^64-1": ("i_size", str((1 << 64) - 1)),
        "mtime-2^63": ("i_mtime", str(1 << 63)),
        "dir-mtime-2^64-1": ("i_mtime", str((1 << 64) - 1)),
        "mtime-max-nsec": ("i_mtime_nsec", str((1 << 32) - 1)),
    }
    for name, (field, found) in want.items():
        path = tmp_path / f"{name}.boot"
        cases[name].write(path)
        findings = [f for f in _verify_json(path) if f.get("field") == field and "kernel" in f["message"]]
        assert [(f["check"], f["path"], f["found"]) for f in findings] == [
            ("bootstrap.inode", "/bad", found)
        ], (
            name,
            _verify_json(path),
        )
