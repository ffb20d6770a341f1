"""Memory is bounded by design: each command runs here under RLIMIT_AS of 512 MiB on inputs whose naive
handling needs gigabytes (a 1 GiB file of one chunk repeated, 4,000 nested 255-byte directory names, one
file with 20,000 hard links)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import threading

import hostile
import pytest

BOMB = 1 << 30


def _ok(proc) -> None:
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 0, err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    """The dedup bomb as a .tar.zst (about 30 KB) and as a layer (a few KB)."""
    d = tmp_path_factory.mktemp("bomb")
    case = next(hostile.dedup_bomb(BOMB))
    case.write(d / "bomb.tar.zst")
    _ok(hostile.run_limited("pack", "-q", d / "bomb.tar.zst", "-o", d / "bomb.blob"))
    assert os.path.getsize(d / "bomb.blob") < 1 << 20
    return d


def test_unpack_to_stdout_streams_the_file(bomb):
    r, w = os.pipe()
    got = []

    def drain():
        total = 0
        with os.fdopen(r, "rb") as f:
            while block := f.read(1 << 20):
                total += len(block)
        got.append(total)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        proc = hostile.run_limited("unpack", "-q", bomb / "bomb.blob", "-o", "-", stdout=w)
    finally:
        os.close(w)
        reader.join()
    _ok(proc)
    # Two headers (the directory, the file), 1 GiB of data, then the trailer up to a whole 10240-byte record.
    assert got[0] >= BOMB + 2 * 512 and got[0] % 10240 == 0, got


@pytest.mark.parametrize("how", ["tar-file", "to-dir"])
def test_unpack_writes_the_file_a_chunk_at_a_time(tmp_path, bomb, how):
    args = ["-o", tmp_path / "out.tar"] if how == "tar-file" else ["--to-dir", tmp_path / "out"]
    _ok(hostile.run_limited("unpack", "-q", bomb / "bomb.blob", *args))
    if how == "to-dir":
        out = tmp_path / "out" / "bomb" / "zeros"
        assert out.stat().st_size == BOMB
        with open(out, "rb") as f:
            f.seek(BOMB - 4096)
            assert f.read() == bytes(4096)


def test_diff_and_verify_source_stream_both_sides(bomb):
    _ok(hostile.run_limited("diff", bomb / "bomb.tar.zst", bomb / "bomb.blob"))
    _ok(hostile.run_limited("verify", "-q", bomb / "bomb.blob", "--source", bomb / "bomb.tar.zst"))


def test_merge_of_deep_names_keeps_paths_linear(tmp_path):
    boot = tmp_path / "deep.boot"
    next(hostile.deep_layers()).write(boot)
    merged = tmp_path / "merged.boot"
    _ok(hostile.run_limited("merge", boot, "-o", merged, timeout=60))
    # A merged bootstrap merges into itself; fsck.erofs overflows its stack at this depth, so it checks
    # the same tree 50 levels deep.
    _ok(hostile.run_limited("merge", merged, "-o", tmp_path / "again.boot", timeout=60))
    assert (tmp_path / "again.boot").read_bytes() == merged.read_bytes()
    (tmp_path / "deep50.boot").write_bytes(hostile.deep_bootstrap(50))
    _ok(hostile.run_limited("merge", tmp_path / "deep50.boot", "-o", tmp_path / "m50.boot"))
    fsck = shutil.which("fsck.erofs")
    if fsck:
        assert subprocess.run([fsck, str(tmp_path / "m50.boot")], capture_output=True).returncode == 0


def test_diff_of_many_hard_links_is_linear(tmp_path):
    src = tmp_path / "links.tar"
    next(hostile.many_hardlinks()).write(src)
    _ok(hostile.run_limited("pack", "-q", src, "-o", tmp_path / "links.blob"))
    _ok(hostile.run_limited("diff", src, tmp_path / "links.blob", timeout=60))


def test_a_big_plain_tar_is_not_read_whole_to_learn_it_is_no_bootstrap_layer(tmp_path):
    """A plain tar is first tried as a bootstrap layer (image/image.boot in a tar): looking for that member
    reads headers and seeks past data, so a 1 GiB member (a sparse file here, read as zeros) costs neither a
    copy of the tar nor its pages. The tar is mapped, which RLIMIT_AS counts: peak RSS is measured instead, by
    a parent of its own (RUSAGE_CHILDREN of this process would count earlier tests' children too)."""
    import sys
    import tarfile

    tar = tmp_path / "big.tar"
    info = tarfile.TarInfo("big.bin")
    info.size = BOMB
    with open(tar, "wb") as f:
        f.write(info.tobuf(format=tarfile.GNU_FORMAT))
        f.seek(BOMB, os.SEEK_CUR)
        f.write(bytes(1024))
    measure = (
        "import resource, subprocess, sys; "
        "p = subprocess.run(sys.argv[1:], capture_output=True); "
        "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, p.stdout.decode().strip())"
    )
    out = subprocess.run(
        [sys.executable, "-c", measure, sys.executable, "-m", "nydus_inspect", "diff", str(tar), str(tar)],
        capture_output=True,
        check=True,
    ).stdout.decode()
    code, peak_kib, said = out.split(maxsplit=2)
    assert (code, said.strip()) == ("0", "no differences"), out
    assert int(peak_kib) < 256 << 10, f"peak RSS {int(peak_kib) >> 10} MiB"


# ---------------------------------------------------------------------------- per-entry memory
def _peak_rss_kib(*args) -> int:
    """Peak RSS (KiB) of ``nydus-inspect ARGS``, measured by a parent of its own (RUSAGE_CHILDREN here
    would count every earlier test's children); the command must succeed."""
    import sys

    measure = (
        "import resource, subprocess, sys; "
        "p = subprocess.run(sys.argv[1:], capture_output=True); "
        "sys.stderr.write(p.stderr.decode('utf-8', 'replace')); "
        "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root}
    proc = subprocess.run(
        [sys.executable, "-c", measure, sys.executable, "-m", "nydus_inspect", *map(str, args)],
        capture_output=True,
        env=env,
        check=True,
    )
    code, peak = proc.stdout.decode().split()
    assert code == "0" and b"Traceback" not in proc.stderr, proc.stderr.decode()
    return int(peak)


def _small_files_tar(path, n: int) -> None:
    """``n`` one-line files, 1,000 to a directory: all metadata, next to no data."""
    import io
    import tarfile

    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        for d in range(-(-n // 1000)):
            info = tarfile.TarInfo(f"d{d:03d}")
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tf.addfile(info)
        for i in range(n):
            data = b"file %d\n" % i
            info = tarfile.TarInfo(f"d{i // 1000:03d}/f{i:06d}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def small_files(tmp_path_factory):
    """Tars of 10,000 and 50,000 small files and their layers, with pack's and diff's peak RSS for each."""
    d = tmp_path_factory.mktemp("entries")
    peaks = {}
    for n in (10_000, 50_000):
        tar, blob = d / f"{n}.tar", d / f"{n}.blob"
        _small_files_tar(tar, n)
        peaks["pack", n] = _peak_rss_kib("pack", "-q", tar, "-o", blob)
        peaks["diff", n] = _peak_rss_kib("diff", tar, blob)
    return peaks


#: Bytes of peak RSS per entry (the growth from 10,000 to 50,000 entries, so the interpreter's own
#: footprint cancels out). A Python object per entry and field, a mapped tar kept whole, a copy of the
#: bootstrap or a second tree of the layer each put the figure above these bounds (pack measured about
#: 2,400 and diff about 3,200 bytes an entry before they were made compact; about 1,900 and 2,200 after;
#: pack about 1,000 once it kept its chunks in columns and streamed the bootstrap (see below), diff about
#: 1,500 once the layer's side was compared as it was walked instead of held as a dict; pack about 860, then
#: 650 once its layout slots and its dedup index were columns too; pack about 370 and diff about 760 once the
#: tar's tree was held in columns and the look for a bootstrap layer's image.boot kept no member).
PER_ENTRY = {"pack": 480, "diff": 1000}


@pytest.mark.parametrize("command", sorted(PER_ENTRY))
def test_memory_per_entry_stays_compact(small_files, command):
    grown = (small_files[command, 50_000] - small_files[command, 10_000]) * 1024
    per_entry = grown / 40_000
    assert 0 < per_entry < PER_ENTRY[command], (
        f"{command}: {per_entry:.0f} bytes of peak RSS per entry "
        f"({small_files[command, 10_000] >> 10} MiB at 10k, {small_files[command, 50_000] >> 10} MiB at 50k)"
    )


def test_a_tar_tree_is_held_in_columns(tmp_path):
    """The tree read from a tar is held in columns (typed arrays, the names in one byte string), not as an
    object per entry: heap bytes per entry of the finished tree of 20,000 one-line files, 1,000 to a directory
    (about 70; a Node per entry, its path and a slot in its directory's dict took about 300). Both the tree
    kept and the peak while it was read are bounded (the table that finds an entry by name while the tar is
    read lives in a map of its own, which tracemalloc does not see: 4 to 16 bytes an entry)."""
    import io
    import tracemalloc

    from nydus_inspect.tarstream import read_tar

    n = 20_000
    _small_files_tar(tmp_path / "t.tar", n)
    data = (tmp_path / "t.tar").read_bytes()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        tree = read_tar(io.BufferedReader(io.BytesIO(data)), None, "t.tar")
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(1 for _ in tree.walk_ids()) == n + n // 1000 + 1
    per_entry, peak_per_entry = (held - before) / n, (peak - before) / n
    assert 0 < per_entry < 100, f"the tree holds {per_entry:.0f} bytes per entry"
    assert peak_per_entry < 130, f"reading the tree peaked at {peak_per_entry:.0f} bytes per entry"


def _traced_peak(*args) -> int:
    """Peak of the Python heap (tracemalloc) while ``nydus-inspect ARGS`` runs, in a process of its own and
    as the command line runs it (for pack: the cyclic garbage collector off, so what a cycle holds stays)."""
    import sys

    script = (
        "import sys, tracemalloc; from nydus_inspect.cli import main; tracemalloc.start(); "
        "rc = main(sys.argv[1:]); print(rc, tracemalloc.get_traced_memory()[1])"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        capture_output=True,
        env={**os.environ, "PYTHONPATH": root},
        cwd=root,
        check=True,
    )
    code, peak = proc.stdout.decode().splitlines()[-1].split()
    assert code == "0" and b"Traceback" not in proc.stderr, proc.stderr.decode()
    return int(peak)


def test_pack_keeps_little_beside_the_tree(tmp_path):
    """Beside the tree it reads from the tar, pack keeps a layout slot per inode and a few columns per chunk,
    and lets them and the tree go before it compresses the bootstrap. Heap bytes per entry
    (the growth from 2,000 to 10,000 one-line files, so the start-up cancels out): a ChunkRef and a list per
    file, slots that refer to each other (kept to the end with the collector off) or the bootstrap built in
    memory while the tree is held each put it above the bound, and so do a layout object per inode, an index
    of every node by identity, a dict of the chunk digests or a tree of a Node per entry (about 570 an entry
    in all; about 250 with the tree in columns)."""
    peaks = {}
    for n in (2_000, 10_000):
        tar = tmp_path / f"{n}.tar"
        _small_files_tar(tar, n)
        peaks[n] = _traced_peak("pack", "-q", tar, "-o", tmp_path / f"{n}.blob")
    per_entry = (peaks[10_000] - peaks[2_000]) / 8_000
    assert 0 < per_entry < 350, f"pack: {per_entry:.0f} heap bytes per entry ({peaks})"


def test_a_large_bootstrap_is_compressed_a_piece_at_a_time(tmp_path, monkeypatch):
    """Past STREAM_OVER, pack compresses the bootstrap a piece at a time, its frame kept in a temporary file:
    compressed in one call, the frame is on the heap whole (and the mapped bootstrap all resident), which at
    a million inodes alone is 60 MB beside 197. Heap while the bootstrap is written, small pieces here: the
    output's 1 MiB write buffer and a few pieces (the one call: the whole frame, ~3 MB)."""
    import tracemalloc

    from fixtures_util import pack_layer

    from nydus_inspect import pack as pack_mod

    tar = tmp_path / "files.tar"
    _small_files_tar(tar, 50_000)
    monkeypatch.setattr(pack_mod, "STREAM_OVER", 1 << 20)
    monkeypatch.setattr(pack_mod, "PIECE", 64 << 10)
    seen = []
    real = pack_mod.write_boot_and_toc

    def traced(out, boot, entries):
        tracemalloc.start()
        try:
            real(out, boot, entries)
            seen.append((len(boot), entries[-1].compressed_size, tracemalloc.get_traced_memory()[1]))
        finally:
            tracemalloc.stop()

    monkeypatch.setattr(pack_mod, "write_boot_and_toc", traced)
    pack_layer(tar, tmp_path / "files.blob")
    ((size, stored, peak),) = seen
    assert stored > 2 << 20 and size > 2 * stored, (size, stored)
    assert peak < (1 << 20) + 8 * (64 << 10), f"{peak} bytes of heap to write a {size}-byte bootstrap"


def test_analyze_keeps_little_for_each_entry_of_a_layer(tmp_path):
    """analyze holds a layer's entries in columns while it walks and merges it, and the top layer's files
    stay there instead of becoming objects of the merged tree (no layer above looks their names up). Heap
    bytes per entry beside the decoded bootstrap (the growth from 10,000 to 30,000 one-line files, so the
    start-up cancels out): an object and a dict slot per name in the merged tree, or the model's full inode
    cache kept through the walk, each put it above the bound."""
    from nydus_inspect.layer import SPILL_BOOTSTRAP, Layer

    beside = {}
    for n in (10_000, 30_000):
        tar, blob = tmp_path / f"{n}.tar", tmp_path / f"{n}.blob"
        _small_files_tar(tar, n)
        _ok(hostile.run_limited("pack", "-q", tar, "-o", blob))
        with Layer(str(blob)) as layer:
            boot = len(layer.rafs.buf)
        assert boot < SPILL_BOOTSTRAP  # decoded onto the heap, where tracemalloc counts it
        beside[n] = _traced_peak("analyze", "--json", blob) - boot
    per_entry = (beside[30_000] - beside[10_000]) / 20_000
    assert 0 < per_entry < 180, (
        f"analyze: {per_entry:.0f} heap bytes per entry beside the bootstrap ({beside})"
    )


# ---------------------------------------------------------------------------- files of many chunks
@pytest.fixture(scope="module")
def fine_bomb(bomb):
    """The dedup bomb packed in 4 KiB chunks: one file of 262,144 chunk records (a list of them as objects
    would cost over 100 MiB; the bootstrap holds them in 2 MiB)."""
    out = bomb / "bomb-4k.blob"
    if not out.exists():
        _ok(hostile.run_limited("pack", "-q", "--chunk-size", "0x1000", bomb / "bomb.tar.zst", "-o", out))
    return out


@pytest.mark.parametrize("command", ["unpack", "verify", "ls", "analyze"])
def test_a_file_of_many_chunks_is_not_held_as_objects(fine_bomb, command):
    args = {
        "unpack": ["unpack", "-q", fine_bomb, "-o", os.devnull],
        "verify": ["verify", "-q", fine_bomb],
        "ls": ["ls", "-l", "--chunks", fine_bomb, "/bomb/zeros"],
        "analyze": ["analyze", "--json", fine_bomb],
    }[command]
    # Measured with the chunks held as a list of objects (analyze: as a list of tuples): unpack 134, verify
    # 131, ls 100, analyze 62 MiB; read lazily about 70, 58, 26 and 26.
    bound = {"unpack": 100, "verify": 96, "ls": 64, "analyze": 48}[command]
    peak = _peak_rss_kib(*args) >> 10
    assert peak < bound, f"{command}: peak RSS {peak} MiB for one file of 262,144 chunks"


def test_a_bootstrap_is_decoded_without_a_second_copy(tmp_path):
    """The bootstrap is kept as bytes: zstd decodes it straight into them (decoded into a bytearray and then
    made bytes, both were held at once: twice its size, hundreds of MiB for a layer of a million inodes)."""
    import tracemalloc

    from nydus_inspect.layer import Layer

    tar, blob = tmp_path / "files.tar", tmp_path / "files.blob"
    _small_files_tar(tar, 20_000)
    hostile.run_limited("pack", "-q", tar, "-o", blob).check_returncode()
    with Layer(str(blob)) as layer:
        tracemalloc.start()
        try:
            size = len(layer.rafs.buf)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert size > 1 << 20
    assert peak < 1.5 * size, f"decoding a {size}-byte bootstrap peaked at {peak} bytes"


def _mapping_rss(name_part: str) -> int | None:
    """Resident bytes of this process's mapping of the (unlinked) file whose name holds ``name_part``."""
    rss, inside = None, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5:  # a mapping's first line
                inside = len(head) >= 6 and name_part in head[5]
            elif inside and head[0] == "Rss:":
                rss = (rss or 0) + int(head[1]) * 1024
    return rss


@pytest.fixture(scope="module")
def many_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("spill")
    tar, blob = d / "files.tar", d / "files.blob"
    _small_files_tar(tar, 20_000)
    hostile.run_limited("pack", "-q", tar, "-o", blob).check_returncode()
    return blob


def _tree(layer) -> list:
    rafs = layer.rafs
    return [
        (n.path, n.type, n.size, n.mode, b"".join(layer.read_file(n)) if n.type == "file" else b"")
        for n in rafs.walk()
    ]


def test_a_large_bootstrap_is_mapped_from_a_temporary_file(many_files, monkeypatch):
    """A compressed bootstrap over the limit is decoded into an unlinked file and mapped: the same tree and
    bytes as decoded into memory, no copy on the heap, and a walk gives its pages back as it goes."""
    import mmap
    import tracemalloc

    from nydus_inspect import codecs, model
    from nydus_inspect import layer as layer_mod

    with layer_mod.Layer(str(many_files)) as layer:
        assert isinstance(layer.bootstrap_bytes(), bytes)  # under the limit
        want = _tree(layer)
        size = len(layer.bootstrap_bytes())
        stored = layer.entry_location(layer_mod.IMAGE_BOOT)[1]
    monkeypatch.setattr(layer_mod, "SPILL_BOOTSTRAP", 1 << 20)
    monkeypatch.setattr(model, "RELEASE_EVERY", 1000)
    with layer_mod.Layer(str(many_files)) as layer:
        tracemalloc.start()
        try:
            buf = layer.bootstrap_bytes()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert isinstance(buf, mmap.mmap) and len(buf) == size > 2 << 20
        # A piece or two of the input and of the output at a time: neither the output nor the input whole.
        bound = 4 * codecs.STREAM_PIECE + (256 << 10)
        assert peak < bound < size, (
            f"a {size}-byte bootstrap ({stored} stored) cost {peak} bytes of heap to map"
        )
        assert _tree(layer) == want
        # Walked, a bootstrap read through the map keeps only the pages since the last release resident;
        # the mapping read without releases keeps them all.
        resident = _mapping_rss("nydus-inspect-bootstrap-")
        assert resident is not None and resident < size / 2, (resident, size)
        layer.rafs.release_pages = None
        assert _tree(layer) == want
        assert _mapping_rss("nydus-inspect-bootstrap-") > size / 2


def test_the_toc_check_hashes_a_bootstrap_as_it_decodes(many_files):
    """verify's ToC check hashes image.boot while it is decoded (and read) a piece at a time: neither the
    decoded bootstrap nor its compressed bytes are held, for a bootstrap of any size."""
    import hashlib
    import tracemalloc

    from nydus_inspect import layer as layer_mod
    from nydus_inspect.verify.toc import _entry_sha256

    with layer_mod.Layer(str(many_files)) as layer:
        boot = layer.bootstrap_bytes()
        stored = layer.entry_location(layer_mod.IMAGE_BOOT)[1]
        tracemalloc.start()
        try:
            recorded, got = _entry_sha256(layer, layer_mod.IMAGE_BOOT)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert recorded == got == hashlib.sha256(boot).hexdigest()
    assert peak < stored < len(boot), (
        f"hashing a {len(boot)}-byte bootstrap ({stored} stored) took {peak} bytes"
    )


def test_a_large_bootstrap_that_lies_is_refused(many_files, tmp_path, monkeypatch):
    """Through the temporary file too, a bootstrap whose bytes differ from the ToC's digest, or whose zstd
    data does not decode to the size the ToC gives, is an error naming image.boot, not a tree."""
    from nydus_inspect import layer as layer_mod
    from nydus_inspect.errors import FormatError

    monkeypatch.setattr(layer_mod, "SPILL_BOOTSTRAP", 1 << 20)
    with layer_mod.Layer(str(many_files)) as layer:
        off, size, _comp, _usize, _digest = layer.entry_location(layer_mod.IMAGE_BOOT)
    data = bytearray(many_files.read_bytes())
    for at, what in (
        (off + size // 2, "does not decode|sha256|digest"),
        (off + size - 1, "decode|sha256|digest"),
    ):
        bad = tmp_path / "bad.blob"
        copy = bytearray(data)
        copy[at] ^= 0x40
        bad.write_bytes(copy)
        with layer_mod.Layer(str(bad)) as layer, pytest.raises(FormatError, match=what) as exc:
            layer.bootstrap_bytes()
        assert "image.boot" in str(exc.value) and "\n" not in str(exc.value)


# ---------------------------------------------------------------------------- the mount
def _list_through_the_mount(fs, monkeypatch) -> int:
    """No FUSE: every directory of the mount listed through the file system's handlers, as ``find`` lists it
    (readdir of each, the entries/ tree too); how many entries were listed."""
    import pyfuse3
    import trio

    from nydus_inspect.mount.entries import ROOT_INODE

    def reply(token, name, attr, next_id) -> bool:
        token.append((name, attr.st_mode, attr.st_ino))
        return True

    monkeypatch.setattr(pyfuse3, "readdir_reply", reply)
    listed = 0

    async def walk(ino: int, seen: set) -> None:
        nonlocal listed
        got: list = []
        await fs.readdir(await fs.opendir(ino, None), 0, got)
        listed += len(got)
        for name, mode, child in got:
            if name not in (b".", b"..") and stat.S_ISDIR(mode) and child not in seen:
                seen.add(child)
                await walk(child, seen)

    async def run() -> None:
        fs.attach()
        try:
            await walk(ROOT_INODE, {ROOT_INODE})
        finally:
            fs.detach()

    trio.run(run)
    return listed


def test_the_mount_holds_little_for_each_entry_it_lists(many_files, monkeypatch):
    """Listing a tree through the mount (find, ls -lR) leaves a few dozen bytes per entry behind, not a decoded
    listing with an index and a position per file, nor a sidecar made whole to learn its size (chunks.json
    grows with the layer); and a mapped bootstrap's pages go back to the kernel as the listing goes."""
    import tracemalloc

    from nydus_inspect import layer as layer_mod
    from nydus_inspect.mount.fs import NydusFS
    from nydus_inspect.mount.sources import open_sources

    monkeypatch.setattr(layer_mod, "SPILL_BOOTSTRAP", 1 << 20)
    sources = open_sources([str(many_files)])
    try:
        fs = NydusFS(sources)
        size = len(fs.rafs.buf)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            entries = _list_through_the_mount(fs, monkeypatch)
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        resident = _mapping_rss("nydus-inspect-bootstrap-")
    finally:
        sources.close()
    assert entries > 20_000
    # A listing kept as tuples with an index of its names for each directory, a position kept for each file
    # and chunks.json held whole to give its size cost several times this bound; a compact listing is under it.
    per_entry = (after - before) / entries
    assert per_entry < 200, f"{per_entry:.0f} bytes held per entry listed"
    assert resident is not None and size > 2 << 20 and resident < size / 2, (resident, size)


def test_a_cache_of_tiny_chunks_stays_within_its_limit():
    """A chunk cache is bounded by what its entries cost, not only by their bytes: a layer of one-line files
    decodes a million chunks of a few bytes each, a few hundred bytes of key and bookkeeping apiece."""
    import tracemalloc

    from nydus_inspect.chunks.decode import ChunkCache

    limit = 1 << 20
    cache = ChunkCache(limit)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(50_000):
            cache.put((0, 1_000_000 + 40 * i, 40, 17, 2_000_000 + 17 * i), b"file %08d\n" % i)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert cache.get((0, 1_000_000 + 40 * 49_999, 40, 17, 2_000_000 + 17 * 49_999)) == b"file %08d\n" % 49_999
    assert held < 1.5 * limit, f"a cache of {limit} bytes holds {held} bytes"


def _distinct_chunks_tar(path, n: int) -> None:
    """A .tar.zst of 100 files of ``n`` distinct 4 KiB blocks in all (each zeros but for its number), a few
    hundred KB however many blocks."""
    import tarfile

    import zstandard

    per_file = n // 100
    with open(path, "wb") as raw, zstandard.ZstdCompressor().stream_writer(raw) as z:
        with tarfile.open(fileobj=z, mode="w|", format=tarfile.GNU_FORMAT) as tf:
            for f in range(100):
                info = tarfile.TarInfo(f"f{f:03d}")
                info.size = per_file * 4096

                class _Blocks:
                    def __init__(self, first: int) -> None:
                        self.next, self.end, self.buf = first, first + per_file, b""

                    def read(self, size: int = -1) -> bytes:
                        while (size < 0 or len(self.buf) < size) and self.next < self.end:
                            self.buf += self.next.to_bytes(8, "little") + bytes(4088)
                            self.next += 1
                        size = len(self.buf) if size < 0 else size
                        out, self.buf = self.buf[:size], self.buf[size:]
                        return out

                tf.addfile(info, _Blocks(f * per_file))


def test_pack_spills_what_it_keeps_of_each_distinct_chunk(tmp_path, monkeypatch):
    """What pack keeps of each distinct chunk it stores (its blob.meta record, digest and CRC) goes to
    temporary files, and its dedup index keeps a 4-byte tag of each digest beside a table of 4-byte slots at
    most three quarters full. Peak heap bytes per distinct 4 KiB chunk while the chunker is held (until the
    bootstrap is compressed; the growth from 20,000 to 100,000 chunks, so that start-up cancels out): the
    columns on the heap and a table of chunk indexes at most half full took about 78."""
    import tracemalloc

    from nydus_inspect import pack as pack_mod

    seen = []
    real = pack_mod.write_boot_and_toc

    def traced(out, boot, entries):
        seen.append(tracemalloc.get_traced_memory()[1])
        return real(out, boot, entries)

    monkeypatch.setattr(pack_mod, "write_boot_and_toc", traced)
    peaks = {}
    for n in (20_000, 100_000):
        tar = tmp_path / f"{n}.tar.zst"
        _distinct_chunks_tar(tar, n)
        tracemalloc.start()
        try:
            result = pack_mod.pack(
                str(tar), str(tmp_path / f"{n}.blob"), pack_mod.PackOptions(chunk_size=0x1000)
            )
        finally:
            tracemalloc.stop()
        assert result.unique_chunks == n
        peaks[n] = seen[-1]
    per_chunk = (peaks[100_000] - peaks[20_000]) / 80_000
    assert 0 < per_chunk < 40, f"pack: {per_chunk:.0f} heap bytes per distinct chunk ({peaks})"
