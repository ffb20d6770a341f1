"""eStargz layers, read directly and by reference.

Every eStargz layer here is written during the run by ``estargz-build`` (oracle/estargz: the stargz
snapshotter's own estargz module) from the fixture tars, the vector tars and, when built, the Debian rootfs tar.
Our reading of it (``ls -R --json``, ``cat``, ``unpack``, our FUSE mount) must equal the source tar, read with
tarfile; ``verify`` must pass with the TOC digest estargz gives and locate a flipped bit. ``pack --type
estargz-ref`` writes the bootstrap over the same blob, which the real ``nydusd`` mounts and serves as the source
tar; the real ``nydus-image create --type estargz-ref`` (nydus 2.4.4: a zran bootstrap over the same blob) must
agree with ours where the two designs meet.

nydus 2.4.4's own stargz builder (``--type estargztoc-ref``, the one taking the TOC JSON) cannot be the judge:
it needs ``--blob-id`` and then aborts on ``assert!(!is_to_ref() || is_tarfs)`` in finalize_blob for any TOC
with data, and it refuses TOCs with an empty file or chunk entries (``missing digest or chunk digest``);
``test_nydus_estargztoc_ref_cannot_judge`` pins both, so a nydus that fixes them shows up here.

Layers written with a minimum chunk size (``--min-chunk-size``: small files share a gzip member, each at its
``innerOffset``) are read the same way and held to the same judges, zlib inflating the members on its own for
the TOC's ranges; estargz-ref refuses them as nydus's stargz builder does, and ``pack --type targz-ref`` over
them is held field by field to ``nydus-image create --type estargz-ref``.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import struct
import tarfile
import time
import zlib
from pathlib import Path

import pytest
from fixtures_util import (
    assert_dir_matches,
    assert_one_line_error,
    assert_tree_matches,
    debian_rootfs_tar,
    expected_tree,
    fixture_tars_fixture,  # noqa: F401
    run_cli,
    source_tar,
)
from test_oracle_reader import read_in_ours, want_from_dir

from nydus_inspect import cli
from nydus_inspect.estargz import read_index, ref_bootstrap
from nydus_inspect.formats import estargz as fmt
from nydus_inspect.layer import KIND_ESTARGZ, open_layer
from oracle import estargz_build_fixture  # noqa: F401  (the session fixture of oracle/estargz)

#: Tars estargz-build takes (it refuses PAX global headers and sparse members, as the estargz module does).
SOURCES = [
    "fixture:every-type.tar",
    "fixture:whiteouts.tar",
    "fixture:xattrs.tar",
    "fixture:dedup.tar",
    "fixture:bad-xattr-namespace.tar",
    "vector:all-entry-type.tar",
    "vector:all-entry-type-macos.tar",
    "vector:empty.tar",
]
#: 0: the module's default (4 MiB: no file of the fixtures is chunked); 64 KiB: big files in many chunks.
CHUNK_SIZES = [0, 0x10000]


def expected_of(src: Path, made: dict, keep_data: bool = False) -> dict:
    return as_in_toc(expected_tree(src, keep_data=keep_data), src, made["toc_json"])


def build(estargz_build, src: Path, out: Path, chunk_size: int = 0, min_chunk_size: int = 0) -> dict:
    toc = out.with_suffix(".json")
    made = estargz_build.build(src, out, chunk_size=chunk_size, min_chunk_size=min_chunk_size, toc=toc)
    made["toc_json"] = toc
    return made


def ls_json(layer: Path, *extra) -> dict[str, dict]:
    proc = run_cli("ls", "-R", "--json", layer, *extra)
    assert proc.returncode == 0, proc.stderr.decode()
    return {e["path"]: e for e in json.loads(proc.stdout)}


def assert_ls_matches(expected: dict, found: dict[str, dict]) -> None:
    """``ls -R --json`` names exactly the tar's entries (and the implicit directories) with their attributes."""
    problems = []
    for p, w in expected.items():
        e = found.get(os.fsdecode(p))
        if e is None:
            problems.append(f"{p!r}: missing")
            continue
        got = (e["type"], int(e["mode"], 8), e["uid"], e["gid"], e["mtime"])
        want = ({"file": "file", "dir": "dir"}.get(w.type, w.type), w.mode, w.uid, w.gid, w.mtime)
        if w.type == "symlink":
            got, want = got[:1] + got[2:], want[:1] + want[2:]
        if got != want:
            problems.append(f"{p!r}: (type, mode, uid, gid, mtime) tar {want}, ls {got}")
        if w.type == "file" and e["size"] != w.size:
            problems.append(f"{p!r}: size tar {w.size}, ls {e['size']}")
        if w.type == "symlink" and e.get("target") != os.fsdecode(w.target):
            problems.append(f"{p!r}: target tar {w.target!r}, ls {e.get('target')!r}")
    extra = set(found) - {os.fsdecode(p) for p in expected} - {"/"}
    extra = {p for p in extra if found[p]["type"] != "dir"}
    if extra:
        problems.append(f"not in the tar: {sorted(extra)[:10]}")
    assert not problems, "\n".join(problems[:30])


def nydus_stargz_builder(oracle, made: dict, layer: Path, boot: Path):
    """nydus's stargz builder (`nydus-image create --type estargztoc-ref`) on the TOC of ``layer``; not
    checked (the callers pin how it fails)."""
    return oracle.run(
        "nydus-image",
        "create",
        "--type",
        "estargztoc-ref",
        "--log-level",
        "warn",
        "--bootstrap",
        boot,
        "--blob-id",
        made["digest"].removeprefix("sha256:"),
        "--blob-data-size",
        f"{layer.stat().st_size:x}",
        made["toc_json"],
        ok=False,
    )


# ---------------------------------------------------------------------------- reading directly
@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
@pytest.mark.parametrize("source", SOURCES)
def test_read_estargz_directly(request, estargz_build, source, chunk_size, tmp_path):
    src = source_tar(request, source)
    layer = tmp_path / "layer.tar.gz"
    made = build(estargz_build, src, layer, chunk_size)
    assert not any(e.get("innerOffset") for e in json.loads(made["toc_json"].read_bytes())["entries"])
    read_directly(src, layer, made, tmp_path)


def cat_in_process(layer: Path, path: str, out: Path) -> tuple[int, str]:
    """``cat LAYER PATH -o OUT`` through the CLI's main in this process (a process per file costs more than the
    read): (exit code, stderr)."""
    stderr = io.StringIO()
    term = signal.getsignal(signal.SIGTERM)
    try:
        with contextlib.redirect_stderr(stderr):
            code = cli.main(["cat", str(layer), path, "-o", str(out)])
    finally:
        signal.signal(signal.SIGTERM, term)
    return code, stderr.getvalue()


def read_directly(src: Path, layer: Path, made: dict, tmp_path: Path, cat_all: bool = False) -> dict:
    """info, the tree (through diff's reader and ``ls -R --json``), every file's bytes (through the library,
    and through ``cat``: every file with ``cat_all``, else the three largest), ``unpack`` and ``verify`` of
    the eStargz ``layer`` made from ``src``, each held to the source tar. Returns the expected tree."""
    expected = expected_of(src, made, keep_data=True)

    info = run_cli("info", "--json", layer)
    assert info.returncode == 0, info.stderr.decode()
    facts = json.loads(info.stdout)
    assert facts["kind"] == KIND_ESTARGZ
    assert facts["estargz"]["toc_digest"] == made["tocDigest"]
    assert facts["sha256"] == made["digest"].removeprefix("sha256:")

    # The tree, through diff's reader, then through the CLI's listing.
    assert_tree_matches(expected, layer)
    assert_ls_matches(expected, ls_json(layer))

    # Every file's bytes: through the library, and through `cat` as a user runs it.
    with open_layer(str(layer)) as opened:
        nodes = {n.path: n for n in opened.rafs.walk()}
        for p, w in expected.items():
            if w.type == "file":
                got = b"".join(opened.read_file(nodes[p]))
                assert got == w.data, p
    files = sorted((p for p, w in expected.items() if w.type == "file"), key=lambda q: -expected[q].size)
    for p in files[:3]:
        proc = run_cli("cat", layer, os.fsdecode(p))
        assert proc.returncode == 0, proc.stderr.decode()
        assert proc.stdout == expected[p].data
    if cat_all:
        out = tmp_path / "cat.out"
        for p in files[3:]:
            code, err = cat_in_process(layer, os.fsdecode(p), out)
            assert code == 0, (p, err)
            assert out.read_bytes() == expected[p].data, p

    # unpack: the tar we write holds the source tar's tree.
    out = tmp_path / "out.tar"
    proc = run_cli("unpack", layer, "-o", out, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()
    assert_tree_matches(expected, out)

    # verify: every chunkDigest and file digest, and the TOC digest estargz gave.
    proc = run_cli("verify", layer, "--toc-digest", made["tocDigest"], timeout=600)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    return expected


def as_in_toc(expected: dict, src: Path, toc_json: Path) -> dict:
    """The tar's tree as a JSON TOC can hold it, checked against what the writer wrote.

    Names: JSON holds text, so the estargz writer puts U+FFFD for each byte that is not UTF-8 (as Python's
    "replace" does). Times: the TOC holds whole seconds (RFC 3339); a fractional tar mtime comes back within a
    second of it."""

    def lossy(raw: bytes) -> bytes:
        return raw.decode("utf-8", "replace").encode()

    toc_times = {}
    for e in json.loads(toc_json.read_bytes())["entries"]:
        if e.get("modtime") and e["type"] != "chunk":
            when = fmt._mtime(e["modtime"], 0)
            toc_times[b"/" + fmt.clean(e["name"]).encode()] = when
    fractional, schily = {}, {}
    if src.stat().st_size:
        with tarfile.open(src, encoding="utf-8", errors="surrogateescape") as tf:
            for m in tf:
                p = lossy(b"/" + fmt.clean(m.name).encode("utf-8", "surrogateescape"))
                if m.mtime != int(m.mtime):
                    fractional[p] = m.mtime
                # Go's archive/tar reads xattrs from SCHILY.xattr. records only (not libarchive's).
                schily[p] = {
                    k[len("SCHILY.xattr.") :].encode() for k in m.pax_headers if k.startswith("SCHILY.xattr.")
                }
    out = {}
    for p, w in expected.items():
        q = lossy(p)
        w.names = [lossy(n) for n in w.names]
        if w.target is not None:
            w.target = lossy(w.target)
        first = w.names[0] if w.names else q  # a hard link's entry carries no xattrs of its own
        if w.xattrs and first == q and q in schily:
            w.xattrs = {k: v for k, v in w.xattrs.items() if k in schily[q]}
        if q in fractional:
            got = toc_times[q]
            assert abs(got - fractional[q]) < 1, (q, got, fractional[q])
            w.mtime = got
        out[q] = w
    return out


def test_longnames_lossy_name_over_255_bytes_is_refused(estargz_build, fixture_tars, tmp_path):
    """longnames.tar has a 255-byte name of bytes that are not UTF-8: the writer puts U+FFFD (3 bytes) for each,
    a name no file system holds. Reading refuses it, as pack refuses such a tar entry."""
    layer = tmp_path / "l.tar.gz"
    build(estargz_build, fixture_tars["longnames.tar"], layer)
    for argv in (("ls", "-R"), ("pack", "--type", "estargz-ref", layer, "-o", tmp_path / "x.boot")):
        proc = run_cli(*argv, *(() if argv[0] == "pack" else (layer,)))
        assert_one_line_error(proc, 2, "longer than 255 bytes", "estargz TOC")
    assert not (tmp_path / "x.boot").exists()


def test_toc_command_lists_entries_with_offsets(estargz_build, fixture_tars, tmp_path):
    layer = tmp_path / "l.tar.gz"
    made = build(estargz_build, fixture_tars["every-type.tar"], layer, 0x10000)
    proc = run_cli("toc", "--json", layer)
    assert proc.returncode == 0, proc.stderr.decode()
    rep = json.loads(proc.stdout)
    assert rep["toc_digest"] == made["tocDigest"]
    doc = json.loads(made["toc_json"].read_bytes())
    assert [e["name"] for e in rep["entries"]] == [e["name"] for e in doc["entries"]]
    raw = layer.read_bytes()
    chunks = [e for e in rep["entries"] if e.get("chunk_digest")]
    assert any(e["type"] == "chunk" for e in chunks)
    for ours, theirs in zip(rep["entries"], doc["entries"], strict=True):
        assert ours["type"] == theirs["type"]
        if ours.get("chunk_digest"):
            assert ours["offset"] == theirs["offset"]
            assert ours["chunk_digest"] == theirs["chunkDigest"]
            # The stored range inflates to the chunk whose digest the TOC records.
            member = raw[ours["offset"] : ours["offset"] + ours["stored_size"]]
            data = gzip.GzipFile(fileobj=io.BytesIO(member)).read(ours["chunk_size"])
            assert "sha256:" + hashlib.sha256(data).hexdigest() == theirs["chunkDigest"]
    text = run_cli("toc", layer)
    assert text.returncode == 0 and made["tocDigest"] in text.stdout.decode()


# ---------------------------------------------------------------------------- verify finds and locates damage
def test_verify_locates_a_flipped_bit_in_a_chunk(estargz_build, fixture_tars, tmp_path):
    layer = tmp_path / "l.tar.gz"
    made = build(estargz_build, fixture_tars["every-type.tar"], layer, 0x10000)
    index = read_index(_Src(layer.read_bytes()), layer.stat().st_size)
    refs = index.chunk_refs()
    entry, ref = next((e, r) for e, r in refs if e.type == "chunk" and e.path == "data/exact-1m.txt")
    bad = bytearray(layer.read_bytes())
    # A byte inside the member's deflate data (past its 10-byte gzip header).
    bad[ref.compressed_offset + 40] ^= 0x10
    damaged = tmp_path / "bad.tar.gz"
    damaged.write_bytes(bad)
    proc = run_cli("verify", damaged, "--toc-digest", made["tocDigest"])
    out = proc.stdout.decode()
    assert proc.returncode == 1, out + proc.stderr.decode()
    assert "estargz.chunk" in out and f"offset {ref.compressed_offset}" in out, out
    assert f"entry {entry.index} " in out and "/data/exact-1m.txt" in out, out
    # The readers refuse those bytes too: one line naming the chunk, exit 2.
    proc = run_cli("cat", damaged, "data/exact-1m.txt")
    assert_one_line_error(proc, 2, f"offset {ref.compressed_offset}")


def test_verify_checks_the_toc_digest(estargz_build, fixture_tars, tmp_path):
    layer = tmp_path / "l.tar.gz"
    made = build(estargz_build, fixture_tars["dedup.tar"], layer)
    good = made["tocDigest"]
    wrong = good[:-1] + ("0" if good[-1] != "0" else "1")
    proc = run_cli("verify", layer, "--toc-digest", wrong)
    out = proc.stdout.decode()
    assert proc.returncode == 1 and "estargz.toc_digest" in out and good in out, out
    # The TOC digest is the sha256 of the TOC JSON as stored.
    assert good == "sha256:" + hashlib.sha256(made["toc_json"].read_bytes()).hexdigest()


def test_a_flipped_bit_in_the_toc_is_found(estargz_build, fixture_tars, tmp_path):
    layer = tmp_path / "l.tar.gz"
    build(estargz_build, fixture_tars["dedup.tar"], layer)
    raw = bytearray(layer.read_bytes())
    footer = fmt.parse_footer(bytes(raw[-fmt.FOOTER_SIZE :]), len(raw))
    raw[footer.toc_offset + 30] ^= 0x01
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(raw)
    proc = run_cli("verify", bad)
    out = proc.stdout.decode()
    assert proc.returncode == 1, out + proc.stderr.decode()
    assert "estargz.toc" in out and f"offset {footer.toc_offset}" in out, out
    assert_one_line_error(run_cli("ls", bad), 2, "estargz TOC", f"offset {footer.toc_offset}")


# ---------------------------------------------------------------------------- files sharing a gzip member
#: Tars with several small files, which the writer's minimum chunk size puts in one gzip member.
SHARED_SOURCES = [
    "fixture:every-type.tar",
    "fixture:whiteouts.tar",
    "fixture:xattrs.tar",
    "fixture:dedup.tar",
    "vector:all-entry-type.tar",
]
#: (chunk size, minimum chunk size): members of about 4 KiB and 64 KiB of gzip, big files whole or in 64 KiB
#: chunks (a chunk entry then shares a member too).
SHARED_SIZES = [(0, 4096), (0, 65536), (0x10000, 65536)]


def build_shared(estargz_build, src: Path, out: Path, chunk_size: int = 0, min_chunk_size: int = 65536):
    """An eStargz layer with members shared by several entries: (what estargz-build said, the TOC entries)."""
    made = build(estargz_build, src, out, chunk_size, min_chunk_size)
    entries = json.loads(made["toc_json"].read_bytes())["entries"]
    assert any(e.get("innerOffset") for e in entries), "the writer put no two entries in one member"
    return made, entries


def inflate_entry(raw: bytes, offset: int, inner: int, size: int) -> bytes:
    """An entry's bytes as zlib gives them: the gzip member at ``offset`` inflated past ``inner``."""
    out = zlib.decompressobj(31).decompress(raw[offset:], inner + size)
    return out[inner : inner + size]


@pytest.mark.parametrize(("chunk_size", "min_chunk_size"), SHARED_SIZES)
@pytest.mark.parametrize("source", SHARED_SOURCES)
def test_read_shared_members(request, estargz_build, source, chunk_size, min_chunk_size, tmp_path):
    """Entries with an innerOffset: info, ls, cat of every file, unpack and verify agree with the source tar;
    ``toc`` shows each innerOffset, and the stored range it gives (the member from its start) inflates, with
    zlib, to the bytes of the chunkDigest the writer recorded."""
    src = source_tar(request, source)
    layer = tmp_path / "layer.tar.gz"
    made, entries = build_shared(estargz_build, src, layer, chunk_size, min_chunk_size)
    read_directly(src, layer, made, tmp_path, cat_all=True)
    proc = run_cli("toc", "--json", layer)
    assert proc.returncode == 0, proc.stderr.decode()
    raw = layer.read_bytes()
    for ours, theirs in zip(json.loads(proc.stdout)["entries"], entries, strict=True):
        if not ours.get("chunk_digest"):
            continue
        assert ours.get("inner_offset", 0) == theirs.get("innerOffset", 0)
        stored = raw[: ours["offset"] + ours["stored_size"]]
        data = inflate_entry(stored, ours["offset"], ours.get("inner_offset", 0), ours["chunk_size"])
        assert "sha256:" + hashlib.sha256(data).hexdigest() == theirs["chunkDigest"], ours["name"]
    # The table shows the innerOffset beside the offset.
    text = run_cli("toc", layer).stdout.decode().splitlines()
    assert text[0].split()[:4] == ["#", "TYPE", "OFFSET", "INNER"]
    for e in (e for e in entries if e.get("innerOffset")):
        row = text[1 + entries.index(e)].split()
        assert row[2:4] == [str(e["offset"]), str(e["innerOffset"])], row


def _shared_members(layer: Path):
    with open_layer(str(layer)) as opened:
        return [m for m in opened.estargz_index.members if m.shared]


def test_small_files_of_one_member_inflate_it_once(estargz_build, fixture_tars, tmp_path):
    """Reading the files of a shared member in TOC order inflates each member once; reading them again, last
    first and past the decoded-chunk cache, inflates nothing more (the member's output is kept)."""
    layer = tmp_path / "l.tar.gz"
    build_shared(estargz_build, fixture_tars["every-type.tar"], layer)
    shared = _shared_members(layer)
    assert max(len(m.entries) for m in shared) >= 5
    with open_layer(str(layer)) as opened:
        refs = {e.index: r for e, r in opened.estargz_index.chunk_refs()}
        view = opened.blob_file(0).members
        for m in shared:
            for e in m.entries:
                data = opened.chunk_reader.decode(refs[e.index])
                assert hashlib.sha256(data).digest() == e.chunk_digest
        assert view.inflations == len(shared)
        for m in reversed(shared):
            for e in reversed(m.entries):
                opened.chunk_reader.decode(refs[e.index])
        assert view.inflations == len(shared)


def test_a_large_member_is_read_in_bounded_memory(estargz_build, tmp_path):
    """A member whose output is far larger than its gzip (24 MiB of zeros in 4 MiB chunks, with small files
    around, all in one 64 KiB member): read in TOC order it is inflated once and keeps at most its last
    part; an earlier chunk read after that inflates it again, and still reads right."""
    from nydus_inspect.chunks import members as members_mod

    src = tmp_path / "zeros.tar"
    with tarfile.open(src, "w", format=tarfile.GNU_FORMAT) as tf:
        for name, data in (("a", b"first\n"), ("zeros", bytes(24 << 20)), ("b", b"second\n")):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime = len(data), 1700000000
            tf.addfile(ti, io.BytesIO(data))
    layer = tmp_path / "l.tar.gz"
    build_shared(estargz_build, src, layer)
    (member,) = [m for m in _shared_members(layer) if len(m.entries) > 6]
    assert member.need > 24 << 20 and member.end - member.offset < 1 << 20
    with open_layer(str(layer)) as opened:
        refs = {e.index: r for e, r in opened.estargz_index.chunk_refs()}
        view = opened.blob_file(0).members
        most = 0
        for e in member.entries:
            data = opened.chunk_reader.decode(refs[e.index])
            assert hashlib.sha256(data).digest() == e.chunk_digest
            most = max(most, max(len(s.buf) for s in view._states.values()))
        assert view.inflations == 1
        assert most <= members_mod.KEEP_BEHIND + members_mod.STEP + (4 << 20)
        first = member.entries[0]
        assert hashlib.sha256(opened.chunk_reader.decode(refs[first.index])).digest() == first.chunk_digest
        assert view.inflations == 2


def test_verify_finds_a_flipped_bit_in_a_shared_member(estargz_build, fixture_tars, tmp_path):
    layer = tmp_path / "l.tar.gz"
    made, _ = build_shared(estargz_build, fixture_tars["every-type.tar"], layer)
    member = max(_shared_members(layer), key=lambda m: len(m.entries))
    bad = bytearray(layer.read_bytes())
    bad[member.offset + 40] ^= 0x10  # inside the member's deflate data, past its 10-byte gzip header
    damaged = tmp_path / "bad.tar.gz"
    damaged.write_bytes(bad)
    proc = run_cli("verify", damaged, "--toc-digest", made["tocDigest"])
    out = proc.stdout.decode()
    assert proc.returncode == 1, out + proc.stderr.decode()
    assert "estargz.chunk" in out and f"offset {member.offset}" in out, out
    # A file of that member whose bytes come after the flipped bit: verify names it, cat refuses it.
    last = member.entries[-1]
    assert f"entry {last.index} " in out and "/" + last.path in out, out
    proc = run_cli("cat", damaged, last.path)
    assert_one_line_error(proc, 2, f"offset {member.offset}")
    # Members before it read as before.
    other = next(m for m in _shared_members(layer) if m.offset < member.offset)
    proc = run_cli("cat", damaged, other.entries[-1].path)
    assert proc.returncode == 0 and hashlib.sha256(proc.stdout).digest() == other.entries[-1].digest


def with_toc(layer: Path, out: Path, edit) -> Path:
    """``layer`` with its TOC JSON replaced by ``edit(doc)``'s (the data members as they were)."""
    raw = layer.read_bytes()
    footer = fmt.parse_footer(raw[-fmt.FOOTER_SIZE :], len(raw))
    doc = json.loads(fmt.inflate_toc(raw[footer.toc_offset :], footer.toc_offset))
    edit(doc)
    at = footer.toc_offset
    out.write_bytes(raw[:at] + _toc_member(json.dumps(doc).encode()) + _footer(at))
    return out


@pytest.mark.parametrize("case", ["shifted", "past-the-member", "inside-the-previous"])
def test_a_wrong_inner_offset_is_refused(estargz_build, fixture_tars, tmp_path, case):
    """An innerOffset one byte off reads other bytes (their digest is not the chunkDigest); one past the
    member's output finds nothing there; one inside the previous entry's data is a TOC that does not hold
    together. Each is one line and exit 2 for a reader, and a finding for verify."""
    layer = tmp_path / "l.tar.gz"
    _, entries = build_shared(estargz_build, fixture_tars["every-type.tar"], layer)
    # The entry deepest in its member (the last of it), and the data entry before it (in the same member).
    k = max(
        (i for i, e in enumerate(entries) if e.get("innerOffset") and e["type"] == "reg"),
        key=lambda i: entries[i]["innerOffset"],
    )
    prev = next(e for e in reversed(entries[:k]) if e["type"] in ("reg", "chunk") and e.get("size", 1))
    assert prev["offset"] == entries[k]["offset"]
    name = fmt.clean(entries[k]["name"])

    def edit(doc):
        e = doc["entries"][k]
        if case == "inside-the-previous":
            e["innerOffset"] = prev.get("innerOffset", 0) + prev.get("size", 1) - 1
        else:
            e["innerOffset"] += {"shifted": 1, "past-the-member": 1 << 30}[case]

    bad = with_toc(layer, tmp_path / "bad.tar.gz", edit)
    needle = {
        "shifted": "differs from",
        "past-the-member": "short of innerOffset",
        "inside-the-previous": "lies inside the data of entry",
    }[case]
    proc = run_cli("cat", bad, name)
    assert_one_line_error(proc, 2, needle)
    proc = run_cli("verify", bad)
    out = proc.stdout.decode()
    assert proc.returncode == 1 and needle in out, out + proc.stderr.decode()
    if case == "inside-the-previous":
        assert_one_line_error(run_cli("ls", "-R", bad), 2, needle, "estargz TOC")


def test_estargz_ref_refuses_shared_members(estargz_build, fixture_tars, tmp_path):
    """pack --type estargz-ref: one line naming the first entry inside a member, exit 2, nothing written."""
    layer = tmp_path / "l.tar.gz"
    _, entries = build_shared(estargz_build, fixture_tars["every-type.tar"], layer)
    first = next(i for i, e in enumerate(entries) if e.get("innerOffset"))
    out = tmp_path / "out"
    out.mkdir()
    proc = run_cli("pack", "--type", "estargz-ref", layer, "-o", out / "x.boot")
    assert_one_line_error(proc, 2, f"entry {first} ", "innerOffset", "whole gzip member", "--type targz-ref")
    assert list(out.iterdir()) == []


def test_nydus_stargz_builder_refuses_shared_members(oracle, estargz_build, tmp_path):
    """nydus 2.4.4's TOC builder (``--type estargztoc-ref``, the design our estargz-ref follows) refuses a TOC
    whose entries share a gzip member, before anything else: it sorts chunks by their member's offset and
    finds two at one. The day it reads them, compare our estargz-ref with it."""
    src = tmp_path / "small.tar"
    with tarfile.open(src, "w", format=tarfile.GNU_FORMAT) as tf:
        for i in range(5):  # small files only: no empty one, no chunk entry (it refuses those apart)
            data = b"file %d\n" % i * 50
            ti = tarfile.TarInfo(f"f{i}")
            ti.size, ti.mtime = len(data), 1700000000
            tf.addfile(ti, io.BytesIO(data))
    layer = tmp_path / "small.tar.gz"
    made, _ = build_shared(estargz_build, src, layer)
    proc = nydus_stargz_builder(oracle, made, layer, tmp_path / "x.boot")
    assert proc.returncode != 0, "nydus-image estargztoc-ref now reads innerOffset: compare our estargz-ref"
    assert "compressed offset is out of order" in (proc.stdout + proc.stderr).decode(errors="replace")


@pytest.mark.parametrize(
    ("source", "min_chunk_size"),
    [
        *(
            (s, m)
            for s in ("fixture:dedup.tar", "fixture:whiteouts.tar", "vector:all-entry-type.tar")
            for m in (4096, 65536)
        ),
        ("debian", 65536),
    ],
)
def test_shared_members_by_zran_equal_nydus_image(
    request, oracle, fuse_ok, estargz_build, source, min_chunk_size, tmp_path
):
    """Where estargz-ref sends such a layer: ``pack --type targz-ref`` over the eStargz blob writes what the real
    ``nydus-image create --type estargz-ref`` writes for it (the gzip indexed with zran, the TOC and landmark
    files left out), field by field as test_targz_pack compares targz-ref; our reader and nydusd read it as
    the tar. (The tars nydus-image reads: it refuses every-type.tar's hard link to a device and xattrs.tar's
    PAX records.)"""
    from test_targz_pack import compare_with_nydus_image

    src = debian_rootfs_tar() if source == "debian" else source_tar(request, source)
    layer = tmp_path / "l.tar.gz"
    build_shared(estargz_build, src, layer, 0, min_chunk_size)
    compare_with_nydus_image(oracle, layer, tmp_path, ref=("--type", "estargz-ref"))
    boot, blobs = tmp_path / "ours" / "blobs" / "layer.boot", tmp_path / "ours" / "blobs"
    # The judge is the tar inside the eStargz blob (the writer's headers: its mtimes are whole seconds cut
    # down, where the TOC's are rounded), gunzipped by Python, without the TOC and landmark files.
    inner = tmp_path / "inner.tar"
    with gzip.open(layer) as g, open(inner, "wb") as f:
        shutil.copyfileobj(g, f)
    expected = {p: w for p, w in expected_tree(inner).items() if p not in fmt.SPECIAL_PATHS}
    assert len(expected) > len(fmt.LANDMARKS) and b"/" + fmt.LANDMARKS[1].encode() not in expected
    assert_tree_matches(expected, boot, blob_dir=str(blobs))
    proc = run_cli("verify", boot, "--blob-dir", blobs, timeout=600)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    started = int(time.time())
    with oracle.mount(boot, blobs, tmp_path / "nydusd") as mnt:
        assert_dir_matches(expected, mnt, zero_mtime_shown_as=(started, int(time.time()) + 1))


@pytest.mark.parametrize("min_chunk_size", [4096, 65536])
def test_debian_rootfs_shared_members(estargz_build, min_chunk_size, tmp_path):
    """The Debian minbase tar, when built, written with a minimum chunk size: read directly as the tar holds
    it (every file through the library; cat, unpack, verify)."""
    src = debian_rootfs_tar()
    layer = tmp_path / "rootfs.tar.gz"
    made, _ = build_shared(estargz_build, src, layer, 0, min_chunk_size)
    read_directly(src, layer, made, tmp_path)


# ---------------------------------------------------------------------------- bad input
class _Src:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def pread(self, offset: int, size: int, what: str = "data") -> bytes:
        return self.data[offset : offset + size]


def _footer(toc_offset: int) -> bytes:
    """An eStargz footer as the estargz module writes it."""
    extra = b"SG" + struct.pack("<H", 22) + b"%016xSTARGZ" % toc_offset
    head = b"\x1f\x8b\x08\x04" + bytes(4) + b"\x00\xff" + struct.pack("<H", len(extra)) + extra
    return head + bytes.fromhex("010000ffff") + bytes(8)  # an empty stored block, CRC and size 0


def _toc_member(doc: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        ti = tarfile.TarInfo(fmt.TOC_TAR_NAME)
        ti.size = len(doc)
        tf.addfile(ti, io.BytesIO(doc))
    return gzip.compress(buf.getvalue(), mtime=0)


def test_footer_matches_the_writer(estargz_build, fixture_tars, tmp_path):
    """Our footer bytes are the estargz module's (so the bad-input cases below are realistic)."""
    layer = tmp_path / "l.tar.gz"
    build(estargz_build, fixture_tars["dedup.tar"], layer)
    raw = layer.read_bytes()
    footer = fmt.parse_footer(raw[-fmt.FOOTER_SIZE :], len(raw))
    assert raw[-fmt.FOOTER_SIZE :] == _footer(footer.toc_offset)


@pytest.mark.parametrize(
    "case",
    ["toc-offset-past-blob", "toc-over-limit", "footer-lies", "toc-not-json", "entry-past-toc", "bad-digest"],
)
def test_bad_estargz_is_one_line_exit_2(case, tmp_path):
    doc = {"version": 1, "entries": [{"name": "a", "type": "reg", "size": 3, "offset": 0}]}
    doc["entries"][0]["chunkDigest"] = "sha256:" + hashlib.sha256(b"abc").hexdigest()
    data = gzip.compress(b"abc", mtime=0)
    toc = _toc_member(json.dumps(doc).encode())
    if case == "toc-not-json":
        toc = _toc_member(b"{not json")
    elif case == "entry-past-toc":
        doc["entries"][0]["offset"] = 10**6
        toc = _toc_member(json.dumps(doc).encode())
    elif case == "bad-digest":
        doc["entries"][0]["chunkDigest"] = "sha256:zz"
        toc = _toc_member(json.dumps(doc).encode())
    elif case == "toc-over-limit":
        # A tar header claiming a TOC over the limit (the member itself is small).
        hdr = bytearray(tarfile.TarInfo(fmt.TOC_TAR_NAME).tobuf(format=tarfile.GNU_FORMAT))
        hdr[124:136] = b"%011o\0" % (fmt.MAX_TOC_SIZE + 1)
        toc = gzip.compress(bytes(hdr), mtime=0)
    blob = data + toc + _footer(len(data))
    if case == "toc-offset-past-blob":
        blob = data + toc + _footer(10**9)
    elif case == "footer-lies":
        blob = data + toc + _footer(1)  # a TOC offset inside the data member
    path = tmp_path / "bad.tar.gz"
    path.write_bytes(blob)
    for argv in (("info",), ("ls", "-R"), ("verify",)):
        proc = run_cli(*argv, path)
        err = proc.stderr.decode()
        assert "Traceback" not in err, err
        if argv == ("verify",):
            assert proc.returncode == 1 and "estargz" in proc.stdout.decode(), proc.stdout.decode()
        elif argv == ("info",) and case not in ("toc-offset-past-blob",):
            # info reads the footer and the TOC: both are checked.
            assert_one_line_error(proc, 2, "estargz")
        else:
            assert_one_line_error(proc, 2)


def test_sample_toc_vector(vectors):
    """The sample TOC of the nydus vectors (estargz_sample.json): busybox and a hardlink to it."""
    raw = (vectors / "nydus" / "stargz" / "estargz_sample.json").read_bytes()
    toc = fmt.parse_toc(raw, 10**7, 10**7 - 100)
    byname = {e.name: e for e in toc.entries}
    busybox = byname["bin/busybox"]
    assert (busybox.type, busybox.size, busybox.offset) == ("reg", 833104, 126)
    assert busybox.chunk_size == 833104 and busybox.chunk_digest == busybox.digest
    assert byname["bin/busybox2"].type == "hardlink" and byname["bin/busybox2"].link_name == "bin/busybox"
    assert byname["bin/"].mode & 0o7777 == 0o755
    index = read_index_from_toc(raw)
    boot, _ = ref_bootstrap(index, "0" * 64)
    from nydus_inspect.model import RafsV6

    nodes = {n.path: n for n in RafsV6(boot).walk()}
    assert nodes[b"/bin/busybox"].nid == nodes[b"/bin/busybox2"].nid
    assert nodes[b"/bin/busybox"].nlink == 2 and nodes[b"/bin/busybox"].size == 833104


def read_index_from_toc(raw: bytes):
    """An eStargz blob around a TOC: its data members stand where its offsets say (zeros: never read here)."""
    doc = json.loads(raw)
    end = max(e.get("offset", 0) for e in doc["entries"]) + (1 << 20)
    toc = _toc_member(raw)
    blob = bytes(end) + toc + _footer(end)
    return read_index(_Src(blob), len(blob))


# ---------------------------------------------------------------------------- our FUSE mount
@pytest.mark.parametrize("min_chunk_size", [0, 4096])
@pytest.mark.parametrize(
    "source", ["fixture:every-type.tar", "fixture:whiteouts.tar", "vector:all-entry-type.tar"]
)
def test_our_mount_of_estargz(request, fuse_ok, estargz_build, source, min_chunk_size, tmp_path):
    """Our FUSE mount serves the tar; with a minimum chunk size, files inside shared gzip members too."""
    src = source_tar(request, source)
    layer = tmp_path / "l.tar.gz"
    made = build(estargz_build, src, layer, 0x10000, min_chunk_size)
    mp = tmp_path / "mnt"
    mp.mkdir()
    proc = run_cli("mount", layer, mp, "--raw-whiteouts", "--log-file", tmp_path / "mount.log")
    assert proc.returncode == 0, proc.stderr.decode()
    try:
        assert_dir_matches(expected_of(src, made), mp / "rootfs")
    finally:
        done = run_cli("umount", mp, timeout=60)
        assert done.returncode == 0, done.stderr.decode()


# ---------------------------------------------------------------------------- estargz-ref
def pack_ref(layer: Path, work: Path) -> tuple[Path, Path]:
    """``pack --type estargz-ref``: the bootstrap, and a blob dir holding the eStargz blob under its sha256 and
    the blob.meta file pack wrote."""
    blobs = work / "blobs"
    blobs.mkdir(parents=True)
    boot = blobs / "layer.boot"
    proc = run_cli("pack", "--type", "estargz-ref", layer, "-o", boot, "--json")
    assert proc.returncode == 0, proc.stderr.decode()
    res = json.loads(proc.stdout)
    assert res["blob_id"] == hashlib.sha256(layer.read_bytes()).hexdigest()
    shutil.copy(layer, blobs / res["blob_id"])
    return boot, blobs


REF_SOURCES = [
    "fixture:every-type.tar",
    "fixture:whiteouts.tar",
    "fixture:dedup.tar",
    "vector:all-entry-type.tar",
]


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
@pytest.mark.parametrize("source", REF_SOURCES)
def test_estargz_ref_in_nydusd(request, oracle, fuse_ok, estargz_build, source, chunk_size, tmp_path):
    src = source_tar(request, source)
    layer = tmp_path / "l.tar.gz"
    made = build(estargz_build, src, layer, chunk_size)
    boot, blobs = pack_ref(layer, tmp_path)
    expected = expected_of(src, made)
    # Ours reads it as the tar, and verify passes.
    assert_tree_matches(expected, boot, blob_dir=str(blobs))
    proc = run_cli("verify", boot, "--blob-dir", blobs)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    # The bootstrap read directly from the eStargz blob is this one.
    with open_layer(str(layer)) as direct:
        assert bytes(direct.bootstrap_bytes()) == boot.read_bytes()
    oracle.check(boot)
    started = int(time.time())
    with oracle.mount(boot, blobs, tmp_path / "nydusd") as mnt:
        assert_dir_matches(expected, mnt, zero_mtime_shown_as=(started, int(time.time()) + 1))
    assert "ERROR" not in oracle.log_of(tmp_path / "nydusd")


def test_estargz_ref_against_nydus_image(request, oracle, fuse_ok, estargz_build, fixture_tars, tmp_path):
    """The real ``nydus-image create --type estargz-ref`` over the same eStargz blob (a zran bootstrap: it
    indexes the gzip stream instead of using the TOC's members) agrees with ours where the designs meet: the
    blob id (the blob's sha256), compressor gzip, digester sha256, the blob's size, the tree; the two
    nydusd mounts serve the same files; and every reader of ours (describe, verify, unpack, ls, our mount)
    gives of their layer what nydusd serves of it."""
    src = fixture_tars["dedup.tar"]
    layer = tmp_path / "l.tar.gz"
    made = build(estargz_build, src, layer)
    expected = expected_of(src, made)
    boot, blobs = pack_ref(layer, tmp_path / "ours")
    theirs_dir = tmp_path / "theirs"
    theirs_dir.mkdir()
    theirs = theirs_dir / "ref.boot"
    oracle.run(
        "nydus-image",
        "create",
        "--type",
        "estargz-ref",
        "--log-level",
        "warn",
        "--bootstrap",
        theirs,
        "--blob-dir",
        theirs_dir,
        layer,
    )
    shutil.copy(layer, theirs_dir / hashlib.sha256(layer.read_bytes()).hexdigest())
    ours_info = json.loads(run_cli("info", "--json", boot).stdout)["bootstrap"]
    theirs_info = json.loads(run_cli("info", "--json", theirs).stdout)["bootstrap"]
    a, b = ours_info["blobs"][0], theirs_info["blobs"][0]
    for field in ("blob_id", "compressor", "digester", "compressed_size"):
        assert a[field] == b[field], field
    assert ours_info["ext_superblock"]["compressor"] == theirs_info["ext_superblock"]["compressor"] == "gzip"
    assert ours_info["ext_superblock"]["digester"] == theirs_info["ext_superblock"]["digester"] == "sha256"
    # Both trees are the tar's: ours through our reader and nydusd; theirs (zran chunks into the gzip
    # stream, read by our chunk service's zran decoder) through nydusd and every reader of ours.
    assert_tree_matches(expected, boot, blob_dir=str(blobs))
    started = int(time.time())
    with oracle.mount(theirs, theirs_dir, tmp_path / "nydusd-theirs") as mnt:
        assert_dir_matches(expected, mnt, zero_mtime_shown_as=(started, int(time.time()) + 1))
        want = want_from_dir(mnt, (started, int(time.time()) + 1))
    work = tmp_path / "read-theirs"
    work.mkdir()
    read_in_ours(request, theirs, want, work, "--blob-dir", theirs_dir)
    with oracle.mount(boot, blobs, tmp_path / "nydusd-ours") as mnt:
        assert_dir_matches(expected, mnt, zero_mtime_shown_as=(started, int(time.time()) + 1))


def test_nydus_estargztoc_ref_cannot_judge(oracle, estargz_build, fixture_tars, vectors, tmp_path):
    """nydus 2.4.4's TOC-JSON builder: with --blob-id (which it requires) it aborts once the TOC has data;
    and a TOC with an empty file is refused before that. The day either changes, compare ours with it."""
    for src, why in (
        (vectors / "nydus" / "tar" / "all-entry-type.tar", "is_to_ref()"),
        (fixture_tars["dedup.tar"], "missing digest or chunk digest"),
    ):
        layer = tmp_path / (src.name + ".gz")
        made = build(estargz_build, src, layer)
        proc = nydus_stargz_builder(oracle, made, layer, tmp_path / "x.boot")
        assert proc.returncode != 0, "nydus-image estargztoc-ref now works: compare our estargz-ref with it"
        assert why in (proc.stdout + proc.stderr).decode(errors="replace")


# ---------------------------------------------------------------------------- the Debian rootfs
def test_debian_rootfs_estargz(request, oracle, fuse_ok, estargz_build, tmp_path):
    """The Debian minbase tar of the benches, when built (`bash bench/make_rootfs.sh`): read directly, and as
    estargz-ref in nydusd."""
    src = debian_rootfs_tar()
    layer = tmp_path / "rootfs.tar.gz"
    made = build(estargz_build, src, layer)
    expected = expected_of(src, made)
    assert_tree_matches(expected, layer)
    proc = run_cli("verify", layer, "--toc-digest", made["tocDigest"], timeout=600)
    assert proc.returncode == 0, proc.stdout.decode()[-2000:]
    boot, blobs = pack_ref(layer, tmp_path)
    started = int(time.time())
    with oracle.mount(boot, blobs, tmp_path / "nydusd") as mnt:
        assert_dir_matches(expected, mnt, zero_mtime_shown_as=(started, int(time.time()) + 1))
