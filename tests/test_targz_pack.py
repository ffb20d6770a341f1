"""``pack --type targz-ref``: our bootstrap and blob.meta over a plain .tar.gz, held to the source tar (through
our reader and the real nydusd) and, field by field, to what the real ``nydus-image create --type targz-ref``
writes for the same gzip.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import shutil
import tarfile
import time
import zlib
from pathlib import Path

import pytest
import zstandard
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
from test_oracle_fields import differences, flatten
from test_zran import REF, big_tar, files_of, gzipped

from nydus_inspect.formats import blob_meta, zran
from nydus_inspect.layer import open_layer
from oracle import NYDUS_IMAGE_SOURCES

#: Every fixture tar pack round-trips, plain (they are gzipped here), and the vector tar nydus-image reads.
SOURCES = [f"fixture:{n}" for n in make_fixtures.ROUND_TRIP if n.endswith(".tar")] + [
    "vector:all-entry-type.tar"
]


def multi_member(src: Path, out: Path) -> Path:
    """``src`` gzipped in three members cut at odd places (as pigz or concatenation makes)."""
    data = src.read_bytes()
    cuts = [0, len(data) // 3 + 12345, 2 * len(data) // 3 + 777, len(data)]
    out.write_bytes(b"".join(gzip.compress(data[a:b], mtime=0) for a, b in zip(cuts, cuts[1:], strict=False)))
    return out


def pack_ref(gz: Path, work: Path, *opts) -> tuple[Path, Path, dict]:
    """Our ``pack --type targz-ref`` into ``work/blobs``: (the bootstrap, that blob dir, what --json said). The
    dir also holds the blob.meta pack wrote beside the bootstrap, and the gzip linked under its sha256."""
    blobs = work / "blobs"
    blobs.mkdir(parents=True)
    boot = blobs / "layer.boot"
    proc = run_cli("pack", "--type", "targz-ref", gz, "-o", boot, "--json", *opts, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()
    res = json.loads(proc.stdout)
    assert res["blob_id"] == hashlib.sha256(gz.read_bytes()).hexdigest()
    os.link(gz, blobs / res["blob_id"])
    return boot, blobs, res


def real_ref(oracle, gz: Path, work: Path, *opts, ref: tuple = REF) -> tuple[Path, Path]:
    """The real tool's plain targz-ref form (``ref``: its type and whiteout options): bootstrap, and a blob dir
    with the meta blob (by its digest)."""
    blobs = work / "blobs"
    blobs.mkdir(parents=True)
    boot = work / "ref.boot"
    oracle.run(
        "nydus-image",
        "create",
        "--log-level",
        "warn",
        *ref,
        *opts,
        "--bootstrap",
        boot,
        "--blob-dir",
        blobs,
        gz,
    )
    return boot, blobs


def read_back(src: Path, boot: Path, blobs: Path, tmp: Path) -> None:
    """ls, cat of every file, unpack and verify of our layer agree with the source tar."""
    expected = expected_tree(src)
    assert_tree_matches(expected, boot, blob_dir=str(blobs))
    listed = {e["path"] for e in json.loads(run_cli("ls", "-R", "--json", boot, "--blob-dir", blobs).stdout)}
    assert {os.fsdecode(p) for p in expected} - {"/"} <= listed
    for path, want in files_of(src).items():
        proc = run_cli("cat", boot, path, "--blob-dir", blobs)
        assert proc.returncode == 0, (path, proc.stderr)
        assert proc.stdout == want, path
    out = tmp / "out.tar"
    proc = run_cli("unpack", boot, "--blob-dir", blobs, "-o", out, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert_tree_matches(expected, out)
    proc = run_cli("verify", boot, "--blob-dir", blobs, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("source", SOURCES)
def test_targz_ref_reads_back(request, source, tmp_path):
    src = source_tar(request, source)
    gz = gzipped(src, tmp_path / "layer.tar.gz")
    boot, blobs, res = pack_ref(gz, tmp_path / "ours")
    read_back(src, boot, blobs, tmp_path)
    if res["chunks"]:
        assert (
            res["blob_meta"]
            and Path(res["blob_meta"]).name == hashlib.sha256(Path(res["blob_meta"]).read_bytes()).hexdigest()
        )


def test_targz_ref_multi_member_and_small_chunks(tmp_path):
    """Several gzip members, and 4 KiB chunks (contexts at many bit positions): every file reads back."""
    src = big_tar(tmp_path / "big.tar")
    gz = multi_member(src, tmp_path / "multi.tar.gz")
    boot, blobs, res = pack_ref(gz, tmp_path / "ours")
    assert res["gzip_members"] == 3 and res["zran_contexts"] > 3
    read_back(src, boot, blobs, tmp_path)
    boot, blobs, res = pack_ref(
        gzipped(src, tmp_path / "big.tar.gz"), tmp_path / "small", "--chunk-size", "0x1000"
    )
    with open_layer(str(boot), blob_dir=str(blobs)) as layer:
        assert len({c.ctx_bits for c in layer.blob_file(0).zran.contexts}) >= 3
    read_back(src, boot, blobs, tmp_path)


# ---------------------------------------------------------------------------- the real nydusd
@pytest.mark.parametrize(
    "source",
    [
        "fixture:every-type.tar",
        "fixture:dedup.tar",
        "fixture:whiteouts.tar",
        "vector:all-entry-type.tar",
        "big",
        "multi",
    ],
)
def test_targz_ref_in_nydusd(request, oracle, fuse_ok, source, tmp_path):
    if source in ("big", "multi"):
        src = big_tar(tmp_path / "big.tar")
        gz = (
            multi_member(src, tmp_path / "l.tar.gz")
            if source == "multi"
            else gzipped(src, tmp_path / "l.tar.gz")
        )
    else:
        src = source_tar(request, source)
        gz = gzipped(src, tmp_path / "l.tar.gz")
    boot, blobs, _ = pack_ref(gz, tmp_path / "ours")
    expected = expected_tree(src)
    oracle.check(boot)
    started = int(time.time())
    with oracle.mount(boot, blobs, tmp_path / "nydusd") as mnt:
        assert_dir_matches(expected, mnt, zero_mtime_shown_as=(started, int(time.time()) + 1))
        for path, want in files_of(src).items():
            assert (Path(mnt) / path.lstrip("/")).read_bytes() == want, path
    assert "ERROR" not in oracle.log_of(tmp_path / "nydusd")


# ---------------------------------------------------------------------------- field by field with nydus-image
#: Differences allowed between our bootstrap and nydus-image's, each with its reason.
NUMBERING = "inode numbering: nydus-image places inodes depth-first, we breadth-first (as tar-rafs pack)"
KNOWN = [
    # The numbering moves directories' data blocks (i_u) and so the chunk table after them.
    (
        r"inode\[.*\]\.(nid|hardlink)|raw_inode\[.*\]\.(i_ino|i_u)|bootstrap\.ext_superblock\.chunk_table_offset",
        NUMBERING,
    ),
]
#: Where zstd compressed the blob.meta, its stored bytes are the zstd library's (another version than nydus's
#: makes other, equally valid frames): the stored size and the digest naming the file differ; what they
#: decompress to must not.
ZSTD_BYTES = r"bootstrap\.blobs\[0\]\.(blob_meta_digest|blob_meta_size|ci_compressed_size)"


def bootstrap_view(boot: Path, blobs: Path) -> dict:
    out: dict = {}
    info = json.loads(run_cli("info", "--json", boot).stdout)
    for key in ("superblock", "ext_superblock", "devices", "blobs", "prefetch"):
        flatten(f"bootstrap.{key}", info["bootstrap"].get(key), out)
    for node in json.loads(run_cli("ls", "-R", "--json", "--chunks", boot, "--blob-dir", blobs).stdout):
        flatten(f"inode[{node.pop('path')}]", node, out)
    with open_layer(str(boot), blob_dir=str(blobs)) as layer:
        rafs = layer.rafs
        for node in rafs.walk():
            ino = rafs.inode(node.nid)
            flatten(
                f"raw_inode[{os.fsdecode(node.path)}]",
                {**dataclasses.asdict(ino), "layout": ino.layout_name},
                out,
            )
    return out


def meta_of(blobs: Path, digest: str) -> tuple[blob_meta.BlobMetaHeader, bytes]:
    """A meta blob's header and its chunk-info data, decompressed."""
    raw = (blobs / digest).read_bytes()
    header = blob_meta.BlobMetaHeader.parse(raw, len(raw) - blob_meta.HEADER_SIZE)
    data = raw[: header.s_ci_compressed_size]
    if header.s_ci_compressor:
        data = zstandard.ZstdDecompressor().decompress(data, max_output_size=header.s_ci_uncompressed_size)
    return header, data


def member_starts(gz: Path) -> set[int]:
    """Offsets of the gzip members after the first."""
    raw, out, pos = gz.read_bytes(), set(), 0
    while True:
        d = zlib.decompressobj(31)
        for i in range(pos, len(raw), 1 << 20):
            piece = raw[i : i + (1 << 20)]
            d.decompress(piece)
            if d.eof:
                pos = i + len(piece) - len(d.unused_data)
                break
        else:
            return out
        if pos >= len(raw):
            return out
        out.add(pos)


def _same_context(c: zran.ZranContext) -> tuple:
    return (c.in_offset, c.out_offset, c.in_len, c.out_len, c.ctx_byte, c.ctx_bits, c.window)


def compare_with_nydus_image(oracle, gz: Path, work: Path, *opts, ref: tuple = REF) -> dict:
    """Our targz-ref layer and nydus-image's (``ref``: its type and whiteout options) over ``gz``: every field
    the same, but for the inode numbering, the zstd bytes of a compressed blob.meta, and where nydus starts a
    context at the end of a gzip member's last block (ours starts at the next member's data, see
    targz.ZranIndexer.begin): there its context (which nydusd cannot decode) is left out of the comparison,
    the chunks it held are ours in the next context, and what follows the contexts in the blob.meta moves."""
    import re

    boot, blobs, res = pack_ref(gz, work / "ours", *opts)
    theirs, their_blobs = real_ref(oracle, gz, work / "theirs", *opts, ref=ref)
    os.link(gz, their_blobs / res["blob_id"])
    ours_v, theirs_v = bootstrap_view(boot, blobs), bootstrap_view(theirs, their_blobs)
    if not theirs_v.get("bootstrap.blobs[0].chunk_count"):
        assert not [
            d for d in differences(ours_v, theirs_v) if not any(re.fullmatch(p, d[0]) for p, _ in KNOWN)
        ]
        return res
    ours_h, ours_d = meta_of(blobs, ours_v["bootstrap.blobs[0].blob_meta_digest"])
    theirs_h, theirs_d = meta_of(their_blobs, theirs_v["bootstrap.blobs[0].blob_meta_digest"])
    ours_z = zran.parse_table(ours_d, ours_h.s_ci_zran_offset, ours_h.s_ci_zran_size, ours_h.s_ci_zran_count)
    theirs_z = zran.parse_table(
        theirs_d, theirs_h.s_ci_zran_offset, theirs_h.s_ci_zran_size, theirs_h.s_ci_zran_count
    )
    starts = member_starts(gz) if res["gzip_members"] > 1 else set()
    at_end = {c.index for c in theirs_z if c.in_offset + 8 in starts}
    # Ours in place of each of those: the same output from the next member's data on, with no window (where
    # nydus has its own context there, for a later chunk, ours is that one and holds the chunks of both).
    raw = gz.read_bytes() if at_end else b""
    expected: list[tuple] = []
    for c in theirs_z:
        if c.index in at_end:
            start = c.in_offset + 8 + zran._gzip_header_size(raw, c.in_offset + 8)
            expected.append((start, c.out_offset, c.in_offset + c.in_len - start, c.out_len, 0, 0, b""))
        elif expected and expected[-1][:2] == (c.in_offset, c.out_offset):
            expected[-1] = _same_context(c)
        else:
            expected.append(_same_context(c))
    assert [_same_context(c) for c in ours_z] == expected
    assert not [c for c in ours_z if c.in_offset + 8 in starts], "a context of ours starts at a member's end"
    # Their context index -> ours: the same context, or for one at a member's end, ours at the same output.
    by_start = {(c.in_offset, c.out_offset): c.index for c in ours_z}
    by_out = {c.out_offset: c.index for c in ours_z}
    index = {
        c.index: by_out[c.out_offset] if c.index in at_end else by_start[(c.in_offset, c.out_offset)]
        for c in theirs_z
    }
    ours_ci = blob_meta.ChunkInfoArray(ours_d, ours_h.s_ci_entries, True)
    theirs_ci = blob_meta.ChunkInfoArray(theirs_d, theirs_h.s_ci_entries, True)
    moved = set()  # (compressed offset, size) of their chunks in a context at a member's end
    for o, t in zip(ours_ci, theirs_ci, strict=True):
        t_index = t.data >> 32
        want = dataclasses.replace(t, data=(index[t_index] << 32) | (t.data & 0xFFFFFFFF))
        if t_index in at_end:
            moved.add((t.compressed_offset, t.compressed_size))
            want = dataclasses.replace(
                want, compressed_offset=o.compressed_offset, compressed_size=o.compressed_size
            )
        assert o == want
    zstd = ours_v.get("bootstrap.blobs[0].ci_compressor") == "zstd"
    moved_offsets = {off for off, _ in moved}

    def explained(key: str) -> bool:
        if any(re.fullmatch(p, key) for p, _ in KNOWN):
            return True
        if (zstd or at_end) and re.fullmatch(ZSTD_BYTES, key):
            return True
        if at_end and key == "bootstrap.blobs[0].ci_uncompressed_size":
            return True
        m = re.fullmatch(r"(inode\[.*\]\.chunks\[\d+\])\.compressed_(offset|size)", key)
        return bool(m) and theirs_v.get(m.group(1) + ".compressed_offset") in moved_offsets

    unknown = [d for d in differences(ours_v, theirs_v) if not explained(d[0])]
    assert not unknown, f"{len(unknown)} unexplained difference(s): {unknown[:20]}"
    moved_fields = {"s_ci_compressed_size", "s_ci_uncompressed_size", "s_ci_zran_size", "s_ci_zran_count"}
    for f in dataclasses.fields(ours_h):
        if f.name in moved_fields and at_end or f.name == "s_ci_compressed_size" and zstd:
            continue
        assert getattr(ours_h, f.name) == getattr(theirs_h, f.name), f.name
    assert ours_h.s_ci_zran_count == res["zran_contexts"] >= 1
    if not at_end:
        assert ours_d == theirs_d
    res["nydus_contexts_at_member_end"] = len(at_end)
    return res


@pytest.mark.parametrize("source", NYDUS_IMAGE_SOURCES)
def test_fields_equal_nydus_image(request, oracle, source, tmp_path):
    src = source_tar(request, source)
    compare_with_nydus_image(oracle, gzipped(src, tmp_path / "layer.tar.gz"), tmp_path)


@pytest.mark.parametrize(
    ("form", "opts"),
    [("one", ()), ("one", ("--chunk-size", "0x1000")), ("one", ("--chunk-size", "0x400000")), ("multi", ())],
)
def test_contexts_equal_nydus_image(oracle, form, opts, tmp_path):
    """Many contexts (several MiB, 4 KiB chunks, three gzip members): nydus's context placement, offsets,
    bit positions and windows, exactly."""
    src = big_tar(tmp_path / "big.tar")
    gz = multi_member(src, tmp_path / "l.tar.gz") if form == "multi" else gzipped(src, tmp_path / "l.tar.gz")
    res = compare_with_nydus_image(oracle, gz, tmp_path, *opts)
    assert res["zran_contexts"] > 3


def test_chunk_at_a_member_end(oracle, fuse_ok, tmp_path):
    """A file whose data starts exactly where a gzip member ends, with a context due there (4 MiB chunks): nydus
    2.4.4 starts the context at the end of the member's last block, and nydusd then reads the member's
    trailer as deflate data and fails the read (EIO); ours starts at the next member's data, and nydusd reads
    the file. Everything else is nydus-image's. Our reader reads nydus's layer too."""
    src = big_tar(tmp_path / "big.tar")
    with tarfile.open(src) as tf:
        cut = next(m for m in tf if m.name == "one-mib").offset_data
    data = src.read_bytes()
    gz = tmp_path / "l.tar.gz"
    gz.write_bytes(gzip.compress(data[:cut], mtime=0) + gzip.compress(data[cut:], mtime=0))
    res = compare_with_nydus_image(oracle, gz, tmp_path, "--chunk-size", "0x400000")
    assert res["nydus_contexts_at_member_end"] == 1
    want = files_of(src)["/one-mib"]
    with oracle.mount(
        tmp_path / "ours" / "blobs" / "layer.boot", tmp_path / "ours" / "blobs", tmp_path / "n1"
    ) as mnt:
        assert (Path(mnt) / "one-mib").read_bytes() == want
    with oracle.mount(
        tmp_path / "theirs" / "ref.boot", tmp_path / "theirs" / "blobs", tmp_path / "n2"
    ) as mnt:
        with pytest.raises(OSError):
            (Path(mnt) / "one-mib").read_bytes()
    # Our reader reads nydus's context there all the same: past the trailer, from the next member's data.
    theirs = tmp_path / "theirs"
    proc = run_cli("cat", theirs / "ref.boot", "/one-mib", "--blob-dir", theirs / "blobs")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == want


# ---------------------------------------------------------------------------- whiteouts
@pytest.mark.parametrize("source", ["fixture:whiteouts.tar", "merge:1", "merge:2"])
def test_whiteouts_are_entries_as_nydus_image_keeps_them(request, oracle, source, tmp_path):
    """OCI whiteouts (``.wh.NAME``, ``.wh..wh..opq``) in a targz-ref layer: nydus-image at its default
    ``--whiteout-spec`` (oci) keeps them as the entries the tar holds (its whiteout rules act only where it
    merges layers), so its bootstrap and blob.meta are byte for byte those of ``--whiteout-spec none`` and
    ``overlayfs``; ours (pack has no --whiteout-spec: there is nothing to choose) equal them field by field,
    and list every whiteout as the tar's entry. (The merge fixture's base layer is left out: nydus-image
    cannot read its fifo entry, "failed to get device major".)"""
    import merge_fixtures

    if source.startswith("merge:"):
        # Hard links included: their headers' modes and times are not their targets', and must come out as
        # nydus-image writes them (the link's header applies to the inode).
        src = tmp_path / "layer.tar"
        src.write_bytes(merge_fixtures.make_tar(merge_fixtures.LAYERS[int(source.split(":")[1])]))
    else:
        src = source_tar(request, source)
    gz = gzipped(src, tmp_path / "layer.tar.gz")
    compare_with_nydus_image(oracle, gz, tmp_path, ref=("--type", "targz-ref"))
    theirs = tmp_path / "theirs"

    def meta_files(blobs: Path) -> dict[str, bytes]:
        return {
            p.name: p.read_bytes()
            for p in blobs.iterdir()
            if p.name != hashlib.sha256(gz.read_bytes()).hexdigest()
        }

    for spec in ("oci", "none", "overlayfs"):
        boot, blobs = real_ref(
            oracle, gz, tmp_path / spec, ref=("--type", "targz-ref", "--whiteout-spec", spec)
        )
        assert boot.read_bytes() == (theirs / "ref.boot").read_bytes(), spec
        assert meta_files(blobs) == meta_files(theirs / "blobs"), spec
    with tarfile.open(src) as tf:
        members = {"/" + "/".join(p for p in m.name.split("/") if p not in ("", ".")): m for m in tf}
    whiteouts = {p: m for p, m in members.items() if p.rsplit("/", 1)[-1].startswith(".wh.")}
    assert whiteouts
    listed = {
        e["path"]: e
        for e in json.loads(run_cli("ls", "-R", "--json", tmp_path / "ours" / "blobs" / "layer.boot").stdout)
    }
    for path, m in whiteouts.items():
        assert listed[path]["type"] == "file" and listed[path]["size"] == m.size, path


# ---------------------------------------------------------------------------- the meta blob form
@pytest.mark.parametrize("source", [*NYDUS_IMAGE_SOURCES, "big", "multi"])
def test_inline_meta_equal_nydus_image(request, oracle, source, tmp_path):
    """``--blob-inline-meta``: the meta blob ``nydus-image create --type targz-ref --blob-inline-meta --features
    blob-toc`` writes (the snapshotter's form), section by section, tar header by tar header, ToC entry by
    entry and field by field as test_oracle_fields compares tar-rafs layers, and its blob.meta (contexts and
    windows included) byte for byte; read back by us with the gzip as its blob."""
    import re

    from test_oracle_fields import KNOWN_DIFFERENCES, views

    if source in ("big", "multi"):
        src = big_tar(tmp_path / "big.tar")
        gz = (
            multi_member(src, tmp_path / "l.tar.gz")
            if source == "multi"
            else gzipped(src, tmp_path / "l.tar.gz")
        )
    else:
        src = source_tar(request, source)
        gz = gzipped(src, tmp_path / "l.tar.gz")
    ours = tmp_path / "ours.meta"
    proc = run_cli("pack", "--type", "targz-ref", "--blob-inline-meta", gz, "-o", ours)
    assert proc.returncode == 0, proc.stderr.decode()
    _, theirs = oracle.create(
        gz, tmp_path / "theirs", *REF, "--blob-inline-meta", "--features", "blob-toc", name="ref"
    )
    known = [p for p, _ in KNOWN_DIFFERENCES + KNOWN]
    unknown = [
        d for d in differences(views(ours), views(theirs)) if not any(re.fullmatch(p, d[0]) for p in known)
    ]
    assert not unknown, f"{len(unknown)} unexplained difference(s): {unknown[:20]}"
    assert run_cli("entry", ours, "blob.meta").stdout == run_cli("entry", theirs, "blob.meta").stdout
    # Everything before the bootstrap (whose bytes follow the inode numbering) is nydus-image's.
    boot_at = next(
        e for e in json.loads(run_cli("toc", theirs, "--json").stdout)["entries"] if e["name"] == "image.boot"
    )
    head = boot_at["compressed_offset"]
    assert ours.read_bytes()[:head] == theirs.read_bytes()[:head]
    expected = expected_tree(src)
    assert_tree_matches(expected, ours, blobs=[str(gz)])
    for path, want in files_of(src).items():
        assert run_cli("cat", ours, path, "--blob", gz).stdout == want, path
    proc = run_cli("verify", ours, "--blob", gz)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_debian_rootfs_targz_ref(request, oracle, fuse_ok, tmp_path):
    """The Debian minbase tar, gzipped: equal to nydus-image's targz-ref field by field, read back by us and
    served by nydusd as the tar holds it."""
    src = debian_rootfs_tar()
    gz = tmp_path / "rootfs.tar.gz"
    with open(src, "rb") as f, gzip.GzipFile(gz, "wb", compresslevel=6, mtime=0) as g:
        shutil.copyfileobj(f, g, 1 << 20)
    res = compare_with_nydus_image(oracle, gz, tmp_path)
    assert res["zran_contexts"] > 10
    boot, blobs = tmp_path / "ours" / "blobs" / "layer.boot", tmp_path / "ours" / "blobs"
    out = tmp_path / "out.tar"
    proc = run_cli("unpack", boot, "--blob-dir", blobs, "-o", out, timeout=600)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("diff", src, out, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run_cli("verify", boot, "--blob-dir", blobs, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    expected = expected_tree(src)
    started = int(time.time())
    with oracle.mount(boot, blobs, tmp_path / "nydusd") as mnt:
        assert_dir_matches(expected, mnt, zero_mtime_shown_as=(started, int(time.time()) + 1))


def test_debian_rootfs_multi_member(oracle, tmp_path):
    """The Debian tar in gzip members of 3 MiB of input each (pigz-like), with 4 MiB chunks (a context for
    nearly every chunk): nydus-image's tables exactly, and read back exactly."""
    src = debian_rootfs_tar()
    gz = tmp_path / "rootfs.tar.gz"
    with open(src, "rb") as f, open(gz, "wb") as out:
        while block := f.read(3 << 20):
            out.write(gzip.compress(block, compresslevel=1, mtime=0))
    res = compare_with_nydus_image(oracle, gz, tmp_path, "--chunk-size", "0x400000")
    assert res["gzip_members"] > 10 and res["zran_contexts"] > 100
    boot, blobs = tmp_path / "ours" / "blobs" / "layer.boot", tmp_path / "ours" / "blobs"
    out = tmp_path / "out.tar"
    proc = run_cli("unpack", boot, "--blob-dir", blobs, "-o", out, timeout=600)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("diff", src, out, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run_cli("verify", boot, "--blob-dir", blobs, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_memory_is_bounded_by_a_chunk(tmp_path):
    """A 1 GiB file of zeros (a gzip of about 1 MiB) packs under the 512 MiB address-space limit: the gzip
    is streamed, never held whole, and its 1024 identical chunks share one record."""
    import hostile

    gz = tmp_path / "zeros.tar.gz"
    with gzip.GzipFile(gz, "wb", compresslevel=1, mtime=0) as g:
        head = tarfile.TarInfo("zeros")
        head.size, head.mtime = 1 << 30, make_fixtures.T0
        g.write(head.tobuf(format=tarfile.GNU_FORMAT))
        block = bytes(1 << 20)
        for _ in range(1024):
            g.write(block)
        g.write(bytes(1024))
    assert gz.stat().st_size < 8 << 20
    (tmp_path / "out").mkdir()
    proc = hostile.run_limited(
        "pack", "--type", "targz-ref", gz, "-o", tmp_path / "out" / "boot", "--json", timeout=300
    )
    assert proc.returncode == 0, proc.stderr.decode()
    boot = tmp_path / "out" / "boot"
    with open_layer(str(boot), blobs=[str(gz)]) as layer:
        node = layer.rafs.lookup("/zeros")
        assert node.size == 1 << 30 and len({c.ci_index for c in layer.rafs.chunks(node)}) == 1


# ---------------------------------------------------------------------------- bad input
def _bad_input(tmp: Path, tars: dict, case: str) -> tuple[bytes, str]:
    good = gzip.compress(tars["dedup.tar"].read_bytes(), mtime=0)
    big = big_tar(tmp / "big.tar").read_bytes() if case == "short-tar" else b""
    return {
        "plain-tar": (tars["dedup.tar"].read_bytes(), "not a gzip file"),
        "empty": (b"", "not a gzip file"),
        "truncated": (good[: len(good) // 2], "truncated"),
        "no-trailer": (good[:-4], "truncated"),
        "bad-crc": (good[:-8] + bytes(4) + good[-4:], "gzip"),
        "garbage-after": (good + b"garbage", "not a gzip member"),
        "not-a-tar": (gzip.compress(os.urandom(3000), mtime=0), "not a tar"),
        # A whole gzip of a tar cut inside a file's data.
        "short-tar": (gzip.compress(big[: len(big) // 2], mtime=0), "data ends"),
    }[case]


@pytest.mark.parametrize(
    "case",
    ["plain-tar", "empty", "truncated", "no-trailer", "bad-crc", "garbage-after", "not-a-tar", "short-tar"],
)
def test_bad_input_is_one_line_exit_2(fixture_tars, case, tmp_path):
    data, needle = _bad_input(tmp_path, fixture_tars, case)
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(data)
    out = tmp_path / "out" / "boot"
    out.parent.mkdir()
    proc = run_cli("pack", "--type", "targz-ref", bad, "-o", out)
    assert_one_line_error(proc, 2, needle)
    assert list(out.parent.iterdir()) == []  # nothing left behind


def test_zero_padding_after_gzip_is_read(fixture_tars, tmp_path):
    """Zero bytes after the last member (tape padding, which gzip -d accepts) are part of the blob only."""
    gz = tmp_path / "padded.tar.gz"
    gz.write_bytes(gzip.compress(fixture_tars["dedup.tar"].read_bytes(), mtime=0) + bytes(1000))
    boot, blobs, _ = pack_ref(gz, tmp_path / "ours")
    read_back(fixture_tars["dedup.tar"], boot, blobs, tmp_path)


def test_inline_meta_is_for_targz_ref_only(fixture_tars, tmp_path):
    proc = run_cli("pack", fixture_tars["dedup.tar"], "-o", tmp_path / "x.blob", "--blob-inline-meta")
    assert_one_line_error(proc, 2, "--blob-inline-meta")


@pytest.mark.parametrize(
    ("opts", "needle"),
    [
        (("--format", "erofs"), "not with --format erofs"),
        (("--compressor", "lz4_block"), "--compressor"),
        (("--digester", "crc"), "sha256"),
        (("--bootstrap", "x.boot"), "--bootstrap"),
        (("--chunk-size", "0x3000"), "power of 2"),
    ],
)
def test_pointless_options_are_refused(fixture_tars, opts, needle, tmp_path):
    gz = gzipped(fixture_tars["dedup.tar"], tmp_path / "l.tar.gz")
    proc = run_cli("pack", "--type", "targz-ref", gz, "-o", tmp_path / "boot", *opts)
    assert_one_line_error(proc, 2, needle)
