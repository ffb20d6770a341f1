"""Round trips and validation of every sans-I/O codec in nydus_inspect.formats, codecs and digests.

Each structure is built, parsed back and compared; hypothesis drives the bit-packed ones (chunk-info v1/v2,
chunk indexes, directory blocks, xattrs). Bad input must raise FormatError naming structure, field and
offset. Tests marked ``vectors`` also check the codecs against the real nydus artifacts.
"""

from __future__ import annotations

import hashlib
import struct

import pytest
from conftest import DATA_BLOB, TOC_BLOB
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nydus_inspect import codecs, digests
from nydus_inspect.codecs import Compressor
from nydus_inspect.errors import FormatError, NydusInspectError, UsageError, VerifyError
from nydus_inspect.formats import blob_meta, rafs_v6, tar_header, toc
from nydus_inspect.formats._struct import Layout, cstr, flag_names, need, round_up
from nydus_inspect.formats.blob_meta import BlobMetaHeader, ChunkInfo, ChunkInfoArray
from nydus_inspect.formats.rafs_v6 import (
    BlobTableEntry,
    ChunkIndex,
    ChunkTableEntry,
    DeviceSlot,
    Dirent,
    ExtSuperBlock,
    Inode,
    SuperBlock,
)

PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def raises_format(fn, *args, structure=None, field=None, offset=None, **kwargs) -> FormatError:
    """Call ``fn`` expecting a FormatError; check the parts its message must name."""
    with pytest.raises(FormatError) as info:
        fn(*args, **kwargs)
    err = info.value
    text = str(err)
    assert "\n" not in text
    if structure is not None:
        assert err.structure == structure, text
        assert text.startswith(structure) or err.where, text
    if field is not None:
        assert err.field == field, text
        assert f"field {field}" in text, text
    if offset is not None:
        assert err.offset == offset, text
        assert f"at offset {offset}" in text, text
    return err


# ============================================================================ errors
class TestErrors:
    def test_message_names_structure_field_offset_value(self):
        err = FormatError("toc entry", "unknown compressor bits", field="flags", offset=9010, value=0x7)
        assert str(err) == "toc entry field flags at offset 9010: unknown compressor bits (found 0x7)"
        assert err.exit_code == 2

    def test_bytes_value_is_shown_truncated(self):
        err = FormatError("x", "bad", value=b"A" * 100)
        assert str(err).endswith(f"(found {b'A' * 32!r})")

    def test_located_prefixes_path_once(self):
        err = FormatError("blob.meta", "bad", offset=3).located("/a").located("/b")
        assert str(err) == "/a: blob.meta at offset 3: bad"

    def test_hierarchy_and_exit_codes(self):
        assert issubclass(FormatError, NydusInspectError)
        assert issubclass(UsageError, NydusInspectError)
        assert VerifyError("x").exit_code == 1
        assert UsageError("x").exit_code == 2


# ============================================================================ _struct helpers
class TestStructHelpers:
    def test_layout_offsets_and_size(self):
        lay = Layout("demo", [("a", "I"), ("_pad", "4x"), ("b", "Q"), ("c", "16s")])
        assert lay.size == 32
        assert lay.offsets == {"a": 0, "_pad": 4, "b": 8, "c": 16}
        assert lay.names == ["a", "b", "c"]
        raw = lay.pack({"a": 1, "b": 2, "c": b"name"})
        assert lay.unpack(raw) == {"a": 1, "b": 2, "c": b"name" + bytes(12)}
        err = lay.error("b", 100, "bad b", 5)
        assert (err.structure, err.field, err.offset, err.value) == ("demo", "b", 108, 5)

    def test_layout_unpack_truncated_is_format_error(self):
        lay = Layout("demo", [("a", "Q")])
        err = raises_format(lay.unpack, b"\0" * 7, structure="demo", offset=0)
        assert "needs 8 bytes" in str(err)
        raises_format(lay.unpack, b"\0" * 16, 9, structure="demo", offset=9)

    def test_need_cstr_round_up_flag_names(self):
        need(b"abc", 0, 3, "s")
        with pytest.raises(FormatError):
            need(b"abc", 1, 3, "s")
        with pytest.raises(FormatError):
            need(b"abc", -1, 1, "s")
        assert cstr(b"ab\0cd") == b"ab"
        assert cstr(b"abcd") == b"abcd"
        assert round_up(4097, 4096) == 8192 and round_up(4096, 4096) == 4096 and round_up(0, 8) == 0
        assert flag_names(0x1 | 0x4 | 0x100, {0x1: "one", 0x4: "four"}) == ["one", "four", "0x100"]


# ============================================================================ codecs
class TestCodecs:
    @pytest.mark.parametrize("comp", [Compressor.NONE, Compressor.ZSTD, Compressor.LZ4_BLOCK])
    @PROPS
    @given(data=st.binary(max_size=20000))
    def test_compress_decompress_round_trip(self, comp, data):
        packed = codecs.compress(data, comp)
        assert codecs.decompress(packed, comp, len(data)) == data

    @pytest.mark.parametrize("comp", [Compressor.ZSTD, Compressor.LZ4_BLOCK])
    def test_compress_is_the_nydus_form(self, comp):
        data = b"nydus " * 1000
        packed = codecs.compress(data, comp)
        if comp is Compressor.ZSTD:
            assert packed[:4] == b"\x28\xb5\x2f\xfd"  # a standard zstd frame
        else:
            import lz4.block

            # A raw LZ4 block: no size prefix, so it needs the size given to decode.
            assert lz4.block.decompress(packed, uncompressed_size=len(data)) == data
        assert len(packed) < len(data)

    @pytest.mark.parametrize("comp", [Compressor.ZSTD, Compressor.LZ4_BLOCK])
    def test_compress_if_smaller(self, comp):
        text = b"a" * 4096
        stored, compressed = codecs.compress_if_smaller(text, comp)
        assert compressed and len(stored) < 4096
        assert codecs.decompress(stored, comp, 4096) == text
        noise = b"".join(hashlib.sha512(b"%d" % i).digest() for i in range(8))  # incompressible
        stored, compressed = codecs.compress_if_smaller(noise, comp)
        assert (stored, compressed) == (noise, False)
        assert codecs.compress_if_smaller(b"", comp) == (b"", False)
        assert codecs.compress_if_smaller(text, Compressor.NONE) == (text, False)

    @pytest.mark.parametrize("comp", [Compressor.ZSTD, Compressor.LZ4_BLOCK, Compressor.NONE])
    def test_compress_many_if_smaller_is_compress_if_smaller_of_each(self, comp):
        noise = b"".join(hashlib.sha512(b"%d" % i).digest() for i in range(8))
        datas = [b"a" * 4096, noise, b"", b"xy" * 70000, memoryview(b"0123456789" * 300)[5:2000], noise[:1]]
        want = [codecs.compress_if_smaller(bytes(d), comp) for d in datas]
        assert codecs.compress_many_if_smaller(datas, comp) == want
        assert codecs.compress_many_if_smaller(datas[:1], comp) == want[:1]
        assert all(type(stored) is bytes for stored, _ in codecs.compress_many_if_smaller(datas, comp))

    @pytest.mark.parametrize(
        ("comp", "claim"),
        [(Compressor.ZSTD, 0)]  # lz4_block: a zero-size claim decodes nothing (no chunk or entry is empty)
        + [(c, n) for c in (Compressor.ZSTD, Compressor.LZ4_BLOCK) for n in (1, 99, 101, 4096, 1 << 20)],
    )
    def test_wrong_size_claim_is_format_error(self, comp, claim):
        data = bytes(range(100))
        packed = codecs.compress(data, comp)
        err = raises_format(
            codecs.decompress, packed, comp, claim, "image.boot", 7997, structure="image.boot", offset=7997
        )
        assert comp.value in str(err)

    @pytest.mark.parametrize("comp", [Compressor.ZSTD, Compressor.LZ4_BLOCK, Compressor.NONE])
    @pytest.mark.parametrize("claim", [-1, codecs.MAX_UNCOMPRESSED + 1, 1 << 62])
    def test_size_claim_over_limit_refused_before_decoding(self, comp, claim):
        err = raises_format(
            codecs.decompress, b"x", comp, claim, "blob.meta", 12, structure="blob.meta", offset=12
        )
        assert "limit" in str(err)

    def test_none_with_wrong_size(self):
        raises_format(codecs.decompress, b"abc", Compressor.NONE, 4, "entry", 0, structure="entry")

    @pytest.mark.parametrize("comp", [Compressor.ZSTD, Compressor.LZ4_BLOCK])
    @pytest.mark.parametrize(
        "garbage", [b"\x00", b"junk", b"\x28\xb5\x2f\xfd" + b"\xff" * 20, bytes(range(256))]
    )
    def test_garbage_is_format_error(self, comp, garbage):
        err = raises_format(codecs.decompress, garbage, comp, 1000, "chunk 3 of blob 0", 42, offset=42)
        assert err.structure == "chunk 3 of blob 0"

    def test_zstd_concatenated_frames(self):
        frame = codecs.compress(b"z" * 100, Compressor.ZSTD)
        assert codecs.decompress(frame + frame, Compressor.ZSTD, 200) == b"z" * 200
        raises_format(codecs.decompress, frame + frame, Compressor.ZSTD, 150, "x")

    @pytest.mark.parametrize("trailer", [b"junk", b"\0" * 64, "frame"])
    def test_zstd_bytes_after_the_frame_are_refused(self, trailer):
        frame = codecs.compress(b"z" * 100, Compressor.ZSTD)
        raises_format(
            codecs.decompress, frame + (frame if trailer == "frame" else trailer), Compressor.ZSTD, 100, "x"
        )

    def test_zstd_frame_without_content_size(self):
        import zstandard

        frame = zstandard.ZstdCompressor(write_content_size=False).compress(b"q" * 5000)
        assert codecs.decompress(frame, Compressor.ZSTD, 5000) == b"q" * 5000

    def test_gzip_is_not_readable(self):
        err = raises_format(codecs.decompress, b"abc", Compressor.GZIP, 3, "x")
        assert "gzip" in str(err)

    def test_numberings(self):
        assert [c.algo for c in Compressor] == [0, 1, 2, 3]  # none, lz4_block, gzip, zstd
        assert (
            Compressor.NONE.toc_flag == 1
            and Compressor.ZSTD.toc_flag == 2
            and Compressor.LZ4_BLOCK.toc_flag == 4
        )
        assert Compressor.NONE.super_flag == 0x1 and Compressor.LZ4_BLOCK.super_flag == 0x2
        assert Compressor.GZIP.super_flag == 0x40 and Compressor.ZSTD.super_flag == 0x80
        for c in Compressor:
            assert Compressor.from_algo(c.algo) is c
            assert Compressor.parse(c.value) is c
        for c in (Compressor.NONE, Compressor.ZSTD, Compressor.LZ4_BLOCK):
            assert Compressor.from_toc_flag(c.toc_flag) is c
        with pytest.raises(ValueError):
            Compressor.from_algo(4)
        with pytest.raises(ValueError):
            Compressor.from_toc_flag(3)
        with pytest.raises(ValueError, match="choose none, zstd or lz4_block"):
            Compressor.parse("brotli")


class TestDigests:
    def test_digesters(self):
        import blake3

        assert digests.Digester.BLAKE3.digest(b"abc") == blake3.blake3(b"abc").digest()
        assert digests.Digester.SHA256.digest(b"abc") == hashlib.sha256(b"abc").digest()
        assert digests.sha256(b"") == hashlib.sha256(b"").digest()
        assert (digests.Digester.BLAKE3.algo, digests.Digester.SHA256.algo) == (0, 1)
        assert (digests.Digester.BLAKE3.super_flag, digests.Digester.SHA256.super_flag) == (0x4, 0x8)
        assert digests.Digester.from_algo(1) is digests.Digester.SHA256
        with pytest.raises(ValueError):
            digests.Digester.from_algo(2)
        with pytest.raises(ValueError):
            digests.Digester.parse("md5")

    def test_crc32c_check_value(self):
        assert digests.crc32c(b"123456789") == 0xE3069283


# ============================================================================ tar headers
SECTION_NAMES = ["image.blob", "blob.meta", "blob.digest", "image.boot", "rafs.blob.toc"]


class TestTarHeader:
    @pytest.mark.parametrize("name", SECTION_NAMES)
    @pytest.mark.parametrize("size", [0, 1, 512, 4144, 20480, 0o77777777777, (8 << 30) - 1])
    def test_build_parse_round_trip(self, name, size):
        hdr = tar_header.build(name, size)
        assert len(hdr) == 512
        got = tar_header.parse(hdr, 1234)
        assert got == tar_header.TarHeader(name=name, size=size, typeflag=b"0", gnu=True, offset=1234)

    def test_exact_bytes(self):
        hdr = tar_header.build("rafs.blob.toc", 512)
        assert hdr[0:100] == b"rafs.blob.toc".ljust(100, b"\0")
        assert hdr[100:124] == bytes(24)  # mode, uid, gid: all zero bytes, not octal text
        assert hdr[124:136] == b"00000001000\0"
        assert hdr[136:148] == b"00000000000\0"
        assert hdr[148:155].isdigit() and hdr[155:156] == b"\0"  # 7 octal digits then NUL
        assert int(hdr[148:155], 8) == sum(hdr[:148]) + 8 * 0x20 + sum(hdr[156:])
        assert hdr[156:157] == b"0"
        assert hdr[157:257] == bytes(100)
        assert hdr[257:265] == b"ustar  \0"
        assert hdr[265:] == bytes(247)

    def test_gnu_base256_size(self):
        size = (8 << 30) + 12345
        hdr = tar_header.build("image.blob", size)
        assert hdr[124] == 0x80
        assert tar_header.parse(hdr).size == size

    @PROPS
    @given(
        name=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=100),
        size=st.integers(0, (1 << 40)),
    )
    def test_round_trip_property(self, name, size):
        assert tar_header.parse(tar_header.build(name, size)) == tar_header.TarHeader(
            name, size, b"0", True, 0
        )

    def test_name_too_long(self):
        with pytest.raises(ValueError):
            tar_header.build("x" * 101, 0)

    def test_parses_posix_header(self):
        import io
        import tarfile

        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
            info = tarfile.TarInfo("image/image.boot")
            info.size = 3
            tf.addfile(info, io.BytesIO(b"abc"))
        got = tar_header.parse(buf.getvalue()[:512])
        assert (got.name, got.size, got.typeflag, got.gnu) == ("image/image.boot", 3, b"0", False)

    def test_bad_checksum_names_field_and_offset(self):
        hdr = bytearray(tar_header.build("image.boot", 501))
        hdr[0] ^= 1
        err = raises_format(
            tar_header.parse, bytes(hdr), 8498, structure="tar header", field="chksum", offset=8498 + 148
        )
        assert "checksum" in str(err)

    def test_truncated_and_zero_blocks(self):
        raises_format(tar_header.parse, b"\0" * 100, 7, structure="tar header", offset=7)
        err = raises_format(tar_header.parse, b"\0" * 512, 1024, structure="tar header", offset=1024)
        assert "all-zero" in str(err)

    def test_non_octal_size(self):
        hdr = bytearray(tar_header.build("image.boot", 501))
        hdr[124:136] = b"0000000x501\0"
        hdr[148:156] = b" " * 8
        hdr[148:156] = b"%07o\0" % (sum(hdr))
        raises_format(tar_header.parse, bytes(hdr), 0, structure="tar header", field="size", offset=124)

    @pytest.mark.vectors
    @pytest.mark.parametrize("rel", [TOC_BLOB, DATA_BLOB])
    def test_reproduces_every_header_of_real_blobs_byte_for_byte(self, vectors, rel):
        import nydus_inspect

        raw = (vectors / rel).read_bytes()
        with nydus_inspect.open_layer(str(vectors / rel)) as layer:
            sections = layer.sections
        assert [s.name for s in sections][-1] == "rafs.blob.toc" and len(sections) == 4
        for sec in sections:
            block = raw[sec.header_offset : sec.header_offset + 512]
            assert block == tar_header.build(sec.name, sec.size), sec
            assert tar_header.parse(block, sec.header_offset).size == sec.size


# ============================================================================ ToC
def _entry(**kw) -> toc.TocEntry:
    base = dict(
        name="image.boot",
        compressor=Compressor.ZSTD,
        uncompressed_digest=hashlib.sha256(b"boot").digest(),
        compressed_offset=7997,
        compressed_size=501,
        uncompressed_size=20480,
    )
    base.update(kw)
    base.setdefault("flags", base["compressor"].toc_flag)
    return toc.TocEntry(**base)


toc_entries = st.builds(
    lambda name, comp, digest, off, csize, usize: _entry(
        name=name,
        compressor=comp,
        uncompressed_digest=digest,
        compressed_offset=off,
        compressed_size=csize,
        uncompressed_size=usize,
    ),
    name=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=16),
    comp=st.sampled_from([Compressor.NONE, Compressor.ZSTD, Compressor.LZ4_BLOCK]),
    digest=st.binary(min_size=32, max_size=32),
    off=st.integers(0, (1 << 64) - 1),
    csize=st.integers(0, (1 << 64) - 1),
    usize=st.integers(0, (1 << 64) - 1),
)


class TestToc:
    def test_entry_layout(self):
        ent = _entry()
        raw = ent.build()
        assert len(raw) == toc.ENTRY_SIZE == 128
        assert struct.unpack_from("<I", raw, 0)[0] == 2
        assert raw[4:8] == bytes(4)
        assert raw[8:24] == b"image.boot".ljust(16, b"\0")
        assert raw[24:56] == ent.uncompressed_digest
        assert struct.unpack_from("<QQQ", raw, 56) == (7997, 501, 20480)
        assert raw[80:] == bytes(48)
        assert toc.parse_entry(raw) == ent

    @PROPS
    @given(entries=st.lists(toc_entries, max_size=30))
    def test_round_trip_property(self, entries):
        data = toc.build(entries)
        assert len(data) == 128 * len(entries)
        assert toc.parse(data, 100) == entries

    def test_sixteen_byte_name_without_nul(self):
        ent = _entry(name="blob.meta.header", compressor=Compressor.NONE)
        raw = ent.build()
        assert raw[8:24] == b"blob.meta.header"
        assert toc.parse_entry(raw).name == "blob.meta.header"

    @pytest.mark.parametrize("garbage", [b"\xff\xff\x00\x00", b"0000", b"\xde\xad\xbe\xef"])
    def test_garbage_in_reserved_tail_is_ignored(self, garbage):
        raw = bytearray(_entry().build())
        raw[124:128] = garbage
        raw[4:8] = b"\x01\x02\x03\x04"
        raw[80:124] = b"\xee" * 44
        assert toc.parse_entry(bytes(raw)) == _entry()

    def test_flag_bits_above_the_compressor_mask_are_kept_but_ignored(self):
        raw = bytearray(_entry().build())
        raw[0:4] = struct.pack("<I", 0x12)
        ent = toc.parse_entry(bytes(raw))
        assert ent.compressor is Compressor.ZSTD and ent.flags == 0x12

    @pytest.mark.parametrize("flags", [0, 3, 8, 0xF])
    def test_unknown_compressor_flags(self, flags):
        raw = bytearray(_entry().build()) * 3
        struct.pack_into("<I", raw, 256, flags)
        err = raises_format(
            toc.parse, bytes(raw), 9010, structure="toc entry", field="flags", offset=9010 + 256
        )
        assert err.value == flags

    def test_non_ascii_name(self):
        raw = bytearray(_entry().build())
        raw[8:10] = b"\xc3\xa9"
        raises_format(toc.parse_entry, bytes(raw), 0, 500, structure="toc entry", field="name", offset=508)

    def test_size_not_multiple_of_128(self):
        err = raises_format(toc.parse, b"\0" * 200, 64, structure="rafs.blob.toc", offset=64)
        assert err.value == 200

    def test_larger_than_one_mib(self):
        data = _entry().build() * (toc.MAX_TOC_SIZE // 128 + 1)
        raises_format(toc.parse, data, structure="rafs.blob.toc")

    def test_digest_is_sha256_of_entries_and_header(self):
        entries = [_entry(), _entry(name="blob.meta", compressor=Compressor.NONE)]
        data, header = toc.build_section(entries)
        assert header == tar_header.build("rafs.blob.toc", 256)
        assert toc.toc_digest(data, header) == hashlib.sha256(data + header).digest()

    def test_to_json(self):
        j = _entry().to_json()
        assert j == {
            "name": "image.boot",
            "compressor": "zstd",
            "compressed_offset": 7997,
            "compressed_size": 501,
            "uncompressed_size": 20480,
            "sha256": hashlib.sha256(b"boot").hexdigest(),
        }

    @pytest.mark.vectors
    def test_real_toc_rebuilds_to_the_same_bytes_except_the_garbage(self, vectors):
        raw = (vectors / TOC_BLOB).read_bytes()
        hdr = tar_header.parse(raw[-512:], len(raw) - 512)
        data = raw[-512 - hdr.size : -512]
        entries = toc.parse(data, len(raw) - 512 - hdr.size)
        rebuilt = toc.build(entries)
        for i in range(len(entries)):
            a, b = data[i * 128 : (i + 1) * 128], rebuilt[i * 128 : (i + 1) * 128]
            assert a[:124] == b[:124]
        assert toc.toc_digest(data, raw[-512:]).hex().startswith("4fdfbb36ef74a3c6")


# ============================================================================ blob.meta header
header_fields = st.builds(
    BlobMetaHeader,
    s_features=st.integers(0, 0xFFFF_FFFF).map(lambda f: f & ~(0xFFFF & ~blob_meta.KNOWN_LOW_FEATURES)),
    s_ci_compressor=st.integers(0, 3),
    s_ci_entries=st.integers(0, 1 << 24),
    s_ci_offset=st.integers(0, (1 << 64) - 1),
    s_ci_compressed_size=st.integers(0, (1 << 64) - 1),
    s_ci_zran_offset=st.integers(0, (1 << 64) - 1),
    s_ci_zran_size=st.integers(0, (1 << 64) - 1),
    s_ci_zran_count=st.integers(0, (1 << 32) - 1),
)


class TestBlobMetaHeader:
    def test_layout(self):
        hdr = BlobMetaHeader(
            s_features=0x7000_0021,
            s_ci_entries=2,
            s_ci_offset=8314,
            s_ci_compressed_size=32,
            s_ci_uncompressed_size=32,
        )
        raw = hdr.build()
        assert len(raw) == blob_meta.HEADER_SIZE == 4096
        assert struct.unpack_from("<IIII", raw, 0) == (0xB10BB10B, 0x7000_0021, 0, 2)
        assert struct.unpack_from("<QQQ", raw, 16) == (8314, 32, 32)
        assert raw[60:4092] == bytes(4032)
        assert struct.unpack_from("<I", raw, 4092)[0] == 0xB10BB10B
        assert BlobMetaHeader.parse(raw) == hdr

    @PROPS
    @given(hdr=header_fields, extra=st.integers(0, 1 << 20))
    def test_round_trip_property(self, hdr, extra):
        rec = hdr.record_size
        hdr.s_ci_uncompressed_size = rec * hdr.s_ci_entries + (extra if rec == 24 else 0)
        assert BlobMetaHeader.parse(hdr.build(), 0, 3389) == hdr

    def test_record_size_and_json(self):
        assert BlobMetaHeader().record_size == 16
        assert BlobMetaHeader(s_features=blob_meta.CHUNK_INFO_V2).record_size == 24
        j = BlobMetaHeader(s_features=0x21, s_ci_compressor=3).to_json()
        assert j["features_names"] == ["aligned", "inlined_chunk_digest"]
        assert j["ci_compressor"] == "zstd" and j["magic"] == "0xb10bb10b"
        assert blob_meta.DEFAULT_LAYER_FEATURES == 0x7000_0023
        assert blob_meta.cache_file_size(663552) == 667648

    @pytest.mark.parametrize(
        ("field", "rel", "value", "text"),
        [
            ("s_magic", 0, 0xDEADBEEF, "magic"),
            ("s_magic2", 4092, 0, "magic"),
            ("s_ci_compressor", 8, 4, "compressor"),
            ("s_ci_entries", 12, (1 << 24) + 1, "chunks"),
            ("s_features", 4, 0x1000, "feature"),
        ],
    )
    def test_bad_fields(self, field, rel, value, text):
        raw = bytearray(BlobMetaHeader().build())
        struct.pack_into("<I", raw, rel, value)
        err = raises_format(
            BlobMetaHeader.parse,
            bytes(raw),
            0,
            3389,
            structure="blob.meta.header",
            field=field,
            offset=3389 + rel,
        )
        assert text in str(err)
        assert err.value == value

    @pytest.mark.parametrize(
        ("features", "entries", "usize"), [(0, 3, 47), (0, 3, 64), (blob_meta.CHUNK_INFO_V2, 3, 71)]
    )
    def test_ci_size_must_fit_the_records(self, features, entries, usize):
        raw = BlobMetaHeader(s_features=features, s_ci_entries=entries, s_ci_uncompressed_size=usize).build()
        raises_format(BlobMetaHeader.parse, raw, 0, 100, field="s_ci_uncompressed_size", offset=132)

    def test_truncated(self):
        raises_format(BlobMetaHeader.parse, bytes(4095), structure="blob.meta.header", offset=0)

    @pytest.mark.vectors
    def test_real_headers(self, vectors):
        raw = (vectors / TOC_BLOB).read_bytes()
        hdr = BlobMetaHeader.parse(raw, 3389, 0)
        assert (hdr.s_features, hdr.s_ci_compressor, hdr.s_ci_entries, hdr.s_ci_offset) == (0x1, 0, 3, 3341)
        assert hdr.build() == raw[3389 : 3389 + 4096]
        raw = (vectors / DATA_BLOB).read_bytes()
        hdr = BlobMetaHeader.parse(raw, 8346, 0)
        assert (hdr.s_features, hdr.s_ci_entries, hdr.s_ci_offset, hdr.s_ci_compressed_size) == (
            0x7000_0021,
            2,
            8314,
            32,
        )
        assert hdr.build() == raw[8346 : 8346 + 4096]


# ============================================================================ chunk infos
def v1_infos():
    return st.builds(
        lambda i, coff, csize, uoff, usize: ChunkInfo(
            index=i,
            compressed_offset=coff,
            compressed_size=csize,
            uncompressed_offset=uoff << 12,
            uncompressed_size=usize,
            compressed=csize != usize,
            flags=blob_meta.CI_COMPRESSED if csize != usize else 0,
        ),
        i=st.integers(0, 1000),
        coff=st.integers(0, (1 << 40) - 1),
        csize=st.integers(1, 1 << 24),
        uoff=st.integers(0, (1 << 32) - 1),
        usize=st.integers(1, 1 << 24),
    )


def v2_infos():
    return st.builds(
        lambda i, coff, csize, uoff, usize, flags, data: ChunkInfo(
            index=i,
            compressed_offset=coff,
            compressed_size=csize,
            uncompressed_offset=uoff << 12,
            uncompressed_size=usize,
            compressed=bool(flags & 1),
            flags=flags,
            data=data,
        ),
        i=st.integers(0, 1000),
        coff=st.integers(0, (1 << 40) - 1),
        csize=st.integers(0, (1 << 24) - 1),
        uoff=st.integers(0, (1 << 32) - 1),
        usize=st.integers(1, 1 << 24),
        flags=st.integers(0, blob_meta.CI_KNOWN),
        data=st.integers(0, (1 << 64) - 1),
    )


class TestChunkInfo:
    def test_v1_bit_layout(self):
        ci = ChunkInfo(
            0,
            compressed_offset=0x12_3456_789A,
            compressed_size=0x123456,
            uncompressed_offset=0xABC_DEF0_1000,
            uncompressed_size=0xFEDCBA,
            compressed=True,
            flags=1,
        )
        uncomp, comp = struct.unpack("<QQ", blob_meta.encode_v1(ci))
        us, cs = 0xFEDCBA - 1, 0x123456 - 1
        assert uncomp & 0xFF == 0
        assert (uncomp >> 8) & 0xF == us >> 20
        assert uncomp & 0xFFF_FFFF_F000 == 0xABC_DEF0_1000
        assert uncomp >> 44 == us & 0xFFFFF
        assert comp & 0xFF_FFFF_FFFF == 0x12_3456_789A
        assert (comp >> 40) & 0xF == cs >> 20
        assert comp >> 44 == cs & 0xFFFFF

    def test_v2_bit_layout(self):
        ci = ChunkInfo(
            0,
            compressed_offset=0x12_3456_789A,
            compressed_size=0xABCDEF,
            uncompressed_offset=0x1234_5000,
            uncompressed_size=0x100000,
            compressed=True,
            flags=0x11,
            data=0xE3069283,
        )
        uncomp, comp, data = struct.unpack("<QQQ", blob_meta.encode_v2(ci))
        assert uncomp & 0xFFFFFFFF == 0x1234_5000 >> 12
        assert (uncomp >> 32) & 0xFFFFFF == 0xFFFFF
        assert uncomp >> 56 == 0x11
        assert comp == 0x12_3456_789A | (0xABCDEF << 40)
        assert data == 0xE3069283
        assert ci.crc32 == 0xE3069283

    @PROPS
    @given(ci=v1_infos())
    def test_v1_round_trip(self, ci):
        raw = blob_meta.encode_v1(ci)
        assert len(raw) == 16
        assert blob_meta.decode_v1(ci.index, *struct.unpack("<QQ", raw)) == ci

    @PROPS
    @given(ci=v2_infos())
    def test_v2_round_trip(self, ci):
        raw = blob_meta.encode_v2(ci)
        assert len(raw) == 24
        assert blob_meta.decode_v2(ci.index, *struct.unpack("<QQQ", raw)) == ci

    @PROPS
    @given(words=st.tuples(st.integers(0, (1 << 64) - 1), st.integers(0, (1 << 64) - 1)))
    def test_v1_decode_is_total_and_canonical(self, words):
        ci = blob_meta.decode_v1(0, *words)
        assert 1 <= ci.uncompressed_size <= 1 << 24 and 1 <= ci.compressed_size <= 1 << 24
        assert ci.uncompressed_offset % 4096 == 0
        assert struct.unpack("<QQ", blob_meta.encode_v1(ci)) == (words[0] & ~0xFF, words[1])

    @PROPS
    @given(words=st.tuples(*[st.integers(0, (1 << 64) - 1)] * 3))
    def test_v2_decode_is_total_and_exact(self, words):
        ci = blob_meta.decode_v2(0, *words)
        assert struct.unpack("<QQQ", blob_meta.encode_v2(ci)) == words

    @pytest.mark.parametrize(
        "bad",
        [
            dict(uncompressed_offset=4095),
            dict(uncompressed_size=0),
            dict(uncompressed_size=(1 << 24) + 1),
            dict(compressed_size=0),
            dict(compressed_offset=1 << 40),
            dict(uncompressed_offset=1 << 44),
        ],
    )
    def test_v1_encode_refuses_out_of_range(self, bad):
        base = dict(
            index=0,
            compressed_offset=0,
            compressed_size=10,
            uncompressed_offset=0,
            uncompressed_size=20,
            compressed=True,
        )
        base.update(bad)
        with pytest.raises(ValueError):
            blob_meta.encode_v1(ChunkInfo(**base))

    @PROPS
    @given(infos=st.lists(v1_infos(), max_size=20), v2=st.booleans(), data=st.data())
    def test_array_round_trip(self, infos, v2, data):
        if v2:
            infos = data.draw(st.lists(v2_infos(), max_size=20))
        infos = [ChunkInfo(**{**ci.__dict__, "index": i}) for i, ci in enumerate(infos)]
        raw = blob_meta.build_array(infos, v2)
        arr = ChunkInfoArray(raw, len(infos), v2, base=3341)
        assert len(arr) == len(infos)
        assert list(arr) == infos
        if infos:
            assert arr[-1] == infos[-1]

    def test_array_index_errors_and_truncation(self):
        raw = blob_meta.build_array([ChunkInfo(0, 0, 10, 0, 20, True)])
        arr = ChunkInfoArray(raw, 1, False)
        with pytest.raises(IndexError):
            arr[1]
        with pytest.raises(IndexError):
            arr[-2]
        raises_format(ChunkInfoArray, raw, 2, False, structure="blob.meta chunk-info array")

    def test_v2_unknown_flag_names_field_and_offset(self):
        ci = ChunkInfo(0, 0, 10, 0, 20, True, flags=1)
        raw = bytearray(blob_meta.build_array([ci, ci], v2=True))
        raw[24 + 7] = 0x21
        arr = ChunkInfoArray(bytes(raw), 2, True, base=1000)
        assert arr[0].flags == 1
        err = raises_format(
            arr.__getitem__, 1, structure="chunk info v2", field="flags", offset=1000 + 24 + 7
        )
        assert err.value == 0x21

    def test_to_json(self):
        ci = ChunkInfo(
            5,
            100,
            10,
            4096,
            20,
            True,
            flags=blob_meta.CI_COMPRESSED | blob_meta.CI_ZRAN | 0x10,
            data=(3 << 32) | 77,
        )
        j = ci.to_json()
        assert j["flags"] == ["compressed", "zran", "crc32"]
        assert (j["zran_index"], j["zran_offset"], j["crc32"]) == (3, 77, 77)
        assert ChunkInfo(0, 0, 1, 0, 1, False).crc32 is None

    @pytest.mark.vectors
    def test_real_v1_arrays(self, vectors):
        raw = (vectors / TOC_BLOB).read_bytes()
        arr = ChunkInfoArray(raw[3341:3389], 3, False, 3341)
        assert [
            (c.compressed_offset, c.compressed_size, c.uncompressed_offset, c.uncompressed_size) for c in arr
        ] == [
            (0, 1211, 0, 2816),
            (1211, 407, 4096, 678),
            (1618, 1211, 8192, 3115),
        ]
        assert all(c.compressed for c in arr)
        assert blob_meta.build_array(list(arr)) == raw[3341:3389]
        raw = (vectors / DATA_BLOB).read_bytes()
        arr = ChunkInfoArray(raw[8314:8346], 2, False, 8314)
        assert [
            (c.compressed_offset, c.compressed_size, c.uncompressed_offset, c.uncompressed_size) for c in arr
        ] == [
            (0, 4828, 0, 16931),
            (4828, 2974, 20480, 13400),
        ]
        assert blob_meta.build_array(list(arr)) == raw[8314:8346]


# ============================================================================ RAFS v6 records
def _bootstrap_buffer(size: int = 5 * 4096) -> bytearray:
    return bytearray(size)


class TestSuperBlocks:
    def test_superblock_round_trip(self):
        sb = SuperBlock(s_inos=4, s_blocks=3, s_meta_blkaddr=2, s_extra_devices=1)
        raw = sb.build()
        assert len(raw) == 128
        assert struct.unpack_from("<I", raw, 0)[0] == 0xE0F5E1E2
        assert struct.unpack_from("<H", raw, 14)[0] == 128
        assert struct.unpack_from("<HHH", raw, 84) == (0, 1, 11)
        buf = _bootstrap_buffer()
        buf[1024:1152] = raw
        assert SuperBlock.parse(buf) == sb
        assert SuperBlock.parse(raw, 0) == sb

    @PROPS
    @given(
        inos=st.integers(1, (1 << 64) - 1),
        blocks=st.integers(0, (1 << 32) - 1),
        meta=st.integers(0, (1 << 32) - 1),
        devices=st.integers(0, 0xFFFF),
        root=st.integers(0, 0xFFFF),
        bits=st.sampled_from([9, 12]),
        uuid=st.binary(min_size=16, max_size=16),
    )
    def test_superblock_property(self, inos, blocks, meta, devices, root, bits, uuid):
        sb = SuperBlock(
            s_inos=inos,
            s_blocks=blocks,
            s_meta_blkaddr=meta,
            s_extra_devices=devices,
            s_root_nid=root,
            s_blkszbits=bits,
            s_uuid=uuid,
        )
        assert SuperBlock.parse(sb.build(), 0) == sb

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("s_magic", 0x12345678),
            ("s_blkszbits", 10),
            ("s_feature_compat", 0),
            ("s_feature_incompat", 0x1C),
            ("s_devt_slotoff", 12),
        ],
    )
    def test_superblock_errors(self, field, value):
        sb = SuperBlock(s_extra_devices=1)
        setattr(sb, field, value)
        buf = _bootstrap_buffer()
        buf[1024:1152] = sb.build()
        err = raises_format(
            SuperBlock.parse,
            buf,
            structure="erofs superblock",
            field=field,
            offset=1024 + rafs_v6.SUPERBLOCK.offsets[field],
        )
        assert err.value == value

    def test_ext_superblock_round_trip(self):
        ext = ExtSuperBlock(
            s_flags=0x194,
            s_blob_table_offset=4096,
            s_blob_table_size=256,
            s_chunk_table_offset=16384,
            s_chunk_table_size=160,
            s_prefetch_table_offset=4352,
            s_prefetch_table_size=4,
        )
        raw = ext.build()
        assert len(raw) == 256
        assert struct.unpack_from("<Q", raw, 24)[0] == 16384  # where the snapshotter reads it (abs 1176)
        buf = _bootstrap_buffer()
        buf[1152:1408] = raw
        got = ExtSuperBlock.parse(buf)
        assert got == ext
        assert got.compressor is Compressor.ZSTD and got.digester is digests.Digester.BLAKE3

    @PROPS
    @given(
        comp=st.sampled_from([0x1, 0x2, 0x40, 0x80]),
        dig=st.sampled_from([0x4, 0x8]),
        other=st.integers(0, 0xFFFF_FFFF).map(lambda v: v & ~0xCF),
        chunk_bits=st.integers(12, 24),
        nblobs=st.integers(0, 16),
        nchunks=st.integers(0, 40),
    )
    def test_ext_superblock_property(self, comp, dig, other, chunk_bits, nblobs, nchunks):
        ext = ExtSuperBlock(
            s_flags=comp | dig | other,
            s_blob_table_offset=4096,
            s_blob_table_size=256 * nblobs,
            s_chunk_size=1 << chunk_bits,
            s_chunk_table_offset=16384,
            s_chunk_table_size=80 * nchunks,
        )
        buf = _bootstrap_buffer()
        buf[1152:1408] = ext.build()
        assert ExtSuperBlock.parse(buf) == ext

    @pytest.mark.parametrize(
        ("field", "changes"),
        [
            ("s_flags", dict(s_flags=0x4)),
            ("s_flags", dict(s_flags=0x1 | 0x80 | 0x4)),
            ("s_flags", dict(s_flags=0x1 | 0x4 | 0x8)),
            ("s_chunk_size", dict(s_chunk_size=0x3000)),
            ("s_chunk_size", dict(s_chunk_size=0x800)),
            ("s_chunk_size", dict(s_chunk_size=0x200_0000)),
            ("s_blob_table_offset", dict(s_blob_table_size=256, s_blob_table_offset=4000)),
            ("s_blob_table_offset", dict(s_blob_table_size=256, s_blob_table_offset=0)),
            ("s_blob_table_size", dict(s_blob_table_size=100, s_blob_table_offset=4096)),
            ("s_blob_table_offset", dict(s_blob_table_size=256, s_blob_table_offset=5 * 4096)),
            ("s_chunk_table_offset", dict(s_chunk_table_size=80, s_chunk_table_offset=4100)),
            ("s_chunk_table_size", dict(s_chunk_table_size=81, s_chunk_table_offset=4096)),
            ("s_chunk_table_offset", dict(s_chunk_table_size=80, s_chunk_table_offset=5 * 4096)),
            ("s_prefetch_table_size", dict(s_prefetch_table_size=3, s_prefetch_table_offset=4096)),
            ("s_prefetch_table_offset", dict(s_prefetch_table_size=4, s_prefetch_table_offset=5 * 4096 - 2)),
        ],
    )
    def test_ext_superblock_errors(self, field, changes):
        ext = ExtSuperBlock(s_flags=0x94)
        for k, v in changes.items():
            setattr(ext, k, v)
        buf = _bootstrap_buffer()
        buf[1152:1408] = ext.build()
        raises_format(
            ExtSuperBlock.parse,
            buf,
            structure="rafs v6 ext superblock",
            field=field,
            offset=1152 + rafs_v6.EXT_SUPERBLOCK.offsets[field],
        )

    def test_super_flag_names(self):
        assert rafs_v6.super_flag_names(0x0100_01B4) == [
            "hash_blake3",
            "explicit_uid_gid",
            "has_xattr",
            "compression_zstd",
            "inlined_chunk_digest",
            "encryption_none",
        ]


class TestTables:
    def test_device_slot_round_trip(self):
        slot = DeviceSlot(blob_id=b"be7d77ee" * 8, blocks=9, mapped_blkaddr=512)
        raw = slot.build()
        assert (
            len(raw) == 128 and raw[:64] == b"be7d77ee" * 8 and struct.unpack_from("<II", raw, 64) == (9, 512)
        )
        assert DeviceSlot.parse(raw) == slot

    def _entry(self, **kw) -> BlobTableEntry:
        ent = BlobTableEntry(
            blob_id=b"x" * 64,
            chunk_count=3,
            features=0x7000_0023,
            compressed_size=7997,
            uncompressed_size=12288,
            ci_compressor=3,
            ci_offset=3341,
            ci_compressed_size=40,
            ci_uncompressed_size=48,
            blob_toc_digest=b"\1" * 32,
            cipher_iv=5,
        )
        for k, v in kw.items():
            setattr(ent, k, v)
        return ent

    def test_blob_table_entry_round_trip(self):
        ent = self._entry()
        raw = ent.build()
        assert len(raw) == 256
        assert struct.unpack_from("<IIIIII", raw, 64) == (0, 0x100000, 3, 3, 0, 0x7000_0023)
        assert BlobTableEntry.parse(raw, 0, 0, 0x100000) == ent
        assert ent.id == "x" * 64 and rafs_v6.PLACEHOLDER_BLOB_ID == "x" * 64
        assert ent.compressor is Compressor.ZSTD and ent.digester is digests.Digester.BLAKE3
        assert ent.to_json()["features_names"] == [
            "aligned",
            "inlined_fs_meta",
            "inlined_chunk_digest",
            "has_tar_header",
            "has_toc",
            "cap_tar_toc",
        ]

    @PROPS
    @given(
        blob_id=st.binary(max_size=64),
        position=st.integers(0, 254),
        count=st.integers(0, 1 << 24),
        comp=st.integers(0, 3),
        dig=st.integers(0, 1),
        csize=st.integers(0, (1 << 64) - 1),
        ci_usize=st.integers(0, 1 << 40),
        ci_csize=st.integers(0, 1 << 40),
    )
    def test_blob_table_entry_property(self, blob_id, position, count, comp, dig, csize, ci_usize, ci_csize):
        assume(ci_csize <= ci_usize)
        ent = self._entry(
            blob_id=blob_id.ljust(64, b"\0"),
            blob_index=position,
            chunk_count=count,
            compression_algo=comp,
            digest_algo=dig,
            compressed_size=csize,
            ci_uncompressed_size=ci_usize,
            ci_compressed_size=ci_csize,
        )
        buf = bytes(256 * position) + ent.build()
        assert BlobTableEntry.parse(buf, 256 * position, position, 0x100000) == ent

    @pytest.mark.parametrize(
        ("field", "changes"),
        [
            ("blob_index", dict(blob_index=1)),
            ("chunk_size", dict(chunk_size=0x1000)),
            ("compression_algo", dict(compression_algo=4)),
            ("ci_compressor", dict(ci_compressor=9)),
            ("digest_algo", dict(digest_algo=2)),
            ("chunk_count", dict(chunk_count=(1 << 24) + 1)),
            ("features", dict(features=0x8000)),
            ("ci_compressed_size", dict(ci_compressed_size=49)),
        ],
    )
    def test_blob_table_entry_errors(self, field, changes):
        raw = bytes(4096) + self._entry(**changes).build()
        raises_format(
            BlobTableEntry.parse,
            raw,
            4096,
            0,
            0x100000,
            structure="rafs v6 blob table entry",
            field=field,
            offset=4096 + rafs_v6.BLOB_ENTRY.offsets[field],
        )

    @PROPS
    @given(
        block_id=st.binary(min_size=32, max_size=32),
        ints=st.tuples(*[st.integers(0, (1 << 32) - 1)] * 5),
        longs=st.tuples(*[st.integers(0, (1 << 64) - 1)] * 3),
        crc=st.integers(0, (1 << 32) - 1),
    )
    def test_chunk_table_entry_property(self, block_id, ints, longs, crc):
        ent = ChunkTableEntry(block_id, *ints[:4], *longs, ints[4], crc)
        raw = ent.build()
        assert len(raw) == 80
        assert ChunkTableEntry.parse(raw) == ent
        assert ent.compressed == bool(ints[1] & 1)


class TestInodes:
    def _ext(self, **kw) -> Inode:
        base = dict(
            i_format=0x9,
            i_xattr_icount=0,
            i_mode=0o100644,
            i_nlink=1,
            i_size=2816,
            i_u=0x28,
            i_ino=2,
            i_uid=1000,
            i_gid=1000,
            i_mtime=1667882847,
            i_mtime_nsec=4018050,
        )
        base.update(kw)
        return Inode(**base)

    def test_extended_round_trip(self):
        ino = self._ext()
        raw = ino.build()
        assert len(raw) == 64 and ino.extended and ino.inode_size == 64
        assert ino.datalayout == rafs_v6.LAYOUT_CHUNK_BASED and ino.layout_name == "chunk_based"
        buf = bytes(4096) + raw
        assert rafs_v6.parse_inode(buf, 4096, 128) == ino

    def test_compact_round_trip(self):
        ino = Inode(
            i_format=0x4,
            i_xattr_icount=3,
            i_mode=0o40755,
            i_nlink=2,
            i_size=86,
            i_u=7,
            i_ino=1,
            i_uid=5,
            i_gid=6,
        )
        raw = ino.build()
        assert len(raw) == 32 and not ino.extended and ino.inode_size == 32
        assert ino.xattr_size == 12 + 2 * 4
        assert rafs_v6.parse_inode(raw, 0, 1) == ino

    @PROPS
    @given(
        ext=st.booleans(),
        layout=st.sampled_from([0, 2, 4]),
        mode=st.integers(0, 0xFFFF),
        nlink=st.integers(1, 0xFFFF),
        size=st.integers(0, (1 << 32) - 1),
        u=st.integers(0, (1 << 32) - 1),
        ids=st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, (1 << 32) - 1)),
        xc=st.integers(0, 0xFFFF),
        mtime=st.tuples(st.integers(0, (1 << 64) - 1), st.integers(0, (1 << 32) - 1)),
    )
    def test_inode_property(self, ext, layout, mode, nlink, size, u, ids, xc, mtime):
        uid, gid, i_ino = ids
        ino = Inode(
            i_format=layout << 1 | int(ext),
            i_xattr_icount=xc,
            i_mode=mode,
            i_nlink=nlink,
            i_size=size,
            i_u=u,
            i_ino=i_ino,
            i_uid=uid,
            i_gid=gid,
            i_mtime=mtime[0] if ext else 0,
            i_mtime_nsec=mtime[1] if ext else 0,
        )
        assert rafs_v6.parse_inode(ino.build(), 0, 1) == ino

    @pytest.mark.parametrize(
        ("changes", "field", "text"),
        [
            (dict(i_format=0x19), "i_format", "unknown format bits"),
            (dict(i_format=0x3), "i_format", "data layout"),
            (dict(i_format=0xD), "i_format", "data layout"),
            (dict(i_nlink=0), "i_nlink", "no links"),
        ],
    )
    def test_inode_errors(self, changes, field, text):
        raw = bytes(64) + self._ext(**changes).build()
        err = raises_format(
            rafs_v6.parse_inode, raw, 64, 130, field=field, offset=64 + rafs_v6.INODE_EXTENDED.offsets[field]
        )
        assert text in str(err) and "nid 130" in str(err)

    def test_inode_past_the_end(self):
        raises_format(rafs_v6.parse_inode, bytes(100), 99, 7, structure="erofs inode")
        raises_format(rafs_v6.parse_inode, b"\x01\x00" + bytes(40), 0, 7, structure="erofs extended inode")


class TestChunkIndex:
    @PROPS
    @given(blob=st.integers(0, 254), ci=st.integers(0, (1 << 24) - 1), blkaddr=st.integers(0, (1 << 32) - 1))
    def test_round_trip(self, blob, ci, blkaddr):
        idx = ChunkIndex(blob, ci, blkaddr)
        raw = idx.build()
        assert len(raw) == 8
        advise, device_id, got_blk = rafs_v6.CHUNK_INDEX.unpack(raw)
        assert advise == ci & 0xFFFF and device_id & 0xFF == blob + 1 and device_id >> 8 == ci >> 16
        assert got_blk == blkaddr
        assert ChunkIndex.decode(advise, device_id, got_blk) == idx

    def test_device_zero_decodes_to_an_invalid_blob(self):
        assert ChunkIndex.decode(0, 0, 0).blob_index == -1


# ============================================================================ directory blocks
names_strategy = st.lists(
    st.binary(min_size=1, max_size=255).filter(
        lambda n: b"\0" not in n and b"/" not in n and n not in (b".", b"..")
    ),
    unique=True,
    max_size=400,
)


def _dirents(names: list[bytes]) -> list[Dirent]:
    ents = [Dirent(b".", 128, rafs_v6.FT_DIR), Dirent(b"..", 128, rafs_v6.FT_DIR)]
    ents += [Dirent(n, 200 + i, 1 + i % 7) for i, n in enumerate(names)]
    return sorted(ents, key=lambda d: d.name)


def _parse_blocks(blocks: list[bytes]) -> list[Dirent]:
    out = []
    for i, blk in enumerate(blocks):
        out += rafs_v6.parse_dir_block(blk, 4096 * i, 128)
    return out


class TestDirBlocks:
    def test_real_example_size(self):
        # The root of the 2fa78 bootstrap: dsize 86 = 27 (., ..) + 20 (error.rs) + 18 (lib.rs) + 21 (logger.rs).
        ents = _dirents([b"error.rs", b"lib.rs", b"logger.rs"])
        blocks, size = rafs_v6.build_dir_blocks(ents)
        assert size == 86 and len(blocks) == 1 and len(blocks[0]) == 86
        assert struct.unpack_from("<H", blocks[0], 8)[0] == 12 * 5
        assert _parse_blocks(blocks) == ents

    def test_names_below_dot_sort_first(self):
        ents = _dirents([b"-x", b"!", b"a"])
        assert [d.name for d in ents] == [b"!", b"-x", b".", b"..", b"a"]
        blocks, _ = rafs_v6.build_dir_blocks(ents)
        assert _parse_blocks(blocks) == ents

    @PROPS
    @given(names=names_strategy)
    def test_round_trip_property(self, names):
        ents = _dirents(names)
        blocks, size = rafs_v6.build_dir_blocks(ents)
        assert all(len(b) == 4096 for b in blocks[:-1])
        assert len(blocks[-1]) <= 4096
        assert size == 4096 * (len(blocks) - 1) + len(blocks[-1])
        # No dirent/name pair spans blocks, and names are recovered exactly.
        assert _parse_blocks(blocks) == ents
        # Padding a partial last block (as a FLAT_PLAIN directory's block is) changes nothing.
        padded = blocks[:-1] + [blocks[-1].ljust(4096, b"\0")]
        assert _parse_blocks(padded) == ents

    def test_block_split_rule(self):
        # 2 + 13 names of 300 bytes: each pair is 312 bytes, so 13 per 4096-byte block with . and ..
        names = [bytes([0x41 + i]) * 300 for i in range(15)]
        blocks, size = rafs_v6.build_dir_blocks(_dirents(names))
        assert len(blocks) == 2
        first = rafs_v6.parse_dir_block(blocks[0], 0, 1)
        assert 27 + 312 * (len(first) - 2) <= 4096 < 27 + 312 * (len(first) - 1)
        assert size == 4096 + 312 * (17 - len(first))

    def _block(self, ents: list[tuple[int, int, int, bytes]]) -> bytes:
        raw = bytearray()
        for nid, nameoff, ftype, _ in ents:
            raw += rafs_v6.DIRENT.pack(nid, nameoff, ftype, 0)
        for *_, name in ents:
            raw += name
        return bytes(raw)

    @pytest.mark.parametrize("first", [0, 13, 4096, 5000])
    def test_bad_first_nameoff(self, first):
        blk = self._block([(1, first, 2, b"."), (1, 25, 2, b"..")]).ljust(4096, b"\0")
        err = raises_format(
            rafs_v6.parse_dir_block,
            blk,
            8192,
            130,
            structure="erofs dirent",
            field="nameoff",
            offset=8192 + 8,
        )
        assert "nid 130" in str(err) and err.value == first

    def test_out_of_order_names(self):
        # The first name would end (at the second's offset) before it starts.
        blk = self._block([(1, 24, 2, b"a"), (1, 20, 2, b"b")])
        err = raises_format(
            rafs_v6.parse_dir_block, blk, 0, 1, structure="erofs dirent", field="nameoff", offset=8
        )
        assert err.value == 24

    def test_name_offset_past_block(self):
        blk = self._block([(1, 24, 2, b"a"), (1, 400, 2, b"b")])
        raises_format(rafs_v6.parse_dir_block, blk, 0, 1, field="nameoff", offset=8)
        blk = self._block([(1, 36, 2, b"a"), (1, 37, 2, b"b"), (1, 4000, 2, b"c")])
        raises_format(rafs_v6.parse_dir_block, blk, 0, 1, field="nameoff", offset=12 + 8)

    def test_unknown_file_type(self):
        blk = self._block([(1, 24, 2, b"a"), (1, 25, 8, b"b")])
        raises_format(rafs_v6.parse_dir_block, blk, 100, 1, field="file_type", offset=100 + 12 + 10)

    def test_empty_name(self):
        blk = self._block([(1, 24, 2, b""), (1, 24, 1, b"b")])
        raises_format(rafs_v6.parse_dir_block, blk, 0, 1, structure="erofs dirent")

    def test_short_block(self):
        raises_format(rafs_v6.parse_dir_block, b"\0" * 11, 64, 1, structure="erofs dir block", offset=64)


# ============================================================================ xattrs
xattr_names = st.one_of(
    st.sampled_from([b"system.posix_acl_access", b"system.posix_acl_default"]),
    st.tuples(
        st.sampled_from([b"user.", b"trusted.", b"security."]),
        st.binary(min_size=1, max_size=255),
    ).map(lambda t: t[0] + t[1]),
)


class TestXattrs:
    def test_layout(self):
        area = rafs_v6.build_xattrs({b"user.k": b"vv", b"system.posix_acl_access": b"\x02\0\0\0"})
        # header 12, entries: 4+0+4 = 8 (acl: empty suffix) and 4+1+2 = 7 -> 8
        assert len(area) == 12 + 8 + 8
        assert area[:12] == bytes(12)
        assert rafs_v6.xattr_icount(len(area)) == (len(area) - 12) // 4 + 1 == 5
        assert rafs_v6.xattr_icount(0) == 0
        assert rafs_v6.build_xattrs({}) == b""

    @PROPS
    @given(xattrs=st.dictionaries(xattr_names, st.binary(max_size=300), max_size=8))
    def test_round_trip_property(self, xattrs):
        area = rafs_v6.build_xattrs(xattrs)
        icount = rafs_v6.xattr_icount(len(area))
        assert len(area) % 4 == 0
        buf = bytes(64) + area + b"\xaa" * 8
        assert rafs_v6.parse_xattrs(buf, 64, icount, 5) == xattrs

    def test_big_value(self):
        x = {b"security.capability": b"\x01" * 0xFFFF, b"user." + b"n" * 255: b""}
        area = rafs_v6.build_xattrs(x)
        assert rafs_v6.parse_xattrs(area, 0, rafs_v6.xattr_icount(len(area)), 1) == x

    @pytest.mark.parametrize(
        "name", [b"foo.bar", b"user.", b"trusted.", b"system.other", b"system.posix_acl_accessX"]
    )
    def test_build_refuses_other_namespaces(self, name):
        with pytest.raises(ValueError):
            rafs_v6.build_xattrs({name: b"v"})

    def test_build_refuses_oversized(self):
        with pytest.raises(ValueError):
            rafs_v6.build_xattrs({b"user.x": b"v" * 0x10000})

    def test_unknown_name_index(self):
        area = bytearray(rafs_v6.build_xattrs({b"user.k": b"v"}))
        area[13] = 5
        raises_format(
            rafs_v6.parse_xattrs,
            bytes(area),
            0,
            rafs_v6.xattr_icount(len(area)),
            9,
            structure="erofs xattr entry",
            offset=13,
        )

    def test_entry_past_the_area(self):
        area = bytearray(rafs_v6.build_xattrs({b"user.k": b"v"}))
        struct.pack_into("<H", area, 14, 200)
        raises_format(
            rafs_v6.parse_xattrs,
            bytes(area) + bytes(400),
            0,
            rafs_v6.xattr_icount(len(area)),
            9,
            structure="erofs xattr entry",
            offset=12,
        )

    def test_area_past_the_bootstrap(self):
        raises_format(rafs_v6.parse_xattrs, bytes(20), 10, 3, 9, structure="erofs xattr area", offset=10)
