"""Every fact of ../shared/vectors/README.md, asserted through the public reading API.

The vectors are real artifacts written by nydus-image and nydus-snapshotter (never copies in this repo). The
facts come from their README and from the worked examples of docs/nydus-format.md (sections 2.6, 3.1, 5.11, 5.16).
"""

from __future__ import annotations

import hashlib
import json
import struct

import blake3
import pytest
from conftest import BOOTSTRAP, DATA_BLOB, TOC_BLOB, V5_BOOTSTRAP

import nydus_inspect
from nydus_inspect import FormatError, UsageError, query
from nydus_inspect.codecs import Compressor
from nydus_inspect.formats import blob_meta, rafs_v6, tar_header, toc
from nydus_inspect.layer import KIND_BLOB_TOC, KIND_BOOTSTRAP, KIND_BOOTSTRAP_LAYER, KIND_BOOTSTRAP_V5
from nydus_inspect.model import DIR, REG, SYMLINK, fsdecode

pytestmark = pytest.mark.vectors

TOC_BLOB_ID = "2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca"
DATA_BLOB_ID = "be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef"
INVALID_BOOT_LAYER = "snapshotter/invalid-bootstrap-file-size-133513.tar.gz"
INVALID_LAYER = "snapshotter/invalid.tar.gz"
REPEATABLE_RESULT = "nydus/repeatable/sha256-nocompress-repeatable.result"


@pytest.fixture(scope="module")
def toc_blob(vectors):
    with nydus_inspect.open_layer(str(vectors / TOC_BLOB)) as layer:
        yield layer


@pytest.fixture(scope="module")
def data_blob(vectors):
    with nydus_inspect.open_layer(str(vectors / DATA_BLOB)) as layer:
        yield layer


@pytest.fixture(scope="module")
def bootstrap(vectors):
    with nydus_inspect.open_layer(str(vectors / BOOTSTRAP), blob_dir=str(vectors / "nydus/blobs")) as layer:
        yield layer


def _toc_view(layer) -> list[tuple]:
    return [(e.name, e.flags, e.compressed_offset, e.compressed_size, e.uncompressed_size) for e in layer.toc]


def _raw_toc_slots(raw: bytes) -> list[bytes]:
    hdr = tar_header.parse(raw[-512:], len(raw) - 512)
    start = len(raw) - 512 - hdr.size
    return [raw[o : o + 128] for o in range(start, len(raw) - 512, 128)]


# ============================================================================ 2fa78…: inline-meta blob with ToC
class TestTocBlob:
    def test_file_name_is_sha256_of_bytes(self, vectors, toc_blob):
        raw = (vectors / TOC_BLOB).read_bytes()
        assert len(raw) == toc_blob.size == 10034
        assert hashlib.sha256(raw).hexdigest() == TOC_BLOB_ID == toc_blob.digest
        assert toc_blob.kind == KIND_BLOB_TOC

    def test_trailing_header_is_old_gnu_rafs_blob_toc(self, vectors):
        raw = (vectors / TOC_BLOB).read_bytes()
        hdr = tar_header.parse(raw[-512:], len(raw) - 512)
        assert (hdr.name, hdr.size, hdr.gnu, hdr.typeflag) == ("rafs.blob.toc", 512, True, b"0")
        assert raw[-512:] == tar_header.build("rafs.blob.toc", 512)

    def test_four_toc_entries(self, toc_blob):
        assert _toc_view(toc_blob) == [
            ("image.blob", 1, 2829, 2829, 12288),  # offset field 2829: the old-blob quirk
            ("blob.meta", 1, 3341, 48, 48),
            ("blob.meta.header", 1, 3389, 4096, 4096),
            ("image.boot", 2, 7997, 501, 20480),
        ]
        comps = [e.compressor for e in toc_blob.toc]
        assert comps == [Compressor.NONE, Compressor.NONE, Compressor.NONE, Compressor.ZSTD]
        assert toc_blob.entry_names() == [
            "image.blob",
            "blob.meta",
            "blob.meta.header",
            "image.boot",
            "rafs.blob.toc",
        ]

    def test_image_blob_data_really_starts_at_zero(self, vectors, toc_blob):
        raw = (vectors / TOC_BLOB).read_bytes()
        off, size, comp, usize, digest = toc_blob.entry_location("image.blob")
        assert (off, size, comp, usize) == (0, 2829, Compressor.NONE, 12288)
        data = toc_blob.entry("image.blob")
        assert data == raw[:2829]
        # Quirk: its ToC digest covers the chunk data followed by the image.blob tar header.
        assert hashlib.sha256(raw[: 2829 + 512]).digest() == digest
        assert any("old-blob quirk" in n for n in toc_blob.notes)
        report = query.toc_report(toc_blob)
        assert report["entries"][0]["compressed_offset"] == 0
        assert report["entries"][0]["compressed_offset_field"] == 2829

    def test_image_boot_entry(self, toc_blob):
        boot = toc_blob.entry("image.boot")
        assert len(boot) == 20480
        assert hashlib.sha256(boot).hexdigest().startswith("d85f1b77aab4")
        assert struct.unpack_from("<I", boot, 1024)[0] == 0xE0F5E1E2
        assert len(toc_blob.entry_raw("image.boot")) == 501

    def test_every_entry_matches_its_sha256(self, toc_blob):
        for ent in toc_blob.toc:
            data = toc_blob.entry(ent.name)
            assert len(data) == (ent.compressed_size if ent.name == "image.blob" else ent.uncompressed_size)
            if ent.name != "image.blob":
                assert hashlib.sha256(data).digest() == ent.uncompressed_digest
            assert b"".join(toc_blob.iter_entry(ent.name)) == data

    def test_toc_digest(self, vectors, toc_blob):
        raw = (vectors / TOC_BLOB).read_bytes()
        assert toc_blob.toc_digest.hex().startswith("4fdfbb36ef74a3c6")
        assert toc_blob.toc_digest == hashlib.sha256(raw[-1024:]).digest()  # 4 entries + their tar header
        assert toc_blob.entry("rafs.blob.toc") == raw[-1024:-512]
        info = query.info(toc_blob)
        assert info["toc"] == {"entries": 4, "digest": toc_blob.toc_digest.hex(), "size": 1024}

    def test_sixteen_byte_name_without_nul(self, vectors, toc_blob):
        slots = _raw_toc_slots((vectors / TOC_BLOB).read_bytes())
        assert slots[2][8:24] == b"blob.meta.header"
        assert toc_blob.toc[2].name == "blob.meta.header"

    def test_garbage_in_bytes_124_to_127_is_ignored(self, vectors, toc_blob):
        slots = _raw_toc_slots((vectors / TOC_BLOB).read_bytes())
        assert [s[124:128] for s in slots] == [bytes(4), b"\xff\xff\0\0", b"\xff\xff\0\0", b"\xff\xff\0\0"]
        for slot, ent in zip(slots, toc_blob.toc):
            assert toc.parse_entry(slot[:124] + bytes(4)) == ent

    def test_sections_by_tar_walk(self, toc_blob):
        assert [(s.name, s.offset, s.size, s.header_offset) for s in toc_blob.sections] == [
            ("image.blob", 0, 2829, 2829),
            ("blob.meta", 3341, 4144, 7485),  # ci array 48 + header 4096
            ("image.boot", 7997, 501, 8498),
            ("rafs.blob.toc", 9010, 512, 9522),
        ]

    def test_blob_meta(self, toc_blob):
        hdr = toc_blob.blob_meta_header
        assert (hdr.s_magic, hdr.s_features, hdr.s_ci_compressor, hdr.s_ci_entries, hdr.s_ci_offset) == (
            blob_meta.MAGIC,
            0x1,
            0,
            3,
            3341,
        )
        assert (hdr.s_ci_compressed_size, hdr.s_ci_uncompressed_size) == (48, 48)
        infos = list(toc_blob.chunk_infos)
        assert [
            (c.index, c.compressed_offset, c.compressed_size, c.uncompressed_offset, c.uncompressed_size)
            for c in infos
        ] == [
            (0, 0, 1211, 0, 2816),
            (1, 1211, 407, 4096, 678),
            (2, 1618, 1211, 8192, 3115),
        ]
        assert all(c.compressed for c in infos)
        assert toc_blob.chunk_digests is None  # a late-2022 blob: no blob.digest section

    def test_bootstrap(self, toc_blob):
        r = toc_blob.rafs
        assert (r.sb.s_magic, r.root_nid, r.sb.s_meta_blkaddr, r.inode_count()) == (0xE0F5E1E2, 128, 2, 4)
        assert (r.ext.s_flags, r.ext.s_blob_table_offset, r.ext.s_chunk_table_offset) == (0x94, 4096, 16384)
        assert r.ext.s_chunk_table_size == 3 * 80
        assert r.compressor is Compressor.ZSTD and r.digester.value == "blake3"
        assert len(r.blobs) == 1 and r.blobs[0].chunk_count == 3 and r.blobs[0].uncompressed_size == 12288
        nodes = list(query.list_nodes(toc_blob, "/", recursive=True, with_chunks=True))
        assert [(fsdecode(n.path), n.type, n.size) for n in nodes] == [
            ("/", DIR, 86),  # dsize 86 = 27 (. ..) + 20 + 18 + 21
            ("/error.rs", REG, 2816),
            ("/lib.rs", REG, 678),
            ("/logger.rs", REG, 3115),
        ]
        files = [n for n in nodes if n.type == REG]
        assert len(files) == 3 and sum(len(n.chunks) for n in files) == 3
        for n, blkaddr in zip(files, (0, 1, 2)):
            ino = r.inode(n.nid)
            assert ino.extended and ino.datalayout == rafs_v6.LAYOUT_CHUNK_BASED and ino.i_u == 0x28
            assert [c.uncompressed_offset // 4096 for c in n.chunks] == [blkaddr]

    def test_blob_table_id_is_the_running_hash_before_the_bootstrap(self, vectors, toc_blob):
        # This 2022 builder wrote the real id, not the "x"*64 placeholder: the running sha256 of everything
        # written before image.boot (docs/nydus-format.md 2.6).
        raw = (vectors / TOC_BLOB).read_bytes()
        ent = toc_blob.rafs.blobs[0]
        assert ent.id == hashlib.sha256(raw[:7997]).hexdigest()
        assert toc_blob.own_blob_index() == 0

    def test_chunk_table_digests_are_blake3_of_chunks(self, toc_blob):
        r = toc_blob.rafs
        table = sorted(r.chunk_table_entries(), key=lambda e: e.index)
        assert len(table) == 3
        for rec, ci in zip(table, toc_blob.chunk_infos):
            raw = toc_blob.pread(ci.compressed_offset, ci.compressed_size)
            data = nydus_inspect.codecs.decompress(raw, Compressor.ZSTD, ci.uncompressed_size)
            assert rec.block_id == blake3.blake3(data).digest()
            assert (rec.compressed_offset, rec.uncompressed_offset, rec.uncompressed_size) == (
                ci.compressed_offset,
                ci.uncompressed_offset,
                ci.uncompressed_size,
            )


# ============================================================================ be7d77…: data blob with blob.digest
class TestDataBlob:
    def test_toc(self, data_blob):
        assert data_blob.kind == KIND_BLOB_TOC and data_blob.size == 14554
        assert _toc_view(data_blob) == [
            ("image.blob", 1, 7802, 7802, 36864),
            ("blob.meta", 1, 8314, 32, 32),
            ("blob.meta.header", 1, 8346, 4096, 4096),
            ("blob.digest", 1, 12954, 64, 64),
        ]
        assert data_blob.toc_digest.hex().startswith("cfc89ed0739aef4e")
        assert not data_blob.has_bootstrap

    def test_blob_id_rule(self, vectors):
        raw = (vectors / DATA_BLOB).read_bytes()
        # The blob id is the sha256 of the file without the blob.digest array (the builder never hashed it).
        assert hashlib.sha256(raw[:12954] + raw[13018:]).hexdigest() == DATA_BLOB_ID
        assert hashlib.sha256(raw).hexdigest() != DATA_BLOB_ID

    def test_blob_meta(self, data_blob):
        hdr = data_blob.blob_meta_header
        assert (hdr.s_features, hdr.s_ci_entries, hdr.s_ci_offset, hdr.s_ci_compressed_size) == (
            0x7000_0021,
            2,
            8314,
            32,
        )
        assert [
            (c.compressed_offset, c.compressed_size, c.uncompressed_offset, c.uncompressed_size)
            for c in data_blob.chunk_infos
        ] == [
            (0, 4828, 0, 16931),
            (4828, 2974, 20480, 13400),
        ]

    def test_blob_digest_is_blake3_of_each_decompressed_chunk(self, data_blob):
        digests = data_blob.chunk_digests
        assert len(digests) == 2 and data_blob.entry("blob.digest") == b"".join(digests)
        for ci, want in zip(data_blob.chunk_infos, digests):
            raw = data_blob.pread(ci.compressed_offset, ci.compressed_size)
            data = nydus_inspect.codecs.decompress(raw, Compressor.ZSTD, ci.uncompressed_size)
            assert blake3.blake3(data).digest() == want

    def test_blob_digest_equals_bootstrap_chunk_table(self, data_blob, bootstrap):
        table = sorted(bootstrap.rafs.chunk_table_entries(), key=lambda e: e.index)
        assert [e.block_id for e in table] == list(data_blob.chunk_digests)
        assert [e.index for e in table] == [0, 1]

    def test_no_bootstrap_in_a_data_blob(self, data_blob):
        with pytest.raises(UsageError, match="holds no bootstrap"):
            data_blob.rafs  # noqa: B018

    def test_chunks_report(self, data_blob):
        rows = list(query.chunks_report(data_blob))
        assert rows[0]["source"] == "blob.meta" and rows[0]["header"]["ci_entries"] == 2
        assert [r["digest"] for r in rows[1:]] == [d.hex() for d in data_blob.chunk_digests]


# ============================================================================ rafs-v6-2.2.boot
class TestSeparateBootstrap:
    def test_superblocks(self, bootstrap):
        assert bootstrap.kind == KIND_BOOTSTRAP and bootstrap.size == 20480
        r = bootstrap.rafs
        assert r.root_nid == 128 and r.sb.s_meta_blkaddr == 2 and r.inode_count() == 3
        assert r.ext.s_chunk_table_size == 2 * 80

    def test_blob_table(self, bootstrap, data_blob):
        (ent,) = bootstrap.rafs.blobs
        assert ent.id == DATA_BLOB_ID
        assert ent.blob_toc_digest.hex().startswith("cfc89ed0")
        assert ent.blob_toc_digest == data_blob.toc_digest
        assert ent.blob_toc_size == 1024 == len(data_blob.toc_bytes) + 512
        assert ent.features == 0x7000_0021 and ent.chunk_count == 2 and ent.uncompressed_size == 36864
        (slot,) = bootstrap.rafs.meta.devices
        assert (
            slot.blob_id.decode() == DATA_BLOB_ID
            and slot.blocks == 36864 // 4096
            and slot.mapped_blkaddr == 512
        )
        info = query.info(bootstrap)
        assert info["bootstrap"]["blobs"][0]["blob_toc_size"] == 1024
        assert info["bootstrap"]["superblock"]["root_nid"] == 128

    def test_two_files_two_chunks(self, bootstrap):
        nodes = list(query.list_nodes(bootstrap, "/", recursive=True, with_chunks=True))
        assert [(fsdecode(n.path), n.type, n.size) for n in nodes] == [
            ("/", DIR, 67),
            ("/lib.rs", REG, 16931),
            ("/sync_io.rs", REG, 13400),
        ]
        chunks = [c for n in nodes if n.type == REG for c in n.chunks]
        assert len(chunks) == 2
        assert [c.ci_index for c in chunks] == [0, 1]

    def test_toc_needs_a_blob(self, bootstrap):
        with pytest.raises(UsageError):
            query.toc_report(bootstrap)

    def test_chunks_report_from_the_bootstrap(self, bootstrap, data_blob):
        rows = list(query.chunks_report(bootstrap))
        assert rows[0]["source"] == "bootstrap chunk table" and rows[0]["header"]["entries"] == 2
        # The table is not in chunk-index order (v2.3 sorts it by digest); the report keeps the table order.
        by_index = sorted(rows[1:], key=lambda r: r["index"])
        assert [r["digest"] for r in by_index] == [d.hex() for d in data_blob.chunk_digests]
        assert [r["uncompressed_offset"] for r in by_index] == [0, 20480]


# ============================================================================ cat every file of both v6 layers
def _check_cat(layer) -> int:
    count = 0
    r = layer.rafs
    for node in query.list_nodes(layer, "/", recursive=True, with_chunks=True):
        if node.type != REG:
            continue
        data = b"".join(query.cat(layer, fsdecode(node.path)))
        assert len(data) == node.size
        assert len(node.chunks) == -(-node.size // r.chunk_size)
        for k, chunk in enumerate(node.chunks):
            piece = data[k * r.chunk_size : (k + 1) * r.chunk_size]
            assert len(piece) == chunk.uncompressed_size
            assert blake3.blake3(piece).digest() == chunk.digest
        count += 1
    return count


def test_cat_every_file_of_the_inline_blob(toc_blob):
    assert _check_cat(toc_blob) == 3
    text = b"".join(query.cat(toc_blob, "/lib.rs"))
    assert text.isascii() and len(text) == 678


def test_cat_every_file_of_the_separate_bootstrap(bootstrap):
    assert _check_cat(bootstrap) == 2
    assert b"".join(query.cat(bootstrap, "lib.rs"))[:2].isascii()


def test_cat_with_the_blob_given_as_a_file(vectors):
    with nydus_inspect.open_layer(str(vectors / BOOTSTRAP), blobs=[str(vectors / DATA_BLOB)]) as layer:
        assert _check_cat(layer) == 2


def test_cat_without_the_blob_names_it(vectors):
    with nydus_inspect.open_layer(str(vectors / BOOTSTRAP)) as layer:
        with pytest.raises(UsageError, match=DATA_BLOB_ID + r".*--blob-dir"):
            b"".join(query.cat(layer, "/lib.rs"))


def test_cat_of_missing_paths_and_directories(bootstrap):
    with pytest.raises(UsageError, match="no such path"):
        query.cat(bootstrap, "/nope")
    with pytest.raises(UsageError, match="not a regular file"):
        query.cat(bootstrap, "/")
    with pytest.raises(UsageError, match="no such path"):
        query.cat(bootstrap, "/lib.rs/x")


def test_open_layer_usage_errors(vectors, tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        nydus_inspect.open_layer(str(tmp_path / "absent"))
    with pytest.raises(UsageError, match="is a directory"):
        nydus_inspect.open_layer(str(vectors))
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(FormatError, match="empty"):
        nydus_inspect.open_layer(str(empty))


# ============================================================================ v5 bootstrap
def _result_tree(vectors) -> tuple[list, dict]:
    text = (vectors / REPEATABLE_RESULT).read_text()
    doc, _ = json.JSONDecoder().raw_decode(text)  # a `tree -J` listing, then md5sum lines
    root, report = doc
    return root, report


def _norm_result(entry: dict) -> tuple:
    kind = {"directory": "dir", "file": "file", "link": "symlink"}[entry["type"]]
    kids = tuple(_norm_result(c) for c in entry.get("contents", ())) if kind == "dir" else ()
    return (entry["name"], kind, entry.get("target"), kids)


def _tree_from_nodes(nodes) -> tuple:
    by_path: dict[bytes, list] = {}
    root = None
    for n in nodes:
        item = [
            fsdecode(n.name) if n.path != b"/" else "",
            n.type,
            fsdecode(n.target) if n.target else None,
            [],
        ]
        by_path[n.path] = item
        if n.path == b"/":
            root = item
        else:
            parent = n.path.rsplit(b"/", 1)[0] or b"/"
            by_path[parent][3].append(item)

    def freeze(item):
        return (item[0], item[1], item[2], tuple(freeze(k) for k in item[3]))

    return freeze(root)


class TestV5Bootstrap:
    def test_detected(self, vectors):
        with nydus_inspect.open_layer(str(vectors / V5_BOOTSTRAP)) as layer:
            assert layer.kind == KIND_BOOTSTRAP_V5 and layer.is_v5
            info = query.info(layer)
            assert info["bootstrap"]["version"] == 5
            assert info["bootstrap"]["superblock"]["flags"] == "0x9"  # none + sha256
            assert info["bootstrap"]["superblock"]["flags_names"] == ["compression_none", "hash_sha256"]
            assert len(info["bootstrap"]["blobs"]) == 1

    def test_listing_equals_the_result_tree(self, vectors):
        root, report = _result_tree(vectors)
        with nydus_inspect.open_layer(str(vectors / V5_BOOTSTRAP)) as layer:
            nodes = list(query.list_nodes(layer, "/", recursive=True))
        assert _tree_from_nodes(nodes) == _norm_result(root)
        assert report == {"type": "report", "directories": 26, "files": 27}
        # `tree` counts the 3 symlinks that resolve to directories (foo, root, root-1) as directories.
        assert len(nodes) - 1 == report["directories"] + report["files"]
        assert sum(n.type == DIR for n in nodes) - 1 + 3 == report["directories"]

    def test_subtree_and_symlinks(self, vectors):
        with nydus_inspect.open_layer(str(vectors / V5_BOOTSTRAP)) as layer:
            links = list(query.list_nodes(layer, "/symlink-test"))
            assert all(n.type == SYMLINK for n in links)
            assert {fsdecode(n.name): fsdecode(n.target) for n in links}["root-1"] == "/" * 17
            top = [fsdecode(n.path) for n in query.list_nodes(layer, "/")]
            assert top == ["/hardlink-test", "/normal-file-test", "/symlink-test"]
            (one,) = query.list_nodes(layer, "/hardlink-test/foo")
            assert one.type == REG and one.size == 944

    def test_hardlinks_form_one_group(self, vectors):
        with nydus_inspect.open_layer(str(vectors / V5_BOOTSTRAP)) as layer:
            nodes = {fsdecode(n.path): n for n in query.list_nodes(layer, "/", recursive=True)}
        group = [
            nodes[p] for p in ("/hardlink-test/foo", "/hardlink-test/test.sh", "/normal-file-test/test.sh")
        ]
        assert {n.nlink for n in group} == {3}
        assert len({n.hardlink for n in group}) == 1 and group[0].hardlink is not None

    def test_missing_path_is_a_usage_error(self, vectors):
        with nydus_inspect.open_layer(str(vectors / V5_BOOTSTRAP)) as layer:
            with pytest.raises(UsageError, match="no such path"):
                list(query.list_nodes(layer, "/nope"))

    def test_truncated_symlink_target_is_a_format_error(self, vectors, tmp_path):
        raw = (vectors / V5_BOOTSTRAP).read_bytes()
        cut = raw.rindex(b"../normal-file-test/test.sh") + 5  # inside the last symlink's target
        short = tmp_path / "short-v5"
        short.write_bytes(raw[:cut])
        with nydus_inspect.open_layer(str(short)) as layer:
            with pytest.raises(FormatError, match="i_symlink_size"):
                list(query.list_nodes(layer, "/", recursive=True))

    def test_cat_without_the_data_blob_names_it(self, vectors):
        # v5 files read (tests/test_old_layers.py); this vector comes without its data blob.
        with nydus_inspect.open_layer(str(vectors / V5_BOOTSTRAP)) as layer:
            with pytest.raises(UsageError, match="blob 0 .* not found"):
                b"".join(query.cat(layer, "/hardlink-test/foo"))


# ============================================================================ negative vectors
@pytest.mark.parametrize(
    ("rel", "text"),
    [(INVALID_BOOT_LAYER, "not a RAFS v6 bootstrap"), (INVALID_LAYER, "no image/image.boot")],
)
def test_negative_snapshotter_vectors(vectors, rel, text):
    path = str(vectors / rel)
    with nydus_inspect.open_layer(path) as layer:
        assert layer.kind == KIND_BOOTSTRAP_LAYER
        for op in (
            lambda: query.info(layer),
            lambda: list(query.list_nodes(layer, "/", recursive=True)),
            lambda: layer.rafs,
            lambda: list(query.chunks_report(layer)),
        ):
            with pytest.raises(FormatError) as exc:
                op()
            msg = str(exc.value)
            assert text in msg and msg.startswith(path + ": ") and "\n" not in msg
