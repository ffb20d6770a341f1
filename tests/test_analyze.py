"""``analyze`` on a 3-layer image built here: every figure is checked against a count made in this file from
the source tars alone (OCI rules applied to tar members, chunks cut and hashed here), and against the
wasted bytes worked out by hand. The image is analyzed in its three forms (an OCI layout made by
``convert``, the layer blobs, a merged bootstrap) with the same result.
"""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import tarfile

import blake3
import pytest
from conftest import ROOT
from test_convert import simple_layout

CHUNK = 0x10000
T0 = 1_700_000_000


def _noise(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


BIG = _noise(1, 500_000)  # stored by layer 0, copied by layers 1 and 2: duplicate chunks

# (name, kind, data-or-target); kind: f file, d dir, h hard link, s symlink.
LAYERS = [
    [
        ("etc", "d", None),
        ("etc/motd", "f", b"hello\n"),
        ("etc/passwd", "f", b"p" * 100),
        ("usr", "d", None),
        ("usr/bin", "d", None),
        ("usr/bin/tool", "f", _noise(2, 300_000)),
        ("usr/bin/tool2", "h", "usr/bin/tool"),
        ("usr/lib", "d", None),
        ("usr/lib/libx.so", "f", _noise(3, 200_000)),
        ("usr/lib/libx.so.1", "s", "libx.so"),
        ("usr/lib-x", "f", b"x"),  # "/usr/lib-x" sorts between "/usr/lib" and "/usr/lib/libx.so"
        ("usr/lib.d", "d", None),
        ("var", "d", None),
        ("var/cache", "d", None),
        ("var/cache/a", "f", b"a" * 50_000),
        ("var/cache/b", "f", _noise(4, 20_000)),
        ("data", "d", None),
        ("data/big", "f", BIG),
        ("opt", "d", None),
        ("opt/file", "f", b"o" * 1000),
    ],
    [
        ("etc", "d", None),
        ("etc/motd", "f", b"bye!!!\n"),  # modified
        ("etc/.wh.passwd", "f", b""),  # removed
        ("usr", "d", None),
        ("usr/bin", "d", None),
        ("usr/bin/.wh.tool", "f", b""),  # one name of two: the data stays
        ("var", "d", None),
        ("var/cache", "d", None),
        ("var/cache/.wh..wh..opq", "f", b""),  # hides a and b
        ("var/cache/c", "f", b"c" * 3000),
        ("opt", "d", None),
        ("opt/file", "d", None),  # a file replaced by a directory
        ("opt/file/inner", "f", b"i" * 500),
        ("new", "d", None),
        ("new/dup", "f", BIG),
        ("etc/.wh.nothing", "f", b""),  # removes what no lower layer has
    ],
    [
        (".wh.data", "f", b""),  # removes /data and data/big
        ("etc", "d", None),
        ("etc/motd", "f", b"again!!\n"),  # layer 1's motd is wasted now
        ("usr", "d", None),
        ("usr/lib", "d", None),
        ("usr/lib/libx.so", "f", _noise(5, 10_000)),
        ("new", "d", None),
        ("new/dup2", "f", BIG),
    ],
]

# Worked out by hand from the layers above.
WASTED_BY_HAND = [6 + 100 + 50_000 + 20_000 + 1000 + 500_000 + 200_000, 7, 0]


def make_tar(entries) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, data in entries:
            ti = tarfile.TarInfo(name)
            ti.mtime = T0
            if kind == "d":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(ti)
            elif kind == "f":
                ti.size, ti.mode = len(data), 0o644
                tf.addfile(ti, io.BytesIO(data))
            elif kind == "h":
                ti.type, ti.linkname = tarfile.LNKTYPE, data
                tf.addfile(ti)
            else:
                ti.type, ti.linkname = tarfile.SYMTYPE, data
                tf.addfile(ti)
    return buf.getvalue()


# ---------------------------------------------------------------------------- the independent count
def expected_figures(tars: list[bytes]) -> dict:
    """Apply the tars with OCI rules over a flat {path: entry} map and count, from the tar members alone."""
    state: dict[str, dict] = {}  # path -> {"layer", "dir", "inode", "size"}
    names: dict = {}  # inode -> live names
    sizes: dict = {}
    layers = []

    def subtree(path: str) -> list[str]:
        return [p for p in state if p == path or p.startswith(path + "/")]

    def remove(paths: list[str], out: dict | None, wasted: list[int]) -> None:
        for p in paths:
            e = state.pop(p)
            if out is not None:
                out["count"] += 1
            if e["inode"] is not None:
                names[e["inode"]] -= 1
                if names[e["inode"]] == 0:
                    wasted[e["inode"][0]] += sizes[e["inode"]]
                    if out is not None:
                        out["bytes"] += sizes[e["inode"]]

    wasted = [0] * len(tars)
    for i, data in enumerate(tars):
        members = tarfile.open(fileobj=io.BytesIO(data)).getmembers()
        fig = {k: {"count": 0, "bytes": 0} for k in ("added", "modified", "removed")}
        fig["stored"] = sum(
            m.size for m in members if m.isreg() and not os.path.basename(m.name).startswith(".wh.")
        )
        for m in members:
            m.name = os.path.normpath("/" + m.name)[1:]  # ./etc/motd and etc/motd are one path
            if m.islnk():
                m.linkname = os.path.normpath("/" + m.linkname)[1:]
        members = [m for m in members if m.name]  # the root: its attributes, never counted
        # A layer tar may leave out parent directories; the layer has them all the same (as an extractor
        # makes them), and like any directory they merge over the lower one.
        named = {m.name for m in members}
        implicit = sorted({a for m in members for a in _ancestors(m.name)} - named)
        members = [_dir_member(a) for a in implicit] + members
        for m in members:
            d, base = os.path.split("/" + m.name)
            if base == ".wh..wh..opq":
                remove([p for p in list(state) if p.startswith(d.rstrip("/") + "/")], fig["removed"], wasted)
            elif base.startswith(".wh."):
                target = os.path.join(d, base[4:])
                if target in state:
                    remove(subtree(target), fig["removed"], wasted)
        counted = set()
        for m in members:
            path = "/" + m.name
            if os.path.basename(path).startswith(".wh."):
                continue
            inode = (i, m.linkname if m.islnk() else m.name) if m.isreg() or m.islnk() else None
            old = state.get(path)
            if old is not None and old["dir"] and m.isdir():
                old["layer"] = i
                continue
            new_bytes = 0
            if inode is not None and inode not in counted:
                counted.add(inode)
                sizes.setdefault(inode, m.size)
                new_bytes = sizes[inode]
            if old is None:
                kind = "added"
            else:
                kind = "modified"
                remove(subtree(path), None, wasted)
            fig[kind]["count"] += 1
            fig[kind]["bytes"] += new_bytes
            if inode is not None:
                names[inode] = names.get(inode, 0) + 1
            state[path] = {"layer": i, "dir": m.isdir(), "inode": inode}
        layers.append(fig)
    origins = {p: e["layer"] for p, e in state.items()}
    final_bytes = sum(
        sizes[e["inode"]] for e in {id(v): v for v in state.values()}.values() if e["inode"]
    ) - sum(sizes[i] * (n - 1) for i, n in names.items() if n > 1)
    return {"layers": layers, "wasted": wasted, "origins": origins, "final_bytes": final_bytes}


def _ancestors(name: str) -> list[str]:
    parts = name.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _dir_member(name: str) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.DIRTYPE
    return ti


def expected_duplicates(tars: list[bytes], chunk: int = CHUNK) -> list[set[str]]:
    """Per layer, the blake3 digests of its chunks that a lower layer stores already (chunks cut here)."""
    seen: set[str] = set()
    out = []
    for data in tars:
        tf = tarfile.open(fileobj=io.BytesIO(data))
        mine = set()
        for m in tf.getmembers():
            if m.isreg() and m.size:
                body = tf.extractfile(m).read()
                mine |= {blake3.blake3(body[o : o + chunk]).hexdigest() for o in range(0, len(body), chunk)}
        out.append(mine & seen)
        seen |= mine
    return out


# ---------------------------------------------------------------------------- the image in three forms
def cli(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("NYDUS_INSPECT_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "nydus_inspect", *map(str, args)], capture_output=True, env=env
    )


def ok(*args) -> bytes:
    p = cli(*args)
    assert p.returncode == 0, p.stderr.decode()
    return p.stdout


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    d = tmp_path_factory.mktemp("analyze")
    tars = [make_tar(entries) for entries in LAYERS]
    simple_layout(d / "oci", tars, ["gzip"] * len(tars))
    ok("convert", d / "oci", d / "nydus", "--chunk-size", "64K")
    blobs = []  # the same layers packed one by one, lowest first
    for i, t in enumerate(tars):
        (d / f"l{i}.tar").write_bytes(t)
        ok("pack", d / f"l{i}.tar", "-o", d / f"l{i}.blob", "--chunk-size", "64K")
        blobs.append(str(d / f"l{i}.blob"))
    ok("merge", *blobs, "-o", d / "merged.boot")
    return {"tars": tars, "layout": d / "nydus", "blobs": blobs, "merged": d / "merged.boot", "dir": d}


@pytest.fixture(scope="module")
def report(image):
    return json.loads(ok("analyze", image["layout"], "--json"))


def test_per_layer_figures_match_the_tars(image, report):
    want = expected_figures(image["tars"])
    assert want["wasted"] == WASTED_BY_HAND  # the independent count agrees with the hand count
    got = report["layers"]
    assert len(got) == 3
    for i, (g, w) in enumerate(zip(got, want["layers"], strict=True)):
        for key in ("added", "modified", "removed"):
            assert g[key] == w[key], (i, key, g[key], w[key])
        assert g["stored_bytes"] == w["stored"], i
        assert g["wasted_bytes"] == want["wasted"][i], i
    # A few by hand, so the independent count is anchored too.
    assert got[1]["removed"] == {"count": 4, "bytes": 100 + 50_000 + 20_000}  # passwd, tool (name only), a, b
    assert got[2]["removed"] == {"count": 2, "bytes": 500_000}  # /data and /data/big
    assert got[1]["modified"] == {"count": 2, "bytes": 7}  # etc/motd, opt/file (now a directory)


def test_image_figures_and_origins(image, report):
    want = expected_figures(image["tars"])
    img = report["image"]
    stored = sum(f["stored"] for f in want["layers"])
    assert img["stored_bytes"] == stored and img["wasted_bytes"] == sum(WASTED_BY_HAND)
    assert img["efficiency"] == pytest.approx(1 - sum(WASTED_BY_HAND) / stored, abs=1e-6)
    user = want["layers"][1]["stored"] + want["layers"][2]["stored"]
    assert img["user_wasted_fraction"] == pytest.approx(sum(WASTED_BY_HAND) / user, abs=1e-6)
    assert {o["path"]: o["layer"] for o in report["origins"]} == want["origins"]
    paths = [o["path"] for o in report["origins"]]
    assert paths == sorted(want["origins"])
    assert (
        paths.index("/usr/lib")
        < paths.index("/usr/lib-x")
        < paths.index("/usr/lib.d")
        < paths.index("/usr/lib/libx.so")
    )
    assert img["final_bytes"] == want["final_bytes"]
    assert img["final_entries"] == len(want["origins"])
    # Whiteouts explained, the one that removes nothing included.
    whiteouts = {(w["path"], w["kind"], w["target"]) for w in report["whiteouts"]}
    assert ("/var/cache/.wh..wh..opq", "opaque", "/var/cache") in whiteouts
    assert ("/etc/.wh.nothing", "whiteout", "/etc/nothing") in whiteouts
    assert {(w["path"], w["layer"], w["by"], w["how"]) for w in report["wasted_files"]} >= {
        ("/data/big", 0, 2, "removed"),
        ("/usr/lib/libx.so", 0, 2, "overwritten"),
        ("/etc/motd", 1, 2, "overwritten"),
    }


def test_duplicate_chunks_and_compression(image, report):
    dups = expected_duplicates(image["tars"])
    assert [len(d) for d in dups] == [0, 8, 8]  # 500,000 bytes: 7 full chunks of 64 KiB and one partial
    for i, lf in enumerate(report["layers"]):
        chunks = json.loads(ok("chunks", "--json", lf["path"]))[
            "chunks"
        ]  # the blob's own records (blob.meta)
        assert lf["duplicate_chunks"] == len(dups[i])
        assert lf["duplicate_chunk_bytes"] == sum(
            c["compressed_size"] for c in chunks if c["digest"] in dups[i]
        )
        assert lf["chunks"] == len(chunks)
        assert lf["chunk_bytes"] == sum(c["uncompressed_size"] for c in chunks)
        assert lf["chunk_compressed_bytes"] == sum(c["compressed_size"] for c in chunks)
    assert report["image"]["duplicate_chunks"] == 16
    # The 50,000 a's of /var/cache/a compress; random bytes do not.
    assert report["layers"][0]["compression_ratio"] > 1.0


def test_the_three_forms_agree(image, report):
    from_blobs = json.loads(ok("analyze", *image["blobs"], "--json"))
    from_merged = json.loads(
        ok("analyze", image["merged"], "--blob-dir", image["layout"] / "blobs" / "sha256", "--json")
    )
    for other in (from_blobs, from_merged):
        for a, b in zip(other["layers"], report["layers"], strict=True):
            assert {k: v for k, v in a.items() if k not in ("path", "prefetch_entries")} == {
                k: v for k, v in b.items() if k not in ("path", "prefetch_entries")
            }
        assert other["origins"] == report["origins"]
        assert other["image"]["wasted_bytes"] == report["image"]["wasted_bytes"]


def test_json_report_is_written_as_one_document_would_be(image):
    """The origins array is written an element at a time; the text is what printing the whole report gives."""
    out = ok("analyze", *image["blobs"], "--json").decode()
    assert out == json.dumps(json.loads(out), indent=2, ensure_ascii=False) + "\n"
    bare = json.loads(ok("analyze", *image["blobs"], "--json", "--no-origins"))
    assert "origins" not in bare and bare == {k: v for k, v in json.loads(out).items() if k != "origins"}


def test_text_report(image):
    out = ok("analyze", image["layout"]).decode()
    assert "3 layers; the final image has" in out
    assert (
        "/var/cache/.wh..wh..opq: opaque: hides what lower layers put in /var/cache (2 names, 70000 bytes)"
        in out
    )
    assert "/etc/.wh.nothing: removes /etc/nothing, which no lower layer has" in out
    assert "488 KiB  /data/big  (layer 0, removed by layer 2)" in out
    stored = sum(f["stored"] for f in expected_figures(image["tars"])["layers"])
    assert f"efficiency: {1 - sum(WASTED_BY_HAND) / stored:.4f} (1 - wasted " in out
    assert "duplicate chunks: 16 chunks" in out


def test_bad_input_is_one_line(tmp_path):
    p = cli("analyze", tmp_path)
    err = p.stderr.decode()
    assert p.returncode == 2 and err.count("\n") == 1 and "not an OCI image layout" in err


def test_verify_rules_over_the_analysis(image, report, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n"
        "  highestWastedBytes: 700KB\n"  # 771,113 wasted: fails
        "  lowestEfficiency: 0.6\n"
        "  highestUserWastedPercent: 0.5\n"  # fails
        "  highestDuplicateChunkBytes: 2MB\n"
        "  lowestPrefetchCoverage: 0.9\n"
        "  highestUnusedChunkBytes: disabled\n"
    )
    p = cli("verify", image["layout"], "--rules", rules, "--json")
    assert p.returncode == 1, p.stderr.decode()
    (layer,) = json.loads(p.stdout)["layers"]
    assert layer["failures"] == 0  # the image is sound; only the thresholds fail
    got = {r["rule"]: (r["value"], r["ok"]) for r in layer["rules"]}
    img = report["image"]
    assert got == {
        "highestWastedBytes": (sum(WASTED_BY_HAND), False),
        "lowestEfficiency": (pytest.approx(img["efficiency"], abs=1e-6), True),
        "highestUserWastedPercent": (pytest.approx(img["user_wasted_fraction"], abs=1e-6), False),
        "highestDuplicateChunkBytes": (img["duplicate_chunk_bytes"], True),
        "lowestPrefetchCoverage": (1.0, True),
    }
    text = cli("verify", image["layout"], "--rules", rules).stdout.decode()
    assert "FAIL: highestWastedBytes: 771113 (limit 700000)" in text and "PASS: lowestEfficiency" in text


def test_tui_analysis_screen(image, report):
    pytest.importorskip("textual")
    from textual.widgets import DataTable
    from tui_helpers import drive, press

    async def script(app, pilot):
        await press(app, pilot, "6")
        assert app.current_mode == "analysis"
        layers = app.screen.query_one("#analysis-layers", DataTable)
        rows = [[str(c) for c in layers.get_row_at(i)] for i in range(layers.row_count)]
        assert [r[0] for r in rows] == ["0", "1", "2"]
        for row, lf in zip(rows, report["layers"], strict=True):
            assert row[1].startswith(f"{lf['added']['count']:,} (")
            assert row[3].startswith(f"{lf['removed']['count']:,} (")
            assert row[6] == f"{lf['final_entries']:,}"
        image_pane = app.screen.query_one("#analysis-image")
        assert image_pane.value("efficiency").startswith(f"{report['image']['efficiency']:.4f}")
        wasted = app.screen.query_one("#analysis-wasted", DataTable)
        assert (
            str(wasted.get_row_at(0)[1]) == "/data/big"
            and str(wasted.get_row_at(0)[3]) == "removed by layer 2"
        )
        await press(app, pilot, "slash")
        await pilot.press(*"opq", "enter")
        await press(app, pilot)
        assert str(wasted.get_row_at(wasted.cursor_row)[1]) == "/var/cache/.wh..wh..opq"

    drive([image["blobs"][0], image["blobs"][1], image["blobs"][2]], script)


def test_chunk_refs_say_what_chunk_indexes_say(image):
    from nydus_inspect.layer import open_layer

    with open_layer(str(image["merged"]), blobs=image["blobs"]) as layer:
        r = layer.rafs
        files = [n for n in r.walk() if n.type == "file" and n.size]
        assert {b for n in files for b, _ in r.chunk_refs(n)} == {0, 1, 2}  # chunks of every blob
        for node in files:
            assert list(r.chunk_refs(node)) == [(ci.blob_index, ci.ci_index) for ci in r.chunk_indexes(node)]


DEBIAN = os.path.join(os.environ.get("NYDUS_BENCH_DIR", "/var/tmp/nydus-bench"), "rootfs.tar")


@pytest.mark.slow
@pytest.mark.skipif(
    not os.path.isfile(DEBIAN), reason=f"no Debian rootfs at {DEBIAN} (bench/make_rootfs.sh makes it)"
)
def test_debian_with_an_upper_layer(tmp_path):
    """The Debian minbase rootfs of the benchmarks, and an upper layer as an upgrade makes one: a big file
    overwritten, one name of a hard-linked file and /usr/share/doc whited out, a directory made opaque, a
    copy of a binary (duplicate chunks). Every figure against the count made here from the two tars."""
    base = open(DEBIAN, "rb").read()
    with tarfile.open(DEBIAN) as tf:
        members = tf.getmembers()
        files = sorted((m for m in members if m.isreg()), key=lambda m: -m.size)
        biggest, second = files[0], files[1]
        linked = next(m for m in members if m.islnk())
        second_body = tf.extractfile(second).read()
    assert os.path.dirname(linked.name) and linked.name != biggest.name
    entries = [
        (os.path.normpath(biggest.name), "f", b"replaced by an upgrade\n"),
        (
            os.path.join(
                os.path.dirname(os.path.normpath(linked.name)), ".wh." + os.path.basename(linked.name)
            ),
            "f",
            b"",
        ),
        ("usr/share/.wh.doc", "f", b""),
        ("var/cache/debconf/.wh..wh..opq", "f", b""),
        ("var/cache/debconf/config.dat", "f", b"fresh\n"),
        ("opt/copy", "f", second_body),
    ]
    parents = sorted({os.path.dirname(n) for n, _, _ in entries if os.path.dirname(n)})
    upper = make_tar([(d, "d", None) for d in parents] + entries)
    (tmp_path / "upper.tar").write_bytes(upper)
    ok("pack", DEBIAN, "-o", tmp_path / "base.blob")
    ok("pack", tmp_path / "upper.tar", "-o", tmp_path / "upper.blob")
    got = json.loads(ok("analyze", tmp_path / "base.blob", tmp_path / "upper.blob", "--json"))
    want = expected_figures([base, upper])
    for g, w in zip(got["layers"], want["layers"], strict=True):
        assert (g["added"], g["modified"], g["removed"], g["stored_bytes"]) == (
            w["added"],
            w["modified"],
            w["removed"],
            w["stored"],
        )
    assert [g["wasted_bytes"] for g in got["layers"]] == want["wasted"]
    assert want["wasted"][0] >= biggest.size and want["layers"][1]["removed"]["count"] > 500
    assert {o["path"]: o["layer"] for o in got["origins"]} == want["origins"]
    dups = expected_duplicates([base, upper], chunk=0x100000)
    assert got["layers"][1]["duplicate_chunks"] == len(dups[1]) > 0


def test_a_chunk_index_far_past_the_others_is_not_an_array_slot():
    """A layer's own chunk sizes are kept in arrays indexed by chunk index: a record whose index lies far past
    every other (a hand-made or hostile table; near 2**32 the arrays would be 32 GiB) is kept by itself, and
    its sizes still count, the last record of an index winning."""
    import tracemalloc

    from nydus_inspect.analyze import _Stored

    tracemalloc.start()
    try:
        stored = _Stored(4, with_digests=False)
        for k in range(4):
            stored.add(b"", k, 100, 10)
        stored.add(b"", 1 << 24, 7, 3)
        stored.add(b"", 1 << 24, 8, 4)
        for k in range(4, 3000):  # dense indexes past the hint still go in the arrays
            stored.add(b"", k, 1, 1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak
    assert len(stored.usizes) == 3000 and stored.far == {1 << 24: (8, 4)}
    assert sum(stored.usizes) == 400 + 2996 and len(stored) == 3002
