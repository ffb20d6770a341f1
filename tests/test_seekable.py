"""Seekable EROFS layers (containerd's ``--erofs-seekable``, pull request 12703): read by frame.

:func:`make_seekable` builds them here from the format's description, apart from our writer
(test_seekable_write holds that one to the zstd CLI and veritysetup), so that the reader is judged on
layers it did not make: the EROFS image (made by the real mkfs.erofs) cut into chunks, each an independent
zstd frame, then the chunk table in a skippable frame, then optionally a dm-verity frame. Read through the
layer, the image inside must give the tree the plain image gives (model, unpack, the mount against erofsfuse
of the plain image); a chunk table that lies is one line naming it, exit 2.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import pytest
import test_mount
import zstandard
from fixtures_util import assert_one_line_error, fixture_tars_fixture, run_cli  # noqa: F401
from test_erofs_native import assert_same_tree, extracted_tree, our_tree

from nydus_inspect.chunks.source import LocalFile
from nydus_inspect.formats import seekable_erofs
from nydus_inspect.layer import open_layer
from nydus_inspect.seekable import SeekableErofs

fuse = test_mount.fuse
mounts = test_mount.mounts

pytestmark = pytest.mark.erofs


def make_seekable(
    image: bytes,
    chunk: int = 65536,
    *,
    sha512: bool = True,
    verity: bool = False,
    level: int = 3,
    verity_payload: bytes | None = None,
) -> bytes:
    """The seekable layer of ``image``: frames, the chunk table (skippable frame), optional dm-verity (built
    here, or ``verity_payload``: a hash file as ``veritysetup format`` writes it)."""
    cctx = zstandard.ZstdCompressor(level=level, write_content_size=True)
    out = bytearray()
    entries = bytearray()
    for pos in range(0, len(image), chunk):
        frame = cctx.compress(image[pos : pos + chunk])
        entries += struct.pack("<Q", len(out)) + (hashlib.sha512(frame).digest() if sha512 else b"")
        out += frame
    payload = seekable_erofs.HEADER.pack(
        seekable_erofs.TABLE_MAGIC, 1, len(image), chunk, seekable_erofs.HASH_SHA512 if sha512 else 0, 0
    )
    payload += entries
    out += struct.pack("<II", seekable_erofs.SKIPPABLE_MIN, len(payload)) + payload
    if verity:
        # A dm-verity superblock (veritysetup's layout: signature, version, hash type, uuid, algorithm, block
        # sizes, data blocks, salt size, salt), padded to a block, then the hash tree's leaf level.
        blocks = -(-len(image) // 4096)
        sb = struct.pack(
            "<8sII16s32sIIQH6x256s", b"verity", 1, 1, bytes(16), b"sha256", 4096, 4096, blocks, 0, b""
        )
        leaves = b"".join(
            hashlib.sha256(image[i * 4096 : (i + 1) * 4096].ljust(4096, b"\0")).digest()
            for i in range(blocks)
        )
        body = sb.ljust(4096, b"\0") + leaves.ljust(-(-len(leaves) // 4096) * 4096, b"\0")
        out += struct.pack("<II", seekable_erofs.SKIPPABLE_MIN, len(body)) + body
    if verity_payload is not None:
        out += struct.pack("<II", seekable_erofs.SKIPPABLE_MIN, len(verity_payload)) + verity_payload
    return bytes(out)


@pytest.fixture(scope="module")
def plain(erofs_utils, fixture_tars, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("seekable")
    tar = fixture_tars["every-type.tar"]
    return {
        "plain": erofs_utils.mkfs(d / "plain.erofs", tar, "--tar=f"),
        "lz4hc": erofs_utils.mkfs(d / "lz4hc.erofs", tar, "--tar=f", "-zlz4hc", "-C16384"),
    }


@pytest.mark.parametrize("kind", ["plain", "lz4hc"])
@pytest.mark.parametrize(
    "chunk,sha512,verity",
    [(4096, True, False), (65536, False, True), (1 << 20, True, True), (12288, False, False)],
)
def test_seekable_reads_as_the_image_inside(plain, tmp_path, kind, chunk, sha512, verity):
    image = plain[kind].read_bytes()
    layer = tmp_path / "layer.seekable"
    layer.write_bytes(make_seekable(image, chunk, sha512=sha512, verity=verity))
    assert_same_tree(our_tree(layer), our_tree(plain[kind]), "seekable against plain")
    info = json.loads(run_cli("info", "--json", layer).stdout)
    assert info["kind"] == "erofs"
    table = info["seekable"]
    assert table["frames"] == -(-len(image) // chunk) and table["chunk_size"] == chunk
    assert table["uncompressed_size"] == len(image) and table["hash"] == ("sha512" if sha512 else "none")
    assert (table["dm_verity_offset"] is not None) == verity
    with open_layer(str(layer)) as ly:
        assert ly.source.pread(0, len(image)) == image
        for off in (0, 1023, chunk - 1, len(image) - 4097):
            assert (
                ly.source.pread(off, 5000 if off + 5000 <= len(image) else 1)
                == image[off : off + 5000][: 5000 if off + 5000 <= len(image) else 1]
            )
    out = tmp_path / "out"
    assert run_cli("unpack", layer, "--to-dir", out).returncode == 0
    ref = tmp_path / "ref"
    assert run_cli("unpack", plain[kind], "--to-dir", ref).returncode == 0
    assert extracted_tree(out) == extracted_tree(ref)


@pytest.mark.parametrize("verity", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_the_chunk_table_is_found_every_way(plain, tmp_path, monkeypatch, padded, verity):
    """Opening reads a few bytes wherever the table is, when the first frame's superblock gives the image's
    size; when it does not (the image padded past its last block here), a table that ends the file is still
    found by its magic, and one before a dm-verity frame by walking the frames. Every way, each frame is
    where the table says and the image reads back whole."""
    from test_erofs_write import veritysetup_format

    image = plain["plain"].read_bytes() + (bytes(5000) if padded else b"")
    payload = None
    if verity:  # the hash file the real veritysetup writes for the image
        (tmp_path / "image").write_bytes(image)
        veritysetup_format(
            tmp_path / "image", tmp_path / "hash", "--data-block-size=4096", "--hash-block-size=4096"
        )
        payload = (tmp_path / "hash").read_bytes()
    data = make_seekable(image, 4096, verity_payload=payload)
    layer = tmp_path / "layer.seekable"
    layer.write_bytes(data)
    reads = []
    pread = LocalFile.pread

    def counted(self, off, n, what="data"):
        reads.append(n)
        return pread(self, off, n, what)

    monkeypatch.setattr(LocalFile, "pread", counted)
    src = SeekableErofs(str(layer))
    try:
        opened = len(reads)
        frames = len(src.table.frames)
        assert frames == -(-len(image) // 4096) and frames > 20
        if padded and verity:
            assert opened > 2 * frames, reads  # walked: a read per block header
        else:
            assert opened <= 16, reads
        assert src.pread(0, len(image)) == image
    finally:
        src.close()


def test_seekable_mount_matches_erofsfuse(plain, erofs_utils, mounts, tmp_path):
    layer = tmp_path / "layer.seekable"
    layer.write_bytes(make_seekable(plain["lz4hc"].read_bytes(), 8192, verity=True))
    mp = mounts.mount(layer)
    with erofs_utils.mounted(plain["lz4hc"], tmp_path / "real") as real:
        assert_same_tree(
            extracted_tree(mp / "rootfs"), extracted_tree(real), "seekable mount against erofsfuse"
        )


def _entry_at(layer: bytes, i: int) -> int:
    table = seekable_erofs.parse(lambda o, n: layer[o : o + n], len(layer))
    entry = 8 + seekable_erofs.HASH_SIZES[table.hash_algo]
    return table.offset + 8 + seekable_erofs.HEADER.size + i * entry


def _lies(good: bytes):
    """(name, damaged layer, words of the error) for each way a chunk table can lie."""
    tab = seekable_erofs.parse(lambda o, n: good[o : o + n], len(good))
    hdr = tab.offset + 8

    def put(at: int, fmt: str, *v) -> bytes:
        b = bytearray(good)
        struct.pack_into(fmt, b, at, *v)
        return bytes(b)

    yield "entry offset", put(_entry_at(good, 2), "<Q", tab.frames[2].offset + 1), "frame offset"
    yield "huge entry offset", put(_entry_at(good, 1), "<Q", 1 << 62), "frame offset"
    yield "version", put(hdr + 4, "<I", 2), "unknown version"
    yield "hash algorithm", put(hdr + 20, "<B", 7), "unknown hash algorithm"
    yield "reserved", put(hdr + 21, "<H", 1), "reserved"
    yield "chunk size zero", put(hdr + 16, "<I", 0), "chunk size"
    yield "uncompressed size", put(hdr + 8, "<Q", 1 << 60), "payload bytes"
    yield "payload size past the end", put(tab.offset + 4, "<I", 0xFFFFFFF0), "past the end"
    yield "table magic", put(hdr, "<I", 0), "not a chunk table"
    yield "frame checksum", put(_entry_at(good, 1) + 8, "<I", 0), "SHA-512"
    yield "garbage after the table", good + b"x" * 100, "after the chunk table"
    b = bytearray(good)
    b[tab.frames[1].offset + 5 : tab.frames[1].offset + 8] = b"\xff\xff\xff"  # a block header of 2 MiB
    yield "block size", bytes(b), "zstd frame"
    yield "truncated", good[: tab.frames[3].offset + 10], "zstd frame"


def test_a_lying_chunk_table_is_one_line(plain, tmp_path):
    good = make_seekable(plain["plain"].read_bytes(), 4096)
    for name, data, words in _lies(good):
        layer = tmp_path / f"{name.replace(' ', '-')}.seekable"
        layer.write_bytes(data)
        proc = run_cli("ls", "-R", layer) if name != "frame checksum" else run_cli("unpack", layer, "-o", "-")
        try:
            assert_one_line_error(proc, 2, words)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None
    assert not list(tmp_path.glob("*.tar"))
    assert os.path.getsize(tmp_path / "truncated.seekable") < len(good)


def test_chunks_lists_the_frame_table(plain, tmp_path):
    """``chunks`` of a seekable layer is its frame table: each frame where the walk found it, with its SHA-512."""
    image = plain["lz4hc"].read_bytes()
    data = make_seekable(image, 16384, verity=True)
    layer = tmp_path / "layer.seekable"
    layer.write_bytes(data)
    report = json.loads(run_cli("chunks", "--json", layer).stdout)
    assert report["source"] == "seekable erofs chunk table"
    frames = report["chunks"]
    assert len(frames) == -(-len(image) // 16384)
    dctx = zstandard.ZstdDecompressor()
    for f in frames:
        raw = data[f["compressed_offset"] : f["compressed_offset"] + f["compressed_size"]]
        assert hashlib.sha512(raw).hexdigest() == f["digest"]
        got = dctx.decompress(raw)
        assert got == image[f["uncompressed_offset"] : f["uncompressed_offset"] + f["uncompressed_size"]]
    text = run_cli("info", layer).stdout.decode()
    assert f"seekable: {len(frames)} zstd frames of 16384 bytes" in text and "dm-verity at" in text


def test_seekable_dm_verity_made_by_veritysetup(plain, tmp_path):
    """The dm-verity frame is the hash file the real ``veritysetup format`` writes for the image inside:
    verify accepts it with the root hash veritysetup printed, and names a wrong root hash, a flipped bit in
    the hash tree (at its offset in the layer file) and a data block of the image that no longer hashes to
    its leaf."""
    from test_erofs_write import veritysetup_format

    image = plain["plain"].read_bytes()
    root = veritysetup_format(
        plain["plain"], tmp_path / "hash", "--data-block-size=4096", "--hash-block-size=4096"
    )
    payload = (tmp_path / "hash").read_bytes()
    layer = tmp_path / "v.seekable"
    data = make_seekable(image, 16384, sha512=False, verity_payload=payload)
    layer.write_bytes(data)
    good = run_cli("verify", layer, "--root-hash", root)
    assert good.returncode == 0, good.stdout.decode() + good.stderr.decode()
    assert b"dm-verity blocks" in good.stdout

    wrong = run_cli("verify", layer, "--root-hash", "00" * 32)
    assert_one_line_error(wrong, 2, "the root hash given is not the tree's")

    # A bit of the tree's first hash block (after the superblock's 4096 bytes).
    tree_at = len(data) - len(payload) + 4096
    flipped = bytearray(data)
    flipped[tree_at + 7] ^= 0x01
    layer.write_bytes(flipped)
    proc = run_cli("verify", layer, "--root-hash", root)
    assert proc.returncode == 1 and b"verity.hash" in proc.stdout, proc.stdout
    assert f"offset {tree_at}".encode() in proc.stdout or str(tree_at).encode() in proc.stdout

    # The image inside changed after veritysetup hashed it: its block is named.
    block = len(image) // 4096 // 2
    changed = bytearray(image)
    changed[block * 4096 + 100] ^= 0x40
    layer.write_bytes(make_seekable(bytes(changed), 16384, sha512=False, verity_payload=payload))
    proc = run_cli("verify", layer, "--root-hash", root)
    assert proc.returncode == 1 and f"data block {block} does not match".encode() in proc.stdout, proc.stdout


def test_seekable_root_hash_without_payload_is_one_line(plain, tmp_path):
    layer = tmp_path / "nov.seekable"
    layer.write_bytes(make_seekable(plain["plain"].read_bytes(), 16384))
    proc = run_cli("verify", layer, "--root-hash", "00" * 32)
    assert_one_line_error(proc, 2, "no dm-verity payload")
