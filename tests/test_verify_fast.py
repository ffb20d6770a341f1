"""The fast paths of verify (issue 6) give what the record-by-record paths give: bulk decoding of the blob.meta
columns, zstd runs decoded in one call, and the chunk work started ahead of the bootstrap walk."""

from __future__ import annotations

import random

import pytest
import zstandard

from nydus_inspect import codecs
from nydus_inspect.formats import blob_meta
from nydus_inspect.verify import blob_meta as verify_blob_meta
from nydus_inspect.verify import verify


def _cols_by_record(arr):
    cols = ([], [], [], [], [])
    for i in range(len(arr)):
        try:
            rec = arr[i]
        except Exception:  # noqa: BLE001 - unknown v2 flags
            for c, v in zip(cols, (None, None, None, None, False)):
                c.append(v)
            continue
        for c, v in zip(
            cols,
            (
                rec.compressed_offset,
                rec.compressed_size,
                rec.uncompressed_offset,
                rec.uncompressed_size,
                True,
            ),
        ):
            c.append(v)
    return cols


@pytest.mark.parametrize("v2", [False, True])
def test_columns_equal_record_decoding(v2, monkeypatch):
    """The columns, decoded a piece at a time (pieces of 64 records here, the last one short), are the
    records' fields."""
    monkeypatch.setattr(verify_blob_meta, "COLUMN_PIECE", 64)
    rng = random.Random(6)
    size = 24 if v2 else 16
    raw = bytes(rng.getrandbits(8) for _ in range(size * 500))
    arr = blob_meta.ChunkInfoArray(raw + b"tail", 500, v2)
    got = ([], [], [], [], [])
    firsts = []
    for first, cols in verify_blob_meta.column_pieces(arr):
        firsts.append(first)
        for g, c in zip(got, cols):
            g.extend(c)
    assert firsts == list(range(0, 500, 64))
    want = _cols_by_record(arr)
    if v2:
        assert not all(got[4]) and any(got[4])  # random flag bytes: some records do not decode
    assert list(got[4]) == want[4]
    for g, w in zip(got[:4], want[:4]):
        assert [x for x, ok in zip(g, want[4]) if ok] == [x for x in w if x is not None]


@pytest.mark.parametrize("big", [False, True])
def test_zstd_frames_is_decompress_of_each_frame(big):
    zc = zstandard.ZstdCompressor(level=3)
    pad = codecs.UNLOCKED_MIN if big else 0
    parts = [bytes([i]) * (1000 + 37 * i + pad) + bytes(range(i)) for i in range(1, 40)]
    frames, src = [], b""
    for p in parts:
        z = zc.compress(p)
        frames.append((len(src), len(z), len(p)))
        src += z
    out = codecs.zstd_frames(src, frames)
    if out is None:
        pytest.skip("no libzstd")
    assert [bytes(p) for p in out] == parts
    assert [bytes(p) for p in out] == [
        codecs.decompress(src[o : o + s], codecs.Compressor.ZSTD, n) for o, s, n in frames
    ]
    # Any frame that is not exactly what its tuple says refuses the run: sizes, boundaries, damaged data.
    off, stored, size = frames[5]
    assert codecs.zstd_frames(src, frames[:5] + [(off, stored, size + 1)] + frames[6:]) is None
    assert codecs.zstd_frames(src, frames[:5] + [(off, stored - 1, size)]) is None
    assert codecs.zstd_frames(src, frames[:5] + frames[6:]) is None  # a gap
    bad = bytearray(src)
    bad[off + stored // 2] ^= 0x40
    got = codecs.zstd_frames(bytes(bad), frames)
    assert got is None or [bytes(p) for p in got] != parts
    assert codecs.zstd_frames(src[: off + stored - 1], frames[:6]) is None


@pytest.mark.parametrize("batch, ahead", [(256, 20000), (2, 3), (1, 0)])
def test_report_same_with_and_without_head_start(tmp_path, monkeypatch, batch, ahead):
    """The chunk checks started ahead of the bootstrap walk report exactly what a sequential run reports, also
    when the findings waiting for collection reach their bound (``ahead``) and batches are small."""
    from nydus_inspect.verify import ahead as v
    from nydus_inspect.verify import chunks

    monkeypatch.setattr(chunks, "BATCH", batch)
    monkeypatch.setattr(chunks, "AHEAD_FINDINGS", ahead)
    from test_verify_core import make_tar

    from nydus_inspect import open_layer
    from nydus_inspect.codecs import Compressor
    from nydus_inspect.pack import PackOptions, pack

    src = make_tar(tmp_path / "src.tar")
    blob = tmp_path / "zstd.blob"
    pack(str(src), str(blob), PackOptions(compressor=Compressor.ZSTD, chunk_size=0x1000))
    data = bytearray(blob.read_bytes())
    with open_layer(str(blob)) as layer:
        infos = layer.chunk_infos
        recs = [infos[i] for i in range(len(infos))]
    for rec in recs[::2]:  # damage every other chunk's compressed bytes
        data[rec.compressed_offset + rec.compressed_size // 2] ^= 0x10
    bad = tmp_path / "bad.blob"
    bad.write_bytes(bytes(data))

    def report(head_start: bool, limit: int):
        start = v._Ahead.start
        if not head_start:
            v._Ahead.start = lambda self: None
        try:
            with open_layer(str(bad)) as layer:
                return verify(layer, workers=2, limit=limit).to_json()
        finally:
            v._Ahead.start = start

    fast, slow = report(True, 1000), report(False, 1000)
    assert not fast["ok"]
    assert fast == slow
    assert {f["chunk"] for f in fast["findings"] if f["check"] in ("chunk.read", "chunk.digest")} == {
        r.index for r in recs[::2]
    }
    fast, slow = report(True, 1), report(False, 1)
    assert fast["suppressed"]
    assert fast == slow


def test_blob_id_and_image_blob_sha256_share_one_read(tmp_path):
    """A blob named by its sha256: one read gives its id and the image.blob entry's sha256, and the report is
    the sequential one, damaged or not."""
    import hashlib

    from test_verify_core import make_tar

    from nydus_inspect import open_layer
    from nydus_inspect.codecs import Compressor
    from nydus_inspect.pack import PackOptions, pack

    src = make_tar(tmp_path / "src.tar")
    packed = tmp_path / "packed.blob"
    pack(str(src), str(packed), PackOptions(compressor=Compressor.NONE, chunk_size=0x1000))
    data = packed.read_bytes()
    good = tmp_path / hashlib.sha256(data).hexdigest()
    good.write_bytes(data)
    flipped = bytearray(data)
    flipped[100] ^= 1  # inside image.blob (chunk data)
    bad = tmp_path / hashlib.sha256(data[:-1] + b"x").hexdigest()  # a name that is not its sha256
    bad.write_bytes(bytes(flipped))

    from nydus_inspect.verify import ahead as v

    def report(path, head_start: bool):
        start = v._Ahead.start
        if not head_start:
            v._Ahead.start = lambda self: None
        try:
            with open_layer(str(path)) as layer:
                if head_start:
                    assert v._blob_id_pass(layer) is not None
                return verify(layer, workers=2).to_json()
        finally:
            v._Ahead.start = start

    ok = report(good, True)
    assert ok["ok"] and ok["checked"]["blob ids"] == 1, ok
    assert ok == report(good, False)
    damaged = report(bad, True)
    checks = {f["check"] for f in damaged["findings"]}
    assert {"toc.entry", "blob.id"} <= checks, checks
    assert damaged == report(bad, False)


def test_zstd_frames_never_mixes_small_and_large_frames():
    """Small and large chunks are decoded by different zstd builds in codecs.decompress: a run is one or the other."""
    zc = zstandard.ZstdCompressor(level=3)
    parts = [bytes(codecs.UNLOCKED_MIN), b"small" * 20]
    zs = [zc.compress(p) for p in parts]
    frames = [(0, len(zs[0]), len(parts[0])), (len(zs[0]), len(zs[1]), len(parts[1]))]
    src = b"".join(zs)
    if codecs.zstd_frames(src, frames[:1]) is None:
        pytest.skip("no libzstd")
    assert codecs.zstd_frames(src, frames) is None
    assert [bytes(p) for p in codecs.zstd_frames(src, frames[1:])] == parts[1:]


def test_flip_refused_by_small_chunk_decoder_is_found(tmp_path):
    """A flipped bit that the system libzstd decodes to the original bytes but the zstd that decodes small chunks
    one by one refuses (seed 13 of the fault injection, bit 3153): the run refuses it too, and verify names the
    chunk."""
    from test_fault_injection import SPEC

    from nydus_inspect import open_layer
    from nydus_inspect.errors import FormatError
    from nydus_inspect.testing import build_layer

    blob = build_layer(
        SPEC,
        tmp_path / "pack-zstd.blob",
        compressor="zstd",
        chunk_size=0x1000,
        bootstrap=str(tmp_path / "pack-zstd.boot"),
    )
    data = bytearray(blob.read_bytes())
    bit = 3153
    data[bit // 8] ^= 1 << (bit % 8)
    bad = tmp_path / "bad.blob"
    bad.write_bytes(bytes(data))
    with open_layer(str(bad)) as layer:
        infos = layer.chunk_infos
        rec = next(
            infos[i]
            for i in range(len(infos))
            if infos[i].compressed_offset <= bit // 8 < infos[i].compressed_offset + infos[i].compressed_size
        )
        raw = bytes(data[rec.compressed_offset : rec.compressed_offset + rec.compressed_size])
        try:
            codecs.decompress(raw, codecs.Compressor.ZSTD, rec.uncompressed_size)
            pytest.skip("this zstd build decodes the flipped chunk")
        except FormatError:
            pass
        report = verify(layer, workers=2)
    assert any(f.chunk == rec.index and f.check == "chunk.read" for f in report.findings), report.findings
