"""targz-ref (zran) layers: a plain OCI .tar.gz referenced by a nydus bootstrap and blob.meta, read in place.

The layers are made by the real ``nydus-image create --type targz-ref`` from fixture and vector tars gzipped
here; our ``ls``, ``cat``, ``unpack``, ``verify`` and mount are compared with the source tar (read with
tarfile) and with the real nydusd's mount of the same layer. Damage (a flipped bit in the gzip's chunk data
or in a zran window, forged context fields) must be refused with a one-line error.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import shutil
import struct
import tarfile
import time
from pathlib import Path

import pytest
from fixtures_util import (
    assert_dir_matches,
    assert_one_line_error,
    assert_tree_matches,
    debian_rootfs_tar,
    expected_tree,
    fixture_tars_fixture,  # noqa: F401
    make_fixtures,
    run_cli,
    source_tar,
)
from test_oracle_reader import read_in_ours, served_by_nydusd

from nydus_inspect.errors import FormatError
from nydus_inspect.formats import blob_meta, zran
from nydus_inspect.layer import KIND_BLOB_META, open_layer
from oracle import NYDUS_IMAGE_SOURCES, Oracle

#: As the snapshotter runs it: whiteouts kept as entries, so the layer lists what the tar holds.
REF = ("--type", "targz-ref", "--whiteout-spec", "none")
INLINE_REF = (*REF, "--blob-inline-meta", "--features", "blob-toc")


def gzipped(src: Path, out: Path) -> Path:
    out.write_bytes(gzip.compress(src.read_bytes(), compresslevel=6, mtime=0))
    return out


def files_of(tar: Path) -> dict[str, bytes]:
    """Every regular file of a tar (last one wins), read with tarfile."""
    out = {}
    with tarfile.open(tar) as tf:
        for m in tf:
            if m.isreg():
                out["/" + m.name.removeprefix("./").rstrip("/")] = tf.extractfile(m).read()
    return out


def real_inline(oracle: Oracle, gz: Path, work: Path) -> Path:
    """The real tool's targz-ref layer as the snapshotter makes it: a meta blob holding blob.meta and the
    bootstrap (the data stays in ``gz``)."""
    _, meta = oracle.create(gz, work, *INLINE_REF, name="ref")
    return meta


def real_separate(oracle: Oracle, gz: Path, work: Path, *opts) -> tuple[Path, Path]:
    """(bootstrap, blob dir) of the real tool's non-inline targz-ref layer: the blob dir holds the meta blob
    (named by its digest, as ``--blob-dir`` writes it) and the gzip, named by its sha256 (the blob id)."""
    blobs = work / "blobs"
    blobs.mkdir(parents=True)
    boot = work / "ref.boot"
    oracle.run(
        "nydus-image",
        "create",
        "--log-level",
        "warn",
        *REF,
        *opts,
        "--bootstrap",
        boot,
        "--blob-dir",
        blobs,
        gz,
    )
    os.link(gz, blobs / hashlib.sha256(gz.read_bytes()).hexdigest())
    return boot, blobs


def cache_form(layer_blob: Path, out: Path) -> Path:
    """The ``<blob id>.blob.meta`` cache-file form (uncompressed chunk info padded to 4K, then the header) of
    a layer's blob.meta, made with our ``entry`` (nydusd writes the same file in its cache directory)."""
    data = run_cli("entry", layer_blob, "blob.meta").stdout
    header = run_cli("entry", layer_blob, "blob.meta.header").stdout
    assert len(header) == blob_meta.HEADER_SIZE
    out.write_bytes(data + bytes(-len(data) % 4096) + header)
    return out


def cat_all(layer: Path, files: dict[str, bytes], *opts) -> None:
    for path, want in files.items():
        proc = run_cli("cat", layer, path, *opts)
        assert proc.returncode == 0, (path, proc.stderr)
        assert proc.stdout == want, path


SOURCES = NYDUS_IMAGE_SOURCES


@pytest.mark.parametrize("source", SOURCES)
def test_real_targz_ref_read(request, oracle, source, tmp_path):
    """ls, cat, unpack and verify of the real tool's targz-ref layer agree with the source tar."""
    src = source_tar(request, source)
    gz = gzipped(src, tmp_path / "layer.tar.gz")
    meta = real_inline(oracle, gz, tmp_path / "real")
    expected = expected_tree(src)
    info = json.loads(run_cli("info", "--json", meta).stdout)
    blobs = info["bootstrap"]["blobs"]
    assert blobs[0]["blob_id"] == hashlib.sha256(gz.read_bytes()).hexdigest()
    assert {"zran", "separate", "chunk_info_v2"} <= set(blobs[0]["features_names"])
    ls = run_cli("ls", "-R", "--json", meta)
    assert ls.returncode == 0, ls.stderr
    listed = {e["path"] for e in json.loads(ls.stdout)}
    assert {p.decode() for p in expected} - {"/"} <= listed | {"/"}
    cat_all(meta, files_of(src), "--blob", gz)
    out = tmp_path / "out.tar"
    proc = run_cli("unpack", meta, "--blob", gz, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert_tree_matches(expected, out)
    proc = run_cli("verify", meta, "--blob", gz)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The separate form: bootstrap, meta blob named by its digest, gzip named by its sha256.
    boot, blob_dir = real_separate(oracle, gz, tmp_path / "sep")
    cat_all(boot, files_of(src), "--blob-dir", blob_dir)
    assert run_cli("verify", boot, "--blob-dir", blob_dir).returncode == 0


def test_chunks_shows_zran_table(request, oracle, fixture_tars, tmp_path):
    gz = gzipped(fixture_tars["dedup.tar"], tmp_path / "layer.tar.gz")
    meta = real_inline(oracle, gz, tmp_path / "real")
    doc = json.loads(run_cli("chunks", "--json", meta).stdout)
    ctxs = doc["zran"]
    assert len(ctxs) == doc["header"]["ci_zran_count"] >= 1
    size = gz.stat().st_size
    for c in ctxs:
        assert 0 < c["in_offset"] < size and c["in_offset"] + c["in_len"] <= size
        assert 0 <= c["ctx_bits"] <= 7 and c["dict_size"] <= zran.WINDOW
    for ch in doc["chunks"]:
        assert "zran" in ch["flags"] and ch["zran_index"] < len(ctxs)
        assert ch["zran_offset"] + ch["uncompressed_size"] <= ctxs[ch["zran_index"]]["out_len"]
    text = run_cli("chunks", meta).stdout.decode()
    assert "zran contexts:" in text and "CTX_BITS" in text


def big_tar(path: Path) -> Path:
    """A tar of several MiB in many files and a 1 MiB file in the middle: several zran contexts, whose
    windows the chunk data refers back into."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(40):
            name = "one-mib" if i == 20 else f"f{i:02}"
            n = 1 << 20 if i == 20 else 200_000 + 997 * i
            # Text shared by every file at both ends: a file's first bytes refer back into the one before.
            shared = make_fixtures.text("shared", n // 4)
            data = (shared + make_fixtures.noise(name, n // 2) + shared + shared)[:n]
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode = len(data), make_fixtures.T0, 0o644
            tf.addfile(ti, io.BytesIO(data))
        # Incompressible 4 KiB blocks, every other one a copy of the block 20 KiB back: deflate refers back
        # across the block boundaries the zran contexts start at, into their windows.
        blocks: list[bytes] = []
        for i in range(512):
            blocks.append(blocks[i - 5] if i % 2 and i >= 5 else make_fixtures.noise(f"refs {i}", 4096))
        data = b"".join(blocks)
        ti = tarfile.TarInfo("refs")
        ti.size, ti.mtime, ti.mode = len(data), make_fixtures.T0, 0o644
        tf.addfile(ti, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return path


def test_one_file_inflates_only_its_contexts(oracle, tmp_path):
    """Reading one 1 MiB file inflates only the zran contexts its chunks lie in (a count, not a timing)."""
    src = big_tar(tmp_path / "big.tar")
    gz = gzipped(src, tmp_path / "big.tar.gz")
    meta = real_inline(oracle, gz, tmp_path / "real")
    with open_layer(str(meta), blobs=[str(gz)]) as layer:
        node = layer.rafs.lookup("/one-mib")
        data = b"".join(layer.read_file(node))
        assert data == files_of(src)["/one-mib"]
        bf = layer.blob_file(0)
        z = bf.zran
        contexts = {z.context_of(c.ci_index, c.uncompressed_size)[0].index for c in layer.rafs.chunks(node)}
        assert len(z.contexts) > len(contexts) + 2  # the layer has many more
        assert z.inflated == len(contexts)
        # Read again: every context comes from the cache.
        assert b"".join(layer.read_file(node)) == data
        assert z.inflated == len(contexts)


def test_nydusd_and_our_mount_agree(request, oracle, fixture_tars, tmp_path):
    """The real nydusd's mount of the real layer, our mount of it, and the source tar hold the same tree."""
    request.getfixturevalue("fuse_ok")
    src = big_tar(tmp_path / "big.tar")
    gz = gzipped(src, tmp_path / "big.tar.gz")
    boot, blob_dir = real_separate(oracle, gz, tmp_path / "sep")
    meta = real_inline(oracle, gz, tmp_path / "real")
    expected = expected_tree(src)
    started = int(time.time())
    with oracle.mount(boot, blob_dir, tmp_path / "nydusd") as mnt:
        assert_dir_matches(expected, mnt, zero_mtime_shown_as=(started, int(time.time()) + 1))
        theirs = {p: (Path(mnt) / p.lstrip("/")).read_bytes() for p in files_of(src)}
    # nydusd keeps the blob.meta it read in its cache as <blob id>.blob.meta: it opens directly.
    kept = list((tmp_path / "nydusd" / "cache").glob("*.blob.meta"))
    assert len(kept) == 1
    with open_layer(str(kept[0])) as layer:
        assert layer.kind == KIND_BLOB_META and layer.blob_meta_header.s_features & blob_meta.ZRAN
    mp = tmp_path / "ours"
    mp.mkdir()
    proc = run_cli("mount", meta, "--blob", gz, mp, "--log-file", tmp_path / "ours.log")
    assert proc.returncode == 0, proc.stderr
    try:
        for p, want in theirs.items():
            assert (mp / "rootfs" / p.lstrip("/")).read_bytes() == want, p
        assert_dir_matches(expected, mp / "rootfs", zero_mtime_shown_as=(started, int(time.time()) + 1))
    finally:
        assert run_cli("umount", mp, timeout=60).returncode == 0


@pytest.fixture
def separate_layer(oracle, fixture_tars, tmp_path):
    """A dir with the real tool's bootstrap, the gzip (named by its id) and the cache-file form of its
    blob.meta (uncompressed, so windows and contexts can be damaged in place)."""
    src = big_tar(tmp_path / "big.tar")
    d, blob_id, cache = _separate(oracle, src, tmp_path)
    cat_all(d / "boot", {"/one-mib": files_of(src)["/one-mib"]})
    return d, blob_id, cache


def _separate(oracle, src: Path, tmp_path: Path) -> tuple[Path, str, Path]:
    gz = gzipped(src, tmp_path / "big.tar.gz")
    # 4 KiB chunks: a chunk starts close enough after a context's start to refer back into its window.
    boot, d = real_separate(oracle, gz, tmp_path / "sep", "--chunk-size", "0x1000")
    blob_id = hashlib.sha256(gz.read_bytes()).hexdigest()
    (meta,) = [p for p in d.iterdir() if p.name != blob_id]
    cache = cache_form(meta, d / f"{blob_id}.blob.meta")
    meta.unlink()
    shutil.move(boot, d / "boot")
    assert run_cli("verify", d / "boot").returncode == 0
    return d, blob_id, cache


def _table(cache: Path) -> tuple[bytearray, blob_meta.BlobMetaHeader, list[zran.ZranContext]]:
    raw = bytearray(cache.read_bytes())
    hdr = blob_meta.BlobMetaHeader.parse(raw, len(raw) - blob_meta.HEADER_SIZE)
    ctxs = zran.parse_table(raw, hdr.s_ci_zran_offset, hdr.s_ci_zran_size, hdr.s_ci_zran_count)
    return raw, hdr, ctxs


def test_verify_catches_flipped_bit_in_gzip(separate_layer):
    d, blob_id, _ = separate_layer
    gz = d / blob_id
    raw = bytearray(gz.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    gz.write_bytes(raw)
    proc = run_cli("verify", d / "boot")
    assert proc.returncode != 0
    assert b"chunk." in proc.stdout
    # The blob id no longer matches either.
    assert b"blob.id" in proc.stdout


def test_verify_catches_flipped_bit_in_context(separate_layer):
    """A flipped bit of the stored bits a context resumes with (its first block header) is caught: the chunks
    of that context no longer decode, or decode to other bytes."""
    d, _, cache = separate_layer
    raw, hdr, ctxs = _table(cache)
    ctx = next(c for c in ctxs if c.ctx_bits >= 3)
    at = hdr.s_ci_zran_offset + ctx.index * zran.CONTEXT_SIZE + zran.CONTEXT.offsets["ctx_byte"]
    raw[at] ^= 1 << (8 - ctx.ctx_bits)  # the first stored bit: BFINAL of the block the context starts at
    cache.write_bytes(raw)
    proc = run_cli("verify", d / "boot")
    assert proc.returncode != 0, proc.stdout
    assert b"chunk." in proc.stdout


def _needed_window_byte(d: Path, blob_id: str, cache: Path) -> tuple[int, int, int]:
    """(context index, window byte, chunk-info index of a chunk that reads it): a byte of a context's inflate
    window that one of its chunks' data is copied from. Found by flipping windows in halves: a window byte
    deflate refers back to reaches the output unchanged, so a flipped set changes some chunk's bytes exactly
    when it holds such a byte."""
    raw, hdr, ctxs = _table(cache)
    infos = blob_meta.ChunkInfoArray(bytes(raw), hdr.s_ci_entries, True)
    gz = (d / blob_id).read_bytes()
    for ctx in ctxs:
        if not ctx.dict_size:
            continue
        slices = [
            (ci.index, ci.data & 0xFFFFFFFF, ci.uncompressed_size)
            for ci in infos
            if ci.flags & blob_meta.CI_ZRAN and ci.data >> 32 == ctx.index
        ]
        off, n = zran.input_range(ctx, len(gz))
        raw_in = gz[off : off + n]
        good = zran.inflate(ctx, raw_in)

        def changed(lo: int, hi: int, ctx=ctx, raw_in=raw_in, good=good, slices=slices) -> int | None:
            window = bytes(b ^ 0x10 if lo <= i < hi else b for i, b in enumerate(ctx.window))
            try:
                out = zran.inflate(dataclasses.replace(ctx, window=window), raw_in)
            except FormatError:
                return slices[0][0]
            return next((k for k, at, size in slices if out[at : at + size] != good[at : at + size]), None)

        if changed(0, ctx.dict_size) is None:
            continue
        lo, hi = 0, ctx.dict_size
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if changed(lo, mid) is not None else (mid, hi)
        return ctx.index, lo, changed(lo, hi)
    raise AssertionError("no chunk of the layer refers back into a zran window")


def test_verify_catches_flipped_byte_in_window(oracle, tmp_path):
    """A flipped byte of a context's inflate window that a chunk's data is copied from: verify names that
    chunk, and cat of the file holding it is refused in one line (not served with the wrong byte).
    The layer is numbered lines (5 MiB, so several contexts): deflate refers back across every context
    start, and no 4 KiB chunk repeats another (big_tar's do, and the copies are read from the first)."""
    src = tmp_path / "lines.tar"
    data = b"".join(b"%07d a line that deflate finds again 32 KiB on\n" % i for i in range(100_000))
    with tarfile.open(src, "w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo("lines")
        ti.size, ti.mtime, ti.mode = len(data), make_fixtures.T0, 0o644
        tf.addfile(ti, io.BytesIO(data))
    d, blob_id, cache = _separate(oracle, src, tmp_path)
    index, at, ci_index = _needed_window_byte(d, blob_id, cache)
    raw, hdr, ctxs = _table(cache)
    dicts = hdr.s_ci_zran_offset + len(ctxs) * zran.CONTEXT_SIZE
    raw[dicts + ctxs[index].dict_offset + at] ^= 0x10
    cache.write_bytes(raw)
    with open_layer(str(d / "boot")) as layer:
        path = next(
            os.fsdecode(node.path)
            for node in layer.rafs.walk()
            if node.type == "file" and any(c.ci_index == ci_index for c in layer.rafs.chunks(node))
        )
    proc = run_cli("verify", d / "boot", "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    found = json.dumps(json.loads(proc.stdout))
    assert path in found or f"chunk {ci_index}" in found, found
    assert_one_line_error(run_cli("cat", d / "boot", path), 2, "chunk")


def _forge(cache: Path, index: int, field: str, value: int) -> None:
    raw, hdr, _ = _table(cache)
    at = hdr.s_ci_zran_offset + index * zran.CONTEXT_SIZE + zran.CONTEXT.offsets[field]
    fmt = {"ctx_bits": "<B", "dict_size": "<I", "in_offset": "<Q", "in_len": "<I"}[field]
    struct.pack_into(fmt, raw, at, value)
    cache.write_bytes(raw)


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("ctx_bits", 9, "bit position past 7"),
        ("dict_size", zran.WINDOW + 1, "window larger than 32 KiB"),
        ("in_offset", 1 << 40, "runs past the end"),
    ],
)
def test_forged_context_is_refused(separate_layer, field, value, needle):
    d, _, cache = separate_layer
    _forge(cache, 0, field, value)
    proc = run_cli("cat", d / "boot", "/f00")
    assert_one_line_error(proc, 2, needle)


def test_window_cut_short_is_refused(separate_layer):
    """The last context's window runs past the dictionary table."""
    d, _, cache = separate_layer
    raw, hdr, ctxs = _table(cache)
    last = len(ctxs) - 1
    if ctxs[last].dict_size < zran.WINDOW:
        _forge(cache, last, "dict_size", ctxs[last].dict_size + 1)
    else:  # a full window: the header says the table ends one byte early instead
        at = len(raw) - blob_meta.HEADER_SIZE + blob_meta.HEADER.offsets["s_ci_zran_size"]
        struct.pack_into("<Q", raw, at, hdr.s_ci_zran_size - 1)
        cache.write_bytes(raw)
    proc = run_cli("cat", d / "boot", "/f00")
    assert_one_line_error(proc, 2, "cut short")


def test_context_index_out_of_range_is_refused(separate_layer):
    d, _, cache = separate_layer
    raw, hdr, ctxs = _table(cache)
    # Chunk 0's data word: context index (high 32 bits) past the table.
    struct.pack_into("<I", raw, 16 + 4, len(ctxs) + 5)
    cache.write_bytes(raw)
    proc = run_cli("cat", d / "boot", "/f00")
    assert_one_line_error(proc, 2, "out of range")


def test_small_chunks_every_context(oracle, tmp_path):
    """4 KiB chunks over incompressible and text data: many contexts, resuming at every bit position and
    inside runs of stored blocks (whose byte alignment a shifted stream would lose); every file is read back
    exactly and verify passes."""
    src = big_tar(tmp_path / "big.tar")
    gz = gzipped(src, tmp_path / "big.tar.gz")
    _, meta = oracle.create(gz, tmp_path / "real", *INLINE_REF, "--chunk-size", "0x1000", name="ref")
    with open_layer(str(meta), blobs=[str(gz)]) as layer:
        ctxs = layer.blob_file(0).zran.contexts
        assert len({c.ctx_bits for c in ctxs}) >= 3
    cat_all(meta, files_of(src), "--blob", gz)
    assert run_cli("verify", meta, "--blob", gz).returncode == 0


def test_debian_targz_ref(request, oracle, fuse_ok, tmp_path):
    """The Debian minbase tar, gzipped, as the real tool references it: one ~1 MB file read inflates only
    the contexts it lies in; unpack and verify of the snapshotter's form agree with the source tar; and the
    real nydusd's mount of nydusd's form (bootstrap, meta blob and gzip in a blob dir) is what every reader
    of ours (describe, verify, unpack, ls, our mount) gives of that same layer."""
    src = debian_rootfs_tar()
    gz = tmp_path / "rootfs.tar.gz"
    with open(src, "rb") as f, gzip.GzipFile(gz, "wb", compresslevel=6, mtime=0) as g:
        shutil.copyfileobj(f, g, 1 << 20)
    boot, blobs = real_separate(oracle, gz, tmp_path / "sep")
    want = served_by_nydusd(oracle, boot, blobs, tmp_path)
    assert want.keys() - {b"/"} == expected_tree(src).keys() - {b"/"}
    read_in_ours(request, boot, want, tmp_path, "--blob-dir", blobs)
    meta = real_inline(oracle, gz, tmp_path / "real")
    with tarfile.open(src) as tf:
        regs = [m for m in tf if m.isreg()]
        one = min(regs, key=lambda m: abs(m.size - (1 << 20)))
        want = tf.extractfile(one).read()
    assert 512 << 10 < len(want) < 2 << 20
    with open_layer(str(meta), blobs=[str(gz)]) as layer:
        node = layer.rafs.lookup("/" + one.name.removeprefix("./"))
        assert b"".join(layer.read_file(node)) == want
        z = layer.blob_file(0).zran
        contexts = {z.context_of(c.ci_index, c.uncompressed_size)[0].index for c in layer.rafs.chunks(node)}
        assert z.inflated == len(contexts) <= 2 < len(z.contexts)
    out = tmp_path / "out.tar"
    proc = run_cli("unpack", meta, "--blob", gz, "-o", out, timeout=600)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("diff", src, out, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run_cli("verify", meta, "--blob", gz, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_multi_member_gzip(oracle, tmp_path):
    """A gzip of several members (as pigz and concatenation make): contexts that run across a member's end
    skip its trailer and the next header, as nydus does; every file reads back and verify passes."""
    src = big_tar(tmp_path / "big.tar")
    data = src.read_bytes()
    cuts = [0, len(data) // 3 + 12345, 2 * len(data) // 3 + 777, len(data)]
    members = [gzip.compress(data[a:b], mtime=0) for a, b in zip(cuts, cuts[1:], strict=False)]
    gz = tmp_path / "multi.tar.gz"
    gz.write_bytes(b"".join(members))
    starts = [sum(len(m) for m in members[:i]) for i in range(1, len(members))]
    meta = real_inline(oracle, gz, tmp_path / "real")
    with open_layer(str(meta), blobs=[str(gz)]) as layer:
        crossing = [
            c
            for c in layer.blob_file(0).zran.contexts
            for s in starts
            if c.in_offset < s < c.in_offset + c.in_len
        ]
    assert crossing, "no context runs across a member boundary"
    cat_all(meta, files_of(src), "--blob", gz)
    assert run_cli("verify", meta, "--blob", gz).returncode == 0


def test_verify_catches_flipped_bit_in_inline_metadata(oracle, tmp_path):
    """The snapshotter's form of a targz-ref layer (a meta blob of blob.meta, its header, blob.digest and
    image.boot, each covered by the ToC's sha256): a flipped bit in any of them is a verify finding naming
    the entry, and cat of a file is refused in one line naming it (not read through damaged metadata)."""
    from test_variants import small_files_tar

    src = small_files_tar(tmp_path / "small.tar", count=12)
    gz = gzipped(src, tmp_path / "small.tar.gz")
    meta = real_inline(oracle, gz, tmp_path / "real")
    assert run_cli("verify", meta, "--blob", gz).returncode == 0
    some = next(p for p, data in files_of(src).items() if data)
    entries = json.loads(run_cli("toc", meta, "--json").stdout)["entries"]
    assert {e["name"] for e in entries} >= {"blob.meta", "blob.meta.header", "blob.digest", "image.boot"}
    for entry in entries:
        bad = tmp_path / f"{entry['name']}.blob"
        raw = bytearray(meta.read_bytes())
        raw[entry["compressed_offset"] + entry["compressed_size"] // 2] ^= 0x10
        bad.write_bytes(raw)
        proc = run_cli("verify", bad, "--blob", gz)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        # A flip inside zstd data may be caught by zstd itself, before the ToC's sha256: either names it.
        assert f" {entry['name']}" in proc.stdout.decode(), proc.stdout
        assert_one_line_error(run_cli("cat", bad, "--blob", gz, some), 2, entry["name"], str(bad))
