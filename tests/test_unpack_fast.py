"""The fast paths of unpack: batched chunk decoding and the positional (pwritev) tar writer give
exactly what the one-chunk-at-a-time decoder and the sequential writer give, and damage is still
reported by name."""

from __future__ import annotations

import io
import os
import tarfile

import pytest
from fixtures_util import (
    fixture_tars_fixture,  # noqa: F401 (provides the fixture_tars fixture)
    pack_layer,
    run_cli,
)

from nydus_inspect import codecs
from nydus_inspect.errors import FormatError, UsageError
from nydus_inspect.layer import open_layer
from nydus_inspect.model import REG
from nydus_inspect.unpack import walk_image


def _many_small_files(path, n: int = 300) -> str:
    """A tar of many small, compressible files plus a few larger ones: many chunks per decode group."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        for i in range(n):
            body = " ".join(str(i * j * 7919 % 100003) for j in range(40 + i % 400)).encode()
            info = tarfile.TarInfo(f"d{i % 7}/f{i:04d}")
            info.size = len(body)
            t.addfile(info, io.BytesIO(body))
        big = os.urandom(3 << 18) + bytes(1 << 19)
        info = tarfile.TarInfo("big")
        info.size = len(big)
        t.addfile(info, io.BytesIO(big))
    return str(path)


def _chunks(layer):
    out = []
    for node in walk_image(layer):
        if node.type == REG:
            out.extend(layer.rafs.chunks(node))
    return out


@pytest.mark.parametrize("compressor", ["zstd", "lz4_block", "none"])
def test_decode_many_equals_decode(tmp_path, compressor):
    blob = tmp_path / "l.blob"
    pack_layer(_many_small_files(tmp_path / "s.tar"), blob, compressor=compressor, chunk_size=0x100000)
    with open_layer(str(blob)) as layer:
        chunks = _chunks(layer)
        assert len(chunks) > 300
        one = [bytes(layer.chunk_reader.decode(c)) for c in chunks]
        many = [bytes(d) for d in layer.chunk_reader.decode_many(chunks)]
        assert many == one


def test_decode_many_names_a_damaged_small_chunk(tmp_path):
    blob = tmp_path / "l.blob"
    pack_layer(_many_small_files(tmp_path / "s.tar"), blob, chunk_size=0x100000)
    with open_layer(str(blob)) as layer:
        chunks = _chunks(layer)
        victim = next(c for c in chunks[50:] if c.compressed and c.compressed_size > 64)
    raw = bytearray(blob.read_bytes())
    raw[victim.compressed_offset + victim.compressed_size // 2] ^= 0x10
    bad = tmp_path / "bad.blob"
    bad.write_bytes(bytes(raw))
    with open_layer(str(bad)) as layer:
        with pytest.raises(FormatError) as alone:
            for c in _chunks(layer):
                layer.chunk_reader.decode(c)
        with pytest.raises(FormatError) as batched:
            layer.chunk_reader.decode_many(_chunks(layer))
    assert f"chunk {victim.ci_index} " in str(batched.value)
    assert str(batched.value) == str(alone.value)
    # unpack stops with that one-line error (exit 2) and leaves no output behind.
    out = tmp_path / "out.tar"
    proc = run_cli("unpack", "-q", bad, "-o", out)
    assert proc.returncode == 2, proc.stderr
    assert f"chunk {victim.ci_index} " in proc.stderr.decode()
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".out.tar")]


@pytest.mark.parametrize("name", ["every-type.tar", "longnames.tar", "xattrs.tar", "dedup.tar"])
def test_positional_writer_equals_stream_writer(tmp_path, fixture_tars, name):
    blob = tmp_path / "l.blob"
    pack_layer(fixture_tars[name], blob)
    to_file = tmp_path / "out.tar"
    assert run_cli("unpack", "-q", blob, "-o", to_file).returncode == 0
    streamed = run_cli("unpack", "-q", blob, "-o", "-")
    assert streamed.returncode == 0
    assert to_file.read_bytes() == streamed.stdout
    assert len(streamed.stdout) % (20 * 512) == 0


def test_batch_path_runs(tmp_path, monkeypatch):
    """decode_many really decodes the small zstd chunks in batches: one-by-one decoding is left to
    the chunks too big for a batch."""
    blob = tmp_path / "l.blob"
    pack_layer(_many_small_files(tmp_path / "s.tar"), blob, chunk_size=0x100000)
    with open_layer(str(blob)) as layer:
        chunks = _chunks(layer)
        reader = layer.chunk_reader
        alone: list = []
        real = reader.decode
        monkeypatch.setattr(reader, "decode", lambda c, *a, **k: alone.append(c) or real(c, *a, **k))
        reader.decode_many(chunks)
    small = [c for c in chunks if c.compressed and c.uncompressed_size < codecs.UNLOCKED_MIN]
    assert len(small) > 100
    assert not set(map(id, alone)) & set(map(id, small))


def test_positional_writer_in_many_runs_with_short_writes(tmp_path, fixture_tars, monkeypatch):
    """Tiny runs (a big file split between them), laid out in small slices, and a pwritev that writes a
    few bytes less than asked each time still give the stream writer's bytes."""
    from nydus_inspect import unpack

    blob = tmp_path / "l.blob"
    pack_layer(_many_small_files(tmp_path / "s.tar"), blob, chunk_size=0x10000)
    streamed = run_cli("unpack", "-q", blob, "-o", "-").stdout
    real = os.pwritev
    calls = []

    def short(fd, parts, offset):
        calls.append(len(parts))
        total = sum(len(p) for p in parts)
        if total > 700:  # leave the tail of the run for the retry
            keep, out = total - 333, []
            for p in parts:
                out.append(memoryview(p)[: max(0, min(len(p), keep))])
                keep -= len(p)
            return real(fd, [p for p in out if len(p)], offset)
        return real(fd, parts, offset)

    monkeypatch.setattr(unpack, "GROUP_BYTES", 100_000)
    monkeypatch.setattr(unpack, "GROUP_PIECES", 7)
    monkeypatch.setattr(unpack, "SLICE_ENTRIES", 13)  # many slices, ending anywhere in a run
    monkeypatch.setattr(unpack.os, "pwritev", short)
    out = tmp_path / "o.tar"
    with open_layer(str(blob)) as layer:
        unpack.to_tar(layer, str(out))
    assert len(calls) > 50
    assert out.read_bytes() == streamed


def test_decode_many_out_of_blob_order(tmp_path):
    """Chunks asked for out of blob order, or twice (as dedup makes files share chunks), each still decode to
    what decode gives them."""
    blob = tmp_path / "l.blob"
    pack_layer(_many_small_files(tmp_path / "s.tar"), blob, chunk_size=0x100000)
    with open_layer(str(blob)) as layer:
        chunks = _chunks(layer)
        source = layer.blob_file(0).source
        assert layer.chunk_reader.blob_of(0).digests  # blob.digest, read once for every check, not counted
        assert layer.chunk_infos is not None  # blob.meta's records (their CRC32Cs): the same
        order = chunks[::-1] + chunks[::3] + chunks[5:40]
        preads: list = []
        real = source.pread
        source.pread = lambda off, size, *a: preads.append(size) or real(off, size, *a)
        many = [bytes(d) for d in layer.chunk_reader.decode_many(order)]
        in_order = len(preads)
        preads.clear()
        layer.chunk_reader.decode_many(chunks)
        source.pread = real
        assert many == [bytes(layer.chunk_reader.decode(c)) for c in order]
    # Chunks that lie close together in the blob share one read, in whatever order they are asked for.
    assert len(preads) == 1 and in_order == 1


def test_library_calls_leave_the_interpreter_alone(tmp_path, fixture_tars):
    """pack(), verify() and unpack called from Python keep the cyclic GC and the switch interval as they
    found them, while they run too (seen from their progress callbacks and chunk decoding)."""
    import gc
    import sys

    from nydus_inspect import unpack
    from nydus_inspect.chunks.decode import ChunkReader
    from nydus_inspect.pack import PackOptions, pack
    from nydus_inspect.verify import verify

    before = (gc.isenabled(), sys.getswitchinterval())
    seen = []
    blob = tmp_path / "l.blob"
    pack(
        str(fixture_tars["every-type.tar"]),
        str(blob),
        PackOptions(progress=lambda *a: seen.append((gc.isenabled(), sys.getswitchinterval()))),
    )
    with open_layer(str(blob)) as layer:
        verify(layer, progress=lambda *a: seen.append((gc.isenabled(), sys.getswitchinterval())))
        real = ChunkReader.decode_group

        def watched(self, *a, **k):
            seen.append((gc.isenabled(), sys.getswitchinterval()))
            return real(self, *a, **k)

        ChunkReader.decode_group = watched
        try:
            unpack.to_tar(layer, str(tmp_path / "out.tar"))
        finally:
            ChunkReader.decode_group = real
    assert len(seen) > 3
    assert set(seen) == {before}
    assert (gc.isenabled(), sys.getswitchinterval()) == before


def test_the_cli_tunes_the_process_for_bulk_commands_only(tmp_path, monkeypatch):
    """The command line, not the library, turns the GC off and shortens the switch interval, for the bulk
    commands, and puts both back when the command ends (also when it fails)."""
    import gc
    import sys

    from nydus_inspect import cli
    from nydus_inspect import pack as pack_module

    before = (gc.isenabled(), sys.getswitchinterval())
    seen = []

    def fake_pack(*a, **k):
        seen.append((gc.isenabled(), sys.getswitchinterval()))
        raise UsageError("stop here")

    monkeypatch.setattr(pack_module, "pack", fake_pack)
    assert cli.main(["pack", str(tmp_path / "x.tar"), "-o", str(tmp_path / "x.blob"), "-q"]) == 2
    assert seen == [(False, cli.SWITCH_INTERVAL)]
    assert (gc.isenabled(), sys.getswitchinterval()) == before


def test_slices_are_bounded_by_header_bytes(tmp_path, monkeypatch):
    """Big PAX headers (xattrs repeat on every name of a hard-linked file) end a slice early: what is held
    while the workers write is bounded in bytes, and the slices still tile the whole tar."""
    from nydus_inspect import unpack

    src = tmp_path / "links.tar"
    with tarfile.open(src, "w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo("file")
        info.size = 5
        info.pax_headers = {f"SCHILY.xattr.user.k{i}": "v" * 1000 for i in range(4)}
        t.addfile(info, io.BytesIO(b"hello"))
        for i in range(200):
            link = tarfile.TarInfo(f"link{i:03d}")
            link.type, link.linkname = tarfile.LNKTYPE, "file"
            t.addfile(link)
    blob = tmp_path / "l.blob"
    pack_layer(str(src), blob)
    monkeypatch.setattr(unpack, "SLICE_HEADER_BYTES", 20_000)
    with open_layer(str(blob)) as layer:
        slices = list(unpack._layout_slices(layer, unpack.UnpackResult()))
        out = tmp_path / "o.tar"
        unpack.to_tar(layer, str(out))
    assert len(slices) > 10
    pos = 0
    for runs in slices:
        held = sum(len(p) for _, pieces in runs for p in pieces if isinstance(p, bytes))
        assert held < 20_000 + 8192  # the cap plus the header that crossed it
        for offset, pieces in runs:
            assert offset == pos
            pos += sum(p.uncompressed_size if hasattr(p, "uncompressed_size") else len(p) for p in pieces)
    assert pos == out.stat().st_size
    assert out.read_bytes() == run_cli("unpack", "-q", blob, "-o", "-").stdout
