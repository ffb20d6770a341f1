"""The layer blobs pack writes follow the format spec (docs/nydus-format.md sections 2-5 and 9).

Everything here is decoded with struct from the spec's offsets, not through nydus_inspect.formats, so
a wrong field in a codec cannot be confirmed by the same codec reading it back. The real vector
``nydus/toc/2fa78cad...`` anchors the tar-header and ToC-digest rules.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tarfile
from dataclasses import dataclass

import blake3
import lz4.block
import pytest
import zstandard
from conftest import TOC_BLOB
from fixtures_util import (
    COMPRESSORS,
    DIGESTERS,
    fixture_tars_fixture,  # noqa: F401 (provides the fixture_tars fixture)
    pack_layer,
    run_cli,
)

from nydus_inspect.formats import tar_header, toc
from nydus_inspect.layer import open_layer
from nydus_inspect.unpack import cache_file

BLOCK = 4096
FEATURES_INLINE = (
    0x7000_0023  # CAP_TAR_TOC|HAS_TOC|HAS_TAR_HEADER|INLINED_CHUNK_DIGEST|INLINED_FS_META|ALIGNED
)
FEATURES_SEPARATE = 0x7000_0021  # the same blob listed in a bootstrap of its own: INLINED_FS_META cleared
ALGO = {"none": 0, "lz4_block": 1, "zstd": 3}
TOC_FLAG = {"none": 1, "zstd": 2, "lz4_block": 4}
SUPER_COMP = {"none": 0x1, "lz4_block": 0x2, "zstd": 0x80}
SUPER_DIGEST = {"blake3": 0x4, "sha256": 0x8}
EXPLICIT_UID_GID, HAS_XATTR, INLINED_CHUNK_DIGEST, ENCRYPTION_NONE = 0x10, 0x20, 0x100, 0x0100_0000
TOC_ENTRY = struct.Struct("<I4x16s32sQQQ48x")
META_HEADER = struct.Struct("<IIIIQQQQQI")
BLOB_ENTRY = struct.Struct("<64sIIIIIIQQIIQQQ32s32sQQI36x")
CHUNK_RECORD = struct.Struct("<32sIIIIQQQII")


def round_up(n: int, to: int = BLOCK) -> int:
    return -(-n // to) * to


def nydus_tar_header(name: str, size: int) -> bytes:
    """Section 2.2, written out: old-GNU, zero mode/uid/gid/mtime, 11-digit size, 7-digit checksum."""
    h = bytearray(512)
    h[: len(name)] = name.encode()
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"00000000000\0"
    h[156:157] = b"0"
    h[257:265] = b"ustar  \0"
    h[148:156] = b" " * 8
    h[148:156] = b"%07o\0" % sum(h)
    return bytes(h)


def walk_sections(blob: bytes) -> list[tuple[str, int, int, int]]:
    """The seed converter's walk from the end: (name, data offset, data size, header offset), in file order."""
    out = []
    cur = len(blob) - 512
    while cur >= 0:
        hdr = blob[cur : cur + 512]
        name = hdr[:100].rstrip(b"\0").decode()
        size = int(hdr[124:135], 8)
        out.append((name, cur - size, size, cur))
        cur -= size + 512
    assert cur == -512, "the sections must start exactly at offset 0"
    return out[::-1]


def decompress(data: bytes, comp: str, size: int) -> bytes:
    if comp == "zstd":
        return zstandard.ZstdDecompressor().decompress(data, max_output_size=size)
    if comp == "lz4_block":
        return lz4.block.decompress(data, uncompressed_size=size)
    return data


def compress(data: bytes, comp: str) -> bytes:
    if comp == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(data)
    return lz4.block.compress(data, store_size=False)


def ci_v1(array: bytes, i: int) -> tuple[int, int, int, int]:
    """Section 4.1: (compressed offset, compressed size, uncompressed offset, uncompressed size)."""
    u, c = struct.unpack_from("<QQ", array, 16 * i)
    usize = (((u >> 8) & 0xF) << 20 | (u >> 44)) + 1
    uoff = u & ((1 << 44) - 1) & ~0xFFF
    coff = c & ((1 << 40) - 1)
    csize = (((c >> 40) & 0xF) << 20 | (c >> 44)) + 1
    return coff, csize, uoff, usize


@dataclass
class Packed:
    blob: bytes
    result: object
    sections: list
    toc: dict
    boot: bytes
    compressor: str
    digester: str
    chunk_size: int

    def section(self, name):
        return next(s for s in self.sections if s[0] == name)


_cache: dict = {}


@pytest.fixture(scope="module")
def packed(fixture_tars, tmp_path_factory):
    """packed(fixture, compressor, digester, chunk_size) -> Packed, cached per module."""

    def get(
        name: str, compressor: str = "zstd", digester: str = "blake3", chunk_size: int = 0x1000
    ) -> Packed:
        key = (name, compressor, digester, chunk_size)
        if key not in _cache:
            path = tmp_path_factory.mktemp("format") / "layer.blob"
            res = pack_layer(fixture_tars[name], path, compressor, digester, chunk_size)
            blob = path.read_bytes()
            sections = walk_sections(blob)
            _, toc_off, toc_size, _ = sections[-1]
            entries = {}
            for off in range(toc_off, toc_off + toc_size, 128):
                flags, raw_name, digest, coff, csize, usize = TOC_ENTRY.unpack_from(blob, off)
                entries[raw_name.rstrip(b"\0").decode()] = (flags, digest, coff, csize, usize)
            flags, digest, coff, csize, usize = entries["image.boot"]
            raw = blob[coff : coff + csize]
            boot = zstandard.ZstdDecompressor().decompress(raw, max_output_size=usize) if flags == 2 else raw
            _cache[key] = Packed(blob, res, sections, entries, boot, compressor, digester, chunk_size)
        return _cache[key]

    return get


# ============================================================================ tar headers and sections
def test_tar_header_build_reproduces_the_vector_headers(vectors):
    data = (vectors / TOC_BLOB).read_bytes()
    names = []
    for name, _, size, hdr_off in walk_sections(data):
        names.append(name)
        header = data[hdr_off : hdr_off + 512]
        assert tar_header.build(name, size) == header, name
        assert nydus_tar_header(name, size) == header, name
    assert names == ["image.blob", "blob.meta", "image.boot", "rafs.blob.toc"]
    # The ToC digest rule on real bytes: sha256(entries + their tar header).
    _, off, size, hdr_off = walk_sections(data)[-1]
    rule = hashlib.sha256(data[off : off + size] + data[hdr_off : hdr_off + 512]).digest()
    assert rule.hex().startswith("4fdfbb36ef74a3c6")
    assert toc.toc_digest(data[off : off + size], data[hdr_off : hdr_off + 512]) == rule


@pytest.mark.parametrize("compressor", COMPRESSORS)
def test_section_order_headers_and_toc(packed, compressor):
    p = packed("every-type.tar", compressor)
    blob = p.blob
    assert [s[0] for s in p.sections] == [
        "image.blob",
        "blob.meta",
        "blob.digest",
        "image.boot",
        "rafs.blob.toc",
    ]
    assert p.sections[-1][3] + 512 == len(blob)  # no end-of-archive blocks
    for name, _, size, hdr_off in p.sections:
        assert blob[hdr_off : hdr_off + 512] == nydus_tar_header(name, size), name
    assert list(p.toc) == ["image.blob", "blob.meta", "blob.meta.header", "blob.digest", "image.boot"]
    # Each entry points at its section, with the spec's flags and the sha256 of its uncompressed bytes.
    _, data_off, data_size, data_hdr = p.section("image.blob")
    flags, digest, coff, csize, usize = p.toc["image.blob"]
    assert (flags, coff, csize) == (1, 0, data_size) and data_off == 0
    assert digest == hashlib.sha256(blob[:data_size] + blob[data_hdr : data_hdr + 512]).digest()
    _, meta_off, meta_size, _ = p.section("blob.meta")
    flags, digest, coff, csize, usize = p.toc["blob.meta"]
    assert coff == meta_off and csize == meta_size - BLOCK
    ci_comp = {1: "none", 2: "zstd", 4: "lz4_block"}[flags]
    assert ci_comp in ("none", compressor)
    array = decompress(blob[coff : coff + csize], ci_comp, usize)
    assert len(array) == usize and digest == hashlib.sha256(array).digest()
    if ci_comp != "none":
        assert csize < usize  # stored compressed only when that helps
    flags, digest, coff, csize, usize = p.toc["blob.meta.header"]
    assert (flags, coff, csize, usize) == (1, meta_off + meta_size - BLOCK, BLOCK, BLOCK)
    assert digest == hashlib.sha256(blob[coff : coff + BLOCK]).digest()
    for name in ("blob.digest", "image.boot"):
        _, off, size, _ = p.section(name)
        flags, digest, coff, csize, usize = p.toc[name]
        assert (coff, csize) == (off, size), name
    assert p.toc["blob.digest"][0] == 1 and p.toc["image.boot"][0] == 2
    assert p.toc["image.boot"][1] == hashlib.sha256(p.boot).digest()
    # ToC digest = sha256(entries + header), as the layer reader reports it.
    _, toc_off, toc_size, toc_hdr = p.sections[-1]
    assert toc_size == 128 * 5
    rule = hashlib.sha256(blob[toc_off : toc_hdr + 512]).digest()
    with open_layer_bytes(blob) as layer:
        assert layer.toc_digest == rule


class open_layer_bytes:
    """Open blob bytes with the layer reader (written to a temporary file)."""

    def __init__(self, blob: bytes) -> None:
        import tempfile

        self.tmp = tempfile.NamedTemporaryFile(suffix=".blob")  # noqa: SIM115
        self.tmp.write(blob)
        self.tmp.flush()

    def __enter__(self):
        self.layer = open_layer(self.tmp.name)
        return self.layer

    def __exit__(self, *exc):
        self.layer.close()
        self.tmp.close()


# ============================================================================ blob.meta, chunks, blob.digest
@pytest.mark.parametrize("digester", DIGESTERS)
@pytest.mark.parametrize("compressor", COMPRESSORS)
def test_blob_meta_chunks_and_digests(packed, compressor, digester):
    p = packed("every-type.tar", compressor, digester)
    blob = p.blob
    _, meta_off, meta_size, _ = p.section("blob.meta")
    hdr_off = meta_off + meta_size - BLOCK
    magic, features, ci_algo, entries, ci_off, ci_csize, ci_usize, zran_off, zran_size, zran_count = (
        META_HEADER.unpack_from(blob, hdr_off)
    )
    assert magic == 0xB10BB10B and struct.unpack_from("<I", blob, hdr_off + 4092)[0] == 0xB10BB10B
    assert features == FEATURES_INLINE
    assert blob[hdr_off + 60 : hdr_off + 4092] == bytes(4032)
    assert (zran_off, zran_size, zran_count) == (0, 0, 0)
    ci_comp = {0: "none", 1: "lz4_block", 3: "zstd"}[ci_algo]
    assert (ci_off, ci_csize, ci_usize) == (meta_off, meta_size - BLOCK, 16 * entries)
    assert entries == p.result.unique_chunks
    array = decompress(blob[ci_off : ci_off + ci_csize], ci_comp, ci_usize)
    _, dig_off, dig_size, _ = p.section("blob.digest")
    assert dig_size == 32 * entries
    hasher = blake3.blake3 if digester == "blake3" else hashlib.sha256
    expect_coff = expect_uoff = 0
    raw_chunks = compressed_chunks = 0
    for i in range(entries):
        coff, csize, uoff, usize = ci_v1(array, i)
        assert coff == expect_coff and uoff == expect_uoff, f"chunk {i} is not where the previous one ends"
        assert uoff % BLOCK == 0 and usize <= p.chunk_size
        expect_coff, expect_uoff = coff + csize, uoff + round_up(usize)
        data = (
            decompress(blob[coff : coff + csize], compressor, usize)
            if csize != usize
            else blob[coff : coff + csize]
        )
        assert len(data) == usize
        assert blob[dig_off + 32 * i : dig_off + 32 * i + 32] == hasher(data).digest(), f"blob.digest[{i}]"
        if csize == usize:
            raw_chunks += 1
            if compressor != "none":  # kept raw only because compression would not shrink it
                assert len(compress(data, compressor)) >= usize
        else:
            compressed_chunks += 1
            assert compressor != "none" and csize < usize
    assert expect_coff == p.section("image.blob")[2]  # chunk data fills image.blob exactly
    assert expect_uoff == p.toc["image.blob"][4]  # uncompressed size: the sum of 4K-aligned chunk sizes
    if compressor == "none":
        assert compressed_chunks == 0
    else:
        assert raw_chunks > 0 and compressed_chunks > 0  # incompressible and compressible files


def test_incompressible_data_is_stored_raw_and_zeros_compressed(packed):
    p = packed("every-type.tar", "zstd")
    with open_layer_bytes(p.blob) as layer:
        noise = layer.rafs.lookup("/data/two-and-a-half-m.bin")
        zeros = layer.rafs.lookup("/data/zeros.bin")
        assert all(
            not c.compressed and c.compressed_size == c.uncompressed_size for c in layer.rafs.chunks(noise)
        )
        chunks = layer.rafs.chunks(zeros)
        assert chunks and all(c.compressed and c.compressed_size < c.uncompressed_size for c in chunks)


@pytest.mark.parametrize(("chunk_size", "unique", "referenced"), [(0x1000, 4, 17), (0x100000, 3, 5)])
def test_dedup_stores_each_chunk_once(packed, chunk_size, unique, referenced):
    """copy-1..3 share A,B,C,tail; 'repeat' is A four times; 'tail' is the copies' last chunk."""
    p = packed("dedup.tar", "zstd", "blake3", chunk_size)
    assert (p.result.unique_chunks, p.result.chunks) == (unique, referenced)
    _, meta_off, meta_size, _ = p.section("blob.meta")
    assert META_HEADER.unpack_from(p.blob, meta_off + meta_size - BLOCK)[3] == unique
    with open_layer_bytes(p.blob) as layer:
        r = layer.rafs
        copies = [[c.ci_index for c in r.chunks(r.lookup(f"/copy-{i}"))] for i in (1, 2, 3)]
        assert copies[0] == copies[1] == copies[2]
        if chunk_size == 0x1000:
            assert [c.ci_index for c in r.chunks(r.lookup("/repeat"))] == [copies[0][0]] * 4
            assert [c.ci_index for c in r.chunks(r.lookup("/tail"))] == [copies[0][-1]]


def test_cache_file_layout(packed, tmp_path):
    """cache-file: each chunk's decompressed bytes at its uncompressed offset, zeros elsewhere."""
    p = packed("every-type.tar", "zstd")
    blob_path = tmp_path / "layer.blob"
    blob_path.write_bytes(p.blob)
    with open_layer(str(blob_path)) as layer:
        size = cache_file(layer, str(tmp_path / "api.cache"))
    cache = (tmp_path / "api.cache").read_bytes()
    assert size == len(cache) == p.toc["image.blob"][4]
    flags, _, coff, csize, usize = p.toc["blob.meta"]
    array = decompress(p.blob[coff : coff + csize], {1: "none", 2: "zstd", 4: "lz4_block"}[flags], usize)
    covered = 0
    for i in range(usize // 16):
        coff, csize, uoff, usize_i = ci_v1(array, i)
        raw = p.blob[coff : coff + csize]
        data = decompress(raw, "zstd", usize_i) if csize != usize_i else raw
        assert cache[uoff : uoff + usize_i] == data, f"chunk {i}"
        assert cache[uoff + usize_i : round_up(uoff + usize_i)] == bytes(round_up(usize_i) - usize_i)
        covered += round_up(usize_i)
    assert covered == len(cache)
    proc = run_cli("cache-file", blob_path, "-o", tmp_path / "cli.cache")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "cli.cache").read_bytes() == cache


# ============================================================================ the bootstrap
def super_flags(compressor: str, digester: str, xattrs: bool) -> int:
    flags = (
        SUPER_COMP[compressor]
        | SUPER_DIGEST[digester]
        | EXPLICIT_UID_GID
        | INLINED_CHUNK_DIGEST
        | ENCRYPTION_NONE
    )
    return flags | (HAS_XATTR if xattrs else 0)


def test_default_layer_superblock_flags(packed):
    p = packed("dedup.tar", "zstd", "blake3")
    assert struct.unpack_from("<Q", p.boot, 1152)[0] == 0x0100_0194


@pytest.mark.parametrize("digester", DIGESTERS)
@pytest.mark.parametrize("compressor", COMPRESSORS)
@pytest.mark.parametrize(
    ("name", "xattrs"), [("dedup.tar", False), ("xattrs.tar", True), ("every-type.tar", True)]
)
def test_bootstrap_superblocks_and_blob_table(packed, name, xattrs, compressor, digester):
    p = packed(name, compressor, digester)
    boot = p.boot
    assert len(boot) % BLOCK == 0
    magic, checksum, compat, blkszbits, extslots, root_nid = struct.unpack_from("<IIIBBH", boot, 1024)
    assert (magic, checksum, compat, blkszbits, extslots, root_nid) == (
        0xE0F5E1E2,
        0,
        0x4000_0000,
        12,
        0,
        128,
    )
    s_blocks, meta_blkaddr, xattr_blkaddr = struct.unpack_from("<III", boot, 1060)
    incompat, s_u, extra_devices, devt_slotoff = struct.unpack_from("<IHHH", boot, 1104)
    assert (incompat, s_u, extra_devices, devt_slotoff, xattr_blkaddr) == (0xC, 0, 1, 11, 0)
    (flags, bt_off, bt_size, chunk_size, ct_off, ct_size, pf_off, pf_size) = struct.unpack_from(
        "<QQIIQQQI", boot, 1152
    )
    assert flags == super_flags(compressor, digester, xattrs), hex(flags)
    assert (bt_size, chunk_size) == (256, p.chunk_size)
    assert bt_off % BLOCK == 0 and bt_off >= BLOCK and ct_off % BLOCK == 0
    assert meta_blkaddr * BLOCK >= bt_off + bt_size + pf_size
    # No prefetch table: nydus-image writes none when the snapshotter gives it no prefetch pattern.
    assert (pf_off, pf_size) == (0, 0)
    (
        blob_id,
        index,
        bchunk,
        count,
        algo,
        dalgo,
        features,
        csize,
        usize,
        toc_size,
        ci_algo,
        ci_off,
        ci_csize,
        ci_usize,
        toc_digest,
        meta_digest,
        blob_meta_size,
        iv,
        cipher,
    ) = BLOB_ENTRY.unpack_from(boot, bt_off)
    assert blob_id == b"x" * 64 and index == 0 and bchunk == p.chunk_size
    assert (algo, dalgo, features) == (ALGO[compressor], 0 if digester == "blake3" else 1, FEATURES_INLINE)
    assert csize == p.section("image.boot")[1]  # compressed_size: where image.boot data starts
    assert usize == p.toc["image.blob"][4] and count == p.result.unique_chunks
    _, meta_off, meta_size, _ = p.section("blob.meta")
    hdr = META_HEADER.unpack_from(p.blob, meta_off + meta_size - BLOCK)
    assert (ci_algo, count, ci_off, ci_csize, ci_usize) == hdr[2:7]  # ci_* agree with the blob.meta header
    assert (toc_size, toc_digest, meta_digest, blob_meta_size, iv, cipher) == (
        0,
        bytes(32),
        bytes(32),
        0,
        0,
        0,
    )
    # Device slot 0: the same blob, its uncompressed blocks, mapped after the bootstrap at 512 KiB.
    dev_id, dev_blocks, mapped = struct.unpack_from("<64sII", boot, 1408)
    assert (dev_id, dev_blocks) == (b"x" * 64, usize // BLOCK) and s_blocks == dev_blocks
    assert mapped == round_up(len(boot), 0x80000) // BLOCK
    # Chunk table: one record per stored chunk, sorted by digest, each agreeing with blob.meta.
    assert ct_size == 80 * count
    records = [CHUNK_RECORD.unpack_from(boot, ct_off + 80 * i) for i in range(count)]
    assert [r[0] for r in records] == sorted(r[0] for r in records)
    _, dig_off, _, _ = p.section("blob.digest")
    array = decompress(
        p.blob[ci_off : ci_off + ci_csize], {0: "none", 1: "lz4_block", 3: "zstd"}[ci_algo], ci_usize
    )
    for digest, bidx, cflags, rcsize, rusize, rcoff, ruoff, _file_off, ci_index, _crc in records:
        assert bidx == 0
        assert (rcoff, rcsize, ruoff, rusize) == ci_v1(array, ci_index)
        assert bool(cflags & 1) == (rcsize != rusize)
        assert p.blob[dig_off + 32 * ci_index : dig_off + 32 * ci_index + 32] == digest


def test_layer_without_file_data(tmp_path):
    """Only directories, empty files, links and devices: image.boot + ToC, and an empty blob table."""
    src = tmp_path / "no-data.tar"
    with tarfile.open(src, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind in [
            ("etc", tarfile.DIRTYPE),
            ("etc/empty", tarfile.REGTYPE),
            (".wh.gone", tarfile.REGTYPE),
            ("etc/link", tarfile.SYMTYPE),
            ("null", tarfile.CHRTYPE),
            ("etc/hard", tarfile.LNKTYPE),
        ]:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = {tarfile.SYMTYPE: "empty", tarfile.LNKTYPE: "etc/empty"}.get(kind, "")
            info.devmajor, info.devminor = (1, 3) if kind == tarfile.CHRTYPE else (0, 0)
            tf.addfile(info)
    res = pack_layer(src, tmp_path / "no-data.blob")
    blob = (tmp_path / "no-data.blob").read_bytes()
    sections = walk_sections(blob)
    assert [s[0] for s in sections] == ["image.boot", "rafs.blob.toc"]
    _, toc_off, toc_size, _ = sections[-1]
    assert toc_size == 128 and blob[toc_off + 8 : toc_off + 24].rstrip(b"\0") == b"image.boot"
    assert (res.entries, res.unique_chunks) == (6, 0)
    with open_layer_bytes(blob) as layer:
        boot = layer.bootstrap_bytes()
    assert struct.unpack_from("<H", boot, 1110)[0] == 0  # s_extra_devices
    assert struct.unpack_from("<I", boot, 1060)[0] == 0  # s_blocks
    flags, _, bt_size, _, _, ct_size = struct.unpack_from("<QQIIQQ", boot, 1152)
    assert (bt_size, ct_size) == (0, 0)
    assert flags == super_flags("zstd", "blake3", False)


def test_empty_tar_vector(vectors, tmp_path):
    res = pack_layer(vectors / "nydus" / "tar" / "empty.tar", tmp_path / "empty.blob")
    blob = (tmp_path / "empty.blob").read_bytes()
    assert [s[0] for s in walk_sections(blob)] == ["image.boot", "rafs.blob.toc"]
    assert (res.entries, res.files, res.chunks) == (0, 0, 0)


def test_separate_bootstrap_blob_table(tmp_path, fixture_tars):
    blob, boot_path = tmp_path / "layer.blob", tmp_path / "layer.boot"
    res = pack_layer(fixture_tars["dedup.tar"], blob, bootstrap=str(boot_path))
    boot = boot_path.read_bytes()
    bt_off = struct.unpack_from("<Q", boot, 1160)[0]
    entry = BLOB_ENTRY.unpack_from(boot, bt_off)
    assert entry[0] == res.digest.encode()  # named by the layer digest
    assert entry[6] == FEATURES_SEPARATE
    data = blob.read_bytes()
    boot_section = next(s for s in walk_sections(data) if s[0] == "image.boot")
    assert entry[7] == boot_section[1]
    assert struct.unpack_from("<64s", boot, 1408)[0] == res.digest.encode()


def test_worker_batch_reads(tmp_path, monkeypatch):
    """A worker batch of chunks in a plain tar file is read in one pread over its span; items out of order,
    given as bytes, or past the end of the file are read (or refused) one by one."""
    from nydus_inspect import pack
    from nydus_inspect.errors import UsageError
    from nydus_inspect.pack import _read_batch

    path = tmp_path / "data"
    path.write_bytes(bytes(range(256)) * 4)
    fd = os.open(path, os.O_RDONLY)
    try:
        span = [bytes(b) for b in _read_batch([(fd, 10, 5), (fd, 512, 3), (fd, 20, 0)])]
        assert span == [bytes(range(10, 15)), bytes([0, 1, 2]), b""]
        mixed = [bytes(b) for b in _read_batch([(fd, 600, 2), b"given", (fd, 100, 1)])]
        assert mixed == [bytes([600 % 256, 601 % 256]), b"given", bytes([100])]
        # Far apart (a long PAX record between two small files, say): read one by one, not the gap.
        reads = []
        real = os.pread
        monkeypatch.setattr(os, "pread", lambda f, n, off: reads.append(n) or real(f, n, off))
        monkeypatch.setattr(pack, "SPAN_SLACK", 100)
        assert [bytes(b) for b in _read_batch([(fd, 0, 2), (fd, 900, 2)])] == [
            bytes([0, 1]),
            bytes([900 % 256, 901 % 256]),
        ]
        assert reads == [2, 2]
        for items in ([(fd, 1000, 100)], [(fd, 0, 4), (fd, 1020, 10)]):
            with pytest.raises(UsageError, match="ends inside file data"):
                _read_batch(items)
    finally:
        os.close(fd)


@pytest.mark.parametrize("name", ["every-type.tar", "xattrs.tar", "dedup.tar", "longnames.tar"])
def test_bootstrap_laid_out_ahead_equals_built_at_once(fixture_tars, tmp_path, monkeypatch, name):
    """pack lays the bootstrap out while its workers finish (plan_bootstrap), then streams it with its chunk
    table taken from its chunk columns; the bootstrap in the layer is the one build_bootstrap writes from
    nothing out of the nodes' chunks, and a plan made for other settings is not used."""
    from nydus_inspect import builder, pack

    seen: list = []
    real = pack.write_bootstrap

    def spy(write, root, blobs, **kw):
        seen.append((root, blobs, dict(kw)))
        return real(write, root, blobs, **kw)

    monkeypatch.setattr(pack, "write_bootstrap", spy)
    pack_layer(fixture_tars[name], tmp_path / "l.blob", chunk_size=0x10000)
    root, blobs, kw = seen[0]
    assert kw.pop("plan") is not None and kw.pop("table") is not None
    with open_layer(str(tmp_path / "l.blob")) as layer:
        written = bytes(layer.entry("image.boot"))
    assert written == builder.build_bootstrap(root, blobs, **kw)
    other = builder.plan_bootstrap(root, len(blobs), chunk_size=2 * kw["chunk_size"])
    assert builder.build_bootstrap(root, blobs, plan=other, **kw) == written


def _walk(root):
    stack = [(b"/", root)]
    while stack:
        path, node = stack.pop()
        yield path, node
        stack.extend((path + b"/" + k, v) for k, v in (node.children or {}).items())
