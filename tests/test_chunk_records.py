"""The chunk table's index (model.ChunkRecords) answers as the dict of field tuples it replaced: on the
bootstrap of a packed layer (many files, duplicate chunks across them, a merged image of two blobs) and on
hand-made tables (a duplicate key, sparse chunk indexes, a table that is no whole number of records)."""

from __future__ import annotations

import io
import random
import struct
import subprocess
import sys
import tarfile
from array import array

import pytest
from fixtures_util import pack_layer

from nydus_inspect.formats import rafs_v6
from nydus_inspect.layer import Layer
from nydus_inspect.model import ChunkRecords

RECORD = rafs_v6.CHUNK_TABLE_ENTRY.struct


def _reference(buf, off: int, size: int) -> dict:
    """What the chunk table meant before: a dict of field tuples, the first record of a key winning."""
    out: dict = {}
    for vals in RECORD.iter_unpack(buf[off : off + size]):
        out.setdefault((vals[1], vals[8]), vals)
    return out


def _tar(path, seed: int) -> None:
    rng = random.Random(seed)
    shared = rng.randbytes(3 * 4096)
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        for i in range(40):
            data = shared + rng.randbytes(rng.randrange(1, 9000)) if i % 3 else shared
            info = tarfile.TarInfo(f"s{seed}/d{i % 4}/f{i:02d}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def _same(rafs) -> None:
    off, size = rafs.ext.s_chunk_table_offset, rafs.ext.s_chunk_table_size
    want = _reference(rafs.buf, off, size)
    got = ChunkRecords(rafs.buf, off, size)
    assert len(want) > 10 and len(got) == len(want)
    for key, vals in want.items():
        assert key in got and got.get(key) == vals == got[key]
    nblobs = len(rafs.blobs)
    for key in [(0, len(want) + 5), (nblobs, 0), (0, -1), (7, 3)]:
        assert key not in got and got.get(key) is None
        with pytest.raises(KeyError):
            got[key]


def test_a_packed_and_a_merged_bootstrap(tmp_path):
    blobs = []
    for seed in (1, 2):
        _tar(tmp_path / f"{seed}.tar", seed)
        pack_layer(tmp_path / f"{seed}.tar", tmp_path / f"{seed}.blob")
        blobs.append(tmp_path / f"{seed}.blob")
        with Layer(str(blobs[-1])) as layer:
            _same(layer.rafs)
    merged = tmp_path / "merged.boot"
    proc = subprocess.run(
        [sys.executable, "-m", "nydus_inspect", "merge", "-o", str(merged), *map(str, blobs)],
        capture_output=True,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    with Layer(str(merged), blobs=[str(b) for b in blobs]) as layer:
        assert len(layer.rafs.blobs) == 2
        _same(layer.rafs)


def test_hand_made_tables():
    rows = [RECORD.pack(bytes([i]) * 32, i % 2, 0, i, i, i, i, i, i // 2, 0) for i in range(10)]
    rows.append(RECORD.pack(b"x" * 32, 0, 0, 9, 9, 9, 9, 9, 0, 0))  # a second record of (0, 0)
    rows.append(RECORD.pack(b"y" * 32, 3, 0, 1, 1, 1, 1, 1, 10**9, 0))  # a sparse index
    table = b"PAD" + b"".join(rows)
    got, want = ChunkRecords(table, 3, len(table) - 3), _reference(table, 3, len(table) - 3)
    assert len(got) == len(want) == 11
    assert {k: got[k] for k in want} == want
    assert got[(0, 0)][0] == bytes(32)  # the first record of a key wins
    with pytest.raises(struct.error):
        ChunkRecords(table, 3, len(table) - 4)


def _one_blob_table(order: list[int]) -> bytes:
    """Records of blob 2 whose chunk indexes are ``order`` (record i's fields all i), at offset 3."""
    return b"PAD" + b"".join(
        RECORD.pack(bytes([i]) * 32, 2, 0, i, i, i, i, i, ci, 0) for i, ci in enumerate(order)
    )


def _both(table: bytes) -> tuple[ChunkRecords, dict]:
    """The index of the table at offset 3 of ``table``, and the dict it stands for."""
    return ChunkRecords(table, 3, len(table) - 3), _reference(table, 3, len(table) - 3)


def test_hand_made_tables_of_one_blob():
    """Tables naming one blob take the column-wise path: a repeated key (the first record wins), indexes out
    of order, at an odd offset; and a sparse one, which goes back to the general loop."""
    table = _one_blob_table([4, 0, 3, 3, 1, 2, 0, 5])
    got, want = _both(table)
    assert len(got) == len(want) == 6
    assert {k: got[k] for k in want} == want
    assert got[(2, 3)][0] == bytes([2]) * 32 and got[(2, 0)][0] == bytes([1]) * 32
    assert (2, 6) not in got and (0, 0) not in got
    sparse = table + RECORD.pack(b"z" * 32, 2, 0, 9, 9, 9, 9, 9, 10**9, 0)
    got, want = _both(sparse)
    assert len(got) == len(want) == 7 and {k: got[k] for k in want} == want


@pytest.mark.parametrize("step", [1, 3, 8, 64])
def test_one_blob_tables_read_a_step_at_a_time(monkeypatch, step):
    """The column-wise path reads a table in steps (so that no single C call holds the GIL over millions of
    records): the answer is the same whatever the step, a repeated key across steps still going to its first
    record, and a second blob named only in a later step still sending the table to the general loop."""
    monkeypatch.setattr(ChunkRecords, "_STEP", step)
    table = _one_blob_table([4, 0, 3, 3, 1, 2, 0, 5, 7, 6])
    got, want = _both(table)
    assert len(got) == len(want) == 8
    assert {k: got[k] for k in want} == want
    assert got[(2, 0)][0] == bytes([1]) * 32 and got[(2, 3)][0] == bytes([2]) * 32
    mixed = table + RECORD.pack(b"w" * 32, 5, 0, 9, 9, 9, 9, 9, 0, 0)
    assert ChunkRecords._one_blob(memoryview(mixed)[3:]) is None
    got, want = _both(mixed)
    assert len(got) == len(want) == 9 and {k: got[k] for k in want} == want


# ---------------------------------------------------------------------------- files of many chunks
def test_lazy_chunks_are_the_list_they_replace(tmp_path, monkeypatch):
    """A file of more than LAZY_CHUNKS chunks gets a LazyChunks: the same ChunkRefs as the list, by index
    (negative too), slice and iteration (across its blocks), and the same bytes read through it."""
    from nydus_inspect import model
    from nydus_inspect.chunks.ref import LazyChunks

    _tar(tmp_path / "t.tar", 3)
    pack_layer(tmp_path / "t.tar", tmp_path / "t.blob")
    with Layer(str(tmp_path / "t.blob")) as layer:
        files = [n for n in layer.rafs.walk() if n.type == "file" and n.size > 3 * 4096]
        eager = {n.path: layer.rafs.chunks(n) for n in files}
        want = {n.path: b"".join(layer.read_file(n)) for n in files}
    monkeypatch.setattr(model, "LAZY_CHUNKS", 2)
    with Layer(str(tmp_path / "t.blob")) as layer:
        files = [n for n in layer.rafs.walk() if n.type == "file" and n.size > 3 * 4096]
        assert files and len(files) == len(eager)
        for n in files:
            lazy = layer.rafs.chunks(n)
            full = eager[n.path]
            assert isinstance(lazy, LazyChunks) and isinstance(full, list) and len(full) > 2
            assert list(lazy) == full and len(lazy) == len(full)
            assert [lazy[k] for k in range(-len(full), len(full))] == full + full
            assert lazy[1:] == full[1:] and lazy[::2] == full[::2] and lazy[5:1] == [] == full[5:1]
            with pytest.raises(IndexError):
                lazy[len(full)]
            assert b"".join(layer.read_file(n)) == want[n.path]
            # The node holds its LazyChunks (node.chunks), which must not hold the node: a cycle would never
            # be freed by the bulk commands, which run without the cycle collector.
            assert n.chunks is lazy and not _reaches(lazy, n)


def _reaches(start, target, depth: int = 8) -> bool:
    """Whether ``target`` is reachable from ``start`` through what it holds (functions by their closures,
    bound methods by their functions, not their instance: a layer reaches everything)."""
    import gc
    import types

    def held(o):
        if isinstance(o, types.FunctionType):
            return list(o.__closure__ or ())
        if isinstance(o, types.MethodType):
            return [o.__func__]
        if isinstance(o, types.CellType):
            return [o.cell_contents]
        return gc.get_referents(o)

    seen, frontier = {id(start)}, [start]
    for _ in range(depth):
        nxt = []
        for o in frontier:
            for r in held(o):
                if r is target:
                    return True
                if id(r) not in seen and not isinstance(r, (bytes, int, str, type, types.ModuleType)):
                    seen.add(id(r))
                    nxt.append(r)
        frontier = nxt
    return False


def test_a_bad_record_of_a_lazy_file_is_found_when_its_chunks_are_asked_for(tmp_path, monkeypatch):
    """Every chunk of a LazyChunks is checked before chunks() returns, as a list's are: a chunk index whose
    blkaddr disagrees with its record fails that call, not a later read."""
    from nydus_inspect import model
    from nydus_inspect.errors import FormatError

    _tar(tmp_path / "t.tar", 4)
    pack_layer(tmp_path / "t.tar", tmp_path / "t.blob")
    with Layer(str(tmp_path / "t.blob")) as layer:
        node = max((n for n in layer.rafs.walk() if n.type == "file"), key=lambda n: n.size)
        start, count = layer.rafs._chunk_index_span(node)
        boot = bytearray(layer.rafs.buf)
    assert count > 2
    where = start + 8 * (count - 1) + 4  # the last chunk's blkaddr
    boot[where : where + 4] = struct.pack("<I", struct.unpack_from("<I", boot, where)[0] + 1)
    bad = tmp_path / "bad.boot"
    bad.write_bytes(boot)
    monkeypatch.setattr(model, "LAZY_CHUNKS", 2)
    with Layer(str(bad), blobs=[str(tmp_path / "t.blob")]) as layer:
        node = layer.rafs.lookup(node.path)
        with pytest.raises(FormatError, match=f"chunk {count - 1}: blkaddr disagrees"):
            layer.rafs.chunks(node)


@pytest.mark.parametrize("damage", ["duplicate", "crc-flag"])
def test_verify_finds_a_duplicate_record_and_a_stray_crc_flag(tmp_path, damage):
    """verify's chunk-table check, which reads the table in place: a record whose key an earlier record holds
    is named with that record (the first, the one readers take), and a record whose HAS_CRC32 flag differs
    from the rest of its blob's is named by its offset."""
    from nydus_inspect.verify import verify

    _tar(tmp_path / "t.tar", 5)
    pack_layer(tmp_path / "t.tar", tmp_path / "t.blob")
    with Layer(str(tmp_path / "t.blob")) as layer:
        boot = bytearray(layer.rafs.buf)
        base, count = layer.rafs.ext.s_chunk_table_offset, layer.rafs.ext.s_chunk_table_size // RECORD.size
    assert count > 4
    victim = base + 3 * RECORD.size
    if damage == "duplicate":
        boot[victim + 72 : victim + 76] = boot[base + 72 : base + 76]  # record 3 gets record 0's index
    else:
        flags = struct.unpack_from("<I", boot, victim + 36)[0]
        assert flags & rafs_v6.CHUNK_HAS_CRC32
        struct.pack_into("<I", boot, victim + 36, flags & ~rafs_v6.CHUNK_HAS_CRC32)
        struct.pack_into("<I", boot, victim + 76, 0)  # no crc either, so only the flag's difference shows
    bad = tmp_path / "bad.boot"
    bad.write_bytes(boot)
    with Layer(str(bad), blobs=[str(tmp_path / "t.blob")]) as layer:
        found = [f for f in verify(layer).findings if f.check == "chunk.table"]
    if damage == "duplicate":
        assert any("duplicate record (also record 0)" in f.message and f.offset == victim + 72 for f in found)
    else:
        [f] = [f for f in found if "HAS_CRC32 differs" in f.message]
        assert f.offset == victim + 36 and f.found == f"{count - 1} of {count} records with a crc"


def test_a_mapped_table_gives_its_pages_back_as_it_is_looked_up(tmp_path, monkeypatch):
    """The chunk table is sorted by digest, so the walk looks its records up in no order: a mapped table gives
    its own range of pages back after keying it and every RELEASE_LOOKUPS lookups, and the chunks read after
    are the ones read before."""
    _tar(tmp_path / "t.tar", 5)
    pack_layer(tmp_path / "t.tar", tmp_path / "t.blob", bootstrap=str(tmp_path / "t.boot"))
    with Layer(str(tmp_path / "t.boot"), blobs=[str(tmp_path / "t.blob")]) as layer:
        want = {n.path: list(layer.rafs.chunks(n)) for n in layer.rafs.walk() if n.type == "file"}
    monkeypatch.setattr(ChunkRecords, "RELEASE_LOOKUPS", 5)
    spans: list[tuple[int, ...]] = []
    with Layer(str(tmp_path / "t.boot"), blobs=[str(tmp_path / "t.blob")]) as layer:
        rafs = layer.rafs
        release = rafs.release_pages
        assert release is not None  # a bootstrap file is mapped

        def recorded(*span: int) -> None:
            spans.append(span)
            release(*span)

        rafs.release_pages = recorded
        got = {n.path: list(rafs.chunks(n)) for n in rafs.walk() if n.type == "file"}
        off, size = rafs.ext.s_chunk_table_offset, rafs.ext.s_chunk_table_size
    assert got == want
    lookups = sum(map(len, got.values()))
    table = [s for s in spans if s]
    assert len(table) == 1 + lookups // 5, (len(table), lookups)
    import mmap

    for start, length in table:
        assert start % mmap.PAGESIZE == 0 and start <= off < off + size == start + length


def test_keying_a_mapped_table_gives_its_pages_back_as_it_goes(tmp_path):
    """Keying reads every record once: a mapped table's pages are let go behind it, so that a table of ten
    million records (800 MB) is never resident all at once. Measured in a child: its peak RSS over keying
    a 160 MB table (the pages of a just-written file are in the page cache: mapping them costs no I/O)."""
    n = 2_000_000
    table = bytearray(RECORD.size * n)
    words = memoryview(table).cast("I")
    words[18::20] = memoryview(array("I", range(n)))  # chunk index of each record; blob index 0
    words.release()
    path = tmp_path / "table"
    path.write_bytes(table)
    del table
    code = f"""
import functools, mmap, re
from nydus_inspect.model import ChunkRecords
def hwm():
    return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) << 10
with open({str(path)!r}, "rb") as f:
    buf = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
before = hwm()
records = ChunkRecords(buf, 0, len(buf), functools.partial(buf.madvise, mmap.MADV_DONTNEED))
assert len(records) == {n} and records.first((0, {n - 1})) == {n - 1}
print(hwm() - before)
"""
    grew = int(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True).stdout)
    # The index itself is 4 bytes a record (8 MB); the table is 160 MB.
    assert grew < 40 << 20, f"peak RSS grew {grew >> 20} MiB keying a 160 MB table"
