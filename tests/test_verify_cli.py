"""The `verify` command: exit codes, human and JSON output, --source round trips and --rules."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from nydus_inspect.merge import merge
from nydus_inspect.testing import Dir, File, build_layer, build_tar

SPEC = {"a": Dir(), "a/one": File(b"1" * 50_000), "a/two": File(b"two"), "b": File(b"\x00" * 9000)}


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "nydus_inspect", *map(str, args)], capture_output=True, text=True
    )


@pytest.fixture
def layer(tmp_path):
    return build_layer(SPEC, tmp_path / "l.blob", chunk_size=0x4000)


def test_ok_layer_exits_0(layer):
    p = run("verify", layer)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "OK: checked" in p.stdout and "chunks" in p.stdout


def test_json_report(layer, tmp_path):
    p = run("verify", layer, "--json", "--source", build_tar(SPEC, tmp_path / "s.tar"))
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["ok"] is True
    (rep,) = doc["layers"]
    assert rep["checked"]["chunks"] > 0 and rep["checked"]["roundtrip entries"] == 5


def test_flipped_chunk_bit_exits_1_and_names_chunk_and_file(layer, tmp_path):
    bad = tmp_path / "bad.blob"
    p = run("corrupt", layer, "-o", bad, "--flip-bit", 8 * 3 + 1)
    assert p.returncode == 0, p.stderr
    p = run("verify", bad, "--json")
    assert p.returncode == 1, p.stdout + p.stderr
    findings = json.loads(p.stdout)["layers"][0]["findings"]
    chunk = [f for f in findings if f["check"].startswith("chunk.")]
    assert chunk and chunk[0]["chunk"] == 0 and chunk[0]["path"]


def test_roundtrip_difference_exits_1(layer, tmp_path):
    other = build_tar(dict(SPEC, **{"a/two": File(b"2")}), tmp_path / "other.tar")
    p = run("verify", layer, "--source", other)
    assert p.returncode == 1
    assert "roundtrip" in p.stdout and "/a/two" in p.stdout


def test_unreadable_exits_2_without_traceback(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a layer" * 100)
    p = run("verify", junk)
    assert p.returncode == 2
    assert "Traceback" not in p.stdout + p.stderr
    assert "unreadable" in p.stderr and p.stdout == ""


def test_source_count_must_match(layer, tmp_path):
    p = run("verify", layer, layer, "--source", build_tar(SPEC, tmp_path / "s.tar"))
    assert p.returncode == 2 and "one per layer" in p.stderr


def test_rules_waste_in_a_merged_image(tmp_path):
    data = random.Random(7).randbytes(200_000)  # distinct chunks: nothing deduplicates
    base = build_layer({"data": File(data), "keep": File(b"k")}, tmp_path / "base.blob", chunk_size=0x10000)
    upper = build_layer(
        {".wh.data": File(b""), "new": File(b"n")}, tmp_path / "upper.blob", chunk_size=0x10000
    )
    merged = tmp_path / "merged.boot"
    merge([str(base), str(upper)], str(merged))
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n  highestWastedBytes: 100KB\n  lowestEfficiency: 0.5\n  highestBlobCount: disabled\n"
    )
    p = run("verify", merged, "--blob", base, "--blob", upper, "--rules", rules, "--json")
    assert p.returncode == 1, p.stdout + p.stderr
    rep = json.loads(p.stdout)["layers"][0]
    assert rep["failures"] == 0  # the image itself is sound ...
    stats = {r["rule"]: r for r in rep["rules"]}
    # ... but /data's chunks (whited out above) still sit in the base blob.
    assert stats["highestWastedBytes"]["ok"] is False and stats["highestWastedBytes"]["value"] >= 196_608
    assert rep["stats"]["unreferenced_bytes"] >= 196_608
    loose = tmp_path / "loose.yaml"
    loose.write_text('{"rules": {"highestWastedBytes": "1MB"}}')
    loose_json = tmp_path / "loose.json"
    loose_json.write_text(loose.read_text())
    p = run("verify", merged, "--blob", base, "--blob", upper, "--rules", loose_json)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "PASS: highestWastedBytes" in p.stdout


def test_bad_rules_file_exits_2(layer, tmp_path):
    rules = tmp_path / "r.yaml"
    rules.write_text("rules:\n  noSuchRule: 3\n")
    p = run("verify", layer, "--rules", rules)
    assert p.returncode == 2 and "unknown rule" in p.stderr
