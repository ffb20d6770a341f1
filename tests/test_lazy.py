"""Images read lazily from a registry: the range-reading source (chunks.source.RemoteBlob) and the persistent
chunk cache (chunks.store.ChunkStore) on real blob bytes, then `mount`, `cat`, `ls`, `info` and `verify` of
docker:// references against a real registry (Debian's docker-registry) and the fault proxy of
tests/registry_util.py: bytes equal to the source, little fetched, a second mount offline from the cache,
Range ignored, dropped connections and 500s giving the right bytes or a clean EIO, credentials kept out of
logs and output."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import threading
import time
from pathlib import Path

import pytest
from fixtures_util import run_cli
from registry_util import Proxy, TokenServer, push, run_registry
from test_check import tar
from test_convert import simple_layout
from test_mount import Mounts, fuse  # noqa: F401 - fuse is a fixture

from nydus_inspect.chunks.source import RemoteBlob
from nydus_inspect.chunks.store import ChunkStore
from nydus_inspect.codecs import Compressor
from nydus_inspect.errors import NydusInspectError
from nydus_inspect.layer import Layer
from nydus_inspect.pack import PackOptions, pack

PASSWORD = "lazy-s3cret-pa55"


# ---------------------------------------------------------------------------- the image used throughout
def _files() -> dict[str, bytes]:
    """Small files in a/ (several per read-around window), a few large ones in z/ (several chunks each),
    some compressible, some not."""
    rnd = random.Random(7)
    files = {f"a/small{i:03d}": rnd.randbytes(rnd.randrange(100, 12000)) for i in range(120)}
    files["a/text"] = b"the quick brown fox\n" * 5000
    for i in range(3):
        files[f"z/big{i}"] = rnd.randbytes(3 << 20) + b"tail%d" % i
    return files


FILES = _files()


def _tar() -> bytes:
    dirs = sorted({name.rsplit("/", 1)[0] for name in FILES})
    return tar(
        [{"name": d, "type": "dir"} for d in dirs] + [{"name": n, "data": d} for n, d in FILES.items()]
    )


@pytest.fixture(scope="module")
def blob_file(tmp_path_factory) -> Path:
    """A nydus layer blob of FILES, written by our pack."""
    d = tmp_path_factory.mktemp("blob")
    (d / "layer.tar").write_bytes(_tar())
    pack(str(d / "layer.tar"), str(d / "layer.blob"), PackOptions())
    return d / "layer.blob"


@pytest.fixture(scope="module")
def nydus_layout(tmp_path_factory) -> Path:
    """The OCI image of FILES converted to nydus by our convert."""
    d = tmp_path_factory.mktemp("image")
    src = simple_layout(d / "src", [_tar()], ["gzip"])
    proc = run_cli("convert", src, d / "nydus")
    assert proc.returncode == 0, proc.stderr
    return d / "nydus"


def _layout_doc(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()


def _manifest(layout: Path) -> tuple[bytes, dict]:
    desc = json.loads((layout / "index.json").read_text())["manifests"][0]
    raw = _layout_doc(layout, desc["digest"])
    return raw, json.loads(raw)


class Counting:
    """A fetch function over a real file, counting what it was asked for."""

    def __init__(self, path: Path, fail: list | None = None) -> None:
        self.data = path.read_bytes()
        self.calls: list[tuple[int, int]] = []
        self.fail = fail if fail is not None else []
        self.lock = threading.Lock()

    def __call__(self, offset: int, size: int) -> bytes:
        with self.lock:
            self.calls.append((offset, size))
            if self.fail:
                raise self.fail.pop(0)
        return self.data[offset : offset + size]

    @property
    def fetched(self) -> int:
        return sum(n for _, n in self.calls)


# ---------------------------------------------------------------------------- RemoteBlob
def test_remote_blob_reads_are_the_files_bytes_and_few_requests(blob_file):
    fetch = Counting(blob_file)
    src = RemoteBlob("remote", len(fetch.data), fetch)
    rnd = random.Random(1)
    for _ in range(300):
        off = rnd.randrange(len(fetch.data))
        n = rnd.randrange(0, min(70000, len(fetch.data) - off) + 1)
        assert src.pread(off, n) == fetch.data[off : off + n]
    # Reading the whole blob front to back, 16 KiB at a time, makes few requests: the windows grow.
    fetch2 = Counting(blob_file)
    src2 = RemoteBlob("remote", len(fetch2.data), fetch2)
    got = b"".join(src2.pread(o, min(16384, len(fetch2.data) - o)) for o in range(0, len(fetch2.data), 16384))
    assert got == fetch2.data
    assert len(fetch2.calls) < len(fetch2.data) / RemoteBlob.MAX_WINDOW + 12, fetch2.calls
    assert fetch2.fetched == len(fetch2.data)  # nothing fetched twice
    with pytest.raises(NydusInspectError, match="outside"):
        src2.pread(len(fetch2.data) - 1, 2)


def test_remote_blob_threads_wait_for_a_window_instead_of_fetching_it_again(blob_file):
    fetch = Counting(blob_file)
    src = RemoteBlob("remote", len(fetch.data), fetch)
    errors = []

    def reader(seed: int) -> None:
        rnd = random.Random(seed)
        for _ in range(200):
            off = rnd.randrange(0, 1 << 20)
            if src.pread(off, 4096) != fetch.data[off : off + 4096]:
                errors.append(off)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    spans = sorted(fetch.calls)
    assert all(a + n <= b for (a, n), (b, _) in zip(spans, spans[1:])), "a byte was fetched twice"


def test_remote_blob_falls_back_to_the_whole_blob_when_range_is_ignored(blob_file, tmp_path):
    class Ignored(NydusInspectError):
        pass

    fetch = Counting(blob_file, fail=[Ignored("answered 200")])
    wholes = []

    def whole() -> str:
        wholes.append(1)
        return str(blob_file)

    src = RemoteBlob("remote", len(fetch.data), fetch, whole=whole, fallback=Ignored)
    assert src.pread(1000, 5000) == fetch.data[1000:6000]
    assert src.pread(0, len(fetch.data)) == fetch.data
    assert wholes == [1] and len(fetch.calls) == 1
    src.close()


def test_remote_blob_failure_is_raised_and_the_next_read_asks_again(blob_file):
    fetch = Counting(blob_file, fail=[NydusInspectError("registry: 500 (after retries)")])
    src = RemoteBlob("remote", len(fetch.data), fetch)
    with pytest.raises(NydusInspectError, match="500"):
        src.pread(0, 100)
    assert src.pread(0, 100) == fetch.data[:100]


def test_remote_blob_hint_of_the_whole_blob_fetches_it_whole(blob_file):
    fetch = Counting(blob_file)
    src = RemoteBlob("remote", len(fetch.data), fetch, whole=lambda: str(blob_file))
    src.will_need()
    assert src.pread(12345, 100) == fetch.data[12345:12445]
    assert fetch.calls == []
    src.close()


# ---------------------------------------------------------------------------- the chunk store
def _remote_layer(blob_file: Path, fetch, store: ChunkStore) -> Layer:
    src = RemoteBlob(str(blob_file), len(fetch.data), fetch, store=store)
    return Layer(str(blob_file), source=src)


def _read_all(layer: Layer) -> dict[str, bytes]:
    out = {}
    for node in layer.rafs.walk():
        name = os.fsdecode(node.path).lstrip("/")
        if name in FILES:
            out[name] = b"".join(layer.read_file(node))
    return out


def test_chunk_store_serves_a_second_reader_without_fetching(blob_file, tmp_path):
    first = Counting(blob_file)
    layer = _remote_layer(blob_file, first, ChunkStore(str(tmp_path / "chunks")))
    assert _read_all(layer) == FILES
    # Chunks are kept as the blob stores them (compressed), each once.
    chunks = {c.compressed_offset: c for n in layer.rafs.walk() for c in (layer.rafs.chunks(n) or [])}
    stored = sum(p.stat().st_size for p in (tmp_path / "chunks").glob("*.data"))
    assert stored == sum(c.compressed_size for c in chunks.values())
    assert stored < sum(c.uncompressed_size for c in chunks.values()) - 90_000  # a/text compresses
    layer.close()
    # A new process's view of the same directory: every chunk comes from it; only the metadata is read.
    again = Counting(blob_file)
    layer = _remote_layer(blob_file, again, ChunkStore(str(tmp_path / "chunks")))
    assert _read_all(layer) == FILES
    chunk_bytes = sum(c.compressed_size for n in layer.rafs.walk() for c in (layer.rafs.chunks(n) or []))
    assert again.fetched < first.fetched - chunk_bytes // 2
    layer.close()


def test_chunk_store_damage_is_dropped_and_fetched_again(blob_file, tmp_path):
    root = tmp_path / "chunks"
    layer = _remote_layer(blob_file, Counting(blob_file), ChunkStore(str(root)))
    assert _read_all(layer) == FILES
    layer.close()
    data = root / "0.data"
    raw = bytearray(data.read_bytes())
    for i in range(0, len(raw), 4096):
        raw[i] ^= 0xFF  # every stored chunk damaged
    data.write_bytes(bytes(raw))
    with open(root / "0.index", "ab") as f:
        f.write(b"\x01" * 20)  # a record cut short, as by a crash
    fetch = Counting(blob_file)
    layer = _remote_layer(blob_file, fetch, ChunkStore(str(root)))
    assert _read_all(layer) == FILES
    assert fetch.fetched > 3 << 20  # the damaged chunks were fetched again, not served
    layer.close()


def test_chunk_store_is_bounded(tmp_path):
    store = ChunkStore(str(tmp_path / "chunks"), limit=400_000)
    for i in range(100):
        store.put("blake3", hashlib.sha256(b"%d" % i).digest(), bytes([i]) * 10_000, Compressor.NONE, 10_000)
    held = sum(p.stat().st_size for p in (tmp_path / "chunks").glob("*.data"))
    assert held <= 400_000 + 100_000
    assert store.get("blake3", hashlib.sha256(b"99").digest(), 10_000) == (
        bytes([99]) * 10_000,
        Compressor.NONE,
    )
    assert store.get("blake3", hashlib.sha256(b"0").digest(), 10_000) is None  # the oldest went first


# ---------------------------------------------------------------------------- a real registry
@pytest.fixture
def lazy_mounts(fuse, tmp_path):  # noqa: F811 - fuse is test_mount's fixture
    m = Mounts(tmp_path)
    yield m
    assert not m.cleanup()


@pytest.fixture
def served(nydus_layout, tmp_path):
    """(registry host, proxy in front of it) with the nydus image of FILES pushed as lazy:1."""
    with run_registry(tmp_path / "reg") as host:
        push(nydus_layout, f"{host}/lazy:1")
        proxy = Proxy(host)
        try:
            yield host, proxy
        finally:
            proxy.close()


def cli(tmp_path: Path, *args):
    proc = run_cli(*args, "--cache-dir", tmp_path / "cache")
    return proc.returncode, proc.stdout, proc.stderr.decode(errors="replace")


def lazy_counts(err: str) -> tuple[int, int]:
    """(bytes fetched, bytes in all) of the blobs read lazily, as --stats says; (0, 0) when none was opened."""
    line = next(line for line in err.splitlines() if line.startswith("registry: fetched"))
    if "lazily read" not in line:
        return 0, 0
    words = line.split("(")[1].split()
    return int(words[0]), int(words[2])


def test_cat_ls_info_fetch_only_what_they_read(served, nydus_layout, tmp_path):
    host, _ = served
    ref = f"docker://{host}/lazy:1"
    rc, out, err = cli(tmp_path, "cat", ref, "/a/small005", "--stats")
    assert rc == 0 and out == FILES["a/small005"], err
    fetched, total = lazy_counts(err)
    assert total > 9 << 20 and fetched < total // 20, err
    rc, out, err = cli(tmp_path, "ls", "-l", ref, "/z", "--stats")
    assert rc == 0 and b"big2" in out, err
    assert lazy_counts(err)[0] == 0, err  # ls reads no chunk, and the blob's end is kept on disk
    rc, out, err = cli(tmp_path, "cat", ref, "/z/big1", "--stats")
    assert rc == 0 and out == FILES["z/big1"], err
    assert lazy_counts(err)[0] < (3 << 20) + (1 << 20), err
    rc, out, err = cli(tmp_path, "verify", ref, "--stats")
    assert rc == 0, out + err.encode()
    rc, out, err = cli(tmp_path, "info", ref, "--json")
    assert rc == 0 and json.loads(out)["bootstrap"], err


def _read_tree(root: Path, names) -> dict[str, bytes]:
    return {n: (root / n).read_bytes() for n in names}


def test_lazy_mount_serves_the_image_and_its_documents(served, nydus_layout, lazy_mounts, tmp_path):
    host, _ = served
    mp = lazy_mounts.mount(f"docker://{host}/lazy:1", "--cache-dir", tmp_path / "cache")
    size = int(os.getxattr(mp, "user.nydus.size"))
    assert int(os.getxattr(mp, "user.nydus.fetched")) < size // 10  # ready before the data is fetched
    assert _read_tree(mp / "rootfs", FILES) == FILES
    assert size // 2 < int(os.getxattr(mp, "user.nydus.fetched")) <= size
    raw, manifest = _manifest(nydus_layout)
    assert (mp / "entries" / "manifest.json").read_bytes() == raw
    assert (mp / "entries" / "config.json").read_bytes() == _layout_doc(
        nydus_layout, manifest["config"]["digest"]
    )
    blob = manifest["layers"][0]["digest"].split(":")[1]
    assert int(os.getxattr(mp / "entries" / blob, "user.nydus.size")) == manifest["layers"][0]["size"]
    assert (mp / "entries" / blob / "toc.json").is_file()
    lazy_mounts.umount(mp)
    # Again, with the chunks cached: nothing is fetched, the mount's read-ahead hints included.
    mp = lazy_mounts.mount(f"docker://{host}/lazy:1", "--cache-dir", tmp_path / "cache")
    assert _read_tree(mp / "rootfs", FILES) == FILES
    assert int(os.getxattr(mp, "user.nydus.fetched")) == 0
    lazy_mounts.umount(mp)


def test_second_mount_is_offline_from_the_cache(nydus_layout, lazy_mounts, tmp_path):
    cache = tmp_path / "cache"
    read_before = [n for n in FILES if n.startswith("a/")] + ["z/big0"]
    with run_registry(tmp_path / "reg") as host:
        push(nydus_layout, f"{host}/lazy:1")
        mp = lazy_mounts.mount(f"docker://{host}/lazy:1", "--cache-dir", cache, "--no-readahead")
        assert _read_tree(mp / "rootfs", read_before) == {n: FILES[n] for n in read_before}
        lazy_mounts.umount(mp)
    # The registry is gone: the image is opened from the cache, and what was read before is served.
    mp = lazy_mounts.mount(f"docker://{host}/lazy:1", "--cache-dir", cache, "--no-readahead")
    assert _read_tree(mp / "rootfs", read_before) == {n: FILES[n] for n in read_before}
    assert int(os.getxattr(mp, "user.nydus.fetched")) == 0
    # A chunk never fetched cannot be had: EIO and one log line for each such chunk; the mount keeps serving.
    with pytest.raises(OSError) as exc:
        (mp / "rootfs" / "z" / "big2").read_bytes()
    assert exc.value.errno == errno.EIO
    assert (mp / "rootfs" / "a" / "text").read_bytes() == FILES["a/text"]
    log = lazy_mounts.log(mp)
    eio = [line for line in log.splitlines() if "EIO" in line]
    assert eio and all("rootfs/z/big2: chunk" in line and "cannot connect" in line for line in eio), log
    chunks = [line.split(": chunk ")[1].split()[0] for line in eio]
    assert len(chunks) == len(set(chunks)), log
    assert "using the cached manifest" in log
    lazy_mounts.umount(mp)


def test_mount_through_faults_gives_right_bytes_or_clean_eio(served, lazy_mounts, tmp_path):
    host, proxy = served
    ref = f"docker://{proxy.address}/lazy:1"
    # A registry that ignores Range: the blob is fetched whole, once, and checked against its digest.
    proxy.ignore_range = True
    mp = lazy_mounts.mount(ref, "--cache-dir", tmp_path / "c1")
    assert _read_tree(mp / "rootfs", FILES) == FILES
    lazy_mounts.umount(mp)
    proxy.ignore_range = False
    # Dropped connections, cut bodies and 500s on the blob: retried, the bytes are right.
    mp = lazy_mounts.mount(ref, "--cache-dir", tmp_path / "c2", "--no-readahead")
    proxy.fault_path = "/blobs/sha256:"
    proxy.faults = ["drop", "500", "drop-body", "500", "drop"]
    assert (mp / "rootfs" / "z" / "big0").read_bytes() == FILES["z/big0"]
    assert not proxy.faults
    # A registry failing for good: EIO and one log line a chunk, and the mount serves again once it recovers.
    proxy.faults = ["500"] * 200
    with pytest.raises(OSError) as exc:
        (mp / "rootfs" / "z" / "big1").read_bytes()
    assert exc.value.errno == errno.EIO
    proxy.faults = []
    assert (mp / "rootfs" / "z" / "big1").read_bytes() == FILES["z/big1"]
    eio = [line for line in lazy_mounts.log(mp).splitlines() if "EIO" in line]
    assert eio and all("rootfs/z/big1: chunk" in line and "500" in line for line in eio), eio
    chunks = [line.split(": chunk ")[1].split()[0] for line in eio]
    assert len(chunks) == len(set(chunks)), eio
    lazy_mounts.umount(mp)


def test_timeout_retries_a_request_left_unanswered(served, tmp_path):
    host, proxy = served
    proxy.fault_path = "/blobs/sha256:"
    proxy.faults = ["delay"]  # 2 s without an answer
    ref = f"docker://{proxy.address}/lazy:1"
    rc, out, err = cli(tmp_path, "cat", ref, "/a/text", "--timeout", "0.5", "--stats")
    assert rc == 0 and out == FILES["a/text"], err
    assert not proxy.faults and "(1 retries)" in err, err
    rc, _, err = cli(tmp_path, "cat", ref, "/a/text", "--timeout", "0")
    assert rc == 2 and "--timeout" in err and err.count("\n") == 1, err


@pytest.mark.parametrize("fault, words", [("shift-range", "instead; refused"), ("long-range", "more than")])
def test_a_range_answer_for_other_bytes_is_refused(served, tmp_path, fault, words):
    host, proxy = served
    proxy.fault_path = "/blobs/sha256:"
    proxy.faults = [fault] * 50
    rc, out, err = cli(tmp_path, "cat", f"docker://{proxy.address}/lazy:1", "/a/text")
    assert rc == 2 and out == b"", err
    assert err.count("\n") == 1 and words in err, err


def test_credentials_stay_out_of_logs_and_output(served, lazy_mounts, tmp_path):
    host, _ = served
    tokens = TokenServer("bob", PASSWORD, "tok-lazy")
    front = Proxy(host, token="tok-lazy", realm=tokens.realm)
    try:
        ref = f"docker://{front.address}/lazy:1"
        log = tmp_path / "mount.log"
        mp = lazy_mounts.mount(
            ref, "--creds", f"bob:{PASSWORD}", "--cache-dir", tmp_path / "c", "--log-file", log
        )
        assert (mp / "rootfs" / "a" / "text").read_bytes() == FILES["a/text"]
        front.fault_path = "/blobs/sha256:"
        front.faults = ["500"] * 200
        with pytest.raises(OSError):
            (mp / "rootfs" / "z" / "big2").read_bytes()
        front.faults = []
        lazy_mounts.umount(mp)
        said = log.read_text()
        assert "EIO" in said and PASSWORD not in said and "tok-lazy" not in said, said
        rc, out, err = cli(tmp_path, "info", ref, "--json", "--creds", f"bob:{PASSWORD}", "--stats")
        assert rc == 0 and PASSWORD.encode() not in out and "tok-lazy" not in out.decode(), err
        assert PASSWORD not in err
        rc, out, err = cli(tmp_path, "cat", ref, "/z/big2", "--creds", f"bob:{PASSWORD}x")
        assert rc == 2 and PASSWORD not in err, err
    finally:
        front.close()
        tokens.close()


def test_remote_blob_hints_fetch_nothing_alone_and_widen_the_next_fetch(blob_file):
    """A hint fetches nothing by itself (what it covers may all be in the chunk cache); the first read in it
    that must fetch starts fetching the rest of the range, up to where the part of the blob known already
    begins, in a few requests."""
    fetch = Counting(blob_file)
    start = len(fetch.data) - 65536
    src = RemoteBlob("remote", len(fetch.data), fetch, tail=(start, fetch.data[start:]))
    src.will_need(start - 300_000, 400_000)
    time.sleep(0.2)
    assert fetch.calls == []
    assert src.pread(start - 300_000, 100) == fetch.data[start - 300_000 : start - 299_900]
    deadline = time.monotonic() + 10
    while fetch.fetched < 300_000 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fetch.fetched == 300_000 and len(fetch.calls) <= 4, fetch.calls
    assert all(off + n <= start for off, n in fetch.calls), fetch.calls
    calls = len(fetch.calls)
    assert src.pread(start - 1000, 5000) == fetch.data[start - 1000 : start + 4000]
    assert len(fetch.calls) == calls
    src.close()


def test_tui_browses_a_reference_fetching_what_it_shows(served, tmp_path, monkeypatch):
    pytest.importorskip("textual")
    from textual.widgets import Static
    from tui_helpers import drive, press, settle

    from nydus_inspect import imageref

    host, _ = served
    options = imageref.ImageOptions(
        cache_dir=str(tmp_path / "cache"), chunk_dir=str(tmp_path / "cache" / "chunks")
    )
    monkeypatch.setattr(imageref, "OPTIONS", options)

    async def script(app, pilot):
        await press(app, pilot, "4")
        assert app.screen.reveal("/a/text")
        await settle(app, pilot)
        preview = app.screen.query_one("#file-preview", Static).content.plain
        assert "the quick brown fox" in preview, preview

    drive([f"docker://{host}/lazy:1"], script)
    assert any((tmp_path / "cache" / "chunks").glob("*.data"))
    stats = imageref.OPTIONS.stats
    assert 0 < stats.blob_fetched < stats.blob_bytes // 5, stats


@pytest.mark.parametrize("size", [-5, 0])
def test_a_blob_descriptor_without_a_usable_size_is_not_read_by_range(served, nydus_layout, tmp_path, size):
    from nydus_inspect.registry import Registry

    host, _ = served
    _, manifest = _manifest(nydus_layout)
    manifest["layers"][0]["size"] = size
    with Registry(host) as reg:
        reg.put_manifest("lazy", "bad", json.dumps(manifest).encode(), manifest["mediaType"])
    rc, out, err = cli(tmp_path, "cat", f"docker://{host}/lazy:bad", "/a/text")
    assert rc == 2 and out == b"", err
    assert err.count("\n") == 1 and "not found" in err, err


def test_cat_offline_from_the_cache_says_so(nydus_layout, tmp_path):
    with run_registry(tmp_path / "reg") as host:
        push(nydus_layout, f"{host}/lazy:1")
        rc, out, err = cli(tmp_path, "cat", f"docker://{host}/lazy:1", "/a/small007")
        assert (rc, out, err) == (0, FILES["a/small007"], "")
    rc, out, err = cli(tmp_path, "cat", f"docker://{host}/lazy:1", "/a/small007")
    assert (rc, out) == (0, FILES["a/small007"]), err
    assert err.startswith("nydus-inspect: warning: ") and err.count("\n") == 1, err
    assert "cannot connect" in err and "using the cached manifest sha256:" in err, err
    rc, out, err = cli(tmp_path, "cat", f"docker://{host}/lazy:1", "/z/big2")
    assert rc == 2 and err.count("\n") == 2 and "nydus-inspect: error: " in err, err
